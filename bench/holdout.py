"""``python -m bench.holdout --data FOLDER``: accuracy on memes the pipeline never saw, the way
a maintainer checks it: per split seed, a grouped fifth of the labelled folder (near-duplicates
and reposts on one side, as training groups them) is held back untouched; ``meme-train`` runs
with its defaults on the rest (a folder of symlinks, plus the matching rows of ``posts.csv``),
then ``meme-evaluate`` scores the saved model on the held-back fifth. Prints accuracy, ECE
and OCR share per seed and their means, and writes them as JSON.

The report's own figures (grouped CV, grouped test split) come from inside one training run;
this is the outside view, including the final fit on every training image.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from memestream.hidden import is_dot_hidden
from memestream.testing import CommandFailed, run_command, run_meme_train, script_command

log = logging.getLogger(__name__)

TITLES = "posts.csv"


def _groups(files: list[Path], feature_set: str) -> np.ndarray:
    """Near-duplicate groups as training forms them: dHash of the image as the feature set
    decodes it, and equal sha256."""
    from batch_training.config import TrainConfig
    from memestream.decode import BadImage
    from memestream.dedup import dhash, near_duplicate_groups
    from memestream.features import decode_for, get_feature_set
    from memestream.featurizer import ImageFeaturizer

    fs = get_feature_set(feature_set)
    feat = ImageFeaturizer()
    hashes: list[int] = []
    shas: list[str] = []
    for f in files:
        data = f.read_bytes()
        shas.append(hashlib.sha256(data).hexdigest())
        try:
            hashes.append(dhash(decode_for(data, fs, feat.getMaxBytes(), feat.getMaxPixels())))
        except BadImage:
            hashes.append(0)  # training skips it anyway; its own group by sha256 unless equal
    return near_duplicate_groups(hashes, shas, TrainConfig.dup_distance)  # meme-train's default


def _link_tree(root: Path, rel: list[str], out: Path) -> None:
    for r in rel:
        dst = out / r
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((root / r).resolve(), dst)


def _split_titles(root: Path, train_rel: set[str], out: Path) -> None:
    src = root / TITLES
    if not src.is_file():
        return
    with src.open(newline="", encoding="utf-8") as fh, (out / TITLES).open("w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(fh)
        writer = csv.DictWriter(dst, fieldnames=list(reader.fieldnames or []))
        writer.writeheader()
        for row in reader:
            if row.get("file") in train_rel:  # only the training part's titles: the held-back memes stay unseen
                writer.writerow(row)


def holdout(data: Path, work: Path, seeds: Sequence[int], fraction: float, train_args: Sequence[str], cache_from: Path | None) -> dict[str, Any]:
    from batch_training import selection as sel
    from memestream.features import DEFAULT_FEATURE_SET

    root = data.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not is_dot_hidden(p.name) and p.parent != root)
    rel = [p.relative_to(root).as_posix() for p in files]
    classes = sorted({r.split("/")[0] for r in rel})
    y = np.array([classes.index(r.split("/")[0]) for r in rel])
    started = time.monotonic()
    groups = _groups(files, DEFAULT_FEATURE_SET)
    log.info("%d files, %d classes, %d near-duplicate groups of 2+ (%.1f s)", len(files), len(classes),
             int((np.unique(groups, return_counts=True)[1] > 1).sum()), time.monotonic() - started)
    rows = []
    for seed in seeds:
        held = sel.grouped_split(groups, y, fraction, seed + 1000)  # not the seed training splits with
        base = work / f"seed{seed}"
        shutil.rmtree(base, ignore_errors=True)
        train_rel = [r for r, h in zip(rel, held) if not h]
        _link_tree(root, train_rel, base / "train")
        _link_tree(root, [r for r, h in zip(rel, held) if h], base / "held")
        _split_titles(root, set(train_rel), base / "train")
        models = base / "models"
        models.mkdir(parents=True)
        if cache_from is not None and (cache_from / "_cache").is_dir():
            shutil.copytree(cache_from / "_cache", models / "_cache")  # embeddings/OCR by sha256: a warm start
        t0 = time.monotonic()
        run_meme_train(base / "train", models, ["-q", "--no-plots", *train_args])
        train_s = time.monotonic() - t0
        evaluate = script_command("meme-evaluate", "--model", str(models), "--data", str(base / "held"), "--json", "-q")
        doc = json.loads(run_command(evaluate, "meme-evaluate").stdout)
        row = {"seed": seed, "train_images": len(train_rel), "held_images": int(held.sum()), "accuracy": doc.get("accuracy"),
               "ece": doc.get("ece"), "ece_floor": doc.get("ece_floor"), "ocr_share": doc.get("ocr_share"), "train_seconds": round(train_s, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    mean: dict[str, float | None] = {}
    for k in ("accuracy", "ece", "ece_floor", "ocr_share"):  # ocr_share is None for a model without the text branch
        values = [r[k] for r in rows if r[k] is not None]
        mean[k] = round(float(np.mean(values)), 4) if values else None
    return {"data": str(data), "fraction": fraction, "train_args": list(train_args), "seeds": rows, "mean": mean}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.holdout", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="labelled folder (DATA/<class>/...; DATA/posts.csv is split along)")
    parser.add_argument("--work-dir", default=None, help="where the per-seed folders and models go (default: a temp dir)")
    parser.add_argument("--seeds", default="42,7,123,5,99", help="split seeds, comma-separated")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of each class held back (whole groups)")
    parser.add_argument("--cache-from", default=None, help="a model store whose _cache/ (embeddings, OCR text) starts each run warm")
    parser.add_argument("--train-arg", action="append", default=[], help="extra meme-train argument (repeatable)")
    parser.add_argument("--out", default=None, help="JSON results file (default: WORK/holdout.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from bench.common import portable_paths

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="memestream-holdout-"))
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    try:
        result = holdout(Path(args.data), work, seeds, args.fraction, args.train_arg, Path(args.cache_from) if args.cache_from else None)
    except CommandFailed as exc:
        raise SystemExit(str(exc)) from None
    print(f"mean over {len(seeds)} seeds: " + ", ".join(f"{k} {v:.4f}" for k, v in result["mean"].items() if v is not None)
          + f"  (cores: {os.cpu_count()})")
    out = Path(args.out) if args.out else work / "holdout.json"
    out.write_text(json.dumps(portable_paths(result), indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
