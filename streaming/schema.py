"""The output tables, defined once: names, columns and types, and the folder layout under ``--output``.

Everything that writes or reads the tables (``streaming.sinks``, ``streaming.batch``,
``streaming.tables``, ``meme-compact``, ``meme-query``, the demo) takes them from here::

    OUTPUT/
      predictions/date=YYYY-MM-DD/part-<writer>-<batch>.parquet
      quarantine/date=.../...
      class_counts/date=.../...
      _commits/<writer>/<batch>.json     commit markers (``_`` and ``.`` names are hidden from readers)
      .lock                              the writers' lock

This module imports neither Spark nor the streaming code, so the command-line tools that
only touch files stay quick to start.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from memestream.errors import DataError
from memestream.hidden import is_reader_hidden, walk_visible

PREDICTIONS = "predictions"
QUARANTINE = "quarantine"
CLASS_COUNTS = "class_counts"
#: Tables with a folder under OUTPUT (one ``date=YYYY-MM-DD`` sub-folder per event date).
TABLES: tuple[str, ...] = (PREDICTIONS, QUARANTINE, CLASS_COUNTS)
#: Commit markers: ``OUTPUT/_commits/<writer>/<batch>.json``.
COMMITS = "_commits"
#: The writers' lock file (fcntl) under OUTPUT.
LOCK = ".lock"
#: The partition column: in the folder name (``date=...``), never in the files.
DATE = "date"
DEFAULT_WRITER = "main"
_PART_RE = re.compile(r"^part-([A-Za-z0-9_]+)-(\d{10})\.parquet$")

_IDENTITY = (
    ("image_id", "string"), ("source", "string"), ("origin", "string"), ("path", "string"),
    ("kafka_key", "string"), ("headers", "map<string,string>"), ("event_time", "timestamp"),
    ("processing_time", "timestamp"),
)
#: Columns of each table in file order (Spark SQL types); ``date`` is added as the partition.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    PREDICTIONS: (
        *_IDENTITY, ("label", "string"), ("confidence", "double"), ("probabilities", "map<string,double>"),
        ("error", "string"), ("error_code", "string"), ("model_version", "string"), ("size_bytes", "bigint"),
        # why the label is what it is: the OCR text branch (NULL when it did not run) and the
        # novelty score ("none of these": ood = above the model's threshold; nearest class)
        ("ocr_ran", "boolean"), ("ocr_text", "string"), ("ocr_error", "string"),
        ("novelty", "double"), ("ood", "boolean"), ("nearest_class", "string"),
        ("late", "boolean"), ("batch_id", "bigint"),
    ),
    QUARANTINE: (
        *_IDENTITY, ("error", "string"), ("error_code", "string"), ("size_bytes", "bigint"),
        ("quarantine_path", "string"), ("payload", "binary"), ("batch_id", "bigint"),
    ),
    CLASS_COUNTS: (
        ("window_start", "timestamp"), ("window_end", "timestamp"), ("label", "string"), ("count", "bigint"),
        ("batch_id", "bigint"),
    ),
}

_ARROW_TYPES = {
    "string": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.string(),  # the partition value as pyarrow's hive partitioning reads it
    "map<string,string>": pa.map_(pa.string(), pa.string()),
    "map<string,double>": pa.map_(pa.string(), pa.float64()),
}


@dataclass(frozen=True)
class ViewInfo:
    """What a query engine registered for one view: shown by ``meme-query`` without SQL."""

    name: str
    path: Path | None
    files: int
    note: str


def column_names(table: str) -> tuple[str, ...]:
    """The columns of ``table`` as written, in order, without the ``date`` partition."""
    return tuple(name for name, _ in COLUMNS[table])


def ddl(table: str) -> str:
    """Spark DDL of ``table`` as read back (``date`` partition last): the schema of an empty view."""
    return ", ".join(f"{name} {kind}" for name, kind in (*COLUMNS[table], (DATE, "date")))


def arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of ``table`` as pyarrow reads it back (``date`` partition last, as a string)."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (*COLUMNS[table], (DATE, "date"))])


# ---------------------------------------------------------------------------------------
# Folder layout
# ---------------------------------------------------------------------------------------
def part_name(batch_id: int, writer: str = DEFAULT_WRITER) -> str:
    """File of one batch of one writer inside a ``date=`` folder."""
    return f"part-{writer}-{batch_id:010d}.parquet"


def batch_of(name: str) -> tuple[str, int] | None:
    """``part-<writer>-<batch>.parquet`` -> (writer, batch)."""
    m = _PART_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else None


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


def data_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Parquet files a reader would see under ``folder`` (hidden/staging names skipped)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [p for p in walk_visible(root, is_reader_hidden) if p.name.endswith(".parquet")]


def date_dirs(folder: str | os.PathLike[str]) -> list[Path]:
    """``date=YYYY-MM-DD`` sub-folders of one table, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{DATE}="))


def read_table(output: str | os.PathLike[str], table: str) -> pa.Table:
    """One output table read with pyarrow (what a non-Spark reader does); empty, with the
    table's columns, while it has no files. Spark readers use :func:`streaming.tables.table_frame`."""
    import pyarrow.dataset as ds  # only readers need it; writers and meme-compact do not

    folder = table_dir(output, table)
    if not data_files(folder):
        return arrow_schema(table).empty_table()
    return ds.dataset(str(folder), format="parquet", partitioning="hive").to_table()
