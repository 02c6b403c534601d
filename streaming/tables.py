"""Register the output tables under ``--output`` as Spark SQL views.

``meme-query`` and notebooks read the same folders through these views, so a query written
against ``predictions`` works the same everywhere, including on a fresh output folder where
the stream has not written anything yet (the view is then empty but has the right columns,
from :mod:`streaming.schema`, so a dashboard query returns zero rows instead of crashing).
"""
from __future__ import annotations

import logging
import os

from pyspark.sql import DataFrame, SparkSession

from streaming.schema import CLASS_COUNTS, PREDICTIONS, TABLES, ViewInfo, check_output_dir, data_files, ddl, table_dir

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


def table_frame(spark: SparkSession, output: str | os.PathLike[str], table: str) -> tuple[DataFrame, int]:
    """One output table as a Spark DataFrame plus its file count; empty with the schema when no files.
    (Without Spark: :func:`streaming.schema.read_table`.)"""
    folder = table_dir(output, table)
    files = data_files(folder)
    if not files:
        return spark.createDataFrame([], ddl(table)), 0
    df = spark.read.option("basePath", str(folder)).parquet(str(folder))
    return df, len(files)


def register_views(spark: SparkSession, output: str | os.PathLike[str]) -> list[ViewInfo]:
    """Register ``predictions``, ``quarantine``, ``class_counts`` (summed deltas),
    ``class_count_deltas`` and ``class_totals`` as temporary views over ``output``."""
    root = check_output_dir(output)
    infos: list[ViewInfo] = []
    for table in TABLES:
        folder = table_dir(root, table)
        df, files = table_frame(spark, root, table)
        view = CLASS_COUNT_DELTAS if table == CLASS_COUNTS else table
        df.createOrReplaceTempView(view)
        if not folder.exists():
            note = "folder does not exist yet: registered empty"
            log.info("%s: %s does not exist yet; view registered empty", view, folder)
        elif files == 0:
            note = "no data files yet: registered empty"
            log.info("%s: no Parquet files under %s yet; view registered empty", view, folder)
        else:
            note = f"{files} file(s)"
            log.debug("%s: %d file(s) under %s", view, files, folder)
        infos.append(ViewInfo(view, folder, files, note))
    spark.sql(CLASS_COUNTS_SQL).createOrReplaceTempView(CLASS_COUNTS)
    infos.append(ViewInfo(CLASS_COUNTS, None, 0, f"SUM(count) of {CLASS_COUNT_DELTAS} per window_start, window_end, label"))
    spark.sql(CLASS_TOTALS_SQL).createOrReplaceTempView(CLASS_TOTALS)
    infos.append(ViewInfo(CLASS_TOTALS, None, 0, f"COUNT(*) of {PREDICTIONS} per label (label not null)"))
    return infos
