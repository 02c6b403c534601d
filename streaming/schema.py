"""The output tables, defined once: names, columns and types, and where they live under ``--output``.

Every table is a Delta Lake table, partitioned by ``date`` (UTC), written by the executors
inside ``foreachBatch`` (``streaming.sinks``) and read by Spark (``delta.`OUTPUT/predictions```),
DuckDB/pandas through ``deltalake`` (``meme-query``, the dashboard) or any Delta reader::

    OUTPUT/                      a folder or a Hadoop URI (file:, hdfs://, s3a://, abfss://, gs://)
      predictions/_delta_log/    one row per input image (errors included)
      quarantine/_delta_log/     one row per rejected input, with its bytes
      class_counts/_delta_log/   per-batch deltas of rolling window counts (readers sum them)
      batches/_delta_log/        one row per committed micro-batch and writer: its totals, and for
                                 the folder source the inputs to move (replayed after a crash)
      labels/_delta_log/         people's labels (meme-label, the dashboard's review queue): append-only,
                                 the latest row per image wins; written by ``streaming.labels``

This module imports neither Spark nor the streaming code, so the command-line tools that
only read tables stay quick to start.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from memestream.abspath import is_uri
from memestream.errors import DataError

PREDICTIONS = "predictions"
QUARANTINE = "quarantine"
CLASS_COUNTS = "class_counts"
BATCHES = "batches"
#: Every Delta table under OUTPUT, in the order a batch writes them (``batches`` last: its row
#: says the batch is complete).
TABLES: tuple[str, ...] = (PREDICTIONS, QUARANTINE, CLASS_COUNTS, BATCHES)
#: People's labels: written by ``meme-label`` and the dashboard, never by the stream, and never
#: touched by retention (a label is worth keeping as long as the model learns from it).
LABELS = "labels"
#: Every table a reader registers: the stream's and the labels.
READ_TABLES: tuple[str, ...] = (*TABLES, LABELS)
#: The partition column (a DATE, UTC): the event date for predictions/quarantine, the window
#: start's date for class_counts, the commit date for batches.
DATE = "date"
#: Each stream writes under its own name (``writer``), kept in its checkpoint: batch ids restart
#: per checkpoint, so (writer, batch_id) names a batch, and the writer is Delta's ``txnAppId``.
WRITER = "writer"

_IDENTITY = (
    ("image_id", "string"), ("source", "string"), ("origin", "string"), ("path", "string"),
    ("kafka_key", "string"), ("headers", "map<string,string>"), ("event_time", "timestamp"),
    ("processing_time", "timestamp"),
)
#: Columns of each table in order (Spark SQL types), without the ``date`` partition (added last).
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    PREDICTIONS: (
        *_IDENTITY, ("label", "string"), ("confidence", "double"), ("probabilities", "map<string,double>"),
        ("error", "string"), ("error_code", "string"), ("model_version", "string"), ("size_bytes", "bigint"),
        # why the label is what it is: the OCR text branch (NULL when it did not run) and the
        # novelty score ("none of these": ood = above the model's threshold; nearest class)
        ("ocr_ran", "boolean"), ("ocr_text", "string"), ("ocr_error", "string"),
        ("novelty", "double"), ("ood", "boolean"), ("nearest_class", "string"),
        ("late", "boolean"), ("batch_id", "bigint"), (WRITER, "string"),
    ),
    QUARANTINE: (
        *_IDENTITY, ("error", "string"), ("error_code", "string"), ("size_bytes", "bigint"),
        ("quarantine_path", "string"), ("payload", "binary"), ("batch_id", "bigint"), (WRITER, "string"),
    ),
    CLASS_COUNTS: (
        ("window_start", "timestamp"), ("window_end", "timestamp"), ("label", "string"), ("count", "bigint"),
        ("batch_id", "bigint"), (WRITER, "string"),
    ),
    BATCHES: (
        (WRITER, "string"), ("batch_id", "bigint"), ("rows", "bigint"), ("errors", "bigint"), ("late", "bigint"),
        ("max_event_time", "timestamp"), ("model_version", "string"), ("label_totals", "map<string,bigint>"),
        ("moves", "map<string,string>"), ("committed_at", "timestamp"),
    ),
    LABELS: (
        ("image_id", "string"), ("label", "string"), ("previous_label", "string"), ("model_version", "string"),
        ("labeller", "string"), ("labelled_at", "timestamp"), ("how", "string"),
        # the request that wrote the row (a double-submitted click writes one row) and where the
        # image's bytes were kept for training (NULL when no copy exists, e.g. a Kafka input)
        ("request_id", "string"), ("image_path", "string"),
    ),
}

#: The view of the latest label per image (``labels`` is append-only; a latest row whose label
#: is NULL withdrew it), in SQL that Spark and DuckDB both accept.
CURRENT_LABELS = "current_labels"
CURRENT_LABELS_SQL = (
    f"SELECT {', '.join((*(name for name, _ in COLUMNS[LABELS]), DATE))} FROM (SELECT *, ROW_NUMBER() OVER "
    f"(PARTITION BY image_id ORDER BY labelled_at DESC, request_id DESC) AS rn FROM {LABELS}) WHERE rn = 1 AND label IS NOT NULL"
)

_ARROW_TYPES = {
    "string": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "map<string,string>": pa.map_(pa.string(), pa.string()),
    "map<string,double>": pa.map_(pa.string(), pa.float64()),
    "map<string,bigint>": pa.map_(pa.string(), pa.int64()),
}


@dataclass(frozen=True)
class ViewInfo:
    """What a query engine registered for one view: shown by ``meme-query`` without SQL."""

    name: str
    path: str | None
    files: int
    note: str


def column_names(table: str) -> tuple[str, ...]:
    """The columns of ``table`` as written, in order, without the ``date`` partition."""
    return tuple(name for name, _ in COLUMNS[table])


def ddl(table: str) -> str:
    """Spark DDL of ``table`` (``date`` partition last): the schema a new table is created with."""
    return ", ".join(f"{name} {kind}" for name, kind in (*COLUMNS[table], (DATE, "date")))


def arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of ``table`` (``date`` partition last, a date32)."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (*COLUMNS[table], (DATE, "date"))])


# ---------------------------------------------------------------------------------------
# Where the tables live
# ---------------------------------------------------------------------------------------
def _check_table(table: str) -> None:
    if table not in READ_TABLES:
        raise DataError(f"unknown table {table!r}; expected one of {', '.join(READ_TABLES)}")


def table_uri(output: str | os.PathLike[str], table: str) -> str:
    """``OUTPUT/<table>`` as a string Spark and ``deltalake`` both accept (a path or a URI)."""
    _check_table(table)
    return f"{os.fspath(output).rstrip('/')}/{table}"


def table_dir(output: str | os.PathLike[str], table: str) -> Path:
    """``OUTPUT/<table>`` as a local Path (only for a local ``output``)."""
    _check_table(table)
    if is_uri(output):
        from memestream.inputs import local_path

        return Path(local_path(os.fspath(output))) / table
    return Path(output) / table


def local_folder(location: str | os.PathLike[str], refusal: str) -> Path:
    """A local folder or ``file:`` URI as a Path; any other URI is refused with ``refusal, found URI``."""
    text = os.fspath(location)
    if is_uri(text) and not text.startswith("file:"):
        raise DataError(f"{refusal}, found {text}")
    if text.startswith("file:"):
        from memestream.inputs import local_path

        text = local_path(text)
    return Path(text)


def is_delta_table(location: str | os.PathLike[str]) -> bool:
    """Whether a local folder (or ``file:`` URI) holds a Delta table (a ``_delta_log`` folder)."""
    return (local_folder(location, "is_delta_table checks local folders only") / "_delta_log").is_dir()


def check_output_dir(output: str | os.PathLike[str]) -> str:
    """The output location as a string; a clear error when a local one is missing or a file."""
    text = os.fspath(output)
    if is_uri(text) and not text.startswith("file:"):
        return text
    path = table_dir(text, PREDICTIONS).parent
    if not path.exists():
        raise DataError(
            f"output folder {path} does not exist; expected the --output folder of meme-stream "
            f"(with the Delta tables {', '.join(TABLES)} inside)"
        )
    if not path.is_dir():
        raise DataError(f"output path {path} is a file; expected the --output folder of meme-stream")
    return text


def read_table(output: str | os.PathLike[str], table: str, version: int | str | None = None) -> pa.Table:
    """One output table read through ``deltalake`` (no JVM): the snapshot at ``version`` (a table
    version or an ISO timestamp; default the latest). Empty, with the table's columns, while the
    table does not exist yet. Spark readers use :func:`streaming.tables.table_frame`."""
    from deltalake import DeltaTable  # only readers need it

    uri = table_uri(output, table)
    try:
        dt = DeltaTable(uri)
    except Exception as exc:  # noqa: BLE001 - deltalake raises TableNotFoundError for "no table yet"
        if type(exc).__name__ == "TableNotFoundError":
            return arrow_schema(table).empty_table()
        raise
    if version is not None:
        dt.load_as_version(version)
    return pa.table(dt.to_pyarrow_table())


def label_totals(output: str | os.PathLike[str]) -> dict[str, int]:
    """Images per label over every writer's recorded batches (the ``batches`` table), without Spark."""
    totals: dict[str, int] = {}
    for entries in read_table(output, BATCHES).column("label_totals").to_pylist():
        for label, n in entries or ():
            totals[label] = totals.get(label, 0) + int(n)
    return totals
