"""Folder source comparison: ``--folder-source spool`` vs ``binaryfile`` on the same input.

``python -m bench.spool_compare --model models/ --files 5000`` runs ``meme-stream`` once per
source over the same N tiny generated images (all waiting in the inbox at start, so each
run drains a backlog) and reports, per source:

* images/s from the first output rows to the last (startup excluded);
* the driver JVM's live heap after a full GC (``jcmd GC.run``) at 20% of the rows and at the
  end, and the difference per file (Spark's file source keeps every file it has seen);
* the Spark checkpoint's files and bytes, and the part under ``sources/`` (the file source's
  per-file log).

``--source-only`` measures the sources alone (no model: each batch is only counted), in a fresh
Spark per source, over more files (``--files 20000``): the live heap after a full GC before
the first file and after the last, per file. That is where the file source's seen-files map shows.

Without ``--model`` (or with an empty model folder) a fast ``colorcooc`` logistic-regression
model is trained first on generated images. Short by design: a few minutes in all.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from bench.soak import count_rows, jvm_live_heap_mib, jvm_pid
from memestream.sample import STYLES, sample_image_bytes, write_dataset
from memestream.testing import run_meme_train, script_command, start_group, stop_group

IMPLS = ("spool", "binaryfile")


def ensure_model(models: Path, work: Path) -> None:
    """Train a small, fast model into ``models`` unless it already holds one."""
    if (models / "CURRENT").exists():
        return
    data = work / "train-data"
    write_dataset(data, per_class=30, seed=7)
    run_meme_train(data, models, ["--feature-set", "colorcooc", "--text", "off", "--models", "logreg", "--pca-k", "16",
                                  "--reg-params", "1.0", "--folds", "2", "--no-plots"])


def live_heap(root_pid: int) -> float | None:
    """Driver JVM live heap after a full GC, the lower of two (one GC can leave garbage behind)."""
    jpid = jvm_pid(root_pid)
    values = [v for v in (jvm_live_heap_mib(jpid), jvm_live_heap_mib(jpid)) if v is not None] if jpid else []
    return round(min(values), 1) if values else None


def tree_stats(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def run_one(impl: str, model: Path, work: Path, n: int, max_files: int, timeout_s: float) -> dict[str, Any]:
    """One stream over ``n`` files of the inbox; measurements as in the module docstring."""
    root = work / impl
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    images = [sample_image_bytes(label, seed) for label in STYLES for seed in range(20)]
    for i in range(n):
        (inbox / f"c{i:06d}.jpg").write_bytes(images[i % len(images)])
    cmd = script_command("meme-stream", "--data-dir", str(root), "--model", str(model), "--quiet", "--no-ui",
                         "--processed", "delete", "--folder-source", impl, "--max-files-per-trigger", str(max_files),
                         "--driver-memory", "1g")
    proc = start_group(cmd, log_path=root / "meme-stream.log")
    out: dict[str, Any] = {"impl": impl, "files": n}
    started = time.monotonic()
    t_first = rows_first = None
    heap_early = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"meme-stream ({impl}) exited with {proc.returncode}; see {root / 'meme-stream.log'}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"meme-stream ({impl}) did not finish {n} files in {timeout_s:.0f} s")
            rows = count_rows(root / "output")
            now = time.monotonic()
            if rows and t_first is None:
                t_first, rows_first = now, rows
                out["startup_s"] = round(now - started, 1)  # to the first readable rows
            if heap_early is None and rows >= n // 5:
                heap_early = (live_heap(proc.pid), rows)
                t_first, rows_first = time.monotonic(), count_rows(root / "output")  # rate after the GC pause
            if rows >= n:
                t_end = now
                break
            time.sleep(0.25)
        out["images_per_s"] = round((n - rows_first) / max(1e-9, t_end - t_first), 1)
        time.sleep(1.0)  # let the last batch's checkpoint commit land
        heap_end = live_heap(proc.pid)
        out["live_heap_mib_at_20pct"] = heap_early[0] if heap_early else None
        out["live_heap_mib_at_end"] = heap_end
        if heap_early and heap_early[0] is not None and heap_end is not None:
            out["live_heap_kib_per_file"] = round((heap_end - heap_early[0]) * 1024 / max(1, n - heap_early[1]), 3)
        ck = root / "checkpoints" / "folder" / "spark"
        out["checkpoint_files"], out["checkpoint_bytes"] = tree_stats(ck)
        out["sources_files"], out["sources_bytes"] = tree_stats(ck / "sources")
        out["offsets_bytes"] = tree_stats(ck / "offsets")[1]
    finally:
        stop_group(proc, 120)
    return out


def source_only(impl: str, work: Path, n: int, max_files: int) -> dict[str, Any]:
    """Stream ``n`` spooled files through one source with a counting ``foreachBatch`` (no scoring),
    in this process's Spark; live heap before and after."""
    import os

    from memestream.spark import build_spark
    from memestream.inbox import InboxMover
    from streaming.query import open_stream
    from streaming.sources import folder_frame, folder_source
    from streaming.spool_source import register

    root = work / f"source-{impl}"
    mover = InboxMover(root / "inbox", root / "spool", settle=0)
    spark = build_spark(f"spool-compare-{impl}", master="local[2]", conf={"spark.ui.enabled": "false"})
    register(spark)
    frame = open_stream(spark, folder_source(root / "spool", max_files, impl, 2)).transform(folder_frame)
    rows: list[int] = []
    ck = root / "ck"
    # warm up on a first small batch, then measure from there
    for i in range(max_files):
        (mover.inbox / f"w{i:06d}.jpg").write_bytes(b"w" * 2000)
    mover.sweep(settle=0)
    query = frame.writeStream.foreachBatch(lambda df, _: rows.append(df.count())).option(
        "checkpointLocation", str(ck)).trigger(availableNow=True).start()
    query.awaitTermination()
    heap_before = live_heap(os.getpid())
    for i in range(n):
        (mover.inbox / f"s{i:06d}.jpg").write_bytes(b"s" * 2000)
    mover.sweep(settle=0)
    start = time.monotonic()
    query = frame.writeStream.foreachBatch(lambda df, _: rows.append(df.count())).option(
        "checkpointLocation", str(ck)).trigger(availableNow=True).start()
    query.awaitTermination()
    seconds = time.monotonic() - start
    heap_after = live_heap(os.getpid())
    spark.stop()
    out: dict[str, Any] = {"impl": impl, "mode": "source-only", "files": n, "rows": sum(rows) - max_files,
                           "files_per_s": round(n / seconds, 1), "live_heap_mib_before": heap_before,
                           "live_heap_mib_after": heap_after}
    if heap_before is not None and heap_after is not None:
        out["live_heap_kib_per_file"] = round((heap_after - heap_before) * 1024 / n, 3)
    out["checkpoint_files"], out["checkpoint_bytes"] = tree_stats(ck)
    out["sources_bytes"] = tree_stats(ck / "sources")[1]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.spool_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model store (default: train a small one in the work dir)")
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--max-files-per-trigger", type=int, default=500)
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated: spool, binaryfile")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run before giving up")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--source-only", action="store_true", help="measure the sources alone (no model, no scoring)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: this process runs one source
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="memestream-spoolcmp-"))
    if args.source_only:
        return _source_only(args, work)
    model = Path(args.model) if args.model else work / "models"
    ensure_model(model, work)
    results = []
    for impl in args.impls.split(","):
        res = run_one(impl.strip(), model, work, args.files, args.max_files_per_trigger, args.timeout)
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _source_only(args: argparse.Namespace, work: Path) -> int:
    if args.one:  # a fresh process (and JVM) per source, so one cannot inflate the other's heap
        print(json.dumps(source_only(args.impls, work, args.files, args.max_files_per_trigger)), flush=True)
        return 0
    results = []
    for impl in args.impls.split(","):
        done = subprocess.run([sys.executable, "-m", "bench.spool_compare", "--source-only", "--one", "--impls", impl.strip(),
                               "--files", str(args.files), "--max-files-per-trigger", str(args.max_files_per_trigger),
                               "--work-dir", str(work)], capture_output=True, text=True, check=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
