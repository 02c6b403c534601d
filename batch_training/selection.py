"""Honest evaluation and model selection: near-duplicate groups, a grouped split, and
hyper-parameters chosen by grouped k-fold cross-validation on the training part.

Reposts and template re-uses of one meme share a group (:mod:`memestream.dedup`), and a
group is never on both sides of a split or a fold, so the figures measure new memes.
The cross-validation mirrors the Spark pipeline in numpy/scikit-learn on the driver (a
few thousand rows: milliseconds a fit, where a Spark fit costs seconds), then the
chosen configuration is fitted once with Spark ML and saved:

- image branch: StandardScaler -> PCA(k) -> L2 logistic regression (``regParam``);
  scikit-learn's ``C`` is ``1 / (regParam * n)`` for the same objective;
- text branch: character n-gram TF-IDF -> logistic regression (``C``);
- stacker over both branches' out-of-fold log-probabilities, and the cascade threshold
  (OCR only when the image branch's top probability is below it), chosen as the
  cheapest threshold whose cross-validated accuracy is within ``tolerance`` of the best.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_PCA_KS = (256, 512)
DEFAULT_REG_PARAMS = (0.03, 0.1, 0.3)
DEFAULT_TEXT_CS = (3.0, 10.0, 30.0)
#: Candidate cascade thresholds on the image branch's top probability. Training OCRs only the
#: images below the largest (the only ones whose text any candidate reads): on doom-crossing
#: 0.95 means ~45% of the training part instead of all of it. Over six split seeds, CV and
#: test accuracy at the chosen threshold matched the old grid (1.01 ... 0.8 with every image
#: OCR'd; thresholds above 0.95 never beat 0.95 by more than the tolerance); a ceiling of 0.9
#: lost ~0.007 of CV accuracy (a text model trained on fewer texts). With post titles as
#: extra text documents that loss is gone, so training then OCRs only below the largest
#: threshold the OCR budget affords (``train.select``).
DEFAULT_CASCADES = (0.95, 0.9, 0.8)
#: The threshold that means "always OCR" (every top probability is below it).
ALWAYS_OCR = 1.01
CASCADE_TOLERANCE = 0.003
#: Largest share of images the default cascade may OCR. OCR costs ~0.3 s an image on one
#: thread against ~10 ms for the embedding, so on 2 cores a third is ~20 images/s, the default
#: stream's throughput target (measured: 22.4 images/s with cascade < 0.8, whose CV share is
#: 27-32 % over five split seeds with the neighbour vote); the next threshold (0.9, ~45 %)
#: buys ~0.002 CV accuracy and costs a third of the speed.
DEFAULT_OCR_BUDGET = 0.33


def group_labels(groups: np.ndarray, y: np.ndarray) -> dict[int, int]:
    """Majority class of each group (for stratifying whole groups)."""
    out: dict[int, int] = {}
    for g in np.unique(groups):
        vals, counts = np.unique(y[groups == g], return_counts=True)
        out[int(g)] = int(vals[np.argmax(counts)])
    return out


def _seeded_order(keys: Sequence[Any], seed: int) -> list[Any]:
    return sorted(keys, key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), str(g)))


def grouped_split(groups: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: whole groups, about ``test_fraction`` of each class, seeded."""
    test = np.zeros(len(y), dtype=bool)
    glabel = group_labels(groups, y)
    sizes = {g: int((groups == g).sum()) for g in glabel}
    for cls in sorted(set(glabel.values())):
        members = [g for g, c in glabel.items() if c == cls]
        target = test_fraction * sum(sizes[g] for g in members)
        taken = 0
        for g in _seeded_order(members, seed):
            if taken + sizes[g] / 2 > target:
                break
            test |= groups == g
            taken += sizes[g]
    return test


def grouped_folds(groups: np.ndarray, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row (0..k-1): whole groups, classes balanced across folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, min(k, int(np.bincount(y).min()) if len(y) else 2))
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[held] = f
    return folds


def _standardize_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    return mean, scale


def pca_axes(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` principal axes (d, k) of ``z`` and the share of the total variance each
    explains (as Spark's ``PCAModel.explainedVariance``). With fewer rows than columns
    (1000 memes, 1280-d embeddings) the n x n Gram matrix's eigenvectors give them at a
    fraction of an SVD's cost."""
    centered = z - z.mean(axis=0)
    n, d = centered.shape
    total = float((centered * centered).sum())
    if n < d:
        # centring leaves rank <= n - 1: axes past it would be noise divided by ~0
        k = min(k, n - 1)
        w, u = np.linalg.eigh(centered @ centered.T)
        order = np.argsort(w)[::-1][:k]
        w, u = np.clip(w[order], 1e-12, None), u[:, order]
        return (centered.T @ u) / np.sqrt(w), w / total if total > 0 else np.zeros_like(w)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    w = s[:k] ** 2
    return vt[:k].T, w / total if total > 0 else np.zeros_like(w)


def _pca_basis(z: np.ndarray, k: int) -> np.ndarray:
    return pca_axes(z, k)[0]


def _fold_prep(x: np.ndarray, tr: np.ndarray, te: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold's standardised rows and PCA axes, fitted on its training part:
    ``(z_train, z_test, basis)`` with ``basis`` clamped to the fold's rank."""
    mean, scale = _standardize_fit(x[tr])
    ztr, zte = (x[tr] - mean) * scale, (x[te] - mean) * scale
    return ztr, zte, _pca_basis(ztr, min(k, ztr.shape[0] - 1, ztr.shape[1]))


def _logreg(x: np.ndarray, y: np.ndarray, reg: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / (reg * len(y)), max_iter=300, tol=1e-5, random_state=seed)
    return model.fit(x, y)


@dataclass
class ImageCV:
    pca_k: int
    reg_param: float
    scores: dict[str, list[float]]  # "k=..,reg=.." -> accuracy per fold
    oof_probs: np.ndarray  # (n, classes) out-of-fold probabilities of the chosen config

    @property
    def fold_accuracy(self) -> list[float]:
        return self.scores[_key(self.pca_k, self.reg_param)]


def _key(k: int, reg: float) -> str:
    return f"k={k},reg={reg:g}"


def image_cv(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    classes: int,
    pca_ks: Sequence[int] = DEFAULT_PCA_KS,
    reg_params: Sequence[float] = DEFAULT_REG_PARAMS,
    seed: int = 42,
) -> ImageCV:
    """Grouped CV of StandardScaler -> PCA(k) -> logistic regression; the most accurate
    (k, regParam) wins, ties by out-of-fold log loss, then to the smaller k."""
    x = x.astype(np.float64)
    n_folds = int(folds.max()) + 1
    scores: dict[str, list[float]] = {}
    oof: dict[str, np.ndarray] = {}
    for f in range(n_folds):
        tr, te = folds != f, folds == f
        ztr, zte, basis = _fold_prep(x, tr, te, max(pca_ks))
        kmax = basis.shape[1]
        for k in pca_ks:
            kk = min(k, kmax)
            ptr, pte = ztr @ basis[:, :kk], zte @ basis[:, :kk]
            for reg in reg_params:
                model = _logreg(ptr, y[tr], reg, seed)
                probs = np.zeros((int(te.sum()), classes))
                probs[:, model.classes_] = model.predict_proba(pte)
                key = _key(k, reg)
                oof.setdefault(key, np.zeros((len(y), classes)))[te] = probs
                scores.setdefault(key, []).append(float((probs.argmax(axis=1) == y[te]).mean()))
    def log_loss(key: str) -> float:
        return float(-np.mean(np.log(np.clip(oof[key][np.arange(len(y)), y], 1e-12, 1.0))))

    # accuracy first; among equals (heavy shrinkage keeps the argmax) the better log loss
    best = max(
        ((k, reg) for k in pca_ks for reg in reg_params),
        key=lambda kr: (round(float(np.mean(scores[_key(*kr)])), 6), -round(log_loss(_key(*kr)), 6), -kr[0]),
    )
    log.info("image branch CV: %s", ", ".join(f"{k} {np.mean(v):.4f}" for k, v in scores.items()))
    return ImageCV(best[0], best[1], scores, oof[_key(*best)])


def neighbour_cv(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    classes: int,
    pca_k: int,
    neighbours: int,
    temperature: float,
) -> np.ndarray:
    """Out-of-fold neighbour-vote probabilities ``(n, classes)``: per fold the same
    standardisation and PCA(k) as :func:`image_cv`, then each held-out row's vote among
    the fold's training rows (:func:`memestream.neighbours.vote`)."""
    from memestream.neighbours import _unit_rows, vote

    x = x.astype(np.float64)
    out = np.zeros((len(y), classes))
    for f in range(int(folds.max()) + 1):
        tr, te = folds != f, folds == f
        ztr, zte, basis = _fold_prep(x, tr, te, pca_k)
        out[te] = vote(_unit_rows(ztr @ basis), y[tr], zte @ basis, classes, neighbours, temperature)
    return out


@dataclass
class TextCV:
    C: float
    scores: dict[str, list[float]]
    oof_logp: np.ndarray  # (n, classes)


def text_cv(texts: Sequence[str], y: np.ndarray, folds: np.ndarray, classes: int, cs: Sequence[float] = DEFAULT_TEXT_CS, seed: int = 42,
            extra: Sequence[str] | None = None) -> TextCV:
    """Grouped CV of the character n-gram text classifier on the OCR text. ``extra``: one
    more training document per row (its post title), added to each fold's training part
    only: held-out rows are scored on their OCR text alone, as the stream scores them."""
    from memestream.text_model import TextModel

    n_folds = int(folds.max()) + 1
    has = np.array([bool(t.strip()) for t in texts])
    scores: dict[str, list[float]] = {}
    oof: dict[str, np.ndarray] = {}
    for c in cs:
        key = f"C={c:g}"
        out = np.zeros((len(y), classes))
        for f in range(n_folds):
            tr, te = folds != f, folds == f
            docs, labels = [texts[i] for i in np.flatnonzero(tr)], y[tr]
            if extra is not None:
                docs, labels = docs + [extra[i] for i in np.flatnonzero(tr)], np.concatenate([labels, labels])
            model = TextModel.fit(docs, labels, classes, C=c, seed=seed)
            out[te] = model.decision([texts[i] for i in np.flatnonzero(te)])
            sel = te & has
            scores.setdefault(key, []).append(float((out[sel].argmax(axis=1) == y[sel]).mean()) if sel.any() else 0.0)
        oof[key] = out
    best = max(cs, key=lambda c: (round(float(np.mean(scores[f"C={c:g}"])), 6), -c))
    log.info("text branch CV (memes with text): %s", ", ".join(f"{k} {np.mean(v):.4f}" for k, v in scores.items()))
    return TextCV(best, scores, oof[f"C={best:g}"])


@dataclass
class CascadeCV:
    cascade: float
    stacker_c: float
    table: list[dict[str, float]] = field(default_factory=list)  # per threshold: accuracy, OCR share, per-fold accuracy
    oof_probs: np.ndarray | None = None  # stacked OOF probabilities at the chosen threshold


def _masked(image_probs: np.ndarray, text_logp: np.ndarray, has_text: np.ndarray, cascade: float) -> tuple[np.ndarray, np.ndarray]:
    ocr = image_probs.max(axis=1) < cascade
    has = has_text & ocr
    return ocr, has


def cascade_cv(
    image_probs: np.ndarray,
    text_logp: np.ndarray,
    has_text: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    cascades: Sequence[float] = DEFAULT_CASCADES,
    stacker_c: float = 1.0,
    tolerance: float = CASCADE_TOLERANCE,
    ocr_budget: float = 1.0,
) -> CascadeCV:
    """Second-level grouped CV of the stacker for each cascade threshold (rows the cascade
    would not OCR get ``has_text = 0``, as in the stream). Among the thresholds whose CV OCR
    share fits ``ocr_budget`` (or the cheapest, if none does), picks the one with the fewest
    OCR calls whose accuracy is within ``tolerance`` of the best of them."""
    from memestream.stacking import Stacker

    image_logp = np.log(np.clip(image_probs, 1e-12, 1.0))
    n_folds = int(folds.max()) + 1
    rows = []
    oofs = {}
    for cascade in cascades:
        ocr, has = _masked(image_probs, text_logp, has_text, cascade)
        out = np.zeros_like(image_probs)
        accs = []
        for f in range(n_folds):
            tr, te = folds != f, folds == f
            st = Stacker.fit(image_logp[tr], text_logp[tr], has[tr].astype(np.float64), y[tr], C=stacker_c)
            out[te] = st.predict_proba(image_logp[te], text_logp[te], has[te].astype(np.float64))
            accs.append(float((out[te].argmax(axis=1) == y[te]).mean()))
        oofs[cascade] = out
        rows.append({"cascade": cascade, "accuracy": float((out.argmax(axis=1) == y).mean()), "ocr_share": float(ocr.mean()),
                     "fold_accuracy": accs})
    affordable = [r for r in rows if r["ocr_share"] <= ocr_budget] or [min(rows, key=lambda r: r["ocr_share"])]
    best_acc = max(r["accuracy"] for r in affordable)
    ok = [r for r in affordable if r["accuracy"] >= best_acc - tolerance]
    chosen = min(ok, key=lambda r: (r["ocr_share"], -r["accuracy"]))
    log.info("cascade CV: %s", ", ".join(f"<{r['cascade']:g}: {r['accuracy']:.4f} ({r['ocr_share']:.0%} OCR)" for r in rows))
    return CascadeCV(chosen["cascade"], stacker_c, rows, oofs[chosen["cascade"]])


def fold_summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, 4), "folds": [round(float(v), 4) for v in arr]}
