"""A nearest-neighbour vote in the image branch's PCA space, blended into the stacked model.

Why: the logistic regression draws one plane through the embedding; memes of a fandom
re-use a few dozen templates (a villager's face, the Doom Slayer's helmet), which sit in
tight clusters that a plane cuts badly at its edges. The labels of the closest training
memes see those clusters. The vote alone is weaker (0.86 grouped CV on doom-crossing
against 0.89), but blended with the regression's probabilities (geometric mean) it makes
the stacked model unsure where the two disagree, so the cascade OCRs those memes, and
the stack gains ~0.004-0.005 CV accuracy at the same OCR share (five split seeds).

The vote is numpy only (one (m x k) @ (k x n) product per batch, n ~ 1000 training rows),
saved inside the stacked model's text branch, and applied identically by training's
evaluation, ``meme-evaluate`` and the stream.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memestream.errors import ModelError

#: Neighbours that vote, and the softmax temperature over their cosine similarities:
#: a neighbour at similarity 0.9 counts e^1 = 2.7 times one at 0.8. Chosen on doom-crossing
#: (k in 5..40, uniform / similarity / softmax weights all within 0.002 of each other;
#: the softmax gave the lowest OCR share at equal accuracy).
DEFAULT_NEIGHBOURS = 15
DEFAULT_TEMPERATURE = 0.1
#: Pseudo-count per class added to the weighted votes (each >= e^-1/T): keeps a lone
#: far-away neighbourhood near the prior rather than at 0 or 1.
PRIOR = 0.5
META_FILE = "neighbours.json"
ARRAYS_FILE = "neighbours.npz"
FORMAT = "memestream-neighbours-v1"


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def vote(train: np.ndarray, labels: np.ndarray, query: np.ndarray, classes_count: int,
         neighbours: int = DEFAULT_NEIGHBOURS, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """``(m, classes)`` class shares among each query row's nearest training rows (cosine),
    weighted by ``exp(similarity / temperature)``, plus :data:`PRIOR` per class.
    ``train`` rows must be unit length (see :func:`unit_rows`)."""
    q = unit_rows(query)
    out = np.full((len(q), classes_count), PRIOR, dtype=np.float64)
    if len(q) == 0 or len(train) == 0:
        return out / out.sum(axis=1, keepdims=True)
    k = min(int(neighbours), len(train))
    sims = q @ train.T  # (m, n)
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(train) else np.broadcast_to(np.arange(len(train)), (len(q), len(train)))
    near = np.take_along_axis(sims, idx, axis=1).astype(np.float64)
    # cosine similarity <= 1, so exp(sim / T) <= e^(1/T): no overflow for T >= 0.002
    weights = np.exp(near / temperature)
    near_labels = labels[idx]
    for c in range(classes_count):
        out[:, c] += (weights * (near_labels == c)).sum(axis=1)
    return out / out.sum(axis=1, keepdims=True)


def blend(image_probs: np.ndarray, vote_probs: np.ndarray) -> np.ndarray:
    """Geometric mean of the two distributions, renormalised."""
    g = np.sqrt(np.clip(image_probs, 1e-12, 1.0) * np.clip(vote_probs, 1e-12, 1.0))
    return g / g.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class NeighbourVote:
    """The training rows' PCA coordinates (unit rows) and labels, and the vote's settings."""

    vectors: np.ndarray  # (n, k) float32, unit rows
    labels: np.ndarray  # (n,) int
    classes_count: int
    neighbours: int = DEFAULT_NEIGHBOURS
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.labels.shape != (self.vectors.shape[0],):
            raise ModelError(f"neighbour vote arrays do not fit together: vectors {self.vectors.shape}, labels {self.labels.shape}")
        if self.neighbours < 1 or not (0.002 <= self.temperature):
            raise ModelError(f"neighbour vote needs neighbours >= 1 and temperature >= 0.002, found {self.neighbours}, {self.temperature}")

    @classmethod
    def fit(cls, reduced: np.ndarray, labels: np.ndarray, classes_count: int,
            neighbours: int = DEFAULT_NEIGHBOURS, temperature: float = DEFAULT_TEMPERATURE) -> "NeighbourVote":
        return cls(unit_rows(reduced), np.asarray(labels, dtype=np.int64), int(classes_count), int(neighbours), float(temperature))

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1])

    def probs(self, reduced: np.ndarray) -> np.ndarray:
        reduced = np.asarray(reduced)
        if reduced.ndim != 2 or reduced.shape[1] != self.dims:
            raise ModelError(f"neighbour vote expects {self.dims}-d PCA coordinates, got shape {reduced.shape}")
        return vote(self.vectors, self.labels, reduced, self.classes_count, self.neighbours, self.temperature)

    def apply(self, image_probs: np.ndarray, reduced: np.ndarray) -> np.ndarray:
        """The image branch's probabilities blended with the vote."""
        return blend(image_probs, self.probs(reduced))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / ARRAYS_FILE, vectors=self.vectors, labels=self.labels)
        meta = {"format": FORMAT, "classes_count": self.classes_count, "neighbours": self.neighbours,
                "temperature": self.temperature, "rows": int(self.vectors.shape[0]), "dims": self.dims}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "NeighbourVote":
        try:
            meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
                vectors, labels = arrays["vectors"], arrays["labels"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"neighbour vote in {folder} is unreadable: {type(exc).__name__}: {exc}") from None
        if meta.get("format") != FORMAT:
            raise ModelError(f"neighbour vote in {folder} has format {meta.get('format')!r}, expected {FORMAT!r}")
        if vectors.shape != (meta.get("rows"), meta.get("dims")):
            raise ModelError(f"neighbour vote in {folder}: vectors {vectors.shape}, manifest says {meta.get('rows')} x {meta.get('dims')}")
        return cls(vectors.astype(np.float32), labels.astype(np.int64), int(meta["classes_count"]), int(meta["neighbours"]), float(meta["temperature"]))
