"""``meme-compact``: merge the per-batch part files of the output tables, drop old dates.

A stream with a 1-second trigger writes one small file per table per batch: tens of
thousands a day, which makes every later read slow (Spark lists and opens each one).
Compaction merges the files of *sealed* batches (every batch id of a writer below its
newest committed one) of one ``date=`` folder into one file, while the stream keeps running
(``meme-stream`` also runs it itself in a background thread, see :class:`StreamCompactor`):

1. without the lock: read the sealed part files and write the merged file into a hidden
   sibling folder (``.date=D.compact-<id>/``) - the slow part, no writer is blocked;
2. with the writers' lock (``OUTPUT/.lock``, the one ``streaming.sinks`` takes per
   batch): check the sources are unchanged, hard-link every other file of the folder
   (newer batches) into the new folder, then swap the two folders in one step with
   Linux ``renameat2(RENAME_EXCHANGE)``; a reader listing the folder sees either all
   the old files or the merged one, never both and never neither;
3. without the lock: delete the old folder (now under the hidden name).

Where ``renameat2`` is unavailable (not Linux, or a file system without it) the swap is
two renames, leaving a window of a few microseconds in which the folder is missing and
a reader listing exactly then misses that date's rows (it never sees duplicates).

A writer's markers below its newest are pruned by the stream (``streaming.sinks``), so
sealed means "below the newest committed batch", not "has a marker". Retention
(``--retention-days``) removes whole ``date=`` folders older than D days, renaming each to
a hidden name under the lock before deleting it, so readers never see half a folder.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_int, run_main
from memestream.errors import ConfigError
from memestream.hidden import is_reader_hidden
from memestream.libc import exchange_paths
from streaming.schema import TABLES, batch_of, check_output_dir, date_dirs
from streaming.sinks import OutputTables

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CompactConfig:
    """One ``meme-compact`` run, built from flags in :func:`main`."""

    output: Path
    tables: tuple[str, ...] = TABLES
    min_files: int = 2
    retention_days: int | None = None
    dry_run: bool = False
    #: Stop starting new folders after this many seconds (the rest waits for the next run).
    time_budget_s: float | None = None
    #: A merged file this big is final: later runs start a new one beside it instead of
    #: rewriting it, so a run's work stays bounded however long a day's folder grows.
    max_file_bytes: int = 128 * 1024 * 1024

    def __post_init__(self) -> None:
        absolute_fields(self)


@dataclass(frozen=True)
class DirResult:
    """What happened to one ``table/date=`` folder."""

    table: str
    date_dir: str
    action: str  # compacted | skipped | deleted | would-compact | would-delete | changed
    files_before: int
    files_after: int
    rows: int
    #: How long the writers' lock was held (a stream batch waits at most this long).
    lock_s: float = 0.0


def compacted_name(writer: str, first: int, last: int) -> str:
    """Merged file of a writer's batches first..last; never equal to a per-batch name."""
    return f"part-{writer}-{first:010d}-{last:010d}.parquet"


def batches_of(name: str) -> tuple[str, int, int] | None:
    """(writer, first, last) of a per-batch (``part-W-N``) or compacted (``part-W-A-B``) file name."""
    single = batch_of(name)
    if single is not None:
        return single[0], single[1], single[1]
    stem = name[len("part-"):-len(".parquet")] if name.startswith("part-") and name.endswith(".parquet") else ""
    parts = stem.split("-")
    if len(parts) == 3 and parts[0] and all(p.isdigit() and len(p) == 10 for p in parts[1:]):
        return parts[0], int(parts[1]), int(parts[2])
    return None


def swap_in(live: Path, staged: Path) -> Path:
    """Put ``staged`` at ``live``; returns where the old folder now is (to delete)."""
    if exchange_paths(live, staged):
        return staged
    old = live.with_name(f".{live.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(live, old)  # from here until the next rename the folder is missing
    os.rename(staged, live)
    log.warning("renameat2 unavailable: swapped %s with two renames", live)
    return old


def _visible_parquet(folder: Path) -> dict[str, os.stat_result]:
    return {
        e.name: e.stat()
        for e in os.scandir(folder)
        if e.is_file() and not is_reader_hidden(e.name) and e.name.endswith(".parquet")
    }


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def sealed_below(tables: OutputTables) -> dict[str, int]:
    """Per writer, its newest committed batch id: every batch below it is sealed.

    Spark replays only the batch after the newest committed one, and a batch that crashed
    after writing files is replayed (and committed) before the next one starts, so every part
    file below the newest committed id belongs to a committed batch, marker kept or pruned.
    The newest one itself may still be read back by its stream (its watermark), so it waits.
    """
    out = {}
    for w in tables.writers():
        newest = tables.newest_committed(w)
        if newest is not None:
            out[w] = newest
    return out


def compact_date_dir(
    tables: OutputTables, table: str, folder: Path, sealed: dict[str, int], config: CompactConfig
) -> list[DirResult]:
    """Merge the sealed part files of one ``date=`` folder, one file per writer (see module doc).

    ``sealed`` maps a writer to its newest committed batch (:func:`sealed_below`).
    """
    by_writer: dict[str, list[tuple[int, int, str]]] = {}
    for name, st in _visible_parquet(folder).items():
        rng = batches_of(name)
        if rng is not None and rng[0] in sealed and rng[2] < sealed[rng[0]] and st.st_size < config.max_file_bytes:
            by_writer.setdefault(rng[0], []).append((rng[1], rng[2], name))
    if not by_writer:
        n = len(_visible_parquet(folder))
        return [DirResult(table, folder.name, "skipped", n, n, 0)]
    return [_compact_writer(tables, table, folder, writer, sorted(chosen), config) for writer, chosen in sorted(by_writer.items())]


#: Rows per batch while merging: memory stays at a batch, not at the day's merged file.
MERGE_BATCH_ROWS = 32_768


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """One batch in the merged file's schema (columns an older file lacks come out null)."""
    cols = []
    for f in schema:
        i = batch.schema.get_field_index(f.name)
        col = batch.column(i) if i >= 0 else pa.nulls(batch.num_rows, f.type)
        cols.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def merge_files(paths: list[Path], dest: Path) -> int:
    """Concatenate Parquet files into ``dest`` one record batch at a time; returns the rows.

    Streaming keeps a compaction's memory flat however big the merged file has grown (the
    day's earlier merge is one of the inputs); schemas are unified permissively, as readers do.
    """
    schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
    rows = 0
    with pq.ParquetWriter(dest, schema, compression="snappy") as writer:
        for p in paths:
            for batch in pq.ParquetFile(p).iter_batches(batch_size=MERGE_BATCH_ROWS):
                writer.write_table(_conform(batch, schema))
                rows += batch.num_rows
    return rows


def _compact_writer(
    tables: OutputTables, table: str, folder: Path, writer: str, chosen: list[tuple[int, int, str]], config: CompactConfig
) -> DirResult:
    listing = _visible_parquet(folder)
    if len(chosen) < config.min_files:
        return DirResult(table, folder.name, "skipped", len(listing), len(listing), 0)
    if config.dry_run:
        return DirResult(table, folder.name, "would-compact", len(listing), len(listing) - len(chosen) + 1, 0)
    staged = folder.with_name(f".{folder.name}.compact-{uuid.uuid4().hex[:8]}")
    staged.mkdir()
    old: Path | None = None
    try:
        target = compacted_name(writer, chosen[0][0], chosen[-1][1])
        tmp = staged / f".{target}.tmp"
        merged_rows = merge_files([folder / name for _, _, name in chosen], tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(tmp, staged / target)
        with tables.lock():
            locked_at = time.monotonic()
            now = _visible_parquet(folder)
            if any(name not in now or _signature(now[name]) != _signature(listing[name]) for _, _, name in chosen):
                log.warning("%s changed while compacting; left as is", folder)
                return DirResult(table, folder.name, "changed", len(now), len(now), 0, time.monotonic() - locked_at)
            keep = [n for n in now if n not in {name for _, _, name in chosen}]
            for name in keep:  # newer batches written since: carried over, same inode
                os.link(folder / name, staged / name)
            old = swap_in(folder, staged)
            held = time.monotonic() - locked_at
        log.info("%s: %d files -> 1 (%d rows, batches %d-%d) + %d kept; lock held %.1f ms", folder, len(chosen),
                 merged_rows, chosen[0][0], chosen[-1][1], len(keep), held * 1000)
        return DirResult(table, folder.name, "compacted", len(now), len(keep) + 1, merged_rows, held)
    finally:
        if old is not None and old.exists() and old != folder:
            # Keep the old generation (hidden) for a grace period: a reader that opened the
            # folder just before the swap finishes listing and reading it undisturbed.
            retired = folder.with_name(f".{folder.name}.retired-{int(time.time())}-{uuid.uuid4().hex[:6]}")
            os.rename(old, retired)
        elif staged.exists() and staged != folder:
            shutil.rmtree(staged, ignore_errors=True)


RETIRED_GRACE_S = 300
#: At most this many retired generations per date folder are kept, however young: a reader resolves
#: paths through the live folder, so an old generation only serves one that still holds it open.
RETIRED_KEEP = 2


#: A staging (``.compact-``) or expiring (``.expired-``) folder this old was left by a
#: killed run (a run finishes a folder within seconds): it is deleted.
LEFTOVER_AGE_S = 3600


def purge_retired(table_dir: Path, grace_s: float = RETIRED_GRACE_S, keep: int = RETIRED_KEEP) -> int:
    """Delete old generations left by earlier compactions once their grace period is over,
    and what a run killed half-way left behind (hidden, so readers never saw it)."""
    n = 0
    for p in [*table_dir.glob(".date=*.compact-*"), *table_dir.glob(".date=*.expired-*")]:
        try:
            age = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            continue
        if age >= LEFTOVER_AGE_S:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    by_folder: dict[str, list[tuple[int, str, Path]]] = {}
    for p in table_dir.glob(".date=*.retired-*"):
        folder, _, rest = p.name.rpartition(".retired-")
        try:
            by_folder.setdefault(folder, []).append((int(rest.split("-", 1)[0]), p.name, p))
        except ValueError:
            continue
    # newest first: the grace period, but never more than ``keep`` generations per folder, so
    # a stream that compacts often (fast input) keeps a bounded number of files around
    for retired in by_folder.values():
        for i, (stamp, _, p) in enumerate(sorted(retired, reverse=True)):
            if i >= keep or time.time() - stamp >= grace_s:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def apply_retention(tables: OutputTables, table: str, days: int, config: CompactConfig, today: date | None = None) -> list[DirResult]:
    """Delete ``date=`` folders older than ``days`` days (by the folder's date)."""
    today = today or datetime.now(timezone.utc).date()
    cutoff = today - timedelta(days=days)
    results = []
    for folder in date_dirs(tables.table_dir(table)):
        try:
            day = date.fromisoformat(folder.name[len("date="):])
        except ValueError:
            log.warning("%s: not a date=YYYY-MM-DD folder; retention leaves it alone", folder)
            continue
        if day >= cutoff:
            continue
        n = len(_visible_parquet(folder))
        if config.dry_run:
            results.append(DirResult(table, folder.name, "would-delete", n, 0, 0))
            continue
        hidden = folder.with_name(f".{folder.name}.expired-{uuid.uuid4().hex[:8]}")
        with tables.lock():
            locked_at = time.monotonic()
            os.rename(folder, hidden)
            held = time.monotonic() - locked_at
        shutil.rmtree(hidden, ignore_errors=True)
        log.info("%s: older than %d days (cutoff %s); deleted %d files", folder, days, cutoff, n)
        results.append(DirResult(table, folder.name, "deleted", n, 0, 0, held))
    return results


def compact(config: CompactConfig, today: date | None = None, stop: threading.Event | None = None) -> list[DirResult]:
    """Run retention then compaction over the chosen tables; returns one result per folder touched.

    With ``config.time_budget_s`` (or ``stop`` set) no new folder is started once it is spent;
    a folder already being merged is finished, so one run lasts the budget plus one folder.
    """
    root = check_output_dir(config.output)
    tables = OutputTables(root)
    deadline = time.monotonic() + config.time_budget_s if config.time_budget_s is not None else None
    sealed = sealed_below(tables)
    results: list[DirResult] = []
    for table in config.tables:
        if tables.table_dir(table).is_dir():
            purge_retired(tables.table_dir(table))
        if config.retention_days is not None:
            results.extend(apply_retention(tables, table, config.retention_days, config, today))
        for folder in date_dirs(tables.table_dir(table)):
            if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
                log.info("compaction stopped early (time budget or stop); the rest waits for the next run")
                return results
            results.extend(compact_date_dir(tables, table, folder, sealed, config))
    return results


class StreamCompactor:
    """Compaction inside ``meme-stream``: a daemon thread that runs :func:`compact` every
    ``every_batches`` committed batches of its writer or every ``every_s`` seconds (whichever
    comes first, and only when something was committed since), bounded by ``config.time_budget_s``.

    It never holds up a batch for long: the merge runs without the writers' lock, which is
    taken only for the swap (see the module doc; :attr:`max_lock_s` records the longest hold).
    :meth:`stop` lets a folder in progress finish and returns.
    """

    def __init__(self, tables: OutputTables, config: CompactConfig, every_batches: int | None = 50,
                 every_s: float | None = 600.0, poll_s: float = 1.0) -> None:
        self.tables = tables
        self.config = config
        self.every_batches = every_batches
        self.every_s = every_s
        self.poll_s = poll_s
        self.runs = 0
        self.max_lock_s = 0.0
        self.last_results: list[DirResult] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done_through: int | None = None
        self._last_run = time.monotonic()

    def start(self) -> "StreamCompactor":
        self._done_through = self.tables.newest_committed()
        self._last_run = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="memestream-compactor", daemon=True)
        self._thread.start()
        return self

    def due(self) -> bool:
        """Whether a run is due: enough new batches, or enough time with at least one new batch."""
        newest = self.tables.newest_committed()
        if newest is None or newest == self._done_through:
            return False
        if self.every_batches is not None and newest - (self._done_through if self._done_through is not None else -1) >= self.every_batches:
            return True
        return self.every_s is not None and time.monotonic() - self._last_run >= self.every_s

    def run_once(self, interruptible: bool = True) -> list[DirResult]:
        """One bounded compaction pass (what the thread runs; :meth:`stop` ends it between folders)."""
        newest = self.tables.newest_committed()
        started = time.monotonic()
        results = compact(self.config, stop=self._stop if interruptible else None)
        budget = self.config.time_budget_s
        cut_short = (interruptible and self._stop.is_set()) or (budget is not None and time.monotonic() - started >= budget)
        if not cut_short:  # else the rest is still to do: the next poll (or the final pass) goes on
            self._done_through = newest
        self._last_run = time.monotonic()
        self.runs += 1
        self.last_results = results
        # hand the merge's buffers back: mimalloc (pyarrow's pool) keeps freed pages in this
        # thread's heap otherwise, and the stream's Python driver RSS ratchets up with them
        pa.default_memory_pool().release_unused()
        held = max((r.lock_s for r in results), default=0.0)
        self.max_lock_s = max(self.max_lock_s, held)
        merged = [r for r in results if r.action in ("compacted", "deleted")]
        if merged:
            log.info("in-stream compaction: %d folder(s) changed in %.2fs, longest lock %.1f ms", len(merged),
                     time.monotonic() - started, held * 1000)
        return results

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self.due():
                    self.run_once()
            except Exception:  # noqa: BLE001 - compaction must never take the stream down; retried next time
                log.exception("in-stream compaction failed; the stream goes on, retrying at the next interval")
                self._last_run = time.monotonic()

    def stop(self, final_pass: bool = False, timeout: float = 120.0) -> None:
        """Stop the thread (a folder being merged is finished first, with its swap).

        ``final_pass``: then run one last bounded pass if anything was committed since the last
        one - for ``--available-now`` runs, which end before an interval comes round.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("in-stream compaction still running after %.0fs; leaving it to exit with the process", timeout)
                return
        if final_pass and self.tables.newest_committed() not in (None, self._done_through):
            self.run_once(interruptible=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-compact",
        description="Merge the per-batch Parquet files of meme-stream's output (sealed batches only) into one "
        "file per date folder, and optionally delete date folders older than N days. Safe while the stream runs.",
        epilog="examples:\n  meme-compact --output out\n  meme-compact --output out --table predictions --min-files 50\n"
        "  meme-compact --output out --retention-days 30 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", required=True, help="meme-stream's --output folder")
    parser.add_argument("--table", choices=[*TABLES, "all"], default="all", help="which table (default: all)")
    env_flag(parser, "--min-files", envvar="MEMESTREAM_COMPACT_MIN_FILES", type=positive_int, default=2,
             help="compact a date folder only when it has at least N sealed files (default: 2)")
    env_flag(parser, "--retention-days", envvar="MEMESTREAM_RETENTION_DAYS", type=positive_int, default=None,
             help="delete date folders older than D days (default: keep everything)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> CompactConfig:
    tables = TABLES if args.table == "all" else (args.table,)
    retention = int(args.retention_days) if args.retention_days is not None else None
    if retention is not None and retention < 1:
        raise ConfigError(f"--retention-days expects at least 1, found {retention}")
    return CompactConfig(Path(args.output), tables, int(args.min_files), retention, bool(args.dry_run))


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    results = compact(config)
    changed = [r for r in results if r.action != "skipped"]
    for r in changed:
        print(f"{r.table}/{r.date_dir}: {r.action} {r.files_before} -> {r.files_after} files"
              + (f" ({r.rows} rows merged)" if r.rows else ""))
    if not changed:
        print(f"nothing to do in {config.output} (min files {config.min_files})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
