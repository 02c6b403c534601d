"""``meme-query``: run SQL (DuckDB by default, or Spark) over the stream's Delta tables.

Operators ask the same few questions (what came in the last hour, which images the
model was unsure about, why images were quarantined, how fast the stream goes); this
registers the output tables as views so each question is one SQL line, and prints or
saves the answer. It reads one committed Delta snapshot of each table (``--as-of`` an older
one), so it is safe while the stream is running.

DuckDB (:mod:`streaming.duck`) answers in a fraction of a second; ``--engine spark``
keeps the Spark path for data on a cluster or an object store (docs/query.md compares
the two dialects).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, one_line, run_main
from memestream.errors import ConfigError, DataError
from memestream.spark import build_spark

# streaming.tables imports pyspark: loaded only by the Spark engine, so DuckDB starts fast

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json", "parquet")
ENGINES = ("duckdb", "spark")
_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "table"}

EXAMPLES = """\
views:
  predictions         one row per image (label, confidence, probabilities, error, origin, ...)
  quarantine          images that could not be classified (error_code, quarantine_path)
  class_counts        window_start, window_end, label, count (per-batch deltas summed)
  class_count_deltas  the raw per-batch deltas behind class_counts (with batch_id)
  class_totals        label, count over all predictions with a label
  batches             one row per committed micro-batch and writer (rows, errors, label_totals, ...)

examples:
  # list the views and their columns
  meme-query --output out

  # counts per class in the last hour
  meme-query --output out "SELECT label, count(*) AS n FROM predictions
      WHERE processing_time > now() - INTERVAL 1 HOUR AND label IS NOT NULL GROUP BY label ORDER BY n DESC"

  # low-confidence images (worth a human look)
  meme-query --output out --limit 20 "SELECT origin, label, confidence FROM predictions
      WHERE confidence < 0.6 ORDER BY confidence"

  # errors by reason
  meme-query --output out "SELECT error_code, count(*) AS n FROM quarantine GROUP BY error_code ORDER BY n DESC"

  # throughput per minute, saved as CSV
  meme-query --output out --out per_minute.csv "SELECT date_trunc('minute', processing_time) AS minute,
      count(*) AS images FROM predictions GROUP BY 1 ORDER BY 1"

  # rolling class counts of the last windows, as JSON lines
  meme-query --output out --format json "SELECT * FROM class_counts ORDER BY window_start DESC, label"

  # time travel: the tables as of predictions' version 3, or as they were at an instant (UTC)
  meme-query --output out --as-of 3 "SELECT count(*) AS n FROM predictions"
  meme-query --output out --as-of 2026-12-06T17:00:00Z "SELECT label, count FROM class_totals"

  # the same views on Spark instead of DuckDB (dialect differences: docs/query.md)
  meme-query --engine spark --output out "SELECT label, count(*) AS n FROM predictions GROUP BY label"
"""


@dataclass(frozen=True)
class QueryConfig:
    """Everything one ``meme-query`` run needs, built from flags in :func:`main`."""

    output: Path
    sql: str | None
    fmt: str
    out: Path | None
    limit: int | None
    master: str | None = None
    engine: str = "duckdb"
    as_of: int | str | None = None

    def __post_init__(self) -> None:
        absolute_fields(self)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-query",
        description="Run SQL (DuckDB, or Spark with --engine spark) over meme-stream's output folder of Delta tables (views: predictions, quarantine, "
        "class_counts, class_count_deltas, class_totals, batches). Without SQL, lists the views and their columns.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sql", nargs="?", help="the SQL query (quote it); omit to list views")
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", required=True, help="meme-stream's --output folder")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="table (default), csv, json (JSON lines) or parquet; inferred from --out's extension when omitted",
    )
    parser.add_argument("--out", help="write the result to this file instead of stdout (parquet needs --out)")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N rows (default: 100 for table output, all rows for files; 0 = all)"
    )
    env_flag(parser, "--engine", envvar="MEMESTREAM_QUERY_ENGINE", default="duckdb", choices=ENGINES,
             help="duckdb (in-process, starts in a fraction of a second) or spark (data on a cluster/object store)")
    parser.add_argument(
        "--as-of", metavar="VERSION|TIMESTAMP", default=None,
        help="time travel: a version of predictions (the other tables as they were then) or an ISO timestamp "
        "(every table at its latest version at or before it; no zone = UTC). Default: the latest versions")
    env_flag(parser, "--master", envvar="SPARK_MASTER", help="Spark master, with --engine spark (default: local[*])")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> QueryConfig:
    """Validate flag combinations and resolve defaults (format from extension, limit)."""
    out = Path(args.out) if args.out else None
    fmt = args.format
    if fmt is None:
        fmt = _EXTENSIONS.get(out.suffix.lower(), "table") if out else "table"
    if fmt == "parquet" and out is None:
        raise ConfigError("--format parquet needs --out FILE (Parquet is not printable); found no --out")
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit expects 0 (all rows) or a positive number, found {args.limit}")
    limit = args.limit
    if limit is None:
        limit = 100 if (fmt == "table" and out is None) else 0
    sql = args.sql.strip() if args.sql and args.sql.strip() else None
    as_of = None
    if args.as_of is not None:
        from streaming.snapshots import parse_as_of

        parsed = parse_as_of(args.as_of)  # a bad value is a one-line ConfigError before any table is read
        as_of = parsed if isinstance(parsed, int) else parsed.isoformat()
    return QueryConfig(Path(args.output), sql, fmt, out, limit or None, args.master, args.engine, as_of)


def quiet_query_context_logs() -> None:
    """PySpark logs every analysis error as a JSON ERROR line before raising it; the CLI
    reports the same error as one line itself, so silence the duplicate."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def run_sql(spark, sql: str, limit: int | None):
    """Analyze and collect ``sql`` as a pyarrow Table; bad SQL becomes a one-line ConfigError."""
    from pyspark.errors import AnalysisException

    quiet_query_context_logs()
    try:
        df = spark.sql(sql)
        if limit:
            df = df.limit(limit)
        return df.toArrow()
    except AnalysisException as exc:  # ParseException is a subclass
        raise ConfigError(f"query failed: {one_line(exc)}") from None


def _rows(table) -> list[dict]:
    return table.to_pylist(maps_as_pydicts="lossy")


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def render(table, fmt: str, out: Path | None, stream: IO[str]) -> None:
    """Print or save a result table in ``fmt``."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert out is not None
        pq.write_table(table, out)
        return
    if fmt == "json":
        text = "".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in _rows(table))
    else:
        import pandas as pd

        rows = _rows(table)
        frame = pd.DataFrame.from_records(rows, columns=table.column_names)
        for col in frame.columns:  # maps/lists as JSON so CSV cells and table cells stay one line
            if frame[col].map(lambda v: isinstance(v, (dict, list))).any():
                frame[col] = frame[col].map(lambda v: json.dumps(v, default=_json_default) if v is not None else None)
        if fmt == "csv":
            text = frame.to_csv(index=False)
        elif frame.empty:
            text = "(no rows) columns: " + ", ".join(table.column_names) + "\n"
        else:
            with pd.option_context("display.max_colwidth", 80, "display.width", 250):
                text = frame.to_string(index=False) + "\n"
    if out is None:
        stream.write(text)
    else:
        out.write_text(text)


def _vanished_file(exc: BaseException) -> bool:
    text = str(exc)
    return "FILE_NOT_EXIST" in text or "FileNotFoundException" in text


def describe_views(spark, infos, stream: IO[str]) -> None:
    """Print each view, where it comes from and its columns."""
    for info in infos:
        cols = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in spark.table(info.name).schema.fields)
        where = f"{info.path}: " if info.path else ""
        stream.write(f"{info.name}  ({where}{info.note})\n    {cols}\n")


def execute(spark, config: QueryConfig, stream: IO[str] | None = None) -> int:
    """Register the views over ``config.output`` and run (or list) them; returns the row count.

    ``spark`` is the SparkSession for ``--engine spark``; for DuckDB it may be None or a
    DuckDB connection to reuse."""
    stream = stream or sys.stdout
    run = _execute_duckdb if config.engine == "duckdb" else _execute_spark
    table = run(spark, config, stream)
    if table is None:  # views listed
        return 0
    render(table, config.fmt, config.out, stream)
    if config.limit and table.num_rows == config.limit:
        log.warning("showing the first %d rows; raise --limit (0 = all) for more", config.limit)
    log.info("%d row(s) from %s%s", table.num_rows, config.output, f" -> {config.out}" if config.out else "")
    return table.num_rows


def _execute_duckdb(con, config: QueryConfig, stream: IO[str]):
    import duckdb

    from streaming import duck

    if not isinstance(con, duckdb.DuckDBPyConnection):  # None, or a SparkSession passed by habit
        con = duck.connect()
    infos = duck.register_views(con, config.output, config.as_of)
    if config.sql is None:
        duck.describe_views(con, infos, stream)
        return None
    return duck.query(con, config.output, config.sql, config.limit, config.as_of)


def _execute_spark(spark, config: QueryConfig, stream: IO[str]):
    from streaming.tables import register_views

    infos = register_views(spark, config.output, config.as_of)
    if config.sql is None:
        describe_views(spark, infos, stream)
        return None
    for attempt in (1, 2):
        try:
            table = run_sql(spark, config.sql, config.limit)
            break
        except Exception as exc:  # noqa: BLE001 - only a vanished file is retried
            if attempt == 2 or not _vanished_file(exc):
                raise
            # VACUUM removed a file of the snapshot between opening the table and reading it
            log.info("a file vanished while reading %s (VACUUM?); opening the tables again", config.output)
            register_views(spark, config.output, config.as_of)
    return table


def _run(args: argparse.Namespace) -> int:
    from streaming.duck import check_output_dir

    config = config_from_args(args)
    check_output_dir(config.output)
    if config.out is not None and not config.out.parent.exists():
        raise DataError(f"cannot write {config.out}: folder {config.out.parent} does not exist")
    if config.engine == "duckdb":
        execute(None, config)
        return 0
    spark = build_spark("meme-query", master=config.master, conf={"spark.sql.shuffle.partitions": "2"})
    execute(spark, config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
