"""Locate the output tables under ``--output`` and register them as Spark SQL views.

``meme-query``, ``meme-compact`` and notebooks all read the same folders; keeping the
paths, schemas and view definitions in one place means a query written against
``predictions`` works the same everywhere, including on a fresh output folder where the
stream has not written anything yet (the view is then empty but has the right columns,
so a dashboard query returns zero rows instead of crashing).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from memestream.errors import DataError

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
QUARANTINE = "quarantine"
CLASS_COUNTS = "class_counts"
#: Tables with a folder under OUTPUT (one ``date=YYYY-MM-DD`` sub-folder per event date).
TABLES: tuple[str, ...] = (PREDICTIONS, QUARANTINE, CLASS_COUNTS)
COMMITS_DIR = "_commits"
LOCK_FILE = ".lock"

# Schemas used when a table has no files yet (see docs/ARCHITECTURE.md). When files exist
# their own schema wins, so a column added by the writer shows up without touching this.
PREDICTIONS_DDL = (
    "image_id string, source string, origin string, path string, kafka_key string, "
    "headers map<string,string>, event_time timestamp, processing_time timestamp, label string, "
    "confidence double, probabilities map<string,double>, error string, error_code string, "
    "model_version string, size_bytes bigint, late boolean, batch_id bigint, date date"
)
QUARANTINE_DDL = (
    "image_id string, source string, origin string, path string, kafka_key string, "
    "headers map<string,string>, event_time timestamp, processing_time timestamp, error string, "
    "error_code string, size_bytes bigint, quarantine_path string, payload binary, batch_id bigint, date date"
)
CLASS_COUNTS_DDL = "window_start timestamp, window_end timestamp, label string, count bigint, batch_id bigint, date date"
SCHEMAS: dict[str, str] = {PREDICTIONS: PREDICTIONS_DDL, QUARANTINE: QUARANTINE_DDL, CLASS_COUNTS: CLASS_COUNTS_DDL}

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


def check_output_dir(output: str | os.PathLike[str]) -> Path:
    """The output folder as a Path; a clear error when it is missing or not a folder."""
    path = Path(output)
    if not path.exists():
        raise DataError(
            f"output folder {path} does not exist; expected the --output folder of meme-stream "
            f"(with {PREDICTIONS}/, {QUARANTINE}/, {CLASS_COUNTS}/ inside)"
        )
    if not path.is_dir():
        raise DataError(f"output path {path} is a file; expected the --output folder of meme-stream")
    return path


def table_dir(output: str | os.PathLike[str], table: str) -> Path:
    """``OUTPUT/<table>``; raises for a name that is not one of :data:`TABLES`."""
    if table not in TABLES:
        raise DataError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    return Path(output) / table


def commits_dir(output: str | os.PathLike[str]) -> Path:
    return Path(output) / COMMITS_DIR


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def data_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Parquet files a reader would see under ``folder`` (hidden/staging names skipped)."""
    root = Path(folder)
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _visible(f) and f.endswith(".parquet"))
    return found


def date_dirs(folder: str | os.PathLike[str]) -> list[Path]:
    """``date=YYYY-MM-DD`` sub-folders of one table, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("date="))


@dataclass(frozen=True)
class ViewInfo:
    """What ``register_views`` found for one view: shown by ``meme-query`` without SQL."""

    name: str
    path: Path | None
    files: int
    note: str


def read_table(spark: SparkSession, output: str | os.PathLike[str], table: str) -> tuple[DataFrame, int]:
    """One output table as a DataFrame plus its file count; empty with the schema when no files."""
    folder = table_dir(output, table)
    files = data_files(folder)
    if not files:
        return spark.createDataFrame([], SCHEMAS[table]), 0
    df = spark.read.option("basePath", str(folder)).parquet(str(folder))
    return df, len(files)


def register_views(spark: SparkSession, output: str | os.PathLike[str]) -> list[ViewInfo]:
    """Register ``predictions``, ``quarantine``, ``class_counts`` (summed deltas),
    ``class_count_deltas`` and ``class_totals`` as temporary views over ``output``."""
    root = check_output_dir(output)
    infos: list[ViewInfo] = []
    for table in TABLES:
        folder = table_dir(root, table)
        df, files = read_table(spark, root, table)
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
