"""DuckDB and Spark give the same answers over the same Delta tables.

The tables (fixture ``tables``) are written with ``deltalake`` in the contract's schema
(several commits, good and bad images, every table); the same queries then run on both
engines and the results are compared value by value, column types included. A Parquet file
no commit names is left in a partition: both readers must skip it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from streaming import duck
from streaming.tables import register_views as spark_register_views

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
LABELS = ("doom", "cats", "animal_crossing")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """An output folder of the four Delta tables: 3 batches (12 predictions, 2 of them errors)."""
    from tests.streaming.conftest import write_delta_rows

    out = tmp_path_factory.mktemp("delta") / "output"
    out.mkdir()
    i = 0
    for batch in range(3):
        rows, bad = [], []
        for _ in range(4):
            label = LABELS[i % 3]
            error = "truncated: half a JPEG" if i in (5, 10) else None
            conf = 0.5 + i / 30
            event = T0 + timedelta(minutes=i) - timedelta(days=1 if i < 3 else 0)
            rows.append({
                "image_id": f"{i:064x}", "source": "folder", "origin": f"img{i}.jpg", "path": f"file:/s/img{i}.jpg",
                "headers": [("k", "v")] if i == 1 else None, "event_time": event, "processing_time": T0 + timedelta(minutes=batch),
                "label": None if error else label, "confidence": None if error else conf,
                "probabilities": None if error else [(label, conf), ("other", 1 - conf)],
                "error": error, "error_code": error.split(":")[0] if error else None, "model_version": "v1",
                "size_bytes": 1000 + i, "ocr_ran": i % 2 == 0, "novelty": 0.1 * (i % 5), "ood": i == 7,
                "nearest_class": label, "late": False, "batch_id": batch, "writer": "main",
            })
            if error:
                bad.append({"image_id": f"{i:064x}", "source": "folder", "origin": f"img{i}.jpg", "event_time": event,
                            "processing_time": T0, "error": error, "error_code": "truncated", "size_bytes": 10,
                            "quarantine_path": f"/q/img{i}.jpg", "payload": b"\xff\xd8", "batch_id": batch, "writer": "main"})
            i += 1
        write_delta_rows(out, "predictions", rows)
        if bad:
            write_delta_rows(out, "quarantine", bad)
        w0 = T0.replace(minute=0, second=0)
        write_delta_rows(out, "class_counts", [
            {"window_start": w0, "window_end": w0 + timedelta(minutes=10), "label": r["label"], "count": 1, "batch_id": batch,
             "writer": "main"} for r in rows if r["label"]])
        write_delta_rows(out, "batches", [{"writer": "main", "batch_id": batch, "rows": 4, "errors": len(bad), "late": 0,
                                           "max_event_time": T0, "model_version": "v1", "label_totals": [("doom", 1)],
                                           "moves": [("a", "b")], "committed_at": T0 + timedelta(minutes=batch)}])
    part = next((out / "predictions").glob("date=*/*.parquet"))
    part.with_name("part-00000-uncommitted.snappy.parquet").write_bytes(part.read_bytes())
    return out


QUERIES = [
    "SELECT * FROM predictions ORDER BY image_id",
    "SELECT * FROM quarantine ORDER BY image_id",
    "SELECT * FROM class_count_deltas ORDER BY batch_id, window_start, label",
    "SELECT * FROM class_counts ORDER BY window_start, label",
    "SELECT * FROM class_totals ORDER BY label",
    "SELECT * FROM batches ORDER BY writer, batch_id",
    "SELECT label, count(*) AS n, round(avg(confidence), 9) AS mean_conf FROM predictions GROUP BY label ORDER BY label",
    "SELECT error_code, count(*) AS n FROM quarantine GROUP BY error_code ORDER BY error_code",
    "SELECT date, batch_id, count(*) AS n FROM predictions GROUP BY date, batch_id ORDER BY date, batch_id",
    "SELECT origin, probabilities['doom'] AS p_doom FROM predictions WHERE label IS NOT NULL ORDER BY origin",
    "SELECT count(*) AS n FROM predictions WHERE processing_time > now() - INTERVAL 1 HOUR",
]

#: Spark's type names -> DuckDB's, for the types the output tables use.
SPARK_TO_DUCK = {
    "string": "VARCHAR", "timestamp": "TIMESTAMP WITH TIME ZONE", "double": "DOUBLE", "bigint": "BIGINT",
    "boolean": "BOOLEAN", "binary": "BLOB", "date": "DATE", "map<string,string>": "MAP(VARCHAR, VARCHAR)",
    "map<string,double>": "MAP(VARCHAR, DOUBLE)", "map<string,bigint>": "MAP(VARCHAR, BIGINT)",
}
VIEWS = ("predictions", "quarantine", "class_count_deltas", "class_counts", "class_totals", "batches")


def _spark_table(spark, sql: str) -> pa.Table:
    return spark.sql(sql).toArrow()


def _normalized(table: pa.Table) -> list[dict]:
    """Rows with maps as dicts (key order kept as written by each engine does not matter)."""
    rows = table.to_pylist(maps_as_pydicts="strict")
    return rows


@pytest.mark.parametrize("sql", QUERIES)
def test_same_rows_and_types_on_both_engines(spark, tables, sql):
    out = tables
    spark_register_views(spark, out)
    con = duck.connect()
    duck.register_views(con, out)
    expected = _spark_table(spark, sql)
    got = duck.run_sql(con, sql)
    assert got.column_names == expected.column_names
    assert [str(f.type) for f in got.schema] == [str(f.type) for f in expected.schema]
    assert got.num_rows == expected.num_rows
    assert _normalized(got) == _normalized(expected)
    if sql.startswith("SELECT * FROM predictions"):
        assert got.num_rows == 12  # the file no commit names is skipped


def test_views_have_the_same_columns_and_types(spark, tables, tmp_path):
    for out in (tables, tmp_path):  # with files, and a fresh folder (empty typed views)
        spark_register_views(spark, out)
        con = duck.connect()
        duck.register_views(con, out)
        for view in VIEWS:
            spark_cols = [(f.name, SPARK_TO_DUCK[f.dataType.simpleString()]) for f in spark.table(view).schema.fields]
            assert duck.columns(con, view) == spark_cols, f"{view} in {out}"


def test_views_read_the_delta_snapshot_and_its_types_are_the_contract(tables):
    con = duck.connect()
    infos = {i.name: i for i in duck.register_views(con, tables)}
    assert infos["predictions"].note.startswith("Delta version 2,") and infos["predictions"].files == 4  # batch 0 spans two dates
    for table, view in duck.VIEW_OF.items():
        assert duck.columns(con, view) == duck.EMPTY_SCHEMAS[table], view


def test_empty_schemas_match_the_spark_ddl(spark):
    from streaming.schema import TABLES, ddl

    for table in TABLES:
        spark_cols = [(f.name, SPARK_TO_DUCK[f.dataType.simpleString()]) for f in spark.createDataFrame([], ddl(table)).schema.fields]
        assert duck.EMPTY_SCHEMAS[table] == spark_cols


def test_cli_process_on_duckdb_does_not_import_spark(tables):
    """Cold start: the default engine never loads pyspark (a JVM start is what made queries take 10 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from streaming.query_cli import main; rc = main(['--output', sys.argv[1], '--format', 'json', "
        "'SELECT label, count(*) AS n FROM predictions WHERE label IS NOT NULL GROUP BY label ORDER BY label']); "
        "print('pyspark' in sys.modules, file=sys.stderr); raise SystemExit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tables)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert sum(int(line.split('"n": ')[1].rstrip("}")) for line in proc.stdout.splitlines()) == 10
