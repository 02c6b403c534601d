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
                  keep_processed: bool = False) -> StreamSource:
    """Files atomically placed in ``spool`` (never half-written ones), as listing rows
    (path, modificationTime, length): the bytes are read later, in the scoring step.

    ``impl="spool"`` (default): the ``memestream-spool`` Data Source (``streaming.spool_source``),
    whose offsets are the mover's sequence numbers, so its state does not grow with the files
    seen. ``impl="binaryfile"``: Spark's file source, which remembers every file ever seen (kept
    for comparison). Either way processed files are archived/deleted by the query itself right
    after their batch's commit marker is written.
    """
    if impl == "spool":
        from streaming.spool_source import SOURCE_NAME

        return StreamSource(
            SOURCE_NAME,
            {
                "maxFilesPerTrigger": str(max_files_per_trigger),
                "numPartitions": str(num_partitions),
                "keepProcessed": str(keep_processed).lower(),
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


def spark_kafka_source(kafka_cfg: KafkaSourceConfig) -> StreamSource:
    """The topic through Spark's built-in Kafka connector (needs its jar on the classpath)."""
    options = {
        "kafka.bootstrap.servers": kafka_cfg.bootstrap_servers,
        "subscribe": kafka_cfg.topic,
        "startingOffsets": kafka_cfg.starting_offsets,
        "includeHeaders": "true",
        "failOnDataLoss": "true",
        "kafka.max.partition.fetch.bytes": str(kafka_cfg.max_message_bytes),
    }
    if kafka_cfg.max_offsets_per_trigger:
        options["maxOffsetsPerTrigger"] = str(kafka_cfg.max_offsets_per_trigger)
    return StreamSource("kafka", options)


def spark_kafka_frame(raw: DataFrame) -> DataFrame:
    """Rows of Spark's Kafka connector -> frame columns (the same as from our own source)."""
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
