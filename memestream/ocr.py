"""OCR: the words in a meme image, in reading order (RapidOCR through ONNX Runtime).

Why: the image branch misses memes whose *words* name the game (tweets, captions,
screenshots). RapidOCR runs PP-OCRv4 detection and recognition ONNX models that ship inside
the ``rapidocr-onnxruntime`` wheel, so nothing is downloaded. One engine per process (a Spark
Python worker) on one ONNX Runtime thread, created once and guarded by locks, because rapidocr
keeps per-call state on the engine; a second, two-thread engine serves small batches on an
idle machine. The text is scored by :mod:`memestream.text_model`.

:data:`OCR_VERSION` names everything that changes the output: it keys the training cache and
is stored with every text branch, which refuses to load under another one.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memestream.libc import heap_trimmer

log = logging.getLogger(__name__)

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
_TRIM: Callable[[], None] | None = None  # libc malloc_trim(0), when the C library has it
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


def _engine() -> Any:
    """The process-wide engine, created once (thread-safe). A failed creation is remembered."""
    global _ENGINE, _ENGINE_ERROR, _TRIM
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                if _ENGINE_ERROR is not None:
                    raise OcrError(_ENGINE_ERROR)
                try:
                    _TRIM = heap_trimmer() if OCR_TRIM_HEAP else None
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
                    _TRIM()
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
