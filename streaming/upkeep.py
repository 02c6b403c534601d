"""Keep the Delta tables bounded: compaction, retention and VACUUM, inside the stream or as ``meme-compact``.

A stream appends a few small files per table and batch. Delta's ``OPTIMIZE`` rewrites the
recent days' small files into large ones (readers keep seeing one consistent snapshot; blind
appends of a running stream never conflict with it), ``--retention-days`` deletes whole old
days (``DELETE ... WHERE date < ...``) except each writer's newest recorded batch and anything
after it (:func:`replayable`), and ``VACUUM`` removes the files those left behind once
``delta.deletedFileRetentionDuration`` has passed. Each pass ends with a checkpoint of the
table's log, which also drops log files older than ``delta.logRetentionDuration``
(:func:`checkpoint_log`). Delta would otherwise write that checkpoint inside the commit that
reaches ``delta.checkpointInterval``: a Spark job of 1-1.5 s (0.27 s for the commit itself) on
the batch that happens to make that commit, on all of a batch's tables at once, since they
commit in step. That was the light-load latency's tail; the interval now only backs up an
output with no upkeep (``streaming.sinks.TABLE_PROPERTIES``).

``meme-compact --convert`` turns an output folder of the older plain-Parquet layout into Delta
tables once.
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence

from memestream.abspath import absolute
from memestream.cli import add_common_flags, env_flag, one_line, positive_int, run_main
from memestream.errors import ConfigError
from streaming.schema import WRITER

log = logging.getLogger(__name__)

#: OPTIMIZE only the newest days: older ones were compacted when they were new.
OPTIMIZE_DAYS = 2
#: Spark's scheduler pool the stream's upkeep jobs run in (``spark.scheduler.mode=FAIR``), so a
#: long OPTIMIZE does not hold the cores a micro-batch is waiting for.
POOL = "upkeep"


@dataclass(frozen=True)
class UpkeepConfig:
    """What one upkeep pass does, on which output."""

    output: str
    tables: tuple[str, ...] = ()
    retention_days: int | None = None
    optimize: bool = True
    vacuum: bool = True
    checkpoint: bool = True

    def __post_init__(self) -> None:
        from streaming.schema import TABLES

        object.__setattr__(self, "output", absolute(os.fspath(self.output)))
        if not self.tables:
            object.__setattr__(self, "tables", TABLES)
        for t in self.tables:
            if t not in TABLES:
                raise ConfigError(f"--table must be one of {', '.join(TABLES)}, found {t!r}")
        if self.retention_days is not None and self.retention_days < 1:
            raise ConfigError(f"--retention-days expects at least 1, found {self.retention_days}")


@dataclass
class TableResult:
    table: str
    files_before: int = 0
    files_after: int = 0
    deleted_rows: int = 0
    vacuumed: int = 0
    checkpoint_version: int | None = None
    seconds: float = 0.0
    note: str = ""


def _files(spark, uri: str) -> int:  # noqa: ANN001
    return int(spark.sql(f"DESCRIBE DETAIL delta.`{uri}`").collect()[0]["numFiles"] or 0)


def replayable(spark, batches_uri: str) -> dict[str, int]:  # noqa: ANN001
    """Per writer, the first batch id Spark may still replay: its newest recorded batch.

    A replayed batch is skipped because its rows are found in the table
    (:meth:`streaming.sinks.DeltaOutput.has_batch`), so retention must not delete rows a replay
    could still ask about. Spark starts batch N only after its checkpoint committed batch N-1,
    so once a writer recorded batch R, every batch below R is final and only R (its commit may
    not have reached the checkpoint) or later can come again."""
    rows = spark.sql(f"SELECT {WRITER}, MAX(batch_id) AS r FROM delta.`{batches_uri}` "
                     f"WHERE {WRITER} IS NOT NULL GROUP BY {WRITER}").collect()
    return {r[0]: int(r[1]) for r in rows if r[1] is not None}


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def retention_condition(cutoff: date, keep_from: dict[str, int]) -> str:
    """Rows of days before ``cutoff``, except those of a batch a writer may still replay
    (``batch_id >= keep_from[writer]``). A writer with no recorded batch keeps nothing: its
    rows are older than the cutoff and none of its batches completed, so it is gone."""
    condition = f"date < DATE'{cutoff.isoformat()}'"
    if not keep_from:
        return condition
    pairs = ", ".join(f"{_sql_string(w)}, CAST({int(b)} AS BIGINT)" for w, b in sorted(keep_from.items()))
    return (f"{condition} AND (batch_id IS NULL OR {WRITER} IS NULL OR "
            f"batch_id < coalesce(element_at(map({pairs}), {WRITER}), CAST({2 ** 63 - 1} AS BIGINT)))")


def upkeep_table(spark, uri: str, table: str, config: UpkeepConfig, today: date | None = None,  # noqa: ANN001
                 keep_from: dict[str, int] | None = None) -> TableResult:
    """One pass over one table: retention DELETE (sparing ``keep_from``, see :func:`replayable`),
    OPTIMIZE of recent days, VACUUM."""
    started = time.monotonic()
    today = today or datetime.now(timezone.utc).date()
    result = TableResult(table, files_before=_files(spark, uri))
    if config.retention_days is not None:
        cutoff = today - timedelta(days=config.retention_days)
        condition = retention_condition(cutoff, keep_from or {})
        rows = spark.sql(f"DELETE FROM delta.`{uri}` WHERE {condition}").collect()
        result.deleted_rows = int(rows[0][0]) if rows and rows[0][0] is not None else 0
    if config.optimize:
        since = today - timedelta(days=OPTIMIZE_DAYS)
        spark.sql(f"OPTIMIZE delta.`{uri}` WHERE date >= DATE'{since.isoformat()}'").collect()
    if config.vacuum:
        # VACUUM answers with the table's path only; the files it deleted are in its VACUUM END commit
        before = int(spark.sql(f"DESCRIBE HISTORY delta.`{uri}` LIMIT 1").collect()[0]["version"])
        spark.sql(f"VACUUM delta.`{uri}` LITE").collect()
        ends = (spark.sql(f"DESCRIBE HISTORY delta.`{uri}` LIMIT 50")
                .where(f"version > {before} AND operation = 'VACUUM END'").collect())
        result.vacuumed = sum(int((r["operationMetrics"] or {}).get("numDeletedFiles") or 0) for r in ends)
    result.files_after = _files(spark, uri)
    if config.checkpoint:
        result.checkpoint_version = checkpoint_log(spark, uri)
    result.seconds = time.monotonic() - started
    return result


def checkpoint_log(spark, uri: str) -> int | None:  # noqa: ANN001
    """Checkpoint the table's Delta log at its newest version and drop the log files older than
    ``delta.logRetentionDuration``: what Delta's post-commit hook does every
    ``delta.checkpointInterval`` commits, done here, off the stream's batches. Delta has no SQL
    command for it, so this calls ``DeltaLog`` (Delta 4.4, pinned with the Spark stack); if that
    call fails, the table's own interval still checkpoints, so it is logged, not raised.
    Returns the version checkpointed."""
    try:
        jvm = spark._jvm
        none = jvm.scala.Option.empty()
        delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, uri)
        snapshot = delta_log.update(False, none, none)
        if snapshot.version() < 0:
            raise FileNotFoundError(f"no Delta table at {uri}")
        delta_log.checkpointAndCleanUpDeltaLog(snapshot, none)
        return int(snapshot.version())
    except Exception as exc:  # noqa: BLE001 - py4j errors: the interval is the fallback
        log.warning("could not checkpoint the Delta log of %s (%s); Delta's checkpointInterval still does",
                    uri, one_line(str(exc)))
        return None


def run_upkeep(spark, config: UpkeepConfig, today: date | None = None) -> list[TableResult]:  # noqa: ANN001
    """One pass over every configured table (tables that do not exist yet are skipped)."""
    from streaming.schema import BATCHES, is_delta_table, table_uri

    def exists(uri: str) -> bool:
        local = not ("://" in uri) or uri.startswith("file:")
        return not local or is_delta_table(uri)

    keep_from: dict[str, int] = {}
    if config.retention_days is not None and exists(table_uri(config.output, BATCHES)):
        # read once, before any DELETE: a batch recorded meanwhile only makes this keep more
        keep_from = replayable(spark, table_uri(config.output, BATCHES))
    out = []
    for table in config.tables:
        uri = table_uri(config.output, table)
        if not exists(uri):
            out.append(TableResult(table, note="no table yet"))
            continue
        out.append(upkeep_table(spark, uri, table, config, today, keep_from))
    return out


class StreamUpkeep:
    """Runs :func:`run_upkeep` in a background thread every ``every_batches`` recorded batches or
    ``every_s`` seconds (when something was recorded since), whichever comes first."""

    def __init__(self, spark, config: UpkeepConfig, committed: Callable[[], int],  # noqa: ANN001
                 every_batches: int | None = 50, every_s: float | None = 600.0) -> None:
        self.spark = spark
        self.config = config
        self.committed = committed
        self.every_batches = every_batches
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_batches = 0
        self._last_time = time.monotonic()
        self.passes: list[list[TableResult]] = []

    def start(self) -> "StreamUpkeep":
        self._thread = threading.Thread(target=self._loop, name="memestream-upkeep", daemon=True)
        self._thread.start()
        return self

    def due(self) -> bool:
        done = self.committed()
        if done <= self._last_batches:
            return False
        if self.every_batches is not None and done - self._last_batches >= self.every_batches:
            return True
        return self.every_s is not None and time.monotonic() - self._last_time >= self.every_s

    def run_once(self) -> list[TableResult]:
        self._last_batches, self._last_time = self.committed(), time.monotonic()
        sc = self.spark.sparkContext
        sc.setLocalProperty("spark.scheduler.pool", POOL)
        try:
            results = run_upkeep(self.spark, self.config)
        finally:
            sc.setLocalProperty("spark.scheduler.pool", None)
        self.passes.append(results)
        for r in results:
            if not r.note:
                log.info("upkeep %s: %d -> %d files, %d old rows deleted, %.1fs", r.table, r.files_before,
                         r.files_after, r.deleted_rows, r.seconds)
        return results

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            if self.due():
                try:
                    self.run_once()
                except Exception as exc:  # noqa: BLE001 - upkeep must never stop the stream; next pass retries
                    log.warning("output upkeep failed (next pass retries): %s", one_line(exc))

    def stop(self, final_pass: bool = False, timeout: float = 300.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_pass and self.committed() > self._last_batches:  # anything recorded since the last pass
            self.run_once()


# ---------------------------------------------------------------------------------------
# meme-compact --convert: the older plain-Parquet layout -> Delta tables
# ---------------------------------------------------------------------------------------
def convert_output(spark, output: str) -> dict[str, int]:  # noqa: ANN001
    """Rewrite each plain-Parquet table folder under ``output`` as a Delta table; the old files
    move to a hidden ``.<table>-parquet`` folder beside it. Returns rows per converted table."""
    from pyspark.sql import functions as F

    from streaming.schema import COLUMNS, DATE, TABLES, WRITER, is_delta_table, table_dir, table_uri
    from streaming.sinks import DeltaOutput

    root = Path(output)
    legacy: dict[str, Path] = {}
    for table in TABLES:  # every old folder aside first: ensure_tables refuses a plain-Parquet one
        folder = table_dir(output, table)
        if not folder.is_dir() or is_delta_table(folder) or not any(folder.iterdir()):
            continue
        old = root / f".{table}-parquet"
        if old.exists():
            raise ConfigError(f"{old} exists from an earlier conversion; move it away first")
        os.replace(folder, old)
        legacy[table] = old
    if legacy:
        DeltaOutput(output, "converted").ensure_tables(spark)
    converted: dict[str, int] = {}
    for table, old in legacy.items():
        df = spark.read.option("basePath", str(old)).parquet(str(old))
        for name, kind in COLUMNS[table]:
            if name not in df.columns:
                df = df.withColumn(name, F.lit("converted" if name == WRITER else None).cast(kind))
        df = df.withColumn(DATE, F.col(DATE).cast("date")).select(*[n for n, _ in COLUMNS[table]], DATE)
        df.write.format("delta").mode("append").option("mergeSchema", "true").save(table_uri(output, table))
        converted[table] = spark.read.format("delta").load(table_uri(output, table)).count()
    for leftover in (root / "_commits", root / ".lock"):
        if leftover.is_dir():
            os.replace(leftover, root / "._commits-parquet")
        elif leftover.exists():
            leftover.unlink()
    return converted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-compact",
        description="Upkeep of meme-stream's Delta tables, once: OPTIMIZE the recent days' small files, delete "
        "days older than --retention-days, VACUUM what those left behind. Safe while the stream runs (it does "
        "the same every --compact-every-batches). --convert turns an older plain-Parquet output into Delta tables.",
        epilog="examples:\n  meme-compact --output out\n  meme-compact --output out --retention-days 30\n"
        "  meme-compact --output out --convert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", required=True,
             help="meme-stream's --output (a folder or a Hadoop URI)")
    parser.add_argument("--table", action="append", default=None, help="only this table (repeatable; default: all)")
    env_flag(parser, "--retention-days", envvar="MEMESTREAM_RETENTION_DAYS", type=positive_int, default=None,
             help="delete rows of days older than D days (default: keep everything)")
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")
    parser.add_argument("--convert", action="store_true",
                        help="convert an output folder written by an older meme-stream (plain Parquet) to Delta tables")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master URL (default: local[*])")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> UpkeepConfig:
    return UpkeepConfig(args.output, tuple(args.table or ()), args.retention_days, vacuum=not args.no_vacuum)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from memestream.spark import session_for, stop_spark
    from streaming.schema import check_output_dir

    check_output_dir(config.output)  # a mistyped --output: one line, before Spark starts

    spark, created = session_for("meme-compact", master=args.master)
    try:
        if args.convert:
            done = convert_output(spark, config.output)
            for table, rows in done.items():
                print(f"{table}: converted to a Delta table ({rows} rows)")
            if not done:
                print(f"nothing to convert in {config.output}")
            return 0
        for r in run_upkeep(spark, config):
            print(f"{r.table}: {r.note}" if r.note else
                  f"{r.table}: {r.files_before} -> {r.files_after} files, {r.deleted_rows} old rows deleted ({r.seconds:.1f}s)")
        return 0
    finally:
        if created:
            stop_spark(spark)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
