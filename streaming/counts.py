"""Rolling class counts over event-time windows, as per-batch deltas.

Each micro-batch contributes, for every (window, label), how many of *its* rows fall in
the window. Deltas are written with the batch (exactly once with it), so the table can
be read while the stream runs: the ``class_counts`` view sums deltas per window/label.

Late data: the watermark is the largest event time of earlier batches minus the allowed
delay. Rows older than the watermark are still predicted and stored (never lost), marked
``late``, but no longer change windowed counts, the same contract as Spark's watermark.
Windows follow Spark's ``window(event_time, W, S)``: start = k*S (epoch-aligned), end =
start + W, and a row at t belongs to every window with start <= t < end.

The batch's one aggregation job (``streaming.batch.batch_summary``) counts rows per (label,
bucket), a bucket being ``gcd(W, S)`` seconds wide and aligned to it. Every window edge is a
multiple of that width, so all rows of a bucket fall in exactly the same windows, and
:func:`bucket_deltas` spreads each bucket's count over them on the driver: a handful of
numbers per batch instead of a job with a shuffle over its rows. The tests hold it to Spark's
own ``window()`` on the same rows.
"""
from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Iterable

from pyspark.sql import Column, DataFrame
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


def bucket_seconds(spec: WindowSpec) -> int:
    """Width of the event-time buckets whose rows share their windows: gcd(window, slide)."""
    return math.gcd(spec.window_s, spec.slide_s)


def bucket_start(spec: WindowSpec, event_col: str = "event_time") -> Column:
    """The row's bucket as epoch seconds (a multiple of :func:`bucket_seconds`; NULL without an
    event time), in integer arithmetic: exact to the microsecond, before 1970 too."""
    micros = f"unix_micros(`{event_col}`)"
    return F.expr(f"({micros} - pmod({micros}, {bucket_seconds(spec) * 1_000_000}L)) div 1000000")


def window_starts(bucket_s: int, spec: WindowSpec) -> range:
    """Epoch seconds of every window start holding the bucket at ``bucket_s``: k*S with
    k*S <= t < k*S + W, the windows Spark's ``window()`` puts any row of that bucket in."""
    first = (bucket_s - spec.window_s) // spec.slide_s + 1
    last = bucket_s // spec.slide_s
    return range(first * spec.slide_s, last * spec.slide_s + 1, spec.slide_s)


def bucket_deltas(buckets: Iterable[tuple[int, str, int]], spec: WindowSpec) -> list[tuple[datetime, datetime, str, int]]:
    """``(bucket_s, label, rows)`` of one batch's labelled, on-time rows -> ``(window_start,
    window_end, label, count)`` in UTC: what grouping the rows by Spark's ``window()`` and
    label gives."""
    counts: Counter[tuple[int, str]] = Counter()
    for bucket_s, label, rows in buckets:
        for start in window_starts(bucket_s, spec):
            counts[(start, label)] += rows
    utc = timezone.utc
    return [(datetime.fromtimestamp(start, utc), datetime.fromtimestamp(start + spec.window_s, utc), label, n)
            for (start, label), n in sorted(counts.items())]
