"""The streaming query: open the source, run ``foreachBatch``, stop cleanly.

The only module that touches ``readStream``/``writeStream``. What to read comes from
:mod:`streaming.sources` (:class:`StreamSource`); each
micro-batch is handled by :class:`streaming.batch.BatchProcessor`.
"""
from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
import uuid
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession

from memestream.errors import CheckpointError, ConfigError, MemestreamError
from memestream.inbox import InboxMover
from memestream.spool import SpoolSequence
from streaming.batch import BatchProcessor, LiveSummary, StageHook
from streaming.config import StreamConfig
from streaming.models import ModelHolder
from streaming.sinks import DeltaOutput
from streaming.sources import StreamSource, folder_frame, folder_source, kafka_source, spark_kafka_frame
from streaming.upkeep import StreamUpkeep, UpkeepConfig

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
        return str(old.get("writer") or "main")
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
        tasks = folder_tasks(spark)
        source = folder_source(cfg.spool, cfg.max_files_per_trigger, cfg.folder_impl, tasks,
                               keep_processed=cfg.processed == "keep", available_now=cfg.available_now)
        if cfg.folder_impl == "spool":
            from streaming.spool_source import register

            register(spark)
            # The spool source's read is a Python runner too: in the scorer's stage each task would
            # hold two Python workers at once (the read's and the scorer's), so the pool grew to two
            # per core and every worker that ever scored kept its model (~0.5 GiB each: the folder
            # stream's tree peaked 1 GiB above Kafka's). A round-robin exchange of the listing rows
            # (a few hundred bytes a file) puts the read in a stage of its own: one worker per core.
            return open_stream(spark, source).transform(folder_frame).repartition(tasks)
        return open_stream(spark, source).transform(folder_frame)
    assert cfg.kafka is not None  # StreamConfig checks it
    # Spark's Kafka source (its jar is in every session); broker and topic are checked first
    return open_stream(spark, kafka_source(cfg.kafka)).transform(spark_kafka_frame)


def folder_tasks(spark: SparkSession) -> int:
    """Spark tasks per folder batch: one per core (fewer when the batch has fewer files), cut by
    count. Each task reads, decodes and scores its files and pays a fixed cost (a Python runner:
    ~0.1 s on a loaded machine; the spool source's read runs in a stage of its own before it). Four tasks per core
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


def bounded_by_us(cfg: StreamConfig) -> bool:
    """``--available-now`` on the spool source: PySpark 4.1 gives a Python source no read limit
    under Spark's availableNow trigger (it would read everything as one batch), so the source
    caps each batch itself and stops at what the spool held at start, and the run loop ends
    the query once a committed batch reaches the spool's high-water mark read at start (:func:`drained_to`)."""
    return cfg.available_now and cfg.source == "folder" and cfg.folder_impl == "spool"


def spool_high_water(cfg: StreamConfig) -> int:
    """The spool's last handed-out sequence number: an ``--available-now`` run's target (every
    file in the spool now has a number at or below it)."""
    with SpoolSequence(cfg.spool).locked() as held:  # type: ignore[arg-type]
        return held.last


def drained_to(query, target: int) -> bool:  # noqa: ANN001
    """Whether the spool query has committed a batch ending at or past ``target``. Spark posts a
    batch's progress after its commit; a run with nothing to read gets an idle progress (its
    checkpoint's offset) within ``spark.sql.streaming.noDataProgressEventInterval``."""
    progress = query.lastProgress
    if not progress:
        return False
    end = progress["sources"][0]["endOffset"] if progress["sources"] else None
    if isinstance(end, dict):
        end = end.get("seq")
    match = re.search(r"seq\W+(\d+)", str(end)) if end is not None else None  # JSON, or a parsed map
    return match is not None and int(match.group(1)) >= target


def start_query(spark: SparkSession, cfg: StreamConfig, processor: BatchProcessor):
    """Start the query with ``processor`` as its ``foreachBatch`` and the configured trigger."""
    frame = source_frame(spark, cfg)
    writer = (
        frame.writeStream.queryName(f"memestream-{cfg.source}")
        .foreachBatch(processor)
        .option("checkpointLocation", str(cfg.checkpoint / "spark"))
    )
    if cfg.available_now and not bounded_by_us(cfg):
        writer = writer.trigger(availableNow=True)
    else:  # the spool source drains to its start-time target in capped batches, then goes idle
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()


def start_upkeep(spark: SparkSession, cfg: StreamConfig, processor: BatchProcessor) -> StreamUpkeep | None:
    """The in-stream upkeep thread (None with ``--no-compact``)."""
    if not cfg.compacts:
        return None
    config = UpkeepConfig(str(cfg.output), retention_days=cfg.retention_days)
    return StreamUpkeep(spark, config, lambda: processor.committed, cfg.compact_every_batches, cfg.compact_every_s).start()


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
    stop = stop or StopFlag()
    stop.install()
    output = DeltaOutput(str(cfg.output), writer=check_checkpoint(cfg))
    output.ensure_tables(spark)
    models = ModelHolder(cfg.model_dir, cfg.model_version)
    summary = LiveSummary(output.label_totals(spark), quiet=cfg.quiet)
    processor = BatchProcessor(cfg, output, models, summary, on_stage)
    processor.scoring.warm_up(spark, models.model)
    mover = None
    if cfg.source == "folder" and cfg.watch and cfg.inbox is not None:
        mover = InboxMover(cfg.inbox, cfg.spool)  # type: ignore[arg-type]
        moved = mover.sweep(settle=0.0 if cfg.available_now else None)
        if moved:
            log.info("moved %d file(s) already in %s into the stream", moved, cfg.inbox)
        if not cfg.available_now:
            mover.start()
    target = spool_high_water(cfg) if bounded_by_us(cfg) else None
    if stop.event.is_set():  # Ctrl-C while starting: nothing was read, nothing to stop
        if mover is not None:
            mover.stop()
        log.info("%s received while starting: not starting the query", stop.signal_name)
        return summary
    query = start_query(spark, cfg, processor)
    log.info("stream %s started: source=%s output=%s checkpoint=%s", query.id, cfg.source, cfg.output, cfg.checkpoint)
    upkeep = start_upkeep(spark, cfg, processor)
    keeper = None if cfg.available_now else WorkerKeeper(lambda: processor.scoring.warm_up(spark, processor.models.model))
    drained = False
    restarted = False
    try:
        while True:
            try:
                _run_loop(query, processor, stop, summary, until, keeper, target)
            except Exception:  # awaitTermination raises what the query died of
                if restarted or not kafka_replay_metrics_failure(query):
                    raise
            else:
                if restarted or not kafka_replay_metrics_failure(query):
                    break
            # Spark 4.1.1's Kafka source fails the first trigger after a restart that replayed a batch,
            # once that batch is committed (kafka_replay_metrics_failure): start again from the checkpoint
            log.warning("Spark's Kafka source failed reporting metrics after replaying a batch (SPARK-55271); "
                        "restarting the query from its checkpoint")
            restarted = True
            query = start_query(spark, cfg, processor)
        drained = not stop.event.is_set() and query.exception() is None
    finally:
        if upkeep is not None:  # a drained --available-now run ends with one last pass
            upkeep.stop(final_pass=cfg.available_now and drained)
        if mover is not None:
            mover.stop()
    exc = query.exception()
    if exc is not None:
        raise StreamFailed(_describe_failure(exc))
    return summary


def _run_loop(query, processor: BatchProcessor, stop: StopFlag, summary: LiveSummary,  # noqa: ANN001
              until: Callable[[LiveSummary], bool] | None, keeper: WorkerKeeper | None, target: int | None) -> None:
    """Wait for ``query`` to end (drained, stopped, or failed), stopping it between batches when asked."""
    while query.isActive:
        if until is not None and until(summary):
            stop.event.set()
        if target is not None and drained_to(query, target):
            _graceful_stop(query)
            break
        if stop.event.is_set():
            log.info("%s: stopping after the current batch", f"{stop.signal_name} received" if stop.signal_name else "done")
            _graceful_stop(query)
            break
        if keeper is not None:
            keeper.tick(processor.last_active, processor.running)
        query.awaitTermination(0.5)


def kafka_replay_metrics_failure(query) -> bool:  # noqa: ANN001
    """Whether ``query`` died of Spark 4.1.1's Kafka source bug SPARK-55271: after a restart whose
    first trigger replays a batch from the checkpoint (a crash mid-batch), the source never asked
    for the latest offsets, and its progress metrics (``KafkaMicroBatchStream.metrics``) throw a
    NullPointerException. That happens after the replayed batch is committed; a new query over the
    same checkpoint runs on normally (and the output tables would skip a replay anyway)."""
    jsq = getattr(query, "_jsq", None)  # Spark Connect: no JVM handle, no retry
    if jsq is None or not jsq.exception().isDefined():
        return False
    cause = jsq.exception().get().getCause()
    while cause is not None:
        if cause.getClass().getName() == "java.lang.NullPointerException" and any(
            f.getClassName().startswith("org.apache.spark.sql.kafka010.KafkaMicroBatchStream") and f.getMethodName() == "metrics"
            for f in cause.getStackTrace()
        ):
            return True
        cause = cause.getCause()
    return False


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
