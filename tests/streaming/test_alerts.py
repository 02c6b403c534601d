"""A downstream Structured Streaming query over the predictions Delta table: the OOD-rate alert."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streaming.alerts import ood_rate
from streaming.schema import table_uri

W0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _rows(start: int, oods: list[bool | None], minute: int) -> list[dict]:
    return [{"image_id": f"{start + i:064x}", "event_time": W0 + timedelta(minutes=minute, seconds=i), "ood": ood,
             "label": None if ood else "doom", "batch_id": start, "writer": "main"} for i, ood in enumerate(oods)]


def test_ood_rate_alert_follows_new_delta_versions(spark, tmp_path, delta_output):
    out = tmp_path / "output"
    out.mkdir()
    # version 0: window 12:00 has 1 OOD image in 4 (and an unreadable input, not scored)
    delta_output(out, "predictions", _rows(0, [False, False, True, False, None], minute=1))
    preds = spark.readStream.format("delta").load(table_uri(out, "predictions"))
    query = (ood_rate(preds, "10 minutes", 0.3).writeStream.outputMode("complete").format("memory")
             .queryName("ood_alerts").option("checkpointLocation", str(tmp_path / "ckpt")).start())
    try:
        query.processAllAvailable()
        first = [r.asDict() for r in spark.sql("SELECT * FROM ood_alerts ORDER BY window_start").collect()]
        assert [(r["images"], r["ood"], r["ood_rate"], r["alert"]) for r in first] == [(4, 1, 0.25, False)]
        # version 1: two more OOD images in the same window (alert), and a quiet window at 12:10
        delta_output(out, "predictions", _rows(100, [True, True], minute=2) + _rows(200, [False, False], minute=12))
        query.processAllAvailable()
        rows = [r.asDict() for r in spark.sql("SELECT * FROM ood_alerts ORDER BY window_start").collect()]
    finally:
        query.stop()
    assert [(r["window_start"].astimezone(timezone.utc).minute, r["images"], r["ood"], r["ood_rate"], r["alert"])
            for r in rows] == [(0, 6, 3, 0.5, True), (10, 2, 0, 0.0, False)]


def test_ood_rate_is_the_same_transform_on_a_static_read(spark, tmp_path, delta_output):
    out = tmp_path / "output"
    out.mkdir()
    delta_output(out, "predictions", _rows(0, [True, False], minute=0))
    rows = ood_rate(spark.read.format("delta").load(table_uri(out, "predictions"))).collect()
    assert [(r.images, r.ood, r.alert) for r in rows] == [(2, 1, True)]
