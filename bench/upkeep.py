"""``python -m bench.upkeep``: what the stream's output upkeep costs a batch (no Spark).

Two measurements over batches committed through :class:`streaming.sinks.OutputTables`,
the stream's own writer:

1. marker pruning: median commit time with ``--keep-commits`` against keeping every
   marker (the pruning's rollup is an fsync, amortised over a tenth of the limit);
2. in-stream compaction: commit latency (median, p99, max) without and with a
   :class:`streaming.compact.StreamCompactor` thread merging every N batches, and the
   longest time it held the writers' lock (the most a batch can wait on it).

Numbers depend on the disk and the load; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Sequence

import numpy as np
import pyarrow as pa

from streaming.compact import CompactConfig, StreamCompactor
from streaming.sinks import BatchMarker, OutputTables

DATES = ("2026-11-28", "2026-11-29")


def _batch(batch_id: int, rows: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(batch_id)
    return {"predictions": pa.table({
        "image_id": [f"{batch_id:08d}-{i:05d}".ljust(64, "0") for i in range(rows)],
        "label": rng.choice(["doom", "cats", "animal_crossing"], rows),
        "confidence": rng.random(rows),
        "date": [DATES[i % 2] for i in range(rows)],
    })}


def _commit_times(out: OutputTables, batches: int, rows: int, pause_s: float) -> list[float]:
    times = []
    for b in range(batches):
        tables = _batch(b, rows)
        started = time.perf_counter()
        out.commit_batch(b, tables, BatchMarker(b, rows, 0, 0, b, {"doom": rows}))
        times.append(time.perf_counter() - started)
        time.sleep(pause_s)
    return times


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def measure_pruning(batches: int, keep: int, rows: int) -> None:
    for label, k in ((f"keep {keep}", keep), ("keep all", 10**9)):
        with tempfile.TemporaryDirectory() as d:
            out = OutputTables(d, keep_commits=k)
            out.ensure_writable()
            times = _commit_times(out, batches, rows, 0.0)[batches // 2:]
            print(f"markers, {label}: median commit {_ms(statistics.median(times))} over the last {len(times)} batches; "
                  f"{len(out.committed_batches())} markers left")


def measure_compaction(batches: int, every: int, rows: int, pause_s: float) -> None:
    for on in (False, True):
        with tempfile.TemporaryDirectory() as d:
            out = OutputTables(d, writer="bench", keep_commits=100)
            out.ensure_writable()
            comp = StreamCompactor(out, CompactConfig(out.root), every, None, poll_s=0.05).start() if on else None
            times = sorted(_commit_times(out, batches, rows, pause_s))
            if comp is not None:
                comp.stop(final_pass=True)
            files = len(list((out.root / "predictions").glob("date=*/*.parquet")))
            extra = f"; {comp.runs} runs, longest lock hold {comp.max_lock_s * 1000:.2f} ms" if comp else ""
            print(f"compaction {'on ' if on else 'off'}: commit median {_ms(statistics.median(times))}, "
                  f"p99 {_ms(times[int(len(times) * 0.99)])}, max {_ms(times[-1])}; {files} predictions files{extra}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.upkeep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rows", type=int, default=500, help="predictions per batch")
    parser.add_argument("--keep-commits", type=int, default=100)
    parser.add_argument("--compact-every", type=int, default=20, help="batches between compaction runs")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between batches (compaction part)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    measure_pruning(args.batches, args.keep_commits, 10)
    measure_compaction(args.batches, args.compact_every, args.rows, args.pause)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
