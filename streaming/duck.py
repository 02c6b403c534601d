"""Register the output tables as DuckDB views: the fast path of ``meme-query`` and the dashboard.

Spark needs ~10 s to start a JVM before it answers anything; DuckDB runs in-process and
answers a count over 100k predictions in well under a second. The views mirror the
Spark ones in :mod:`streaming.tables` (same names, columns and types; DuckDB spells the
types its own way, see docs/query.md), so a query that avoids dialect-specific
functions gives the same answer on both engines.

Each output table is a Delta Lake table: ``deltalake`` (delta-rs, no JVM) reads its
transaction log and hands DuckDB the snapshot's files as a pyarrow dataset, so only the
files of the committed version are read (no listing, no hidden-name rules) and DuckDB
pushes column selection and filters into the scan. :mod:`streaming.snapshots` picks the
version (``--as-of``) and refuses the old plain-Parquet layout.

This module imports neither pyspark nor pandas, so a query process starts fast.
"""
from __future__ import annotations

import logging
import os
from typing import IO, Any, Sequence

from memestream.errors import ConfigError
from streaming import schema, snapshots
from streaming.schema import ViewInfo, check_output_dir  # noqa: F401 - re-exported for meme-query

log = logging.getLogger(__name__)

PREDICTIONS, QUARANTINE, CLASS_COUNTS, BATCHES = schema.PREDICTIONS, schema.QUARANTINE, schema.CLASS_COUNTS, schema.BATCHES
CLASS_COUNT_DELTAS = "class_count_deltas"
CLASS_TOTALS = "class_totals"
TABLES: tuple[str, ...] = schema.READ_TABLES
#: The view each Delta table is registered as (``class_counts`` is the summed view over the deltas).
VIEW_OF: dict[str, str] = {table: CLASS_COUNT_DELTAS if table == CLASS_COUNTS else table for table in TABLES}

#: Columns of each table in DuckDB types: the one definition (:data:`streaming.schema.COLUMNS`,
#: Spark SQL types) translated type by type; tests check that both engines and a Delta table
#: read through ``deltalake`` report exactly these.
_DUCK_TYPES = {
    "string": "VARCHAR", "double": "DOUBLE", "bigint": "BIGINT", "boolean": "BOOLEAN", "binary": "BLOB",
    "timestamp": "TIMESTAMP WITH TIME ZONE", "map<string,string>": "MAP(VARCHAR, VARCHAR)",
    "map<string,double>": "MAP(VARCHAR, DOUBLE)", "map<string,bigint>": "MAP(VARCHAR, BIGINT)",
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
CURRENT_LABELS, CURRENT_LABELS_SQL = schema.CURRENT_LABELS, schema.CURRENT_LABELS_SQL


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


def register_views(con, output: str | os.PathLike[str], as_of: str | int | None = None) -> list[ViewInfo]:
    """Create ``predictions``, ``quarantine``, ``class_count_deltas``, ``batches``, ``class_counts``
    (summed deltas) and ``class_totals`` as views over the Delta tables under ``output``, at
    ``as_of`` (a ``predictions`` version or an ISO timestamp: :mod:`streaming.snapshots`;
    default the latest). A table that does not exist yet is an empty view with its columns.
    Call again to see versions committed since (a view holds one snapshot)."""
    root = check_output_dir(output)
    infos: list[ViewInfo] = []
    for table, snap in snapshots.resolve(root, as_of).items():
        view = VIEW_OF[table]
        con.register(view, dataset(snap))
        files = snap.files
        log.debug("%s: %s (%s)", view, snap.uri, snap.note)
        infos.append(ViewInfo(view, snap.uri, files, snap.note))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {CLASS_COUNTS} AS {CLASS_COUNTS_SQL}")
    infos.append(ViewInfo(CLASS_COUNTS, None, 0, f"SUM(count) of {CLASS_COUNT_DELTAS} per window_start, window_end, label"))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {CLASS_TOTALS} AS {CLASS_TOTALS_SQL}")
    infos.append(ViewInfo(CLASS_TOTALS, None, 0, f"COUNT(*) of {PREDICTIONS} per label (label not null)"))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {CURRENT_LABELS} AS {CURRENT_LABELS_SQL}")
    infos.append(ViewInfo(CURRENT_LABELS, None, 0, f"the latest row of {schema.LABELS} per image_id"))
    return infos


def dataset(snap: snapshots.Snapshot):
    """What DuckDB scans for one snapshot: the Delta files as a pyarrow dataset (lazy: DuckDB
    pushes projections and filters into it), or an empty table with the columns."""
    if snap.table is None:
        return schema.arrow_schema(snap.name).empty_table()
    return snap.table.to_pyarrow_dataset()


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
    """True for the error a scan raises when a file of the snapshot is gone (VACUUM removed it)."""
    import duckdb

    text = str(exc)
    if isinstance(exc, duckdb.InvalidInputException):  # a pyarrow dataset file gone mid-scan
        return "Could not open Parquet input source" in text or "not found" in text.lower()
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
        if vanished_file(exc):
            raise
        raise ConfigError(f"query failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else type(exc).__name__


def query(con, output: str | os.PathLike[str], sql: str, limit: int | None = None, as_of: str | int | None = None):
    """``run_sql`` over the registered views; if a file of the snapshot vanished mid-query
    (VACUUM of an old version), registers the views again once (the latest snapshot, or ``as_of``)."""
    for attempt in (1, 2):
        try:
            return run_sql(con, sql, limit)
        except Exception as exc:  # noqa: BLE001 - only a vanished file is retried
            if attempt == 2 or not vanished_file(exc):
                raise
            log.info("a file vanished while reading %s (VACUUM?); opening the tables again", output)
            register_views(con, output, as_of)
    raise AssertionError("unreachable")
