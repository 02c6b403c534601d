"""DuckDB and Spark give the same answers over an output folder written by a real stream.

The folder (fixture ``streamed`` in conftest.py) is written by ``run_stream`` (several
batches, good and bad images), then compacted (leaving a hidden retired generation and
staging files behind, which both readers must skip); the same queries then run on both
engines and the results are compared value by value, column types included.
"""
from __future__ import annotations

import pyarrow as pa
import pytest

from streaming import duck
from streaming.tables import register_views as spark_register_views

QUERIES = [
    "SELECT * FROM predictions ORDER BY image_id",
    "SELECT * FROM quarantine ORDER BY image_id",
    "SELECT * FROM class_count_deltas ORDER BY batch_id, window_start, label",
    "SELECT * FROM class_counts ORDER BY window_start, label",
    "SELECT * FROM class_totals ORDER BY label",
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
    "map<string,double>": "MAP(VARCHAR, DOUBLE)",
}
VIEWS = ("predictions", "quarantine", "class_count_deltas", "class_counts", "class_totals")


def _spark_table(spark, sql: str) -> pa.Table:
    return spark.sql(sql).toArrow()


def _normalized(table: pa.Table) -> list[dict]:
    """Rows with maps as dicts (key order kept as written by each engine does not matter)."""
    rows = table.to_pylist(maps_as_pydicts="strict")
    return rows


@pytest.mark.parametrize("sql", QUERIES)
def test_same_rows_and_types_on_both_engines(spark, streamed, sql):
    out = streamed / "output"
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
        assert got.num_rows == 12  # the staging and _-prefixed copies and the retired generation are skipped


def test_views_have_the_same_columns_and_types(spark, streamed, tmp_path):
    for out in (streamed / "output", tmp_path):  # with files, and a fresh folder (empty typed views)
        spark_register_views(spark, out)
        con = duck.connect()
        duck.register_views(con, out)
        for view in VIEWS:
            spark_cols = [(f.name, SPARK_TO_DUCK[f.dataType.simpleString()]) for f in spark.table(view).schema.fields]
            assert duck.columns(con, view) == spark_cols, f"{view} in {out}"


def test_file_listing_matches_spark_rules(streamed):
    from streaming.tables import data_files

    for table in duck.TABLES:
        folder = streamed / "output" / table
        assert duck.data_files(folder) == data_files(folder)
        assert all(not part.startswith((".", "_")) for f in duck.data_files(folder) for part in f.relative_to(folder).parts)


def test_empty_schemas_match_the_spark_ddl(spark):
    from streaming.schema import TABLES, ddl

    for table in TABLES:
        spark_cols = [(f.name, SPARK_TO_DUCK[f.dataType.simpleString()]) for f in spark.createDataFrame([], ddl(table)).schema.fields]
        assert duck.EMPTY_SCHEMAS[table] == spark_cols


def test_cli_process_on_duckdb_does_not_import_spark(streamed):
    """Cold start: the default engine never loads pyspark (a JVM start is what made queries take 10 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from streaming.query_cli import main; rc = main(['--output', sys.argv[1], '--format', 'json', "
        "'SELECT label, count(*) AS n FROM predictions WHERE label IS NOT NULL GROUP BY label ORDER BY label']); "
        "print('pyspark' in sys.modules, file=sys.stderr); raise SystemExit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(streamed / "output")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert sum(int(line.split('"n": ')[1].rstrip("}")) for line in proc.stdout.splitlines()) == 10
