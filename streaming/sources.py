"""Describe each input, and turn its rows into one frame shape, so the query after it does not
care where rows came from.

Frame columns: ``source``, ``origin``, ``path``, ``kafka_key``, ``headers``,
``event_time`` and, after :func:`with_content`, ``content`` / ``load_error`` /
``size_bytes``. This module says *what* to read (:class:`StreamSource`: format, schema,
options) and how to reshape it; ``streaming.query`` alone opens and runs streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from memestream.load import read_files
from streaming.config import KafkaSourceConfig

BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
#: The inbox mover names spooled files ``<sequence number>-<original name>`` (memestream.spool).
SPOOL_PREFIX_RE = r"^[0-9]{19,}-"


@dataclass(frozen=True)
class StreamSource:
    """What ``spark.readStream`` is given for one input (``streaming.query.open_stream`` opens it)."""

    format: str
    options: Mapping[str, str] = field(default_factory=dict)
    schema: str | None = None
    path: str | None = None


def folder_source(spool: Path, max_files_per_trigger: int = 1000, impl: str = "spool", num_partitions: int = 2,
                  keep_processed: bool = False, available_now: bool = False) -> StreamSource:
    """Files atomically placed in ``spool`` (never half-written ones), as listing rows
    (path, modificationTime, length): the bytes are read later, in the scoring step.

    ``impl="spool"`` (default): the ``memestream-spool`` Data Source (``streaming.spool_source``),
    whose offsets are the mover's sequence numbers, so its state does not grow with the files
    seen. ``impl="binaryfile"``: Spark's file source, which remembers every file ever seen (kept
    for comparison). Either way processed files are archived/deleted by the query itself right
    after their batch's commit marker is written. ``available_now``: the query runs with
    ``Trigger.AvailableNow`` (the spool source then answers with everything present at start:
    PySpark 4.1 gives Python sources no availableNow hook of their own; streaming.spool_source).
    """
    if impl == "spool":
        from streaming.spool_source import SOURCE_NAME

        return StreamSource(
            SOURCE_NAME,
            {
                "maxFilesPerTrigger": str(max_files_per_trigger),
                "numPartitions": str(num_partitions),
                "keepProcessed": str(keep_processed).lower(),
                "availableNow": str(available_now).lower(),
            },
            path=str(spool),
        )
    return StreamSource(
        "binaryFile",
        {
            "maxFilesPerTrigger": str(max_files_per_trigger),
            # files are touched when spooled, but a copy may keep an old mtime: never drop by age
            "maxFileAge": "3650d",
        },
        schema=BINARY_FILE_SCHEMA,
        path=str(spool),
    )


def folder_frame(df: DataFrame) -> DataFrame:
    """Listing rows (path, length, modificationTime; from either folder source) -> frame columns."""
    name = F.element_at(F.split(F.col("path"), "/"), -1)  # Spark's paths are not percent-encoded
    return df.select(
        F.lit("folder").alias("source"),
        F.regexp_replace(name, SPOOL_PREFIX_RE, "").alias("origin"),
        F.col("path"),
        F.lit(None).cast(StringType()).alias("kafka_key"),
        F.lit(None).cast(MapType(StringType(), StringType())).alias("headers"),
        F.col("modificationTime").alias("event_time"),
        F.col("length").alias("listed_bytes"),
    )


def kafka_frame(df: DataFrame) -> DataFrame:
    """Kafka source rows (content, kafka_key, headers, topic, partition, offset, event_time) -> frame."""
    return df.select(
        F.lit("kafka").alias("source"),
        F.concat_ws("/", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string")).alias("origin"),
        F.lit(None).cast(StringType()).alias("path"),
        F.col("kafka_key"),
        F.col("headers"),
        F.col("event_time"),
        F.col("content"),
    )


def with_content(df: DataFrame, max_bytes: int) -> DataFrame:
    """Read file bytes for folder rows (size-capped, in the workers); Kafka rows have them."""
    if "content" in df.columns:
        out = df.withColumn("load_error", F.lit(None).cast(StringType()))
    else:
        out = read_files(df, path_col="path", content_col="content", error_col="load_error", max_bytes=max_bytes)
    return out.withColumn("size_bytes", F.length("content").cast("long"))


def check_topic(kafka_cfg: KafkaSourceConfig) -> list[int]:
    """Fail fast, before Spark starts the query: broker unreachable, TLS/SASL refused or topic
    missing -> BrokerError, one line naming broker and topic (Spark's connector would otherwise
    retry or fail deep in a stack trace). Returns the topic's partition ids. kafka-python is used
    for this check only; the records are read by Spark's Kafka source."""
    from kafka import KafkaConsumer

    from memestream.errors import BrokerError

    try:
        consumer = KafkaConsumer(**kafka_cfg.consumer_kwargs())
    except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, timeouts, SSL setup
        from memestream.kafka_diagnose import explain_connect_failure

        why = explain_connect_failure(kafka_cfg.bootstrap_servers, kafka_cfg.security)  # which TLS/SASL step failed
        if why:
            raise BrokerError(f"Kafka broker at {kafka_cfg.bootstrap_servers} for topic {kafka_cfg.topic!r}: {why}") from None
        raise BrokerError(f"expected a Kafka broker at {kafka_cfg.bootstrap_servers} for topic {kafka_cfg.topic!r}, "
                          f"could not connect ({exc})") from None
    try:
        # all topics listed, never one asked for by name (a broker may auto-create it)
        parts = consumer.partitions_for_topic(kafka_cfg.topic) if kafka_cfg.topic in consumer.topics() else None
    finally:
        consumer.close()
    if not parts:
        raise BrokerError(f"expected topic {kafka_cfg.topic!r} on Kafka broker {kafka_cfg.bootstrap_servers}, found none "
                          "(create it: meme-publish --create-topic, or producers.kafka.ensure_topic)")
    return sorted(parts)


def kafka_source(kafka_cfg: KafkaSourceConfig, check: bool = True) -> StreamSource:
    """The topic through Spark's Kafka source (``format("kafka")``, its jar is in every session:
    memestream.jars); ``check`` runs :func:`check_topic` first. Rows -> :func:`spark_kafka_frame`."""
    if check:
        check_topic(kafka_cfg)
    return StreamSource("kafka", kafka_cfg.spark_options())


def spark_kafka_frame(raw: DataFrame) -> DataFrame:
    """Rows of Spark's Kafka source -> frame columns (headers as a utf-8 string map, key as a string)."""
    headers = F.map_from_entries(
        F.transform(F.coalesce(F.col("headers"), F.array()), lambda h: F.struct(h["key"], h["value"].cast("string")))
    )
    return raw.select(
        F.col("value").alias("content"),
        F.col("key").cast("string").alias("kafka_key"),
        headers.alias("headers"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("event_time"),
    ).transform(kafka_frame)
