"""OCR (memestream.ocr): engines, reading order, bad input, memory: fast, no Spark."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from memestream import ocr
from memestream.libc import heap_trimmer
from memestream.text_model import has_text


def _meme(words: str, fg: tuple[int, int, int], bg: tuple[int, int, int], y: int = 150) -> np.ndarray:
    """A 300x300 BGR image with ``words`` rendered centred, like a captioned meme."""
    image = np.full((300, 300, 3), bg, np.uint8)
    font, scale, thickness = cv2.FONT_HERSHEY_DUPLEX, 1.0, 2
    (w, _), _ = cv2.getTextSize(words, font, scale, thickness)
    cv2.putText(image, words, ((300 - w) // 2, y), font, scale, fg, thickness, cv2.LINE_AA)
    return image


def _squash(s: str) -> str:
    # PP-OCRv4 often drops the space between words ("DOOMETERNAL"); the n-gram model does not need it.
    return "".join(s.split()).lower()


def test_ocr_reads_dark_on_light_and_light_on_dark():
    nook = ocr.ocr_text(_meme("NOOK MILES", (0, 0, 0), (255, 255, 255)))
    doom = ocr.ocr_text(_meme("DOOM ETERNAL", (255, 255, 255), (40, 30, 30)))
    assert "nookmiles" in _squash(nook), nook
    assert "doometernal" in _squash(doom), doom


def test_ocr_blank_and_noise_images_give_empty_text():
    assert ocr.ocr_text(np.full((300, 300, 3), 255, np.uint8)) == ""
    assert ocr.ocr_text(np.zeros((300, 300), np.uint8)) == ""  # gray input accepted


def test_ocr_reading_order_lines_top_to_bottom_words_left_to_right():
    image = _meme("TOP LINE", (0, 0, 0), (255, 255, 255), y=60)
    cv2.putText(image, "LEFT", (20, 210), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "RIGHT", (175, 215), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    lines = ocr.ocr_text(image).lower().split("\n")
    assert len(lines) == 2, lines
    assert _squash(lines[0]) == "topline"
    assert lines[1].index("left") < lines[1].index("right")


def test_ocr_reads_each_line_at_its_own_width_on_both_engines():
    """One line per recogniser call (``OCR_REC_BATCH``): a short word under a long line is not
    padded to the long line's width; both engines are configured alike and read the same."""
    image = np.full((300, 600, 3), 255, np.uint8)
    cv2.putText(image, "IS IT TIME FOR NOOK MILES", (20, 90), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "DOOM", (260, 220), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    assert ocr.OCR_REC_BATCH == 1 and "rec1" in ocr.OCR_VERSION
    assert ocr._engine().text_rec.rec_batch_num == ocr.OCR_REC_BATCH
    narrow = ocr.ocr_text(image)
    assert "nookmiles" in _squash(narrow) and _squash(narrow.split("\n")[-1]) == "doom", narrow
    if ocr._wide_engine() is not ocr._engine():  # a one-core machine has no second engine
        assert ocr._wide_engine().text_rec.rec_batch_num == ocr.OCR_REC_BATCH
        assert ocr.ocr_text(image, wide=True) == narrow


def test_ocr_accepts_bgra_and_large_images():
    image = _meme("NOOK MILES", (0, 0, 0), (255, 255, 255))
    bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    assert "nookmiles" in _squash(ocr.ocr_text(bgra))
    big = cv2.resize(image, (1200, 1200), interpolation=cv2.INTER_CUBIC)  # shrunk to OCR_SIDE first
    assert "nookmiles" in _squash(ocr.ocr_text(big))


@pytest.mark.parametrize(
    "bad",
    [None, "an image", np.zeros((300, 300, 3), np.float32), np.zeros((300, 300, 2), np.uint8), np.zeros((0, 5, 3), np.uint8)],
    ids=["none", "str", "float", "two-channels", "empty"],
)
def test_ocr_bad_input_raises_ocr_error_only(bad):
    with pytest.raises(ocr.OcrError):
        ocr.ocr_text(bad)


def test_ocr_engine_failure_is_ocr_error(monkeypatch):
    class Broken:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(ocr, "_ENGINE", Broken())
    with pytest.raises(ocr.OcrError, match="onnxruntime exploded"):
        ocr.ocr_text(np.full((300, 300, 3), 255, np.uint8))


def test_ocr_engine_created_once_across_threads_and_failure_remembered(monkeypatch):
    import threading
    import time

    calls = []

    def slow_factory():
        calls.append(1)
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(ocr, "_ENGINE", None)
    monkeypatch.setattr(ocr, "_create_engine", slow_factory)
    got = []
    threads = [threading.Thread(target=lambda: got.append(ocr._engine())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 8 and all(g is got[0] for g in got)

    def failing_factory():
        calls.append(1)
        raise ocr.OcrError("OCR engine failed to load: no models")

    monkeypatch.setattr(ocr, "_ENGINE", None)
    monkeypatch.setattr(ocr, "_ENGINE_ERROR", None)
    monkeypatch.setattr(ocr, "_create_engine", failing_factory)
    calls.clear()
    for _ in range(3):
        with pytest.raises(ocr.OcrError, match="no models"):
            ocr.ocr_text(np.full((50, 50, 3), 255, np.uint8))
    assert len(calls) == 1  # not retried for every image


def test_ocr_engine_is_one_per_process_and_quiet(capfd, monkeypatch):
    monkeypatch.setattr(ocr, "_ENGINE", None)  # create a fresh engine while output is captured
    ocr.ocr_text(np.full((64, 64, 3), 255, np.uint8))
    first = ocr._engine()
    assert ocr._engine() is first
    ocr.ocr_text(_meme("NOOK MILES", (0, 0, 0), (255, 255, 255)))
    out, err = capfd.readouterr()  # file descriptors: also catches ONNX Runtime's C++ logging
    assert out == "" and err == ""
    import logging

    assert all(logging.getLogger(name).getEffectiveLevel() >= logging.WARNING for name in ocr._RAPIDOCR_LOGGERS)
    # one ONNX Runtime thread per session (Spark runs one Python worker per core)
    for session in (first.text_det.infer, first.text_rec.session):
        assert session.session.get_session_options().intra_op_num_threads == 1


def _rss_mb() -> float:
    import re

    with open("/proc/self/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def test_ocr_gives_freed_memory_back():
    # Without malloc_trim this loop leaves ~130 MB of ONNX Runtime temporaries in the heap.
    if heap_trimmer() is None or not Path("/proc/self/status").exists():
        pytest.skip("needs glibc malloc_trim and /proc (Linux)")
    ocr.ocr_text(np.full((300, 300, 3), 255, np.uint8))
    before = _rss_mb()
    rng = np.random.default_rng(0)
    words = "nook miles blathers daisy mae turnip doom eternal slayer demon chainsaw rip and tear".split()
    for i in range(12):
        image = np.full((300 + 40 * (i % 3), 300, 3), 255, np.uint8)
        for line in range(9):
            cv2.putText(image, " ".join(rng.choice(words, 3)), (8, 30 + 30 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        assert has_text(ocr.ocr_text(image))
    assert _rss_mb() - before < 40  # measured: 3-14 MB with the trim, 65-130 MB without




def test_wide_engine_reads_the_same_text_and_falls_back_to_one_thread(monkeypatch):
    img = _meme("NOOK MILES", (0, 0, 0), (255, 255, 255))
    assert ocr.ocr_text(img, wide=True) == ocr.ocr_text(img)
    if (os.cpu_count() or 1) >= 2:
        assert ocr._wide_engine() is not ocr._engine()

    def failing_factory(threads=1):
        raise ocr.OcrError("OCR engine failed to load: no threads")

    monkeypatch.setattr(ocr, "_WIDE_ENGINE", None)
    monkeypatch.setattr(ocr, "_create_engine", failing_factory)
    assert ocr._wide_engine() is ocr._engine()  # the one-thread engine, already built
    assert _squash(ocr.ocr_text(img, wide=True)) == _squash(ocr.ocr_text(img))
    # one core: the one-thread engine, built on demand (the creation lock is not reentrant)
    monkeypatch.setattr(ocr.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(ocr, "_ENGINE", None)
    monkeypatch.setattr(ocr, "_create_engine", lambda threads=1: ("engine", threads))
    assert ocr._wide_engine() == ("engine", 1)
