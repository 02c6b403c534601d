"""The spool folder's naming contract: every file gets a strictly increasing sequence number.

Why: the stream's spool source (``streaming.spool_source``) keeps only two numbers per
batch, "everything after sequence A up to B", instead of remembering every file it has seen.
That is only safe if no file with a smaller number can appear after a listing. So the inbox
mover names a file *and* renames it into the spool while holding an exclusive ``fcntl`` lock
on the spool's sequence file, and the reader lists the spool holding the same lock: whatever
lands later gets a larger number. Numbers are ``max(time_ns, last + 1)``, the last one kept in
the sequence file itself, so they keep increasing even if the clock steps back.

The sequence file sits *beside* the spool (``.<spool name>.seq`` in its parent folder), so the
spool holds nothing but input files: it is empty when everything is processed.

Names are ``<19+ digit number>-<original name>``. No Spark import: the inbox mover
(:mod:`memestream.inbox`) and the reader's driver side both use it; which names the listing
skips is :func:`memestream.hidden.is_inbox_ignored`.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterator

from memestream.errors import ConfigError

log = logging.getLogger(__name__)

#: ``.<spool name>`` + this, beside the spool: the lock file, holding the last number handed out.
SEQ_SUFFIX = ".seq"
SEQ_WIDTH = 20
_SEQ_RE = re.compile(r"^([0-9]{19,})-(.+)$", re.S)


def parse_seq(name: str) -> int | None:
    """The sequence number of a spool name, or None when the name is not a sequence name."""
    m = _SEQ_RE.match(name)
    return int(m.group(1)) if m else None


def seq_name(seq: int, original: str) -> str:
    """``<seq>-<original>``, the number zero-padded to 19 digits (sortable as text)."""
    return f"{seq:019d}-{original}"


class SpoolSequence:
    """Hands out spool names under the spool's lock (one per spool folder, any number of processes).

    Use ``with seq.locked() as lk:`` then ``lk.next_name(original)`` and rename the file in
    before leaving the block. A fresh file descriptor per lock: ``flock`` then excludes
    threads of one process as well as other processes.
    """

    def __init__(self, spool: str | os.PathLike[str]) -> None:
        self.spool = Path(spool)
        resolved = self.spool.resolve()
        self.lock_path = resolved.parent / f".{resolved.name}{SEQ_SUFFIX}"

    @contextlib.contextmanager
    def locked(self) -> Iterator["_Held"]:
        self.spool.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the spool's sequence file {self.lock_path} (the spool's parent folder "
                              f"must be writable): {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = _Held(self, fd)
            try:
                yield held
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class _Held:
    """The lock, held: reads the last number once; each new number is written before it is used
    (a crash between the two leaves a gap, never a repeat)."""

    def __init__(self, seq: SpoolSequence, fd: int) -> None:
        self._seq = seq
        self._fd = fd
        self._last: int | None = None

    def _load(self) -> int:
        if self._last is None:
            raw = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip()
            if raw.isdigit():
                self._last = int(raw)
            else:
                if raw:
                    log.warning("%s is damaged (%r); continuing after the highest name in the spool",
                                self._seq.lock_path, raw[:40])
                self._last = max_seq_in(self._seq.spool)
        return self._last

    def next_seq(self) -> int:
        """A number larger than every one handed out before (for this spool)."""
        n = max(time.time_ns(), self._load() + 1)
        self._store(n)
        return n

    def ensure_above(self, floor: int) -> None:
        """Never hand out ``floor`` or less again (the reader passes its committed position, so a
        lost sequence file plus a clock stepping back cannot put new files below it)."""
        if self._load() < floor:
            self._store(floor)

    @property
    def last(self) -> int:
        return self._load()

    def _store(self, n: int) -> None:
        os.pwrite(self._fd, f"{n:0{SEQ_WIDTH}d}\n".encode("ascii"), 0)
        self._last = n

    def next_name(self, original: str) -> str:
        return seq_name(self.next_seq(), original)


def max_seq_in(spool: Path) -> int:
    """Highest sequence number named in ``spool`` (0 when none): the fallback for a lost lock file."""
    best = 0
    try:
        with os.scandir(spool) as it:
            for entry in it:
                n = parse_seq(entry.name)
                if n is not None and n > best:
                    best = n
    except FileNotFoundError:
        pass
    return best
