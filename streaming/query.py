"""The streaming query: open the source, run ``foreachBatch``, stop cleanly.

The only module that touches ``readStream``/``writeStream``. What to read comes from
:mod:`streaming.sources` / :mod:`streaming.kafka_source` (:class:`StreamSource`); each
micro-batch is handled by :class:`streaming.batch.BatchProcessor`.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession

from memestream.errors import CheckpointError, ConfigError, MemestreamError
from memestream.inbox import InboxMover
from streaming.batch import BatchProcessor, LiveSummary, StageHook
from streaming.compact import CompactConfig, StreamCompactor
from streaming.config import StreamConfig
from streaming.kafka_source import spark_kafka_available, topic_source
from streaming.models import ModelHolder
from streaming.schema import DEFAULT_WRITER
from streaming.sinks import OutputTables
from streaming.sources import StreamSource, folder_frame, folder_source, kafka_frame, spark_kafka_frame, spark_kafka_source

log = logging.getLogger(__name__)

CHECKPOINT_IDENTITY = "memestream-config.json"


def check_checkpoint(cfg: StreamConfig) -> str:
    """Refuse a checkpoint written for another source/input/output, with one clear line.

    Returns the checkpoint's *writer* name: the stream's own namespace in the output tables
    (batch ids restart per checkpoint, so two streams sharing an output need their own).
    """
    path = cfg.checkpoint / CHECKPOINT_IDENTITY
    ident = cfg.identity()
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"{path} is damaged; use a new --checkpoint") from None
        if old.get("source") == "folder":
            old.setdefault("folder_impl", "binaryfile")  # written before the spool source existed
        diff = {k: (old.get(k), v) for k, v in ident.items() if old.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {cfg.checkpoint} belongs to another configuration ({detail}); "
                                  "use a new --checkpoint or the original settings")
        return str(old.get("writer") or DEFAULT_WRITER)
    if cfg.checkpoint.exists() and any(cfg.checkpoint.iterdir()):
        raise CheckpointError(f"{cfg.checkpoint} is not empty but was not written by meme-stream; use a new --checkpoint")
    writer = f"{cfg.source}_{uuid.uuid4().hex[:6]}"
    try:
        cfg.checkpoint.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**ident, "writer": writer}, indent=2))
    except OSError as exc:
        raise ConfigError(f"checkpoint folder {cfg.checkpoint} is not writable: {exc.strerror or exc}") from None
    return writer


def open_stream(spark: SparkSession, source: StreamSource) -> DataFrame:
    """``spark.readStream`` over one described input."""
    reader = spark.readStream.format(source.format).options(**source.options)
    if source.schema is not None:
        reader = reader.schema(source.schema)
    return reader.load(source.path) if source.path is not None else reader.load()


def source_frame(spark: SparkSession, cfg: StreamConfig) -> DataFrame:
    """The configured input as a streaming DataFrame in the common frame shape."""
    if cfg.source == "folder":
        assert cfg.spool is not None  # StreamConfig checks it
        cfg.spool.mkdir(parents=True, exist_ok=True)
        source = folder_source(cfg.spool, cfg.max_files_per_trigger, cfg.folder_impl, folder_tasks(spark),
                               keep_processed=cfg.processed == "keep")
        if cfg.folder_impl == "spool":
            from streaming.spool_source import register

            register(spark)
        return open_stream(spark, source).transform(folder_frame)
    assert cfg.kafka is not None  # StreamConfig checks it
    if cfg.kafka_impl == "spark":
        if not spark_kafka_available(spark):
            raise ConfigError(
                "--kafka-impl spark needs Spark's Kafka connector (org.apache.spark:spark-sql-kafka-0-10_2.13) "
                "on the classpath, and it is not there; add it with spark-submit --packages/--jars or "
                "spark.jars, or use the default --kafka-impl python"
            )
        return open_stream(spark, spark_kafka_source(cfg.kafka)).transform(spark_kafka_frame)
    return open_stream(spark, topic_source(spark, cfg.kafka)).transform(kafka_frame)


def folder_tasks(spark: SparkSession) -> int:
    """Spark tasks per folder batch: one per core (fewer when the batch has fewer files), cut by
    count. Each task reads, decodes and scores its files and pays a fixed cost (two Python
    runners, the source's read and the scorer: ~0.1 s on a loaded machine). Four tasks per core
    with OCR, so cores could share OCR'd images, measured worse: cascade light-load p50 2.43 s
    against 1.57 s with one per core, back to back (docs/benchmarks.md)."""
    try:
        return max(1, int(spark.sparkContext.defaultParallelism))
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return 2


#: Spark stops every idle Python worker of a pool that has handed out no worker for a minute
#: (``PythonWorkerFactory``'s idle clean-up; no setting changes it). The first image after a quiet
#: minute then waits for new workers: fork, imports, the ONNX sessions (an empty UDF took 1.7 s
#: instead of 0.2 s here; the scorer loads more). So an idle stream scores the warm-up image again
#: every ``KEEP_WARM_S`` (~0.2 CPU-s: ~0.5 % of a core).
KEEP_WARM_S = 40.0


class WorkerKeeper:
    """Keep the Python workers alive through quiet spells: ``warm()`` once the last batch (and the
    last warm-up) are ``every_s`` old. Called from the run loop between its waits."""

    def __init__(self, warm: Callable[[], None], every_s: float = KEEP_WARM_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.warm = warm
        self.every_s = every_s
        self.clock = clock
        self._last = clock()
        self.runs = 0

    def tick(self, last_batch: float, busy: bool = False) -> bool:
        """Warm the workers if they have been idle ``every_s`` (``last_batch``: when the last batch
        started or ended; ``busy``: one is running); True when it did. A failure is logged, never
        raised: the stream itself must not stop for it."""
        now = self.clock()
        if busy or now - max(last_batch, self._last) < self.every_s:
            return False
        self._last = now
        self.runs += 1
        try:
            self.warm()
        except Exception as exc:  # noqa: BLE001 - the next batch starts its workers itself
            log.warning("keeping the Python workers warm failed: %s", str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)
        return True


class StopFlag:
    """Set by SIGINT/SIGTERM; the run loop stops the query between batches."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.event.is_set():  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()


#: Spark keeps this many batches of its checkpoint's offsets/commits logs (older ones are
#: purged as batches complete); set per query from ``--keep-commits``.
MIN_BATCHES_TO_RETAIN = "spark.sql.streaming.minBatchesToRetain"


def min_batches_to_retain(cfg: StreamConfig) -> int:
    """Spark's checkpoint history: as long as our markers' (``--keep-commits``), at least 10."""
    return max(10, cfg.keep_commits)


def start_query(spark: SparkSession, cfg: StreamConfig, processor: BatchProcessor):
    """Start the query with ``processor`` as its ``foreachBatch`` and the configured trigger.

    The query captures the session's SQL conf when it starts, so ``minBatchesToRetain`` is
    set just for the start and the caller's session is left as it was.
    """
    frame = source_frame(spark, cfg)
    writer = (
        frame.writeStream.queryName(f"memestream-{cfg.source}")
        .foreachBatch(processor)
        .option("checkpointLocation", str(cfg.checkpoint / "spark"))
    )
    writer = writer.trigger(availableNow=True) if cfg.available_now else writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    before = spark.conf.get(MIN_BATCHES_TO_RETAIN, None)
    spark.conf.set(MIN_BATCHES_TO_RETAIN, str(min_batches_to_retain(cfg)))
    try:
        return writer.start()
    finally:
        if before is None:
            spark.conf.unset(MIN_BATCHES_TO_RETAIN)
        else:
            spark.conf.set(MIN_BATCHES_TO_RETAIN, before)


def start_compactor(cfg: StreamConfig, tables: OutputTables) -> StreamCompactor | None:
    """The in-stream compaction thread (None with ``--no-compact``)."""
    if not cfg.compacts:
        return None
    config = CompactConfig(cfg.output, retention_days=cfg.retention_days, time_budget_s=cfg.compact_budget_s)
    return StreamCompactor(tables, config, cfg.compact_every_batches, cfg.compact_every_s).start()


def run_stream(
    spark: SparkSession,
    cfg: StreamConfig,
    stop: StopFlag | None = None,
    until: Callable[[LiveSummary], bool] | None = None,
    on_stage: StageHook | None = None,
) -> LiveSummary:
    """Run until stopped (or, with ``available_now``, until the input is drained, or ``until``).

    ``on_stage`` is called at fixed points of every batch (:data:`streaming.batch.STAGES`).
    """
    OutputTables(cfg.output).ensure_writable()
    tables = OutputTables(cfg.output, writer=check_checkpoint(cfg), keep_commits=cfg.keep_commits)
    models = ModelHolder(cfg.model_dir, cfg.model_version)
    summary = LiveSummary(tables.label_totals(), quiet=cfg.quiet)
    processor = BatchProcessor(cfg, tables, models, summary, on_stage)
    processor.scoring.warm_up(spark, models.model)
    mover = None
    if cfg.source == "folder" and cfg.watch and cfg.inbox is not None:
        mover = InboxMover(cfg.inbox, cfg.spool)  # type: ignore[arg-type]
        moved = mover.sweep(settle=0.0 if cfg.available_now else None)
        if moved:
            log.info("moved %d file(s) already in %s into the stream", moved, cfg.inbox)
        if not cfg.available_now:
            mover.start()
    stop = stop or StopFlag()
    stop.install()
    query = start_query(spark, cfg, processor)
    log.info("stream %s started: source=%s output=%s checkpoint=%s", query.id, cfg.source, cfg.output, cfg.checkpoint)
    compactor = start_compactor(cfg, tables)
    keeper = None if cfg.available_now else WorkerKeeper(lambda: processor.scoring.warm_up(spark, processor.models.model))
    drained = False
    try:
        while query.isActive:
            if until is not None and until(summary):
                stop.event.set()
            if stop.event.is_set():
                log.info("%s: stopping after the current batch", f"{stop.signal_name} received" if stop.signal_name else "done")
                _graceful_stop(query)
                break
            if keeper is not None:
                keeper.tick(processor.last_active, processor.running)
            query.awaitTermination(0.5)
        drained = not stop.event.is_set() and query.exception() is None
    finally:
        if compactor is not None:  # a drained --available-now run ends with one last (bounded) pass
            compactor.stop(final_pass=cfg.available_now and drained)
        if mover is not None:
            mover.stop()
    exc = query.exception()
    if exc is not None:
        raise StreamFailed(_describe_failure(exc))
    return summary


def _graceful_stop(query, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        query.stop()
    except Exception as exc:  # noqa: BLE001 - stopping interrupts source calls; the batch replays on restart
        log.warning("query stopped with: %s", str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)


class StreamFailed(MemestreamError):
    """The query died (its first meaningful error line is the message)."""

    exit_code = 1


def _describe_failure(exc: Any) -> str:
    text = str(getattr(exc, "desc", None) or exc)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "===", "Traceback", "File ")):
            if "MemestreamError" in line or "Error:" in line:
                return line[:500]
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "query failed")
    return first[:500]
