"""The text model: TF-IDF over character n-grams and a logistic regression, as plain arrays.

Why: the image branch misses memes whose *words* name the game (tweets, captions, screenshots:
"Nook miles", "Doom Eternal"). OCR (:mod:`memestream.ocr`) reads the words; this model scores
them. It is fitted with scikit-learn on the driver and exported to arrays (:class:`TextModel`)
scored in pure numpy, because scoring runs inside Spark Python workers where scikit-learn is
not imported. The stacker that combines it with the image branch is
:class:`memestream.stacking.Stacker`.

Saved format ``memestream-text/1`` (shared with the stacker): a folder with ``model.json``
(format, kind and fields), ``arrays.npz`` and, for a text model, ``vocabulary.json``.

Conventions: ``k`` classes are the integers ``0..k-1``; every score is an ``(n, k)`` array of
natural-log probabilities. A text "has text" when :func:`has_text` says so; rows without text are
masked in the stacker, so the text model's output on them never matters.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from memestream import logreg
from memestream.errors import DataError, ModelError
from memestream.logreg import check_labels

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
# The saved format, shared with the stacker
# ----------------------------------------------------------------------------------------------

FORMAT = "memestream-text/1"
META_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
VOCAB_FILE = "vocabulary.json"


def write_saved(folder: str | Path, kind: str, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``model.json`` (format, ``kind``, then ``fields``) and ``arrays.npz`` into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ARRAYS_FILE, "wb") as fh:
        np.savez(fh, **arrays)
    meta = {"format": FORMAT, "kind": kind, **fields}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"text model file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"text model file unreadable: {path} ({type(exc).__name__}: {exc})") from None


def read_arrays(folder: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named float64 arrays of ``folder``'s ``arrays.npz``; ModelError naming the file."""
    path = folder / ARRAYS_FILE
    if not path.is_file():
        raise ModelError(f"text model file missing: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float64) for name in names}
    except Exception as exc:  # BadZipFile, KeyError, ValueError, OSError, EOFError
        raise ModelError(f"text model file unreadable: {path} ({type(exc).__name__}: {exc})") from None


def read_meta(folder: str | Path, kind: str) -> tuple[dict[str, Any], Path]:
    """``model.json`` of a saved ``kind`` and its path; ModelError for another format or kind."""
    meta_path = Path(folder) / META_FILE
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"text model file has an unknown format: {meta_path} (expected {FORMAT})")
    if meta.get("kind") != kind:
        raise ModelError(f"text model file holds a {meta.get('kind')!r}, expected a {kind!r}: {meta_path}")
    return meta, meta_path


@contextlib.contextmanager
def saved_fields(meta_path: Path) -> Iterator[None]:
    """Around reading ``model.json``'s fields: a missing or mistyped one is a ModelError naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"text model file lacks a valid field {exc}: {meta_path}") from None


@contextlib.contextmanager
def arrays_fit(folder: Path) -> Iterator[None]:
    """Around building a model from loaded arrays: shapes that disagree name ``arrays.npz``."""
    try:
        yield
    except ModelError as exc:
        raise ModelError(f"{exc}: {folder / ARRAYS_FILE}") from None


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
        y_kept = check_labels(y[keep], classes_count, "text model")
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
        lr = logreg.fit(X, y_kept, C, seed)
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
        return logreg.log_proba(self.decision_function(texts), self.classes_count)

    def save(self, folder: str | Path) -> Path:
        """Write into ``folder`` (created): model.json + arrays.npz + vocabulary.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VOCAB_FILE).write_text(json.dumps(list(self.vocabulary), ensure_ascii=False), encoding="utf-8")
        fields = {"classes_count": self.classes_count, "C": self.C, "ngram_range": list(self.ngram_range),
                  "normalization": self.normalization}
        return write_saved(folder, "TextModel", fields, {"idf": self.idf, "coef": self.coef, "intercept": self.intercept})

    @classmethod
    def load(cls, folder: str | Path) -> "TextModel":
        """Read what :meth:`save` wrote; ModelError naming the file when anything is missing or corrupt."""
        folder = Path(folder)
        meta, meta_path = read_meta(folder, "TextModel")
        with saved_fields(meta_path):
            k, C = int(meta["classes_count"]), float(meta["C"])
            lo, hi = (int(v) for v in meta["ngram_range"])
            normalization = str(meta["normalization"])
        if normalization != NORMALIZATION:
            raise ModelError(
                f"text model was trained with normalization {normalization!r}, this code has {NORMALIZATION!r}: {meta_path}"
            )
        vocab_path = folder / VOCAB_FILE
        vocabulary = read_json(vocab_path)
        if not isinstance(vocabulary, list) or not all(isinstance(g, str) for g in vocabulary):
            raise ModelError(f"text model file is not a list of n-grams: {vocab_path}")
        arrays = read_arrays(folder, ("idf", "coef", "intercept"))
        with arrays_fit(folder):
            return cls(vocabulary=tuple(vocabulary), idf=arrays["idf"], coef=arrays["coef"], intercept=arrays["intercept"],
                       classes_count=k, C=C, ngram_range=(lo, hi), normalization=normalization)
