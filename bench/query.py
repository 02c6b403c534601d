"""Scenario ``query``: cold-start time of ``meme-query`` on DuckDB and on Spark.

A new user's first query pays for starting the engine: a JVM for Spark, nothing for
DuckDB. Each measurement is a fresh ``python -m streaming.query_cli`` process running
one aggregate, timed from spawn to exit, over output folders of Delta tables in the
contract's schema (:mod:`streaming.schema`), appended with ``deltalake.write_deltalake``
batch by batch (one commit per batch, one file per batch and date, as the stream commits):
a small one (~330 predictions) and a large one (100k, 100 versions).
"""
from __future__ import annotations

import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from bench.context import BenchContext

log = logging.getLogger(__name__)

LABELS = ("doom", "animal_crossing", "cats")
SQL = "SELECT label, count(*) AS n FROM predictions GROUP BY label ORDER BY label"
SIZES = (330, 100_000)


def _scored_batch(rng: np.random.Generator, start: int, n: int, t0: datetime, model_version: str) -> pa.Table:
    """Scored rows as the stream writes them to ``predictions``: ``n`` rows, ~2% of them errors."""
    ts = pa.timestamp("us", tz="UTC")
    idx = np.arange(start, start + n)
    labels = [LABELS[i % len(LABELS)] for i in idx]
    errors = rng.random(n) < 0.02
    conf = rng.uniform(0.34, 1.0, n)
    event = [t0 + timedelta(milliseconds=int(i) * 150) for i in idx]
    processed = t0 + timedelta(milliseconds=int(idx[-1]) * 150 + 400)
    probs = [None if e else [(lbl, float(c))] + [(o, float((1 - c) / 2)) for o in LABELS if o != lbl]
             for e, lbl, c in zip(errors, labels, conf)]
    return pa.table({
        "image_id": [f"{i:064x}" for i in idx],
        "source": ["folder"] * n,
        "origin": [f"img_{i:07d}.jpg" for i in idx],
        "path": [f"file:///data/spool/img_{i:07d}.jpg" for i in idx],
        "kafka_key": pa.nulls(n, pa.string()),
        "headers": pa.nulls(n, pa.map_(pa.string(), pa.string())),
        "event_time": pa.array(event, ts),
        "processing_time": pa.array([processed] * n, ts),
        "label": [None if e else lbl for e, lbl in zip(errors, labels)],
        "confidence": [None if e else float(c) for e, c in zip(errors, conf)],
        "probabilities": pa.array(probs, pa.map_(pa.string(), pa.float64())),
        "error": ["not_an_image: cannot decode" if e else None for e in errors],
        "error_code": ["not_an_image" if e else None for e in errors],
        "model_version": [model_version] * n,
        "ocr_ran": pa.nulls(n, pa.bool_()),
        "ocr_text": pa.nulls(n, pa.string()),
        "ocr_error": pa.nulls(n, pa.string()),
        "novelty": pa.array(rng.uniform(0.0, 1.0, n)),
        "ood": pa.array(np.zeros(n, dtype=bool)),
        "nearest_class": [LABELS[i % len(LABELS)] for i in idx],
        "size_bytes": pa.array(rng.integers(20_000, 400_000, n), pa.int64()),
        "payload": [b"not an image" if e else None for e in errors],
        "date": [e.strftime("%Y-%m-%d") for e in event],
    })


def _predictions(scored: pa.Table, batch_id: int) -> pa.Table:
    """A scored batch as rows of the ``predictions`` table (schema.arrow_schema)."""
    from datetime import date

    from streaming import schema

    n = scored.num_rows
    extra = {"late": pa.array([False] * n), "batch_id": pa.array([batch_id] * n, pa.int64()),
             schema.WRITER: pa.array(["bench"] * n), schema.DATE: pa.array([date.fromisoformat(d) for d in scored["date"].to_pylist()])}
    arrow = schema.arrow_schema(schema.PREDICTIONS)
    return pa.table({name: extra[name] if name in extra else scored[name] for name in arrow.names}).cast(arrow)


def write_output(root: str | Path, rows: int, batch_rows: int = 1000, seed: int = 0,
                 start: datetime | None = None) -> Path:
    """An output folder whose ``predictions`` Delta table has ``rows`` rows, one commit per batch."""
    from deltalake import write_deltalake

    from streaming import schema

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = start or (datetime.now(timezone.utc) - timedelta(milliseconds=rows * 150 + 60_000))
    for batch_id, first in enumerate(range(0, rows, batch_rows)):
        scored = _scored_batch(rng, first, min(batch_rows, rows - first), t0, "v0001")
        write_deltalake(schema.table_uri(root, schema.PREDICTIONS), _predictions(scored, batch_id),
                        partition_by=[schema.DATE], mode="append")
    return root


def _layout() -> str:
    """Cache key of the generated folders: a change of the predictions' columns writes new ones."""
    import zlib

    from streaming.schema import COLUMNS, PREDICTIONS

    return f"delta-{zlib.crc32(repr(COLUMNS[PREDICTIONS]).encode()):08x}"


def cold_query(engine: str, output: Path, sql: str = SQL, fmt: str = "table", timeout: float = 300.0,
               extra: Sequence[str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds from spawning a fresh ``meme-query`` process to its exit.

    CPU time (user + system of the process) is reported too: on a shared machine the
    wall time also measures the neighbours."""
    cmd = [sys.executable, "-m", "streaming.query_cli", "--engine", engine, "--output", str(output), "--quiet",
           "--format", fmt, *(extra or ()), sql]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"meme-query --engine {engine} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    if not proc.stdout.strip():
        raise RuntimeError(f"meme-query --engine {engine} printed no rows")
    return seconds, cpu


def measure(work: Path, sizes: Sequence[int] = SIZES, repeats: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One row per (size, engine): median cold-start seconds over a few fresh processes."""
    repeats = repeats or {"duckdb": 5, "spark": 2}
    rows: list[dict[str, Any]] = []
    for n in sizes:
        folder = work / f"query-output-{n}-{_layout()}"
        if not (folder / ".complete").exists():
            log.info("writing %d predictions to %s", n, folder)
            write_output(folder, n, batch_rows=33 if n < 1000 else 1000)
            (folder / ".complete").write_text("ok\n")
        by_engine: dict[str, float] = {}
        for engine in ("duckdb", "spark"):
            runs = [cold_query(engine, folder) for _ in range(repeats[engine])]
            by_engine[engine] = statistics.median(w for w, _ in runs)
            rows.append({"case": f"meme-query cold start, {engine}, {n} predictions", "images": n,
                         "seconds": round(by_engine[engine], 3), # Spark's JVM is not reaped by the query process, so its CPU is not counted: DuckDB only
                         "cpu_s": round(statistics.median(c for _, c in runs), 3) if engine == "duckdb" else None,
                         "runs_s": [round(w, 3) for w, _ in runs], "loadavg_1m": round(os.getloadavg()[0], 2)})
        rows[-1]["spark_vs_duckdb"] = round(by_engine["spark"] / by_engine["duckdb"], 1)
    return rows


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def dashboard_first_paint(output: Path, scratch: Path) -> dict[str, Any] | None:
    """Load ``meme-dashboard``'s page over ``output`` in headless Chromium (fresh profile) and
    read back the page's own timings, in milliseconds from navigation start: every table
    and card rendered (``render_ms``), the next animation frame (``paint_ms``: first paint
    with data) and the charts drawn once plotly.min.js has loaded (``chart_ms``).
    None when Chromium is not installed."""
    import re
    import shutil
    import threading

    from streaming.dashboard import DashboardConfig, serve

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        log.warning("chromium not found: dashboard first paint not measured")
        return None
    server = serve(DashboardConfig(output, output.parent, port=0, refresh_s=60))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        runs = []
        for i in range(3):
            profile = scratch / f"chromium-profile-{time.time_ns()}"
            t0 = time.perf_counter()
            proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", server.url],
                                  capture_output=True, text=True, timeout=180)
            wall = time.perf_counter() - t0
            shutil.rmtree(profile, ignore_errors=True)
            paint = re.search(r'data-paint-ms="(\d+)"', proc.stdout)
            render = re.search(r'data-render-ms="(\d+)"', proc.stdout)
            chart = re.search(r'data-chart-ms="(\d+)"', proc.stdout)
            if proc.returncode != 0 or paint is None or render is None or chart is None:
                raise RuntimeError(f"chromium did not render the dashboard (exit {proc.returncode}): {proc.stderr[-300:]}")
            runs.append({"paint_ms": int(paint.group(1)), "render_ms": int(render.group(1)), "chart_ms": int(chart.group(1)),
                         "browser_wall_s": round(wall, 2)})
        best = sorted(runs, key=lambda r: r["paint_ms"])[len(runs) // 2]  # median run
        return {**best, "runs": runs}
    finally:
        server.shutdown()
        server.server_close()


def run(ctx: BenchContext) -> dict[str, Any]:
    sizes = (330, 10_000) if ctx.config.quick else SIZES
    repeats = {"duckdb": 3, "spark": 1} if ctx.config.quick else None
    rows = measure(ctx.work, sizes, repeats)
    largest = ctx.work / f"query-output-{sizes[-1]}-{_layout()}"
    paint = dashboard_first_paint(largest, ctx.tmp)
    if paint is not None:
        rows.append({"case": f"meme-dashboard first paint, {sizes[-1]} predictions", "images": sizes[-1],
                     "seconds": round(paint["paint_ms"] / 1000, 3), **paint, "loadavg_1m": round(os.getloadavg()[0], 2)})
    return {"sql": SQL, "rows": rows, "targets": "DuckDB cold start < 1 s and dashboard first paint < 2 s on 100k predictions"}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.query --work DIR``: DuckDB cold start only (no JVM), one JSON line per size."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--work", help="folder for the generated output folders, one per size (reused when complete)")
    where.add_argument("--output", help="write (or reuse) the output folder here instead (one size only)")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--as-of", default=None, help="also pass --as-of to meme-query")
    args = parser.parse_args(argv)
    if args.output and len(args.rows) != 1:
        parser.error("--output takes one --rows size")
    for n in args.rows:
        folder = Path(args.output) if args.output else Path(args.work) / f"query-output-{n}-{_layout()}"
        if not (folder / ".complete").exists():
            write_output(folder, n, batch_rows=33 if n < 1000 else 1000)
            (folder / ".complete").write_text("ok\n")
        runs = [cold_query("duckdb", folder, SQL, extra=["--as-of", args.as_of] if args.as_of else None) for _ in range(args.repeats)]
        print(json.dumps({"predictions": n, "engine": "duckdb", "as_of": args.as_of,
                          "median_s": round(statistics.median(w for w, _ in runs), 3),
                          "cpu_s": round(statistics.median(c for _, c in runs), 3), "runs_s": [round(w, 3) for w, _ in runs],
                          "loadavg_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
