from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from memestream.errors import ConfigError
from streaming.schema import PREDICTIONS, read_table
from streaming.sinks import BatchMarker, OutputTables


def _table(batch: int, dates: list[str]) -> pa.Table:
    return pa.table({"origin": [f"b{batch}-{i}" for i in range(len(dates))], "date": dates})


def test_commit_is_idempotent_per_batch(tmp_path):
    out = OutputTables(tmp_path)
    out.ensure_writable()
    assert out.commit_batch(0, {PREDICTIONS: _table(0, ["2026-11-27", "2026-11-28"])}, BatchMarker(0, 2, 0, 0, None, {"doom": 2}))
    # a replay of the same batch id is skipped, whatever it carries
    assert not out.commit_batch(0, {PREDICTIONS: _table(0, ["2026-11-27"] * 5)}, BatchMarker(0, 5, 0, 0, None))
    assert out.commit_batch(1, {PREDICTIONS: _table(1, ["2026-11-28"])}, BatchMarker(1, 1, 0, 0, None, {"doom": 1, "cats": 0}))
    table = read_table(tmp_path, PREDICTIONS)
    assert sorted(table.column("origin").to_pylist()) == ["b0-0", "b0-1", "b1-0"]
    assert out.committed_batches() == [0, 1]
    assert out.label_totals() == {"doom": 3, "cats": 0}
    assert out.last_marker_before(1).batch_id == 0


def test_crashed_attempt_leftovers_are_replaced_not_added(tmp_path):
    """A batch that crashed after writing files but before its marker is rewritten cleanly."""
    out = OutputTables(tmp_path)
    out.ensure_writable()

    def crash():
        raise RuntimeError("killed between files and marker")

    with pytest.raises(RuntimeError):
        out.commit_batch(3, {PREDICTIONS: _table(3, ["2026-11-26", "2026-11-27"])}, BatchMarker(3, 2, 0, 0, None), after_files=crash)
    assert not out.is_committed(3)
    out.commit_batch(3, {PREDICTIONS: _table(3, ["2026-11-27"])}, BatchMarker(3, 1, 0, 0, None))
    assert read_table(tmp_path, PREDICTIONS).column("origin").to_pylist() == ["b3-0"]
    # readers ignore hidden temp files and the _commits folder
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_tables_read_back_with_pandas_and_spark(tmp_path, spark):
    out = OutputTables(tmp_path)
    out.commit_batch(0, {PREDICTIONS: _table(0, ["2026-11-27", "2026-11-27"])}, BatchMarker(0, 2, 0, 0, None))
    frame = pd.read_parquet(tmp_path / PREDICTIONS)
    assert len(frame) == 2 and set(frame["date"].astype(str)) == {"2026-11-27"}
    assert spark.read.parquet(str(tmp_path / PREDICTIONS)).count() == 2


def test_unwritable_output_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder under a file
    with pytest.raises(ConfigError, match="not writable"):
        OutputTables(blocker / "out").ensure_writable()
