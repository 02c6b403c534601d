"""Register the Delta tables under ``--output`` as Spark SQL views.

``meme-query --engine spark`` and notebooks read the same tables through these views, so a
query written against ``predictions`` works the same everywhere, including on a fresh output
folder where the stream has not written anything yet (the view is then empty but has the
right columns, from :mod:`streaming.schema`, so a dashboard query returns zero rows instead
of crashing). Each table is read with ``spark.read.format("delta").load(OUTPUT/<table>)``
(the session needs Delta Lake: ``memestream.spark``); ``as_of`` is resolved per table by
:mod:`streaming.snapshots`, exactly as DuckDB does, and passed on as ``versionAsOf``.
"""
from __future__ import annotations

import logging
import os

from pyspark.sql import DataFrame, SparkSession

from streaming import snapshots
from streaming.schema import CLASS_COUNTS, CURRENT_LABELS, CURRENT_LABELS_SQL, LABELS, PREDICTIONS, READ_TABLES, ViewInfo, check_output_dir, ddl, table_uri

log = logging.getLogger(__name__)

#: Raw per-batch deltas stay queryable under this name; ``class_counts`` is their sum.
CLASS_COUNT_DELTAS = "class_count_deltas"
CLASS_TOTALS = "class_totals"

CLASS_COUNTS_SQL = (
    f"SELECT window_start, window_end, label, CAST(SUM(`count`) AS BIGINT) AS `count` "
    f"FROM {CLASS_COUNT_DELTAS} GROUP BY window_start, window_end, label"
)
CLASS_TOTALS_SQL = (
    f"SELECT label, COUNT(*) AS `count` FROM {PREDICTIONS} WHERE label IS NOT NULL GROUP BY label"
)


def _missing_table(exc: BaseException) -> bool:
    text = str(exc)
    return any(code in text for code in ("DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND", "PATH_NOT_FOUND",
                                         "is not a Delta table", "DELTA_EMPTY_DIRECTORY"))


def table_frame(spark: SparkSession, output: str | os.PathLike[str], table: str,
                version: int | None = None) -> tuple[DataFrame, bool]:
    """One output table as a Spark DataFrame (``version``: Delta ``versionAsOf``; default the
    latest) and whether it exists; empty with the table's columns when it does not exist yet.
    (Without Spark: :func:`streaming.schema.read_table`.)"""
    from pyspark.errors import AnalysisException

    snapshots.check_not_legacy(output, table)
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    try:
        df = reader.load(table_uri(output, table))
        df.schema  # noqa: B018 - resolves the table now, so a missing one is reported here
    except AnalysisException as exc:
        if not _missing_table(exc):
            raise
        return spark.createDataFrame([], ddl(table)), False
    return df, True


def register_views(spark: SparkSession, output: str | os.PathLike[str], as_of: str | int | None = None) -> list[ViewInfo]:
    """Register ``predictions``, ``quarantine``, ``class_count_deltas``, ``batches``,
    ``class_counts`` (summed deltas) and ``class_totals`` as temporary views over ``output``,
    at ``as_of`` (a ``predictions`` version or an ISO timestamp, see :mod:`streaming.snapshots`)."""
    root = check_output_dir(output)
    resolved = snapshots.resolve(root, as_of) if as_of is not None else None
    infos: list[ViewInfo] = []
    for table in READ_TABLES:
        view = CLASS_COUNT_DELTAS if table == CLASS_COUNTS else table
        uri = table_uri(root, table)
        if resolved is not None and resolved[table].version is None:
            df, exists, note = spark.createDataFrame([], ddl(table)), False, resolved[table].note
        else:
            version = resolved[table].version if resolved is not None else None
            df, exists = table_frame(spark, root, table, version)
            note = f"Delta version {version}" if version is not None else "Delta, latest version"
            if not exists:
                note = "no Delta table yet: registered empty"
                log.info("%s: no Delta table at %s yet; view registered empty", view, uri)
        df.createOrReplaceTempView(view)
        infos.append(ViewInfo(view, uri, 0, note))
    spark.sql(CLASS_COUNTS_SQL).createOrReplaceTempView(CLASS_COUNTS)
    infos.append(ViewInfo(CLASS_COUNTS, None, 0, f"SUM(count) of {CLASS_COUNT_DELTAS} per window_start, window_end, label"))
    spark.sql(CLASS_TOTALS_SQL).createOrReplaceTempView(CLASS_TOTALS)
    infos.append(ViewInfo(CLASS_TOTALS, None, 0, f"COUNT(*) of {PREDICTIONS} per label (label not null)"))
    spark.sql(CURRENT_LABELS_SQL).createOrReplaceTempView(CURRENT_LABELS)
    infos.append(ViewInfo(CURRENT_LABELS, None, 0, f"the latest row of {LABELS} per image_id"))
    return infos
