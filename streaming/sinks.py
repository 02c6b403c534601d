"""Exactly-once Parquet tables written per micro-batch.

Spark replays a micro-batch (same id, same input) after a crash until it is recorded in
the checkpoint's commit log. Every write here is therefore idempotent per batch id:

1. files are written hidden (``.part-N.parquet.tmp``) and renamed into place, so a reader
   never sees half a file;
2. file names derive from the batch id, so a replay *replaces* what a crashed attempt
   left instead of adding to it;
3. after all tables of batch N are in place, a commit marker ``_commits/<writer>/N.json``
   is written; a replay of a batch whose marker exists is skipped entirely.

Markers do not pile up forever: at most the newest ``keep_commits`` per writer stay
(Spark only ever replays the newest uncommitted batch, so a few suffice). What the pruned
ones carried forward - their label totals - is first folded into a rollup,
``_commits/<writer>/_base.json``, written atomically *before* the markers it covers are
deleted. It records the last batch it covers and readers skip markers at or below it, so
a crash between the two steps neither loses nor double counts.

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

#: Commit markers kept per writer by default (older ones are folded into the rollup).
DEFAULT_KEEP_COMMITS = 100
#: The rollup of pruned markers in ``_commits/<writer>/`` (``_`` name: never a marker).
ROLLUP = "_base.json"


@dataclass
class Rollup:
    """Totals of a writer's pruned markers: every committed batch up to ``through_batch``."""

    through_batch: int = -1
    batches: int = 0
    rows: int = 0
    errors: int = 0
    label_totals: dict[str, int] = field(default_factory=dict)

    def add(self, marker: BatchMarker) -> None:
        self.through_batch = max(self.through_batch, marker.batch_id)
        self.batches += 1
        self.rows += int(marker.rows or 0)
        self.errors += int(marker.errors or 0)
        for label, n in (marker.label_totals or {}).items():
            self.label_totals[label] = self.label_totals.get(label, 0) + int(n)

    @classmethod
    def from_json(cls, text: str) -> "Rollup":
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


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

    def __init__(self, root: str | os.PathLike[str], writer: str = DEFAULT_WRITER,
                 keep_commits: int = DEFAULT_KEEP_COMMITS) -> None:
        if not _WRITER_RE.match(writer):
            raise ValueError(f"writer name must be letters, digits or _, found {writer!r}")
        if keep_commits < 2:  # the newest marker decides a replay, the one before it the watermark
            raise ConfigError(f"--keep-commits expects at least 2, found {keep_commits}")
        self.root = Path(root)
        self.writer = writer
        self.keep_commits = keep_commits

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

    def rollup(self, writer: str | None = None) -> Rollup:
        """What the pruned markers of ``writer`` added up to (empty before the first prune)."""
        path = self.root / COMMITS / (writer or self.writer) / ROLLUP
        try:
            return Rollup.from_json(path.read_text())
        except FileNotFoundError:
            return Rollup()

    def newest_committed(self, writer: str | None = None) -> int | None:
        """The newest committed batch id of ``writer`` (from its markers, else its rollup)."""
        batches = self.committed_batches(writer)
        if batches:
            return batches[-1]
        through = self.rollup(writer).through_batch
        return through if through >= 0 else None

    def is_committed(self, batch_id: int) -> bool:
        """True once batch ``batch_id`` is committed, also after its marker was pruned."""
        return self.marker_path(batch_id).exists() or batch_id <= self.rollup().through_batch

    def read_marker(self, batch_id: int, writer: str | None = None) -> BatchMarker:
        folder = self.root / COMMITS / (writer or self.writer)
        return BatchMarker.from_json((folder / f"{batch_id:010d}.json").read_text())

    def last_marker_before(self, batch_id: int) -> BatchMarker | None:
        """The marker of the newest committed batch below ``batch_id`` (its watermark state).

        Only the newest markers are kept, and a replay is always of the batch right after the
        newest committed one, so that marker is always among them.
        """
        earlier = [b for b in self.committed_batches() if b < batch_id]
        return self.read_marker(earlier[-1]) if earlier else None

    def label_totals(self) -> dict[str, int]:
        """Running totals per label over every committed batch of every writer: each
        writer's rollup plus its markers above the rollup's last batch."""
        totals: dict[str, int] = {}
        for writer in self.writers():
            for label, n in self._writer_totals(writer).items():
                totals[label] = totals.get(label, 0) + n
        return totals

    def _writer_totals(self, writer: str, attempts: int = 5) -> dict[str, int]:
        # No lock: the writer's stream may prune while we read. Pruning writes a newer rollup
        # before it deletes anything, so a sum read between two reads of the same rollup is
        # consistent; otherwise (or when a marker vanished) read again.
        for _ in range(attempts):
            try:
                totals = self._read_totals(writer)
            except FileNotFoundError:
                continue
            if totals is not None:
                return totals
        with self.lock():  # pruned under our feet every time: read it with pruning held off
            return self._read_totals(writer) or {}

    def _read_totals(self, writer: str) -> dict[str, int] | None:
        base = self.rollup(writer)
        totals = {label: int(n) for label, n in base.label_totals.items()}
        for b in self.committed_batches(writer):
            if b <= base.through_batch:
                continue  # folded into the rollup; its deletion was interrupted
            for label, n in self.read_marker(b, writer).label_totals.items():
                totals[label] = totals.get(label, 0) + int(n)
        return totals if self.rollup(writer).through_batch == base.through_batch else None

    def prune_markers(self, crash_after_rollup: Callable[[], None] | None = None) -> int:
        """Once this writer has more than ``keep_commits`` markers, fold all but the newest
        ``keep_commits - keep_commits // 10`` into the rollup, then delete them; returns how
        many were deleted. Call with the writers' lock held.

        The rollup is written (tmp + fsync + rename) before any marker goes, and covers
        exactly the batches up to ``through_batch``: rerunning after a crash at any point
        (``crash_after_rollup`` is the tests' fault-injection point) gives the same totals.
        """
        batches = self.committed_batches()
        if len(batches) <= self.keep_commits:
            return 0
        # down to a tenth below the limit: the rollup (an fsync) is rewritten every keep/10
        # batches, not every batch, and there are never more than keep_commits markers
        old = batches[: -(self.keep_commits - self.keep_commits // 10)]
        base = self.rollup()
        fresh = [b for b in old if b > base.through_batch]
        if fresh:
            for b in fresh:
                base.add(self.read_marker(b))
            tmp = self.commits_dir / f".{ROLLUP}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(base.__dict__, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.commits_dir / ROLLUP)
        if crash_after_rollup is not None:
            crash_after_rollup()
        for b in old:
            self.marker_path(b).unlink(missing_ok=True)
        return len(old)

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
            self.prune_markers()
            return True

