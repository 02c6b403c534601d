"""Turn each input into one frame shape, so the query after it does not care where rows came from.

Frame columns: ``source``, ``origin``, ``path``, ``kafka_key``, ``headers``,
``event_time`` and, after :func:`with_content`, ``content`` / ``load_error`` /
``size_bytes``. Only functions that build the *source* DataFrames live here; the query
module alone starts and stops streams.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from memestream.load import read_files

BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
FRAME_COLUMNS = ("source", "origin", "path", "kafka_key", "headers", "event_time")
#: The inbox mover names spooled files ``<nanoseconds>-<original name>``.
SPOOL_PREFIX_RE = r"^[0-9]{19,}-"


@dataclass(frozen=True)
class FolderSourceConfig:
    spool: Path
    max_files_per_trigger: int = 1000


def folder_frame(df: DataFrame) -> DataFrame:
    """binaryFile listing rows (path, length, modificationTime) -> frame columns."""
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


def folder_stream(spark, cfg: FolderSourceConfig) -> DataFrame:
    """Stream of files atomically placed in ``cfg.spool`` (never half-written ones)."""
    reader = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("maxFilesPerTrigger", str(cfg.max_files_per_trigger))
        # files are touched when spooled, but a copy may keep an old mtime: never drop by age
        .option("maxFileAge", "3650d")
    )
    # Processed files are archived/deleted by the query itself right after their batch's
    # commit marker is written (Spark's cleanSource acts a batch later, or never with availableNow).
    return reader.load(str(cfg.spool)).select("path", "length", "modificationTime").transform(folder_frame)


def spark_kafka_stream(spark, kafka_cfg) -> DataFrame:
    """The same frame from Spark's built-in Kafka connector (needs its jar on the classpath)."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_cfg.bootstrap_servers)
        .option("subscribe", kafka_cfg.topic)
        .option("startingOffsets", kafka_cfg.starting_offsets)
        .option("includeHeaders", "true")
        .option("failOnDataLoss", "true")
        .option("kafka.max.partition.fetch.bytes", str(kafka_cfg.max_message_bytes))
    )
    if kafka_cfg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(kafka_cfg.max_offsets_per_trigger))
    raw = reader.load()
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
