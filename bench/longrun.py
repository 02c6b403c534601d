"""Long run: a month's worth of images through the folder path at saturation, sampled as it goes.

``python -m bench.longrun --images 200000 --plot docs/longrun.png`` trains a fast model on
tiny generated images (``gray32``: the pipeline's cost, not the embedder's), starts
``meme-stream`` on the folder path (inbox, mover, spool) in a fresh work folder and keeps a
bounded backlog of tiny images waiting in the inbox until ``--images`` have been fed, so
the stream is always busy. Every ``--sample-seconds`` it records, keyed by images
processed (files that left the inbox and the spool: the stream deletes each after its
batch is committed):

* the driver JVM's live heap (``jcmd GC.class_histogram``: a full GC, then the bytes that survived), and RSS per process (driver
  JVM, Python driver, Python workers);
* files and bytes under ``output/``, the Spark checkpoint and ``spool/``;
* throughput over the last interval.

At the end the stream is stopped with SIGINT, every input is looked up in the
predictions table (exactly one row each: no loss, no duplicate; bad inputs also appear in
the quarantine table) and the targets of issue 14 are checked: memory flat (last quarter
within 10 % of the second), file counts and checkpoint bytes bounded (the last quarter
no more than 10 % above the value at 25 %; slope per 10k images reported), throughput in
the last 10 % (before the final partial batches) >= 0.9 of the first 10 % after warm-up. A table with PASS/FAIL per target,
the JSON (``bench/results/longrun-<time>.json``) and a PNG of every sampled quantity
against images processed are written.

Flags for a newer stream (state-bounded sources, marker retention, compaction) are passed
through unchanged with ``--stream-arg=--flag`` (repeatable); nothing is detected.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.longrun_checks import check_delivery, compute_targets, format_report, plot_samples, read_origins, window_rate
from bench.longrun_sample import Layout, dir_stats, take_sample
from memestream.cli import add_common_flags, positive_float, positive_int, run_main
from memestream.errors import ConfigError, MemestreamError
from memestream.testing import CommandFailed, file_tail, run_meme_train, script_command, start_group, stop_group

log = logging.getLogger(__name__)

#: Feeder file names; the stream's ``origin`` column is this name (the spool prefix stripped).
NAME_FORMAT = "lr-{:08d}.jpg"


class LongrunFailed(MemestreamError):
    """The stream died or stalled before every image was processed."""


@dataclass(frozen=True)
class LongrunConfig:
    images: int = 200_000
    model: str | None = None
    work: str | None = None
    keep_work: bool = False
    sample_seconds: float = 30.0
    backlog: int = 3000
    # small batches: a month at a steady few images/s is mostly small batches, and per-batch state
    # (commit markers, checkpoint entries, Parquet files) is what grows; 200k images -> ~2000 batches
    max_files_per_trigger: int = 100
    trigger: float = 0.5
    driver_memory: str = "1g"
    feature_set: str = "gray32"
    image_side: int = 96
    pool_size: int = 60
    train_per_class: int = 30
    warmup_fraction: float = 0.05
    stall_seconds: float = 600.0
    live_heap: bool = True
    results_dir: str = "bench/results"
    plot: str | None = None
    stream_args: tuple[str, ...] = ()


# -- inputs and model -------------------------------------------------------------------------
def tiny_image_bytes(label: str, seed: int, side: int = 96) -> bytes:
    """A generated meme of class ``label`` shrunk to ``side`` px (JPEG, a few KB): decode is cheap."""
    import cv2

    from memestream.sample import encode, make_image

    img = make_image(label, np.random.default_rng(seed))
    return encode(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), "jpeg")


def image_pool(n: int, side: int = 96, seed: int = 1000) -> list[bytes]:
    """``n`` tiny images cycling through every sample class; the feeder reuses them."""
    from memestream.sample import STYLES

    labels = sorted(STYLES)
    return [tiny_image_bytes(labels[i % len(labels)], seed + i, side) for i in range(n)]


def train_fast_model(work: Path, cfg: LongrunConfig) -> Path:
    """A logistic regression on ``feature_set`` features of generated images (``meme-train``).

    Trained on full-size sample images (``gray32`` shrinks every image to 32x32 anyway):
    on the 96 px ones alone Spark's L-BFGS gave up ("line search zoom failed") and saved
    all-zero coefficients, a model that names one class for everything.
    """
    from memestream.sample import write_dataset

    data = work / "train-data"
    write_dataset(data, per_class=cfg.train_per_class, seed=5)
    model = work / "model"
    extra = ["--feature-set", cfg.feature_set, "--text", "off", "--models", "logreg", "--pca-k", "16",
             "--reg-params", "0.1", "--folds", "2", "--no-plots", "--quiet"]
    t0 = time.monotonic()
    try:
        run_meme_train(data, model, extra, timeout=1800)
    except CommandFailed as exc:
        raise LongrunFailed(str(exc)) from None
    log.info("trained a %s model in %.0f s: %s", cfg.feature_set, time.monotonic() - t0, model)
    return model


# -- the run --------------------------------------------------------------------------------------
def stream_command(layout: Layout, model: Path, cfg: LongrunConfig) -> list[str]:
    """``meme-stream`` on the folder path; ``cfg.stream_args`` last, so they can override."""
    return script_command(
        "meme-stream", "--source", "folder", "--data-dir", str(layout.root),
        "--inbox", str(layout.inbox), "--spool", str(layout.spool), "--output", str(layout.output),
        "--checkpoint", str(layout.checkpoint), "--model", str(model), "--processed", "delete",
        "--text", "off", "--trigger", str(cfg.trigger), "--max-files-per-trigger", str(cfg.max_files_per_trigger),
        "--driver-memory", cfg.driver_memory, *cfg.stream_args)


def feed_and_sample(layout: Layout, proc: subprocess.Popen, pool: list[bytes], cfg: LongrunConfig,
                    samples: list[dict[str, Any]], progress: list[tuple[float, int]],
                    on_sample: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Keep ``cfg.backlog`` files waiting until ``cfg.images`` are fed, then wait for the drain.

    Appends to ``samples`` and to ``progress`` (``(t_s, images processed)`` about once a
    second), so both survive a failure; returns timing facts. Raises
    :class:`LongrunFailed` when the stream exits or stalls.
    """
    layout.inbox.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    fed = 0
    processed = 0
    last_change = start
    next_sample = start + cfg.sample_seconds
    next_progress = start
    first_row_s = None
    feed_done_s = None
    while True:
        if proc.poll() is not None:
            raise LongrunFailed(f"meme-stream exited with code {proc.returncode} after {fed} fed, {processed} "
                                f"processed; log {layout.log}:\n{file_tail(layout.log, 12)}")
        waiting = layout.waiting()
        now = time.monotonic()
        done = fed - waiting
        if done != processed:
            processed, last_change = done, now
            if first_row_s is None and processed > 0:
                first_row_s = round(now - start, 1)
        if now >= next_progress:
            progress.append((round(now - start, 2), processed))
            next_progress = now + 1.0
        if now >= next_sample or (fed == cfg.images and waiting == 0):
            s = take_sample(layout, proc.pid, now - start, fed, processed, samples[-1] if samples else None, cfg.live_heap)
            samples.append(s)
            if on_sample is not None:
                on_sample(s)
            next_sample = max(next_sample + cfg.sample_seconds, time.monotonic())
        if fed == cfg.images and waiting == 0:
            progress.append((round(time.monotonic() - start, 2), processed))
            break
        if waiting > 0 and now - last_change > cfg.stall_seconds:
            raise LongrunFailed(f"no image processed for {cfg.stall_seconds:.0f} s ({processed} of {fed} fed); "
                                f"log {layout.log}:\n{file_tail(layout.log, 12)}")
        room = min(cfg.backlog - waiting, cfg.images - fed, 500)  # small chunks: the samples stay on time
        for _ in range(max(0, room)):
            name = NAME_FORMAT.format(fed)
            tmp = layout.inbox / f".{name}.tmp"
            tmp.write_bytes(pool[fed % len(pool)])
            os.replace(tmp, layout.inbox / name)
            fed += 1
        if fed == cfg.images and feed_done_s is None:
            feed_done_s = round(time.monotonic() - start, 1)
        if room <= 0:
            time.sleep(0.2)
    return {"seconds": round(time.monotonic() - start, 1), "first_row_s": first_row_s, "feed_done_s": feed_done_s}


# -- entry points -----------------------------------------------------------------------------------
def _prepare_work(cfg: LongrunConfig) -> tuple[Path, bool]:
    if cfg.work:
        root = Path(cfg.work)
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"--work-dir {root} is not empty; a long run needs a fresh folder (no old checkpoint or output)")
        root.mkdir(parents=True, exist_ok=True)
        return root, False
    return Path(tempfile.mkdtemp(prefix="memestream-longrun-")), not cfg.keep_work


def run_longrun_config(cfg: LongrunConfig) -> dict[str, Any]:
    """The whole run: model, stream, feeder + sampler, stop, checks. Never raises for a stream failure:
    the result carries ``error`` and whatever was sampled."""
    from bench.common import environment

    root, remove = _prepare_work(cfg)
    layout = Layout(root)
    result: dict[str, Any] = {
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(), "config": {**asdict(cfg), "stream_args": list(cfg.stream_args)},
        "work_dir": str(root),
    }
    samples: list[dict[str, Any]] = []
    progress: list[tuple[float, int]] = []
    try:
        model = Path(cfg.model) if cfg.model else train_fast_model(root, cfg)
        pool = image_pool(cfg.pool_size, cfg.image_side)
        cmd = stream_command(layout, model, cfg)
        result["stream_command"] = cmd[3:]
        log.info("starting meme-stream (log: %s) and feeding %d images", layout.log, cfg.images)
        proc = start_group(cmd, log_path=layout.log)
        try:
            def show(s: dict[str, Any]) -> None:
                log.info("%d/%d images, %s img/s, live heap %s MiB, JVM %s MiB, output %d files, checkpoint %d files",
                         s["images"], cfg.images, s.get("images_per_s"), s.get("jvm_live_heap_mib"), s.get("driver_jvm"),
                         s["output_files"], s["checkpoint_files"])

            timing = feed_and_sample(layout, proc, pool, cfg, samples, progress, on_sample=show)
            result["run"] = {**timing, "images_per_s": round(cfg.images / timing["seconds"], 2) if timing["seconds"] else None,
                             # after warm-up (JVM start, JIT, first batches), to the last image
                             "steady_images_per_s": window_rate(progress, cfg.warmup_fraction * cfg.images, cfg.images)}
        except LongrunFailed as exc:
            result["error"] = str(exc)
        finally:
            # SIGINT: the stream stops after the current batch
            stopped = stop_group(proc, 180.0, signal.SIGINT)
            if not stopped.graceful:
                log.warning("meme-stream pid %d did not stop within 180 s of SIGINT; killed it", proc.pid)
            result["stop"] = {"exit_code": stopped.exit_code, "graceful": stopped.graceful, "stop_seconds": stopped.seconds}
        if "error" not in result:
            expected = [NAME_FORMAT.format(i) for i in range(cfg.images)]
            result["delivery"] = check_delivery(expected, read_origins(layout.output, "predictions"),
                                                read_origins(layout.output, "quarantine"))
    finally:
        result["samples"] = samples
        result["progress"] = progress
        result["targets"] = compute_targets(samples, progress, cfg.images, cfg.warmup_fraction)
        result["final_disk"] = {k: dir_stats(p) for k, p in (("output", layout.output), ("checkpoint", layout.checkpoint),
                                                             ("spool", layout.spool))}
        try:
            result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
        if remove and "error" not in result and result.get("delivery", {}).get("ok"):
            shutil.rmtree(root, ignore_errors=True)
        elif remove:
            log.warning("the run failed; its work folder is kept for inspection: %s", root)
    return result


def passed(result: dict[str, Any]) -> bool:
    """No error, delivery exact and no target failed (n/a targets do not fail a run)."""
    return ("error" not in result and bool(result.get("delivery", {}).get("ok"))
            and not any(t["pass"] is False for t in result["targets"]))


def write_result(result: dict[str, Any], results_dir: str | os.PathLike[str], plot: str | None = None) -> tuple[Path, Path]:
    """``<results_dir>/longrun-<time>.json`` and the PNG (``plot``, default next to the JSON)."""
    from bench.common import result_json, write_result_file

    path = write_result_file(result, results_dir, "longrun-", result["started_utc"])
    png = Path(plot) if plot else path.with_suffix(".png")
    result["plot"] = str(png)
    path.write_text(result_json(result))  # again, with the plot's name
    env = result["environment"]
    title = (f"{result['config']['images']} images, {env.get('cpu_count')} cores, "
             f"stream args: {' '.join(result['config']['stream_args']) or 'none'}")
    plot_samples(result["samples"], png, title)
    return path, png


def run_longrun(ctx) -> dict[str, Any]:
    """``python -m bench --only longrun``: the same run with the bench's flags (quick: 300 images)."""
    c = ctx.config
    cfg = LongrunConfig(images=300 if c.quick else c.longrun_images, model=c.model,
                        sample_seconds=5.0 if c.quick else 30.0, stream_args=tuple(c.stream_args))
    result = run_longrun_config(cfg)
    path, png = write_result(result, c.results_dir)
    if result.get("error"):
        raise LongrunFailed(result["error"])
    run = result.get("run", {})
    rows = [{"case": f"longrun: {cfg.images} images at saturation (folder)", "images": cfg.images,
             "images_per_s": run.get("images_per_s"), "seconds": run.get("seconds"),
             "peak_rss_mib": max((s.get("rss_mib", 0) for s in result["samples"]), default=None)}]
    d = result.get("delivery", {})
    rows.append({"case": f"longrun delivery: {'PASS' if d.get('ok') else 'FAIL'} ({d.get('rows')} rows, "
                         f"{d.get('distinct_origins')} distinct, {d.get('fed')} fed)"})
    for t in result["targets"]:
        rows.append({"case": f"longrun {t['key']}: {({True: 'PASS', False: 'FAIL', None: 'n/a'})[t['pass']]}",
                     "ratio": t.get("ratio")})
    return {"rows": rows, "delivery": result.get("delivery"), "targets": result["targets"],
            "json": str(path), "plot": str(png), "passed": passed(result)}


run = run_longrun


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.longrun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = LongrunConfig()
    parser.add_argument("--images", type=positive_int, default=d.images, help=f"images to feed (default: {d.images}; 300 is a quick check)")
    parser.add_argument("--model", default=None, help="model store to stream with (default: train a fast one on tiny generated images)")
    parser.add_argument("--feature-set", default=d.feature_set, help=f"feature set of the model trained here (default: {d.feature_set})")
    parser.add_argument("--work-dir", default=None, help="fresh folder for inbox, spool, output, checkpoint (kept); default: a temp folder, removed")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp work folder")
    parser.add_argument("--sample-seconds", type=positive_float, default=d.sample_seconds, help=f"seconds between samples (default: {d.sample_seconds:g})")
    parser.add_argument("--backlog", type=positive_int, default=d.backlog, help=f"files kept waiting in inbox + spool (default: {d.backlog})")
    parser.add_argument("--max-files-per-trigger", type=positive_int, default=d.max_files_per_trigger,
                        help=f"meme-stream --max-files-per-trigger (default: {d.max_files_per_trigger})")
    parser.add_argument("--trigger", type=positive_float, default=d.trigger, help=f"meme-stream --trigger (default: {d.trigger:g})")
    parser.add_argument("--driver-memory", default=d.driver_memory, help=f"meme-stream --driver-memory (default: {d.driver_memory})")
    parser.add_argument("--stall-seconds", type=positive_float, default=d.stall_seconds,
                        help=f"give up when nothing is processed for this long (default: {d.stall_seconds:g})")
    parser.add_argument("--no-live-heap", action="store_true", help="do not force a full GC (jcmd GC.class_histogram) at each sample to read the live heap")
    parser.add_argument("--results-dir", default=d.results_dir, help=f"where the JSON goes (default: {d.results_dir})")
    parser.add_argument("--plot", default=None, help="PNG path (default: next to the JSON), e.g. docs/longrun.png")
    parser.add_argument("--stream-arg", action="append", default=[],
                        help="extra argument passed to meme-stream, e.g. --stream-arg=--no-ui (repeatable)")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> LongrunConfig:
    return LongrunConfig(
        images=args.images, model=args.model, work=args.work_dir, keep_work=args.keep_work,
        sample_seconds=args.sample_seconds, backlog=args.backlog, max_files_per_trigger=args.max_files_per_trigger,
        trigger=args.trigger, driver_memory=args.driver_memory, feature_set=args.feature_set,
        stall_seconds=args.stall_seconds, live_heap=not args.no_live_heap, results_dir=args.results_dir,
        plot=args.plot, stream_args=tuple(args.stream_arg),
    )


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = run_longrun_config(cfg)
    path, png = write_result(result, cfg.results_dir, cfg.plot)
    print(format_report(result))
    print(f"\nresults written to {path}, plot {png}")
    return 0 if passed(result) else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
