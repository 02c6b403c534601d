"""Soak: run ``meme-stream`` on the folder path at a steady rate and sample memory.

``python -m bench.soak --minutes 20 --rate 5 --model models/`` prints, every interval,
the resident memory of the stream's process tree, split into driver JVM, Python driver
and Python workers, the JVM heap in use (``jstat``) and, every few samples, the live
heap right after a forced full GC (``jcmd GC.run``), plus how many rows are readable.
Then first/last values and slopes per 10 minutes after warm-up. Flat memory at steady
load is the target: a leak shows as a climbing live heap or Python RSS, while the JVM's
RSS also steps up as G1 commits heap towards ``--driver-memory`` (-Xmx) and then stays.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from memestream.sample import STYLES, sample_image_bytes
from memestream.testing import script_command, start_group, stop_group


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "python_driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "java" in cmd.split(" ", 1)[0] or "org.apache.spark" in cmd:
        return "driver_jvm"
    if "pyspark" in cmd or "python" in cmd:
        return "python_workers"
    return "other"


def tree_memory(pid: int) -> dict[str, float]:
    """RSS of ``pid`` and all its descendants, from /proc, in MiB: total and per role
    (Python driver, driver JVM, Python workers), plus the JVM's heap in use (jstat)."""
    children = _children()
    out = {"rss_mib": 0.0, "python_driver": 0.0, "driver_jvm": 0.0, "python_workers": 0.0, "other": 0.0}
    stack, jvm = [pid], None
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        role = _role(p, pid)
        mib = _rss_kib(p) / 1024.0
        out[role] += mib
        out["rss_mib"] += mib
        if role == "driver_jvm" and jvm is None:
            jvm = p
    heap = _jvm_heap_mib(jvm) if jvm else None
    if heap is not None:
        out["jvm_heap_used_mib"] = heap
    return {k: round(v, 1) for k, v in out.items()}


def jvm_live_heap_mib(pid: int) -> float | None:
    """Heap still in use right after a full GC (``jcmd GC.run``): the live set. A leak shows
    as this number climbing; the RSS alone also moves as G1 commits heap up to -Xmx."""
    import shutil

    if not shutil.which("jcmd"):
        return None
    try:
        subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return _jvm_heap_mib(pid)


def jvm_pid(root: int) -> int | None:
    children = _children()
    stack = [root]
    while stack:
        p = stack.pop()
        if p != root and _role(p, root) == "driver_jvm":
            return p
        stack.extend(children.get(p, []))
    return None


def _jvm_heap_mib(pid: int) -> float | None:
    """Heap in use (young + old) from ``jstat -gc``; None without a JDK."""
    import shutil

    if not shutil.which("jstat"):
        return None
    try:
        lines = subprocess.run(["jstat", "-gc", str(pid)], capture_output=True, text=True, timeout=10).stdout.split("\n")
        cols = dict(zip(lines[0].split(), lines[1].split()))
        return sum(float(cols[k]) for k in ("S0U", "S1U", "EU", "OU")) / 1024.0
    except (OSError, subprocess.SubprocessError, IndexError, KeyError, ValueError):
        return None


def count_rows(output: Path) -> int:
    """Rows of the predictions table's current Delta snapshot (OPTIMIZE's rewrites not counted twice)."""
    from streaming.schema import read_table

    try:
        return read_table(output, "predictions").num_rows
    except Exception:  # noqa: BLE001 - a commit being written: the next sample counts it
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model store (meme-train --model-dir)")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5.0, help="images per second")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None, help="write the samples here")
    parser.add_argument("--live-heap-every", type=int, default=4,
                        help="every Nth sample also forces a full GC in the driver JVM and records the live heap (0: never)")
    parser.add_argument("--driver-memory", default="1g", help="meme-stream --driver-memory (pins the JVM heap cap; default 1g)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="memestream-soak-"))
    inbox = work / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    images = [sample_image_bytes(label, seed) for label, seed in itertools.product(STYLES, range(20))]
    proc = start_group(script_command("meme-stream", "--data-dir", str(work), "--model", args.model, "--quiet",
                                      "--processed", "delete", "--driver-memory", args.driver_memory),
                       log_path=work / "meme-stream.log")
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    next_sample = start + args.interval
    sent = 0
    try:
        while time.monotonic() - start < args.minutes * 60:
            tmp = inbox / f".{sent}.tmp"
            tmp.write_bytes(images[sent % len(images)])
            os.replace(tmp, inbox / f"soak-{sent:07d}.jpg")
            sent += 1
            if time.monotonic() >= next_sample:
                s = {"t_s": round(time.monotonic() - start, 1), **tree_memory(proc.pid),
                     "sent": sent, "rows": count_rows(work / "output")}
                if args.live_heap_every and len(samples) % args.live_heap_every == args.live_heap_every - 1:
                    jpid = jvm_pid(proc.pid)
                    live = jvm_live_heap_mib(jpid) if jpid else None
                    if live is not None:
                        s["jvm_live_heap_mib"] = round(live, 1)
                samples.append(s)
                print(json.dumps(s), flush=True)
                next_sample += args.interval
            if proc.poll() is not None:
                print(f"meme-stream exited with {proc.returncode}; see {work / 'meme-stream.log'}", file=sys.stderr)
                return 1
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    finally:
        stop_group(proc, 120)
    steady = samples[len(samples) // 4:] or samples
    if len(steady) >= 2:
        slope = (steady[-1]["rss_mib"] - steady[0]["rss_mib"]) / max(1.0, steady[-1]["t_s"] - steady[0]["t_s"]) * 600
    else:
        slope = float("nan")
    summary = {"cores": os.cpu_count(), "minutes": args.minutes, "rate": args.rate, "sent": sent,
               "rows": count_rows(work / "output"), "rss_first_mib": samples[0]["rss_mib"] if samples else None,
               "rss_last_mib": samples[-1]["rss_mib"] if samples else None,
               "rss_max_mib": max((s["rss_mib"] for s in samples), default=None),
               "rss_slope_mib_per_10min_after_warmup": round(slope, 1), "driver_memory": args.driver_memory}
    for role in ("driver_jvm", "python_driver", "python_workers", "jvm_heap_used_mib", "jvm_live_heap_mib"):
        vals = [(x["t_s"], x[role]) for x in steady if role in x]
        if len(vals) >= 2:
            summary[f"{role}_first_last_mib"] = [vals[0][1], vals[-1][1]]
            summary[f"{role}_slope_mib_per_10min"] = round((vals[-1][1] - vals[0][1]) / max(1.0, vals[-1][0] - vals[0][0]) * 600, 1)
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
