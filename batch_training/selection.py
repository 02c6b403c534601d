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
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from batch_training.config import ALWAYS_OCR, DEFAULT_CASCADES, DEFAULT_PCA_KS, DEFAULT_REG_PARAMS, TrainConfig
from batch_training.ingest import Ingested
from memestream.dedup import near_duplicate_groups
from memestream.errors import DataError
from memestream.neighbours import DEFAULT_TEMPERATURE, blend, unit_rows, vote
from memestream.stacking import Stacker
from memestream.text_model import TextModel, has_text

log = logging.getLogger(__name__)

DEFAULT_TEXT_CS = (3.0, 10.0, 30.0)
CASCADE_TOLERANCE = 0.003


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
    k = max(2, min(k, int(np.bincount(y).min()) if len(y) else 2))
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[held] = f
    return folds


def standardize_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, 1 / sample std)`` per column, 0 where a column is constant (Spark's StandardScaler)."""
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
    mean, scale = standardize_fit(x[tr])
    ztr, zte = (x[tr] - mean) * scale, (x[te] - mean) * scale
    return ztr, zte, _pca_basis(ztr, min(k, ztr.shape[0] - 1, ztr.shape[1]))


def fit_logistic(x: np.ndarray, y: np.ndarray, reg: float, seed: int) -> LogisticRegression:
    """L2 logistic regression minimising mean log loss + ``reg``/2 |w|^2 (Spark's objective
    without re-standardisation; scikit-learn's ``C`` is ``1 / (reg * n)``): the fit the CV
    scores and training saves."""
    model = LogisticRegression(C=1.0 / (reg * len(y)), max_iter=300, tol=1e-5, random_state=seed)
    return model.fit(x, y)


def fit_and_score(x: np.ndarray, train_rows: np.ndarray, y_train: np.ndarray, score_rows: np.ndarray, k: int, reg: float,
                  classes: int, seed: int) -> np.ndarray:
    """StandardScaler -> PCA(k) -> logistic regression fitted on ``train_rows`` of ``x`` (labels
    ``y_train``, in the same order), and the ``(len(score_rows), classes)`` probabilities of
    ``score_rows``. Both index arrays must be increasing (the rows come back in that order)."""
    if np.any(np.diff(train_rows) <= 0) or np.any(np.diff(score_rows) <= 0):
        raise ValueError("fit_and_score expects increasing row indices")
    tr = np.zeros(len(x), dtype=bool)
    tr[train_rows] = True
    te = np.zeros(len(x), dtype=bool)
    te[score_rows] = True
    ztr, zte, basis = _fold_prep(x, tr, te, k)
    kk = min(k, basis.shape[1])
    model = fit_logistic(ztr @ basis[:, :kk], y_train, reg, seed)
    probs = np.zeros((len(score_rows), classes))
    probs[:, model.classes_] = model.predict_proba(zte @ basis[:, :kk])
    return probs


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
                model = fit_logistic(ptr, y[tr], reg, seed)
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
    x = x.astype(np.float64)
    out = np.zeros((len(y), classes))
    for f in range(int(folds.max()) + 1):
        tr, te = folds != f, folds == f
        ztr, zte, basis = _fold_prep(x, tr, te, pca_k)
        out[te] = vote(unit_rows(ztr @ basis), y[tr], zte @ basis, classes, neighbours, temperature)
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


# ---------------------------------------------------------------------------------------
# The training step: split, folds and the chosen configuration
# ---------------------------------------------------------------------------------------
@dataclass
class Selection:
    """Step 3-4 outcome: the split, the folds and the chosen configuration."""

    groups: np.ndarray
    test: np.ndarray  # bool per row
    folds: np.ndarray  # fold per training row
    image: ImageCV
    text: TextCV | None = None
    cascade: CascadeCV | None = None
    #: OCR text per training row as the text branch was cross-validated and is fitted on:
    #: '' for rows no candidate cascade would OCR (their text is never read)
    train_texts: list[str] | None = None
    ocr_training_images: int = 0  # training rows whose text was read (OCR or cache)
    #: post titles of the training rows (extra text-branch documents), when given
    train_titles: list[str] | None = None
    #: out-of-fold image probabilities as the cascade and stacker see them (blended with
    #: the neighbour vote when it is on)
    image_view: np.ndarray | None = None

    @property
    def duplicate_groups(self) -> int:
        _, counts = np.unique(self.groups, return_counts=True)
        return int((counts > 1).sum())


def select(cfg: TrainConfig, data: Ingested, y: np.ndarray, n_classes: int, read_texts: Callable[[np.ndarray], None] | None = None) -> Selection:
    """Steps 3-4: near-duplicate groups, grouped test split, grouped CV on the rest.

    The text branch needs the OCR text only of training rows whose out-of-fold image
    confidence is below the largest candidate cascade: ``read_texts(rows)`` makes
    ``data.texts[i]`` available for those (OCR or cache) before the text CV."""
    groups = near_duplicate_groups(data.dhash, data.sha256, cfg.dup_distance)
    test = grouped_split(groups, y, cfg.test_fraction, cfg.seed)
    tr = ~test
    if tr.sum() < 2 * n_classes:
        raise DataError(f"only {int(tr.sum())} training images after the split; add images or lower --test-fraction")
    folds = grouped_folds(groups[tr], y[tr], cfg.folds, cfg.seed)
    ks = tuple(min(k, data.features.shape[1]) for k in cfg.ks)
    image = image_cv(data.features[tr], y[tr], folds, n_classes, ks, cfg.reg_params, cfg.seed)
    out = Selection(groups, test, folds, image)
    if cfg.text != "off":
        cascades = (ALWAYS_OCR,) if cfg.text == "always" else tuple(sorted(set(cfg.cascades), reverse=True))
        rows = np.flatnonzero(tr)
        view = image.oof_probs
        if cfg.neighbours:
            votes = neighbour_cv(data.features[tr], y[tr], folds, n_classes, image.pca_k, cfg.neighbours, DEFAULT_TEMPERATURE)
            view = blend(image.oof_probs, votes)
            log.info("neighbour vote (%d neighbours): CV accuracy %.4f alone, %.4f blended with the image branch",
                     cfg.neighbours, float((votes.argmax(axis=1) == y[tr]).mean()), float((view.argmax(axis=1) == y[tr]).mean()))
        out.image_view = view
        out.train_titles = [data.titles[i] for i in rows] if data.titles is not None else None
        reach = max(cascades)
        if out.train_titles is not None and cfg.text == "cascade":
            # With titles the text model has documents of every training meme, and the OCR
            # text of just the images the affordable cascades reach is as good as more of it
            # (five split seeds); without titles a text model trained on fewer OCR texts
            # loses ~0.006, so the largest candidate's reach is kept.
            shares = {c: float((view.max(axis=1) < c).mean()) for c in cascades}
            reach = max([c for c in cascades if shares[c] <= cfg.ocr_budget] or [min(cascades, key=shares.__getitem__)])
        asked = view.max(axis=1) < reach
        if read_texts is not None:
            read_texts(rows[asked])
        texts = [(data.texts[i] or "") if a else "" for i, a in zip(rows, asked)]
        probe = texts if out.train_titles is None else [f"{t}\n{ti}" for t, ti in zip(texts, out.train_titles)]
        if not asked.all() and not _text_in_every_fold(probe, y[tr], folds, n_classes):
            # the text model of each fold needs text of every class; the unsure images alone
            # lacked some (a small or very easy set): read the text of every training image
            log.info("text branch: the unsure training images lack text of some class in some fold; OCR-ing all %d", len(rows))
            if read_texts is not None:
                read_texts(rows[~asked])
            asked = np.ones(len(rows), dtype=bool)
            texts = [data.texts[i] or "" for i in rows]
        log.info("text branch: OCR text of %d of %d training images (image confidence below %g)%s", int(asked.sum()), len(rows), reach,
                 ", plus their post titles" if out.train_titles is not None else "")
        out.train_texts, out.ocr_training_images = texts, int(asked.sum())
        out.text = text_cv(texts, y[tr], folds, n_classes, seed=cfg.seed, extra=out.train_titles)
        has = np.array([bool(t.strip()) for t in texts])
        cascades = tuple(c for c in cascades if c <= reach)  # the others would read text training never read
        out.cascade = cascade_cv(view, out.text.oof_logp, has, y[tr], folds, cascades,
                                     ocr_budget=1.0 if cfg.text == "always" else cfg.ocr_budget)
    return out


def _text_in_every_fold(texts: list[str], y: np.ndarray, folds: np.ndarray, n_classes: int) -> bool:
    """Whether every fold's training part has text (as the text model counts it) of every class."""
    has = np.array([has_text(t) for t in texts], dtype=bool)
    return all(len(set(y[has & (folds != f)].tolist())) == n_classes for f in range(int(folds.max()) + 1))
