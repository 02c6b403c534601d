"""One micro-batch: score once, append the output tables exactly once, then move the inputs.

:class:`BatchProcessor` is the ``foreachBatch`` target. It scores the rows once (one decode per
image, kept on the executors for the batch's few jobs) and summarises them in one job
(:func:`batch_summary`), appends predictions, quarantine and window-count deltas to the Delta
tables side by side (:class:`streaming.sinks.DeltaOutput`, exactly once per writer and batch
id), and records the batch last. The driver sees only per-batch totals (a row per label and
event-time bucket) and, for the folder source, the paths to archive or quarantine.
:class:`LiveSummary` prints one line per batch.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from pyspark import InheritableThread, StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from memestream.decode import READ_ERROR
from memestream.errors import PoisonFlood
from memestream.isolation import DECODER_CRASHED, DECODER_TIMEOUT, failure_line, worker_died
from memestream.inputs import EMPTY_FILE_MARKER, local_path
from memestream.novelty import OOD_CODE, UNKNOWN_LABEL
from streaming.config import StreamConfig, WindowSpec
from streaming.counts import bucket_deltas, bucket_start, watermark_after, with_late
from streaming.models import ModelHolder
from streaming.schema import CLASS_COUNTS, DATE, PREDICTIONS, QUARANTINE, WRITER, column_names
from streaming.scoring import StreamScorer
from streaming.sinks import BatchRecord, DeltaOutput, local_frame

log = logging.getLogger(__name__)

#: ``on_stage(stage, batch_id)`` is called at these points of every batch: ``start`` (model
#: chosen, nothing written yet), ``predictions`` (that table appended; quarantine and class
#: counts, appended beside it, may or may not be), ``files`` (predictions, quarantine and
#: counts appended, the batch not recorded yet) and ``committed`` (its ``batches`` row
#: written, inputs not moved yet).
#: The moments a crash is worst: for instrumentation and fault injection (the exactly-once
#: tests kill the process at each).
STAGES = ("start", "predictions", "files", "committed")
StageHook = Callable[[str, int], None]


def counted_label() -> Column:
    """The label a row counts under: a rejected out-of-distribution image has no class, so it
    counts as "unknown", never as a class."""
    return F.when(F.col("error_code") == F.lit(OOD_CODE), F.lit(UNKNOWN_LABEL)).otherwise(F.col("label"))


@dataclass
class BatchResult:
    """What one committed batch did (for the live summary)."""

    batch_id: int
    rows: int
    errors: int
    late: int
    seconds: float
    labels: dict[str, int]
    model_version: str


def quarantine_target(cfg: StreamConfig, batch_id: int) -> Column:
    """Where a bad folder input goes after the commit (NULL for good rows, Kafka rows, and files
    that could not be read at all)."""
    if cfg.source != "folder" or cfg.quarantine_dir is None:
        return F.lit(None).cast("string")
    bad_file = F.col("error").isNotNull() & F.col("path").isNotNull() & ~F.col("error").startswith(READ_ERROR)
    target = F.concat(F.lit(f"{cfg.quarantine_dir}/b{batch_id:06d}-"), F.col("origin"))
    return F.when(bad_file, target)


def labelled_batch(scored: DataFrame, batch_id: int, writer: str, watermark: datetime | None, target: Column) -> DataFrame:
    """Scored rows -> every column any table of the batch takes (``late``, ids, counted label)."""
    return (
        scored.transform(lambda df: with_late(df, watermark))
        .withColumn("batch_id", F.lit(batch_id).cast("long"))
        .withColumn(WRITER, F.lit(writer))
        .withColumn("quarantine_path", target)
        .withColumn("counted_label", counted_label())
    )


@dataclass
class BatchSummary:
    """What the driver learns of a scored batch from its one aggregation job."""

    record: BatchRecord
    #: ``(bucket_s, counted_label, rows)`` of its labelled, on-time rows (streaming.counts)
    buckets: list[tuple[int, str, int]]
    #: the folder inputs it read (those bound for quarantine are in ``record.moves``)
    paths: list[str]


def batch_summary(batch: DataFrame, batch_id: int, spec: WindowSpec, with_paths: bool = False) -> BatchSummary:
    """Rows, errors, late rows, the newest event time, images per label, the class-count
    buckets and (``with_paths``: the folder source) the input paths: one job over the batch,
    a row per (label, bucket, late) back to the driver. The batch's class counts come from
    these rows (:func:`streaming.counts.bucket_deltas`), so they need no job of their own."""
    aggs = [
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("error").isNotNull().cast("long")).alias("errors"),
        F.max("event_time").alias("max_event_time"),
    ]
    if with_paths:
        moved = F.when(F.col("path").isNotNull(), F.struct("path", "quarantine_path"))
        aggs.append(F.collect_list(moved).alias("paths"))  # collect_list skips the NULLs
    rows = batch.groupBy("counted_label", bucket_start(spec).alias("bucket"), "late").agg(*aggs).collect()
    labels: dict[str, int] = {}
    for r in rows:
        if r["counted_label"] is not None:
            labels[r["counted_label"]] = labels.get(r["counted_label"], 0) + int(r["n"])
    times = [r["max_event_time"] for r in rows if r["max_event_time"] is not None]
    record = BatchRecord(
        batch_id=batch_id,
        rows=sum(int(r["n"]) for r in rows),
        errors=sum(int(r["errors"] or 0) for r in rows),
        late=sum(int(r["n"]) for r in rows if r["late"]),
        max_event_time=max(times) if times else None,
        label_totals=labels,
    )
    buckets = [(int(r["bucket"]), r["counted_label"], int(r["n"])) for r in rows
               if r["counted_label"] is not None and not r["late"] and r["bucket"] is not None]
    inputs = [p for r in rows for p in r["paths"]] if with_paths else []
    record.moves = {p["path"]: p["quarantine_path"] for p in inputs if p["quarantine_path"]}
    return BatchSummary(record, buckets, [p["path"] for p in inputs])


def table_frames(batch: DataFrame, summary: BatchSummary, cfg: StreamConfig, writer: str) -> dict[str, DataFrame]:
    """The rows each table gets from one labelled batch (:func:`labelled_batch`) and its
    summary: predictions and quarantine from the batch's rows, class counts from the summary
    (a few rows made on the driver, no job over the batch)."""
    batch_id = summary.record.batch_id
    counts = [(start, end, label, n, batch_id, writer, start.date())
              for start, end, label, n in bucket_deltas(summary.buckets, cfg.window)]
    return {
        PREDICTIONS: batch.select(*column_names(PREDICTIONS), DATE),
        QUARANTINE: batch.where(F.col("error").isNotNull()).select(*column_names(QUARANTINE), DATE),
        CLASS_COUNTS: local_frame(batch.sparkSession, CLASS_COUNTS, counts),
    }


class PoisonBudget:
    """At most ``limit`` isolated batches within ``window_s`` seconds: a poison pill now and then
    is isolated and the stream goes on; a stream of them (a broken decoder build, a machine out
    of memory) stops it with one line instead of isolating every batch forever."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def admit(self, batch_id: int, exc: BaseException) -> None:
        now = time.monotonic()
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            raise PoisonFlood(
                f"batch {batch_id} failed in a worker: {len(self._times) + 1} such batches within {self.window_s / 60:g} minutes "
                f"(at most {self.limit}, --max-isolations): stopping rather than isolating every batch; "
                f"the last failure: {failure_line(exc)}"
            )
        self._times.append(now)


class LiveSummary:
    """One line per batch in the terminal: throughput, batch latency, running counts."""

    def __init__(self, totals: dict[str, int], quiet: bool = False, stream=None) -> None:
        self.totals = dict(totals)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.batches = 0
        self.rows = 0
        self.errors = 0

    def batch_done(self, r: BatchResult) -> None:
        self.batches += 1
        self.rows += r.rows
        self.errors += r.errors
        for k, v in r.labels.items():
            self.totals[k] = self.totals.get(k, 0) + v
        if self.quiet:
            return
        rate = r.rows / r.seconds if r.seconds > 0 else 0.0
        counts = "  ".join(f"{k} {v}" for k, v in sorted(self.totals.items())) or "-"
        print(
            f"[batch {r.batch_id}] {r.rows} images ({r.errors} quarantined{', %d late' % r.late if r.late else ''}) "
            f"in {r.seconds:.2f}s = {rate:.1f} img/s | totals: {counts} | model {r.model_version}",
            file=self.stream,
            flush=True,
        )


class BatchProcessor:
    """``foreachBatch`` target: score once, append every table exactly once per batch id."""

    def __init__(
        self,
        cfg: StreamConfig,
        output: DeltaOutput,
        models: ModelHolder,
        summary: LiveSummary,
        on_stage: StageHook | None = None,
    ) -> None:
        self.cfg = cfg
        self.output = output
        self.models = models
        #: the scoring step (one Scorer per model version, its projection kept across batches)
        self.scoring = StreamScorer.from_config(cfg)
        self.summary = summary
        self.on_stage = on_stage
        #: this writer's newest recorded batch: the watermark state, and what a replay skips
        self._last: BatchRecord | None = None
        self._restored = False
        #: ``time.monotonic()`` when the last batch started or ended, and whether one is running:
        #: how long the Python workers have been idle (``streaming.query.WorkerKeeper``)
        self.last_active = time.monotonic()
        self.running = False
        #: batches recorded by this process (the upkeep runs every N of them)
        self.committed = 0
        #: batches scored again input by input after a worker died (memestream.isolation)
        self.poison = PoisonBudget(cfg.max_isolations, cfg.isolation_window_s)
        self.isolations = 0
        #: the last batch this process wrote completely itself (None at start and after a
        #: failure): the batch after it is appended blind, any other checks each table first
        self._written_through: int | None = None

    def _stage(self, stage: str, batch_id: int) -> None:
        if self.on_stage is not None:
            self.on_stage(stage, batch_id)

    def _previous(self, spark, batch_id: int) -> BatchRecord | None:  # noqa: ANN001
        """The record before ``batch_id``: from memory in steady state, from the ``batches``
        table after a restart (one small read)."""
        if self._last is not None and self._last.batch_id == batch_id - 1:
            return self._last
        return self.output.last_batch(spark, below=batch_id)

    def _move_inputs(self, paths: list[str], moves: dict[str, str]) -> None:
        """After a batch is recorded: bad inputs to quarantine, the rest archived/deleted/kept."""
        if self.cfg.source != "folder":
            return
        for uri in paths:
            src = Path(local_path(uri))
            try:
                qpath = moves.get(uri)
                if qpath:
                    dest = Path(qpath)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if src.exists() and src.read_bytes()[: len(EMPTY_FILE_MARKER) + 1] == EMPTY_FILE_MARKER:
                        src.write_bytes(b"")  # restore the original (empty) content
                    os.replace(src, dest)
                    continue
                if self.cfg.processed == "delete":
                    src.unlink()
                elif self.cfg.processed == "archive":
                    assert self.cfg.archive is not None
                    self.cfg.archive.mkdir(parents=True, exist_ok=True)
                    os.replace(src, self.cfg.archive / src.name)
            except FileNotFoundError:
                pass  # handled by an earlier attempt of this batch
            except OSError as exc:
                log.warning("could not move processed input %s: %s", src, exc)

    def _append_tables(self, frames: dict[str, DataFrame], summary: BatchSummary, check: bool) -> None:
        """Append the batch's rows to predictions, quarantine and class_counts, each one Delta
        commit (with ``check``, a table that has the batch's rows already is skipped), from one
        thread each: the three tables are independent, and an append is mostly fixed cost (a
        small Spark job and the driver's commit), so they overlap well. The ``batches`` row
        comes after all of them (:meth:`_process`).

        A table the batch has no rows for (quarantine without a bad input, class counts
        without a labelled on-time row) gets no commit: an empty Delta commit costs as much as
        a full one, and skipping it loses nothing."""
        batch_id = summary.record.batch_id
        todo = [t for t in frames if not ((t == QUARANTINE and summary.record.errors == 0)
                                           or (t == CLASS_COUNTS and not summary.buckets))]
        failures: list[BaseException] = []

        def append(table: str) -> None:
            try:
                self.output.append(frames[table], table, batch_id, check=check)
                if table == PREDICTIONS:
                    self._stage("predictions", batch_id)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the batch's thread below
                failures.append(exc)

        # InheritableThread: each append runs with the batch's job group and properties, so
        # stopping the query cancels it like any other job of the batch
        threads = [InheritableThread(target=append, args=(table,), name=f"append-{table}") for table in todo[1:]]
        for thread in threads:
            thread.start()
        if todo:
            append(todo[0])
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        self.running, self.last_active = True, time.monotonic()
        try:
            self._process(batch_df, batch_id)
        except BaseException:
            self._written_through = None  # this batch may be half written: the next one checks
            raise
        finally:
            self.running, self.last_active = False, time.monotonic()

    def _needs_check(self, batch_id: int) -> bool:
        """Whether ``batch_id``'s appends must first look for rows written before (see
        :mod:`streaming.sinks`): not when this process committed the batch before it itself,
        with nothing failing since, because then no earlier attempt of it can exist."""
        return self._written_through is None or batch_id != self._written_through + 1

    def _replayed(self, batch_df: DataFrame, batch_id: int) -> bool:
        """A batch recorded before a restart: only its folder inputs still need moving."""
        spark = batch_df.sparkSession
        if not self._restored:
            self._restored = True
            self._last = self.output.last_batch(spark)
        if self._last is None or batch_id > self._last.batch_id:
            return False
        log.info("batch %d was committed before a restart; skipping its replay", batch_id)
        if self.cfg.source == "folder":
            record = self._last if self._last.batch_id == batch_id else self.output.batch(spark, batch_id)
            paths = [r[0] for r in batch_df.select("path").collect()]
            self._move_inputs(paths, record.moves if record else {})
        return True

    def _scored(self, batch_df: DataFrame, model, batch_id: int, watermark: datetime | None,  # noqa: ANN001
                isolate: bool) -> tuple[DataFrame, BatchSummary]:
        """The batch scored and labelled, persisted for its few jobs (scored once), and its summary."""
        scored = self.scoring.score(batch_df, model, isolate=isolate)
        batch = labelled_batch(scored, batch_id, self.output.writer, watermark, quarantine_target(self.cfg, batch_id))
        batch = batch.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            return batch, batch_summary(batch, batch_id, self.cfg.window, with_paths=self.cfg.source == "folder")
        except BaseException:
            batch.unpersist()
            raise

    def _score(self, batch_df: DataFrame, model, batch_id: int, watermark: datetime | None) -> tuple[DataFrame, BatchSummary]:  # noqa: ANN001
        """:meth:`_scored`; when a worker died under it (a crash, or the time cap ending a hang),
        the batch again with each input in a process of its own: the poison inputs get
        ``decoder_crashed``/``decoder_timeout`` rows, the rest the rows they would have had.
        Nothing was written yet, so the retry keeps the batch exactly once; a replay after a
        restart fails and isolates the same way."""
        try:
            return self._scored(batch_df, model, batch_id, watermark, isolate=False)
        except Exception as exc:  # noqa: BLE001 - only a worker's death is retried
            if not worker_died(exc) or self.scoring.scorer(model).engine != "python":
                raise
            self.poison.admit(batch_id, exc)
            failed = time.monotonic()
            log.warning("batch %d: a worker died scoring it (%s); scoring it again with each input in its own process",
                        batch_id, failure_line(exc))
        batch, summary = self._scored(batch_df, model, batch_id, watermark, isolate=True)
        self.isolations += 1
        # counted, not listed: each poison input gets its "quarantined <origin>: <error>" line below
        poison = batch.where(F.col("error_code").isin(DECODER_CRASHED, DECODER_TIMEOUT)).count()
        log.warning("batch %d: isolated %d poison input(s) of %d in %.1fs; the stream goes on", batch_id, poison,
                    summary.record.rows, time.monotonic() - failed)
        return batch, summary

    def _process(self, batch_df: DataFrame, batch_id: int) -> None:
        if self._replayed(batch_df, batch_id):
            return
        spark = batch_df.sparkSession
        start = time.monotonic()
        model = self.models.refresh()
        self._stage("start", batch_id)
        previous = self._previous(spark, batch_id)
        watermark = watermark_after(previous.max_event_time if previous else None, self.cfg.window)
        batch, summary = self._score(batch_df, model, batch_id, watermark)
        record = summary.record
        try:
            if record.rows == 0:
                if not self._needs_check(batch_id):
                    self._written_through = batch_id  # nothing to write: still in order
                return
            scored_at = time.monotonic()
            if record.errors:
                for row in batch.where("error IS NOT NULL").select("origin", "error").limit(50).collect():
                    log.warning("quarantined %s: %s", row["origin"], row["error"])
            check = self._needs_check(batch_id)
            self._append_tables(table_frames(batch, summary, self.cfg, self.output.writer), summary, check)
            self._stage("files", batch_id)
            record.model_version = model.version
            seen = [t for t in (record.max_event_time, previous.max_event_time if previous else None) if t is not None]
            record.max_event_time = max(seen, default=None)  # the watermark state carries forward
            self.output.record_batch(spark, record, check=check)
        finally:
            batch.unpersist()
        self._last = record
        self._written_through = batch_id
        self.committed += 1
        committed = time.monotonic()
        self._stage("committed", batch_id)
        self._move_inputs(summary.paths, record.moves)
        log.debug("batch %d: %d rows; score+totals %.3fs, tables %.3fs, inputs %.3fs", batch_id, record.rows,
                  scored_at - start, committed - scored_at, time.monotonic() - committed)
        self.summary.batch_done(
            BatchResult(batch_id, record.rows, record.errors, record.late, time.monotonic() - start,
                        record.label_totals, model.version)
        )
