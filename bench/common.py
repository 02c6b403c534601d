"""Shared benchmark plumbing: data sets, augmentation, memory sampling, percentiles.

Machines are shared and noisy, so every scenario reports ratios against baselines
measured in the same run; this module only provides the measuring tools.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from memestream.hidden import is_reader_hidden

log = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "doom-crossing"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class LabelledImages:
    """A folder of ``<class>/.../<image>`` files, listed once."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[str, ...]
    generated: bool

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.files)


def list_labelled(root: str | os.PathLike[str], generated: bool = False) -> LabelledImages:
    """List image files under ``root/<class>/`` (hidden names skipped), sorted for repeatability."""
    root = Path(root)
    files: list[Path] = []
    labels: list[str] = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not is_reader_hidden(p.name)):
        for path in sorted(cls.rglob("*")):
            rel = path.relative_to(root).parts
            if path.is_file() and path.suffix.lower() in IMAGE_EXTS and not any(map(is_reader_hidden, rel)):
                files.append(path)
                labels.append(cls.name)
    return LabelledImages(root, tuple(files), tuple(labels), generated)


def work_dir(base: str | None = None) -> Path:
    """Where generated/augmented data sets are cached between runs (never inside the repo)."""
    path = Path(base or os.environ.get("MEMESTREAM_BENCH_WORK") or Path(tempfile.gettempdir()) / "memestream-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_dataset(data: str | None, work: Path, generated_per_class: int = 60) -> LabelledImages:
    """The real doom-crossing set when present (or ``data``), else a generated sample set."""
    if data:
        return list_labelled(data)
    if SHARED_DATA.is_dir():
        return list_labelled(SHARED_DATA)
    from memestream.sample import write_dataset

    out = work / f"sample-{generated_per_class}"
    marker = out / ".complete"
    if not marker.exists():
        log.info("generating sample data set in %s (%d per class)", out, generated_per_class)
        write_dataset(out, per_class=generated_per_class, classes=["doom", "animal_crossing"], seed=5)
        marker.write_text("ok\n")
    return list_labelled(out, generated=True)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, crop and colour-jitter one image, so augmented copies are distinct inputs."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.8, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = img[y : y + ch, x : x + cw].astype(np.float32)
    img = img * rng.uniform(0.85, 1.15, size=(1, 1, 3)) + rng.uniform(-15, 15)
    return np.clip(img, 0, 255).astype(np.uint8)


def augmented_dataset(base: LabelledImages, n: int, work: Path, seed: int = 3) -> LabelledImages:
    """A folder of exactly ``n`` images made from ``base`` (cached under ``work``, outside the repo).

    The first copy of each source image is the original bytes; further copies are
    flipped/cropped/jittered and re-encoded (JPEG at a random quality, or PNG).
    """
    key = hashlib.sha1(f"{base.root}|{len(base)}|{n}|{seed}".encode()).hexdigest()[:10]
    out = work / f"aug-{n}-{key}"
    marker = out / ".complete"
    if marker.exists():
        return list_labelled(out, generated=True)
    log.info("augmenting %d images from %s into %s", n, base.root, out)
    rng = np.random.default_rng(seed)
    # a subset spreads over the whole base (both classes); a superset cycles through it
    order = np.linspace(0, len(base) - 1, n).round().astype(int) if n <= len(base) else np.arange(n) % len(base)
    for i in range(n):
        src, label = base.files[order[i]], base.labels[order[i]]
        folder = out / label / f"part{i // 5000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i < len(base):
            (folder / f"{i:06d}{src.suffix.lower()}").write_bytes(src.read_bytes())
            continue
        img = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if img is None:  # unreadable source: keep the bytes, the pipeline will report it
            (folder / f"{i:06d}{src.suffix.lower()}").write_bytes(src.read_bytes())
            continue
        img = augment(img, rng)
        if rng.random() < 0.75:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 95))])
            ext = ".jpg"
        else:
            ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            ext = ".png"
        (folder / f"{i:06d}{ext}").write_bytes(buf.tobytes())
    marker.write_text("ok\n")
    return list_labelled(out, generated=True)


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every result file."""
    import pyspark

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "mem_total_gib": _mem_total_gib(),
        "executable": sys.executable,
        "onnxruntime": _version("onnxruntime"),
    }


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def percentiles(values: Sequence[float], qs: Iterable[int] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": .., "p95": .., "p99": ..}`` (None when there are no values)."""
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": (round(float(np.percentile(arr, q)), 4) if arr.size else None) for q in qs}


# ---------------------------------------------------------------------------------------
# Memory: RSS of a process tree, sampled from /proc (no psutil needed).
# ---------------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size in bytes: each page shared by n processes counts 1/n in each. The
    Python workers are forked from one daemon and share its pages, so summed RSS counts those
    pages once per worker; summed PSS is the memory the tree takes from the machine."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read(300).replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return ""


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_pids(root_pid: int) -> list[int]:
    kids = _children_map()
    out, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


#: Roles of the processes in a stream's tree (:func:`tree_cpu_by_role`).
CPU_ROLES = ("driver_python", "driver_jvm", "executors", "other")


def tree_cpu_by_role(root_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the live processes under ``root_pid``, by role: the driver's
    Python process(es), the driver's JVM (with ``local-cluster``, the master and the workers
    live in it too), the executors (each ``CoarseGrainedExecutorBackend`` JVM and the Python
    workers it forked; in local mode, the Python workers), and anything else. The difference of two calls says where a run's
    CPU went: what a second executor cannot buy is what the driver spends."""
    kids = _children_map()
    out = dict.fromkeys(CPU_ROLES, 0.0)
    stack: list[tuple[int, str | None]] = [(root_pid, None)]
    while stack:
        pid, inherited = stack.pop()
        role = inherited
        if role is None:
            head = _cmd(pid).split(" ")[0]
            if "java" in head:
                full = _cmdline(pid)
                role = "executors" if "CoarseGrainedExecutorBackend" in full else "driver_jvm"
            elif "pyspark.daemon" in _cmd(pid):
                role = "executors"  # local mode: the driver JVM's Python workers run the tasks
            elif "python" in head or "python" in _cmd(pid):
                role = "driver_python"
            else:
                role = "other"
        out[role] += _cpu_seconds(pid)
        # an executor's descendants are the executor's; the driver's children get a role of their own
        stack.extend((kid, role if role == "executors" else None) for kid in kids.get(pid, ()))
    return {k: round(v, 2) for k, v in out.items()}


def _cmdline(pid: int) -> str:
    """The whole command line (a JVM's main class comes after its long class path)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds used so far by each live process in the tree of ``root_pid``."""
    return {pid: _cpu_seconds(pid) for pid in tree_pids(root_pid)}


class TreeCpu:
    """CPU seconds a process tree spends inside a ``with`` block (live processes only).

    On a shared, overloaded machine wall time mostly measures the neighbours; CPU time
    per image is the steadier number to compare.
    """

    def __init__(self, root_pid: int | None = None) -> None:
        self.root_pid = root_pid or os.getpid()
        self.seconds = 0.0

    def __enter__(self) -> "TreeCpu":
        self.before = tree_cpu(self.root_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        after = tree_cpu(self.root_pid)
        self.seconds = round(sum(max(0.0, v - self.before.get(pid, 0.0)) for pid, v in after.items()), 2)


def tree_rss(root_pid: int) -> dict[str, int]:
    """RSS in bytes of ``root_pid`` and all descendants, split into jvm / python / other;
    ``python_worker_max``: the largest single Spark Python worker (forked by ``pyspark.daemon``),
    which the per-worker memory target is about (not summed into the total); ``pss``: the
    tree's summed proportional set size (:func:`_pss`, not summed into the total either)."""
    kids = _children_map()
    out = {"jvm": 0, "python": 0, "other": 0, "python_worker_max": 0, "pss": 0}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(kids.get(pid, ()))
        rss = _rss(pid)
        cmd = _cmd(pid)
        kind = "jvm" if "java" in cmd.split(" ")[0] else ("python" if "python" in cmd else "other")
        out[kind] += rss
        out["pss"] += _pss(pid)
        if kind == "python" and "pyspark.daemon" in cmd:
            out["python_worker_max"] = max(out["python_worker_max"], rss)
    return out


@dataclass
class MemorySampler:
    """Sample the RSS of a process tree in a thread; keeps the peak of the total."""

    root_pid: int
    interval: float = 0.2
    peak_total: int = 0
    peak_parts: dict[str, int] = field(default_factory=dict)
    peak_worker: int = 0  # the largest single Python worker seen in any sample
    peak_pss: int = 0  # the largest summed PSS seen in any sample
    samples: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            parts = tree_rss(self.root_pid)
            self.peak_worker = max(self.peak_worker, parts.pop("python_worker_max"))
            self.peak_pss = max(self.peak_pss, parts.pop("pss"))
            total = sum(parts.values())
            for pid, sec in tree_cpu(self.root_pid).items():  # last value seen per pid
                self.cpu[pid] = max(sec, self.cpu.get(pid, 0.0))
            self.samples += 1
            if total > self.peak_total:
                self.peak_total, self.peak_parts = total, parts
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def result(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {
            "peak_rss_mib": round(self.peak_total / mib, 1),
            "peak_jvm_mib": round(self.peak_parts.get("jvm", 0) / mib, 1),
            "peak_python_mib": round(self.peak_parts.get("python", 0) / mib, 1),
            "peak_python_worker_mib": round(self.peak_worker / mib, 1),
            "peak_pss_mib": round(self.peak_pss / mib, 1),
            "memory_samples": self.samples,
            "cpu_s": round(sum(self.cpu.values()), 2),
        }


class Timer:
    """``with Timer() as t: ...; t.seconds`` (wall) and ``t.cpu`` (CPU of this process)."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.seconds = self.cpu = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu_start  # this process only (not children)


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a != a or b != b:
        return None
    return round(a / b, 3)


def finite(obj: Any) -> Any:
    """``obj`` (JSON-like) with NaN and infinities as None, so the JSON stays strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)  # numpy scalars; Path and the rest as text


def write_result_file(result: dict[str, Any], results_dir: str | os.PathLike[str], prefix: str = "",
                      started_utc: str | None = None) -> Path:
    """Write ``result`` as ``<results_dir>/<prefix><start time>.json`` (``-1``, ``-2``... when
    that name is taken: two runs started in one second keep both files). ``started_utc`` is
    an ISO time such as ``2026-12-07T06:10:50Z`` (default: now)."""
    stamp = (started_utc or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")).replace("-", "").replace(":", "")
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}{stamp}.json"
    i = 1
    while path.exists():
        path = out / f"{prefix}{stamp}-{i}.json"
        i += 1
    path.write_text(result_json(result))
    return path


def result_json(result: dict[str, Any]) -> str:
    """A result file's text: strict JSON (NaN/inf as null, numpy scalars as numbers), machine paths portable."""
    return json.dumps(portable_paths(finite(result)), indent=2, default=_json_default, allow_nan=False)


def portable_paths(obj: Any, cwd: str | None = None) -> Any:
    """``obj`` (JSON-like) with this machine's absolute paths made portable, for result files
    kept in the repository: under the temp dir -> ``$TMPDIR/...``, under home -> ``~/...``,
    near the working directory -> relative (``../shared/...``). Other strings unchanged."""
    cwd = os.path.abspath(cwd or os.getcwd())
    tmp = os.path.abspath(tempfile.gettempdir())
    home = os.path.expanduser("~")

    def one(s: str) -> str:
        if not os.path.isabs(s):
            return s
        for root, name in ((tmp, "$TMPDIR"), (home, "~")):
            if s == root or s.startswith(root.rstrip("/") + "/"):
                return name + s[len(root.rstrip("/")):]
        if not os.path.exists(s):  # not a path of this machine (a URL path, say)
            return s
        rel = os.path.relpath(s, cwd)
        return rel if not rel.startswith("../../..") else s

    if isinstance(obj, str):
        return one(obj)
    if isinstance(obj, dict):
        return {k: portable_paths(v, cwd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_paths(v, cwd) for v in obj]
    return obj
