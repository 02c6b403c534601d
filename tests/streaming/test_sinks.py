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


def _labelled(batch_id: int) -> tuple[dict[str, pa.Table], BatchMarker]:
    """Batch ``batch_id`` has ``batch_id % 3 + 1`` rows, all labelled doom, plus one cat every 4th batch."""
    n = batch_id % 3 + 1
    totals = {"doom": n, **({"cats": 1} if batch_id % 4 == 0 else {})}
    return {PREDICTIONS: _table(batch_id, ["2026-11-28"] * n)}, BatchMarker(batch_id, n, 0, 0, batch_id * 1000, totals)


def _expected_totals(batches) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in batches:
        for k, v in _labelled(b)[1].label_totals.items():
            out[k] = out.get(k, 0) + v
    return out


def test_markers_are_pruned_to_the_newest_n_and_totals_stay_exact(tmp_path):
    out = OutputTables(tmp_path, keep_commits=5)
    out.ensure_writable()
    for b in range(40):
        assert out.commit_batch(b, *_labelled(b))
        assert len(out.committed_batches()) == min(b + 1, 5)
        assert out.label_totals() == _expected_totals(range(b + 1))  # exact after every prune
    assert out.committed_batches() == [35, 36, 37, 38, 39]
    assert out.rollup().through_batch == 34 and out.rollup().batches == 35
    assert out.last_marker_before(40).batch_id == 39 and out.last_marker_before(40).max_event_time_ms == 39000
    assert out.newest_committed() == 39
    # a replay of the newest batch (its marker kept) is skipped; so is one of a pruned batch
    assert not out.commit_batch(39, *_labelled(39))
    assert not out.commit_batch(3, *_labelled(3))
    assert out.is_committed(3) and out.is_committed(39) and not out.is_committed(40)
    assert len(read_table(tmp_path, PREDICTIONS)) == sum(b % 3 + 1 for b in range(40))  # nothing rewritten
    # the folder holds the kept markers and the rollup, whatever the number of batches
    assert sorted(p.name for p in out.commits_dir.iterdir()) == [*(f"{b:010d}.json" for b in range(35, 40)), "_base.json"]


def test_crash_between_rollup_and_marker_deletion_neither_loses_nor_double_counts(tmp_path):
    OutputTables(tmp_path).ensure_writable()
    for b in range(10):  # committed while the default keeps every one of them
        assert OutputTables(tmp_path).commit_batch(b, *_labelled(b))
    out = OutputTables(tmp_path, keep_commits=3)

    def crash():
        raise RuntimeError("killed after the rollup, before deleting markers")

    with pytest.raises(RuntimeError):
        out.prune_markers(crash_after_rollup=crash)
    assert out.rollup().through_batch == 6 and out.committed_batches() == list(range(10))  # both states on disk
    assert out.label_totals() == _expected_totals(range(10))  # covered markers are skipped, not counted twice
    # a second crash at the same point after one more batch: the rollup only adds what it lacks
    OutputTables(tmp_path).commit_batch(10, *_labelled(10))
    with pytest.raises(RuntimeError):
        out.prune_markers(crash_after_rollup=crash)
    assert out.rollup().through_batch == 7 and out.label_totals() == _expected_totals(range(11))
    # the next commit's prune deletes the leftovers without counting them again
    assert out.commit_batch(11, *_labelled(11))
    assert out.committed_batches() == [9, 10, 11]
    assert out.rollup().batches == 9 and out.label_totals() == _expected_totals(range(12))
    assert out.is_committed(4) and not out.commit_batch(4, *_labelled(4))


def test_keep_commits_below_two_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 2"):
        OutputTables(tmp_path, keep_commits=1)


def test_totals_read_while_another_writer_prunes_are_exact(tmp_path):
    """A reader (no lock) racing a stream's pruning never loses or double counts a batch."""
    import threading

    writer = OutputTables(tmp_path, writer="folder_a", keep_commits=2)
    writer.ensure_writable()
    reader = OutputTables(tmp_path)
    done = threading.Event()
    committed = []

    def stream():
        for b in range(150):
            writer.commit_batch(b, *_labelled(b))
            committed.append(b)
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    seen = 0
    while not done.is_set():
        before = len(committed)
        doom = reader.label_totals().get("doom", 0)
        after = len(committed)
        # between the totals of the batches committed before and after the read
        assert _expected_totals(range(before)).get("doom", 0) <= doom <= _expected_totals(range(after + 1)).get("doom", 0)
        seen += 1
    thread.join()
    assert seen > 0 and reader.label_totals() == _expected_totals(range(150))


def test_pruning_is_amortised_and_never_exceeds_the_limit(tmp_path):
    out = OutputTables(tmp_path, keep_commits=20)
    out.ensure_writable()
    rollups = set()
    for b in range(100):
        out.commit_batch(b, *_labelled(b))
        assert len(out.committed_batches()) <= 20
        rollups.add(out.rollup().through_batch)
    assert len(out.committed_batches()) >= 18  # pruned down to 18, a rollup every 3 batches
    assert len(rollups) <= 100 // 3 + 2 and out.label_totals() == _expected_totals(range(100))
