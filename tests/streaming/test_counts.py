from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from streaming.counts import (
    WindowSpec,
    bucket_deltas,
    bucket_seconds,
    bucket_start,
    parse_duration,
    watermark_after,
    window_starts,
    with_late,
)


def test_parse_duration_accepts_spark_and_short_forms():
    assert parse_duration("10 minutes") == 600
    assert parse_duration("30s") == 30
    assert parse_duration("1h") == 3600
    assert parse_duration("90") == 90
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")


def test_window_spec_rejects_slide_longer_than_window():
    with pytest.raises(ValueError, match="slide"):
        WindowSpec(window_s=60, slide_s=120)


def _spark_windows(df, spec: WindowSpec) -> dict:
    """The reference: Spark's own sliding ``window()`` over the labelled, on-time rows."""
    from pyspark.sql import functions as F

    win = F.window("event_time", f"{spec.window_s} seconds", f"{spec.slide_s} seconds")
    rows = (df.where(F.col("label").isNotNull() & ~F.col("late")).groupBy(win.alias("w"), "label").count()
            .select("w.start", "w.end", "label", "count").collect())
    return {(r["start"].astimezone(timezone.utc), r["end"].astimezone(timezone.utc), r["label"]): r["count"] for r in rows}


def _bucketed(df, spec: WindowSpec) -> dict:
    """What the stream does: rows per (bucket, label) on the executors, windows on the driver."""
    from pyspark.sql import functions as F

    rows = (df.where(F.col("label").isNotNull() & ~F.col("late")).groupBy(bucket_start(spec).alias("b"), "label")
            .count().collect())
    return {(start, end, label): n for start, end, label, n in bucket_deltas([(r["b"], r["label"], r["count"]) for r in rows], spec)}


@pytest.mark.parametrize("window_s,slide_s", [(600, 120), (600, 90), (60, 60), (7, 3), (3600, 600)])
def test_bucketed_counts_equal_spark_window_counts(spark, window_s, slide_s):
    """Counting per gcd(W, S)-second bucket and spreading each bucket over its windows on the
    driver gives exactly the counts of Spark's window(): sub-second times, times on window
    edges, times before 1970 and late rows included."""
    base = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    rng = np.random.default_rng(window_s + slide_s)
    micros = [int(m) for m in rng.integers(-2_000_000_000, 2_000_000_000, 300)]
    times = [base + timedelta(microseconds=m) for m in micros]
    times += [base + timedelta(seconds=slide_s * k) for k in range(-3, 4)]  # exactly on window starts
    times += [base + timedelta(seconds=slide_s * k, microseconds=-1) for k in range(-3, 4)]  # a microsecond before
    times += [datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=timezone.utc), datetime(1969, 12, 31, 23, 50, tzinfo=timezone.utc)]
    labels = [["doom", "cats", None][i % 3] for i in range(len(times))]
    df = spark.createDataFrame(list(zip(times, labels)), "event_time timestamp, label string")
    df = with_late(df, base - timedelta(seconds=1000))
    spec = WindowSpec(window_s=window_s, slide_s=slide_s, watermark_s=0)
    expected = _spark_windows(df, spec)
    assert expected and sum(expected.values()) > 0
    assert _bucketed(df, spec) == expected


def test_window_starts_are_every_slide_boundary_within_a_window_before_the_time():
    spec = WindowSpec(window_s=600, slide_s=120)
    assert list(window_starts(1200, spec)) == [720, 840, 960, 1080, 1200]
    assert list(window_starts(1199, spec)) == [600, 720, 840, 960, 1080]
    assert list(window_starts(-60, WindowSpec(60, 60))) == [-60]
    assert bucket_seconds(WindowSpec(600, 90)) == 30
    counts = bucket_deltas([(1200, "doom", 2), (1210, "doom", 1), (1200, "cats", 1)], WindowSpec(600, 600))
    assert [(s.timestamp(), e.timestamp(), label, n) for s, e, label, n in counts] == [(1200, 1800, "cats", 1), (1200, 1800, "doom", 3)]


def test_late_rows_are_marked_against_the_watermark(spark):
    base = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    df = spark.createDataFrame([(base, "doom"), (base + timedelta(hours=1), "doom")], "event_time timestamp, label string")
    marked = with_late(df, base + timedelta(seconds=1))
    assert [r["late"] for r in marked.orderBy("event_time").collect()] == [True, False]
    assert sum(_bucketed(marked, WindowSpec(60, 60, 0)).values()) == 1
    assert [r["late"] for r in with_late(df, None).collect()] == [False, False]
    assert watermark_after(None, WindowSpec(60, 60, 30)) is None
    assert watermark_after(base, WindowSpec(60, 60, 30)) == base - timedelta(seconds=30)
