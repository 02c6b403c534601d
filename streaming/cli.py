"""``meme-stream``: classify images continuously from an inbox folder or a Kafka topic."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from memestream.cli import (
    add_common_flags,
    env_flag,
    positive_float,
    positive_int,
    run_main,
)
from memestream.decode import DEFAULT_MAX_BYTES
from memestream.errors import ConfigError
from memestream.spark import STREAM_DRIVER_JAVA_OPTIONS
from streaming.counts import WindowSpec, parse_duration

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
    env_flag(parser, "--trigger", envvar="MEMESTREAM_TRIGGER", type=positive_float, default=0.5, help="seconds between micro-batches")
    env_flag(parser, "--max-files-per-trigger", envvar="MEMESTREAM_MAX_FILES", type=positive_int, default=1000, help="folder rate limit per batch")
    env_flag(parser, "--window", envvar="MEMESTREAM_WINDOW", type=_duration, default=600, help="class-count window, e.g. '10 minutes'")
    env_flag(parser, "--slide", envvar="MEMESTREAM_SLIDE", type=_duration, default=60, help="class-count window slide, e.g. '1 minute'")
    env_flag(parser, "--watermark", envvar="MEMESTREAM_WATERMARK", type=_duration, default=3600, help="how late an event may be and still be counted")
    env_flag(parser, "--processed", envvar="MEMESTREAM_PROCESSED", default="archive", choices=["archive", "delete", "keep"],
             help="what happens to a processed input file (after its batch is committed)")
    env_flag(parser, "--max-bytes", envvar="MEMESTREAM_MAX_BYTES", type=positive_int, default=DEFAULT_MAX_BYTES, help="inputs above this size are quarantined")
    env_flag(parser, "--kafka-impl", envvar="MEMESTREAM_KAFKA_IMPL", default="python", choices=["python", "spark"],
             help="Kafka reader: python (built in, kafka-python) or spark (Spark's spark-sql-kafka-0-10 connector at the installed "
             "PySpark's version, fetched from Maven Central once; not served for every version)")
    env_flag(parser, "--scoring", envvar="MEMESTREAM_SCORING", default="auto", choices=["auto", "python", "spark"],
             help="where the model runs: python (numpy in the worker that decodes, one pass per image; logistic "
             "regression and MLP models), spark (the PipelineModel in the JVM; any model), auto (python when possible)")
    parser.add_argument("--available-now", action="store_true", help="process everything available, then exit")
    parser.add_argument("--no-watch", action="store_true", help="do not run the inbox mover (another meme-drop --watch does it)")
    parser.add_argument("--demo", action="store_true", help="make sample data, train a model if none exists, stream a few images, show results")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master URL (default: local[*])")
    env_flag(parser, "--driver-memory", envvar="MEMESTREAM_DRIVER_MEMORY", default=None, help="Spark driver memory, e.g. 2g")
    env_flag(parser, "--driver-java-options", envvar="MEMESTREAM_DRIVER_JAVA_OPTIONS", default=STREAM_DRIVER_JAVA_OPTIONS,
             help="extra JVM options for the driver (default: C1 JIT only: the JVM only orchestrates, and C2 "
             "compilation competes with the Python workers for the cores; '' for the JVM's default)")
    try:
        from streaming.kafka_source import add_kafka_flags
    except ImportError:  # pragma: no cover - the Kafka module is part of the package
        add_kafka_flags = None
    if add_kafka_flags is not None:
        add_kafka_flags(parser)
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace):
    from streaming.query import StreamConfig

    data = Path(args.data_dir)
    try:
        window = WindowSpec(int(args.window), int(args.slide), int(args.watermark))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kafka = None
    if args.source == "kafka":
        from streaming.kafka_source import kafka_config_from_args

        kafka = kafka_config_from_args(args)
    return StreamConfig(
        source=args.source,
        output=Path(args.output) if args.output else data / "output",
        checkpoint=Path(args.checkpoint) if args.checkpoint else data / "checkpoints" / args.source,
        model_dir=Path(args.model) if args.model else data / "models",
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
        kafka=kafka,
        kafka_impl=args.kafka_impl,
        scoring=args.scoring,
    )


def _run(args: argparse.Namespace) -> int:
    if args.demo:
        from streaming.demo import run_demo

        return run_demo(args)
    cfg = config_from_args(args)
    from memestream.modelstore import resolve_version_dir

    resolve_version_dir(cfg.model_dir, cfg.model_version)  # clear error before Spark starts
    from memestream.spark import build_spark
    from streaming.query import run_stream

    conf = None
    if cfg.source == "kafka" and cfg.kafka_impl == "spark":
        from memestream.jars import spark_kafka_conf

        conf = spark_kafka_conf()  # Spark's Kafka source jars (Maven, cached), or one clear line
    spark = build_spark(f"meme-stream-{cfg.source}", master=args.master, driver_memory=args.driver_memory,
                        driver_java_options=args.driver_java_options, conf=conf)
    summary = run_stream(spark, cfg)
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
