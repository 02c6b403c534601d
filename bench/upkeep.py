"""``python -m bench.upkeep``: what the stream's output upkeep costs a batch, on the Delta tables.

Batches are recorded the way the stream records them (:class:`streaming.sinks.DeltaOutput`:
the predictions, the class counts, then the batch's row in ``batches``, each an idempotent
Delta commit), twice over a fresh output:

1. without upkeep (``meme-stream --no-compact``);
2. with a :class:`streaming.upkeep.StreamUpkeep` thread running
   :func:`streaming.upkeep.run_upkeep` (OPTIMIZE of the recent days, VACUUM, the log's
   checkpoint) every ``--compact-every`` batches and once more at the end, as the stream does.

For each it prints the commit time per batch (median, p99, max: what a micro-batch waits for
its output, with the upkeep's jobs sharing the cores), and what stays on disk: the predictions
table's live files and its files on disk, and its ``_delta_log`` (size, JSON commits,
checkpoints, and the JSON commits a reader replays after the newest checkpoint, which the
upkeep's checkpoints bound, or else ``delta.checkpointInterval``). The tables' ``delta.deletedFileRetentionDuration`` is set
to ``--file-retention`` so VACUUM's effect shows within the run.

Numbers depend on the disk and the load; run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

from streaming.schema import BATCHES, CLASS_COUNTS, PREDICTIONS, TABLES
from streaming.sinks import BatchRecord, DeltaOutput
from streaming.upkeep import StreamUpkeep, UpkeepConfig

LABELS = ("doom", "cats", "animal_crossing")
PRED_DDL = "image_id string, label string, confidence double, batch_id bigint, writer string, date date"
COUNTS_DDL = "window_start timestamp, window_end timestamp, label string, count bigint, batch_id bigint, writer string, date date"
WRITER = "bench"


def _frames(spark, batch_id: int, rows: int):  # noqa: ANN001
    """One batch's predictions (over today and yesterday, UTC: both inside OPTIMIZE's window)
    and its class counts."""
    today = datetime.now(timezone.utc).date()
    days = (today - timedelta(days=1), today)
    preds = [(f"{batch_id:08d}-{i:05d}".ljust(64, "0"), LABELS[(batch_id + i) % 3], ((batch_id * 7 + i) % 100) / 100,
              batch_id, WRITER, days[i % 2]) for i in range(rows)]
    start = datetime.combine(today, datetime.min.time())
    counts = [(start, start + timedelta(minutes=10), label, rows // 3, batch_id, WRITER, today) for label in LABELS]
    return spark.createDataFrame(preds, PRED_DDL), spark.createDataFrame(counts, COUNTS_DDL)


def _log_stats(table: Path) -> dict[str, int]:
    log = table / "_delta_log"
    files = [p for p in log.iterdir() if p.is_file()]
    commits = sorted(int(p.name.split(".")[0]) for p in files if p.name.endswith(".json") and p.name[0].isdigit())
    checkpoint = log / "_last_checkpoint"
    last = json.loads(checkpoint.read_text())["version"] if checkpoint.exists() else -1
    return {
        "log_bytes": sum(p.stat().st_size for p in files),
        "log_json_commits": len(commits),
        "log_checkpoints": len([p for p in files if ".checkpoint." in p.name and p.name.endswith(".parquet")]),
        "log_commits_after_checkpoint": len([v for v in commits if v > last]),
    }


def measure(spark, batches: int, rows: int, every: int | None, pause_s: float, file_retention: str) -> dict[str, Any]:  # noqa: ANN001
    """Record ``batches`` batches over a fresh output, with an upkeep thread when ``every`` is set."""
    from deltalake import DeltaTable

    with tempfile.TemporaryDirectory(prefix="bench-upkeep-") as d:
        out = DeltaOutput(d, WRITER)
        out.ensure_tables(spark)
        for table in TABLES:
            spark.sql(f"ALTER TABLE delta.`{out.uri(table)}` SET TBLPROPERTIES "
                      f"('delta.deletedFileRetentionDuration' = '{file_retention}')")
        recorded = [0]
        keeper = (StreamUpkeep(spark, UpkeepConfig(d), lambda: recorded[0], every_batches=every, every_s=None).start()
                  if every else None)
        times = []
        try:
            for b in range(batches):
                preds, counts = _frames(spark, b, rows)
                started = time.perf_counter()
                out.append(preds, PREDICTIONS, b)
                out.append(counts, CLASS_COUNTS, b)
                out.record_batch(spark, BatchRecord(b, rows=rows, label_totals={label: rows // 3 for label in LABELS}))
                times.append(time.perf_counter() - started)
                recorded[0] = b + 1
                if pause_s:
                    time.sleep(pause_s)
        finally:
            if keeper is not None:
                keeper.stop(final_pass=True)
        table = Path(out.uri(PREDICTIONS))
        times.sort()
        return {
            "upkeep": bool(every),
            "batches": batches,
            "commit_median_s": statistics.median(times),
            "commit_p99_s": times[min(len(times) - 1, int(len(times) * 0.99))],
            "commit_max_s": times[-1],
            "passes": len(keeper.passes) if keeper is not None else 0,
            "live_files": len(DeltaTable(str(table)).file_uris()),
            "disk_files": len([p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts]),
            "batches_rows": spark.read.format("delta").load(out.uri(BATCHES)).count(),
            **_log_stats(table),
        }


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def format_result(r: dict[str, Any]) -> str:
    passes = f", {r['passes']} upkeep passes" if r["upkeep"] else ""
    return (f"upkeep {'on ' if r['upkeep'] else 'off'}: commit per batch median {_ms(r['commit_median_s'])}, "
            f"p99 {_ms(r['commit_p99_s'])}, max {_ms(r['commit_max_s'])} over {r['batches']} batches{passes}; "
            f"predictions: {r['live_files']} live files, {r['disk_files']} on disk; _delta_log: "
            f"{r['log_bytes'] / 1024:.1f} KiB, {r['log_json_commits']} JSON commits, {r['log_checkpoints']} checkpoints, "
            f"{r['log_commits_after_checkpoint']} commits after the newest checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.upkeep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rows", type=int, default=500, help="predictions per batch")
    parser.add_argument("--compact-every", type=int, default=20, help="batches between upkeep passes")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between batches")
    parser.add_argument("--file-retention", default="interval 0 hours",
                        help="the tables' delta.deletedFileRetentionDuration (the stream's default: interval 1 days)")
    parser.add_argument("--master", default=None, help="Spark master URL when no session runs (default: local[*])")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()  # a notebook's or a test's: used, not stopped
    created = spark is None
    if created:
        from memestream.spark import build_spark

        # FAIR, as meme-stream runs: the upkeep's jobs go to their own pool
        spark = build_spark("bench-upkeep", master=args.master, conf={"spark.scheduler.mode": "FAIR"})
    try:
        for every in (None, args.compact_every):
            print(format_result(measure(spark, args.batches, args.rows, every, args.pause, args.file_retention)), flush=True)
    finally:
        if created:
            spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
