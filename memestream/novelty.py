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

Two views since issue 25. The embedding distance puts pages of text, charts and app
screens near the text-captioned memes (AUROC 0.05 on pages of text), so a second view
scores the image's cheap pixel statistics (:mod:`memestream.image_stats`: flat and
near-white share, colour count, two-tone cells, ...) by a Mahalanobis distance after a
rank-to-normal (copula) transform against the training images. Each view's score becomes
an empirical tail probability against the out-of-fold scores of the training images; the
novelty is ``-log10`` of their weighted minimum (an image unusual in either view is
flagged; the embedding view gets a quarter of the false-alarm budget, see
:data:`DEFAULT_EMBED_SHARE`), and the threshold is a quantile of the same combination out
of fold, so about ``1 - quantile`` of ordinary images are flagged. A row without statistics
(its image was not at hand, e.g. features scored on the driver without them) is scored by
the embedding view alone against the same threshold, which flags fewer. A model saved
before the views (no ``score`` in its metadata) keeps its plain distance and threshold.

Saved inside the model (``novelty.npz``); numpy only, a (1, d) x (d, m) product per
image against ~1000 reference rows (float16 on disk and in memory), plus a 22x22 form.
"""
from __future__ import annotations

import dataclasses
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
#: share of out-of-fold training scores below the threshold: ~2 % of ordinary memes flagged
#: (held-out memes of doom-crossing, five splits: 2.0 %, 0.8-3.9 %; at 0.975: 2.4 %, up to
#: 4.3 %; at most 3 % is the bar, issue 25)
DEFAULT_QUANTILE = 0.98
#: ``score`` in the saved metadata of a model with calibrated views (absent: the old distance)
VIEWS_SCORE = "min-tail-p"
#: the embedding view's share of the false-alarm budget (the statistics view gets the rest):
#: a weighted minimum ``min(p_embed / w, p_stats / (1 - w))``. Text-heavy foreign images are
#: unusual in their statistics only, and an equal share spends half the budget on memes that
#: are merely unusual in the embedding (foreign seeds 0-1 against held-out memes: AUROC 0.963
#: at 0.5, 0.971-0.973 at 0.2-0.3; docs/benchmarks.md)
DEFAULT_EMBED_SHARE = 0.25
_LOGIT_TO_NORMAL = float(np.sqrt(3.0) / np.pi)  # a logistic's variance scaled to a normal's


def tail_p(null_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Empirical upper-tail probability of each score among the sorted null scores, with the
    +1 correction (never 0: an image beyond every training image gets 1/(m+1))."""
    m = len(null_sorted)
    return (m - np.searchsorted(null_sorted, scores, side="left") + 1.0) / (m + 1.0)


def _copula_z(sorted_cols: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each column's mid-rank among the training column, as a normal-like score (logit,
    numpy only): the statistics are skewed and bounded, their ranks are not."""
    m = sorted_cols.shape[0]
    out = np.empty(x.shape, dtype=np.float64)
    for j in range(x.shape[1]):
        col = sorted_cols[:, j]
        p = (np.searchsorted(col, x[:, j], "left") + np.searchsorted(col, x[:, j], "right") + 1.0) / (2.0 * m + 2.0)
        out[:, j] = np.log(p / (1.0 - p)) * _LOGIT_TO_NORMAL
    return out


@dataclass(frozen=True)
class StatsView:
    """The pixel-statistics view: training columns (sorted) and the precision of their z-scores."""

    sorted_cols: np.ndarray  # (m, s)
    precision: np.ndarray  # (s, s)

    @classmethod
    def fit(cls, stats: np.ndarray) -> "StatsView":
        cols = np.sort(np.asarray(stats, dtype=np.float64), axis=0)
        z = _copula_z(cols, np.asarray(stats, dtype=np.float64))
        cov = np.cov(z.T) + 1e-3 * np.eye(z.shape[1])  # ridge: some statistics move together
        return cls(cols, np.linalg.inv(cov))

    def distance(self, stats: np.ndarray) -> np.ndarray:
        z = _copula_z(self.sorted_cols, np.asarray(stats, dtype=np.float64))
        return np.einsum("ij,jk,ik->i", z, self.precision, z)


def _fill_missing(stats: np.ndarray) -> np.ndarray:
    """Training rows without statistics get the column medians (so they sit at the centre)."""
    stats = np.asarray(stats, dtype=np.float64).copy()
    bad = ~np.isfinite(stats)
    if bad.any():
        med = np.nanmedian(np.where(bad, np.nan, stats), axis=0)
        stats[bad] = np.take(np.nan_to_num(med), np.nonzero(bad)[1])
    return stats


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
    #: sorted out-of-fold embedding distances of the training rows (None: a model saved before
    #: the views, whose novelty is the raw distance)
    embed_null: np.ndarray | None = None
    stats_view: StatsView | None = None
    #: sorted out-of-fold statistics distances of the training rows
    stats_null: np.ndarray | None = None
    embed_share: float = DEFAULT_EMBED_SHARE

    @property
    def wants_stats(self) -> bool:
        """Whether :meth:`score` uses the images' statistics (callers keep the decoded images)."""
        return self.stats_view is not None

    def __post_init__(self) -> None:
        # one float32 copy for the products: converting per call cost more than the product
        object.__setattr__(self, "_ref32", np.ascontiguousarray(np.asarray(self.reference, dtype=np.float32).T))

    def score(self, features: np.ndarray, stats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(novelty (n,), nearest class index (n,))``; larger novelty = less like the training set.

        ``stats``: the rows' :func:`memestream.image_stats.image_stats` (NaN rows or None:
        the embedding view alone)."""
        dist, nearest = self.distance(features)
        if self.embed_null is None or len(dist) == 0:
            return dist, nearest
        stats_p = None
        if self.stats_view is not None and self.stats_null is not None and stats is not None:
            stats = np.asarray(stats, dtype=np.float64).reshape(len(dist), -1)
            have = np.all(np.isfinite(stats), axis=1)
            stats_p = np.full(len(dist), np.inf)
            if have.any():
                stats_p[have] = tail_p(self.stats_null, self.stats_view.distance(stats[have]))
        return self._combine(tail_p(self.embed_null, dist), stats_p), nearest

    def _combine(self, embed_p: np.ndarray, stats_p: np.ndarray | None) -> np.ndarray:
        """``-log10`` of the weighted minimum of the views' tail probabilities (capped at 1)."""
        if self.stats_view is None:
            return -np.log10(embed_p)
        p = embed_p / self.embed_share
        if stats_p is not None:
            p = np.minimum(p, stats_p / (1.0 - self.embed_share))
        return -np.log10(np.minimum(p, 1.0))

    def distance(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean sqrt-cosine distance to the k nearest reference rows, nearest class index)``."""
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
            dims: int | None = None, files: Sequence[str] | None = None,
            stats: np.ndarray | None = None, embed_share: float = DEFAULT_EMBED_SHARE) -> tuple["NoveltyModel", np.ndarray]:
        """Reference set = the training rows; each view's null = its out-of-fold scores (each
        fold's rows scored against the other folds); threshold = ``quantile`` of the combined
        out-of-fold novelty. ``stats``: the rows' image statistics (None: the embedding view
        only). Returns the model and the out-of-fold novelty of the rows."""
        ref = _embed(features, dims).astype(np.float16)
        y = np.asarray(y, dtype=np.int64)
        features = np.asarray(features)
        oof = np.zeros(len(ref))
        oof_stats = np.zeros(len(ref))
        filled = _fill_missing(stats) if stats is not None else None
        for f in range(int(folds.max()) + 1):
            tr, te = folds != f, folds == f
            oof[te] = cls(ref[tr], y[tr], k, np.inf, dims).distance(features[te])[0]
            if filled is not None:
                oof_stats[te] = StatsView.fit(filled[tr]).distance(filled[te])
        embed_null = np.sort(oof)
        view = StatsView.fit(filled) if filled is not None else None
        stats_null = np.sort(oof_stats) if filled is not None else None
        model = cls(ref, y, k, np.inf, dims, tuple(files) if files is not None else None, embed_null, view, stats_null, embed_share)
        novelty = model._combine(tail_p(embed_null, oof), tail_p(stats_null, oof_stats) if stats_null is not None else None)
        return dataclasses.replace(model, threshold=float(np.quantile(novelty, quantile))), novelty

    def save(self, folder: Path) -> None:
        from memestream.image_stats import STATS_VERSION

        extra: dict[str, np.ndarray] = {"files": np.array(self.files, dtype=str)} if self.files is not None else {}
        meta: dict = {"k": self.k, "threshold": self.threshold, "embedding": "sqrt-cosine", "dims": self.dims}
        if self.embed_null is not None:
            meta["score"] = VIEWS_SCORE
            extra["embed_null"] = self.embed_null
        if self.stats_view is not None and self.stats_null is not None:
            meta.update(stats_version=STATS_VERSION, embed_share=self.embed_share)
            extra.update(stats_cols=self.stats_view.sorted_cols, stats_precision=self.stats_view.precision,
                         stats_null=self.stats_null)
        np.savez(folder / NOVELTY_FILE, reference=self.reference, labels=self.labels, **extra,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, folder: Path) -> "NoveltyModel | None":
        path = folder / NOVELTY_FILE
        if not path.exists():
            return None
        from memestream.image_stats import STATS_VERSION

        try:
            with np.load(path) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                dims = meta.get("dims")
                files = tuple(str(f) for f in z["files"]) if "files" in z.files else None
                score = meta.get("score")
                if score not in (None, VIEWS_SCORE):
                    raise ModelError(f"novelty model {path} has score {score!r}, which this version cannot compute: retrain with meme-train")
                view, stats_null = None, None
                if "stats_version" in meta:
                    if meta["stats_version"] != STATS_VERSION:
                        raise ModelError(f"novelty model {path} was fitted on image statistics v{meta['stats_version']}, "
                                         f"this version computes v{STATS_VERSION}: retrain with meme-train")
                    view = StatsView(np.asarray(z["stats_cols"], dtype=np.float64), np.asarray(z["stats_precision"], dtype=np.float64))
                    stats_null = np.asarray(z["stats_null"], dtype=np.float64)
                embed_null = np.asarray(z["embed_null"], dtype=np.float64) if score == VIEWS_SCORE else None
                return cls(z["reference"], z["labels"], int(meta["k"]), float(meta["threshold"]), None if dims is None else int(dims),
                           files, embed_null, view, stats_null, float(meta.get("embed_share", DEFAULT_EMBED_SHARE)))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip/JSON/key errors: one line
            raise ModelError(f"novelty model {path} is unreadable: {type(exc).__name__}: {exc}") from None
