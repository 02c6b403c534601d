"""meme-compact over batches committed through streaming.sinks (no Spark needed)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import date

import pyarrow as pa
import pytest

from memestream.libc import exchange_paths
from streaming import compact as compact_mod
from streaming.compact import CompactConfig, batches_of, compact
from streaming.schema import read_table
from streaming.sinks import BatchMarker, OutputTables

DATES = ("2026-11-20", "2026-11-27")


def _batch(batch_id: int, n: int = 3) -> dict[str, pa.Table]:
    rows = [{"image_id": f"{batch_id}-{i}", "label": ("doom", "cats")[i % 2], "confidence": 0.5 + i / 10,
             "batch_id": batch_id, "date": DATES[i % 2]} for i in range(n)]
    counts = [{"label": "doom", "count": batch_id + 1, "batch_id": batch_id, "date": DATES[1]}]
    return {"predictions": pa.Table.from_pylist(rows), "class_counts": pa.Table.from_pylist(counts)}


def _commit(out: OutputTables, batch_id: int, **kw) -> bool:
    return out.commit_batch(batch_id, _batch(batch_id), BatchMarker(batch_id, 3, 0, 0, None), **kw)


def _multiset(root, table: str) -> Counter:
    t = read_table(root, table)
    cols = [c for c in t.column_names if c != "date"]
    return Counter(tuple(sorted((k, str(v)) for k, v in r.items() if k in cols)) for r in t.to_pylist())


@pytest.fixture()
def output(tmp_path):
    """Batches 0-4 committed, batch 5 crashed after its files (no marker)."""
    out = OutputTables(tmp_path / "out")
    out.ensure_writable()
    for b in range(5):
        assert _commit(out, b)

    def crash():
        raise RuntimeError("killed between files and marker")

    with pytest.raises(RuntimeError):
        _commit(out, 5, after_files=crash)
    return out


def _names(out: OutputTables, table: str, day: str) -> list[str]:
    return sorted(p.name for p in (out.table_dir(table) / f"date={day}").iterdir())


def test_compaction_preserves_rows_and_keeps_unsealed_files(output):
    before = {t: _multiset(output.root, t) for t in ("predictions", "class_counts")}
    results = compact(CompactConfig(output.root))
    assert {(r.table, r.action) for r in results} >= {("predictions", "compacted"), ("class_counts", "compacted")}
    for t in ("predictions", "class_counts"):
        assert _multiset(output.root, t) == before[t]
    # batches 0-3 merged; the newest committed batch (4) and the uncommitted 5 untouched
    assert _names(output, "predictions", DATES[1]) == [
        "part-main-0000000000-0000000003.parquet", "part-main-0000000004.parquet", "part-main-0000000005.parquet"]
    hidden = [p.name for p in output.table_dir("predictions").iterdir() if p.name.startswith(".")]
    assert all(".retired-" in name for name in hidden)  # old generations wait out a grace period
    assert compact_mod.purge_retired(output.table_dir("predictions"), grace_s=0) == len(hidden)
    assert not [p for p in output.table_dir("predictions").iterdir() if p.name.startswith(".")]


def test_replays_after_compaction_add_no_duplicates(output):
    compact(CompactConfig(output.root))
    before = _multiset(output.root, "predictions")
    assert _commit(output, 2) is False  # marker exists: the replay is skipped
    assert _commit(output, 5) is True  # the crashed batch replays over its own file
    after = _multiset(output.root, "predictions")
    assert after == before
    assert sum(after.values()) == 6 * 3
    # once batch 6 lands, 4 and 5 are sealed and fold into the compacted file
    assert _commit(output, 6)
    compact(CompactConfig(output.root))
    assert _names(output, "predictions", DATES[1]) == ["part-main-0000000000-0000000005.parquet", "part-main-0000000006.parquet"]
    assert sum(_multiset(output.root, "predictions").values()) == 7 * 3


def test_min_files_dry_run_and_retention(output):
    assert all(r.action == "skipped" for r in compact(CompactConfig(output.root, min_files=50)))
    dry = compact(CompactConfig(output.root, retention_days=3, dry_run=True), today=date(2026, 11, 27))
    assert {r.action for r in dry} >= {"would-delete", "would-compact"}
    assert len(_names(output, "predictions", DATES[0])) == 6  # nothing changed
    res = compact(CompactConfig(output.root, tables=("predictions",), retention_days=3), today=date(2026, 11, 27))
    assert ("predictions", "date=2026-11-20", "deleted") in {(r.table, r.date_dir, r.action) for r in res}
    assert not (output.table_dir("predictions") / "date=2026-11-20").exists()
    assert (output.table_dir("class_counts") / "date=2026-11-27").exists()
    assert output.is_committed(0)  # markers stay: old replays are still skipped


def test_exchange_is_atomic_swap_and_names_parse(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "y").write_text("b")
    if not exchange_paths(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here; the two-rename fallback is used")
    assert (a / "y").exists() and (b / "x").exists()
    assert batches_of("part-main-0000000007.parquet") == ("main", 7, 7)
    assert batches_of("part-main-0000000001-0000000009.parquet") == ("main", 1, 9)
    assert batches_of("part-7.parquet") is None
    assert batches_of("part-0000000007.parquet") is None


def test_reader_never_sees_both_old_and_compacted_files(output, monkeypatch):
    """A reader listing the folder during the swap sees the old files or the merged one."""
    folder = output.table_dir("predictions") / f"date={DATES[1]}"
    seen: list[frozenset[str]] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(frozenset(p.name for p in folder.iterdir() if not p.name.startswith(".")))
            except FileNotFoundError:
                seen.append(frozenset())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        compact(CompactConfig(output.root, tables=("predictions",)))
    finally:
        stop.set()
        thread.join()
    valid = {len(s) for s in seen}
    assert valid <= {6, 3}, f"reader saw a listing with neither/both generations: {sorted(valid)}"
    assert frozenset() not in seen


def test_cli_reports_and_errors(output, tmp_path, capsys):
    assert compact_mod.main(["--output", str(output.root), "--table", "class_counts"]) == 0
    text = capsys.readouterr().out
    assert "class_counts/date=2026-11-27: compacted 6 -> 3 files (4 rows merged)" in text
    assert compact_mod.main(["--output", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compaction_concurrent_with_a_writer_loses_and_duplicates_nothing(output):
    """The stream keeps committing while compaction runs repeatedly: every row exactly once."""
    errors: list[BaseException] = []

    def writer():
        try:
            _commit(output, 5)  # the crashed batch's replay
            for b in range(6, 30):
                assert _commit(output, b)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    rounds = 0
    while thread.is_alive() or rounds < 2:
        compact(CompactConfig(output.root))
        rounds += 1
    thread.join()
    assert not errors, errors
    compact(CompactConfig(output.root))
    rows = _multiset(output.root, "predictions")
    assert sum(rows.values()) == 30 * 3 and max(rows.values()) == 1
    assert len(_names(output, "predictions", DATES[1])) == 2  # merged + the newest batch


def test_two_writers_share_tables_without_clashing(tmp_path):
    """The folder and the Kafka stream write the same tables with their own batch ids."""
    folder_w = OutputTables(tmp_path / "out", writer="folder_a1")
    kafka_w = OutputTables(tmp_path / "out", writer="kafka_b2")
    for b in range(3):
        assert _commit(folder_w, b)
        assert _commit(kafka_w, b)  # same batch id, other writer: not a replay
    assert sum(_multiset(folder_w.root, "predictions").values()) == 2 * 3 * 3
    compact(CompactConfig(folder_w.root))
    names = _names(folder_w, "predictions", DATES[1])
    assert "part-folder_a1-0000000000-0000000001.parquet" in names and "part-kafka_b2-0000000000-0000000001.parquet" in names
    assert sum(_multiset(folder_w.root, "predictions").values()) == 2 * 3 * 3


def test_batches_whose_markers_were_pruned_still_compact(tmp_path):
    """Sealed = below the writer's newest committed batch, marker kept or rolled up."""
    out = OutputTables(tmp_path / "out", keep_commits=3)
    out.ensure_writable()
    for b in range(10):
        assert _commit(out, b)
    assert out.committed_batches() == [7, 8, 9]
    compact(CompactConfig(out.root))
    assert _names(out, "predictions", DATES[1]) == ["part-main-0000000000-0000000008.parquet", "part-main-0000000009.parquet"]
    assert sum(_multiset(out.root, "predictions").values()) == 10 * 3


def test_time_budget_stops_between_folders(output):
    results = compact(CompactConfig(output.root, time_budget_s=0))
    assert results == []  # spent before the first folder: nothing touched, the next run does it
    assert len(_names(output, "predictions", DATES[1])) == 6


def test_max_file_bytes_leaves_big_merged_files_alone(output):
    compact(CompactConfig(output.root))
    merged = "part-main-0000000000-0000000003.parquet"
    for b in range(6, 9):
        _commit(output, b) if b != 6 else (_commit(output, 5), _commit(output, 6))
    size = (output.table_dir("predictions") / f"date={DATES[1]}" / merged).stat().st_size
    compact(CompactConfig(output.root, max_file_bytes=size))  # the merged file is "full"
    assert _names(output, "predictions", DATES[1]) == [merged, "part-main-0000000004-0000000007.parquet", "part-main-0000000008.parquet"]
    assert sum(_multiset(output.root, "predictions").values()) == 9 * 3


def test_stream_compactor_thread_merges_while_batches_commit(tmp_path):
    """The in-stream compactor: runs every N batches off the committing thread, holds the lock
    briefly, loses and duplicates nothing, and stops with a final pass."""
    out = OutputTables(tmp_path / "out", writer="folder_x1", keep_commits=5)
    out.ensure_writable()
    compactor = compact_mod.StreamCompactor(out, CompactConfig(out.root), every_batches=10, every_s=None, poll_s=0.02).start()
    waits = []
    try:
        for b in range(60):
            started = time.monotonic()
            assert _commit(out, b)
            waits.append(time.monotonic() - started)
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while compactor.runs < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        compactor.stop(final_pass=True)
    assert compactor.runs >= 5  # about one per 10 batches, from the thread
    assert not compactor._thread.is_alive()
    rows = _multiset(out.root, "predictions")
    assert sum(rows.values()) == 60 * 3 and max(rows.values()) == 1
    for day in DATES:  # sealed batches in one file, the newest (59) on its own
        assert _names(out, "predictions", day) == ["part-folder_x1-0000000000-0000000058.parquet", "part-folder_x1-0000000059.parquet"]
    assert 0 < compactor.max_lock_s < 0.5, compactor.max_lock_s
    print(f"lock held at most {compactor.max_lock_s * 1000:.1f} ms; commit took at most {max(waits) * 1000:.1f} ms")


def test_stream_compactor_survives_a_failing_run_and_due_needs_new_batches(tmp_path, monkeypatch, caplog):
    out = OutputTables(tmp_path / "out", keep_commits=5)
    out.ensure_writable()
    compactor = compact_mod.StreamCompactor(out, CompactConfig(out.root), every_batches=None, every_s=0.0, poll_s=0.02)
    assert not compactor.due()  # nothing committed yet
    _commit(out, 0)
    assert compactor.due()
    compactor.run_once()
    assert not compactor.due()  # nothing new since the last run, however much time passed
    calls = []

    def boom(*a, **kw):
        calls.append(1)
        raise OSError("disk trouble")

    monkeypatch.setattr(compact_mod, "compact", boom)
    compactor.start()
    _commit(out, 1)
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    compactor.stop()
    assert len(calls) >= 2  # failed, logged, tried again: the thread stayed alive
    assert any("in-stream compaction failed" in r.message for r in caplog.records)


def test_leftovers_of_a_killed_run_are_purged_once_old(output):
    import os

    table = output.table_dir("predictions")
    staged = table / f".date={DATES[1]}.compact-deadbeef"
    expired = table / f".date={DATES[0]}.expired-cafef00d"
    fresh = table / f".date={DATES[0]}.compact-0badf00d"
    for d in (staged, expired, fresh):
        d.mkdir()
        (d / "part-main-0000000000.parquet").write_bytes(b"x")
    old = time.time() - compact_mod.LEFTOVER_AGE_S - 5
    for d in (staged, expired):
        os.utime(d, (old, old))
    assert compact_mod.purge_retired(table) == 2
    assert not staged.exists() and not expired.exists() and fresh.exists()  # a run in progress may own it


def test_young_retired_generations_are_capped_per_folder(output):
    table = output.table_dir("predictions")
    now = int(time.time())
    made = {}
    for i in range(5):
        d = table / f".date={DATES[1]}.retired-{now - 10 + i}-{i:06x}"
        d.mkdir()
        (d / "part-main-0000000000.parquet").write_bytes(b"x")
        made[i] = d
    other = table / f".date={DATES[0]}.retired-{now - 50}-abcdef"
    other.mkdir()
    assert compact_mod.purge_retired(table, keep=2) == 3
    assert [i for i, d in made.items() if d.exists()] == [3, 4]  # the two newest of that folder
    assert other.exists()  # another date's generation is counted on its own


def test_merge_streams_batches_and_unifies_schemas(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(compact_mod, "MERGE_BATCH_ROWS", 7)  # several batches per input
    old = pa.table({"origin": [f"a{i}" for i in range(20)], "confidence": [0.5] * 20})
    new = pa.table({"origin": ["b0", "b1"], "confidence": [0.9, 0.8], "ocr_text": ["nook", None]})
    pq.write_table(old, tmp_path / "old.parquet", row_group_size=5)
    pq.write_table(new, tmp_path / "new.parquet")
    rows = compact_mod.merge_files([tmp_path / "old.parquet", tmp_path / "new.parquet"], tmp_path / "merged.parquet")
    merged = pq.read_table(tmp_path / "merged.parquet")
    assert rows == 22 == merged.num_rows
    assert merged.column("origin").to_pylist() == [f"a{i}" for i in range(20)] + ["b0", "b1"]
    assert merged.column("ocr_text").to_pylist() == [None] * 20 + ["nook", None]
