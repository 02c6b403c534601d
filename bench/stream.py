"""Scenarios ``stream-folder`` and ``stream-kafka``: ``meme-stream`` as a subprocess.

Two measurements per source, both read from the predictions table the way a user
would (polling ``OUTPUT/predictions/date=*/part-*.parquet`` from this process):

* latency at light load: images arrive at ``--stream-rate`` per second for
  ``--stream-seconds``; per image, the time from landing in the inbox (or being
  acknowledged by the broker) to its row being readable; p50/p95/p99.
* throughput at saturation: N images arrive at once. The steady-state rate is the rows
  written after the burst's first output batch divided by the time after it (the stream
  drains a backlog); the burst rate is N / time from the first send to the last row.
  Both are given as a ratio to the ``limit`` scenario's ideal machine rate (one-core rate
  x cores) measured in the same run.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

import pyarrow.parquet as pq

from bench.common import MemorySampler, augmented_dataset, percentiles, rate, ratio
from bench.context import BenchContext
from memestream.testing import file_tail, script_command, start_group, stop_group

log = logging.getLogger(__name__)


@dataclass
class PredictionsWatcher:
    """Poll the predictions table; remember when each key (file name or Kafka key) first showed up."""

    output: Path
    column: str  # "origin" (folder: file name) or "kafka_key"
    seen_files: set[str] = field(default_factory=set)
    first_seen: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    #: rows whose OCR ran / failed: a broken OCR engine falls back to the image branch and
    #: would otherwise look like a fast cascade
    ocr_rows: int = 0
    ocr_errors: int = 0

    def poll(self) -> int:
        """Read the files of the predictions table's new Delta commits (a row counts when its
        commit is in the log, not when its Parquet file appears: readers see it only then)."""
        new = 0
        log_dir = self.output / "predictions" / "_delta_log"
        for commit in sorted(log_dir.glob("*.json")) if log_dir.is_dir() else ():
            if commit.name in self.seen_files:
                continue
            try:
                actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
            except (OSError, ValueError) as exc:  # written as one atomic file; retry next poll if not
                log.debug("cannot read %s yet: %s", commit, exc)
                continue
            self.seen_files.add(commit.name)
            now = time.monotonic()
            for action in actions:
                add = action.get("add")
                if not add or not add.get("dataChange", True):
                    continue  # OPTIMIZE rewrites rows already seen
                part = self.output / "predictions" / unquote(add["path"])
                table = pq.read_table(part, columns=[self.column, "error", "ocr_ran", "ocr_error"])
                columns = (table.column(c).to_pylist() for c in (self.column, "error", "ocr_ran", "ocr_error"))
                for value, err, ocr_ran, ocr_err in zip(*columns):
                    if value is None:
                        continue
                    name = Path(value).name if self.column == "origin" else value
                    if name not in self.first_seen:
                        self.first_seen[name] = now
                        new += 1
                        self.errors += err is not None
                        self.ocr_rows += bool(ocr_ran)
                        self.ocr_errors += ocr_err is not None
        return new

    def wait_for(self, keys: list[str], timeout: float, tick: Callable[[], None] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tick:
                tick()
            self.poll()
            if all(k in self.first_seen for k in keys):
                return True
            time.sleep(0.05)
        return False


class FolderFeeder:
    """Drop files into the inbox atomically (hidden temp name, then rename)."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        inbox.mkdir(parents=True, exist_ok=True)

    def send(self, name: str, data: bytes) -> float:
        tmp = self.inbox / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, self.inbox / name)
        return time.monotonic()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class KafkaFeeder:
    """Publish with the project's ImagePublisher; the key is the image's name (matched on kafka_key)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from producers.kafka import ImagePublisher, PublisherConfig

        self.pub = ImagePublisher(PublisherConfig(bootstrap_servers=bootstrap, topic=topic, linger_ms=0))

    def send(self, name: str, data: bytes) -> float:
        self.pub.publish(data, {"filename": name}, key=name).get(timeout=30)
        return time.monotonic()

    def send_many(self, items: list[tuple[str, bytes]]) -> float:
        futures = [self.pub.publish(data, {"filename": name}, key=name) for name, data in items]
        self.pub.flush(60)
        for f in futures:
            f.get(timeout=60)
        return time.monotonic()

    def flush(self) -> None:
        self.pub.flush(30)

    def close(self) -> None:
        self.pub.close()


def stream_args(source: str, root: Path, output: Path, model: Path, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``meme-stream`` flags of a stream scenario. No ``--trigger``: the benchmark measures the
    stream's own default (``streaming.config.DEFAULT_TRIGGER_S``), what a user gets; compare
    another interval with ``--stream-arg=--trigger --stream-arg=S`` (``extra`` comes last)."""
    return ["--source", source, "--data-dir", str(root), "--output", str(output), "--checkpoint", str(root / "checkpoint"),
            "--model", str(model), *extra]


def warm_up(feeder: Any, watcher: PredictionsWatcher, payload: tuple[str, Any], alive: Callable[[], None],
            t_launch: float, timeout: float, log_path: Path) -> float:
    """Send the first image (``payload``: extension, path) and wait for its row: the JVM, the
    Python workers and the model are loaded after it. Returns seconds since ``t_launch``."""
    ext, path = payload
    feeder.send(f"warm{ext}", path.read_bytes())
    if not watcher.wait_for([f"warm{ext}"], timeout, alive):
        raise TimeoutError(f"the warm-up image did not reach {watcher.output}/predictions within {timeout:.0f} s; "
                           f"log:\n{file_tail(log_path, 15)}")
    return round(time.monotonic() - t_launch, 2)


def saturate(feeder: Any, watcher: PredictionsWatcher, batch: list[tuple[str, bytes]], alive: Callable[[], None],
             timeout: float = 1800) -> dict[str, Any]:
    """Send ``batch`` (name, bytes) at once and time its rows: the burst rate (first send to last
    row) and the steady state. Once the first batch of the burst is out, the rest drains from a
    backlog: rows after it / time after it. The first batch only holds what had arrived when its
    trigger fired, so it measures latency, not capacity."""
    t0 = time.monotonic()
    if hasattr(feeder, "send_many"):
        published = feeder.send_many(batch)
    else:
        for name, data in batch:
            feeder.send(name, data)
        published = time.monotonic()
    done = watcher.wait_for([name for name, _ in batch], timeout, alive)
    seen = sorted(watcher.first_seen[name] for name, _ in batch if name in watcher.first_seen)
    t_all = seen[-1] if seen else t0
    elapsed = t_all - t0
    first_n = sum(1 for t in seen if t == seen[0]) if seen else 0
    drain_s = t_all - seen[0] if seen else 0.0
    return {
        "images": len(batch), "complete": done, "feed_s": round(published - t0, 2),
        "seconds": round(elapsed, 2), "burst_images_per_s": rate(len(batch), elapsed),
        "first_batch_images": first_n, "drain_seconds": round(drain_s, 2),
        "images_per_s": rate(len(batch) - first_n, drain_s) if len(batch) - first_n >= 100 else rate(len(batch), elapsed),
    }


def _measure(ctx: BenchContext, source: str) -> dict[str, Any]:
    cfg = ctx.config
    n_light = max(1, int(cfg.stream_rate * cfg.stream_seconds))
    n_sat = cfg.stream_saturation_images
    images = augmented_dataset(ctx.base(), 1 + n_light + n_sat, ctx.work)
    payloads = [(p.suffix.lower(), p) for p in images.files]
    model = ctx.model_dir()
    root = ctx.tmp / f"stream-{source}"
    output = root / "output"
    args = stream_args(source, root, output, model, cfg.stream_args)
    broker = None
    if source == "folder":
        args += ["--inbox", str(root / "inbox"), "--max-files-per-trigger", "1000"]
        feeder: Any = FolderFeeder(root / "inbox")
        column = "origin"
    else:
        from producers.broker import start_broker
        from producers.kafka import ensure_topic

        broker = start_broker(log_dir=root / "broker")
        topic = "bench-images"
        ensure_topic(broker.bootstrap, topic, partitions=2)
        args += ["--bootstrap-servers", broker.bootstrap, "--topic", topic, "--max-offsets-per-trigger", "1000"]
        feeder = KafkaFeeder(broker.bootstrap, topic)
        column = "kafka_key"
    watcher = PredictionsWatcher(output, column)
    log_path = root / "meme-stream.log"
    root.mkdir(parents=True, exist_ok=True)
    t_launch = time.monotonic()
    log.info("starting meme-stream %s (log: %s)", " ".join(args), log_path)
    proc = start_group(script_command("meme-stream", *args), log_path=log_path)
    result: dict[str, Any] = {"source": source}
    try:
        with MemorySampler(proc.pid, interval=0.5) as mem:
            alive = lambda: _check_alive(proc, log_path)  # noqa: E731

            # 1. warm-up: first image through (JVM, Python workers, model load)
            result["first_row_after_launch_s"] = warm_up(feeder, watcher, payloads[0], alive, t_launch, 300, log_path)

            # 2. light load: a steady trickle, latency per image
            sent: dict[str, float] = {}
            interval = 1.0 / cfg.stream_rate
            start = time.monotonic()
            for i in range(n_light):
                due = start + i * interval
                while time.monotonic() < due:
                    watcher.poll()
                    alive()
                    time.sleep(min(0.02, max(0.0, due - time.monotonic())))
                ext, path = payloads[1 + i]
                name = f"light{i:06d}{ext}"
                sent[name] = feeder.send(name, path.read_bytes())
            done = watcher.wait_for(list(sent), 120 + cfg.stream_seconds, alive)
            lat = [watcher.first_seen[k] - t for k, t in sent.items() if k in watcher.first_seen]
            result["light"] = {
                "images": n_light, "rate_per_s": cfg.stream_rate, "seconds": cfg.stream_seconds,
                "rows_seen": len(lat), "complete": done, "latency_s": percentiles(lat),
                "latency_max_s": round(max(lat), 3) if lat else None,
            }

            # 3. saturation: N images at once
            batch = [(f"sat{i:06d}{ext}", path.read_bytes()) for i, (ext, path) in enumerate(payloads[1 + n_light :])]
            result["saturation"] = saturate(feeder, watcher, batch, alive)
        result.update(mem.result())
        result["error_rows"] = watcher.errors
        result["ocr_rows"], result["ocr_error_rows"] = watcher.ocr_rows, watcher.ocr_errors
        if watcher.ocr_errors:
            log.warning("%d of the streamed images had an OCR error (image branch only): the cascade's speed is not representative",
                        watcher.ocr_errors)
        result["output_files"] = len(watcher.seen_files)
    finally:
        feeder.close()
        result["stream_exit_code"] = stop_group(proc).exit_code
        if broker is not None:
            broker.close()
    limit = ctx.results.get("limit", {})
    ideal = limit.get("ideal_machine_images_per_s")
    result["limit_ideal_images_per_s"] = ideal
    result["throughput_vs_limit"] = ratio(result["saturation"]["images_per_s"], ideal)
    result["burst_vs_limit"] = ratio(result["saturation"]["burst_images_per_s"], ideal)
    result["images_per_cpu_s"] = rate(1 + n_light + n_sat, result["cpu_s"]) if result.get("cpu_s") else None
    result["throughput_vs_limit_1core"] = ratio(result["saturation"]["images_per_s"], limit.get("images_per_s_per_core"))
    light, sat = result["light"], result["saturation"]
    result["rows"] = [
        {"case": f"{source}: light load {cfg.stream_rate:g}/s for {cfg.stream_seconds:g}s (latency s)",
         "images": light["images"], **light["latency_s"], "peak_rss_mib": result["peak_rss_mib"]},
        {"case": f"{source}: saturation, steady state (after batch 1)", "images": sat["images"] - sat["first_batch_images"],
         "seconds": sat["drain_seconds"], "images_per_s": sat["images_per_s"], "throughput_vs_limit": result["throughput_vs_limit"],
         "images_per_cpu_s": result["images_per_cpu_s"]},  # CPU of the whole run, start-up included
        {"case": f"{source}: burst, {sat['images']} at once, first to last", "images": sat["images"], "seconds": sat["seconds"],
         "images_per_s": sat["burst_images_per_s"], "throughput_vs_limit": result["burst_vs_limit"]},
    ]
    return result


def _check_alive(proc: subprocess.Popen, log_path: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"meme-stream exited with code {proc.returncode}; log tail:\n{file_tail(log_path, 15)}")


def run_stream_folder(ctx: BenchContext) -> dict[str, Any]:
    return _measure(ctx, "folder")


def run_stream_kafka(ctx: BenchContext) -> dict[str, Any]:
    return _measure(ctx, "kafka")


run = run_stream_folder
