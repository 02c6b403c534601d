"""``python -m bench.ood --model STORE --data FOLDER``: how well the novelty score separates
memes like the training data from images that are clearly not.

In-distribution: the model's own grouped test split (``report/split.json``), never seen
in training. Foreign: the photos shipped with scikit-image and scikit-learn, images from
``meme-sample`` (a generator's fake "memes"), blank and noise images, and heavy crops
(a 15 % corner) of the in-distribution test images. Prints AUROC of the score (foreign
= positive), the share of in-distribution images flagged, and per-kind flag rates; also
the scoring cost of the novelty step against the whole per-image time.

``python -m bench.ood --foreign --data FOLDER``: the broad foreign set of issue 25
(:mod:`bench.foreign`: charts, pages of text, tables, app screens, slides, code, photos,
patterns) against grouped held-out memes. Per split seed a grouped fifth of the folder is
held back (near-duplicates on one side, as ``bench.holdout``), the novelty model is fitted
on the rest as training fits it (grouped out-of-fold scores for the nulls and the
threshold), and both the old score (embedding distance, 0.99 quantile) and the new one
(embedding + image-statistics views, weighted minimum of tail probabilities) score the held-out memes and the
foreign images. Prints and writes per-kind AUROC and flag rates, memes flagged, and the
per-image scoring cost of the new score against the old, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)


def _foreign_images(test_images: list[np.ndarray], seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"photos": [], "generated": [], "blank_noise": [], "heavy_crops": []}
    try:
        import skimage.data as sd

        for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo", "motorcycle_left", "brick", "camera", "grass", "gravel", "moon", "page", "text", "clock", "horse"):
            try:
                img = getattr(sd, name)()
            except Exception:  # noqa: BLE001 - some need a download (pooch): skip those
                continue
            img = np.asarray(img)
            if img.dtype != np.uint8:
                img = (255 * (img.astype(np.float64) / max(1e-9, float(img.max())))).astype(np.uint8)
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            elif img.shape[2] == 4:
                img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
            else:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            out["photos"].append(img)
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        out["photos"] += [cv2.cvtColor(im, cv2.COLOR_RGB2BGR) for im in load_sample_images().images]
    except Exception:  # noqa: BLE001
        pass
    from memestream.sample import STYLES, sample_image_bytes

    for cls in STYLES:
        for s in range(15):
            out["generated"].append(cv2.imdecode(np.frombuffer(sample_image_bytes(cls, 1000 + s, "png"), np.uint8), cv2.IMREAD_COLOR))
    for v in (0, 255, 128):
        out["blank_noise"].append(np.full((300, 300, 3), v, np.uint8))
    for c in ((0, 0, 255), (0, 255, 0), (255, 0, 0)):
        out["blank_noise"].append(np.full((300, 300, 3), c, np.uint8))
    for _ in range(6):
        out["blank_noise"].append(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    for img in test_images[:: max(1, len(test_images) // 40)]:
        h, w = img.shape[:2]
        ch, cw = max(16, int(h * 0.15)), max(16, int(w * 0.15))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out["heavy_crops"].append(np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw]))
    return out


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    scores = np.concatenate([neg, pos])
    ranks = scores.argsort().argsort() + 1.0
    r_pos = ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def run(model: str, data: str) -> dict:
    from memestream.classify import featurizer_of
    from memestream.features import get_feature_set
    from memestream.modelstore import load_model, resolve_version_dir

    from memestream.spark import build_spark

    vdir = resolve_version_dir(model)
    build_spark("bench-ood", master="local[1]")  # PipelineModel.load needs a session
    loaded = load_model(model)
    if loaded.novelty is None:
        raise SystemExit(f"{vdir} has no novelty model (train it with this version of meme-train)")
    feat = featurizer_of(loaded)
    fs = get_feature_set(feat.getFeatureSet())
    split = json.loads((vdir / "report" / "split.json").read_text())
    test_images = [cv2.imread(str(Path(data) / rel), cv2.IMREAD_COLOR) for rel in split["test"]]
    test_images = [im for im in test_images if im is not None]

    def features(images: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([fs.extract_many(images[i : i + 16], feat.getAssetPath()) for i in range(0, len(images), 16)])

    t0 = time.perf_counter()
    id_feats = features(test_images)
    t_embed = (time.perf_counter() - t0) / len(test_images)
    t0 = time.perf_counter()
    for i in range(len(id_feats)):
        loaded.novelty.score(id_feats[i : i + 1])
    t_novelty = (time.perf_counter() - t0) / len(id_feats)
    id_scores, _ = loaded.novelty.score(id_feats)
    foreign = _foreign_images(test_images)
    result = {"model": f"{loaded.version}/{loaded.name}", "threshold": loaded.novelty.threshold, "in_distribution": len(id_scores),
              "in_distribution_flagged": round(float((id_scores > loaded.novelty.threshold).mean()), 4), "kinds": {}}
    all_pos = []
    for kind, images in foreign.items():
        if not images:
            continue
        scores, _ = loaded.novelty.score(features(images))
        all_pos.append(scores)
        result["kinds"][kind] = {"images": len(images), "flagged": round(float((scores > loaded.novelty.threshold).mean()), 4),
                                 "auroc": round(_auroc(id_scores, scores), 4)}
    result["auroc_all"] = round(_auroc(id_scores, np.concatenate(all_pos)), 4)
    result["novelty_ms_per_image"] = round(t_novelty * 1000, 3)
    result["embed_ms_per_image"] = round(t_embed * 1000, 3)
    result["novelty_share_of_image_time"] = round(t_novelty / (t_embed + t_novelty), 4)
    return result


#: the old score's quantile (memestream.novelty before issue 25), for the side-by-side figures
OLD_QUANTILE = 0.99


def _featurize(values: Sequence[bytes | str], from_path: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(embeddings, image statistics, decoded images)`` of decodable inputs, as the stream computes them."""
    from memestream.features import DEFAULT_FEATURE_SET, default_asset, featurize_inputs, get_feature_set
    from memestream.image_stats import stats_of

    fs = get_feature_set(DEFAULT_FEATURE_SET)
    asset = default_asset(DEFAULT_FEATURE_SET)
    feats, stats, images = [], [], []
    for i in range(0, len(values), 32):
        out = featurize_inputs(values[i : i + 32], fs, from_path=from_path, asset=asset, keep_images=True)
        keep = out.ok
        feats.append(out.matrix[keep])
        good = [im for im, k in zip(out.images, keep) if k]
        stats.append(stats_of(good))
        images += good
    return np.concatenate(feats), np.concatenate(stats), images


def _legacy(model):  # noqa: ANN001, ANN202 - a NoveltyModel as it scored before issue 25
    import dataclasses

    return dataclasses.replace(model, embed_null=None, stats_view=None, stats_null=None,
                               threshold=float(np.quantile(model.embed_null, OLD_QUANTILE)))


def _figures(model, mem_f: np.ndarray, mem_s: np.ndarray | None, foreign: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:  # noqa: ANN001
    mem = model.score(mem_f, mem_s)[0]
    out: dict = {"memes_flagged": round(float((mem > model.threshold).mean()), 4), "kinds": {}}
    pos = []
    for kind, (f, s) in foreign.items():
        sc = model.score(f, s if mem_s is not None else None)[0]
        pos.append(sc)
        out["kinds"][kind] = {"auroc": round(_auroc(mem, sc), 4), "flagged": round(float((sc > model.threshold).mean()), 4)}
    allpos = np.concatenate(pos)
    out["auroc_all"] = round(_auroc(mem, allpos), 4)
    out["foreign_flagged"] = round(float((allpos > model.threshold).mean()), 4)
    out["auroc_min_kind"] = min(v["auroc"] for v in out["kinds"].values())
    return out


def _cost(model, features: np.ndarray, images: list[np.ndarray]) -> dict:  # noqa: ANN001
    """Per-image milliseconds of the old score (distance) and the new one (statistics of the
    decoded image + both views), one image per call as a stream's smallest batch. Blocks of
    20 calls alternate between the two and each figure is the median block: on a shared,
    loaded machine the mean is mostly other processes' time. One BLAS thread: a per-core
    figure (with two, the old score's small product took 0.4-13 ms on a loaded machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _cost_one_thread(model, features, images)


def _cost_one_thread(model, features: np.ndarray, images: list[np.ndarray]) -> dict:  # noqa: ANN001
    from memestream.image_stats import image_stats

    old = _legacy(model)
    n = min(len(images), 300)
    blocks: dict[str, list[float]] = {"old": [], "new": [], "stats": []}
    for rep in range(3):  # the first round warms everything up and is not counted
        for start in range(0, n - 19, 20):
            rows = range(start, start + 20)
            t0 = time.perf_counter()
            for i in rows:
                old.score(features[i : i + 1])
            t1 = time.perf_counter()
            for i in rows:
                model.score(features[i : i + 1], image_stats(images[i])[None, :])
            t2 = time.perf_counter()
            for i in rows:
                image_stats(images[i])
            t3 = time.perf_counter()
            if rep:
                blocks["old"].append((t1 - t0) / 20)
                blocks["new"].append((t2 - t1) / 20)
                blocks["stats"].append((t3 - t2) / 20)
    t_old, t_new, t_stats = (float(np.median(blocks[k])) for k in ("old", "new", "stats"))
    return {"old_ms_per_image": round(t_old * 1000, 3), "new_ms_per_image": round(t_new * 1000, 3),
            "image_stats_ms_per_image": round(t_stats * 1000, 3), "cost_ratio": round(t_new / t_old, 2),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def run_foreign(data: str, seeds: Sequence[int], per_kind: int, foreign_seed: int, fraction: float = 0.2, folds: int = 5,
                quantile: float | None = None, like_memes: int | None = None) -> dict:
    """The issue-25 benchmark: see the module docstring. ``like_memes``: the foreign images
    stretched to that square side and re-encoded as JPEG first (:func:`bench.foreign.meme_copy`),
    so a gain that comes from the training memes' size or encoding shows as a loss here."""
    from batch_training import selection as sel
    from bench.foreign import foreign_set
    from bench.holdout import _groups
    from memestream.features import DEFAULT_FEATURE_SET, get_feature_set
    from memestream.hidden import is_dot_hidden
    from memestream.novelty import DEFAULT_QUANTILE, NoveltyModel

    root = Path(data).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not is_dot_hidden(p.name) and p.parent != root)
    classes = sorted({p.relative_to(root).parts[0] for p in files})
    t0 = time.perf_counter()
    feats, stats, images = _featurize([str(f) for f in files], True)
    if len(feats) != len(files):
        raise SystemExit(f"{len(files) - len(feats)} files of {data} do not decode: clean the folder first")
    t_embed = (time.perf_counter() - t0) / len(files)
    y = np.array([classes.index(p.relative_to(root).parts[0]) for p in files])
    groups = _groups(files, DEFAULT_FEATURE_SET)
    foreign = {k: _featurize(v, False)[:2] for k, v in foreign_set(per_kind, foreign_seed, like_memes=like_memes).items()}
    dims = get_feature_set(DEFAULT_FEATURE_SET).novelty_dims
    rows = []
    for seed in seeds:
        held = sel.grouped_split(groups, y, fraction, seed + 1000)  # bench.holdout's split of the same seed
        tr = ~held
        fold = sel.grouped_folds(groups[tr], y[tr], folds, seed)
        model, _ = NoveltyModel.fit(feats[tr], y[tr], fold, dims=dims, stats=stats[tr], quantile=quantile or DEFAULT_QUANTILE)
        row = {"seed": seed, "train_memes": int(tr.sum()), "held_memes": int(held.sum()),
               "old": _figures(_legacy(model), feats[held], None, foreign), "new": _figures(model, feats[held], stats[held], foreign)}
        rows.append(row)
        log.info("seed %d: old AUROC %.3f, %.0f%% foreign flagged; new AUROC %.3f, %.0f%% flagged, %.1f%% memes flagged", seed,
                 row["old"]["auroc_all"], 100 * row["old"]["foreign_flagged"], row["new"]["auroc_all"], 100 * row["new"]["foreign_flagged"],
                 100 * row["new"]["memes_flagged"])
    mean: dict = {}
    for which in ("old", "new"):
        m = {k: round(float(np.mean([r[which][k] for r in rows])), 4) for k in ("auroc_all", "foreign_flagged", "memes_flagged")}
        m["kinds"] = {kind: {k: round(float(np.mean([r[which]["kinds"][kind][k] for r in rows])), 4) for k in ("auroc", "flagged")}
                      for kind in foreign}
        m["auroc_min_kind"] = min(v["auroc"] for v in m["kinds"].values())
        mean[which] = m
    cost = _cost(model, feats, images)
    cost["embed_ms_per_image"] = round(t_embed * 1000, 2)
    return {"data": data, "memes": len(files), "split_seeds": list(seeds), "fraction": fraction, "foreign_seed": foreign_seed,
            "per_kind": per_kind, "like_memes": like_memes, "kinds": list(foreign), "old_quantile": OLD_QUANTILE, "new_quantile": quantile or DEFAULT_QUANTILE,
            "seeds": rows, "mean": mean, "cost": cost, "cores": os.cpu_count()}


def _table(result: dict) -> str:
    """The mean over split seeds, old score beside new, as printed."""
    old, new = result["mean"]["old"], result["mean"]["new"]
    lines = [f"{'kind':12s} {'old AUROC':>9s} {'flagged':>8s} {'new AUROC':>9s} {'flagged':>8s}"]
    for kind in result["kinds"]:
        o, n = old["kinds"][kind], new["kinds"][kind]
        lines.append(f"{kind:12s} {o['auroc']:9.3f} {o['flagged']:8.0%} {n['auroc']:9.3f} {n['flagged']:8.0%}")
    lines.append(f"{'all foreign':12s} {old['auroc_all']:9.3f} {old['foreign_flagged']:8.0%} {new['auroc_all']:9.3f} {new['foreign_flagged']:8.0%}")
    lines.append(f"{'memes':12s} {'':9s} {old['memes_flagged']:8.1%} {'':9s} {new['memes_flagged']:8.1%}")
    c = result["cost"]
    lines.append(f"scoring cost per image: old {c['old_ms_per_image']} ms, new {c['new_ms_per_image']} ms (x{c['cost_ratio']}; "
                 f"the statistics {c['image_stats_ms_per_image']} ms); reading, decoding and embedding {c['embed_ms_per_image']} ms "
                 f"(load average {c['load_average_1min']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ood", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model store (CURRENT) or version folder trained on --data")
    parser.add_argument("--data", required=True, help="the labelled folder (for the model's test split, or --foreign's held-out memes)")
    parser.add_argument("--foreign", action="store_true", help="the issue-25 benchmark: the rendered foreign set against grouped held-out memes")
    parser.add_argument("--seeds", default="42,7,123,5,99", help="--foreign: split seeds, comma-separated (bench.holdout's)")
    parser.add_argument("--per-kind", type=int, default=40, help="--foreign: images per foreign kind")
    parser.add_argument("--foreign-seed", type=int, default=2,
                        help="--foreign: seed of the rendered foreign images (0 and 1 chose the method: report another)")
    parser.add_argument("--quantile", type=float, default=None, help="--foreign: the new score's threshold quantile (default: the model's)")
    parser.add_argument("--like-memes", type=int, default=None, metavar="SIDE",
                        help="--foreign: store each foreign image as the training memes are stored (stretched to SIDE x SIDE, "
                             "JPEG) first: doom-crossing's are 300. A method must not lose its gain here")
    parser.add_argument("--out", default=None, help="--foreign: JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.foreign:
        if not args.model:
            parser.error("--model is required (or --foreign)")
        print(json.dumps(run(args.model, args.data), indent=2))
        return 0
    result = run_foreign(args.data, [int(s) for s in args.seeds.split(",") if s.strip()], args.per_kind, args.foreign_seed,
                         quantile=args.quantile, like_memes=args.like_memes)
    print(_table(result))
    if args.out:
        from bench.common import portable_paths

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(portable_paths(result), indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
