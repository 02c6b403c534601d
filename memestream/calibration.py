"""Calibrated probabilities: a model's confidence should be the accuracy it delivers.

Logistic regressions on 1280-d embeddings, and stackers over them, are overconfident on
new memes: a row that says 0.99 is right far less often than 99 % of the time, so a
``WHERE confidence < 0.6`` review queue finds nothing. A calibrator fitted on the
out-of-fold predictions of the grouped cross-validation maps the model's probabilities
to calibrated ones. Three methods compete by cross-validated log loss:

- ``temperature``: divide the log-probabilities by one fitted T (any number of classes);
- ``platt``: a logistic regression on the positive class's log-odds (two classes);
- ``isotonic``: a monotone step map of the positive class's probability (two classes),
  linearly interpolated between its knots.

The chosen map is saved inside the model and applied by the one scorer that training,
``meme-evaluate`` and the stream share, in numpy (no scikit-learn in the workers).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memestream.errors import ModelError
from memestream.inference import softmax as _softmax

CALIBRATION_FILE = "calibration.json"
METHODS = ("none", "temperature", "platt", "isotonic")


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-12, 1.0))


@dataclass(frozen=True)
class Calibrator:
    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if self.method == "none" or probs.size == 0:
            return probs
        if self.method == "temperature":
            return _softmax(_log(probs) / float(self.params["T"]))
        p1 = np.clip(probs[:, 1], 1e-12, 1 - 1e-12)
        if self.method == "platt":
            z = self.params["a"] * np.log(p1 / (1 - p1)) + self.params["b"]
            q = 1.0 / (1.0 + np.exp(-z))
        elif self.method == "isotonic":
            q = np.interp(p1, self.params["x"], self.params["y"])
            q = np.clip(q, 1e-6, 1 - 1e-6)
        else:
            raise ModelError(f"unknown calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        return np.stack([1.0 - q, q], axis=1)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Calibrator":
        method = doc.get("method", "none")
        if method not in METHODS:
            raise ModelError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
        return cls(method, dict(doc.get("params", {})))


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(_log(probs[np.arange(len(y)), y])))


def _fit(method: str, probs: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "none":
        return Calibrator()
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        logp = _log(probs)
        res = minimize_scalar(lambda t: _nll(_softmax(logp / np.exp(t)), y), bounds=(-4.0, 4.0), method="bounded")
        return Calibrator("temperature", {"T": float(np.exp(res.x))})
    p1 = np.clip(probs[:, 1], 1e-12, 1 - 1e-12)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        z = np.log(p1 / (1 - p1)).reshape(-1, 1)
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(z, y)
        return Calibrator("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p1, y)
        return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]})
    raise ValueError(method)


def fit_calibration(probs: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[Calibrator, dict[str, float]]:
    """Choose and fit a calibrator on out-of-fold probabilities.

    Each method is scored by log loss on every fold with the map fitted on the other folds
    (so isotonic's flexibility is not rewarded for memorising), then refitted on all rows.
    Returns the calibrator and the cross-validated log loss of every method.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    methods = ["none", "temperature"] + (["platt", "isotonic"] if probs.shape[1] == 2 else [])
    n_folds = int(folds.max()) + 1
    scores: dict[str, float] = {}
    for method in methods:
        out = np.zeros_like(probs)
        for f in range(n_folds):
            tr, te = folds != f, folds == f
            if len(np.unique(y[tr])) < 2:
                out[te] = probs[te]
                continue
            out[te] = _fit(method, probs[tr], y[tr]).apply(probs[te])
        scores[method] = round(_nll(out, y), 6)
    best = min(methods, key=lambda m: (scores[m], methods.index(m)))
    return _fit(best, probs, y), scores


def save_calibrators(folder: Path, calibrators: dict[str, Calibrator], scores: dict[str, Any] | None = None) -> None:
    """``{"image": ..., "stacked": ...}``: one map per output the model can give."""
    doc = {name: c.to_json() for name, c in calibrators.items()}
    if scores:
        doc["cv_log_loss"] = scores
    (folder / CALIBRATION_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def load_calibrators(folder: Path) -> dict[str, Calibrator]:
    path = folder / CALIBRATION_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {k: Calibrator.from_json(v) for k, v in doc.items() if k in ("image", "stacked")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"calibration file {path} is unreadable: {exc}") from None
