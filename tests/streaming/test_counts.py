from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from streaming.counts import WindowSpec, parse_duration, watermark_after, window_deltas, with_late


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


def test_window_deltas_count_every_labelled_on_time_row_in_each_of_its_windows(spark):
    """Every labelled row lands in window/slide windows, each starting on a slide boundary."""
    base = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    rng = np.random.default_rng(5)
    times = [base + timedelta(seconds=int(s)) for s in rng.integers(0, 1800, 200)]
    labels = [["doom", "cats", None][i % 3] for i in range(200)]
    df = spark.createDataFrame(list(zip(times, labels)), "event_time timestamp, label string")
    spec = WindowSpec(window_s=600, slide_s=120, watermark_s=0)
    rows = window_deltas(with_late(df, None), spec).collect()
    got = {(r["window_start"].replace(tzinfo=timezone.utc), r["label"]): r["count"] for r in rows}
    expected: dict = {}
    for t, label in zip(times, labels):
        if label is None:
            continue
        last = int(t.timestamp()) // 120 * 120
        for k in range(5):
            start = last - 120 * k
            if start <= t.timestamp() < start + 600:
                key = (datetime.fromtimestamp(start, timezone.utc), label)
                expected[key] = expected.get(key, 0) + 1
    assert got == expected
    assert sum(got.values()) == 5 * sum(lbl is not None for lbl in labels)


def test_late_rows_are_not_counted_but_on_time_rows_are(spark):
    base = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    df = spark.createDataFrame([(base, "doom"), (base + timedelta(hours=1), "doom")], "event_time timestamp, label string")
    marked = with_late(df, base + timedelta(seconds=1))
    assert [r["late"] for r in marked.orderBy("event_time").collect()] == [True, False]
    assert [r["count"] for r in window_deltas(marked, WindowSpec(60, 60, 0)).collect()] == [1]
    assert [r["late"] for r in with_late(df, None).collect()] == [False, False]
    assert watermark_after(None, WindowSpec(60, 60, 30)) is None
    assert watermark_after(base, WindowSpec(60, 60, 30)) == base - timedelta(seconds=30)
