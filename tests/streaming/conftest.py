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


@pytest.fixture(scope="session")
def streamed(spark, trained_model_dir, image_bytes, bad_payloads, tmp_path_factory):
    """A data folder after a real folder stream: 10 good images of 3 classes and 2 bad ones in
    several batches, archived/quarantined, then compacted (a hidden retired generation kept)
    with a staging file and a ``_``-prefixed file added. Treat it as read-only."""
    import shutil

    from streaming.compact import CompactConfig, compact
    from streaming.query import run_stream

    root = tmp_path_factory.mktemp("streamed")
    inbox = root / "inbox"
    inbox.mkdir()
    for i in range(10):
        (inbox / f"good_{i}.jpg").write_bytes(image_bytes(["doom", "cats", "animal_crossing"][i % 3], 300 + i, "jpeg"))
    (inbox / "bad_text.jpg").write_bytes(bad_payloads["text"])
    (inbox / "bad_trunc.jpg").write_bytes(bad_payloads["truncated_jpeg"])
    # no in-stream compaction: meme-compact below does it (and leaves a retired generation)
    summary = run_stream(spark, make_config(root, trained_model_dir, compact_every_batches=None, compact_every_s=None))
    assert summary.batches >= 3 and summary.rows == 12
    out = root / "output"
    results = compact(CompactConfig(out, min_files=2))
    assert any(r.action == "compacted" for r in results)
    pred = out / "predictions"
    assert list(pred.glob(".date=*.retired-*")), "compaction keeps the old generation hidden for a grace period"
    live = next(pred.glob("date=*"))
    shutil.copy(next(live.glob("*.parquet")), live / ".part-main-0000000099.parquet.tmp")
    shutil.copy(next(live.glob("*.parquet")), live / "_part-main-0000000098.parquet")
    return root
