"""Classification metrics in plain numpy, from collected ``(label index, probabilities)`` rows.

Evaluation sets are small (hundreds to a few thousand rows), so collecting them and
computing everything on the driver is simpler and easier to test than Spark's
evaluators, and gives per-class ROC/PR curves Spark does not expose.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve for binary ``y_true`` (1 = positive); ties count one half.

    Uses the rank-sum (Mann-Whitney) form, so it is exact with tied scores.
    ``None`` when only one class is present (the area is undefined).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over tie groups (1-based)
    _, starts, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False/true positive rates at every distinct threshold (starting at (0, 0))."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], dtype=int)
    tps = np.cumsum(y)[last] if len(s) else np.array([])
    fps = (last + 1) - tps if len(s) else np.array([])
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the precision-recall curve as average precision (step-wise, tie groups together)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return None if n_pos == 0 else 1.0
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics for one model on one data split, JSON-ready.

    ``probabilities`` is ``(n, n_classes)``; ``y_pred`` defaults to its argmax. For two
    classes ``roc_auc``/``pr_auc`` are those of the positive class (``classes[1]``); for
    more, the macro average of the one-vs-rest values (classes absent from ``y_true``
    are left out of the average, their own value is ``None``).
    """
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(classes))
    pred = np.asarray(y_pred, dtype=np.int64) if y_pred is not None else probs.argmax(axis=1)
    k = len(classes)
    cm = confusion_matrix(y, pred, k)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / support.sum() if support.sum() else support
    per_class: dict[str, dict[str, Any]] = {}
    aucs: list[float] = []
    aps: list[float] = []
    for i, name in enumerate(classes):
        auc = roc_auc(y == i, probs[:, i]) if len(y) else None
        ap = average_precision(y == i, probs[:, i]) if len(y) and support[i] > 0 else None
        per_class[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "roc_auc": _clean(auc),
            "pr_auc": _clean(ap),
        }
        if auc is not None:
            aucs.append(auc)
        if ap is not None:
            aps.append(ap)
    if k == 2:
        auc_summary, ap_summary = per_class[classes[1]]["roc_auc"], per_class[classes[1]]["pr_auc"]
    else:
        auc_summary = float(np.mean(aucs)) if aucs else None
        ap_summary = float(np.mean(aps)) if aps else None
    return {
        "n": int(len(y)),
        "accuracy": float(tp.sum() / len(y)) if len(y) else None,
        "precision_weighted": float(np.sum(weights * precision)),
        "recall_weighted": float(np.sum(weights * recall)),
        "f1_weighted": float(np.sum(weights * f1)),
        "roc_auc": auc_summary,
        "pr_auc": ap_summary,
        "auc_average": "positive class " + classes[1] if k == 2 else "macro one-vs-rest",
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        **calibration_metrics(y, probs),
    }


def calibration_metrics(y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """How far the confidences are from the accuracies they claim.

    ``ece``: expected calibration error over ``bins`` equal-width confidence bins (top
    class); ``brier``: mean squared error of the probability vector against the one-hot
    truth (summed over classes); ``log_loss``: mean negative log-probability of the truth;
    ``reliability``: per bin, the mean confidence, the accuracy and the count (for the
    reliability diagram); ``ece_floor``: the ECE a model calibrated exactly would show on
    these rows (:func:`ece_floor`: what ``ece`` is read against on a small set);
    ``coverage``: the share of rows that can be auto-labelled (most confident first) while
    keeping 95 % / 98 % precision.
    """
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(y) == 0:
        return {"ece": None, "ece_floor": None, "brier": None, "log_loss": None, "reliability": [], "coverage": {}}
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    ece, table = _binned_gaps(conf, correct, bins)
    onehot = np.eye(probs.shape[1])[y]
    order = np.argsort(-conf, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(y) + 1)
    coverage = {}
    for target in (0.95, 0.98):
        ok = np.flatnonzero(running >= target)
        coverage[f"at_{int(target * 100)}"] = round(float((ok.max() + 1) / len(y)), 4) if ok.size else 0.0
    return {
        "ece": round(float(ece), 6),
        "ece_floor": round(ece_floor(conf, bins), 6),
        "brier": round(float(np.mean(np.sum((probs - onehot) ** 2, axis=1))), 6),
        "log_loss": round(float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)))), 6),
        "reliability": table,
        "coverage": coverage,
    }


def _binned_gaps(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, list[dict[str, Any]]]:
    """ECE (the count-weighted mean |confidence - accuracy| over equal-width confidence bins) and its bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            gap = abs(conf[sel].mean() - correct[sel].mean())
            ece += sel.mean() * gap
            table.append({"bin": [round(float(edges[b]), 2), round(float(edges[b + 1]), 2)], "confidence": round(float(conf[sel].mean()), 4),
                          "accuracy": round(float(correct[sel].mean()), 4), "n": int(sel.sum())})
    return float(ece), table


def ece_floor(confidence: np.ndarray, bins: int = 10, draws: int = 200, seed: int = 8128) -> float:
    """The ECE that a perfectly calibrated model with these top-class confidences would still
    show on this many rows (each row right with probability equal to its confidence; the mean over
    ``draws``). Binned ECE is biased upwards on a small set: at the default model's confidences on
    a 255-meme fold of doom-crossing (mean 0.92) it is 0.027 for a model calibrated exactly, so an
    ECE is read against this."""
    conf = np.asarray(confidence, dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    draws = max(20, min(draws, 2_000_000 // len(conf)))  # a large set's floor is small and steady: fewer draws
    return float(np.mean([_binned_gaps(conf, (rng.random(len(conf)) < conf).astype(np.float64), bins)[0] for _ in range(draws)]))


def roc_curves(y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, tuple[list[float], list[float]]]:
    """One-vs-rest ROC curve per class that has both positives and negatives (for plots)."""
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(classes))
    out: dict[str, tuple[list[float], list[float]]] = {}
    for i, name in enumerate(classes):
        pos = y == i
        if pos.any() and (~pos).any():
            fpr, tpr = roc_curve(pos, probs[:, i])
            out[name] = (fpr.tolist(), tpr.tolist())
    return out
