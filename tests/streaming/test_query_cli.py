"""meme-query over Delta tables written with deltalake in the documented layout, on both engines."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from memestream.errors import ConfigError, DataError
from streaming import duck, query_cli
from streaming.query_cli import build_parser, config_from_args, execute

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY1, DAY2 = datetime(2026, 11, 26, 12, tzinfo=timezone.utc), datetime(2026, 11, 27, 12, tzinfo=timezone.utc)


def _pred(i, label, conf, batch, day, error=None):
    return {
        "image_id": f"{i:064x}",
        "source": "folder",
        "origin": f"img{i}.jpg",
        "label": None if error else label,
        "confidence": None if error else conf,
        "probabilities": None if error else [(label, conf), ("other", 1 - conf)],
        "error": error,
        "error_code": error.split(":")[0] if error else None,
        "event_time": day,
        "processing_time": NOW - timedelta(minutes=i),
        "batch_id": batch,
        "writer": "main",
    }


@pytest.fixture()
def output(tmp_path, delta_output):
    """predictions over two dates and two commits (versions 0 and 1), class_counts deltas, no quarantine table."""
    out = tmp_path / "out"
    out.mkdir()
    delta_output(out, "predictions", [_pred(1, "doom", 0.9, 1, DAY1), _pred(2, "doom", 0.55, 1, DAY1), _pred(3, "cats", 0.8, 1, DAY1)])
    delta_output(out, "predictions", [_pred(4, "cats", 0.99, 2, DAY2), _pred(5, None, 0.0, 2, DAY2, error="truncated: half a JPEG")])
    # a Parquet file no commit names (a writer that died before committing) must be ignored by readers
    stray = next((out / "predictions").glob("date=2026-11-27/*.parquet"))
    stray.with_name("part-uncommitted.parquet").write_bytes(stray.read_bytes())
    w0, w1 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc), datetime(2026, 11, 27, 12, 5, tzinfo=timezone.utc)
    delta_output(out, "class_counts", [{"window_start": w0, "window_end": w1, "label": "doom", "count": 2, "batch_id": 1},
                                       {"window_start": w0, "window_end": w1, "label": "cats", "count": 1, "batch_id": 1}])
    delta_output(out, "class_counts", [{"window_start": w0, "window_end": w1, "label": "doom", "count": 3, "batch_id": 2}])
    return out


def _config(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


@pytest.fixture(params=["duckdb", "spark"])
def engine(request):
    """(engine name, session): a fresh DuckDB connection, or the test run's SparkSession."""
    if request.param == "spark":
        return "spark", request.getfixturevalue("spark")
    return "duckdb", duck.connect()


def _sql(engine, sql) -> list[dict]:
    """Rows of ``sql`` against the views the last ``execute`` registered in this session."""
    name, session = engine
    if name == "spark":
        return [r.asDict() for r in session.sql(sql).collect()]
    return session.sql(sql).to_arrow_table().to_pylist()


def _columns(engine, view) -> list[str]:
    name, session = engine
    return session.table(view).columns if name == "spark" else [c for c, _ in duck.columns(session, view)]


def _run(engine, *argv, stream=None):
    name, session = engine
    return execute(session, _config("--engine", name, *argv), stream)


def test_duckdb_is_the_default_engine(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMESTREAM_QUERY_ENGINE", raising=False)
    assert _config("--output", str(tmp_path), "SELECT 1").engine == "duckdb"
    monkeypatch.setenv("MEMESTREAM_QUERY_ENGINE", "spark")
    assert _config("--output", str(tmp_path), "SELECT 1").engine == "spark"


def test_views_totals_and_summed_class_counts(engine, output):
    buf = io.StringIO()
    n = _run(engine, "--output", str(output), "--format", "json",
             "SELECT label, count FROM class_counts ORDER BY label", stream=buf)
    assert n == 2
    assert [json.loads(line) for line in buf.getvalue().splitlines()] == [
        {"label": "cats", "count": 1}, {"label": "doom", "count": 5}]
    totals = {r["label"]: r["count"] for r in _sql(engine, "SELECT * FROM class_totals")}
    assert totals == {"doom": 2, "cats": 2}  # error row (null label) and the uncommitted file excluded
    assert _sql(engine, "SELECT count(*) AS n FROM predictions") == [{"n": 5}]
    assert "date" in _columns(engine, "predictions")


def test_missing_table_folder_is_an_empty_view_with_schema(engine, output):
    buf = io.StringIO()
    n = _run(engine, "--output", str(output), "SELECT error_code, count(*) AS n FROM quarantine GROUP BY error_code", stream=buf)
    assert n == 0
    assert "no rows" in buf.getvalue() and "error_code" in buf.getvalue()
    assert {"quarantine_path", "error_code", "date"} <= set(_columns(engine, "quarantine"))


def test_fresh_output_dir_all_views_empty(engine, tmp_path):
    buf = io.StringIO()
    _run(engine, "--output", str(tmp_path), stream=buf)
    text = buf.getvalue()
    for view in ("predictions", "quarantine", "class_counts", "class_count_deltas", "class_totals"):
        assert view in text
    assert "registered empty" in text and "batches" in text
    assert _sql(engine, "SELECT count(*) AS n FROM class_counts") == [{"n": 0}]


def test_csv_parquet_outputs_and_limit(engine, output, tmp_path):
    csv_out = tmp_path / "low.csv"
    _run(engine, "--output", str(output), "--out", str(csv_out),
         "SELECT origin, label, confidence, probabilities FROM predictions WHERE confidence < 0.6")
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "origin,label,confidence,probabilities"
    assert len(lines) == 2 and lines[1].startswith("img2.jpg,doom,0.55,")
    pq_out = tmp_path / "r.parquet"
    _run(engine, "--output", str(output), "--out", str(pq_out), "--limit", "3", "SELECT * FROM predictions ORDER BY origin")
    assert pq.read_table(pq_out).num_rows == 3
    buf = io.StringIO()
    _run(engine, "--output", str(output), "SELECT origin, label FROM predictions ORDER BY origin", stream=buf)
    assert "img1.jpg" in buf.getvalue() and "img5.jpg" in buf.getvalue()


def test_bad_sql_is_one_line_exit_2(engine, output, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="query failed: .*nope"):
        _run(engine, "--output", str(output), "SELECT nope FROM predictions")
    name, session = engine
    monkeypatch.setattr(query_cli, "build_spark", lambda *a, **k: session)
    rc = query_cli.main(["--engine", name, "--output", str(output), "SELEC label FROM predictions"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("meme-query: error: query failed:")
    assert ("PARSE_SYNTAX_ERROR" if name == "spark" else "syntax error") in err[0]


def test_missing_output_dir_and_bad_flags(tmp_path, capsys):
    rc = query_cli.main(["--output", str(tmp_path / "nope"), "SELECT 1"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --out"):
        _config("--output", str(tmp_path), "--format", "parquet", "SELECT 1")
    with pytest.raises(DataError):
        execute(None, _config("--output", str(tmp_path / "nope"), "SELECT 1"))


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for needle in ("last hour", "low-confidence", "errors by reason", "throughput per minute"):
        assert needle in text


def test_a_file_vanishing_mid_query_is_retried_once(spark, output, monkeypatch):
    real = query_cli.run_sql
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[FAILED_READ_FILE.FILE_NOT_EXIST] File part-00000-x.snappy.parquet does not exist")
        return real(*args)

    monkeypatch.setattr(query_cli, "run_sql", flaky)
    assert execute(spark, _config("--engine", "spark", "--output", str(output), "SELECT * FROM class_totals"), io.StringIO()) == 2
    assert len(calls) == 2
    monkeypatch.setattr(query_cli, "run_sql", lambda *a: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError, match="disk on fire"):
        execute(spark, _config("--engine", "spark", "--output", str(output), "SELECT 1"), io.StringIO())


def test_duckdb_reopens_the_tables_once_when_a_file_vanishes(output, delta_output):
    """VACUUM between opening a snapshot and reading it: the scan's error triggers one reopening."""
    from deltalake import DeltaTable

    con = duck.connect()
    duck.register_views(con, output)
    delta_output(output, "predictions", [_pred(6, "doom", 0.7, 3, DAY1)])  # a second file in DAY1's partition
    table = DeltaTable(str(output / "predictions"))
    assert table.optimize.compact().get("numFilesRemoved") == 2  # a new version with the same rows in one file
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)  # the old files go
    assert duck.query(con, output, "SELECT count(*) AS n FROM predictions").to_pylist() == [{"n": 6}]
    duck.register_views(con, output, as_of=1)  # the old version's files are gone for good
    with pytest.raises(Exception, match="Could not open Parquet input source"):
        duck.run_sql(con, "SELECT count(*) FROM predictions")


def test_as_of_a_version_reads_predictions_then_and_the_other_tables_as_they_were(engine, output, delta_output):
    buf = io.StringIO()
    assert _run(engine, "--output", str(output), "--as-of", "0", "--format", "json",
                "SELECT count(*) AS n FROM predictions", stream=buf) == 1
    assert json.loads(buf.getvalue()) == {"n": 3}
    # the fixture wrote class_counts after predictions' version 1: not there while version 0 was the newest
    assert _sql(engine, "SELECT count(*) AS n FROM class_count_deltas") == [{"n": 0}]
    delta_output(output, "predictions", [_pred(6, "doom", 0.7, 3, DAY2)])  # version 2
    delta_output(output, "class_counts", [{"window_start": DAY2, "window_end": DAY2, "label": "doom", "count": 1, "batch_id": 3}])
    _run(engine, "--output", str(output), "--as-of", "1", "SELECT 1", stream=io.StringIO())
    assert _sql(engine, "SELECT count(*) AS n FROM predictions") == [{"n": 5}]
    assert _sql(engine, "SELECT count(*) AS n FROM class_count_deltas") == [{"n": 3}]  # not batch 3's row
    _run(engine, "--output", str(output), "SELECT 1", stream=io.StringIO())
    assert _sql(engine, "SELECT count(*) AS n FROM class_count_deltas") == [{"n": 4}]
    with pytest.raises(DataError, match="predictions has versions 0..2"):
        _run(engine, "--output", str(output), "--as-of", "7", "SELECT 1")


def test_as_of_a_timestamp_reads_each_table_at_or_before_it(engine, tmp_path, delta_output):
    import time

    from deltalake import DeltaTable

    out = tmp_path / "out"
    out.mkdir()
    delta_output(out, "predictions", [_pred(1, "doom", 0.9, 1, DAY1)])
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    delta_output(out, "predictions", [_pred(2, "cats", 0.9, 2, DAY1)])
    delta_output(out, "quarantine", [{"image_id": "q", "error_code": "truncated", "event_time": DAY1}])
    stamps = [h["timestamp"] for h in DeltaTable(str(out / "predictions")).history()]
    assert min(stamps) < between.timestamp() * 1000 < max(stamps)
    _run(engine, "--output", str(out), "--as-of", between.isoformat(), "SELECT 1", stream=io.StringIO())
    assert _sql(engine, "SELECT count(*) AS n FROM predictions") == [{"n": 1}]
    assert _sql(engine, "SELECT count(*) AS n FROM quarantine") == [{"n": 0}]  # created later: empty, with columns
    assert "error_code" in _columns(engine, "quarantine")
    naive = between.replace(tzinfo=None).isoformat(sep=" ")  # no zone = UTC
    _run(engine, "--output", str(out), "--as-of", naive, "SELECT 1", stream=io.StringIO())
    assert _sql(engine, "SELECT count(*) AS n FROM predictions") == [{"n": 1}]


def test_bad_as_of_is_one_line(tmp_path, capsys):
    rc = query_cli.main(["--output", str(tmp_path), "--as-of", "yesterday", "SELECT 1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--as-of expects a table version" in err[0]


@pytest.mark.parametrize("engine_name", ["duckdb", "spark"])
def test_old_plain_parquet_output_is_refused_with_the_convert_command(engine_name, tmp_path, capsys, monkeypatch, request):
    from streaming.schema import arrow_schema

    out = tmp_path / "old"
    (out / "predictions" / "date=2026-11-26").mkdir(parents=True)
    (out / "_commits").mkdir()
    pq.write_table(arrow_schema("predictions").empty_table().drop_columns(["date"]),
                   out / "predictions" / "date=2026-11-26" / "part-main-0000000001.parquet")
    if engine_name == "spark":
        session = request.getfixturevalue("spark")
        monkeypatch.setattr(query_cli, "build_spark", lambda *a, **k: session)
    rc = query_cli.main(["--engine", engine_name, "--output", str(out), "SELECT count(*) FROM predictions"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert "plain-Parquet" in err[0] and f"meme-compact --output {out} --convert" in err[0]
