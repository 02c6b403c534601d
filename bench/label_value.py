"""``python -m bench.label_value --data FOLDER``: what each label a person gives buys, and whether
the review queue's order (:mod:`streaming.review`) buys more per label than labelling at random.

A simulated loop on a real labelled folder, per split seed:

1. a grouped fifth of the images is held back as the test set (near-duplicates on one side);
2. of the rest, a small grouped **seed set** is "the training folder" and the remainder is
   "what the stream classified" (the pool);
3. the image branch (StandardScaler -> PCA -> logistic regression, the model family the
   champion/challenger comparison uses, its PCA k and regularisation chosen by grouped CV on
   each training set as meme-train does) is fitted on the seed set and scores the pool, with
   the novelty flag fitted on the seed set too;
4. a reviewer labels ``K`` pool images, with their true labels, chosen in the review queue's
   order (OOD first, then the smallest top-two margin, one per near-duplicate group), by margin
   alone (no OOD first), or at random; the model is refitted on seed + labelled images and scored on the held-back set.

Prints accuracy against ``K`` for both orders, the accuracy gained per 100 labels, and the
machine's core count; writes JSON. Embeddings come from the shared featurizer
(``memestream.features.featurize_inputs``, the code training and the stream run); no Spark.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from memestream.hidden import is_dot_hidden

log = logging.getLogger(__name__)


def _fit_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, score: np.ndarray, groups: np.ndarray,
                 classes: int, seed: int) -> np.ndarray:
    """Fit the image branch on ``train`` with its PCA k and regularisation chosen by grouped CV
    (as meme-train chooses them), and return the class probabilities of ``score``."""
    from batch_training.config import DEFAULT_PCA_KS, DEFAULT_REG_PARAMS
    from batch_training.selection import fit_and_score, grouped_folds, image_cv

    train = np.sort(train)
    folds = grouped_folds(groups[train], y[train], 5, seed)
    ks = tuple(min(k, x.shape[1]) for k in DEFAULT_PCA_KS)
    cv = image_cv(x[train], y[train], folds, classes, ks, DEFAULT_REG_PARAMS, seed)
    return fit_and_score(x, train, y[train], np.sort(score), cv.pca_k, cv.reg_param, classes, seed)


def queue_order(probs: np.ndarray, ood: np.ndarray, groups: np.ndarray, ids: Sequence[str]) -> list[int]:
    """Pool rows in the review queue's order: OOD first, then the smallest top-two margin,
    one per near-duplicate group first (the page shows one per group; the rest follow)."""
    from streaming.review import spread

    top = np.sort(probs, axis=1)
    margin = top[:, -1] - top[:, -2] if probs.shape[1] > 1 else np.ones(len(probs))
    order = sorted(range(len(probs)), key=lambda i: (not ood[i], margin[i], ids[i]))
    rows = [{"i": i} for i in order]
    first = [r["i"] for r in spread(rows, [int(groups[i]) for i in order], limit=len(rows))]
    chosen = set(first)
    return first + [i for i in order if i not in chosen]


def run(data: Path, seeds: Sequence[int], budgets: Sequence[int], seed_images: int) -> dict[str, Any]:
    from batch_training import selection as sel
    from bench.holdout import _groups
    from memestream.features import DEFAULT_FEATURE_SET, featurize_inputs, get_feature_set
    from memestream.novelty import NoveltyModel

    root = data.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not is_dot_hidden(p.name) and p.parent != root
                   and p.suffix.lower() != ".csv")
    rel = [p.relative_to(root).as_posix() for p in files]
    classes = sorted({r.split("/")[0] for r in rel})
    fs = get_feature_set(DEFAULT_FEATURE_SET)
    started = time.monotonic()
    out = featurize_inputs([str(f) for f in files], fs, from_path=True)
    ok = np.array([e is None for e in out.errors])
    x = out.matrix[ok].astype(np.float64)
    rel = [r for r, g in zip(rel, ok) if g]
    files = [f for f, g in zip(files, ok) if g]
    y = np.array([classes.index(r.split("/")[0]) for r in rel])
    groups = _groups(files, DEFAULT_FEATURE_SET)
    log.info("%d images embedded (%s) and grouped in %.1f s", len(rel), fs.name, time.monotonic() - started)
    rows = []
    for seed in seeds:
        test = sel.grouped_split(groups, y, 0.2, seed + 2000)
        rest = np.flatnonzero(~test)
        # the seed folder: whole groups, about seed_images of them, every class present
        share = min(0.9, seed_images / max(1, len(rest)))
        seed_mask = sel.grouped_split(groups[rest], y[rest], share, seed + 3000)
        start, pool = rest[seed_mask], rest[~seed_mask]
        probs = _fit_predict(x, y, start, pool, groups, len(classes), seed)
        novelty, _ = NoveltyModel.fit(x[start], y[start], sel.grouped_folds(groups[start], y[start], 5, seed),
                                      dims=fs.novelty_dims)
        scores, _ = novelty.score(x[pool])
        ood = scores > novelty.threshold
        ids = [rel[i] for i in pool]
        orders = {"queue": [pool[i] for i in queue_order(probs, ood, groups[pool], ids)],
                  # the same without "OOD first": does leading with foreign-looking images pay?
                  "margin": [pool[i] for i in queue_order(probs, np.zeros(len(pool), dtype=bool), groups[pool], ids)],
                  "random": list(np.random.default_rng(seed).permutation(pool))}
        test_rows = np.flatnonzero(test)
        for name, order in orders.items():
            for budget in budgets:
                labelled = np.asarray(order[:budget], dtype=np.int64)
                train = np.concatenate([start, labelled])
                pred = _fit_predict(x, y, train, test_rows, groups, len(classes), seed).argmax(axis=1)
                acc = float((pred == y[test_rows]).mean())
                rows.append({"seed": seed, "order": name, "labels": budget, "accuracy": round(acc, 4),
                             "seed_images": len(start), "pool": len(pool), "test": len(test_rows),
                             "pool_wrong": int((probs.argmax(axis=1) != y[pool]).sum()), "pool_ood": int(ood.sum())})
                print(json.dumps(rows[-1]), flush=True)
    table: dict[str, dict[int, float]] = {}
    for name in ("queue", "margin", "random"):
        table[name] = {b: round(float(np.mean([r["accuracy"] for r in rows if r["order"] == name and r["labels"] == b])), 4)
                       for b in budgets}
    return {"data": str(data), "feature_set": fs.name, "seed_images": seed_images,
            "seeds": list(seeds), "budgets": list(budgets), "mean_accuracy": table, "runs": rows, "cores": os.cpu_count()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.label_value", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="labelled folder (DATA/<class>/...)")
    parser.add_argument("--seeds", default="42,7,123", help="split seeds, comma-separated")
    parser.add_argument("--budgets", default="0,10,25,50,100,200", help="labels a reviewer gives, comma-separated")
    parser.add_argument("--seed-images", type=int, default=60, help="images in the starting training folder")
    parser.add_argument("--out", default=None, help="JSON results file (default: a temp file)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bench.common import portable_paths

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    result = run(Path(args.data), [int(s) for s in args.seeds.split(",") if s.strip()], budgets, args.seed_images)
    print(f"\nmean test accuracy by labels given (cores: {result['cores']}, seeds {result['seeds']}, "
          f"{result['seed_images']} starting images):")
    print("labels  " + "  ".join(f"{b:>6d}" for b in budgets))
    for name, row in result["mean_accuracy"].items():
        print(f"{name:<7s} " + "  ".join(f"{row[b]:6.4f}" for b in budgets))
    if len(budgets) > 1:
        first, last = budgets[0], budgets[-1]
        for name, row in result["mean_accuracy"].items():
            gain = (row[last] - row[first]) * 100 / max(1, last - first)
            print(f"{name}: +{gain:.4f} accuracy per 100 labels ({first} -> {last})")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="memestream-label-value-")) / "label_value.json"
    out.write_text(json.dumps(portable_paths(result), indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
