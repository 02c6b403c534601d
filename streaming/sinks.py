"""Exactly-once Parquet tables written per micro-batch.

Spark replays a micro-batch (same id, same input) after a crash until it is recorded in
the checkpoint's commit log. Every write here is therefore idempotent per batch id:

1. files are written hidden (``.part-N.parquet.tmp``) and renamed into place, so a reader
   never sees half a file;
2. file names derive from the batch id, so a replay *replaces* what a crashed attempt
   left instead of adding to it;
3. after all tables of batch N are in place, a commit marker ``_commits/<writer>/N.json``
   is written; a replay of a batch whose marker exists is skipped entirely.

Writers (the stream, ``meme-compact``) take ``OUTPUT/.lock`` while changing files, so
compaction never races a batch. Readers need no lock: Spark, pandas and pyarrow skip
names that start with ``_`` or ``.``.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memestream.errors import ConfigError
from streaming.schema import COMMITS, DEFAULT_WRITER, LOCK, TABLES, date_dirs, part_name, table_dir

log = logging.getLogger(__name__)

_WRITER_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class BatchMarker:
    """What a committed batch wrote; also carries the watermark and totals forward."""

    batch_id: int
    rows: int
    errors: int
    late: int
    max_event_time_ms: int | None
    label_totals: dict[str, int] = field(default_factory=dict)
    model_version: str | None = None
    written_at: str = ""
    files: dict[str, list[str]] = field(default_factory=dict)
    #: folder inputs to move after the commit: spooled path -> quarantine path (bad inputs)
    quarantine_moves: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BatchMarker":
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})  # type: ignore[arg-type]


class OutputTables:
    """The output folder: three Parquet tables partitioned by event date, plus markers.

    Several streams (say, the folder and the Kafka query) may write the same tables: each
    is a *writer* with its own batch ids, file names and markers (``_commits/<writer>/``).
    """

    def __init__(self, root: str | os.PathLike[str], writer: str = DEFAULT_WRITER) -> None:
        if not _WRITER_RE.match(writer):
            raise ValueError(f"writer name must be letters, digits or _, found {writer!r}")
        self.root = Path(root)
        self.writer = writer

    # -- layout -----------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return table_dir(self.root, table)

    @property
    def commits_dir(self) -> Path:
        return self.root / COMMITS / self.writer

    def marker_path(self, batch_id: int) -> Path:
        return self.commits_dir / f"{batch_id:010d}.json"

    def writers(self) -> list[str]:
        base = self.root / COMMITS
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def ensure_writable(self) -> None:
        """Create the layout, or fail with one line naming the folder that is not writable."""
        try:
            for t in TABLES:
                self.table_dir(t).mkdir(parents=True, exist_ok=True)
            self.commits_dir.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"output folder {self.root} is not writable: {exc.strerror or exc}") from None

    # -- lock ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writers' lock (fcntl); held by a batch commit and by compaction swaps."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- markers --------------------------------------------------------------------------
    def committed_batches(self, writer: str | None = None) -> list[int]:
        """Committed batch ids of ``writer`` (default: this writer)."""
        folder = self.root / COMMITS / (writer or self.writer)
        if not folder.is_dir():
            return []
        out = []
        for p in folder.glob("*.json"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def is_committed(self, batch_id: int) -> bool:
        return self.marker_path(batch_id).exists()

    def read_marker(self, batch_id: int, writer: str | None = None) -> BatchMarker:
        folder = self.root / COMMITS / (writer or self.writer)
        return BatchMarker.from_json((folder / f"{batch_id:010d}.json").read_text())

    def last_marker_before(self, batch_id: int) -> BatchMarker | None:
        earlier = [b for b in self.committed_batches() if b < batch_id]
        return self.read_marker(earlier[-1]) if earlier else None

    def label_totals(self) -> dict[str, int]:
        """Running totals per label over every committed batch of every writer (from the markers)."""
        totals: dict[str, int] = {}
        for writer in self.writers():
            for b in self.committed_batches(writer):
                for label, n in self.read_marker(b, writer).label_totals.items():
                    totals[label] = totals.get(label, 0) + int(n)
        return totals

    # -- writing --------------------------------------------------------------------------
    def _write_file(self, table: str, date: str, batch_id: int, data: pa.Table) -> str:
        folder = self.table_dir(table) / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / part_name(batch_id, self.writer)
        tmp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(data, tmp, compression="snappy")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return str(final.relative_to(self.root))

    def _remove_stale(self, table: str, batch_id: int, keep_dates: set[str]) -> None:
        """Drop files a crashed attempt of this batch left under dates this attempt lacks."""
        name = part_name(batch_id, self.writer)
        for folder in date_dirs(self.table_dir(table)):
            if folder.name[5:] not in keep_dates and (folder / name).exists():
                (folder / name).unlink()

    def commit_batch(
        self,
        batch_id: int,
        tables: dict[str, pa.Table],
        marker: BatchMarker,
        after_files: Callable[[], None] | None = None,
    ) -> bool:
        """Write every table's rows of ``batch_id`` then its marker. False if already committed.

        Each table must have a string ``date`` column (YYYY-MM-DD) used for partitioning;
        it is dropped from the file (it lives in the folder name). ``after_files`` runs
        between the data files and the marker (the fault-injection point of the tests).
        """
        with self.lock():
            if self.is_committed(batch_id):
                log.info("batch %d already committed in %s; skipping its replay", batch_id, self.root)
                return False
            files: dict[str, list[str]] = {}
            for table, data in tables.items():
                dates = sorted(set(data.column("date").to_pylist())) if data.num_rows else []
                self._remove_stale(table, batch_id, set(dates))
                written = []
                for date in dates:
                    mask = pc.equal(data.column("date"), date)
                    written.append(self._write_file(table, date, batch_id, data.filter(mask).drop_columns(["date"])))
                files[table] = written
            if after_files is not None:
                after_files()
            marker.files = files
            marker.written_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            tmp = self.commits_dir / f".{batch_id:010d}.{uuid.uuid4().hex}.tmp"
            self.commits_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(marker.to_json())
            os.replace(tmp, self.marker_path(batch_id))
            return True

