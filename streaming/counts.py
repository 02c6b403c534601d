"""Rolling class counts over event-time windows, as per-batch deltas.

Each micro-batch contributes, for every (window, label), how many of *its* rows fall in
the window. Deltas are written with the batch (exactly once with it), so the table can
be read while the stream runs: the ``class_counts`` view sums deltas per window/label.

Late data: the watermark is the largest event time of earlier batches minus the allowed
delay. Rows older than the watermark are still predicted and stored (never lost), marked
``late``, but no longer change windowed counts, the same contract as Spark's watermark.
Windows follow Spark's ``window(event_time, W, S)``: start = k*S (epoch-aligned), end =
start + W, and a row at t belongs to every window with start <= t < end.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streaming.config import WindowSpec, parse_duration  # noqa: F401 - defined without Spark, for --help


def with_late(df: DataFrame, watermark: datetime | None, event_col: str = "event_time") -> DataFrame:
    """Add ``late``: the row's event time is below ``watermark`` (None: nothing is late yet)."""
    if watermark is None:
        return df.withColumn("late", F.lit(False))
    return df.withColumn("late", F.coalesce(F.col(event_col) < F.lit(watermark), F.lit(False)))


def watermark_after(max_event_time: datetime | None, spec: WindowSpec) -> datetime | None:
    """The watermark a batch sees: the largest event time of earlier batches minus the allowed delay."""
    return None if max_event_time is None else max_event_time - timedelta(seconds=spec.watermark_s)


def window_deltas(df: DataFrame, spec: WindowSpec, label_col: str = "label", event_col: str = "event_time") -> DataFrame:
    """Rows per (window, label) of one batch's labelled, on-time rows (``late`` must be there):
    Spark's own sliding ``window()``, run on the executors like the rest of the batch."""
    win = F.window(event_col, f"{spec.window_s} seconds", f"{spec.slide_s} seconds")
    return (
        df.where(F.col(label_col).isNotNull() & ~F.col("late"))
        .groupBy(win.alias("w"), F.col(label_col).alias("label"))
        .agg(F.count(F.lit(1)).alias("count"))
        .select(F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "label", "count")
    )
