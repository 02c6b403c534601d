"""Words in memes: OCR, a character n-gram text model and a stacker over image and text scores.

Why: the image branch misses memes whose *words* name the game (tweets, captions, screenshots:
"Nook miles", "Doom Eternal"). This module reads the text (RapidOCR, PP-OCRv4 ONNX models that ship
inside the ``rapidocr-onnxruntime`` wheel, so nothing is downloaded), scores it with TF-IDF over
character n-grams and a logistic regression, and combines image and text log-probabilities with a
second logistic regression (the stacker).

Training uses scikit-learn; the fitted models are exported to plain arrays (:class:`TextModel`,
:class:`Stacker`) and scored in pure numpy, because scoring runs inside Spark Python workers where
scikit-learn is not imported. :func:`save` / :func:`load` write them as JSON + ``.npz`` in a folder.

Conventions: ``k`` classes are the integers ``0..k-1``; every score is an ``(n, k)`` array of
natural-log probabilities. A text "has text" when :func:`has_text` says so; rows without text are
masked in the stacker, so the text model's output on them never matters.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from memestream.errors import DataError, ModelError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# OCR
# ----------------------------------------------------------------------------------------------

#: Longest image side handed to the OCR engine. Memes in the data set are 300 px; upscaling them to
#: 480 finds small captions the native size misses, for about half the cost of the package default
#: (which upscales the *short* side to 736). Large images are shrunk to it, which bounds the cost.
OCR_SIDE = 480
#: Angle classifier off: meme text is upright, and it costs time for nothing.
OCR_USE_CLS = False
#: Recognised boxes scoring below this are dropped (mostly single CJK glyphs read from textures).
OCR_MIN_SCORE = 0.5
#: Text lines recognised per recogniser call. rapidocr's default (6) pads every line of a call
#: to the widest one, and the recogniser's cost grows with the padded width: one line a call
#: took OCR from 0.40 to 0.30 s per text-bearing meme (150 memes; text 99 % the same by
#: characters, each line now read at its own width).
OCR_REC_BATCH = 1
#: Cache key of the OCR output: bump whenever any setting above or the engine changes.
OCR_VERSION = "rapidocr-onnxruntime-1.4.4/ppocrv4-det-rec/side480/cls-off/score0.5/rec1/lines-v1"

#: Give freed heap back to the OS after every OCR call (glibc malloc_trim, ~10 ms). Without it the
#: ONNX Runtime temporaries of detection/recognition stay in the heap: a worker's RSS sits at
#: 400-600 MB instead of ~130 MB after 100 memes.
OCR_TRIM_HEAP = True

#: Threads of the second ("wide") engine, used for the OCR of small batches: a Spark task
#: with a handful of rows means the stream is lightly loaded and the other core is idle, so
#: one OCR'd image holding back its batch finishes in about half the time (light-load p50
#: 1.28 -> ~0.9 s). Never used at saturation, where it would oversubscribe the cores.
OCR_WIDE_THREADS = 2

_ENGINE: Any = None
_WIDE_ENGINE: Any = None
_TRIM: Any = None  # libc malloc_trim, when the C library has it
_ENGINE_ERROR: str | None = None
_ENGINE_LOCK = threading.Lock()  # creation
_CALL_LOCK = threading.Lock()  # rapidocr keeps per-call state on the engine: one call at a time
_WIDE_LOCK = threading.Lock()
_RAPIDOCR_LOGGERS = ("RapidOCR", "OrtInferSession")


class OcrError(Exception):
    """The OCR engine is missing, failed to load, or failed on one image (message is one line)."""


def _create_engine(threads: int = 1) -> Any:
    """Build the RapidOCR engine from the models inside the wheel, on ``threads`` ONNX Runtime threads."""
    try:
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime.utils.logger import get_logger
    except Exception as exc:  # ImportError, or a broken onnxruntime install
        raise OcrError(f"OCR is unavailable: cannot import rapidocr_onnxruntime ({type(exc).__name__}: {exc})") from None
    # rapidocr's get_logger is cached and sets DEBUG + a stderr handler on first use: take the
    # loggers first, then quieten them so engine creation logs nothing below WARNING.
    for name in _RAPIDOCR_LOGGERS:
        get_logger(name).setLevel(logging.WARNING)
    models = Path(rapidocr_onnxruntime.__file__).resolve().parent / "models"
    for name in ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"):
        if not (models / name).is_file():
            raise OcrError(f"OCR model file missing from the rapidocr-onnxruntime install: {models / name}")
    try:
        return rapidocr_onnxruntime.RapidOCR(
            # Spark runs one Python worker per core: one ONNX Runtime thread each.
            intra_op_num_threads=int(threads),
            inter_op_num_threads=1,
            # "max" only shrinks images above 960 px in rapidocr 1.4.4 (the 480 is not used then);
            # ocr_text already scaled the image to OCR_SIDE, so detection runs at that size.
            det_limit_side_len=OCR_SIDE,
            det_limit_type="max",
            use_cls=OCR_USE_CLS,
            rec_batch_num=OCR_REC_BATCH,
            text_score=0.0,  # filtered here with OCR_MIN_SCORE
            print_verbose=False,
        )
    except Exception as exc:
        raise OcrError(f"OCR engine failed to load: {type(exc).__name__}: {exc}") from None


def _find_malloc_trim() -> Any:
    """glibc's malloc_trim, or None (musl, macOS): then the heap is simply not trimmed."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _engine() -> Any:
    """The process-wide engine, created once (thread-safe). A failed creation is remembered."""
    global _ENGINE, _ENGINE_ERROR, _TRIM
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                if _ENGINE_ERROR is not None:
                    raise OcrError(_ENGINE_ERROR)
                try:
                    _TRIM = _find_malloc_trim() if OCR_TRIM_HEAP else None
                    _ENGINE = _create_engine()
                except OcrError as exc:
                    _ENGINE_ERROR = str(exc)
                    raise
    return _ENGINE


def _wide_engine() -> Any:
    """The :data:`OCR_WIDE_THREADS` engine, created on first use; the one-thread engine when
    it cannot be built (or the machine has one core)."""
    global _WIDE_ENGINE
    if (os.cpu_count() or 1) < 2 or OCR_WIDE_THREADS < 2:
        return _engine()
    if _WIDE_ENGINE is None:
        with _ENGINE_LOCK:  # not reentrant: _engine() is only called outside it
            if _WIDE_ENGINE is None:
                try:
                    _WIDE_ENGINE = _create_engine(OCR_WIDE_THREADS)
                except OcrError as exc:
                    log.warning("OCR with %d threads is unavailable, using one: %s", OCR_WIDE_THREADS, exc)
                    _WIDE_ENGINE = False
    return _engine() if _WIDE_ENGINE is False else _WIDE_ENGINE


def _as_bgr(image: Any) -> np.ndarray:
    """A contiguous 3-channel uint8 BGR copy-or-view of ``image``; OcrError when it is not an image."""
    import cv2

    if not isinstance(image, np.ndarray):
        raise OcrError(f"OCR input must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise OcrError(f"OCR input must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise OcrError(f"OCR input must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if min(image.shape[:2]) < 1:
        raise OcrError(f"OCR input is empty, shape {image.shape}")
    return np.ascontiguousarray(image)


def _resize_for_ocr(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = OCR_SIDE / max(h, w)
    if abs(scale - 1.0) < 1e-3:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def _reading_order(boxes: list[tuple[np.ndarray, str]]) -> str:
    """Join boxes into lines (top to bottom), words in a line left to right.

    A box joins the current line when its vertical centre lies inside the line's vertical extent;
    boxes in a line are joined with spaces, lines with newlines.
    """
    items = []
    for points, text in boxes:
        ys, xs = points[:, 1], points[:, 0]
        items.append((float((ys.min() + ys.max()) / 2), float(ys.min()), float(ys.max()), float(xs.min()), text))
    items.sort(key=lambda it: (it[0], it[3]))
    lines: list[list[tuple[float, float, float, float, str]]] = []
    top = bottom = 0.0
    for item in items:
        centre, y0, y1 = item[0], item[1], item[2]
        if lines and top <= centre <= bottom:
            lines[-1].append(item)
            top, bottom = min(top, y0), max(bottom, y1)
        else:
            lines.append([item])
            top, bottom = y0, y1
    return "\n".join(" ".join(it[4] for it in sorted(line, key=lambda it: it[3])) for line in lines)


def ocr_text(image_bgr: np.ndarray, wide: bool = False) -> str:
    """Text found in a BGR (or gray/BGRA) uint8 image, lines in reading order; "" when none.
    ``wide``: on the :data:`OCR_WIDE_THREADS` engine (for a small batch on an idle machine).

    Raises OcrError (and nothing else) when the input is not an image or the engine fails.
    """
    image = _as_bgr(image_bgr)
    engine = _wide_engine() if wide else _engine()
    try:
        image = _resize_for_ocr(image)
        with (_WIDE_LOCK if engine is _WIDE_ENGINE else _CALL_LOCK):
            try:
                result, _ = engine(image, use_cls=OCR_USE_CLS)
            finally:
                if _TRIM is not None:
                    _TRIM(0)
        boxes = []
        for points, text, score in result or ():
            text = str(text).strip()
            if text and float(score) >= OCR_MIN_SCORE:
                boxes.append((np.asarray(points, dtype=np.float64).reshape(-1, 2), text))
        return _reading_order(boxes)
    except OcrError:
        raise
    except Exception as exc:
        raise OcrError(f"OCR failed on a {image.shape[1]}x{image.shape[0]} image: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Text features
# ----------------------------------------------------------------------------------------------

#: Identifies normalize()'s behaviour; stored with every TextModel and checked at load.
NORMALIZATION = "nfkc-lower-digits0-v1"
_DIGITS = re.compile(r"\d")
_WHITESPACE = re.compile(r"\s\s+")
#: has_text needs at least this many letters or digits: OCR of textures yields stray glyphs.
MIN_TEXT_CHARS = 2


def normalize(text: str) -> str:
    """Unicode NFKC, lowercase, every digit -> "0" (OCR confuses 0/O and 1/l; numbers are noise)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _DIGITS.sub("0", text)


def has_text(text: str) -> bool:
    """Whether OCR output counts as text: at least MIN_TEXT_CHARS letters/digits after normalizing."""
    return sum(ch.isalnum() for ch in normalize(text)) >= MIN_TEXT_CHARS


def _char_wb(text: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's ``char_wb`` n-grams of already-normalized text.

    Each whitespace-separated word is padded with one space either side; n-grams of length lo..hi
    are taken inside the padded word; a padded word shorter than n is taken whole, once.
    """
    grams: list[str] = []
    for word in _WHITESPACE.sub(" ", text).split():
        padded = f" {word} "
        size = len(padded)
        for n in range(lo, hi + 1):
            if size <= n:
                grams.append(padded)
                break
            grams.extend(padded[i : i + n] for i in range(size - n + 1))
    return grams


def char_ngrams(text: str, lo: int = 2, hi: int = 5) -> list[str]:
    """Character n-grams of :func:`normalize`-d text with ``char_wb`` semantics (the analyzer)."""
    return _char_wb(normalize(text), lo, hi)


# ----------------------------------------------------------------------------------------------
# Numerics shared by the exported models
# ----------------------------------------------------------------------------------------------


def _log_proba(decision: np.ndarray, k: int) -> np.ndarray:
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


def _proba(decision: np.ndarray, k: int) -> np.ndarray:
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


def _check_labels(y: Any, classes_count: int, what: str) -> np.ndarray:
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


def _fit_lr(X: Any, y: np.ndarray, C: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(X, y)


# ----------------------------------------------------------------------------------------------
# Text model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TextModel:
    """TF-IDF (sublinear tf, smooth idf, L2 norm) over char n-grams -> logistic regression, as arrays.

    ``coef`` is (1, V) for two classes (logit of class 1, as scikit-learn stores it) and (k, V)
    otherwise; ``vocabulary[j]`` is the n-gram of column j.
    """

    vocabulary: tuple[str, ...]
    idf: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes_count: int
    C: float
    ngram_range: tuple[int, int] = (2, 5)
    normalization: str = NORMALIZATION

    def __post_init__(self) -> None:
        rows = 1 if self.classes_count == 2 else self.classes_count
        V = len(self.vocabulary)
        if self.idf.shape != (V,) or self.coef.shape != (rows, V) or self.intercept.shape != (rows,):
            raise ModelError(
                f"text model arrays do not fit together: vocabulary {V}, idf {self.idf.shape}, "
                f"coef {self.coef.shape}, intercept {self.intercept.shape}, classes {self.classes_count}"
            )

    @cached_property
    def _index(self) -> dict[str, int]:
        return {gram: j for j, gram in enumerate(self.vocabulary)}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled to Spark workers: leave the lookup index (rebuilt lazily) and sklearn behind."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_index", "_sklearn")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        y: Any,
        classes_count: int,
        C: float = 10.0,
        min_df: int = 2,
        seed: int = 0,
        ngram_range: tuple[int, int] = (2, 5),
    ) -> "TextModel":
        """Fit on the rows that :func:`has_text` (the others carry no signal and are masked later)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(texts)
        y = np.asarray(y)
        if len(texts) != len(y):
            raise DataError(f"text model: {len(texts)} texts but {len(y)} labels")
        keep = np.array([has_text(t) for t in texts], dtype=bool)
        y_kept = _check_labels(y[keep], classes_count, "text model")
        kept = [t for t, k in zip(texts, keep) if k]
        lo, hi = ngram_range
        vectorizer = TfidfVectorizer(
            analyzer=partial(char_ngrams, lo=lo, hi=hi),
            lowercase=False,
            token_pattern=None,
            sublinear_tf=True,
            min_df=min_df,
            dtype=np.float64,
        )
        try:
            X = vectorizer.fit_transform(kept)
        except ValueError as exc:  # empty vocabulary (e.g. min_df too high for the data)
            raise DataError(f"text model: {exc}") from None
        lr = _fit_lr(X, y_kept, C, seed)
        vocab = vectorizer.vocabulary_
        vocabulary = [""] * len(vocab)
        for gram, j in vocab.items():
            vocabulary[j] = gram
        model = cls(
            vocabulary=tuple(vocabulary),
            idf=np.asarray(vectorizer.idf_, dtype=np.float64).copy(),
            coef=np.asarray(lr.coef_, dtype=np.float64).copy(),
            intercept=np.asarray(lr.intercept_, dtype=np.float64).copy(),
            classes_count=int(classes_count),
            C=float(C),
            ngram_range=(int(lo), int(hi)),
        )
        model.__dict__["_sklearn"] = (vectorizer, lr)  # for tests; never saved or pickled
        return model

    def features(self, texts: Iterable[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (column indices, L2-normalized TF-IDF values), like the fitted vectorizer."""
        index = self._index
        lo, hi = self.ngram_range
        rows = []
        for text in texts:
            counts = Counter(j for j in map(index.get, char_ngrams(text or "", lo, hi)) if j is not None)
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (np.log(tf) + 1.0) * self.idf[cols]
            norm = math.sqrt(float(values @ values))
            if norm > 0:
                values = values / norm
            rows.append((cols, values))
        return rows

    def decision_function(self, texts: Iterable[str]) -> np.ndarray:
        """Raw LR decision values, (n, 1) for two classes else (n, k)."""
        feats = self.features(texts)
        out = np.empty((len(feats), self.coef.shape[0]), dtype=np.float64)
        for i, (cols, values) in enumerate(feats):
            out[i] = self.coef[:, cols] @ values + self.intercept
        return out

    def decision(self, texts: Iterable[str]) -> np.ndarray:
        """(n, k) log-probabilities of the classes; an empty text gets the intercept's."""
        return _log_proba(self.decision_function(texts), self.classes_count)


# ----------------------------------------------------------------------------------------------
# Stacker
# ----------------------------------------------------------------------------------------------

#: Log-probabilities are clipped here before stacking, so one overconfident branch stays bounded.
LOGP_FLOOR = -20.0


def _centered(logp: np.ndarray) -> np.ndarray:
    logp = np.maximum(np.asarray(logp, dtype=np.float64), LOGP_FLOOR)
    return logp - logp.mean(axis=1, keepdims=True)


def stack_features(image_logp: Any, text_logp: Any, has_text: Any) -> np.ndarray:
    """Stacker input (n, 2k+1): [centred image log-probs, centred text log-probs x has_text, has_text].

    Centring (log-prob minus its mean over the classes) keeps k columns for any k; for k=2 the two
    columns are -logit/2 and +logit/2, i.e. the logit form [image logit, text logit x has_text,
    has_text] with the weight shared between two mirrored columns.
    """
    image_logp = np.asarray(image_logp, dtype=np.float64)
    text_logp = np.asarray(text_logp, dtype=np.float64)
    h = np.asarray(has_text, dtype=np.float64).reshape(-1)
    if image_logp.ndim != 2 or image_logp.shape != text_logp.shape or h.shape[0] != image_logp.shape[0]:
        raise DataError(
            f"stacker inputs do not fit: image {image_logp.shape}, text {text_logp.shape}, has_text {h.shape}"
        )
    return np.hstack([_centered(image_logp), _centered(text_logp) * h[:, None], h[:, None]])


@dataclass(frozen=True, eq=False)
class Stacker:
    """Logistic regression over :func:`stack_features`, as arrays (coef (1 or k, 2k+1))."""

    coef: np.ndarray
    intercept: np.ndarray
    classes_count: int
    C: float

    def __post_init__(self) -> None:
        k = self.classes_count
        rows = 1 if k == 2 else k
        if self.coef.shape != (rows, 2 * k + 1) or self.intercept.shape != (rows,):
            raise ModelError(
                f"stacker arrays do not fit together: coef {self.coef.shape}, intercept {self.intercept.shape}, classes {k}"
            )

    @classmethod
    def fit(cls, image_logp: Any, text_logp: Any, has_text: Any, y: Any, C: float = 1.0, seed: int = 0) -> "Stacker":
        """Fit on OUT-OF-FOLD branch scores (in-sample scores would teach it to trust text too much)."""
        X = stack_features(image_logp, text_logp, has_text)
        k = X.shape[1] // 2
        y = _check_labels(y, k, "stacker")
        if len(y) != X.shape[0]:
            raise DataError(f"stacker: {X.shape[0]} rows but {len(y)} labels")
        lr = _fit_lr(X, y, C, seed)
        model = cls(
            coef=np.asarray(lr.coef_, dtype=np.float64).copy(),
            intercept=np.asarray(lr.intercept_, dtype=np.float64).copy(),
            classes_count=k,
            C=float(C),
        )
        model.__dict__["_sklearn"] = lr  # for tests; never saved
        return model

    def decision_function(self, image_logp: Any, text_logp: Any, has_text: Any) -> np.ndarray:
        X = stack_features(image_logp, text_logp, has_text)
        if X.shape[1] != self.coef.shape[1]:
            raise DataError(f"stacker expects {self.classes_count} classes, got {(X.shape[1] - 1) // 2}")
        return X @ self.coef.T + self.intercept

    def predict_proba(self, image_logp: Any, text_logp: Any, has_text: Any) -> np.ndarray:
        """(n, k) class probabilities; with has_text=0 they depend on the image log-probs only."""
        return _proba(self.decision_function(image_logp, text_logp, has_text), self.classes_count)

    def predict_log_proba(self, image_logp: Any, text_logp: Any, has_text: Any) -> np.ndarray:
        return _log_proba(self.decision_function(image_logp, text_logp, has_text), self.classes_count)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_sklearn", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# ----------------------------------------------------------------------------------------------
# Persistence
# ----------------------------------------------------------------------------------------------

FORMAT = "memestream-text/1"
META_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
VOCAB_FILE = "vocabulary.json"


def save(obj: TextModel | Stacker, folder: str | Path) -> Path:
    """Write a TextModel or Stacker into ``folder`` (created): model.json + arrays.npz (+ vocabulary.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, TextModel):
        meta = {
            "format": FORMAT,
            "kind": "TextModel",
            "classes_count": obj.classes_count,
            "C": obj.C,
            "ngram_range": list(obj.ngram_range),
            "normalization": obj.normalization,
        }
        arrays = {"idf": obj.idf, "coef": obj.coef, "intercept": obj.intercept}
        (folder / VOCAB_FILE).write_text(json.dumps(list(obj.vocabulary), ensure_ascii=False), encoding="utf-8")
    elif isinstance(obj, Stacker):
        meta = {"format": FORMAT, "kind": "Stacker", "classes_count": obj.classes_count, "C": obj.C,
                "logp_floor": LOGP_FLOOR}
        arrays = {"coef": obj.coef, "intercept": obj.intercept}
    else:
        raise TypeError(f"save() takes a TextModel or Stacker, not {type(obj).__name__}")
    with open(folder / ARRAYS_FILE, "wb") as fh:
        np.savez(fh, **arrays)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"text model file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"text model file unreadable: {path} ({type(exc).__name__}: {exc})") from None


def _read_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ModelError(f"text model file missing: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float64) for name in names}
    except Exception as exc:  # BadZipFile, KeyError, ValueError, OSError, EOFError
        raise ModelError(f"text model file unreadable: {path} ({type(exc).__name__}: {exc})") from None


def load(folder: str | Path) -> TextModel | Stacker:
    """Read what :func:`save` wrote; ModelError naming the file when anything is missing or corrupt."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"text model file has an unknown format: {meta_path} (expected {FORMAT})")
    try:
        kind = meta["kind"]
        k = int(meta["classes_count"])
        C = float(meta["C"])
        if kind == "TextModel":
            lo, hi = (int(v) for v in meta["ngram_range"])
            normalization = str(meta["normalization"])
        elif kind == "Stacker":
            floor = float(meta["logp_floor"])
        else:
            raise ModelError(f"text model file names an unknown kind {kind!r}: {meta_path}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"text model file lacks a valid field {exc}: {meta_path}") from None
    if kind == "Stacker":
        if floor != LOGP_FLOOR:
            raise ModelError(f"stacker was trained with log-prob floor {floor}, this code uses {LOGP_FLOOR}: {meta_path}")
        arrays = _read_arrays(folder / ARRAYS_FILE, ("coef", "intercept"))
        try:
            return Stacker(coef=arrays["coef"], intercept=arrays["intercept"], classes_count=k, C=C)
        except ModelError as exc:
            raise ModelError(f"{exc}: {folder / ARRAYS_FILE}") from None
    if normalization != NORMALIZATION:
        raise ModelError(
            f"text model was trained with normalization {normalization!r}, this code has {NORMALIZATION!r}: {meta_path}"
        )
    vocab_path = folder / VOCAB_FILE
    vocabulary = _read_json(vocab_path)
    if not isinstance(vocabulary, list) or not all(isinstance(g, str) for g in vocabulary):
        raise ModelError(f"text model file is not a list of n-grams: {vocab_path}")
    arrays = _read_arrays(folder / ARRAYS_FILE, ("idf", "coef", "intercept"))
    try:
        return TextModel(
            vocabulary=tuple(vocabulary),
            idf=arrays["idf"],
            coef=arrays["coef"],
            intercept=arrays["intercept"],
            classes_count=k,
            C=C,
            ngram_range=(lo, hi),
            normalization=normalization,
        )
    except ModelError as exc:
        raise ModelError(f"{exc}: {folder / ARRAYS_FILE}") from None


# ----------------------------------------------------------------------------------------------
# Grouped cross-validation of the text model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TextCV:
    """Result of :func:`fit_text_cv`.

    ``oof_log_proba`` (n, k): each row scored by a model that never saw its group, at the chosen C
    (rows without text get that model's empty-text output; mask them with has_text). Scores are
    over the rows with text only: ``log_loss_by_C`` (chooses C) and ``accuracy_by_C``.
    """

    C: float
    oof_log_proba: np.ndarray
    has_text: np.ndarray
    log_loss_by_C: dict[float, float]
    accuracy_by_C: dict[float, float]


def fit_text_cv(
    texts: Sequence[str],
    y: Any,
    groups: Any,
    classes_count: int | None = None,
    k_folds: int = 5,
    Cs: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0),
    seed: int = 0,
    min_df: int = 2,
) -> TextCV:
    """Pick C by grouped, stratified k-fold (lowest out-of-fold log loss on rows with text).

    Groups keep near-duplicates (same post, same source image) in one fold, so the out-of-fold
    log-probabilities are honest inputs for training the stacker.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    texts = list(texts)
    y = np.asarray(y)
    groups = np.asarray(groups)
    if not (len(texts) == len(y) == len(groups)):
        raise DataError(f"text CV: {len(texts)} texts, {len(y)} labels, {len(groups)} groups")
    k = int(classes_count if classes_count is not None else (int(y.max()) + 1 if y.size else 0))
    y = _check_labels(y, k, "text CV")
    if not Cs:
        raise DataError("text CV: no C values to try")
    if len(set(groups.tolist())) < k_folds:
        raise DataError(f"text CV: {len(set(groups.tolist()))} groups, fewer than {k_folds} folds")
    present = np.array([has_text(t) for t in texts], dtype=bool)
    if not present.any():
        raise DataError("text CV: no row has text")
    folds = list(StratifiedGroupKFold(n_splits=k_folds, shuffle=True, random_state=seed).split(texts, y, groups))
    oof = {float(C): np.zeros((len(texts), k)) for C in Cs}
    for train, test in folds:
        train_texts = [texts[i] for i in train]
        for C in Cs:
            model = TextModel.fit(train_texts, y[train], k, C=C, min_df=min_df, seed=seed)
            oof[float(C)][test] = model.decision([texts[i] for i in test])
    rows = np.flatnonzero(present)
    log_loss = {C: float(-lp[rows, y[rows]].mean()) for C, lp in oof.items()}
    accuracy = {C: float((lp[rows].argmax(axis=1) == y[rows]).mean()) for C, lp in oof.items()}
    best = min(log_loss, key=lambda C: (log_loss[C], C))
    log.info("text CV: C=%s (log loss %.4f, accuracy %.4f on %d rows with text)", best, log_loss[best], accuracy[best], rows.size)
    return TextCV(C=best, oof_log_proba=oof[best], has_text=present, log_loss_by_C=log_loss, accuracy_by_C=accuracy)
