"""The text branch of a model: OCR text -> text classifier, stacked with the image branch.

Most memes the image embedding gets wrong are tweets, captions and screenshots whose words
name the fandom. The text branch reads them: OCR (:func:`memestream.text.ocr_text`), a
character n-gram classifier (:class:`memestream.text.TextModel`), and a small stacker
over both branches' log-probabilities (:class:`memestream.text.Stacker`), fitted on
out-of-fold predictions. OCR is slow (~100x the embedding), so by default it runs only
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
from typing import Callable, Sequence

import numpy as np

from memestream.errors import ConfigError, ModelError

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


@dataclass(frozen=True)
class TextBranch:
    text: object  # memestream.text.TextModel
    stacker: object  # memestream.text.Stacker
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
        text_logp = self.text.decision(list(texts))  # type: ignore[attr-defined]
        return self.stacker.predict_proba(image_logp, text_logp, has_text.astype(np.float64))  # type: ignore[attr-defined]

    def save(self, folder: Path) -> None:
        from memestream import text as textmod

        folder.mkdir(parents=True, exist_ok=True)
        textmod.save(self.text, folder / "text_model")
        textmod.save(self.stacker, folder / "stacker")
        if self.neighbours is not None:
            self.neighbours.save(folder / NEIGHBOURS_DIR)  # type: ignore[attr-defined]
        meta = {"cascade": self.cascade, "ocr_version": self.ocr_version, "neighbours": self.neighbours is not None}
        (folder / BRANCH_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "TextBranch":
        from memestream import text as textmod

        try:
            meta = json.loads((folder / BRANCH_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"text branch in {folder} is unreadable: {folder / BRANCH_FILE}: {exc}") from None
        if meta.get("ocr_version") != textmod.OCR_VERSION:
            raise ModelError(
                f"text branch in {folder} was trained with OCR {meta.get('ocr_version')!r}, this installation runs "
                f"{textmod.OCR_VERSION!r}; retrain (meme-train) or pass --text off"
            )
        neighbours = None
        if meta.get("neighbours"):
            from memestream.neighbours import NeighbourVote

            neighbours = NeighbourVote.load(folder / NEIGHBOURS_DIR)
        return cls(textmod.load(folder / "text_model"), textmod.load(folder / "stacker"), float(meta["cascade"]), meta["ocr_version"], neighbours)


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
    from memestream.text import OcrError, ocr_text

    todo = branch.needs_ocr(image_probs, ok, mode)
    if read_rows is not None:
        asked = np.flatnonzero(todo)
        read: Callable[[int], str] = dict(zip(asked.tolist(), read_rows(asked))).__getitem__
    else:
        def read(i: int) -> str:
            return ocr_text(images[i], wide=wide_ocr)  # type: ignore[arg-type]

    texts = [""] * n
    has = np.zeros(n, dtype=np.float64)
    ran: list[bool | None] = [bool(False) if ok[i] else None for i in range(n)]
    shown: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    for i in np.flatnonzero(todo):
        try:
            found = read(int(i))
        except OcrError as exc:
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
