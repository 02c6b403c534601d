"""``meme-compact``: merge the per-batch part files of the output tables, drop old dates.

A stream with a 1-second trigger writes one small file per table per batch: tens of
thousands a day, which makes every later read slow (Spark lists and opens each one).
Compaction merges the files of *sealed* batches (committed, and not the newest) of one
``date=`` folder into one file, while the stream keeps running:

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

Commit markers are kept, so a replay of a compacted batch is still skipped. Retention
(``--retention-days``) removes whole ``date=`` folders older than D days, renaming each to
a hidden name under the lock before deleting it, so readers never see half a folder.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from memestream.cli import add_common_flags, env_flag, positive_int, run_main
from memestream.errors import ConfigError
from streaming.schema import TABLES, batch_of, check_output_dir, date_dirs
from streaming.sinks import OutputTables

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass(frozen=True)
class CompactConfig:
    """One ``meme-compact`` run, built from flags in :func:`main`."""

    output: Path
    tables: tuple[str, ...] = TABLES
    min_files: int = 2
    retention_days: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class DirResult:
    """What happened to one ``table/date=`` folder."""

    table: str
    date_dir: str
    action: str  # compacted | skipped | deleted | would-compact | would-delete | changed
    files_before: int
    files_after: int
    rows: int


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


def _exchange_fn():
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _exchange_fn()


def exchange_dirs(a: Path, b: Path) -> bool:
    """Atomically swap two folders; False when the platform or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def swap_in(live: Path, staged: Path) -> Path:
    """Put ``staged`` at ``live``; returns where the old folder now is (to delete)."""
    if exchange_dirs(live, staged):
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
        if e.is_file() and not e.name.startswith((".", "_")) and e.name.endswith(".parquet")
    }


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def compact_date_dir(
    tables: OutputTables, table: str, folder: Path, sealed: dict[str, set[int]], config: CompactConfig
) -> list[DirResult]:
    """Merge the sealed part files of one ``date=`` folder, one file per writer (see module doc)."""
    by_writer: dict[str, list[tuple[int, int, str]]] = {}
    for name in _visible_parquet(folder):
        rng = batches_of(name)
        if rng is not None and all(b in sealed.get(rng[0], set()) for b in (rng[1], rng[2])):
            by_writer.setdefault(rng[0], []).append((rng[1], rng[2], name))
    if not by_writer:
        n = len(_visible_parquet(folder))
        return [DirResult(table, folder.name, "skipped", n, n, 0)]
    return [_compact_writer(tables, table, folder, writer, sorted(chosen), config) for writer, chosen in sorted(by_writer.items())]


def _compact_writer(
    tables: OutputTables, table: str, folder: Path, writer: str, chosen: list[tuple[int, int, str]], config: CompactConfig
) -> DirResult:
    listing = _visible_parquet(folder)
    if len(chosen) < config.min_files:
        return DirResult(table, folder.name, "skipped", len(listing), len(listing), 0)
    if config.dry_run:
        return DirResult(table, folder.name, "would-compact", len(listing), len(listing) - len(chosen) + 1, 0)
    parts = [pq.read_table(folder / name) for _, _, name in chosen]
    merged = pa.concat_tables(parts, promote_options="permissive")
    staged = folder.with_name(f".{folder.name}.compact-{uuid.uuid4().hex[:8]}")
    staged.mkdir()
    old: Path | None = None
    try:
        target = compacted_name(writer, chosen[0][0], chosen[-1][1])
        tmp = staged / f".{target}.tmp"
        pq.write_table(merged, tmp, compression="snappy")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(tmp, staged / target)
        with tables.lock():
            now = _visible_parquet(folder)
            if any(name not in now or _signature(now[name]) != _signature(listing[name]) for _, _, name in chosen):
                log.warning("%s changed while compacting; left as is", folder)
                return DirResult(table, folder.name, "changed", len(now), len(now), 0)
            keep = [n for n in now if n not in {name for _, _, name in chosen}]
            for name in keep:  # newer batches written since: carried over, same inode
                os.link(folder / name, staged / name)
            old = swap_in(folder, staged)
        log.info("%s: %d files -> 1 (%d rows, batches %d-%d) + %d kept", folder, len(chosen), merged.num_rows,
                 chosen[0][0], chosen[-1][1], len(keep))
        return DirResult(table, folder.name, "compacted", len(now), len(keep) + 1, merged.num_rows)
    finally:
        if old is not None and old.exists() and old != folder:
            # Keep the old generation (hidden) for a grace period: a reader that opened the
            # folder just before the swap finishes listing and reading it undisturbed.
            retired = folder.with_name(f".{folder.name}.retired-{int(time.time())}-{uuid.uuid4().hex[:6]}")
            os.rename(old, retired)
        elif staged.exists() and staged != folder:
            shutil.rmtree(staged, ignore_errors=True)


RETIRED_GRACE_S = 300


def purge_retired(table_dir: Path, grace_s: float = RETIRED_GRACE_S) -> int:
    """Delete old generations left by earlier compactions once their grace period is over."""
    n = 0
    for p in table_dir.glob(".date=*.retired-*"):
        try:
            stamp = int(p.name.rsplit(".retired-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if time.time() - stamp >= grace_s:
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
            os.rename(folder, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        log.info("%s: older than %d days (cutoff %s); deleted %d files", folder, days, cutoff, n)
        results.append(DirResult(table, folder.name, "deleted", n, 0, 0))
    return results


def compact(config: CompactConfig, today: date | None = None) -> list[DirResult]:
    """Run retention then compaction over the chosen tables; returns one result per folder touched."""
    root = check_output_dir(config.output)
    tables = OutputTables(root)
    # per writer, the newest batch may still be read back by its stream: not sealed
    sealed = {w: set(tables.committed_batches(w)[:-1]) for w in tables.writers()}
    results: list[DirResult] = []
    for table in config.tables:
        if tables.table_dir(table).is_dir():
            purge_retired(tables.table_dir(table))
        if config.retention_days is not None:
            results.extend(apply_retention(tables, table, config.retention_days, config, today))
        for folder in date_dirs(tables.table_dir(table)):
            results.extend(compact_date_dir(tables, table, folder, sealed, config))
    return results


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


def _run(args: argparse.Namespace) -> int:
    tables = TABLES if args.table == "all" else (args.table,)
    retention = int(args.retention_days) if args.retention_days is not None else None
    if retention is not None and retention < 1:
        raise ConfigError(f"--retention-days expects at least 1, found {retention}")
    config = CompactConfig(Path(args.output), tables, int(args.min_files), retention, bool(args.dry_run))
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
