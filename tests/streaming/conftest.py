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
        # no in-stream upkeep (its last pass costs ~10 s a run): tests/streaming/test_upkeep.py and
        # test_query.py's upkeep test turn it on
        compact_every_batches=None,
        compact_every_s=None,
    )
    base.update(overrides)
    return StreamConfig(**base)


@pytest.fixture
def stream_root(tmp_path):
    (tmp_path / "inbox").mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def streamed(spark, trained_model_dir, image_bytes, bad_payloads, tmp_path_factory):
    """A data folder after a real folder stream: 10 good images of 3 classes and 2 bad ones,
    archived/quarantined, the tables then OPTIMIZEd and VACUUMed once (meme-compact's pass),
    and a stray Parquet file dropped into predictions/ that no Delta commit names (readers must
    not see it). Treat it as read-only."""
    import shutil

    from streaming.query import run_stream
    from streaming.upkeep import UpkeepConfig, run_upkeep

    root = tmp_path_factory.mktemp("streamed")
    inbox = root / "inbox"
    inbox.mkdir()
    for i in range(10):
        (inbox / f"good_{i}.jpg").write_bytes(image_bytes(["doom", "cats", "animal_crossing"][i % 3], 300 + i, "jpeg"))
    (inbox / "bad_text.jpg").write_bytes(bad_payloads["text"])
    (inbox / "bad_trunc.jpg").write_bytes(bad_payloads["truncated_jpeg"])
    summary = run_stream(spark, make_config(root, trained_model_dir, compact_every_batches=None, compact_every_s=None))
    assert summary.rows == 12
    out = root / "output"
    run_upkeep(spark, UpkeepConfig(str(out)))
    live = next((out / "predictions").glob("date=*"))
    shutil.copy(next(live.glob("*.parquet")), live / "part-stray-not-in-the-log.parquet")
    return root


# ---------------------------------------------------------------------------------------
# Delta tables
# ---------------------------------------------------------------------------------------


def _date_of(table: str, row: dict):
    from streaming import schema

    stamp = {schema.CLASS_COUNTS: "window_start", schema.BATCHES: "committed_at"}.get(table, "event_time")
    value = row.get(stamp) or row.get("processing_time")
    return value.date() if value is not None else None


def write_delta_rows(output, table: str, rows: list[dict]) -> int:
    """Append ``rows`` (dicts; missing columns are NULL, ``date`` derived from the event time /
    window start / commit time) to the Delta table ``OUTPUT/<table>`` with ``deltalake``, the way
    a reader sees the stream's commits. Returns the table's new version."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from streaming import schema

    arrow = schema.arrow_schema(table)
    full = []
    for row in rows:
        unknown = set(row) - set(arrow.names)
        assert not unknown, f"{table} has no column(s) {sorted(unknown)}"
        filled = {name: row.get(name) for name in arrow.names}
        if filled[schema.DATE] is None:
            filled[schema.DATE] = _date_of(table, row)
        full.append(filled)
    uri = schema.table_uri(output, table)
    write_deltalake(uri, pa.Table.from_pylist(full, schema=arrow), partition_by=[schema.DATE], mode="append")
    return DeltaTable(uri).version()


@pytest.fixture
def delta_output():
    """Factory: ``delta_output(output, table, rows) -> version`` appends rows to ``OUTPUT/<table>``
    (a Delta table made with ``deltalake.write_deltalake`` and :func:`streaming.schema.arrow_schema`)."""
    return write_delta_rows
