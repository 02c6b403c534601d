"""The streaming query: source -> decode/featurize/classify -> exactly-once tables.

The only module that touches ``readStream``/``writeStream``. One ``foreachBatch`` per
micro-batch scores the rows once (one Spark job, one decode per image), collects the
small labelled result as Arrow, and writes predictions, quarantine and class-count deltas
through :class:`streaming.sinks.OutputTables`, idempotently per batch id.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from memestream.classify import SCORED, classify, error_code, local_columns, local_model
from memestream.decode import DEFAULT_MAX_BYTES, READ_ERROR
from memestream.errors import CheckpointError, ConfigError, MemestreamError
from memestream.load import EMPTY_FILE_MARKER, local_path
from memestream.modelstore import LoadedModel
from streaming.counts import WindowSpec, late_mask, window_deltas
from streaming.models import ModelHolder
from streaming.sinks import CLASS_COUNTS, DEFAULT_WRITER, PREDICTIONS, QUARANTINE, BatchMarker, OutputTables
from streaming.sources import FolderSourceConfig, folder_stream, kafka_frame, spark_kafka_stream, with_content

log = logging.getLogger(__name__)

#: Columns of the predictions table, in order (plus ``date`` as the partition folder).
PREDICTION_COLUMNS = (
    "image_id", "source", "origin", "path", "kafka_key", "headers", "event_time", "processing_time",
    "label", "confidence", "probabilities", "error", "error_code", "model_version", "size_bytes", "late", "batch_id",
)
QUARANTINE_COLUMNS = (
    "image_id", "source", "origin", "path", "kafka_key", "headers", "event_time", "processing_time",
    "error", "error_code", "size_bytes", "quarantine_path", "payload", "batch_id",
)


@dataclass(frozen=True)
class StreamConfig:
    """Everything ``meme-stream`` needs, built once in ``main()``."""

    source: str
    output: Path
    checkpoint: Path
    model_dir: Path
    inbox: Path | None = None
    spool: Path | None = None
    archive: Path | None = None
    quarantine_dir: Path | None = None
    model_version: str | None = None
    trigger_seconds: float = 0.5
    available_now: bool = False
    max_files_per_trigger: int = 1000
    processed: str = "archive"
    window: WindowSpec = field(default_factory=WindowSpec)
    max_bytes: int = DEFAULT_MAX_BYTES
    watch: bool = True
    quiet: bool = False
    kafka: Any = None  # streaming.kafka_source.KafkaSourceConfig
    kafka_impl: str = "python"  # python (our Data Source) | spark (built-in connector jar)
    scoring: str = "auto"  # auto | python (model in the Python worker) | spark (PipelineModel in the JVM)

    def identity(self) -> dict[str, str]:
        """What a checkpoint is bound to: changing any of these needs a new checkpoint."""
        ident = {"source": self.source, "output": str(self.output.resolve())}
        if self.source == "folder":
            ident["spool"] = str(self.spool.resolve()) if self.spool else ""
        else:
            ident["topic"] = str(getattr(self.kafka, "topic", ""))
        return ident


# ---------------------------------------------------------------------------------------
# Pure transforms (batch-testable)
# ---------------------------------------------------------------------------------------
SCORING_ENGINES = ("auto", "python", "spark")


def score(frame: DataFrame, model: LoadedModel, max_bytes: int = DEFAULT_MAX_BYTES, engine: str = "auto") -> DataFrame:
    """Source frame (``path`` to read, or ``content``) -> one labelled row per input, errors kept,
    in the output layout (:data:`PREDICTION_COLUMNS` plus ``payload`` and ``date``).

    ``engine``: ``python`` reads, decodes, featurizes and classifies in one Python worker
    pass (the model's stages as numpy, :mod:`memestream.inference`); ``spark`` runs the
    PipelineModel in the JVM; ``auto`` takes ``python`` when the model allows it.
    """
    if engine not in SCORING_ENGINES:
        raise ConfigError(f"--scoring must be one of {', '.join(SCORING_ENGINES)}, found {engine!r}")
    local = None if engine == "spark" else local_model(model)
    if engine == "python" and local is None:
        raise ConfigError(f"model {model.version}/{model.name} has stages that run only in Spark; use --scoring auto or spark")
    if local is not None:
        from_path = "content" not in frame.columns
        call, projection = _local_projection(model, local, from_path, max_bytes, tuple(frame.columns))
        return frame.withColumn(SCORED, call).select(*projection)
    extra = {"processing_time": F.current_timestamp(), "date": F.date_format(F.col("event_time"), "yyyy-MM-dd")}
    out = classify(with_content(frame, max_bytes), model)
    err = F.coalesce(F.col("load_error"), F.col("error"))
    ok = err.isNull()
    # one select: every expression reads the classified columns, none reads another's result
    cols = {
        **extra,
        "error": err,
        "error_code": error_code(err),
        "label": F.when(ok, F.col("label")),
        "probabilities": F.when(ok, F.col("probabilities")),
        "confidence": F.when(ok, F.col("confidence")),
        "image_id": F.sha2(F.col("content"), 256),
        "payload": F.when(~ok, F.col("content")),
    }
    return out.select(*[cols[c].alias(c) if c in cols else F.col(c) for c in _OUTPUT], cols["date"].alias("date"))


def _local_projection(model: LoadedModel, local, from_path: bool, max_bytes: int, columns: tuple[str, ...]):
    """The in-worker scoring step and the output projection, built once per model and
    source shape (Column building is Py4J-bound: ~0.13 s a batch when rebuilt)."""
    cache = model.__dict__.setdefault("_memestream_projections", {})
    key = (from_path, max_bytes, columns)
    if key not in cache:
        call, new = local_columns(model, local, "path" if from_path else "content", from_path, max_bytes)
        new = {**new, "processing_time": F.current_timestamp().alias("processing_time")}
        cols = [new[c] if c in new else F.col(c) for c in _OUTPUT]
        cache[key] = (call, [*cols, F.date_format(F.col("event_time"), "yyyy-MM-dd").alias("date")])
    return cache[key]


#: Columns :func:`score` returns before ``date`` (the tables add ``late`` and ``batch_id``).
_OUTPUT = tuple(c for c in PREDICTION_COLUMNS if c not in ("late", "batch_id")) + ("payload",)


@dataclass
class BatchResult:
    batch_id: int
    rows: int
    errors: int
    late: int
    seconds: float
    labels: dict[str, int]
    model_version: str
    skipped: bool = False


def build_tables(
    scored: pa.Table, batch_id: int, spec: WindowSpec, previous: BatchMarker | None, quarantine_paths: list[str | None]
) -> tuple[dict[str, pa.Table], BatchMarker]:
    """Split one collected batch into the three tables and its commit marker."""
    n = scored.num_rows
    event_us = pc.cast(scored.column("event_time"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    prev_max_ms = previous.max_event_time_ms if previous else None
    watermark_us = (prev_max_ms * 1000 - spec.watermark_s * 1_000_000) if prev_max_ms is not None else None
    late = late_mask(event_us, watermark_us)
    batch_col = pa.array(np.full(n, batch_id, dtype=np.int64))
    preds = scored.drop_columns(["payload"]).append_column("late", pa.array(late)).append_column("batch_id", batch_col)
    preds = preds.select(list(PREDICTION_COLUMNS) + ["date"])

    errors = pc.is_valid(scored.column("error"))
    quarantine = scored.append_column("quarantine_path", pa.array(quarantine_paths, type=pa.string()))
    quarantine = quarantine.append_column("batch_id", batch_col).filter(errors)
    quarantine = quarantine.select(list(QUARANTINE_COLUMNS) + ["date"])

    labels = scored.column("label").to_pylist()
    deltas = window_deltas(labels, event_us, late, spec)
    deltas = deltas.append_column("batch_id", pa.array(np.full(deltas.num_rows, batch_id, dtype=np.int64)))
    deltas = deltas.append_column("date", pc.strftime(deltas.column("window_start"), format="%Y-%m-%d"))

    totals: dict[str, int] = {}
    for lbl in labels:
        if lbl is not None:
            totals[lbl] = totals.get(lbl, 0) + 1
    this_max = int(event_us.max() // 1000) if n else None
    max_ms = max(v for v in (prev_max_ms, this_max) if v is not None) if (prev_max_ms or this_max) is not None else None
    marker = BatchMarker(
        batch_id=batch_id,
        rows=n,
        errors=int(pc.sum(errors.cast(pa.int64())).as_py() or 0),
        late=int(late.sum()),
        max_event_time_ms=max_ms,
        label_totals=totals,
    )
    return {PREDICTIONS: preds, QUARANTINE: quarantine, CLASS_COUNTS: deltas}, marker


# ---------------------------------------------------------------------------------------
# The micro-batch handler
# ---------------------------------------------------------------------------------------
def _test_kill_point(point: str, batch_id: int) -> None:
    """Fault injection for the exactly-once tests: ``MEMESTREAM_TEST_KILL_AT=<point>:<batch>``."""
    spec = os.environ.get("MEMESTREAM_TEST_KILL_AT")
    if spec and spec == f"{point}:{batch_id}":
        log.warning("test hook: SIGKILL at %s of batch %d", point, batch_id)
        os.kill(os.getpid(), signal.SIGKILL)


class BatchProcessor:
    """``foreachBatch`` target: score once, write all tables exactly once per batch id."""

    def __init__(self, cfg: StreamConfig, tables: OutputTables, models: ModelHolder, summary: "LiveSummary") -> None:
        self.cfg = cfg
        self.tables = tables
        self.models = models
        self.summary = summary
        self._last: BatchMarker | None = None

    def _previous_marker(self, batch_id: int) -> BatchMarker | None:
        """The marker before ``batch_id`` (watermark state): from memory in steady state,
        from disk after a restart or replay, so a long run does not list every marker."""
        if self._last is not None and self._last.batch_id == batch_id - 1:
            return self._last
        return self.tables.last_marker_before(batch_id)

    def _quarantine_targets(self, scored: pa.Table, batch_id: int) -> list[str | None]:
        """Where each bad folder input goes (decided before the commit, moved after it)."""
        qdir = self.cfg.quarantine_dir
        out: list[str | None] = []
        for err, path, origin in zip(
            scored.column("error").to_pylist(), scored.column("path").to_pylist(), scored.column("origin").to_pylist()
        ):
            bad_file = err is not None and path is not None and qdir is not None and not err.startswith(READ_ERROR)
            out.append(str(qdir / f"b{batch_id:06d}-{origin}") if bad_file else None)  # type: ignore[operator]
        return out

    def _finish_inputs(self, paths: list[str | None], marker: BatchMarker) -> None:
        """After a batch is committed: bad inputs to quarantine, the rest archived/deleted/kept."""
        if self.cfg.source != "folder":
            return
        for uri in paths:
            if uri is None:
                continue
            src = Path(local_path(uri))
            try:
                qpath = marker.quarantine_moves.get(uri)
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

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        if self.tables.is_committed(batch_id):
            log.info("batch %d was committed before a restart; skipping its replay", batch_id)
            if self.cfg.source == "folder":
                marker = self.tables.read_marker(batch_id)
                self._finish_inputs([r[0] for r in batch_df.select("path").collect()], marker)
            return
        start = time.monotonic()
        model = self.models.refresh()
        _test_kill_point("start", batch_id)
        scored_df = score(batch_df, model, self.cfg.max_bytes, self.cfg.scoring)
        planned = time.monotonic()
        scored = scored_df.toArrow()
        scored_at = time.monotonic()
        if scored.num_rows == 0:
            return
        qpaths = self._quarantine_targets(scored, batch_id)
        previous = self._previous_marker(batch_id)
        tables, marker = build_tables(scored, batch_id, self.cfg.window, previous, qpaths)
        marker.model_version = model.version
        marker.quarantine_moves = {p: q for p, q in zip(scored.column("path").to_pylist(), qpaths) if p and q}
        for row in scored.filter(pc.is_valid(scored.column("error"))).select(["origin", "error"]).to_pylist():
            log.warning("quarantined %s: %s", row["origin"], row["error"])
        built = time.monotonic()
        self.tables.commit_batch(batch_id, tables, marker, after_files=lambda: _test_kill_point("files", batch_id))
        self._last = marker
        committed = time.monotonic()
        _test_kill_point("committed", batch_id)
        self._finish_inputs(scored.column("path").to_pylist(), marker)
        log.debug("batch %d: %d rows; plan %.3fs, score %.3fs, tables %.3fs, commit %.3fs, inputs %.3fs", batch_id,
                  scored.num_rows, planned - start, scored_at - planned, built - scored_at, committed - built,
                  time.monotonic() - committed)
        self.summary.batch_done(
            BatchResult(batch_id, marker.rows, marker.errors, marker.late, time.monotonic() - start, marker.label_totals, model.version)
        )


class LiveSummary:
    """One line per batch in the terminal: throughput, batch latency, running counts."""

    def __init__(self, totals: dict[str, int], quiet: bool = False, stream=None) -> None:
        self.totals = dict(totals)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.batches = 0
        self.rows = 0
        self.errors = 0
        self.started = time.monotonic()

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


# ---------------------------------------------------------------------------------------
# Running the query
# ---------------------------------------------------------------------------------------
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


def source_frame(spark, cfg: StreamConfig) -> DataFrame:
    if cfg.source == "folder":
        assert cfg.spool is not None and cfg.archive is not None
        cfg.spool.mkdir(parents=True, exist_ok=True)
        return folder_stream(spark, FolderSourceConfig(cfg.spool, cfg.max_files_per_trigger))
    if cfg.source == "kafka":
        from streaming.kafka_source import read_kafka_stream, spark_kafka_available

        if cfg.kafka_impl == "spark":
            if not spark_kafka_available(spark):
                raise ConfigError(
                    "--kafka-impl spark needs Spark's Kafka connector (org.apache.spark:spark-sql-kafka-0-10_2.13) "
                    "on the classpath, and it is not there; add it with spark-submit --packages/--jars or "
                    "spark.jars, or use the default --kafka-impl python"
                )
            return spark_kafka_stream(spark, cfg.kafka)
        return read_kafka_stream(spark, cfg.kafka).transform(kafka_frame)
    raise ConfigError(f"--source must be folder or kafka, found {cfg.source!r}")


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


def warm_up(spark, model: LoadedModel, cfg: StreamConfig) -> None:
    """Score a generated image and an empty input once, shaped like the real source, so
    Python workers, the UDF and the model are loaded before the first real image arrives
    (first-batch latency drops by seconds)."""
    import tempfile

    from memestream.sample import sample_image_bytes

    started = time.monotonic()
    image = sample_image_bytes("doom", 1)
    schema = "source string, origin string, path string, kafka_key string, headers map<string,string>"
    with tempfile.TemporaryDirectory(prefix="memestream-warmup-") as tmp:
        if cfg.source == "folder":
            files = [Path(tmp) / "warm.png", Path(tmp) / "empty.bin"]
            files[0].write_bytes(image)
            files[1].write_bytes(EMPTY_FILE_MARKER)
            rows = [("folder", f.name, f"file:{f}", None, None) for f in files]
            frame = spark.createDataFrame(rows, schema)
        else:
            rows = [("kafka", f"warm/0/{i}", None, None, None, data) for i, data in enumerate((image, b""))]
            frame = spark.createDataFrame(rows, schema + ", content binary")
        frame = frame.withColumn("event_time", F.current_timestamp())
        score(frame, model, cfg.max_bytes, cfg.scoring).select("label", "error").collect()
    log.debug("warm-up scoring took %.2fs", time.monotonic() - started)


def start_query(spark, cfg: StreamConfig, processor: BatchProcessor):
    frame = source_frame(spark, cfg)
    writer = (
        frame.writeStream.queryName(f"memestream-{cfg.source}")
        .foreachBatch(processor)
        .option("checkpointLocation", str(cfg.checkpoint / "spark"))
    )
    writer = writer.trigger(availableNow=True) if cfg.available_now else writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()


def run_stream(
    spark, cfg: StreamConfig, stop: StopFlag | None = None, until: Callable[[LiveSummary], bool] | None = None
) -> LiveSummary:
    """Run until stopped (or, with ``available_now``, until the input is drained, or ``until``)."""
    OutputTables(cfg.output).ensure_writable()
    tables = OutputTables(cfg.output, writer=check_checkpoint(cfg))
    models = ModelHolder(cfg.model_dir, cfg.model_version)
    if cfg.scoring != "spark":
        engine = "the Python worker (numpy)" if local_model(models.model) is not None else "Spark ML (JVM)"
        log.info("model %s/%s runs in %s", models.model.version, models.model.name, engine)
    warm_up(spark, models.model, cfg)
    summary = LiveSummary(tables.label_totals(), quiet=cfg.quiet)
    processor = BatchProcessor(cfg, tables, models, summary)
    mover = None
    if cfg.source == "folder" and cfg.watch and cfg.inbox is not None:
        from producers.folder import InboxMover

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
    try:
        while query.isActive:
            if until is not None and until(summary):
                stop.event.set()
            if stop.event.is_set():
                log.info("%s: stopping after the current batch", f"{stop.signal_name} received" if stop.signal_name else "done")
                _graceful_stop(query)
                break
            query.awaitTermination(0.5)
    finally:
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
