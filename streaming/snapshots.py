"""Which snapshot of each output table a reader opens: the latest, or ``--as-of VERSION|TIMESTAMP``.

Every reader (``meme-query`` on DuckDB or Spark, the dashboard, notebooks) resolves the
snapshot here, through ``deltalake`` (delta-rs: no JVM), so the engines agree on what
``--as-of`` means:

- ``--as-of TIMESTAMP`` (ISO 8601, e.g. ``2026-12-06T17:00:00Z``; no zone = UTC): every
  table at its latest version committed at or before that instant. A table created after
  it reads as empty (with its columns).
- ``--as-of VERSION`` (a whole number): the version of ``predictions``, the table a batch
  writes first. The other tables are read as they were while that version was the newest
  one, i.e. their latest version committed before ``predictions`` version ``VERSION + 1``
  (so the quarantine, counts and batch rows of the batch that made version ``VERSION`` are
  included, those of the next batch are not). Each table counts its own versions, so the
  same number would name unrelated batches in different tables: one number, one table.

An ``OUTPUT/<table>`` folder that holds Parquet files but no ``_delta_log`` is the layout
before Delta Lake; it is refused with one line naming the conversion command.

This module imports neither pyspark nor pandas.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Union

from memestream.abspath import is_uri
from memestream.errors import ConfigError, DataError
from streaming import schema

AsOf = Union[int, datetime, None]


@dataclass
class Snapshot:
    """One table as a reader opens it: ``table`` is None while the table does not exist (at ``as_of``)."""

    name: str
    uri: str
    version: int | None
    table: Any  # deltalake.DeltaTable loaded at ``version``, or None
    note: str

    @property
    def files(self) -> int:
        return len(self.table.file_uris()) if self.table is not None else 0


def parse_as_of(value: str | int | datetime | None) -> AsOf:
    """``--as-of`` as a version (int) or an aware UTC datetime; a one-line ConfigError otherwise."""
    if value is None or isinstance(value, (int, datetime)):
        if isinstance(value, int) and value < 0:
            raise ConfigError(f"--as-of expects a table version >= 0 or an ISO timestamp, found {value}")
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1) if "T" not in text else text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--as-of expects a table version (0, 1, ...) or an ISO timestamp (2026-12-06T17:00:00Z), found {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _local(uri: str) -> Path | None:
    if is_uri(uri) and not uri.startswith("file:"):
        return None
    if uri.startswith("file:"):
        from memestream.inputs import local_path

        return Path(local_path(uri))
    return Path(uri)


def convert_hint(output: str | os.PathLike[str]) -> str:
    """The one command that turns an old plain-Parquet output into Delta tables."""
    return f"meme-compact --output {os.fspath(output)} --convert"


def check_not_legacy(output: str | os.PathLike[str], table: str) -> None:
    """A one-line DataError when ``OUTPUT/<table>`` is a plain-Parquet folder (no ``_delta_log``)."""
    folder = _local(schema.table_uri(output, table))
    if folder is None or not folder.is_dir() or (folder / "_delta_log").is_dir():
        return
    legacy = any(p.name.startswith("date=") for p in folder.iterdir()) or any(
        not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts) for f in folder.rglob("*.parquet")
    )
    if legacy:
        raise DataError(
            f"{folder} is a plain-Parquet table (no _delta_log), the layout before Delta Lake; convert the output once with: "
            f"{convert_hint(output)}"
        )


def _not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "TableNotFoundError"


def open_table(uri: str, as_of: int | datetime | None = None):
    """A ``deltalake.DeltaTable`` at ``as_of`` (a version, or the latest at or before a UTC instant);
    None when the table does not exist (then, or at all)."""
    from deltalake import DeltaTable

    try:
        dt = DeltaTable(uri)
    except Exception as exc:  # noqa: BLE001 - TableNotFoundError: no table yet
        if _not_found(exc):
            return None
        raise
    if as_of is None:
        return dt
    if isinstance(as_of, int):
        if as_of > dt.version():
            raise DataError(f"{uri} has versions up to {dt.version()}; --as-of {as_of} does not exist yet")
        dt.load_as_version(as_of)
        return dt
    if _first_commit(dt) > as_of:
        return None  # created after the instant asked for
    try:
        dt.load_as_version(as_of)
    except Exception as exc:  # noqa: BLE001 - older versions removed by log cleanup
        raise DataError(f"{uri}: no version at or before {as_of.isoformat()} can be loaded: {str(exc).splitlines()[0]}") from None
    return dt


def _commit_times(dt) -> dict[int, datetime]:
    """Commit instant of each version still in the log (``history`` is newest first)."""
    times: dict[int, datetime] = {}
    for entry in dt.history():
        version, stamp = entry.get("version"), entry.get("timestamp")
        if version is not None and stamp is not None:
            times[int(version)] = datetime.fromtimestamp(int(stamp) / 1000, tz=timezone.utc)
    return times


def _first_commit(dt) -> datetime:
    times = _commit_times(dt)
    return min(times.values()) if times else datetime.min.replace(tzinfo=timezone.utc)


def resolve(output: str | os.PathLike[str], as_of: str | int | datetime | None = None) -> dict[str, Snapshot]:
    """The snapshot of every table under ``output`` (see the module docstring for ``as_of``)."""
    when = parse_as_of(as_of)
    for table in schema.TABLES:
        check_not_legacy(output, table)
    per_table: dict[str, int | datetime | None] = {t: when for t in schema.READ_TABLES}
    if isinstance(when, int):
        pred = open_table(schema.table_uri(output, schema.PREDICTIONS))
        if pred is None:
            raise DataError(f"--as-of {when}: {schema.table_uri(output, schema.PREDICTIONS)} has no versions yet")
        latest = pred.version()
        if when > latest:
            raise DataError(f"--as-of {when}: predictions has versions 0..{latest}")
        times = _commit_times(pred)
        cutoff = times[when + 1] - timedelta(milliseconds=1) if when < latest and when + 1 in times else None
        per_table = {t: cutoff for t in schema.READ_TABLES}
        per_table[schema.PREDICTIONS] = when
    snaps: dict[str, Snapshot] = {}
    for table in schema.READ_TABLES:
        uri = schema.table_uri(output, table)
        dt = open_table(uri, per_table[table])
        if dt is None:
            exists = open_table(uri) is not None if per_table[table] is not None else False
            note = "no version at or before --as-of: registered empty" if exists else "no Delta table yet: registered empty"
            snaps[table] = Snapshot(table, uri, None, None, note)
            continue
        version = dt.version()
        snaps[table] = Snapshot(table, uri, version, dt, f"Delta version {version}, {len(dt.file_uris())} file(s)")
    return snaps
