"""Downstream streaming over the ``predictions`` Delta table: an out-of-distribution rate alert.

The stream's output is a Delta table, so another Structured Streaming query can follow it::

    preds = spark.readStream.format("delta").load("OUTPUT/predictions")
    ood_rate(preds, "10 minutes", 0.2).writeStream.outputMode("update").format("console").start()

Each new Delta version (one per micro-batch of ``meme-stream``) arrives once; the transform
is pure DataFrame -> DataFrame, so it runs the same on a static ``spark.read`` of the table.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

#: The alert's default: more than one image in five that belongs to none of the model's classes.
DEFAULT_THRESHOLD = 0.2


def ood_rate(predictions: DataFrame, window: str = "10 minutes", threshold: float = DEFAULT_THRESHOLD) -> DataFrame:
    """Per tumbling event-time ``window``: ``window_start, window_end, images`` (rows scored for
    novelty), ``ood`` (of them, out of distribution), ``ood_rate`` and ``alert`` (rate > ``threshold``).
    Rows the novelty check did not score (``ood`` NULL: unreadable inputs) are left out."""
    scored = predictions.where(F.col("ood").isNotNull())
    grouped = scored.groupBy(F.window("event_time", window).alias("w")).agg(
        F.count(F.lit(1)).alias("images"), F.sum(F.col("ood").cast("bigint")).alias("ood"))
    return grouped.select(
        F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"), "images", "ood",
        (F.col("ood") / F.col("images")).alias("ood_rate"),
        (F.col("ood") / F.col("images") > F.lit(threshold)).alias("alert"),
    )
