"""The output tables' single definition: what the writer builds, Spark's empty views and pyarrow agree."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from memestream.errors import DataError
from streaming.schema import (
    CLASS_COUNTS,
    PREDICTIONS,
    QUARANTINE,
    TABLES,
    arrow_schema,
    column_names,
    ddl,
    read_table,
    table_dir,
)
from streaming.scoring import SCORED_COLUMNS


def _scored(rows: int = 2) -> pa.Table:
    """A collected batch as the scoring step returns it (one good row, one bad)."""
    values = {
        "image_id": ["a" * 64, "b" * 64], "source": ["folder"] * 2, "origin": ["x.png", "y.png"],
        "path": ["file:/s/x.png", "file:/s/y.png"], "kafka_key": [None, None], "headers": [None, None],
        "event_time": [datetime(2026, 11, 27, 12, tzinfo=timezone.utc)] * 2,
        "processing_time": [datetime(2026, 11, 27, 12, 1, tzinfo=timezone.utc)] * 2,
        "label": ["doom", None], "confidence": [0.9, None], "probabilities": [[("doom", 0.9)], None],
        "error": [None, "truncated: half a file"], "error_code": [None, "truncated"], "model_version": ["v1"] * 2,
        "size_bytes": [10, 5], "ocr_ran": [True, None], "ocr_text": ["RIP AND TEAR", None], "ocr_error": [None, None],
        "novelty": [0.2, None], "ood": [False, None], "nearest_class": ["doom", None],
        "payload": [None, b"\xff\xd8"], "date": ["2026-11-27"] * 2,
    }
    types = {"headers": pa.map_(pa.string(), pa.string()), "probabilities": pa.map_(pa.string(), pa.float64()),
             "payload": pa.binary(), "kafka_key": pa.string(), "ocr_error": pa.string()}
    assert list(values) == [*SCORED_COLUMNS, "date"]
    return pa.table({k: pa.array(v[:rows], type=types.get(k)) for k, v in values.items()})


def _tables(spark, scored: pa.Table, batch_id: int):
    """The writer's frames for one scored batch (streaming.batch), and its totals."""
    from pyspark.sql import functions as F

    from streaming.batch import batch_summary, labelled_batch, table_frames
    from tests.streaming.conftest import make_config

    frame = spark.createDataFrame(scored).withColumn("date", F.to_date("date"))
    target = F.when(F.col("error").isNotNull(), F.concat(F.lit(f"/q/b{batch_id:06d}-"), F.col("origin")))
    batch = labelled_batch(frame, batch_id, "main", None, target)
    cfg = make_config(Path("/tmp/unused"), Path("/tmp/unused-model"))
    summary = batch_summary(batch, batch_id, cfg.window, with_paths=True)
    return table_frames(batch, summary, cfg, "main"), summary.record


def test_the_writer_builds_exactly_the_defined_columns(spark):
    tables, record = _tables(spark, _scored(), 7)
    for name in (PREDICTIONS, QUARANTINE, CLASS_COUNTS):
        assert tables[name].columns == [*column_names(name), "date"], name
        assert tables[name].schema.simpleString() == spark.createDataFrame([], ddl(name)).schema.simpleString(), name
    assert record.rows == 2 and record.errors == 1 and tables[QUARANTINE].count() == 1
    assert tables[QUARANTINE].first()["quarantine_path"] == "/q/b000007-y.png"
    assert record.moves == {"file:/s/y.png": "/q/b000007-y.png"}  # the bad input, after the commit


def test_spark_ddl_and_arrow_schema_name_the_same_columns(spark):
    for name in TABLES:
        assert spark.createDataFrame([], ddl(name)).columns == [*column_names(name), "date"], name
        assert arrow_schema(name).names == [*column_names(name), "date"], name


def test_pyarrow_reader_gives_the_columns_of_an_empty_table(tmp_path):
    empty = read_table(tmp_path, QUARANTINE)
    assert empty.num_rows == 0 and empty.schema == arrow_schema(QUARANTINE)
    with pytest.raises(DataError, match="unknown table"):
        read_table(tmp_path, "nope")
    assert table_dir(tmp_path, CLASS_COUNTS) == tmp_path / "class_counts"


def test_read_table_reads_a_delta_table_at_a_version(tmp_path, delta_output):
    rows = [{"image_id": "a" * 64, "event_time": datetime(2026, 11, 27, 12, tzinfo=timezone.utc), "label": "doom", "writer": "main"}]
    assert delta_output(tmp_path, PREDICTIONS, rows) == 0
    assert delta_output(tmp_path, PREDICTIONS, rows) == 1
    assert read_table(tmp_path, PREDICTIONS).num_rows == 2
    first = read_table(tmp_path, PREDICTIONS, version=0)
    assert first.num_rows == 1 and first.schema.names == arrow_schema(PREDICTIONS).names
    assert first.column("date").to_pylist() == [datetime(2026, 11, 27).date()]
    assert PREDICTIONS in TABLES


def test_rejected_out_of_distribution_rows_count_as_unknown_not_as_a_class(spark):
    scored = _scored()
    labels = scored.column("label").to_pylist()
    codes = scored.column("error_code").to_pylist()
    # the good row becomes a rejected foreign image: no label, error_code out_of_distribution, no error
    scored = scored.set_column(scored.column_names.index("label"), "label", pa.array([None, labels[1]], type=pa.string()))
    scored = scored.set_column(scored.column_names.index("error_code"), "error_code", pa.array(["out_of_distribution", codes[1]]))
    tables, record = _tables(spark, scored, 8)
    counts = [r.asDict() for r in tables[CLASS_COUNTS].collect()]
    assert [(r["label"], r["count"]) for r in counts if r["count"]] and {r["label"] for r in counts} == {"unknown"}
    assert tables[QUARANTINE].count() == 1  # only the truncated file: a foreign image is not a bad input
    assert "doom" not in record.label_totals and record.label_totals.get("unknown") == 1
