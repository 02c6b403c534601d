"""Where OCR, the text model and the stacker used to live; new code imports their modules.

Split by concern: :mod:`memestream.ocr` (the OCR engine), :mod:`memestream.text_model` (the
character n-gram model and the saved ``memestream-text/1`` format) and
:mod:`memestream.stacking` (the stacker, next to the text branch that applies it). These
names stay importable from here only for ``batch_training/train.py``, which is being rewritten
(issue 21, item 5); remove this module once it imports the modules above.
"""
from __future__ import annotations

from memestream.ocr import OCR_VERSION, OcrError, ocr_text
from memestream.stacking import Stacker
from memestream.text_model import TextModel, has_text

__all__ = ["OCR_VERSION", "OcrError", "Stacker", "TextModel", "has_text", "ocr_text"]
