"""streaming.sinks.DeltaOutput: appends checked per (writer, batch id), the batches table, and
the checks ``ensure_tables`` makes before a stream writes."""
from __future__ import annotations

from datetime import datetime

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from memestream.errors import DataError
from streaming.schema import BATCHES, CLASS_COUNTS, PREDICTIONS, TABLES, arrow_schema, is_delta_table
from streaming.sinks import TABLE_PROPERTIES, BatchRecord, DeltaOutput

PRED_DDL = "image_id string, label string, batch_id bigint, writer string, date date"


def _predictions(spark, writer: str, batch_id: int, n: int = 2, day: str = "2026-11-28"):
    rows = [(f"{writer}-{batch_id}-{i}", ("doom", "cats")[i % 2], batch_id, writer, datetime.fromisoformat(day).date())
            for i in range(n)]
    return spark.createDataFrame(rows, PRED_DDL)


def _ids(spark, out: DeltaOutput, table: str = PREDICTIONS) -> list[str]:
    return sorted(r[0] for r in spark.read.format("delta").load(out.uri(table)).select("image_id").collect())


@pytest.fixture()
def out(spark, tmp_path):
    output = DeltaOutput(tmp_path / "out", "folder_a1")
    output.ensure_tables(spark)
    return output


def test_a_checked_append_skips_a_batch_the_table_has(spark, out):
    uri = out.uri(PREDICTIONS)
    assert out.append(_predictions(spark, "folder_a1", 0), PREDICTIONS, 0)
    version = DeltaTable(uri).version()
    assert out.has_batch(spark, PREDICTIONS, 0) and not out.has_batch(spark, PREDICTIONS, 1)
    # a replay of batch 0 (same writer, same id) is skipped, whatever it carries
    assert not out.append(_predictions(spark, "folder_a1", 0, n=5), PREDICTIONS, 0)
    assert DeltaTable(uri).version() == version  # nothing committed
    assert _ids(spark, out) == ["folder_a1-0-0", "folder_a1-0-1"]
    assert out.append(_predictions(spark, "folder_a1", 1, n=1), PREDICTIONS, 1)
    # the same batch id from another writer (the Kafka stream beside the folder one) is not a replay
    kafka = DeltaOutput(out.root, "kafka_b2")
    assert not kafka.has_batch(spark, PREDICTIONS, 0)
    assert kafka.append(_predictions(spark, "kafka_b2", 0), PREDICTIONS, 0)
    assert _ids(spark, out) == ["folder_a1-0-0", "folder_a1-0-1", "folder_a1-1-0", "kafka_b2-0-0", "kafka_b2-0-1"]
    # each commit names its writer and batch
    metadata = [h.get("userMetadata") for h in DeltaTable(uri).history() if h.get("operation") == "WRITE"]
    assert sorted(metadata) == ["folder_a1:0", "folder_a1:1", "kafka_b2:0"]
    # the other tables are checked on their own: batch 0 of this writer is new to class_counts
    counts = spark.createDataFrame([(datetime(2026, 11, 28, 10), "doom", 2, 0, "folder_a1", datetime(2026, 11, 28).date())],
                                   "window_start timestamp, label string, count bigint, batch_id bigint, writer string, date date")
    assert out.append(counts, CLASS_COUNTS, 0)
    assert spark.read.format("delta").load(out.uri(CLASS_COUNTS)).count() == 1


def test_a_blind_append_does_not_look(spark, out):
    """``check=False`` is for a batch known not to be written (the caller's promise): it appends
    without the read, so a wrong promise shows as a duplicate, not as a lost batch."""
    out.append(_predictions(spark, "folder_a1", 0), PREDICTIONS, 0, check=False)
    out.append(_predictions(spark, "folder_a1", 0), PREDICTIONS, 0, check=False)
    assert _ids(spark, out) == ["folder_a1-0-0", "folder_a1-0-0", "folder_a1-0-1", "folder_a1-0-1"]


def test_record_batch_last_batch_and_batch_round_trip(spark, out):
    records = [
        BatchRecord(b, rows=b + 2, errors=b % 2, late=1 if b == 2 else 0, max_event_time=datetime(2026, 11, 28, 10, b),
                    model_version="v3", label_totals={"doom": b + 1, **({"cats": 1} if b % 2 else {})},
                    moves={f"/spool/bad{b}.jpg": f"/quarantine/bad{b}.jpg"} if b == 1 else {})
        for b in range(3)
    ]
    assert out.last_batch(spark) is None  # nothing recorded yet
    for record in records:
        out.record_batch(spark, record)
    out.record_batch(spark, BatchRecord(1, rows=99, label_totals={"doom": 99}))  # a replay: skipped
    other = DeltaOutput(out.root, "kafka_b2")
    other.record_batch(spark, BatchRecord(7, rows=4, label_totals={"animal_crossing": 4, "doom": 2}))

    assert out.batch(spark, 1) == records[1]  # every field, the maps included
    assert out.batch(spark, 1).moves == {"/spool/bad1.jpg": "/quarantine/bad1.jpg"}
    assert out.batch(spark, 9) is None
    assert out.last_batch(spark) == records[2]
    assert out.last_batch(spark, below=2) == records[1]
    assert out.last_batch(spark, below=0) is None
    assert other.last_batch(spark).batch_id == 7 and other.batch(spark, 1) is None  # per writer
    assert DeltaOutput(out.root, "nobody").last_batch(spark) is None
    # totals over every writer's recorded batches, the skipped replay not counted
    assert out.label_totals(spark) == {"doom": 1 + 2 + 3 + 2, "cats": 1, "animal_crossing": 4}
    rows = spark.read.format("delta").load(out.uri(BATCHES)).collect()
    assert sorted((r["writer"], r["batch_id"]) for r in rows) == [("folder_a1", 0), ("folder_a1", 1), ("folder_a1", 2), ("kafka_b2", 7)]
    assert all(r["date"] == r["committed_at"].date() for r in rows)  # partitioned by the commit date


def test_the_batches_row_is_a_local_table_not_an_rdd_of_pickled_rows(spark):
    """The ``batches`` row Spark writes once per batch is read in the JVM (a LocalTableScan): a
    DataFrame made from a Python list is an RDD of pickled rows that each job over it sends
    through a Python worker. Same rows and schema as createDataFrame gives, naive times included."""
    from streaming.schema import ddl
    from streaming.sinks import local_frame

    rows = [BatchRecord(b, rows=3, max_event_time=datetime(2026, 11, 28, 10, b) if b else None, model_version="v1",
                        label_totals={"doom": 3}, moves={"a": "b"}).row("folder_a1", datetime(2026, 11, 28, 11))
            for b in range(2)]
    frame = local_frame(spark, BATCHES, rows)
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert "LocalTableScan" in plan and "ExistingRDD" not in plan, plan
    pickled = spark.createDataFrame(rows, ddl(BATCHES))
    assert "ExistingRDD" in pickled._jdf.queryExecution().executedPlan().toString()  # what it replaces
    assert frame.schema == pickled.schema and frame.collect() == pickled.collect()
    assert local_frame(spark, BATCHES, []).count() == 0


def test_tables_are_created_partitioned_by_date_with_the_properties(spark, out, tmp_path):
    for table in TABLES:
        uri = out.uri(table)
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{uri}`").collect()[0]
        assert detail["partitionColumns"] == ["date"], table
        assert {k: detail["properties"].get(k) for k in TABLE_PROPERTIES} == TABLE_PROPERTIES, table
        meta = DeltaTable(uri).metadata()
        assert meta.partition_columns == ["date"] and meta.configuration["delta.checkpointInterval"] == "200"
    versions = {t: DeltaTable(out.uri(t)).version() for t in TABLES}
    DeltaOutput(out.root, "kafka_b2").ensure_tables(spark)  # a second stream starting: nothing changes
    assert {t: DeltaTable(out.uri(t)).version() for t in TABLES} == versions
    out.append(_predictions(spark, "folder_a1", 0, day="2026-11-29"), PREDICTIONS, 0)
    folder = tmp_path / "out" / PREDICTIONS
    assert [p.name for p in folder.iterdir() if p.name.startswith("date=")] == ["date=2026-11-29"]
    assert DeltaTable(out.uri(PREDICTIONS)).partitions() == [{"date": "2026-11-29"}]


def test_ensure_tables_refuses_an_old_plain_parquet_output(spark, tmp_path):
    old = tmp_path / "old"
    (old / PREDICTIONS / "date=2026-11-26").mkdir(parents=True)
    (old / "_commits" / "main").mkdir(parents=True)
    pq.write_table(arrow_schema(PREDICTIONS).empty_table().drop_columns(["date"]),
                   old / PREDICTIONS / "date=2026-11-26" / "part-main-0000000001.parquet")
    with pytest.raises(DataError) as caught:
        DeltaOutput(old, "folder_a1").ensure_tables(spark)
    message = str(caught.value)
    assert "\n" not in message and "not a Delta table" in message
    assert f"meme-compact --output {old} --convert" in message
    assert not any(is_delta_table(old / t) for t in TABLES)  # refused before creating anything


def test_ensure_tables_refuses_a_table_of_another_schema_version(spark, tmp_path):
    root = tmp_path / "out"
    spark.sql(f"CREATE TABLE delta.`{root}/{CLASS_COUNTS}` (window_start timestamp, window_end timestamp, label string, "
              "count int, batch_id bigint, writer string, date date) USING delta PARTITIONED BY (date)")
    with pytest.raises(DataError) as caught:
        DeltaOutput(root, "folder_a1").ensure_tables(spark)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{CLASS_COUNTS} has column count of type int" in message and "writes bigint" in message
    assert "new --output" in message


def test_an_added_column_merges_into_the_table(spark, out):
    out.append(_predictions(spark, "folder_a1", 0), PREDICTIONS, 0)
    newer = _predictions(spark, "folder_a1", 1, n=1).selectExpr("*", "'blurry' AS quality_note")
    out.append(newer, PREDICTIONS, 1)
    frame = spark.read.format("delta").load(out.uri(PREDICTIONS))
    assert "quality_note" in frame.columns
    assert sorted((r["image_id"], r["quality_note"]) for r in frame.collect()) == [
        ("folder_a1-0-0", None), ("folder_a1-0-1", None), ("folder_a1-1-0", "blurry")]
    out.ensure_tables(spark)  # an extra column is no schema conflict for the next start


def test_writer_names_are_checked():
    with pytest.raises(ValueError, match="letters, digits or _"):
        DeltaOutput("/tmp/out", "folder-a1")
