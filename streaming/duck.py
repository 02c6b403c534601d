"""Register the output tables as DuckDB views: the fast path of ``meme-query`` and the dashboard.

Spark needs ~10 s to start a JVM before it answers anything; DuckDB runs in-process and
answers a count over 100k predictions in well under a second. The views mirror the
Spark ones in :mod:`streaming.tables` (same names, columns and types; DuckDB spells the
types its own way, see docs/query.md), so a query that avoids dialect-specific
functions gives the same answer on both engines.

DuckDB's ``read_parquet`` glob does not skip hidden names, so the file list is built
here with the rule Spark applies: any file or folder whose name starts with ``.`` or
``_`` is invisible. That skips the writers' staging files (``.part-*.tmp``), commit
markers (``_commits/``) and the generations compaction leaves behind
(``.date=D.compact-*``, ``.date=D.retired-*``, ``.date=D.expired-*``).

This module imports neither pyspark nor pandas, so a query process starts fast.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any, Sequence

from memestream.errors import ConfigError
from streaming import schema
from streaming.schema import ViewInfo, check_output_dir, data_files  # noqa: F401 - one folder layout for both engines

log = logging.getLogger(__name__)

PREDICTIONS, QUARANTINE, CLASS_COUNTS = schema.PREDICTIONS, schema.QUARANTINE, schema.CLASS_COUNTS
CLASS_COUNT_DELTAS = "class_count_deltas"
CLASS_TOTALS = "class_totals"
TABLES: tuple[str, ...] = schema.TABLES

#: Columns of each table when it has no files yet, in DuckDB types: the one definition
#: (:data:`streaming.schema.COLUMNS`, Spark SQL types) translated type by type (tests
#: check that the two engines report the same columns and types); when files exist
#: their schema wins.
_DUCK_TYPES = {
    "string": "VARCHAR", "double": "DOUBLE", "bigint": "BIGINT", "boolean": "BOOLEAN", "binary": "BLOB",
    "timestamp": "TIMESTAMP WITH TIME ZONE", "map<string,string>": "MAP(VARCHAR, VARCHAR)",
    "map<string,double>": "MAP(VARCHAR, DOUBLE)",
}
EMPTY_SCHEMAS: dict[str, list[tuple[str, str]]] = {
    table: [(name, _DUCK_TYPES[kind]) for name, kind in schema.COLUMNS[table]] + [(schema.DATE, "DATE")] for table in TABLES
}

# The same derived views as streaming.tables (Spark); both dialects accept these texts.
CLASS_COUNTS_SQL = (
    f'SELECT window_start, window_end, label, CAST(SUM("count") AS BIGINT) AS "count" '
    f"FROM {CLASS_COUNT_DELTAS} GROUP BY window_start, window_end, label"
)
CLASS_TOTALS_SQL = f'SELECT label, COUNT(*) AS "count" FROM {PREDICTIONS} WHERE label IS NOT NULL GROUP BY label'


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def empty_select(table: str) -> str:
    """A zero-row SELECT with the table's columns and types."""
    cols = ", ".join(f'CAST(NULL AS {typ}) AS "{name}"' for name, typ in EMPTY_SCHEMAS[table])
    return f"SELECT {cols} WHERE false"


def table_select(files: Sequence[Path]) -> str:
    """SELECT over an explicit file list, ``date`` taken from the ``date=`` folder names."""
    listing = ", ".join(_quote(str(f)) for f in files)
    return (
        f"SELECT * FROM read_parquet([{listing}], hive_partitioning = true, "
        f"hive_types = {{'date': 'DATE'}}, union_by_name = true)"
    )


def connect(threads: int | None = None):
    """An in-memory DuckDB connection set up like memestream's Spark session (UTC, Spark's NULL order)."""
    import duckdb

    config: dict[str, Any] = {}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    # Spark sorts NULLs first in ascending order and last in descending order; DuckDB's
    # default is NULLs last both ways. Same ORDER BY, same rows on both engines.
    con.execute("SET default_null_order = 'nulls_first_on_asc_last_on_desc'")
    return con


def register_views(con, output: str | os.PathLike[str]) -> list[ViewInfo]:
    """Create ``predictions``, ``quarantine``, ``class_count_deltas``, ``class_counts`` (summed
    deltas) and ``class_totals`` as views over ``output``; a table without files is an empty,
    typed view. Call again to pick up files written since (views hold the file list)."""
    root = check_output_dir(output)
    infos: list[ViewInfo] = []
    for table in TABLES:
        folder = root / table
        files = data_files(folder)
        view = CLASS_COUNT_DELTAS if table == CLASS_COUNTS else table
        con.execute(f'CREATE OR REPLACE TEMP VIEW "{view}" AS ' + (table_select(files) if files else empty_select(table)))
        if not folder.exists():
            note = "folder does not exist yet: registered empty"
            log.info("%s: %s does not exist yet; view registered empty", view, folder)
        elif not files:
            note = "no data files yet: registered empty"
            log.info("%s: no Parquet files under %s yet; view registered empty", view, folder)
        else:
            note = f"{len(files)} file(s)"
            log.debug("%s: %d file(s) under %s", view, len(files), folder)
        infos.append(ViewInfo(view, folder, len(files), note))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {CLASS_COUNTS} AS {CLASS_COUNTS_SQL}")
    infos.append(ViewInfo(CLASS_COUNTS, None, 0, f"SUM(count) of {CLASS_COUNT_DELTAS} per window_start, window_end, label"))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {CLASS_TOTALS} AS {CLASS_TOTALS_SQL}")
    infos.append(ViewInfo(CLASS_TOTALS, None, 0, f"COUNT(*) of {PREDICTIONS} per label (label not null)"))
    return infos


def columns(con, view: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of each column of ``view``."""
    return [(r[0], r[1]) for r in con.execute(f'DESCRIBE "{view}"').fetchall()]


def describe_views(con, infos: Sequence[ViewInfo], stream: IO[str]) -> None:
    """Print each view, where it comes from and its columns."""
    for info in infos:
        cols = ", ".join(f"{name} {typ}" for name, typ in columns(con, info.name))
        where = f"{info.path}: " if info.path else ""
        stream.write(f"{info.name}  ({where}{info.note})\n    {cols}\n")


def vanished_file(exc: BaseException) -> bool:
    """True for the error DuckDB raises when a listed file is gone (compaction or retention swapped it)."""
    import duckdb

    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("No such file" in text or "No files found" in text or "Cannot open" in text)


def run_sql(con, sql: str, limit: int | None = None):
    """Run ``sql`` and return the result as a pyarrow Table; bad SQL becomes a one-line ConfigError.

    A statement without a result (``SET``, ``CREATE``...) returns an empty table.
    """
    import duckdb
    import pyarrow as pa

    try:
        rel = con.sql(sql)
        if rel is None:
            return pa.table({})
        if limit:
            rel = rel.limit(limit)
        return rel.to_arrow_table()
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
            duckdb.ConversionException, duckdb.InvalidInputException, duckdb.NotImplementedException) as exc:
        raise ConfigError(f"query failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else type(exc).__name__


def query(con, output: str | os.PathLike[str], sql: str, limit: int | None = None):
    """``run_sql`` over fresh views, listing the files again once if one vanished mid-query."""
    for attempt in (1, 2):
        try:
            return run_sql(con, sql, limit)
        except Exception as exc:  # noqa: BLE001 - only a vanished file is retried
            if attempt == 2 or not vanished_file(exc):
                raise
            log.info("a file vanished while reading %s (compaction?); listing again", output)
            register_views(con, output)
    raise AssertionError("unreachable")
