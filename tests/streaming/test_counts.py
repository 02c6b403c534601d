from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pyspark.sql import functions as F

from streaming.counts import WindowSpec, late_mask, parse_duration, window_deltas


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


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


def test_window_deltas_match_spark_window_function(spark):
    """Our per-batch counting must agree with Spark's own sliding window() semantics."""
    base = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    rng = np.random.default_rng(5)
    times = [base + timedelta(seconds=int(s)) for s in rng.integers(0, 1800, 200)]
    labels = [["doom", "cats", None][i % 3] for i in range(200)]
    spec = WindowSpec(window_s=600, slide_s=120, watermark_s=0)
    ours = window_deltas(labels, np.array([_us(t) for t in times]), np.zeros(200, dtype=bool), spec)
    got = {(r["window_start"], r["label"]): r["count"] for r in ours.to_pylist()}

    df = spark.createDataFrame(list(zip(times, labels)), "t timestamp, label string").where("label is not null")
    rows = df.groupBy(F.window("t", "600 seconds", "120 seconds"), "label").count().collect()
    expected = {(r["window"]["start"].replace(tzinfo=timezone.utc), r["label"]): r["count"] for r in rows}
    assert got == expected
    assert sum(got.values()) == 5 * sum(lbl is not None for lbl in labels)  # each row in window/slide windows


def test_late_rows_are_not_counted_but_on_time_rows_are():
    base = _us(datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc))
    events = np.array([base, base + 3_600_000_000], dtype=np.int64)
    late = late_mask(events, watermark_us=base + 1)
    assert late.tolist() == [True, False]
    deltas = window_deltas(["doom", "doom"], events, late, WindowSpec(60, 60, 0))
    assert deltas.column("count").to_pylist() == [1]
    assert late_mask(events, None).tolist() == [False, False]
