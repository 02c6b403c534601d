"""``meme-stream``: classify images continuously from an inbox folder or a Kafka topic."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from memestream.abspath import absolute, is_uri
from memestream.cli import (
    add_common_flags,
    byte_size,
    env_flag,
    positive_float,
    positive_int,
    run_main,
)
from memestream.decode import DEFAULT_MAX_BYTES
from memestream.isolation import DEFAULT_TIME_CAP_S
from memestream.errors import ConfigError
from memestream.inference import ENGINES
from memestream.kafka import DEFAULT_MAX_MESSAGE_BYTES, add_security_flags, security_from_args
from memestream.modelstore import resolve_version_dir
from memestream.novelty import DEFAULT_OOD_MODE, OOD_MODES
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES
from memestream.spark import STREAM_DRIVER_JAVA_OPTIONS, UI_CONF, session_for, stop_spark, ui_url
from streaming.config import DEFAULT_TRIGGER_S, KafkaSourceConfig, StreamConfig
from streaming.config import WindowSpec, parse_duration

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  meme-stream --demo                           # sample data, a model, a few images: all made for you
  meme-stream --demo --source kafka            # same, through a Kafka broker started for you
  meme-stream --model models/ --inbox inbox/ --output out/    # classify files dropped into inbox/
  meme-stream --source kafka --bootstrap-servers kafka:9092 --topic memes --model models/ --output out/
  meme-stream --available-now ...              # process what is there, then exit

Files dropped into --inbox are moved (once complete) to --spool, classified, then archived
(--processed archive|delete|keep). Outputs under --output: predictions/, quarantine/,
class_counts/ (Parquet, partitioned by date=); query them with meme-query.
"""


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-stream",
        description="Classify meme images continuously (Spark Structured Streaming) into a Parquet predictions "
        "table, a quarantine table and rolling class counts, exactly once.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--source", envvar="MEMESTREAM_SOURCE", default="folder", choices=["folder", "kafka"], help="where images come from")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_DATA_DIR", default="memestream-data",
             help="base folder for every default path below")
    env_flag(parser, "--inbox", envvar="MEMESTREAM_INBOX", default=None, help="folder people drop images into (default: DATA_DIR/inbox)")
    env_flag(parser, "--spool", envvar="MEMESTREAM_SPOOL", default=None, help="folder Spark reads; complete files are moved here (default: DATA_DIR/spool)")
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", default=None, help="output tables folder (default: DATA_DIR/output)")
    env_flag(parser, "--checkpoint", envvar="MEMESTREAM_CHECKPOINT", default=None, help="checkpoint folder (default: DATA_DIR/checkpoints/SOURCE)")
    env_flag(parser, "--model", envvar="MEMESTREAM_MODEL", default=None, help="model directory from meme-train (default: DATA_DIR/models)")
    env_flag(parser, "--model-version", envvar="MEMESTREAM_MODEL_VERSION", default=None, help="pin one model version (default: follow CURRENT)")
    env_flag(parser, "--trigger", envvar="MEMESTREAM_TRIGGER", type=positive_float, default=DEFAULT_TRIGGER_S,
             help=f"seconds between micro-batch starts (default {DEFAULT_TRIGGER_S}; a batch that takes longer is followed at once)")
    env_flag(parser, "--max-files-per-trigger", envvar="MEMESTREAM_MAX_FILES", type=positive_int, default=1000, help="folder rate limit per batch")
    env_flag(parser, "--window", envvar="MEMESTREAM_WINDOW", type=_duration, default=600, help="class-count window, e.g. '10 minutes'")
    env_flag(parser, "--slide", envvar="MEMESTREAM_SLIDE", type=_duration, default=60, help="class-count window slide, e.g. '1 minute'")
    env_flag(parser, "--watermark", envvar="MEMESTREAM_WATERMARK", type=_duration, default=3600, help="how late an event may be and still be counted")
    env_flag(parser, "--processed", envvar="MEMESTREAM_PROCESSED", default="archive", choices=["archive", "delete", "keep"],
             help="what happens to a processed input file (after its batch is committed)")
    env_flag(parser, "--max-bytes", envvar="MEMESTREAM_MAX_BYTES", type=positive_int, default=DEFAULT_MAX_BYTES, help="inputs above this size are quarantined")
    env_flag(parser, "--time-cap", envvar="MEMESTREAM_TIME_CAP", type=float, default=DEFAULT_TIME_CAP_S,
             help="seconds one input may take to decode and score in a worker; past it the worker is ended and the "
             "batch is scored again with each input in its own process, so a hanging (or crashing) input is "
             "quarantined as decoder_timeout (decoder_crashed); 0 turns the cap off")
    env_flag(parser, "--worker-memory", envvar="MEMESTREAM_WORKER_MEMORY", type=byte_size, default="4g",
             help="address-space cap of each Python worker (RLIMIT_AS), set before it decodes: an input whose decoding "
             "would need more fails alone, with a coded error, instead of the machine running out of memory; 0 turns it off")
    env_flag(parser, "--max-isolations", envvar="MEMESTREAM_MAX_ISOLATIONS", type=positive_int, default=10,
             help="batches that may fail in a worker and be isolated within an hour before the stream stops "
             "(many failing inputs are an outage, not a poison pill)")
    env_flag(parser, "--folder-source", envvar="MEMESTREAM_FOLDER_SOURCE", default="spool", choices=["spool", "binaryfile"],
             help="folder reader: spool (built in; offsets are the inbox mover's sequence numbers, so its state stays "
             "constant) or binaryfile (Spark's file source; remembers every file it has seen)")
    env_flag(parser, "--text", envvar="MEMESTREAM_TEXT", default=DEFAULT_TEXT_MODE, choices=list(TEXT_MODES),
             help="the model's OCR text branch: off, cascade (OCR only when the image branch is unsure) or always")
    env_flag(parser, "--ood", envvar="MEMESTREAM_OOD", default=DEFAULT_OOD_MODE, choices=list(OOD_MODES),
             help="images unlike the training set: off, flag (keep the label, ood = true) or reject (label NULL, "
                  "error_code out_of_distribution, counted as 'unknown')")
    env_flag(parser, "--scoring", envvar="MEMESTREAM_SCORING", default="auto", choices=ENGINES,
             help="where the model runs: python (numpy in the worker that decodes, one pass per image; logistic "
             "regression and MLP models), spark (the PipelineModel in the JVM; any model), auto (python when possible)")
    parser.add_argument("--available-now", action="store_true", help="process everything available, then exit")
    parser.add_argument("--no-watch", action="store_true", help="do not run the inbox mover (another meme-drop --watch does it)")
    parser.add_argument("--demo", action="store_true", help="make sample data, train a model if none exists, stream a few images, show results")
    parser.add_argument("--no-ui", action="store_true", default=os.environ.get("MEMESTREAM_NO_UI", "").lower() in ("1", "true", "yes"),
                        help="do not start the Spark UI (default: on, http://127.0.0.1:4040 or the next free port) "
                        "[env: MEMESTREAM_NO_UI=1]")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master URL (default: local[*])")
    env_flag(parser, "--driver-memory", envvar="MEMESTREAM_DRIVER_MEMORY", default=None, help="Spark driver memory, e.g. 2g")
    env_flag(parser, "--driver-java-options", envvar="MEMESTREAM_DRIVER_JAVA_OPTIONS", default=STREAM_DRIVER_JAVA_OPTIONS,
             help="extra JVM options for the driver (default: none; the driver JVM runs the Delta commits, which "
             "C2 JIT compiles; -XX:TieredStopAtLevel=1 saves CPU at start-up and gets a 240 MB code cache)")
    add_retention_flags(parser)
    add_kafka_flags(parser)
    add_common_flags(parser)
    return parser


def add_retention_flags(parser: argparse.ArgumentParser) -> None:
    """Bounded output tables: in-stream OPTIMIZE/VACUUM and retention (streaming.upkeep)."""
    group = parser.add_argument_group("output upkeep (runs inside the stream)")
    env_flag(group, "--compact-every-batches", envvar="MEMESTREAM_COMPACT_EVERY_BATCHES", type=positive_int, default=50,
             help="OPTIMIZE the recent days and VACUUM the Delta tables (as meme-compact does) every N committed batches")
    env_flag(group, "--compact-every-minutes", envvar="MEMESTREAM_COMPACT_EVERY_MINUTES", type=positive_float, default=10.0,
             help="... or every M minutes when something was committed since, whichever comes first")
    env_flag(group, "--retention-days", envvar="MEMESTREAM_RETENTION_DAYS", type=positive_int, default=None,
             help="delete rows of days older than D days (DELETE + VACUUM at each in-stream upkeep; default: keep all)")
    group.add_argument("--no-compact", action="store_true",
                       default=os.environ.get("MEMESTREAM_NO_COMPACT", "").lower() in ("1", "true", "yes"),
                       help="no upkeep inside the stream (run meme-compact yourself) [env: MEMESTREAM_NO_COMPACT=1]")


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for a Kafka input; env fallbacks MEMESTREAM_KAFKA_*."""
    group = parser.add_argument_group("Kafka input")
    env_flag(group, "--bootstrap-servers", envvar="MEMESTREAM_KAFKA_BOOTSTRAP", help="HOST:PORT[,HOST:PORT]")
    env_flag(group, "--topic", envvar="MEMESTREAM_KAFKA_TOPIC", help="topic to read")
    env_flag(group, "--starting-offsets", envvar="MEMESTREAM_KAFKA_STARTING_OFFSETS", default="earliest",
             choices=["earliest", "latest"], help="where a new query (no checkpoint) starts")
    env_flag(group, "--max-offsets-per-trigger", envvar="MEMESTREAM_KAFKA_MAX_OFFSETS_PER_TRIGGER",
             type=positive_int, default=1000, help="at most this many records per micro-batch, spread across partitions "
             "(a backlog is read in bounded batches, not all at once)")
    env_flag(group, "--max-message-bytes", envvar="MEMESTREAM_KAFKA_MAX_MESSAGE_BYTES", type=positive_int,
             default=DEFAULT_MAX_MESSAGE_BYTES, help="largest record to fetch (consumer fetch sizes)")
    env_flag(group, "--kafka-poll-timeout-ms", envvar="MEMESTREAM_KAFKA_POLL_TIMEOUT_MS", type=positive_int,
             default=120_000, help="one consumer poll in a read task (Spark's kafkaConsumer.pollTimeoutMs)")
    add_security_flags(parser)


def kafka_config_from_args(
    args: argparse.Namespace, bootstrap_servers: str | None = None, topic: str | None = None
) -> KafkaSourceConfig:
    """The Kafka flags as a config; ``bootstrap_servers``/``topic`` replace the flags' values (the demo's broker)."""
    bootstrap_servers = bootstrap_servers or args.bootstrap_servers
    topic = topic or args.topic
    if not bootstrap_servers or not topic:
        raise ConfigError("expected --bootstrap-servers and --topic (or MEMESTREAM_KAFKA_BOOTSTRAP and "
                          f"MEMESTREAM_KAFKA_TOPIC) for a Kafka input, found {bootstrap_servers!r} and {topic!r}")
    mopt = args.max_offsets_per_trigger
    return KafkaSourceConfig(
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        starting_offsets=args.starting_offsets or "earliest",
        max_offsets_per_trigger=int(mopt) if mopt else None,
        max_message_bytes=int(args.max_message_bytes),
        poll_timeout_ms=int(args.kafka_poll_timeout_ms),
        security=security_from_args(args),
    )


def _location(text: str) -> Path | str:
    """A local folder as a Path; a Hadoop URI (``hdfs://``, ``s3a://``, ``file:``...) stays a string
    (``Path`` would fold ``hdfs://nn/x`` into ``hdfs:/nn/x``)."""
    return text if is_uri(text) else Path(text)


def config_from_args(args: argparse.Namespace, kafka: KafkaSourceConfig | None = None) -> StreamConfig:
    """The flags as a StreamConfig (default paths under ``--data-dir``); ``kafka`` replaces the Kafka flags."""
    data = Path(args.data_dir)
    try:
        window = WindowSpec(int(args.window), int(args.slide), int(args.watermark))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.source == "kafka" and kafka is None:
        kafka = kafka_config_from_args(args)
    return StreamConfig(
        source=args.source,
        output=_location(args.output) if args.output else data / "output",
        checkpoint=_location(args.checkpoint) if args.checkpoint else data / "checkpoints" / args.source,
        model_dir=_location(args.model) if args.model else data / "models",
        inbox=Path(args.inbox) if args.inbox else data / "inbox",
        spool=Path(args.spool) if args.spool else data / "spool",
        archive=data / "archive",
        quarantine_dir=data / "quarantine",
        model_version=args.model_version,
        trigger_seconds=float(args.trigger),
        available_now=bool(args.available_now),
        max_files_per_trigger=int(args.max_files_per_trigger),
        processed=args.processed,
        window=window,
        max_bytes=int(args.max_bytes),
        watch=not args.no_watch,
        quiet=bool(args.quiet),
        kafka=kafka if args.source == "kafka" else None,
        folder_impl=args.folder_source,
        scoring=args.scoring,
        text=args.text,
        ood=args.ood,
        compact_every_batches=None if args.no_compact else int(args.compact_every_batches),
        compact_every_s=None if args.no_compact else float(args.compact_every_minutes) * 60,
        retention_days=int(args.retention_days) if args.retention_days is not None else None,
        time_cap_s=float(args.time_cap) or None,
        worker_memory=int(args.worker_memory) or None,
        max_isolations=int(args.max_isolations),
    )


def _spark(args: argparse.Namespace, app: str, conf: dict[str, str] | None = None):
    """``(spark, created)``: a session of this process's caller (a test, a notebook) is used and
    left running; one built here is stopped here."""
    return session_for(app, master=args.master, driver_memory=args.driver_memory,
                       driver_java_options=args.driver_java_options, conf=conf)


def _demo(args: argparse.Namespace) -> int:
    """``--demo``: the flags as usual, plus a broker started for a Kafka demo without one."""
    # Lazy: the demo pulls in Spark, training and the stream; --help and flag errors stay fast.
    from streaming.demo import DEMO_TOPIC, demo_broker, own_broker_checkpoint, run_demo

    kafka_broker = args.source == "kafka" and not args.bootstrap_servers
    with demo_broker() if kafka_broker else contextlib.nullcontext(args.bootstrap_servers) as bootstrap:
        kafka = kafka_config_from_args(args, bootstrap, args.topic or DEMO_TOPIC) if args.source == "kafka" else None
        cfg = config_from_args(args, kafka)
        if kafka_broker and not args.checkpoint:
            cfg = own_broker_checkpoint(cfg)
        spark, created = _spark(args, "meme-stream-demo")
        try:
            return run_demo(spark, cfg, sample_dir=absolute(Path(args.data_dir)) / "sample")
        finally:
            if created:
                stop_spark(spark)


def _run(args: argparse.Namespace) -> int:
    if args.demo:
        return _demo(args)
    cfg = config_from_args(args)
    if not is_uri(cfg.model_dir):  # a Hadoop URI is read through Spark: checked when the model loads
        resolve_version_dir(cfg.model_dir, cfg.model_version)  # clear error before Spark starts
    # Lazy: the query imports pyspark (seconds); --help and flag errors do not need it.
    from streaming import query

    conf = {} if args.no_ui else dict(UI_CONF)
    conf["spark.scheduler.mode"] = "FAIR"  # the upkeep's OPTIMIZE/VACUUM share the cores with batches (streaming.upkeep)
    # Ctrl-C from the start sets a flag the run checks between steps: PySpark's own SIGINT
    # handler (installed with the SparkContext) calls into the JVM from inside whatever JVM
    # call the main thread is in, which fails with a reentrant-call Py4J error
    stop = query.StopFlag()
    stop.install()
    spark, created = _spark(args, f"meme-stream-{cfg.source}", conf)
    stop.install()  # again: the SparkContext replaced it
    url = None if args.no_ui else ui_url(spark)
    if url:
        print(f"Spark UI: {url} (Structured Streaming tab: {url.rstrip('/')}/StreamingQuery/)", file=sys.stderr)
    try:
        summary = query.run_stream(spark, cfg, stop=stop)
    finally:
        if created:
            stop_spark(spark)  # in order, before exit: never left to the JVM's shutdown hook (local-cluster)
    print(
        f"processed {summary.rows} images in {summary.batches} batches ({summary.errors} quarantined); "
        f"tables in {cfg.output}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
