"""Champion / challenger: a new version becomes ``CURRENT`` only when it is not worse.

Labels people gave can be wrong, and a rerun can choose worse settings, so ``meme-train``
(``--promote if-better``, the default) compares the new version with the current one on the
same ground before the running streams switch to it:

- **The same images, the same folds.** The new run's grouped CV folds (near-duplicates kept on
  one side) over its training part: the folder plus the stream labels, which for images the
  current version also had is the union of both versions' images. Each fold's held-out rows
  are scored against today's labels (people's corrections included) by two fits on that
  fold's training rows: the **challenger** (the new settings, every training row, today's
  labels) and the **champion** (the current version's PCA k and regularisation, only the rows
  it was trained on, with the labels it had then). A class the current version does not have
  counts as its error.
- **The image branch.** Both are StandardScaler -> PCA -> logistic regression on the
  embeddings, as the CV that chose the settings; the OCR text branch would need the text of
  every image (OCR is ~30x the embedding's cost), so it is left out of the comparison.
- **Noise.** ``d`` is the challenger's accuracy minus the champion's, per fold. The current
  version stays when ``mean(d)`` is below ``-max(SE(d), 1/n)``: worse by more than one
  standard error of the paired fold differences and by more than one image of the ``n``
  scored. Equal settings on the same images give ``d = 0`` and promote.
- Not comparable (no current version, another feature set, a version without its split, a
  model store at a URI): the new version is promoted and the report says why.
  ``--promote always`` skips the comparison.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from batch_training.config import TrainConfig

log = logging.getLogger(__name__)

PROMOTE_MODES = ("if-better", "always")


def _promoted(reason: str, **extra: Any) -> dict[str, Any]:
    return {"promoted": True, "reason": reason, **extra}


def _fold_accuracy(x: np.ndarray, fit_rows: np.ndarray, fit_labels: Sequence[str], held: np.ndarray,
                   truth: Sequence[str], k: int, reg: float, seed: int) -> float:
    from batch_training.selection import fit_and_score

    classes = sorted(set(fit_labels))
    if len(classes) < 2:
        return 0.0
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in fit_labels])
    probs = fit_and_score(x, fit_rows, y, held, k, reg, len(classes), seed)
    predicted = [classes[int(i)] for i in probs.argmax(axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


def compare(cfg: TrainConfig, data, y: np.ndarray, classes: Sequence[str], chosen, before_labels: Sequence[str]) -> dict[str, Any]:
    """Whether the new version should become CURRENT, with the figures and the reason."""
    from memestream.modelstore import ModelStore

    if cfg.promote == "always":
        return _promoted("--promote always")
    store = ModelStore(cfg.model_dir)
    current = store.current()
    if current is None:
        return _promoted("no current version")
    try:
        manifest = store.manifest(current)
        split = json.loads((Path(cfg.model_dir) / current / "report" / "split.json").read_text())
    except (OSError, ValueError, Exception) as exc:  # noqa: BLE001 - an unreadable champion cannot defend its title
        return _promoted(f"current version {current} cannot be compared ({type(exc).__name__}: {exc})", current=current)
    if manifest.get("feature_set") != cfg.feature_set:
        return _promoted(f"current version {current} uses feature set {manifest.get('feature_set')}, this one "
                         f"{cfg.feature_set}: not comparable", current=current)
    had = set(split.get("train", [])) | set(split.get("test", []))
    train_rows = np.flatnonzero(~chosen.test)
    folds = chosen.folds
    x = data.features.astype(np.float64)
    truth_all = [classes[int(v)] for v in y]
    k_new, reg_new = chosen.image.pca_k, chosen.image.reg_param
    k_cur, reg_cur = int(manifest.get("pca_k") or k_new), float(manifest.get("reg_param") or reg_new)
    diffs, new_acc, cur_acc, scored = [], [], [], 0
    for f in range(int(folds.max()) + 1):
        fit = train_rows[folds != f]
        held = train_rows[folds == f]
        truth = [truth_all[i] for i in held]
        challenger = _fold_accuracy(x, fit, [truth_all[i] for i in fit], held, truth, k_new, reg_new, cfg.seed)
        old_fit = np.array([i for i in fit if data.rel_path[i] in had], dtype=np.int64)
        champion = (_fold_accuracy(x, old_fit, [before_labels[i] for i in old_fit], held, truth, k_cur, reg_cur, cfg.seed)
                    if len(old_fit) else 0.0)
        new_acc.append(challenger)
        cur_acc.append(champion)
        diffs.append(challenger - champion)
        scored += len(held)
    d = np.asarray(diffs)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    margin = max(se, 1.0 / max(1, scored))
    figures = {"current": current, "challenger_cv": round(float(np.mean(new_acc)), 4),
               "champion_cv": round(float(np.mean(cur_acc)), 4), "mean_diff": round(float(d.mean()), 4),
               "se_diff": round(se, 4), "folds": len(d), "images_scored": scored,
               "champion_images": len([r for r in data.rel_path if r in had])}
    if float(d.mean()) < -margin:
        return {"promoted": False, "reason": f"CV accuracy {figures['challenger_cv']:.4f} against {current}'s "
                f"{figures['champion_cv']:.4f} on the same folds: worse by {-figures['mean_diff']:.4f}, beyond the noise "
                f"({margin:.4f}); {current} stays current", **figures}
    return {"promoted": True, "reason": f"CV accuracy {figures['challenger_cv']:.4f} against {current}'s "
            f"{figures['champion_cv']:.4f} on the same folds (difference {figures['mean_diff']:+.4f}, noise {margin:.4f}): "
            "not worse", **figures}
