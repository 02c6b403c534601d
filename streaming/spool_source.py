"""``memestream-spool``: a PySpark Python Data Source over the spool folder whose state does not grow.

Why not Spark's ``binaryFile`` file source: it remembers every file it has ever seen (driver
heap, ~0.4 KB per file, and its checkpoint log, ~100 B per file, never pruned), because file
names there carry no order. Here they do: the inbox mover names each spooled file with a
strictly increasing sequence number under the spool's lock (:mod:`memestream.spool`). So an
offset is one number, ``{"seq": N}``, a micro-batch is the range ``(start, end]`` and the
checkpoint holds two numbers per batch whatever the history.

Rules that keep it exactly once:

- ``latestOffset`` lists the spool *holding the lock*: a file that lands after the listing gets
  a larger number than any listed, so it can never fall into a range already planned.
- Files whose names are not sequence names (copied in by hand, or spooled by an old version)
  are *adopted*: renamed under the lock to a new sequence name, once they have stopped changing
  for ``ADOPT_SETTLE_S``, so nothing is skipped silently. Hidden/temporary names are ignored.
- A replayed batch lists the same range again; files are only moved (archive/quarantine/delete)
  after their batch's commit marker, so an uncommitted range still holds all its files.

Listing cost follows the files *in* the spool, not the history: processed files leave it, and
with ``--processed keep`` names at or below the start are skipped without a ``stat``.

PySpark 4.1's Python stream reader has no admission control: ``latestOffset()`` gets no start
offset and no read limit, and there is no ``SupportsTriggerAvailableNow`` (both came in 4.2). So:

- **Bounded batches.** The reader keeps its *position*, the end of the last batch planned, and
  ``latestOffset()`` returns at most ``maxFilesPerTrigger`` files past it. Spark tells the reader
  the position on a restart: it calls ``partitions(end, end)`` with the newest offset of the
  checkpoint's offset log (``setLatestSeenOffset``) before planning anything, and replays an
  uncommitted batch with ``partitions(start, end)``; every ``partitions`` call moves the position
  up to its end. So after a restart the cap still holds and the next batch starts exactly where
  the checkpoint's last one ended.
- **Trigger.AvailableNow.** Spark wraps a Python source (``AvailableNowMicroBatchStreamWrapper``)
  and calls ``latestOffset()`` once, at query start, as the target of the whole run. With the
  ``availableNow`` option the reader answers with the spool's sequence high-water mark (every
  file present then, hand-copied ones adopted at once; never below a committed position): the
  query drains exactly what was there at start, in one batch (the cap cannot apply under 4.1),
  then stops. Without the option a capped answer would end the run after one capped batch.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from memestream.errors import ConfigError
from memestream.hidden import is_inbox_ignored
from memestream.spool import SpoolSequence, parse_seq, seq_name

log = logging.getLogger(__name__)

SOURCE_NAME = "memestream-spool"
#: The columns Spark's binaryFile listing gives (without content): ``streaming.sources.folder_frame`` reads them.
SCHEMA = "path string, modificationTime timestamp, length long"
#: A file copied into the spool by hand is adopted once its size and mtime are this old.
ADOPT_SETTLE_S = 1.0


class SpoolRange(InputPartition):
    """One Spark task: these spool file names (all inside one batch's sequence range)."""

    def __init__(self, spool: str, names: list[str]) -> None:
        super().__init__((spool, tuple(names)))
        self.spool, self.names = spool, names

    def __repr__(self) -> str:
        return f"SpoolRange({len(self.names)} file(s) from {self.names[0] if self.names else '-'})"


class Listing:
    """One pass over the spool: sequence-named files in range, names to adopt, and how many
    sequence-named files are at or below the range (already processed)."""

    def __init__(self) -> None:
        self.files: list[tuple[int, str]] = []
        self.strays: list[str] = []
        self.below = 0


def scan(spool: Path, after: int, upto: int | None = None) -> Listing:
    """List ``spool``: ``(seq, name)`` with ``after < seq <= upto`` in order, plus strays.

    Names are compared before anything is stat'ed, so files kept in the spool after they were
    processed (``--processed keep``) cost a name comparison each.
    """
    out = Listing()
    try:
        with os.scandir(spool) as it:
            for entry in it:
                name = entry.name
                if is_inbox_ignored(name):
                    continue
                n = parse_seq(name)
                if n is None:
                    if entry.is_file():
                        out.strays.append(name)
                elif n <= after:
                    out.below += 1
                elif (upto is None or n <= upto) and entry.is_file():
                    out.files.append((n, name))
    except FileNotFoundError:
        pass
    out.files.sort()
    out.strays.sort()
    return out


def adopt(spool: Path, held, strays: list[str], settle_s: float = ADOPT_SETTLE_S) -> list[tuple[int, str]]:  # noqa: ANN001
    """Rename files that are not sequence-named to new sequence names, holding the spool lock
    (``held``, from :meth:`SpoolSequence.locked`); returns their ``(seq, name)``. Files changed
    within ``settle_s`` may still be being copied: they wait for a later listing."""
    now = time.time()
    out: list[tuple[int, str]] = []
    for name in strays:
        src = spool / name
        try:
            if settle_s > 0 and now - src.stat().st_mtime < settle_s:
                continue
            n = held.next_seq()
            target = spool / seq_name(n, name)
            os.rename(src, target)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("cannot adopt %s into the spool sequence: %s", src, exc)
            continue
        out.append((n, target.name))
        log.info("adopted %s (not spooled by the inbox mover) as %s", name, target.name)
    return out


def split_even(names: list[str], parts: int) -> list[list[str]]:
    """``names`` in order, cut into ``min(parts, len(names))`` runs whose lengths differ by at most
    one: every task of a batch gets a fair share (rounding the size up instead left 9 files in 5
    tasks of 2 when 8 were asked for)."""
    parts = max(1, min(parts, len(names)))
    base, extra = divmod(len(names), parts)
    out, i = [], 0
    for k in range(parts):
        n = base + (1 if k < extra else 0)
        out.append(names[i:i + n])
        i += n
    return [c for c in out if c]


class SpoolStreamReader(DataSourceStreamReader):
    """Driver side plans ``(start, end]`` sequence ranges; ``read`` stats the files in the executors."""

    def __init__(self, spool: Path, max_files: int, num_partitions: int, keep_processed: bool,
                 available_now: bool = False) -> None:
        self.spool = spool
        self.max_files = max_files
        self.num_partitions = max(1, num_partitions)
        self.keep_processed = keep_processed
        self.available_now = available_now
        #: End (sequence number) of the last batch planned: what latestOffset() counts from.
        self._position: int | None = None
        self._target: int | None = None
        self._stale = 0

    # ---------------------------------------------------------------- driver side

    def _list(self, after: int, settle_s: float = ADOPT_SETTLE_S) -> tuple[list[tuple[int, str]], int]:
        """Adopt strays and list what is past ``after``, all under the spool lock; also the last
        sequence number handed out (every file in the spool has one at or below it)."""
        with SpoolSequence(self.spool).locked() as held:
            held.ensure_above(after)
            listing = scan(self.spool, after)
            # adopted names get numbers above every name handed out so far: they sort last
            files = listing.files + adopt(self.spool, held, listing.strays, settle_s)
            last = held.last
        self._check_stale(after, listing.below)
        return files, last

    def _check_stale(self, start: int, below: int) -> None:
        """Files at or below the committed start are left over (a failed archive move, or a spooled
        name copied back in by hand): never read again, so say so when their number changes."""
        if self.keep_processed or below == self._stale:
            return
        if below:
            log.warning("%d file(s) in %s were already processed (sequence <= %d) but not moved away; they "
                        "are not read again (to reprocess one, rename it without the number prefix)",
                        below, self.spool, start)
        self._stale = below

    def _advance(self, end: int) -> None:
        self._position = end if self._position is None else max(self._position, end)

    def initialOffset(self) -> dict:
        return {"seq": 0}  # a new checkpoint: every file already waiting is read

    def latestOffset(self) -> dict:
        """The end of the next batch: at most ``max_files`` files past the position; with
        ``available_now``, never past what the spool held at the first call (the query then
        stops once a trigger finds nothing new: ``streaming.query.run_stream``)."""
        begin = self._position if self._position is not None else 0
        if self.available_now:
            # everything there now, including files copied in by hand a moment ago
            files, last = self._list(begin, settle_s=0.0)
            if self._target is None:
                self._target = max(last, begin)
                log.info("spool %s: available-now target sequence %d (%d file(s) waiting)",
                         self.spool, self._target, len(files))
            files = [f for f in files if f[0] <= self._target][:self.max_files]
            ceiling = self._target
        else:
            files, ceiling = self._list(begin)
            files = files[:self.max_files]
        # Nothing waiting: answer the sequence's high-water mark (nothing lies between the position
        # and it, as listing and renaming into the spool share one lock), never a number below a
        # position Spark has not told this reader yet (before a restart's first planned batch).
        end = files[-1][0] if files else max(begin, ceiling)
        self._advance(end)
        return {"seq": end}

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        lo, hi = int(start.get("seq", 0)), int(end.get("seq", 0))
        # Spark plans every batch it runs here, and on a restart first calls partitions(end, end)
        # with the checkpoint's newest offset: the position follows both.
        self._advance(hi)
        names = [name for _, name in scan(self.spool, lo, hi).files]
        if not names:
            return []
        return [SpoolRange(str(self.spool), chunk) for chunk in split_even(names, self.num_partitions)]

    def commit(self, end: dict) -> None:
        """Nothing to do: processed files are moved by the batch itself, after its commit marker."""

    # ---------------------------------------------------------------- executor side

    def read(self, partition: SpoolRange) -> Iterator:
        """``(path, modificationTime, length)`` per file, like Spark's binaryFile listing
        (``file:`` URI, not percent-encoded), as one Arrow record batch (no per-row conversion).
        A file gone since planning (moved after an earlier attempt of this batch was committed)
        is skipped."""
        import pyarrow as pa

        root = os.path.abspath(partition.spool)
        paths: list[str] = []
        mtimes: list[int] = []
        sizes: list[int] = []
        for name in partition.names:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue
            paths.append(f"file:{full}")
            mtimes.append(st.st_mtime_ns // 1000)
            sizes.append(int(st.st_size))
        yield pa.RecordBatch.from_arrays(
            [pa.array(paths, pa.string()), pa.array(mtimes, pa.timestamp("us", tz="UTC")), pa.array(sizes, pa.int64())],
            names=["path", "modificationTime", "length"],
        )


class MemestreamSpoolDataSource(DataSource):
    """``spark.readStream.format("memestream-spool").load(spool)``: one row per spooled file."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> SpoolStreamReader:  # noqa: ANN001
        opts = {str(k).lower(): v for k, v in self.options.items()}
        spool = opts.get("path") or opts.get("spool")
        if not spool:
            raise ConfigError("the memestream-spool source needs a spool folder (load(path))")
        try:
            max_files = int(opts.get("maxfilespertrigger", 1000))
            num_partitions = int(opts.get("numpartitions", 2))
        except ValueError as exc:
            raise ConfigError(f"bad memestream-spool option: {exc}") from None
        keep = str(opts.get("keepprocessed", "false")).lower() == "true"
        available_now = str(opts.get("availablenow", "false")).lower() == "true"
        return SpoolStreamReader(Path(spool), max_files, num_partitions, keep, available_now)


def register(spark) -> None:  # noqa: ANN001
    """Register the data source with this session (once)."""
    if getattr(spark, "_memestream_spool_registered", False):
        return
    spark.dataSource.register(MemestreamSpoolDataSource)
    try:
        spark._memestream_spool_registered = True
    except AttributeError:
        pass
