"""Soak: run ``meme-stream`` on the folder path at a steady rate and sample memory.

``python -m bench.soak --minutes 20 --rate 5 --model models/`` prints, every interval,
the resident memory of the stream's process tree (driver JVM + Python driver + Python
workers) and how many rows are readable, then the first/last/max RSS and the slope per
10 minutes. Flat memory at steady load is the target; this shows whether it holds.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from memestream.sample import STYLES, sample_image_bytes


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, from /proc (MiB)."""
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
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


def count_rows(output: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    for part in (output / "predictions").glob("date=*/part-*.parquet"):
        try:
            n += pq.ParquetFile(part).metadata.num_rows
        except Exception:  # noqa: BLE001 - a file being renamed in
            continue
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model store (meme-train --model-dir)")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5.0, help="images per second")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None, help="write the samples here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="memestream-soak-"))
    inbox = work / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    images = [sample_image_bytes(label, seed) for label, seed in itertools.product(STYLES, range(20))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "--data-dir", str(work), "--model", args.model, "--quiet",
         "--processed", "delete"],
        stdout=subprocess.DEVNULL, stderr=open(work / "meme-stream.log", "w"),
    )
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
                s = {"t_s": round(time.monotonic() - start, 1), "rss_mib": round(tree_rss_mib(proc.pid), 1),
                     "sent": sent, "rows": count_rows(work / "output")}
                samples.append(s)
                print(json.dumps(s), flush=True)
                next_sample += args.interval
            if proc.poll() is not None:
                print(f"meme-stream exited with {proc.returncode}; see {work / 'meme-stream.log'}", file=sys.stderr)
                return 1
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    steady = samples[len(samples) // 4:] or samples
    if len(steady) >= 2:
        slope = (steady[-1]["rss_mib"] - steady[0]["rss_mib"]) / max(1.0, steady[-1]["t_s"] - steady[0]["t_s"]) * 600
    else:
        slope = float("nan")
    summary = {"cores": os.cpu_count(), "minutes": args.minutes, "rate": args.rate, "sent": sent,
               "rows": count_rows(work / "output"), "rss_first_mib": samples[0]["rss_mib"] if samples else None,
               "rss_last_mib": samples[-1]["rss_mib"] if samples else None,
               "rss_max_mib": max((s["rss_mib"] for s in samples), default=None),
               "rss_slope_mib_per_10min_after_warmup": round(slope, 1)}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
