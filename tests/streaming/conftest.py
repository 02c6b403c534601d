"""Helpers for streaming tests: a data folder laid out like meme-stream's defaults."""
from __future__ import annotations

from pathlib import Path

import pytest

from streaming.counts import WindowSpec
from streaming.config import StreamConfig


def make_config(root: Path, model_dir: Path, **overrides) -> StreamConfig:
    base = dict(
        source="folder",
        output=root / "output",
        checkpoint=root / "checkpoints",
        model_dir=model_dir,
        inbox=root / "inbox",
        spool=root / "spool",
        archive=root / "archive",
        quarantine_dir=root / "quarantine",
        available_now=True,
        trigger_seconds=0.5,
        max_files_per_trigger=4,
        window=WindowSpec(600, 60, 3600),
        quiet=True,
    )
    base.update(overrides)
    return StreamConfig(**base)


@pytest.fixture
def stream_root(tmp_path):
    (tmp_path / "inbox").mkdir()
    return tmp_path
