"""The spool source: offsets are two numbers, ranges cover every file once, and the checkpoint stays small."""
from __future__ import annotations

import json
import logging
import os
import time

import pyarrow as pa
import pytest

from memestream.errors import CheckpointError
from memestream.inbox import InboxMover
from memestream.spool import parse_seq
from streaming.spool_source import SpoolStreamReader, split_even
from tests.streaming.conftest import make_config


def _spool(tmp_path, n: int, prefix: str = "f") -> tuple:
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    mover = InboxMover(inbox, spool, settle=0)
    for i in range(n):
        (inbox / f"{prefix}{i:02d}.jpg").write_bytes(b"x" * (i + 1))
    assert mover.sweep(settle=0) == n
    return spool, mover


def _names(reader, start, end) -> list[str]:
    return [name for part in reader.partitions(start, end) for name in part.names]


def _batches(reader, start: dict | None = None, limit: int = 50) -> list[list[str]]:
    """Plan batches the way Spark 4.1 drives a Python source: latestOffset() (no start, no limit),
    then partitions(start, end) of each batch with new data, until nothing is new."""
    start = start or reader.initialOffset()
    out = []
    for _ in range(limit):
        end = reader.latestOffset()
        if end == start:
            break
        assert list(end) == ["seq"] and end["seq"] > start["seq"]
        out.append(_names(reader, start, end))
        start = end
    return out


def test_batches_are_sequence_ranges_capped_by_max_files(tmp_path):
    spool, _ = _spool(tmp_path, 7)
    reader = SpoolStreamReader(spool, max_files=3, num_partitions=2, keep_processed=True)
    assert reader.initialOffset() == {"seq": 0}
    batches = _batches(reader)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [n.split("-", 1)[1] for b in batches for n in b] == [f"f{i:02d}.jpg" for i in range(7)]
    # a replay of a planned range lists the same files again, and does not move the position back
    first_end = {"seq": parse_seq(batches[0][-1])}
    assert _names(reader, {"seq": 0}, first_end) == batches[0]
    assert reader.latestOffset() == {"seq": parse_seq(batches[-1][-1])}


@pytest.mark.parametrize("committed", [1, 2])
def test_a_restarted_reader_keeps_the_cap_and_skips_or_repeats_nothing(tmp_path, committed):
    """Restart as Spark 4.1 does it: a new reader, partitions(end, end) with the checkpoint's newest
    offset (setLatestSeenOffset), the replay of an uncommitted batch, then latestOffset()."""
    spool, _ = _spool(tmp_path, 8)
    first = SpoolStreamReader(spool, max_files=3, num_partitions=2, keep_processed=True)
    start, ends = first.initialOffset(), []
    for _ in range(2):  # two batches planned (written to the offset log), then the driver dies
        end = first.latestOffset()
        _names(first, start, end)
        ends.append(end)
        start = end
    newest = ends[-1]
    again = SpoolStreamReader(spool, max_files=3, num_partitions=2, keep_processed=True)
    assert again.partitions(newest, newest) == []  # setLatestSeenOffset
    replayed = []
    if committed == 1:  # batch 2 was planned but not committed: Spark runs it again
        replayed = _names(again, ends[0], ends[1])
        assert len(replayed) == 3
    rest = _batches(again, start=newest)
    assert [len(b) for b in rest] == [2]  # the cap holds; the next batch starts at the newest end
    planned = [n for b in ([_names(again, {"seq": 0}, ends[0])] + [_names(again, ends[0], ends[1])] + rest) for n in b]
    assert [n.split("-", 1)[1] for n in planned] == [f"f{i:02d}.jpg" for i in range(8)]


def test_partitions_split_a_batch_and_read_gives_the_listing_columns(tmp_path):
    spool, _ = _spool(tmp_path, 10)
    reader = SpoolStreamReader(spool, max_files=100, num_partitions=4, keep_processed=False)
    end = reader.latestOffset()
    parts = reader.partitions({"seq": 0}, end)
    assert len(parts) == 4 and sum(len(p.names) for p in parts) == 10
    rows = [row for p in parts for batch in reader.read(p) for row in batch.to_pylist()]
    assert [r["path"] for r in rows] == [f"file:{spool.resolve()}/{n}" for p in parts for n in p.names]
    assert [r["length"] for r in rows] == list(range(1, 11))  # in sequence order
    assert all(abs(r["modificationTime"].timestamp() - time.time()) < 120 for r in rows)
    assert str(next(iter(reader.read(parts[0]))).schema) == str(pa.schema(
        [("path", pa.string()), ("modificationTime", pa.timestamp("us", tz="UTC")), ("length", pa.int64())]))
    os.unlink(spool / parts[0].names[0])  # moved after an earlier attempt's commit: skipped, not an error
    assert sum(b.num_rows for b in reader.read(parts[0])) == len(parts[0].names) - 1


def test_files_not_named_by_the_mover_are_adopted_once_settled(tmp_path):
    spool, _ = _spool(tmp_path, 2)
    old = spool / "by-hand.jpg"
    old.write_bytes(b"h")
    os.utime(old, (time.time() - 10, time.time() - 10))
    (spool / "copying.jpg").write_bytes(b"c")  # just written: may still be growing
    (spool / ".hidden.jpg").write_bytes(b"h")
    (spool / "partial.jpg.part").write_bytes(b"p")
    reader = SpoolStreamReader(spool, max_files=100, num_partitions=2, keep_processed=True)
    end = reader.latestOffset()
    names = _names(reader, {"seq": 0}, end)
    assert [n.split("-", 1)[1] for n in names] == ["f00.jpg", "f01.jpg", "by-hand.jpg"]
    assert all(parse_seq(n) for n in names)
    assert (spool / "copying.jpg").exists() and (spool / ".hidden.jpg").exists() and (spool / "partial.jpg.part").exists()
    os.utime(spool / "copying.jpg", (time.time() - 10, time.time() - 10))
    later = reader.latestOffset()
    assert [n.split("-", 1)[1] for n in _names(reader, end, later)] == ["copying.jpg"]


def test_available_now_drains_what_was_there_at_start_only(tmp_path):
    spool, mover = _spool(tmp_path, 5)
    (spool / "hand.jpg").write_bytes(b"h")  # fresh, but available-now takes everything present
    reader = SpoolStreamReader(spool, max_files=2, num_partitions=2, keep_processed=False, available_now=True)
    offsets = [reader.initialOffset(), reader.latestOffset()]  # the target is fixed at this first call
    (mover.inbox / "late.jpg").write_bytes(b"l")
    mover.sweep(settle=0)
    while (nxt := reader.latestOffset()) != offsets[-1]:  # batch after batch until nothing new
        offsets.append(nxt)
        assert len(offsets) < 10
    batches = [_names(reader, a, b) for a, b in zip(offsets, offsets[1:])]
    assert all(len(b) <= 2 for b in batches)  # capped like any batch
    seen = [n.split("-", 1)[1] for b in batches for n in b]
    assert seen == [*(f"f{i:02d}.jpg" for i in range(5)), "hand.jpg"]  # and never the file that came later
    assert [n.split("-", 1)[1] for n in _names(reader, offsets[-1], {"seq": 2**62})] == ["late.jpg"]


def test_available_now_target_never_goes_below_a_committed_position(tmp_path):
    """Spark may ask for the available-now target before it tells the reader the checkpoint's
    position: with an empty spool the answer is still the sequence's high-water mark, not 0."""
    spool, _ = _spool(tmp_path, 3)
    for p in list(spool.iterdir()):
        if parse_seq(p.name):
            p.unlink()  # processed and archived
    reader = SpoolStreamReader(spool, max_files=2, num_partitions=2, keep_processed=False, available_now=True)
    newest = max(parse_seq(p.name) or 0 for p in [*(tmp_path / "inbox").parent.rglob("*")])  # 0 here: all gone
    from memestream.spool import SpoolSequence

    with SpoolSequence(spool).locked() as held:
        last = held.last
    target = reader.latestOffset()["seq"]
    assert target == last and target > 0 and newest == 0


def test_leftovers_below_the_position_are_reported_not_reread(tmp_path, caplog):
    spool, _ = _spool(tmp_path, 3)
    reader = SpoolStreamReader(spool, max_files=100, num_partitions=2, keep_processed=False)
    end = reader.latestOffset()
    with caplog.at_level(logging.WARNING, logger="streaming.spool_source"):
        assert reader.latestOffset() == end
        assert reader.latestOffset() == end
    warnings = [r.message for r in caplog.records if "already processed" in r.message]
    assert len(warnings) == 1 and "3 file(s)" in warnings[0]  # once, not every trigger
    keep = SpoolStreamReader(spool, max_files=100, num_partitions=2, keep_processed=True)
    keep.partitions(end, end)  # the position from the checkpoint (setLatestSeenOffset)
    caplog.clear()
    assert keep.latestOffset() == end
    assert not [r for r in caplog.records if "already processed" in r.message]


def test_a_new_file_never_lands_below_the_readers_position(tmp_path):
    spool, mover = _spool(tmp_path, 1)
    reader = SpoolStreamReader(spool, max_files=100, num_partitions=2, keep_processed=False)
    ahead = {"seq": 4_000_000_000_000_000_000}  # a position beyond the clock (e.g. clock stepped back)
    reader.partitions(ahead, ahead)  # the position from the checkpoint (setLatestSeenOffset)
    reader.latestOffset()
    (mover.inbox / "new.jpg").write_bytes(b"n")
    mover.sweep(settle=0)
    (new,) = [p.name for p in spool.iterdir() if p.name.endswith("new.jpg")]
    assert parse_seq(new) > ahead["seq"]
    assert _names(reader, ahead, reader.latestOffset()) == [new]


def _tree_bytes(path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_stream_checkpoint_holds_two_numbers_per_batch_not_file_names(spark, stream_root, trained_model_dir, image_bytes):
    from streaming.query import run_stream
    from streaming.schema import read_table

    inbox = stream_root / "inbox"
    names = [f"s{i:02d}.png" for i in range(16)]
    for i, name in enumerate(names):
        (inbox / name).write_bytes(image_bytes(["doom", "cats"][i % 2], 900 + i, "png"))
    (stream_root / "spool").mkdir()
    (stream_root / "spool" / "dropped-by-hand.png").write_bytes(image_bytes("doom", 999, "png"))
    cfg = make_config(stream_root, trained_model_dir, max_files_per_trigger=4)
    summary = run_stream(spark, cfg)
    # PySpark 4.1: an available-now run is one batch of what was there (streaming.spool_source)
    assert summary.rows == 17 and summary.batches >= 1
    preds = read_table(stream_root / "output", "predictions").to_pandas()
    assert sorted(preds["origin"]) == sorted([*names, "dropped-by-hand.png"])
    assert list((stream_root / "spool").iterdir()) == []

    spark_ck = stream_root / "checkpoints" / "spark"
    assert not (spark_ck / "sources").exists() or _tree_bytes(spark_ck / "sources")[1] == 0  # binaryFile's per-file log
    offsets = sorted((p for p in (spark_ck / "offsets").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(offsets) == summary.batches
    for p in offsets:  # each batch's source offset is one number, whatever the files
        source_line = p.read_text().strip().splitlines()[-1]
        assert list(json.loads(source_line)) == ["seq"]
        assert ".png" not in p.read_text()
    sizes = {p.stat().st_size for p in offsets}
    assert max(sizes) - min(sizes) <= 2, "offset entries do not grow with the files read"
    # a second run over more files adds batches of the same size, and no per-file state
    for i in range(8):
        (inbox / f"t{i}.png").write_bytes(image_bytes("cats", 950 + i, "png"))
    run_stream(spark, cfg)
    assert len(read_table(stream_root / "output", "predictions")) == 25
    assert not (spark_ck / "sources").exists() or _tree_bytes(spark_ck / "sources")[1] == 0


def test_checkpoint_of_one_folder_source_is_refused_by_the_other(stream_root, tmp_path):
    from streaming.query import CHECKPOINT_IDENTITY, run_stream

    model_dir = tmp_path / "no-model-needed"  # refused before the model is loaded
    cfg = make_config(stream_root, model_dir, checkpoint=tmp_path / "ck")
    cfg.checkpoint.mkdir()
    ident = cfg.identity()
    assert ident["folder_impl"] == "spool"
    (cfg.checkpoint / CHECKPOINT_IDENTITY).write_text(json.dumps({**ident, "writer": "folder_abc123"}))
    other = make_config(stream_root, model_dir, checkpoint=tmp_path / "ck", folder_impl="binaryfile")
    with pytest.raises(CheckpointError, match="folder_impl: checkpoint has 'spool', this run has 'binaryfile'"):
        run_stream(None, other)  # refused before Spark is touched
    # a checkpoint written before the spool source existed was binaryFile's
    legacy = {k: v for k, v in ident.items() if k != "folder_impl"}
    (cfg.checkpoint / CHECKPOINT_IDENTITY).write_text(json.dumps({**legacy, "writer": "folder_abc123"}))
    with pytest.raises(CheckpointError, match="checkpoint has 'binaryfile', this run has 'spool'"):
        run_stream(None, cfg)


@pytest.mark.parametrize("n, parts, sizes", [
    (10, 4, [3, 3, 2, 2]),
    (9, 8, [2, 1, 1, 1, 1, 1, 1, 1]),  # rounding the size up gave 5 tasks of 2 (and one of 1)
    (3, 8, [1, 1, 1]),  # a small batch: one file per task
    (1, 2, [1]),
    (1000, 2, [500, 500]),
])
def test_split_even_keeps_order_and_gives_every_task_a_fair_share(n, parts, sizes):
    names = [f"{i:03d}" for i in range(n)]
    chunks = split_even(names, parts)
    assert [len(c) for c in chunks] == sizes
    assert [x for c in chunks for x in c] == names


def test_partitions_use_as_many_tasks_as_asked_when_there_are_files_for_them(tmp_path):
    spool, _ = _spool(tmp_path, 9)
    reader = SpoolStreamReader(spool, max_files=100, num_partitions=8, keep_processed=False)
    end = reader.latestOffset()
    parts = reader.partitions({"seq": 0}, end)
    assert len(parts) == 8 and sorted(len(p.names) for p in parts) == [1] * 7 + [2]


def _spool_query(spark, spool, tmp_path, available_now: bool, max_files: int = 3):
    from streaming.spool_source import register

    register(spark)
    df = (spark.readStream.format("memestream-spool")
          .option("maxFilesPerTrigger", str(max_files)).option("keepProcessed", "true")
          .option("availableNow", str(available_now).lower()).load(str(spool)))
    writer = (df.writeStream.format("parquet").option("path", str(tmp_path / "out"))
              .option("checkpointLocation", str(tmp_path / "ck")))
    # --available-now is the processing-time trigger over a reader with a fixed target
    # (streaming.query.bounded_by_us): Spark 4.1's availableNow trigger gives a Python source no read limit
    return writer.trigger(processingTime="100 milliseconds")


def _drain(writer) -> list[int]:
    """Start the query, run it until nothing is new, stop it: the rows of each batch that had any."""
    q = writer.start()
    try:
        q.processAllAvailable()
    finally:
        q.stop()
    return [p["numInputRows"] for p in q.recentProgress if p["numInputRows"]]


def test_through_spark_batches_are_capped_restarts_resume_and_available_now_drains(spark, tmp_path):
    """The reader under Spark 4.1's engine itself (parquet sink, no scoring): capped batches, a
    restart from the checkpoint that keeps the cap and repeats nothing, and an available-now run."""
    spool, mover = _spool(tmp_path, 7)
    sizes = _drain(_spool_query(spark, spool, tmp_path, available_now=False))
    assert sum(sizes) == 7 and max(sizes) <= 3, sizes
    for i in range(5):
        (mover.inbox / f"g{i}.jpg").write_bytes(b"g")
    mover.sweep(settle=0)
    sizes = _drain(_spool_query(spark, spool, tmp_path, available_now=False))  # restart: same checkpoint
    assert sum(sizes) == 5 and max(sizes) <= 3, sizes
    for i in range(4):
        (mover.inbox / f"h{i}.jpg").write_bytes(b"h")
    mover.sweep(settle=0)
    q = _spool_query(spark, spool, tmp_path, available_now=True).start()
    try:
        q.processAllAvailable()  # the run's target: what the spool held when the query started
        (mover.inbox / "late.jpg").write_bytes(b"l")
        mover.sweep(settle=0)
        q.processAllAvailable()
    finally:
        q.stop()
    assert q.exception() is None
    sizes = [p["numInputRows"] for p in q.recentProgress if p["numInputRows"]]
    assert sum(sizes) == 4 and max(sizes) <= 3, sizes  # capped, and never the late file
    paths = [r.path for r in spark.read.parquet(str(tmp_path / "out")).collect()]
    assert len(paths) == len(set(paths)) == 16
