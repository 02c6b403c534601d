"""streaming.upkeep: retention DELETE, OPTIMIZE and VACUUM of the Delta tables, the in-stream
thread, the conversion of the older plain-Parquet layout, and the ``meme-compact`` CLI."""
from __future__ import annotations

import logging
import os
import queue
import re
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from memestream.errors import ConfigError
from streaming import upkeep as upkeep_mod
from streaming.schema import BATCHES, CLASS_COUNTS, COLUMNS, PREDICTIONS, QUARANTINE, TABLES, WRITER, ddl, is_delta_table
from streaming.sinks import BatchRecord, DeltaOutput
from streaming.upkeep import OPTIMIZE_DAYS, StreamUpkeep, UpkeepConfig, convert_output, retention_condition, run_upkeep

TODAY = date(2026, 11, 29)
RECENT = TODAY - timedelta(days=1)  # inside OPTIMIZE's window
OLDER = TODAY - timedelta(days=OPTIMIZE_DAYS + 3)  # outside it, inside a 7-day retention
OLD = TODAY - timedelta(days=9)  # outside a 3-day retention
PRED_DDL = "image_id string, label string, confidence double, batch_id bigint, writer string, date date"
COUNTS_DDL = "window_start timestamp, label string, count bigint, batch_id bigint, writer string, date date"


def _predictions(spark, batch_id: int, day: date, n: int = 3, writer: str = "folder_a1"):
    rows = [(f"{batch_id}-{i}", ("doom", "cats")[i % 2], 0.5 + i / 10, batch_id, writer, day) for i in range(n)]
    return spark.createDataFrame(rows, PRED_DDL).coalesce(1)  # one file per append and date


def _counts(spark, batch_id: int, day: date, writer: str = "folder_a1"):
    start = datetime(day.year, day.month, day.day, 10)
    return spark.createDataFrame([(start, "doom", batch_id + 1, batch_id, writer, day)], COUNTS_DDL).coalesce(1)


def _ids(spark, out: DeltaOutput, table: str = PREDICTIONS) -> list[str]:
    return sorted(str(r[0]) for r in spark.read.format("delta").load(out.uri(table)).select(
        "image_id" if table == PREDICTIONS else "batch_id").collect())


def _live_files(out: DeltaOutput, table: str = PREDICTIONS, day: date | None = None) -> int:
    """Files the table's current version references (deltalake reads the log, not the folder)."""
    uris = DeltaTable(out.uri(table)).file_uris()
    return len([u for u in uris if day is None or f"date={day.isoformat()}" in u])


def _disk_files(out: DeltaOutput, table: str = PREDICTIONS) -> int:
    """Parquet data files in the table's folder, referenced or not (the log's checkpoints left out)."""
    folder = Path(out.uri(table))
    return len([p for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts])


@pytest.fixture()
def out(spark, tmp_path):
    output = DeltaOutput(tmp_path / "out", "folder_a1")
    output.ensure_tables(spark)
    return output


@pytest.fixture()
def small_files(spark, out):
    """predictions: batches 0-5 on RECENT and 6-8 on OLDER, one file per batch."""
    for b in range(6):
        out.append(_predictions(spark, b, RECENT), PREDICTIONS, b)
    for b in range(6, 9):
        out.append(_predictions(spark, b, OLDER), PREDICTIONS, b)
    assert _live_files(out) == 9
    return out


def test_optimize_compacts_the_recent_days_and_keeps_every_row(spark, small_files):
    out = small_files
    before = _ids(spark, out)
    [result] = run_upkeep(spark, UpkeepConfig(out.root, tables=(PREDICTIONS,), vacuum=False), today=TODAY)
    assert (result.table, result.files_before, result.files_after, result.note) == (PREDICTIONS, 9, 4, "")
    assert _live_files(out, day=RECENT) == 1
    assert _live_files(out, day=OLDER) == 3  # older days were compacted when they were new
    assert _ids(spark, out) == before and len(before) == 27
    # the batch's rows survive the rewrite: a replay still finds them and is skipped
    out.append(_predictions(spark, 4, RECENT), PREDICTIONS, 4)
    assert _ids(spark, out) == before


def _checkpoints(out: DeltaOutput, table: str = PREDICTIONS) -> list[int]:
    log_dir = Path(out.uri(table)) / "_delta_log"
    return sorted(int(p.name.split(".")[0]) for p in log_dir.glob("*.checkpoint.parquet"))


def test_the_upkeep_pass_checkpoints_the_log_and_the_appends_do_not(spark, small_files, caplog):
    """Delta's own checkpoint runs inside a commit (1-1.5 s on that batch); the upkeep pass
    writes it instead, at the table's newest version."""
    out = small_files
    assert _checkpoints(out) == []  # 10 commits: none of the appends paid for a checkpoint
    [result] = run_upkeep(spark, UpkeepConfig(out.root, tables=(PREDICTIONS,), vacuum=False), today=TODAY)
    version = DeltaTable(out.uri(PREDICTIONS)).version()
    assert result.checkpoint_version == version and _checkpoints(out) == [version]
    assert len(_ids(spark, out)) == 27
    # a failed call is a warning, not a failed pass: the table's checkpointInterval still checkpoints
    with caplog.at_level(logging.WARNING, logger="streaming.upkeep"):
        assert upkeep_mod.checkpoint_log(spark, os.path.join(out.root, "no-such-table")) is None
        assert upkeep_mod.checkpoint_log(spark, "nosuchfs://bucket/predictions") is None
    assert caplog.text.count("could not checkpoint the Delta log") == 2
    assert not os.path.exists(os.path.join(out.root, "no-such-table"))  # nothing written where no table was


def test_vacuum_removes_replaced_files_once_their_retention_passed(spark, small_files):
    out = small_files
    config = UpkeepConfig(out.root, tables=(PREDICTIONS,))
    [first] = run_upkeep(spark, config, today=TODAY)
    # OPTIMIZE replaced 6 files by 1; delta.deletedFileRetentionDuration (1 day) keeps them on disk
    assert first.files_after == 4 and first.vacuumed == 0
    assert _disk_files(out) == 10
    spark.sql(f"ALTER TABLE delta.`{out.uri(PREDICTIONS)}` SET TBLPROPERTIES "
              "('delta.deletedFileRetentionDuration' = 'interval 0 hours')")
    [second] = run_upkeep(spark, UpkeepConfig(out.root, tables=(PREDICTIONS,), optimize=False), today=TODAY)
    assert second.vacuumed == 6
    assert _disk_files(out) == _live_files(out) == 4
    assert len(_ids(spark, out)) == 27


def test_retention_deletes_the_days_older_than_retention_days(spark, out):
    for b in range(3):
        out.append(_predictions(spark, b, OLD if b == 0 else RECENT), PREDICTIONS, b)
        out.append(_counts(spark, b, OLD if b < 2 else RECENT), CLASS_COUNTS, b)
        out.record_batch(spark, BatchRecord(b, rows=3, label_totals={"doom": 2, "cats": 1}))
    results = {r.table: r for r in run_upkeep(spark, UpkeepConfig(out.root, retention_days=3), today=TODAY)}
    assert set(results) == set(TABLES) and not any(r.note for r in results.values())
    assert results[PREDICTIONS].deleted_rows == 3 and results[CLASS_COUNTS].deleted_rows == 2
    assert results[QUARANTINE].deleted_rows == 0 and results[BATCHES].deleted_rows == 0  # recorded today, UTC
    assert _ids(spark, out) == ["1-0", "1-1", "1-2", "2-0", "2-1", "2-2"]
    assert _ids(spark, out, CLASS_COUNTS) == ["2"]
    assert out.last_batch(spark).batch_id == 2
    # the exact day boundary: rows of TODAY - 3 are kept, older ones go
    for b, day in ((3, TODAY - timedelta(days=3)), (4, TODAY - timedelta(days=4)), (5, TODAY)):
        out.append(_predictions(spark, b, day), PREDICTIONS, b)
        out.record_batch(spark, BatchRecord(b, rows=3))
    run_upkeep(spark, UpkeepConfig(out.root, tables=(PREDICTIONS,), retention_days=3, optimize=False), today=TODAY)
    assert [i for i in _ids(spark, out) if i[0] in "345"] == ["3-0", "3-1", "3-2", "5-0", "5-1", "5-2"]


def test_retention_keeps_the_batch_a_writer_may_replay(spark, out):
    """Spark can replay only a writer's newest recorded batch (or a later one), and the replay is
    skipped because its rows are found: retention keeps those rows however old they are."""
    other = DeltaOutput(out.root, "kafka_b2")
    for b in (6, 7, 8):  # 8 was appended, then the stream died before recording it
        other.append(_predictions(spark, b, OLD, writer=other.writer), PREDICTIONS, b)
    for b in (6, 7):  # recorded on an old day too: the batches table has retention like any other
        row = BatchRecord(b, rows=3).row(other.writer, datetime(OLD.year, OLD.month, OLD.day, 12))
        other.append(spark.createDataFrame([row], ddl(BATCHES)), BATCHES, b)
    out.append(_predictions(spark, 0, OLD, writer="converted"), PREDICTIONS, 0)  # no batch recorded: it goes
    results = {r.table: r for r in run_upkeep(spark, UpkeepConfig(out.root, retention_days=3), today=TODAY)}
    assert results[PREDICTIONS].deleted_rows == 6 and results[BATCHES].deleted_rows == 1
    assert _ids(spark, out) == ["7-0", "7-1", "7-2", "8-0", "8-1", "8-2"]
    assert other.last_batch(spark).batch_id == 7
    assert not other.append(_predictions(spark, 7, OLD, writer=other.writer), PREDICTIONS, 7)  # the replay
    assert not other.append(_predictions(spark, 8, OLD, writer=other.writer), PREDICTIONS, 8)
    assert len(_ids(spark, out)) == 6


def test_the_retention_condition_names_each_writer_once_and_quotes_it():
    assert retention_condition(OLD, {}) == f"date < DATE'{OLD.isoformat()}'"
    cond = retention_condition(OLD, {"b": 3, "it's": 9})
    assert "map('b', CAST(3 AS BIGINT), 'it\\'s', CAST(9 AS BIGINT))" in cond and cond.count("element_at") == 1


def test_upkeep_while_a_stream_appends_loses_and_duplicates_nothing(spark, out):
    """OPTIMIZE, DELETE and VACUUM commit new versions while the stream's blind appends go on."""
    for b in range(3):
        out.append(_predictions(spark, b, RECENT), PREDICTIONS, b)
    out.append(_predictions(spark, 3, OLD), PREDICTIONS, 3)
    errors: list[BaseException] = []

    def stream():
        try:
            for b in range(4, 10):
                out.append(_predictions(spark, b, RECENT), PREDICTIONS, b)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=stream)
    thread.start()
    rounds = 0
    config = UpkeepConfig(out.root, tables=(PREDICTIONS,), retention_days=3)
    while thread.is_alive() or rounds < 2:
        run_upkeep(spark, config, today=TODAY)
        rounds += 1
    thread.join()
    assert not errors, errors
    ids = _ids(spark, out)
    assert ids == sorted(f"{b}-{i}" for b in (0, 1, 2, 4, 5, 6, 7, 8, 9) for i in range(3))
    run_upkeep(spark, config, today=TODAY)
    assert _live_files(out) == 1 and _ids(spark, out) == ids


def test_config_checks_and_tables_not_there_yet(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert UpkeepConfig("out").output == str(tmp_path / "out")  # absolute once, at parse time
    assert UpkeepConfig("out").tables == TABLES
    with pytest.raises(ConfigError, match="--table must be one of .*found 'nope'"):
        UpkeepConfig("out", tables=("nope",))
    with pytest.raises(ConfigError, match="--retention-days expects at least 1"):
        UpkeepConfig("out", retention_days=0)
    (tmp_path / "empty").mkdir()
    results = run_upkeep(spark, UpkeepConfig("empty"))
    assert [(r.table, r.note) for r in results] == [(t, "no table yet") for t in TABLES]
    assert not any(is_delta_table(tmp_path / "empty" / t) for t in TABLES)  # upkeep creates nothing


# ---------------------------------------------------------------------------------------
# The in-stream thread
# ---------------------------------------------------------------------------------------
def test_stream_upkeep_is_due_after_n_batches_or_time_with_something_new(spark, tmp_path):
    (tmp_path / "empty").mkdir()
    committed = [0]
    every3 = StreamUpkeep(spark, UpkeepConfig(tmp_path / "empty"), lambda: committed[0], every_batches=3, every_s=None)
    assert not every3.due()  # nothing recorded yet
    committed[0] = 2
    assert not every3.due()
    committed[0] = 3
    assert every3.due()
    every3.run_once()
    assert len(every3.passes) == 1 and not every3.due()
    assert spark.sparkContext.getLocalProperty("spark.scheduler.pool") is None  # the pool is the pass's only
    committed[0] = 5
    assert not every3.due()
    timed = StreamUpkeep(spark, UpkeepConfig(tmp_path / "empty"), lambda: committed[0], every_batches=None, every_s=0.0)
    assert timed.due()
    timed.run_once()
    assert not timed.due()  # however much time passed: nothing new since the last pass
    committed[0] = 6
    assert timed.due()


def test_stream_upkeep_thread_survives_a_failed_pass_and_stops_with_a_final_one(spark, out, monkeypatch, caplog):
    today = datetime.now(timezone.utc).date()  # the thread's passes use the real date
    for b in range(4):
        out.append(_predictions(spark, b, today), PREDICTIONS, b)
    real = upkeep_mod.run_upkeep
    passes: queue.Queue = queue.Queue()
    pools: list[str | None] = []

    def observed(spark_, config, today=None):  # noqa: ANN001
        pools.append(spark_.sparkContext.getLocalProperty("spark.scheduler.pool"))
        if len(pools) == 1:
            passes.put("failed")
            raise OSError("disk trouble")
        results = real(spark_, config, today)
        passes.put(results)
        return results

    monkeypatch.setattr(upkeep_mod, "run_upkeep", observed)
    committed = [0]
    config = UpkeepConfig(out.root, tables=(PREDICTIONS,), vacuum=False)
    keeper = StreamUpkeep(spark, config, lambda: committed[0], every_batches=3, every_s=None).start()
    try:
        committed[0] = 3
        assert passes.get(timeout=300) == "failed"
        assert keeper._thread.is_alive()  # a failed pass never stops the thread (nor the stream)
        committed[0] = 6
        [result] = passes.get(timeout=300)
        assert (result.files_before, result.files_after) == (4, 1)
        committed[0] = 7  # not due (every 3 batches) but recorded since the last pass
    finally:
        keeper.stop(final_pass=True)
    assert not keeper._thread.is_alive()
    assert len(keeper.passes) == 2 and passes.qsize() == 1  # the final pass ran, on the stopping thread
    assert pools == ["upkeep"] * 3  # Spark's FAIR pool of upkeep jobs
    assert spark.sparkContext.getLocalProperty("spark.scheduler.pool") is None
    assert any("output upkeep failed" in r.getMessage() and "disk trouble" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    keeper.stop(final_pass=True)  # nothing recorded since: no further pass
    assert len(keeper.passes) == 2


# ---------------------------------------------------------------------------------------
# meme-compact --convert, and the CLI
# ---------------------------------------------------------------------------------------
def _old_columns(table: str) -> pa.Schema:
    """A table's columns as the older plain-Parquet sink wrote them: no writer, no date."""
    from streaming.schema import arrow_schema

    return pa.schema([f for f in arrow_schema(table) if f.name not in (WRITER, "date")])


def _old_layout(root: Path) -> None:
    """An output folder of the older meme-stream: date= folders, _commits markers, the .lock."""
    stamp = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
    for day, batch, n in (("2026-11-26", 1, 2), ("2026-11-27", 2, 3)):
        folder = root / PREDICTIONS / f"date={day}"
        folder.mkdir(parents=True)
        rows = [{"image_id": f"{batch}-{i}", "label": "doom", "confidence": 0.9, "event_time": stamp, "batch_id": batch}
                for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows, schema=_old_columns(PREDICTIONS)), folder / f"part-main-{batch:010d}.parquet")
    retired = root / PREDICTIONS / ".date=2026-11-26.retired-1790000000-abc123"  # a compaction's leftover
    retired.mkdir()
    pq.write_table(pa.Table.from_pylist([{"image_id": "ghost"}], schema=_old_columns(PREDICTIONS)), retired / "part-main-0000000001.parquet")
    counts = root / CLASS_COUNTS / "date=2026-11-27"
    counts.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"window_start": stamp, "label": "doom", "count": 5, "batch_id": 2}],
                                        schema=_old_columns(CLASS_COUNTS)), counts / "part-main-0000000002.parquet")
    (root / QUARANTINE).mkdir()  # created, never written
    (root / "_commits" / "main").mkdir(parents=True)
    (root / "_commits" / "main" / "0000000002.json").write_text('{"batch_id": 2}')
    (root / ".lock").write_text("")


@pytest.fixture()
def cli(spark, monkeypatch):
    """meme-compact run in this process: it uses the test's session and must leave it running
    (it stops only a session it built)."""
    for var in ("MEMESTREAM_OUTPUT", "MEMESTREAM_RETENTION_DAYS", "SPARK_MASTER"):
        monkeypatch.delenv(var, raising=False)
    return spark


def _running(spark) -> bool:  # noqa: ANN001
    return not spark.sparkContext._jsc.sc().isStopped()


def test_convert_output_turns_the_old_layout_into_delta_tables(spark, tmp_path, cli, capsys):
    old = tmp_path / "old"
    _old_layout(old)
    assert upkeep_mod.main(["--output", str(old), "--convert"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["predictions: converted to a Delta table (5 rows)", "class_counts: converted to a Delta table (1 rows)"]
    assert _running(cli)  # the caller's session is left running
    assert all(is_delta_table(old / t) for t in TABLES)
    out = DeltaOutput(old, "folder_a1")
    out.ensure_tables(spark)  # no longer refused
    frame = spark.read.format("delta").load(out.uri(PREDICTIONS))
    rows = sorted(frame.select("image_id", "writer", "batch_id", "date").collect())
    assert [(r["image_id"], r["writer"], r["batch_id"], r["date"].isoformat()) for r in rows] == [
        ("1-0", "converted", 1, "2026-11-26"), ("1-1", "converted", 1, "2026-11-26"),
        ("2-0", "converted", 2, "2026-11-27"), ("2-1", "converted", 2, "2026-11-27"),
        ("2-2", "converted", 2, "2026-11-27")]  # the retired leftover ("ghost") is not data
    assert frame.columns == [n for n, _ in COLUMNS[PREDICTIONS]] + ["date"]
    assert DeltaTable(out.uri(PREDICTIONS)).metadata().partition_columns == ["date"]
    assert spark.read.format("delta").load(out.uri(CLASS_COUNTS)).collect()[0]["count"] == 5
    # the old files are kept aside, hidden from readers; the markers and the lock are gone from the top
    assert (old / ".predictions-parquet" / "date=2026-11-27" / "part-main-0000000002.parquet").is_file()
    assert (old / ".class_counts-parquet").is_dir() and not (old / ".quarantine-parquet").exists()
    assert (old / "._commits-parquet" / "main" / "0000000002.json").is_file()
    assert not (old / "_commits").exists() and not (old / ".lock").exists()
    # the tables take appends like any stream output
    out.append(_predictions(spark, 0, RECENT, n=1), PREDICTIONS, 0)
    assert len(_ids(spark, out)) == 6
    assert upkeep_mod.main(["--output", str(old), "--convert"]) == 0
    assert capsys.readouterr().out.strip() == f"nothing to convert in {old}"


def test_convert_refuses_to_overwrite_an_earlier_conversions_folder(spark, tmp_path):
    old = tmp_path / "old"
    _old_layout(old)
    (old / ".predictions-parquet").mkdir()
    with pytest.raises(ConfigError, match="exists from an earlier conversion"):
        convert_output(spark, str(old))
    assert (old / PREDICTIONS / "date=2026-11-27").is_dir() and not is_delta_table(old / PREDICTIONS)  # untouched


def test_cli_runs_one_pass_and_prints_a_line_per_table(spark, out, cli, capsys):
    today = datetime.now(timezone.utc).date()  # meme-compact uses the real date
    for b in range(3):
        out.append(_counts(spark, b, today), CLASS_COUNTS, b)
    out.append(_counts(spark, 3, today - timedelta(days=10)), CLASS_COUNTS, 3)
    assert upkeep_mod.main(["--output", out.root, "--table", CLASS_COUNTS, "--retention-days", "3", "--no-vacuum"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"class_counts: 4 -> 1 files, 1 old rows deleted \(\d+\.\ds\)", lines[0]), lines
    assert _running(cli)  # the caller's session is left running
    assert _ids(spark, out, CLASS_COUNTS) == ["0", "1", "2"]


@pytest.mark.parametrize("argv, expected", [
    (["--dry-run"], "unrecognized arguments: --dry-run"),
    (["--retention-days", "0"], "argument --retention-days: expected a positive integer, found 0"),
    (["--min-files", "50"], "unrecognized arguments: --min-files 50"),
])
def test_cli_flag_errors_are_one_argparse_line(tmp_path, cli, capsys, argv, expected):
    with pytest.raises(SystemExit) as caught:
        upkeep_mod.main(["--output", str(tmp_path), *argv])
    assert caught.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [f"meme-compact: error: {expected}"]
    assert _running(cli)


def test_cli_without_output_names_the_flag(cli, capsys):
    with pytest.raises(SystemExit) as caught:
        upkeep_mod.main([])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "meme-compact: error: the following arguments are required: --output"


@pytest.fixture()
def no_spark(monkeypatch):
    for var in ("MEMESTREAM_OUTPUT", "MEMESTREAM_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*a, **k):
        raise AssertionError("Spark started for a command that cannot run")

    monkeypatch.setattr("memestream.spark.build_spark", refuse)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meme-compact: error: "), err
    return err[0]


def test_cli_unknown_table_is_one_line_before_spark_starts(tmp_path, no_spark, capsys):
    assert upkeep_mod.main(["--output", str(tmp_path), "--table", "nope"]) == 2
    assert "--table must be one of predictions, quarantine, class_counts, batches, found 'nope'" in _one_error_line(capsys)


def test_cli_missing_output_is_one_line_before_spark_starts(tmp_path, no_spark, capsys):
    assert upkeep_mod.main(["--output", str(tmp_path / "missing")]) == 2
    line = _one_error_line(capsys)
    assert f"output folder {tmp_path / 'missing'} does not exist" in line
    assert upkeep_mod.main(["--output", str(tmp_path / "missing"), "--convert"]) == 2
    assert "does not exist" in _one_error_line(capsys)
