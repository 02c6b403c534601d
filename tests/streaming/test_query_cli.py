"""meme-query over a hand-written output folder in the documented layout, on both engines."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memestream.errors import ConfigError, DataError
from streaming import duck, query_cli
from streaming.query_cli import build_parser, config_from_args, execute

NOW = datetime.now(timezone.utc).replace(microsecond=0)

PRED_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("probabilities", pa.map_(pa.string(), pa.float64())),
        ("error", pa.string()),
        ("error_code", pa.string()),
        ("processing_time", pa.timestamp("us", tz="UTC")),
        ("batch_id", pa.int64()),
    ]
)


def _write(path, rows, schema):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _pred(i, label, conf, batch, error=None):
    return {
        "image_id": f"{i:064x}",
        "source": "folder",
        "origin": f"img{i}.jpg",
        "label": None if error else label,
        "confidence": None if error else conf,
        "probabilities": None if error else [(label, conf), ("other", 1 - conf)],
        "error": error,
        "error_code": error.split(":")[0] if error else None,
        "processing_time": NOW - timedelta(minutes=i),
        "batch_id": batch,
    }


@pytest.fixture()
def output(tmp_path):
    """predictions over two dates and batches, class_counts deltas, no quarantine folder."""
    out = tmp_path / "out"
    d1, d2 = "date=2026-11-26", "date=2026-11-27"
    _write(out / "predictions" / d1 / "part-0000000001.parquet",
           [_pred(1, "doom", 0.9, 1), _pred(2, "doom", 0.55, 1), _pred(3, "cats", 0.8, 1)], PRED_SCHEMA)
    _write(out / "predictions" / d2 / "part-0000000002.parquet",
           [_pred(4, "cats", 0.99, 2), _pred(5, None, 0.0, 2, error="truncated: half a JPEG")], PRED_SCHEMA)
    # a staging file must be ignored by readers
    _write(out / "predictions" / d2 / ".part-0000000003.parquet.tmp", [_pred(9, "doom", 0.9, 3)], PRED_SCHEMA)
    cc_schema = pa.schema([("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
                           ("label", pa.string()), ("count", pa.int64()), ("batch_id", pa.int64())])
    w0, w1 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc), datetime(2026, 11, 27, 12, 5, tzinfo=timezone.utc)
    _write(out / "class_counts" / d2 / "part-0000000001.parquet",
           [{"window_start": w0, "window_end": w1, "label": "doom", "count": 2, "batch_id": 1},
            {"window_start": w0, "window_end": w1, "label": "cats", "count": 1, "batch_id": 1}], cc_schema)
    _write(out / "class_counts" / d2 / "part-0000000002.parquet",
           [{"window_start": w0, "window_end": w1, "label": "doom", "count": 3, "batch_id": 2}], cc_schema)
    (out / "_commits").mkdir()
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
    assert totals == {"doom": 2, "cats": 2}  # error row (null label) and staging file excluded
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
    assert "registered empty" in text
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
            raise RuntimeError("[FAILED_READ_FILE.FILE_NOT_EXIST] File part-0000000001.parquet does not exist")
        return real(*args)

    monkeypatch.setattr(query_cli, "run_sql", flaky)
    assert execute(spark, _config("--engine", "spark", "--output", str(output), "SELECT * FROM class_totals"), io.StringIO()) == 2
    assert len(calls) == 2
    monkeypatch.setattr(query_cli, "run_sql", lambda *a: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError, match="disk on fire"):
        execute(spark, _config("--engine", "spark", "--output", str(output), "SELECT 1"), io.StringIO())


def test_duckdb_relists_once_when_a_file_vanishes(output):
    """A compaction swap between listing and reading: DuckDB's IOException triggers one relisting."""
    con = duck.connect()
    duck.register_views(con, output)
    victim = output / "predictions" / "date=2026-11-26" / "part-0000000001.parquet"
    moved = victim.with_name("part-main-0000000000-0000000001.parquet")
    victim.rename(moved)  # what compaction does: same rows, another name
    assert duck.query(con, output, "SELECT count(*) AS n FROM predictions").to_pylist() == [{"n": 5}]
    duck.register_views(con, output)
    moved.unlink()
    with pytest.raises(Exception, match="No such file|No files found|Cannot open"):
        duck.run_sql(con, "SELECT count(*) FROM predictions")
