"""Scenario ``scale-out``: the folder stream on one executor and on two, in one run.

``meme-stream`` runs as a subprocess with ``--master local-cluster[N,1,MEM]``: a master, N
workers and N one-core executors in separate JVMs on this machine, the driver in the stream's
own process, exactly as on a cluster (tasks go over the network, the executors write the Delta
files, the driver commits). For N = 1 and N = 2, the same ``--stream-images`` images are
dropped at once after a warm-up image, and the steady-state rate is read from the predictions
table (:func:`bench.stream.saturate`). The ratio N=2 / N=1 is what a second executor buys;
on a two-core machine the driver's own work (planning, Delta commits, the Python it runs)
shares the cores with both executors, so the ideal 2.0 is not reachable here.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from bench.common import CPU_ROLES, MemorySampler, augmented_dataset, ratio, tree_cpu_by_role
from bench.context import BenchContext
from bench.stream import FolderFeeder, PredictionsWatcher, _check_alive, saturate, stream_args, warm_up
from memestream.testing import script_command, start_group, stop_group

log = logging.getLogger(__name__)

#: Memory of each local-cluster executor (MiB), as in the issue's ``local-cluster[N,1,2048]``.
EXECUTOR_MIB = 2048
EXECUTORS = (1, 2)


def _one(ctx: BenchContext, executors: int, payloads: list[tuple[str, Any]]) -> dict[str, Any]:
    cfg = ctx.config
    root = ctx.tmp / f"scale-out-{executors}"
    output = root / "output"
    master = f"local-cluster[{executors},1,{EXECUTOR_MIB}]"
    args = stream_args("folder", root, output, ctx.model_dir(), [*cfg.stream_args, "--master", master])
    args += ["--inbox", str(root / "inbox"), "--max-files-per-trigger", "1000"]
    feeder = FolderFeeder(root / "inbox")
    watcher = PredictionsWatcher(output, "origin")
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "meme-stream.log"
    log.info("starting meme-stream on %s (log: %s)", master, log_path)
    t_launch = time.monotonic()
    proc = start_group(script_command("meme-stream", *args), log_path=log_path)
    result: dict[str, Any] = {"master": master, "executors": executors}
    try:
        with MemorySampler(proc.pid, interval=0.5) as mem:
            alive = lambda: _check_alive(proc, log_path)  # noqa: E731
            result["first_row_after_launch_s"] = warm_up(feeder, watcher, payloads[0], alive, t_launch, 600, log_path)
            batch = [(f"sat{i:06d}{ext}", p.read_bytes()) for i, (ext, p) in enumerate(payloads[1:])]
            before = tree_cpu_by_role(proc.pid)
            result["saturation"] = sat = saturate(feeder, watcher, batch, alive)
            after = tree_cpu_by_role(proc.pid)
            # where the burst's CPU went: cores each role kept busy from the first send to the last row
            spent = {role: round(max(0.0, after[role] - before[role]), 2) for role in CPU_ROLES}
            result["burst_cpu_s"] = spent
            result["burst_cores"] = {role: round(v / sat["seconds"], 2) if sat["seconds"] else None
                                     for role, v in spent.items()}
        # local-cluster's master and workers live in the driver's JVM and start the executors as
        # its children: the sampled process tree is the whole cluster
        result.update(mem.result())
    finally:
        feeder.close()
        result["stream_exit_code"] = stop_group(proc).exit_code
    return result


def _cores(run: dict[str, Any], *roles: str) -> str:
    cores = run.get("burst_cores") or {}
    return f"{sum(cores.get(r) or 0.0 for r in roles):.2f}"


def run(ctx: BenchContext) -> dict[str, Any]:
    n = ctx.config.stream_saturation_images
    images = augmented_dataset(ctx.base(), 1 + n, ctx.work)
    payloads = [(p.suffix.lower(), p) for p in images.files]
    runs = {str(e): _one(ctx, e, payloads) for e in EXECUTORS}
    one, two = runs["1"]["saturation"]["images_per_s"], runs["2"]["saturation"]["images_per_s"]
    result: dict[str, Any] = {"runs": runs, "two_vs_one": ratio(two, one)}
    result["rows"] = [
        {"case": f"scale-out: folder stream on {r['master']}, steady state", "images": r["saturation"]["images"],
         "seconds": r["saturation"]["drain_seconds"], "images_per_s": r["saturation"]["images_per_s"],
         "peak_rss_mib": r.get("peak_rss_mib")}
        for r in runs.values()
    ] + [
        {"case": f"scale-out: [{n}] cores busy: driver {_cores(r, 'driver_python', 'driver_jvm')}, "
                 f"executors {_cores(r, 'executors')}"}
        for n, r in runs.items()
    ] + [{"case": "scale-out: two executors / one", "ratio": result["two_vs_one"]}]
    return result
