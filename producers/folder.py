"""Folder producer: get files into the stream only once they are complete.

People copy big files slowly and scrapers write many at once, but Spark's file source
must only ever see whole files. :class:`InboxMover` watches ``inbox/`` with watchdog,
waits until a file has stopped changing (or was closed after writing), then renames it
atomically into ``spool/`` (the folder Spark reads) under a unique, strictly increasing
sequence name (``<number>-<original>``, see :mod:`producers.spool`). Hidden and
temporary files are ignored; files already present at start are picked up by a sweep.

``meme-drop`` copies files into the inbox safely (hidden temp file + rename) for scripts,
and ``meme-drop --watch`` runs the mover on its own (e.g. on the file server).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_float, run_main
from memestream.errors import ConfigError, DataError
from memestream.inputs import EMPTY_FILE_MARKER
from producers.spool import SpoolSequence

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", "~", ".filepart")


def is_ignored(name: str) -> bool:
    """Hidden or temporary names that writers use before a file is complete."""
    return name.startswith((".", "_", "~$")) or name.lower().endswith(TEMP_SUFFIXES)


class InboxMover:
    """Move completed files from ``inbox`` into ``spool`` atomically."""

    def __init__(self, inbox: str | os.PathLike[str], spool: str | os.PathLike[str], settle: float = 0.5) -> None:
        self.inbox = Path(inbox)
        self.spool = Path(spool)
        self.settle = settle
        self.moved = 0
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._closed: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None
        self._seq = SpoolSequence(self.spool)
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        if self.inbox.resolve() == self.spool.resolve():
            raise ConfigError(f"inbox and spool must be different folders, both are {self.inbox}")
        with self._seq.locked():  # an unusable sequence file fails here, not in the watcher thread
            pass

    # -- moving -------------------------------------------------------------------------
    def _candidates(self) -> Iterable[Path]:
        for dirpath, dirnames, filenames in os.walk(self.inbox):
            dirnames[:] = [d for d in dirnames if not is_ignored(d)]
            for name in filenames:
                if not is_ignored(name):
                    yield Path(dirpath) / name

    def move(self, path: Path) -> Path | None:
        """Move one complete file into the spool; returns its new path.

        The spool name (its sequence number) is taken and the rename done under the spool's
        lock (:mod:`producers.spool`), so the stream's listing never misses a file that lands
        with a smaller number after it looked.
        """
        tmp: Path | None = None
        try:
            if path.stat().st_size == 0:
                # Spark's binaryFile listing drops zero-byte files; keep them visible so they are quarantined
                tmp = self.spool / f".{path.name}.{uuid.uuid4().hex}.tmp"
                tmp.write_bytes(EMPTY_FILE_MARKER)
                with self._seq.locked() as seq:
                    target = self.spool / seq.next_name(path.name)
                    os.replace(tmp, target)
                tmp = None
                path.unlink()
                self.moved += 1
                return target
            os.utime(path, None)  # event time = landing time; Spark never drops it as "old"
            try:
                with self._seq.locked() as seq:
                    target = self.spool / seq.next_name(path.name)
                    os.rename(path, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # inbox and spool on different file systems: copy
                    raise
                tmp = self.spool / f".{path.name}.{uuid.uuid4().hex}.tmp"
                shutil.copyfile(path, tmp)  # the slow part, outside the lock
                with self._seq.locked() as seq:
                    target = self.spool / seq.next_name(path.name)
                    os.replace(tmp, target)
                tmp = None
                path.unlink()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot move %s into %s: %s", path, self.spool, exc)
            return None
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self.moved += 1
        log.debug("spooled %s as %s", path, target.name)
        return target

    def sweep(self, settle: float | None = None) -> int:
        """Move every complete file now in the inbox (a file is complete once its size and
        mtime hold still for ``settle`` seconds). Returns how many were moved."""
        settle = self.settle if settle is None else settle
        first = {}
        for p in self._candidates():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            first[p] = (st.st_size, st.st_mtime_ns)
        if settle > 0 and first:
            time.sleep(settle)
        moved = 0
        for p, sig in sorted(first.items()):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if (st.st_size, st.st_mtime_ns) == sig and self.move(p):
                moved += 1
        return moved

    # -- watching -----------------------------------------------------------------------
    def _note(self, path: str, closed: bool = False) -> None:
        p = Path(path)
        if is_ignored(p.name) or not str(p).startswith(str(self.inbox)):
            return
        try:
            st = p.stat()
        except FileNotFoundError:
            return
        if not p.is_file():
            return
        with self._lock:
            self._pending[p] = (st.st_size, st.st_mtime_ns, time.monotonic())
            if closed:
                self._closed.add(p)
        if closed:
            self._wake.set()  # complete now: move it without waiting for the next tick

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        for p, (size, mtime, seen) in items:
            try:
                st = p.stat()
            except FileNotFoundError:
                with self._lock:
                    self._pending.pop(p, None)
                    self._closed.discard(p)
                continue
            changed = (st.st_size, st.st_mtime_ns) != (size, mtime)
            if changed:
                with self._lock:
                    self._pending[p] = (st.st_size, st.st_mtime_ns, now)
                    self._closed.discard(p)
                continue
            if p in self._closed or now - seen >= self.settle:
                with self._lock:
                    self._pending.pop(p, None)
                    self._closed.discard(p)
                self.move(p)

    def _loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            self._wake.wait(0.05)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._tick()
            if time.monotonic() - last_sweep > 5.0:  # safety net for missed events
                for p in self._candidates():
                    if p not in self._pending:
                        self._note(str(p))
                last_sweep = time.monotonic()

    def start(self) -> None:
        """Watch the inbox in background threads until :meth:`stop`."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        mover = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event):  # noqa: ANN001
                if not event.is_directory:
                    mover._note(event.src_path)

            def on_modified(self, event):  # noqa: ANN001
                if not event.is_directory:
                    mover._note(event.src_path)

            def on_moved(self, event):  # noqa: ANN001
                if not event.is_directory:  # renamed into the inbox: the writer has finished
                    mover._note(event.dest_path, closed=True)

            def on_closed(self, event):  # noqa: ANN001
                if not event.is_directory:
                    mover._note(event.src_path, closed=True)

        _pair_moves_quickly()
        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.inbox), recursive=True)
        self._observer.start()
        for p in self._candidates():  # anything that arrived before the observer started
            self._note(str(p))
        self._thread = threading.Thread(target=self._loop, name="inbox-mover", daemon=True)
        self._thread.start()
        log.info("watching %s; complete files go to %s", self.inbox, self.spool)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------
# meme-drop
# ---------------------------------------------------------------------------------------
#: How long watchdog's inotify reader holds an unmatched "moved from" event while waiting
#: for its "moved to" half. Its default (0.5 s) delays *every* later event queued behind
#: it, including our own moves out of the inbox: each image waited ~0.3 s before it was
#: seen. Both halves of one rename() arrive in the same inotify read, so 50 ms is ample.
MOVE_PAIRING_SECONDS = 0.05


def _pair_moves_quickly() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # another platform or watchdog version: keep its default
        return
    InotifyMoveEventGrouper.delay = min(InotifyMoveEventGrouper.delay, MOVE_PAIRING_SECONDS)


def drop_files(sources: Sequence[str | os.PathLike[str]], inbox: str | os.PathLike[str]) -> list[Path]:
    """Copy files (or folders, recursively) into ``inbox`` atomically; returns the new paths."""
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files.extend(p for p in sorted(src.rglob("*")) if p.is_file() and not any(is_ignored(x) for x in p.relative_to(src).parts))
        elif src.is_file():
            files.append(src)
        else:
            raise DataError(f"cannot drop {src}: no such file or folder")
    out = []
    for f in files:
        target = inbox / f.name
        if target.exists():
            target = inbox / f"{f.stem}-{uuid.uuid4().hex[:8]}{f.suffix}"
        tmp = inbox / f".{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, target)
        out.append(target)
        log.debug("dropped %s as %s", f, target)
    return out


@dataclass(frozen=True)
class DropConfig:
    """One ``meme-drop`` run, built from flags in :func:`main`; its folders absolute from here on
    (the files to drop are read at once and named as typed)."""

    inbox: Path
    spool: Path
    files: tuple[str, ...] = ()
    watch: bool = False
    settle: float = 0.5

    def __post_init__(self) -> None:
        absolute_fields(self)


def config_from_args(args: argparse.Namespace) -> DropConfig:
    data = Path(args.data_dir)
    return DropConfig(inbox=Path(args.inbox) if args.inbox else data / "inbox",
                      spool=Path(args.spool) if args.spool else data / "spool",
                      files=tuple(args.files), watch=bool(args.watch), settle=float(args.settle))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-drop",
        description="Copy images into the stream's inbox safely (or, with --watch, run the folder producer "
        "that moves completed inbox files into the spool Spark reads).",
        epilog="examples:\n"
        "  meme-drop meme1.jpg memes/               # copy into ./memestream-data/inbox\n"
        "  meme-drop --inbox /srv/memes/inbox new/*.png\n"
        "  meme-drop --watch --inbox /srv/memes/inbox --spool /srv/memes/spool   # folder producer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", help="image files or folders to copy into the inbox")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_DATA_DIR", default="memestream-data", help="base folder for defaults")
    env_flag(parser, "--inbox", envvar="MEMESTREAM_INBOX", default=None, help="inbox folder (default: DATA_DIR/inbox)")
    env_flag(parser, "--spool", envvar="MEMESTREAM_SPOOL", default=None, help="spool folder for --watch (default: DATA_DIR/spool)")
    parser.add_argument("--watch", action="store_true", help="run the folder producer: move completed inbox files into the spool until Ctrl-C")
    parser.add_argument("--settle", type=positive_float, default=0.5, help="seconds a file must stay unchanged to count as complete (default 0.5)")
    add_common_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.watch:
        mover = InboxMover(cfg.inbox, cfg.spool, settle=cfg.settle)
        mover.sweep()
        mover.start()
        print(f"watching {cfg.inbox} -> {cfg.spool} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            mover.stop()
        print(f"moved {mover.moved} file(s)")
        return 0
    if not cfg.files:
        raise ConfigError("nothing to drop: give image files or folders (or --watch to run the folder producer)")
    dropped = drop_files(cfg.files, cfg.inbox)
    print(f"dropped {len(dropped)} file(s) into {cfg.inbox}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
