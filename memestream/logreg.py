"""Logistic regressions exported as arrays: fitted with scikit-learn, scored in numpy.

The text model (:mod:`memestream.text_model`) and the stacker (:mod:`memestream.stacking`) are
both logistic regressions that are fitted on the driver and scored inside Spark Python workers,
where scikit-learn is not imported. They share the arithmetic here, so both turn decision
values into probabilities exactly as scikit-learn's ``predict_proba`` does.

Conventions: ``k`` classes are the integers ``0..k-1``; decision values are ``(n, 1)`` (the
logit of class 1) for two classes, as scikit-learn stores a binary model, else ``(n, k)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from memestream.errors import DataError


def log_proba(decision: np.ndarray, k: int) -> np.ndarray:
    """(n, k) log-probabilities from LR decision values: binary (n, 1) logit or multinomial (n, k).

    Computed stably (log-sigmoid / log-softmax); equals log(sklearn predict_proba) wherever that
    is itself accurate (|logit| < ~15), and stays finite beyond.
    """
    if k == 2:
        d = decision[:, 0]
        # log sigmoid(d) = -log1p(exp(-d)), written to never overflow
        log_p1 = -(np.logaddexp(0.0, -d))
        log_p0 = -(np.logaddexp(0.0, d))
        return np.stack([log_p0, log_p1], axis=1)
    top = decision.max(axis=1, keepdims=True)
    shifted = decision - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def proba(decision: np.ndarray, k: int) -> np.ndarray:
    """(n, k) probabilities computed like sklearn's LogisticRegression.predict_proba."""
    if k == 2:
        d = decision[:, 0]
        p1 = np.empty_like(d)
        pos = d >= 0
        p1[pos] = 1.0 / (1.0 + np.exp(-d[pos]))
        e = np.exp(d[~pos])
        p1[~pos] = e / (1.0 + e)
        return np.stack([1.0 - p1, p1], axis=1)
    shifted = decision - decision.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def check_labels(y: Any, classes_count: int, what: str) -> np.ndarray:
    """``y`` as int64 labels in ``0..classes_count-1`` with every class present; DataError naming ``what``."""
    y = np.asarray(y)
    if classes_count < 2:
        raise DataError(f"{what}: need at least 2 classes, got classes_count={classes_count}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be a 1-d integer array, got {y.dtype} shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= classes_count):
        raise DataError(f"{what}: labels must be in 0..{classes_count - 1}")
    missing = sorted(set(range(classes_count)) - set(y.tolist()))
    if missing:
        raise DataError(f"{what}: no training rows for class(es) {missing}")
    return y.astype(np.int64)


def fit(X: Any, y: np.ndarray, C: float, seed: int) -> Any:
    """scikit-learn's LogisticRegression fitted on ``X`` (imported here: driver side only)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X, y)
