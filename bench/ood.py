"""``python -m bench.ood --model STORE --data FOLDER``: how well the novelty score separates
memes like the training data from images that are clearly not.

In-distribution: the model's own grouped test split (``report/split.json``), never seen
in training. Foreign: the photos shipped with scikit-image and scikit-learn, images from
``meme-sample`` (a generator's fake "memes"), blank and noise images, and heavy crops
(a 15 % corner) of the in-distribution test images. Prints AUROC of the score (foreign
= positive), the share of in-distribution images flagged, and per-kind flag rates; also
the scoring cost of the novelty step against the whole per-image time.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ood", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model store (CURRENT) or version folder trained on --data")
    parser.add_argument("--data", required=True, help="the labelled folder the model was trained on (for its test split)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.model, args.data), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
