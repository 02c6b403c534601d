"""Scenario ``train``: wall time and peak memory of ``meme-train`` as a subprocess.

Run on the base set and on an augmented set ``--train-multiplier`` times larger;
memory is the peak RSS of the whole process tree (Python driver, JVM, Python workers)
sampled from /proc.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Any

from bench.common import MemorySampler, Timer, augmented_dataset, rate, ratio
from bench.context import BenchContext
from bench.model import meme_train_available
from memestream.testing import meme_train_command, tail

log = logging.getLogger(__name__)


def _train_once(ctx: BenchContext, images, label: str, out=None) -> dict[str, Any]:
    out = out or ctx.tmp / f"train-{label}"
    cmd = meme_train_command(images.root, out, *ctx.config.train_args)
    log.info("train %s: meme-train on %d images", label, len(images))
    with Timer() as t:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with MemorySampler(proc.pid, interval=0.25) as mem:
            output, _ = proc.communicate()
    row: dict[str, Any] = {"case": f"meme-train {label}", "images": len(images), "seconds": round(t.seconds, 2),
                           "images_per_s": rate(len(images), t.seconds), "exit_code": proc.returncode, **mem.result()}
    row["images_per_cpu_s"] = rate(row["images"], row["cpu_s"])
    if proc.returncode != 0:
        row["error_tail"] = tail(output, 5).splitlines()
    return row


def run(ctx: BenchContext) -> dict[str, Any]:
    if not meme_train_available():
        return {"status": "skipped", "error": "batch_training.train (meme-train) is not importable yet", "rows": []}
    base = ctx.base()
    # cold (nothing cached), then warm: the same store again, so embeddings and OCR text
    # of these images come from its _cache/
    store = ctx.tmp / "train-base"
    rows = [_train_once(ctx, base, "base (cold)", store), _train_once(ctx, base, "base (warm cache)", store)]
    rows[1]["time_vs_cold"] = ratio(rows[1]["seconds"], rows[0]["seconds"])
    mult = ctx.config.train_multiplier
    if mult > 1:
        big = augmented_dataset(base, len(base) * mult, ctx.work)
        rows.append(_train_once(ctx, big, f"x{mult}"))
        rows[-1]["time_vs_base"] = ratio(rows[-1]["seconds"], rows[0]["seconds"])
        rows[-1]["memory_vs_base"] = ratio(rows[-1]["peak_rss_mib"], rows[0]["peak_rss_mib"])
    failed = [r for r in rows if r["exit_code"] != 0]
    result: dict[str, Any] = {"train_args": list(ctx.config.train_args), "rows": rows}
    if failed:
        result["error"] = f"meme-train failed: {failed[0].get('error_tail')}"
        raise RuntimeError(result["error"])
    return result
