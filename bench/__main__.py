"""``python -m bench`` (from the repository root): run benchmark scenarios, print a table, write JSON.

The benchmarks live in the repository, not in the installed package (a console script would
point into a package the wheel does not carry); ``python -m`` finds ``bench/`` in the
working directory.

Results go to ``bench/results/<timestamp>.json`` (gitignored) with the machine's core
count, library versions, and per scenario images/second, latency percentiles and
ratios against baselines measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from bench.common import environment, finite, loadavg, write_result_file
from bench.context import OPTIONAL_SCENARIOS, SCENARIOS, BenchConfig, BenchContext
from memestream.cli import add_common_flags, env_flag, positive_float, positive_int, run_main
from memestream.errors import ConfigError

log = logging.getLogger(__name__)

_MODULES = {
    "limit": "bench.limit",
    "notebook": "bench.notebook",
    "train": "bench.train",
    "features": "bench.features",
    "stream-folder": "bench.stream",
    "stream-kafka": "bench.stream",
    "scale": "bench.scale",
    "query": "bench.query",
    "scale-out": "bench.scaleout",
    "longrun": "bench.longrun",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark memestream: single-core limit, notebook vs project ingest, training, streaming, scaling.",
        epilog=(
            "examples:\n  python -m bench --only limit,notebook --quick\n"
            "  python -m bench --only scale --scale-sizes 1000,10000,50000\n"
            "  python -m bench --only query              # meme-query cold start, DuckDB vs Spark, 330 and 100k rows\n"
            "  python -m bench --only scale-out          # the folder stream on local-cluster[1,1,2048] and [2,1,2048]\n"
            "  python -m bench --only longrun --quick    # the month-long folder run, 300 images (python -m bench.longrun for all flags)\n"
            "  MEMESTREAM_BENCH_DATA=/data/memes python -m bench --only limit"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios (default: all: {','.join(SCENARIOS)}; "
                             f"only when named: {','.join(OPTIONAL_SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="small inputs and short runs: a smoke test of the harness")
    env_flag(parser, "--data", envvar="MEMESTREAM_BENCH_DATA", default=None,
             help="labelled image folder (<class>/...); default: the shared doom-crossing set, else generated images")
    env_flag(parser, "--work-dir", envvar="MEMESTREAM_BENCH_WORK", default=None,
             help="cache for generated/augmented data sets (default: $TMPDIR/memestream-bench)")
    env_flag(parser, "--results-dir", envvar="MEMESTREAM_BENCH_RESULTS", default="bench/results", help="where the JSON goes")
    env_flag(parser, "--model", envvar="MEMESTREAM_MODEL", default=None,
             help="existing model store to benchmark (default: train one on the base data in this run)")
    parser.add_argument("--feature-set", default=None,
                        help="feature set for the 'scale' and 'notebook' project paths and models fitted here "
                             "(default: memestream.features.DEFAULT_FEATURE_SET)")
    parser.add_argument("--fit-in-bench", action="store_true", help="fit the model in-process even when meme-train exists")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default="local[*]", help="Spark master for in-process scenarios")
    parser.add_argument("--driver-memory", default="4g", help="driver memory of the bench's Spark session (default: 4g)")
    parser.add_argument("--scale-sizes", default=None, help="image counts for 'scale' (default: 1000,10000,50000; quick: 200,1000)")
    parser.add_argument("--train-multiplier", type=positive_int, default=10, help="'train' also runs on a set this many times larger (default: 10)")
    parser.add_argument("--stream-rate", type=positive_float, default=5.0, help="images/s at light load for latency (default: 5)")
    parser.add_argument("--stream-seconds", type=positive_float, default=45.0, help="seconds of light load (default: 45; quick: 8)")
    parser.add_argument("--stream-images", type=positive_int, default=3000, help="images dropped at once for saturation (default: 3000; quick: 100)")
    parser.add_argument("--longrun-images", type=positive_int, default=200_000,
                        help="images fed by 'longrun' (default: 200000; quick: 300)")
    parser.add_argument("--limit-images", type=int, default=0, help="cap the images the limit loop uses (default: all)")
    parser.add_argument("--train-arg", action="append", default=[], help="extra argument passed to meme-train (repeatable)")
    parser.add_argument("--stream-arg", action="append", default=[], help="extra argument passed to meme-stream (repeatable)")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in SCENARIOS + OPTIONAL_SCENARIOS]
    if unknown or not only:
        raise ConfigError(f"--only expects names from {', '.join(SCENARIOS + OPTIONAL_SCENARIOS)}; found {', '.join(unknown) or 'nothing'}")
    if args.scale_sizes:
        try:
            sizes = tuple(int(s) for s in args.scale_sizes.split(","))
        except ValueError:
            raise ConfigError(f"--scale-sizes expects comma-separated integers, found {args.scale_sizes!r}") from None
    else:
        sizes = (200, 1000) if args.quick else (1000, 10000, 50000)
    return BenchConfig(
        only=only,
        quick=args.quick,
        data=args.data,
        work=args.work_dir,
        results_dir=args.results_dir,
        model=args.model,
        feature_set=args.feature_set,
        fit_in_bench=args.fit_in_bench,
        master=args.master,
        driver_memory=args.driver_memory,
        scale_sizes=sizes,
        train_multiplier=1 if args.quick else args.train_multiplier,
        stream_rate=args.stream_rate,
        stream_seconds=min(args.stream_seconds, 8.0) if args.quick else args.stream_seconds,
        stream_saturation_images=min(args.stream_images, 100) if args.quick else args.stream_images,
        longrun_images=args.longrun_images,
        limit_images=args.limit_images,
        train_args=tuple(args.train_arg),
        stream_args=tuple(args.stream_arg),
    )


def run_benchmark(config: BenchConfig, spark=None) -> dict[str, Any]:
    """Run the selected scenarios in a fixed order (baselines first) and collect results.

    A failing scenario is recorded with its error and the others still run.
    """
    ctx = BenchContext(config, spark=spark)
    report: dict[str, Any] = {
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
        "scenarios": {},
    }
    try:
        base = ctx.base()
        report["data"] = {"root": str(base.root), "images": len(base), "classes": base.classes, "generated": base.generated}
        for name in SCENARIOS + OPTIONAL_SCENARIOS:  # fixed order: limit first, so later ratios can use it
            if name not in config.only:
                continue
            log.info("scenario %s: starting", name)
            t0 = time.perf_counter()
            load_before = loadavg()
            try:
                module = importlib.import_module(_MODULES[name])
                fn = getattr(module, "run_" + name.replace("-", "_"), None) or module.run
                result = fn(ctx)
                result["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - record and continue with the next scenario
                log.exception("scenario %s failed", name)
                result = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}"}
            result["wall_s"] = round(time.perf_counter() - t0, 2)
            result["loadavg_1m"] = {"before": load_before, "after": loadavg()}
            report["scenarios"][name] = result
            ctx.results[name] = result
    finally:
        ctx.close()
    report["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return report


def write_report(report: dict[str, Any], results_dir: str | os.PathLike[str]) -> Path:
    return write_result_file(report, results_dir, started_utc=report["started_utc"])


_COLUMNS = (
    ("case", "case", 58), ("images", "images", 7), ("images_per_s", "img/s", 9), ("seconds", "sec", 8), ("images_per_cpu_s", "img/cpu-s", 9),
    ("p50", "p50", 8), ("p95", "p95", 8), ("p99", "p99", 8), ("peak_rss_mib", "peakMiB", 8), ("cv_accuracy", "CV acc", 7), ("ratio", "ratio", 12),
)


def format_table(report: dict[str, Any]) -> str:
    """One line per measured case; latencies in ms (limit) or s (streaming), as labelled."""
    env = report["environment"]
    lines = [f"memestream bench  cores={env['cpu_count']} python={env['python']} pyspark={env['pyspark']} "
             f"opencv={env['opencv']}  data={report.get('data', {}).get('images')} images"]
    header = " ".join(f"{title:<{w}}" if key == "case" else f"{title:>{w}}" for key, title, w in _COLUMNS)
    for name, result in report["scenarios"].items():
        lines.append("")
        lines.append(f"[{name}] {result.get('status')} in {result.get('wall_s')} s, load {result.get('loadavg_1m', {}).get('before')}" + (f": {result['error']}" if result.get("error") else ""))
        if not result.get("rows"):
            continue
        lines.append(header)
        for row in result["rows"]:
            cells = []
            for key, _, w in _COLUMNS:
                value = row.get(key)
                if key == "ratio" and value is None:
                    value = next((f"{k.split('_vs_')[-1] if '_vs_' in k else k}={v}" for k, v in row.items() if ("_vs_" in k or k.startswith("ratio")) and v is not None), "")
                text = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
                cells.append(f"{text[:w]:<{w}}" if key == "case" else f"{text[:w]:>{w}}")
            lines.append(" ".join(cells))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    report = finite(run_benchmark(config))
    path = write_report(report, config.results_dir)
    print(format_table(report))
    print(f"\nresults written to {path}")
    failed = [n for n, r in report["scenarios"].items() if r.get("status") != "ok"]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
