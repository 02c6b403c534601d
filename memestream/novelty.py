""""None of these": a novelty score per image, for memes from fandoms the model never saw.

A classifier always answers with one of its classes, however foreign the input. The
novelty score is the mean cosine distance from the image's embedding (square-rooted,
like a Hellinger distance: the embedding is non-negative, and the root keeps a few large
activations from dominating) to its ``k`` nearest training images: small for images like
the training data, large for a photo, a blank image or another community's memes.
Standardizing each dimension instead, or a Mahalanobis distance in PCA space, separated
foreign images far worse on doom-crossing (AUROC 0.63 and 0.5 against 0.98). The threshold is fitted in training
on held-out in-distribution scores (a high percentile of the out-of-fold scores), so a
known share of ordinary images is flagged by design.

Saved inside the model (``novelty.npz``); numpy only, a (1, d) x (d, m) product per
image against ~1000 reference rows (float16 on disk and in memory).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from memestream.errors import ConfigError, ModelError

NOVELTY_FILE = "novelty.npz"
OOD_MODES = ("off", "flag", "reject")
DEFAULT_OOD_MODE = "flag"
OOD_CODE = "out_of_distribution"
UNKNOWN_LABEL = "unknown"
DEFAULT_K = 10
DEFAULT_QUANTILE = 0.99


def check_ood_mode(mode: str) -> str:
    if mode not in OOD_MODES:
        raise ConfigError(f"--ood must be one of {'|'.join(OOD_MODES)}, found {mode!r}")
    return mode


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _embed(features: np.ndarray, dims: int | None = None) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if dims is not None:
        x = x[:, :dims]
    return _unit(np.sqrt(np.maximum(x, 0.0))).astype(np.float32)


@dataclass(frozen=True)
class NoveltyModel:
    reference: np.ndarray  # (m, d) unit rows (float16 on disk)
    labels: np.ndarray  # (m,) class index of each reference row
    k: int
    threshold: float
    #: leading feature columns compared (None: all). A multi-scale embedding's mid-level
    #: columns help classes apart but blur "unlike anything seen": measured AUROC 0.91
    #: with all 1904 columns of effnet_lite0_ms, see FeatureSet.novelty_dims.
    dims: int | None = None
    #: the training file (path relative to the training folder) of each reference row, so a
    #: person can see the nearest training memes behind a label (None: a model saved without)
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # one float32 copy for the products: converting per call cost more than the product
        object.__setattr__(self, "_ref32", np.ascontiguousarray(np.asarray(self.reference, dtype=np.float32).T))

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(novelty (n,), nearest class index (n,))``; larger novelty = less like the training set."""
        if len(features) == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        sims = _embed(features, self.dims) @ self._ref32  # type: ignore[attr-defined]
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        nearest = top[np.arange(len(top)), top_sims.argmax(axis=1)]
        return (1.0 - top_sims.mean(axis=1)).astype(np.float64), self.labels[nearest]

    def nearest(self, features: np.ndarray, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` reference rows closest to one image: ``(row, cosine similarity)``, closest first."""
        sims = (_embed(np.asarray(features).reshape(1, -1), self.dims) @ self._ref32)[0]  # type: ignore[attr-defined]
        n = min(n, len(sims))
        top = np.argpartition(-sims, n - 1)[:n]
        return [(int(i), float(sims[i])) for i in top[np.argsort(-sims[top])]]

    @classmethod
    def fit(cls, features: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int = DEFAULT_K, quantile: float = DEFAULT_QUANTILE,
            dims: int | None = None, files: Sequence[str] | None = None) -> tuple["NoveltyModel", np.ndarray]:
        """Reference set = the training rows; threshold = ``quantile`` of out-of-fold scores
        (each fold's rows scored against the other folds). Returns the model and those scores."""
        ref = _embed(features, dims).astype(np.float16)
        y = np.asarray(y, dtype=np.int64)
        oof = np.zeros(len(ref))
        for f in range(int(folds.max()) + 1):
            tr, te = folds != f, folds == f
            oof[te] = cls(ref[tr], y[tr], k, np.inf, dims).score(np.asarray(features)[te])[0]
        return cls(ref, y, k, float(np.quantile(oof, quantile)), dims, tuple(files) if files is not None else None), oof

    def save(self, folder: Path) -> None:
        extra = {"files": np.array(self.files, dtype=str)} if self.files is not None else {}
        np.savez(folder / NOVELTY_FILE, reference=self.reference, labels=self.labels, **extra,
                 meta=np.frombuffer(json.dumps({"k": self.k, "threshold": self.threshold, "embedding": "sqrt-cosine", "dims": self.dims}).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, folder: Path) -> "NoveltyModel | None":
        path = folder / NOVELTY_FILE
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                dims = meta.get("dims")
                files = tuple(str(f) for f in z["files"]) if "files" in z.files else None
                return cls(z["reference"], z["labels"], int(meta["k"]), float(meta["threshold"]), None if dims is None else int(dims),
                           files)
        except Exception as exc:  # noqa: BLE001 - zip/JSON/key errors: one line
            raise ModelError(f"novelty model {path} is unreadable: {type(exc).__name__}: {exc}") from None
