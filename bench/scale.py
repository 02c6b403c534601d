"""Scenario ``scale``: the training ingest/featurize path as input grows.

Each size runs in a fresh ``bench.ingest_worker`` process (Spark lists the folder,
workers read and featurize every image), so its peak memory is its own. Cost should
grow linearly (flat images/s) and memory should stay flat.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

from bench.common import MemorySampler, Timer, augmented_dataset, ratio
from bench.context import BenchContext

log = logging.getLogger(__name__)


def run(ctx: BenchContext) -> dict[str, Any]:
    base = ctx.base()
    fs = ctx.feature_set
    rows: list[dict[str, Any]] = []
    limit = ctx.results.get("limit", {})
    for n in ctx.config.scale_sizes:
        images = augmented_dataset(base, n, ctx.work)
        cmd = [sys.executable, "-m", "bench.ingest_worker", "--data", str(images.root), "--feature-set", fs,
               "--master", ctx.config.master]
        with Timer() as t:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            with MemorySampler(proc.pid, interval=0.25) as mem:
                out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ingest worker for {n} images exited {proc.returncode}: {err.strip().splitlines()[-3:]}")
        stats = json.loads(out.strip().splitlines()[-1])
        row = {"case": f"ingest+featurize {fs}, {n} images", "images": stats["images"], "seconds": stats["job_s"],
               "images_per_s": round(stats["images"] / stats["job_s"], 2), "process_s": round(t.seconds, 2),
               "startup_s": stats["startup_s"], "partitions": stats["partitions"], "bad": stats["bad"], **mem.result()}
        row["images_per_cpu_s"] = round(row["images"] / row["cpu_s"], 2) if row["cpu_s"] else None
        row["vs_limit"] = ratio(row["images_per_s"], limit.get("ideal_machine_images_per_s"))
        rows.append(row)
        log.info("scale %d: %.1f images/s, peak %.0f MiB", n, row["images_per_s"], row["peak_rss_mib"])
    first = rows[0]
    for row in rows[1:]:
        row["rate_vs_smallest"] = ratio(row["images_per_s"], first["images_per_s"])
        row["memory_vs_smallest"] = ratio(row["peak_rss_mib"], first["peak_rss_mib"])
    return {"feature_set": fs, "rows": rows}
