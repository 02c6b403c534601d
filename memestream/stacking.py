"""The text branch of a model: OCR text -> text classifier, stacked with the image branch.

Most memes the image embedding gets wrong are tweets, captions and screenshots whose words
name the fandom. The text branch reads them: OCR (:func:`memestream.ocr.ocr_text`), a
character n-gram classifier (:class:`memestream.text_model.TextModel`), and a small stacker
over both branches' log-probabilities (:class:`Stacker`, here), fitted on out-of-fold
predictions. OCR is slow (~100x the embedding), so by default it runs only
when the image branch is unsure (the *cascade*): its top probability is below
``cascade``. Rows that were not OCR'd go through the stacker with ``has_text = 0``,
exactly as the stacker saw them in training.

Saved inside the model (``models/<name>/text_branch/``), so training, ``meme-evaluate``
and the stream apply the same arithmetic (numpy only: no scikit-learn in the workers).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from memestream import logreg, ocr
from memestream.errors import ConfigError, DataError, ModelError
from memestream.logreg import check_labels
from memestream.text_model import TextModel, arrays_fit, read_arrays, read_meta, saved_fields, write_saved

TEXT_MODES = ("off", "cascade", "always")
DEFAULT_TEXT_MODE = "cascade"
BRANCH_FILE = "branch.json"
NEIGHBOURS_DIR = "neighbours"
#: OCR text kept in a prediction row (characters); the model sees all of it.
MAX_TEXT_CHARS = 300


def check_text_mode(mode: str) -> str:
    if mode not in TEXT_MODES:
        raise ConfigError(f"--text must be one of {'|'.join(TEXT_MODES)}, found {mode!r}")
    return mode


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
        y = check_labels(y, k, "stacker")
        if len(y) != X.shape[0]:
            raise DataError(f"stacker: {X.shape[0]} rows but {len(y)} labels")
        lr = logreg.fit(X, y, C, seed)
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
        return logreg.proba(self.decision_function(image_logp, text_logp, has_text), self.classes_count)

    def predict_log_proba(self, image_logp: Any, text_logp: Any, has_text: Any) -> np.ndarray:
        return logreg.log_proba(self.decision_function(image_logp, text_logp, has_text), self.classes_count)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_sklearn", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, folder: str | Path) -> Path:
        """Write into ``folder`` (created) in the text model's format: model.json + arrays.npz."""
        fields = {"classes_count": self.classes_count, "C": self.C, "logp_floor": LOGP_FLOOR}
        return write_saved(folder, "Stacker", fields, {"coef": self.coef, "intercept": self.intercept})

    @classmethod
    def load(cls, folder: str | Path) -> "Stacker":
        """Read what :meth:`save` wrote; ModelError naming the file when anything is missing or corrupt."""
        folder = Path(folder)
        meta, meta_path = read_meta(folder, "Stacker")
        with saved_fields(meta_path):
            k, C, floor = int(meta["classes_count"]), float(meta["C"]), float(meta["logp_floor"])
        if floor != LOGP_FLOOR:
            raise ModelError(f"stacker was trained with log-prob floor {floor}, this code uses {LOGP_FLOOR}: {meta_path}")
        arrays = read_arrays(folder, ("coef", "intercept"))
        with arrays_fit(folder):
            return cls(coef=arrays["coef"], intercept=arrays["intercept"], classes_count=k, C=C)


@dataclass(frozen=True)
class TextBranch:
    text: TextModel
    stacker: Stacker
    cascade: float
    ocr_version: str
    #: nearest-neighbour vote blended into the image branch's probabilities before the
    #: cascade and the stacker (memestream.neighbours.NeighbourVote); None: the plain branch
    neighbours: object = None

    def image_view(self, image_probs: np.ndarray, reduced: np.ndarray | None) -> np.ndarray:
        """The image branch as the cascade and the stacker see it: blended with the
        neighbour vote when the model has one (``reduced``: the rows' PCA coordinates)."""
        if self.neighbours is None:
            return image_probs
        if reduced is None:
            raise ModelError("this model's text branch blends a neighbour vote: the PCA coordinates of the rows are needed")
        return self.neighbours.apply(image_probs, reduced)  # type: ignore[attr-defined]

    def needs_ocr(self, image_probs: np.ndarray, ok: np.ndarray, mode: str) -> np.ndarray:
        """Rows to OCR: all decodable rows (``always``), or those the image branch is unsure of."""
        if mode == "off":
            return np.zeros(len(ok), dtype=bool)
        if mode == "always":
            return ok.copy()
        return ok & (image_probs.max(axis=1) < self.cascade)

    def combine(self, image_probs: np.ndarray, texts: Sequence[str], has_text: np.ndarray) -> np.ndarray:
        """Stacked probabilities ``(n, k)`` from the image branch's probabilities and the OCR text."""
        image_logp = np.log(np.clip(image_probs, 1e-12, 1.0))
        text_logp = self.text.decision(list(texts))
        return self.stacker.predict_proba(image_logp, text_logp, has_text.astype(np.float64))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.text.save(folder / "text_model")
        self.stacker.save(folder / "stacker")
        if self.neighbours is not None:
            self.neighbours.save(folder / NEIGHBOURS_DIR)  # type: ignore[attr-defined]
        meta = {"cascade": self.cascade, "ocr_version": self.ocr_version, "neighbours": self.neighbours is not None}
        (folder / BRANCH_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "TextBranch":
        try:
            meta = json.loads((folder / BRANCH_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"text branch in {folder} is unreadable: {folder / BRANCH_FILE}: {exc}") from None
        if meta.get("ocr_version") != ocr.OCR_VERSION:
            raise ModelError(
                f"text branch in {folder} was trained with OCR {meta.get('ocr_version')!r}, this installation runs "
                f"{ocr.OCR_VERSION!r}; retrain (meme-train) or pass --text off"
            )
        neighbours = None
        if meta.get("neighbours"):
            from memestream.neighbours import NeighbourVote

            neighbours = NeighbourVote.load(folder / NEIGHBOURS_DIR)
        return cls(TextModel.load(folder / "text_model"), Stacker.load(folder / "stacker"), float(meta["cascade"]),
                   meta["ocr_version"], neighbours)


@dataclass
class TextResult:
    """What the text branch did for a batch, row-aligned."""

    probs: np.ndarray
    ocr_ran: list[bool | None]
    ocr_text: list[str | None]
    ocr_error: list[str | None]


def apply_text_branch(
    branch: TextBranch | None,
    mode: str,
    image_probs: np.ndarray,
    images: Sequence[np.ndarray | None],
    ok: np.ndarray,
    read_rows: Callable[[np.ndarray], Sequence[str]] | None = None,
    reduced: np.ndarray | None = None,
    wide_ocr: bool = False,
) -> TextResult:
    """Run OCR where the mode/cascade asks, then the stacker; an OCR failure on one image
    falls back to the image branch for that image and is recorded, never raised.

    ``read_rows(rows)`` gives the text of all the rows the cascade asks for at once; by
    default each is OCR'd from ``images[i]`` (training passes the text its ingest reads in
    one Spark pass, so its test metrics go through this same code).
    ``reduced``: the rows' PCA coordinates, for a branch with a neighbour vote; ``wide_ocr``:
    OCR on the multi-threaded engine (a small batch: the machine has idle cores)."""
    n = len(ok)
    if branch is None:
        return TextResult(image_probs, [None] * n, [None] * n, [None] * n)
    plain = image_probs
    image_probs = branch.image_view(image_probs, reduced)
    if mode == "off":  # the stacked model without OCR: its image branch as the stack sees it
        view = image_probs.copy()
        view[~ok] = plain[~ok]
        return TextResult(view, [None] * n, [None] * n, [None] * n)
    todo = branch.needs_ocr(image_probs, ok, mode)
    if read_rows is not None:
        asked = np.flatnonzero(todo)
        read: Callable[[int], str] = dict(zip(asked.tolist(), read_rows(asked))).__getitem__
    else:
        def read(i: int) -> str:
            return ocr.ocr_text(images[i], wide=wide_ocr)  # type: ignore[arg-type]

    texts = [""] * n
    has = np.zeros(n, dtype=np.float64)
    ran: list[bool | None] = [bool(False) if ok[i] else None for i in range(n)]
    shown: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    for i in np.flatnonzero(todo):
        try:
            found = read(int(i))
        except ocr.OcrError as exc:
            errors[i] = f"ocr_failed: {str(exc)[:200]}"
            continue
        except Exception as exc:  # noqa: BLE001 - one image's OCR must never fail the batch
            errors[i] = f"ocr_failed: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        ran[i] = True
        texts[i] = found
        shown[i] = found[:MAX_TEXT_CHARS]
        has[i] = 1.0 if found.strip() else 0.0
    probs = branch.combine(image_probs, texts, has)
    probs[~ok] = plain[~ok]
    return TextResult(probs, ran, shown, errors)
