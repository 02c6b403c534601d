"""The long run's measurements: cheap file-system counts and one sample of the running stream.

A sample is one row of the run's time series: memory per process (``bench.soak``), the JVM's
live heap, files and bytes under the output, the checkpoint and the spool, and throughput
since the previous sample. :mod:`bench.longrun` takes one every ``--sample-seconds``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak import jvm_live_heap_mib, jvm_pid, tree_memory
from memestream.hidden import is_inbox_ignored


def count_waiting(folder: Path) -> int:
    """Visible files directly in ``folder`` or below it (what the mover or the stream still has to take)."""
    n = 0
    try:
        with os.scandir(folder) as it:
            for e in it:
                if is_inbox_ignored(e.name):  # what the mover leaves alone is not waiting
                    continue
                if e.is_dir(follow_symlinks=False):
                    n += count_waiting(Path(e.path))
                else:
                    n += 1
    except FileNotFoundError:
        pass
    return n


def dir_stats(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``, hidden ones included: what the run leaves on disk."""
    files = size = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # deleted while we walked
                continue
            files += 1
    return files, size


@dataclass(frozen=True)
class Layout:
    """The stream's folders under the work dir (all passed explicitly to meme-stream)."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def log(self) -> Path:
        return self.root / "meme-stream.log"

    def waiting(self) -> int:
        return count_waiting(self.inbox) + count_waiting(self.spool)


def delta_read_set(output: Path) -> tuple[int, int]:
    """What a reader of the output opens, summed over its Delta tables: (live data files of the
    current snapshots, JSON commits after each table's last checkpoint). Both must stay bounded
    (OPTIMIZE, and the log checkpoint of every upkeep pass); the files on
    disk are bounded only over the retention periods (VACUUM after 1 day, log files after 7)."""
    files = commits = 0
    for log_dir in sorted(output.glob("*/_delta_log")):
        try:
            from deltalake import DeltaTable

            files += len(DeltaTable(str(log_dir.parent)).file_uris())
        except Exception:  # noqa: BLE001 - a commit being written: counted at the next sample
            pass
        last = log_dir / "_last_checkpoint"
        try:
            checkpoint = json.loads(last.read_text())["version"] if last.exists() else -1
        except (OSError, ValueError, KeyError):
            checkpoint = -1
        commits += sum(1 for p in log_dir.glob("*.json") if p.stem.isdigit() and int(p.stem) > checkpoint)
    return files, commits


def take_sample(layout: Layout, stream_pid: int, t_s: float, fed: int, processed: int,
                previous: dict[str, Any] | None, live_heap: bool) -> dict[str, Any]:
    """One row of the run's time series (memory, files, bytes, throughput since ``previous``)."""
    s: dict[str, Any] = {"t_s": round(t_s, 1), "images": processed, "fed": fed}
    if previous is not None and t_s > previous["t_s"]:
        s["images_per_s"] = round((processed - previous["images"]) / (t_s - previous["t_s"]), 2)
    s.update(tree_memory(stream_pid))
    if live_heap:
        jpid = jvm_pid(stream_pid)
        live = jvm_live_heap_exact_mib(jpid) if jpid else None
        if live is not None:
            s["jvm_live_heap_mib"] = round(live, 1)
    for key, folder in (("output", layout.output), ("checkpoint", layout.checkpoint), ("spool", layout.spool)):
        s[f"{key}_files"], s[f"{key}_bytes"] = dir_stats(folder)
    s["output_disk_files"] = s["output_files"]  # on disk: replaced files stay for deletedFileRetention (1 day)
    s["output_files"], s["delta_log_files"] = delta_read_set(layout.output)
    s["inbox_files"] = count_waiting(layout.inbox)
    try:
        s["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return s


def jvm_live_heap_exact_mib(pid: int) -> float | None:
    """Bytes of live objects from ``jcmd GC.class_histogram`` (a full GC, then a count of what
    survived, in one step), so the young objects a busy stream allocates between a forced
    GC and a later ``jstat`` are not counted. Falls back to bench.soak's GC.run + jstat."""
    if shutil.which("jcmd"):
        try:
            out = subprocess.run(["jcmd", str(pid), "GC.class_histogram"], capture_output=True, text=True, timeout=60).stdout
            for line in reversed(out.splitlines()):
                parts = line.split()
                if parts and parts[0] == "Total" and len(parts) >= 3:
                    return int(parts[2]) / 2**20
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return jvm_live_heap_mib(pid)
