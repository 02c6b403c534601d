"""``python -m bench.fuzz``: hostile image bytes through the shared input path, each in a child process.

Seeds are made in code (:mod:`bench.fuzz_corpus`: JPEG baseline/progressive/CMYK/EXIF-rotated,
PNG 8/16-bit/palette/interlaced/animated, animated GIF, BMP, WebP lossy/lossless/alpha/animated,
TIFF multi-page/compressed/big-endian) and mutated: bit flips, truncations at structural
boundaries, zeroed and duplicated ranges, header fields that lie (checksums recomputed), splices
across formats, valid magic followed by garbage, and canvas/frame/page/scan bombs. Case ``i`` of
``--seed S`` is always the same bytes.

Each case runs the real path training and the stream share,
``featurize_inputs([data], get_feature_set(--feature-set))`` (decode, then the feature set's
extraction), in a pool of ``--workers`` child processes. A worker that dies is replaced. Caps:

- ``--time-cap`` seconds per case (default 10): a case still running then is a **hang**; its
  worker is killed and replaced.
- ``--mem-cap-mib`` MiB of address space per worker (``RLIMIT_AS``, default 2048; 0: none). The
  default feature set's ONNX session loads and runs under it (each worker featurizes a probe
  image before its first case, and the run stops with a clear error when that fails; a worker
  uses about 640 MiB of address space after it).

Every case ends as one of: **featurized**; a **coded** error (a ``memestream.decode`` code:
truncated, corrupt, too_many_pixels...); or a finding:

- **crash**: the worker died by a signal or exited;
- **hang**: the time cap was hit;
- **oom**: a MemoryError or a refused allocation (raised, or swallowed by OpenCV and only logged
  on the worker's stderr: under the cap that is how a 4 GB request from a 45-byte file shows),
  a worker death whose stderr says so, or a case that survived but raised the worker's resident
  memory by more than ``--rss-flag-mib`` (default 1024; the 40-megapixel cap costs far less);
- **uncoded**: an exception that is not a ``BadImage`` (``featurize_inputs`` reports those as
  ``corrupt: decoder failed with <type>`` so the stream survives, but they are bugs to fix).

Prints a table per format x mutation with totals, cases/s and the machine's core count; writes
``<results-dir>/fuzz-<UTC time>.json`` and each finding's bytes under
``<results-dir>/fuzz-<UTC time>/findings/`` (gitignored). ``--replay FILE|FOLDER ...`` runs saved
findings again. Exits 1 when there are findings.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from memestream.isolation import limit_memory, signal_name

log = logging.getLogger(__name__)

DEFAULT_CASES = 20_000
DEFAULT_TIME_CAP_S = 10.0
DEFAULT_MEM_CAP_MIB = 2048
#: A case whose worker's resident memory rises by more than this is an OOM finding even if it
#: survives: the biggest image the pixel cap admits (40 MP) costs a few hundred MiB at most.
DEFAULT_RSS_FLAG_MIB = 1024.0
#: Outcome kinds, in the table's order; the last four are findings.
KINDS = ("featurized", "coded", "crash", "hang", "oom", "uncoded")
FINDINGS = ("crash", "hang", "oom", "uncoded")
#: How long a worker may take to start (imports, ONNX session, probe image).
STARTUP_TIMEOUT_S = 300.0
_OOM_WORDS = ("MemoryError", "bad_alloc", "Insufficient memory", "Failed to allocate", "Cannot allocate memory",
              "Out of memory", "out of memory")
#: libtiff says "Out of memory reading of <tag>" also when it refused a tag larger than the file
#: without allocating; this line beside it tells the two apart.
_REFUSED_NOT_ALLOCATED = "Memory not allocated"
#: What OpenCV logs when a decoder's header or data reader threw something it swallowed. Under the
#: address-space cap that is how a refused allocation shows: a 45-byte PNG whose chunk length said
#: 4 GB came back as a plain "could not be decoded" while imdecode had asked for 4 GB.
_SWALLOWED = ("unknown exception",)
_UNCODED = "decoder failed with "


class FuzzError(RuntimeError):
    """The harness itself cannot run (a worker cannot start under the caps)."""


@dataclass
class Outcome:
    kind: str
    code: str | None = None
    message: str = ""
    seconds: float = 0.0
    #: how far the worker's resident memory rose above its level before the case (None: unknown)
    rss_growth_mib: float | None = None


def classify(error: str | None, code: str | None) -> Outcome:
    """One ``featurize_inputs`` row's result as an outcome kind."""
    if error is None:
        return Outcome("featurized")
    if code == "out_of_memory" or any(w in error for w in _OOM_WORDS):  # the code: memestream.decode.OUT_OF_MEMORY
        return Outcome("oom", code, error[:300])
    if _UNCODED in error:
        return Outcome("uncoded", code, error[:300])
    return Outcome("coded", code, error[:300])


def run_one(data: bytes, feature_set: Any, asset: str | None = None) -> Outcome:
    """The shared input path on one input, in this process (the worker's body)."""
    from memestream.features import featurize_inputs

    try:
        out = featurize_inputs([data], feature_set, asset=asset)
    except MemoryError as exc:
        return Outcome("oom", None, f"MemoryError: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001 - the finding is the exception itself
        return Outcome("uncoded", None, f"{type(exc).__name__} escaped featurize_inputs: {exc}"[:300])
    return classify(out.errors[0], out.codes[0])


def allocation_failure(stderr: str) -> str | None:
    """The first line of a worker's stderr (for one case) saying an allocation failed, or None.

    libtiff's refusals that allocate nothing are not failures: "Out of memory reading of <tag>"
    right after "Memory not allocated" (a tag larger than the file), and "Failed to allocate
    memory for to read TIFF directory (0 elements" (an empty directory).
    """
    refused = _REFUSED_NOT_ALLOCATED in stderr
    for line in stderr.splitlines():
        if not any(w in line for w in _OOM_WORDS + _SWALLOWED):
            continue
        if (refused and "ut of memory" in line) or "(0 elements" in line:
            continue
        return line.strip()
    return None


def _reset_peak_rss() -> float | None:
    """Reset this process's resident high-water mark (VmHWM) to its current RSS; return that RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    return _vm_mib("VmRSS")


def _vm_mib(key: str = "VmPeak") -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def probe_image() -> bytes:
    """A real JPEG the worker featurizes before its first case (the ONNX session loads here)."""
    from bench.fuzz_corpus import _cv, _picture

    return _cv(_picture(96, 72), ".jpg")


def _worker(conn: Any, mem_cap_mib: int, feature_set: str, asset: str | None, stderr_path: str) -> None:
    """Child process: caps, warm-up, then one case per message until ``None``."""
    fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)  # C-level messages of the decoders land in this worker's log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    limit_memory(mem_cap_mib * 1024 * 1024)  # 0: no cap
    try:
        from memestream.features import get_feature_set

        fs = get_feature_set(feature_set)
        first = run_one(probe_image(), fs, asset)
        if first.kind != "featurized":
            raise RuntimeError(f"the probe image was not featurized: {first.kind} {first.message}")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("failed", f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(("ready", {"peak": _vm_mib("VmPeak"), "size": _vm_mib("VmSize")}))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        base = _reset_peak_rss()
        t0 = time.perf_counter()
        outcome = run_one(msg, fs, asset)
        outcome.seconds = round(time.perf_counter() - t0, 4)
        peak = _vm_mib("VmHWM") if base is not None else None
        outcome.rss_growth_mib = round(peak - base, 1) if peak is not None and base is not None else None
        conn.send(("done", asdict(outcome)))


@dataclass
class _Slot:
    number: int
    proc: Any = None
    conn: Any = None
    log: Path | None = None
    case: Any = None
    started: float = 0.0
    log_offset: int = 0


@dataclass
class PoolStats:
    started_workers: int = 0
    #: address space of each worker started, after its probe image: peak and current (MiB)
    vm_peak_mib: list[float] = field(default_factory=list)
    vm_size_mib: list[float] = field(default_factory=list)


class WorkerPool:
    """``workers`` child processes running :func:`run_one` under the caps; dead ones are replaced."""

    def __init__(self, workers: int, time_cap_s: float, mem_cap_mib: int, feature_set: str,
                 asset: str | None, log_dir: Path, rss_flag_mib: float = DEFAULT_RSS_FLAG_MIB) -> None:
        self.workers = max(1, workers)
        self.time_cap_s = time_cap_s
        self.mem_cap_mib = mem_cap_mib
        self.rss_flag_mib = rss_flag_mib
        self.feature_set = feature_set
        self.asset = asset
        self.log_dir = log_dir
        self.stats = PoolStats()
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no state inherited from the parent
        self._slots: list[_Slot] = []

    def __enter__(self) -> "WorkerPool":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._slots = [_Slot(k) for k in range(self.workers)]
        for slot in self._slots:
            self._start(slot)
        for slot in self._slots:
            self._wait_ready(slot)
        return self

    def __exit__(self, *exc: object) -> None:
        for slot in self._slots:
            self._stop(slot)

    def _start(self, slot: _Slot) -> None:
        slot.log = self.log_dir / f"worker-{slot.number}.log"
        parent, child = self._ctx.Pipe()
        slot.proc = self._ctx.Process(target=_worker, args=(child, self.mem_cap_mib, self.feature_set, self.asset, str(slot.log)),
                                      name=f"fuzz-worker-{slot.number}", daemon=True)
        slot.proc.start()
        child.close()
        slot.conn = parent
        slot.case = None
        self.stats.started_workers += 1

    def _wait_ready(self, slot: _Slot) -> None:
        if not slot.conn.poll(STARTUP_TIMEOUT_S):
            self._stop(slot)
            raise FuzzError(f"a fuzz worker did not start within {STARTUP_TIMEOUT_S:.0f} s (log: {slot.log})")
        try:
            status, detail = slot.conn.recv()
        except EOFError:
            status, detail = "failed", f"died at start with exit code {slot.proc.exitcode}"
        if status != "ready":
            self._stop(slot)
            raise FuzzError(f"a fuzz worker could not start under a {self.mem_cap_mib} MiB address-space cap "
                            f"(--mem-cap-mib) with feature set {self.feature_set}: {detail} (log: {slot.log})")
        if detail.get("peak") is not None:
            self.stats.vm_peak_mib.append(detail["peak"])
            self.stats.vm_size_mib.append(detail["size"])

    def _stop(self, slot: _Slot) -> None:
        if slot.proc is None:
            return
        if slot.proc.is_alive():
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            slot.proc.join(5)
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join()
        slot.conn.close()
        slot.proc = None

    def _restart(self, slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
        self._stop(slot)
        self._start(slot)
        self._wait_ready(slot)

    def _stderr_since(self, slot: _Slot) -> str:
        try:
            with open(slot.log, "rb") as fh:  # type: ignore[arg-type]
                fh.seek(slot.log_offset)
                return fh.read(65536).decode(errors="replace")
        except OSError:
            return ""

    def _memory_check(self, slot: _Slot, outcome: Outcome) -> Outcome:
        """An input that survived may still be a memory bomb: its worker's resident memory rose by
        more than ``rss_flag_mib``, or the decoder swallowed a refused allocation (its stderr says so)."""
        grew = outcome.rss_growth_mib
        if grew is not None and grew > self.rss_flag_mib:
            return Outcome("oom", outcome.code, f"resident memory grew by {grew:,.0f} MiB (--rss-flag-mib {self.rss_flag_mib:g}); "
                                                f"then: {outcome.message or outcome.kind}"[:300], outcome.seconds, grew)
        hit = allocation_failure(self._stderr_since(slot))
        if hit:
            return Outcome("oom", outcome.code, f"the decoder swallowed an allocation failure under the "
                                                f"{self.mem_cap_mib} MiB cap: {hit.strip()[:160]}", outcome.seconds, grew)
        return outcome

    def _died(self, slot: _Slot) -> Outcome:
        slot.proc.join(5)
        code = slot.proc.exitcode
        how = f"killed by {signal_name(-code)}" if code is not None and code < 0 else f"exited with code {code}"
        tail = self._stderr_since(slot).strip()[-2000:]
        kind = "oom" if any(w in tail for w in _OOM_WORDS) else "crash"
        last = tail.splitlines()[-1][:200] if tail else "no stderr"
        return Outcome(kind, None, f"worker {how}; stderr: {last}")

    def run(self, cases: Iterable[Any]) -> Iterator[tuple[Any, Outcome]]:
        """Yield ``(case, outcome)`` as cases finish (not in order); ``case.data`` is what runs."""
        todo = iter(cases)
        exhausted = False
        while True:
            for slot in self._slots:
                if slot.case is None and not exhausted:
                    case = next(todo, None)
                    if case is None:
                        exhausted = True
                        break
                    slot.case = case
                    slot.started = time.monotonic()
                    try:
                        slot.log_offset = slot.log.stat().st_size  # type: ignore[union-attr]
                    except OSError:
                        slot.log_offset = 0
                    try:
                        slot.conn.send(case.data)
                    except (BrokenPipeError, OSError):
                        pass  # found dead below
            busy = [s for s in self._slots if s.case is not None]
            if not busy:
                return
            now = time.monotonic()
            timeout = max(0.0, min(s.started + self.time_cap_s for s in busy) - now)
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout)
            for slot in busy:
                outcome = None
                if slot.conn.poll():
                    try:
                        _, result = slot.conn.recv()
                        outcome = Outcome(**result)
                    except (EOFError, OSError):
                        outcome = self._died(slot)
                elif not slot.proc.is_alive():
                    outcome = self._died(slot)
                elif time.monotonic() - slot.started >= self.time_cap_s:
                    slot.proc.kill()
                    outcome = Outcome("hang", None, f"still running after the {self.time_cap_s:g} s time cap (--time-cap)",
                                      round(time.monotonic() - slot.started, 2))
                if outcome is None:
                    continue
                if outcome.kind in ("featurized", "coded"):
                    outcome = self._memory_check(slot, outcome)
                case, slot.case = slot.case, None
                if outcome.kind in FINDINGS:  # a worker after a crash, hang or OOM is not trusted again
                    if outcome.kind in ("crash", "oom") and not outcome.seconds:
                        outcome.seconds = round(time.monotonic() - slot.started, 2)
                    self._restart(slot)
                yield case, outcome


# ---------------------------------------------------------------------------------------
# A run: cases, tallies, the table, the JSON and the findings' bytes
# ---------------------------------------------------------------------------------------
def _blank() -> dict[str, Any]:
    return {"cases": 0, **{k: 0 for k in KINDS}, "codes": Counter(), "max_seconds": 0.0, "max_rss_growth_mib": 0.0}


def tally(rows: dict[tuple[str, str], dict[str, Any]], case: Any, outcome: Outcome) -> None:
    row = rows.setdefault((case.format, case.mutation), _blank())
    row["cases"] += 1
    row[outcome.kind] += 1
    if outcome.kind == "coded":
        row["codes"][outcome.code] += 1
    row["max_seconds"] = max(row["max_seconds"], outcome.seconds)
    row["max_rss_growth_mib"] = max(row["max_rss_growth_mib"], outcome.rss_growth_mib or 0.0)


def totals(rows: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    total = _blank()
    for row in rows.values():
        for k in ("cases", *KINDS):
            total[k] += row[k]
        total["codes"].update(row["codes"])
        total["max_seconds"] = max(total["max_seconds"], row["max_seconds"])
        total["max_rss_growth_mib"] = max(total["max_rss_growth_mib"], row["max_rss_growth_mib"])
    return total


def format_table(report: dict[str, Any]) -> str:
    """Per format x mutation: cases and outcomes; then totals, coded errors by code and speed."""
    head = f"{'format':<6} {'mutation':<14} {'cases':>6} {'featurized':>10} {'coded':>6} {'crash':>5} {'hang':>5} {'oom':>5} {'uncoded':>7} {'max s':>6} {'max MiB':>7}"
    lines = [head, "-" * len(head)]

    def line(fmt: str, mut: str, r: dict[str, Any]) -> str:
        return (f"{fmt:<6} {mut:<14} {r['cases']:>6} {r['featurized']:>10} {r['coded']:>6} {r['crash']:>5} {r['hang']:>5} "
                f"{r['oom']:>5} {r['uncoded']:>7} {r['max_seconds']:>6.2f} {r['max_rss_growth_mib']:>7.0f}")

    for r in report["table"]:
        lines.append(line(r["format"], r["mutation"], r))
    lines.append("-" * len(head))
    lines.append(line("total", "", report["totals"]))
    codes = ", ".join(f"{c} {n}" for c, n in sorted(report["totals"]["codes"].items(), key=lambda kv: -kv[1]))
    lines.append(f"coded errors by code: {codes or 'none'}")
    lines.append(f"findings: {report['findings_count']} (crash {report['totals']['crash']}, hang {report['totals']['hang']}, "
                 f"oom {report['totals']['oom']}, uncoded {report['totals']['uncoded']})")
    c = report["config"]
    lines.append("max s: slowest case; max MiB: largest rise of a worker's resident memory during one case")
    lines.append(f"{report['cases']} cases in {report['duration_s']:.1f} s = {report['cases_per_s']:.1f} cases/s on "
                 f"{report['environment']['cpu_count']} cores ({c['workers']} workers, time cap {c['time_cap_s']:g} s, "
                 f"memory cap {c['mem_cap_mib']} MiB, rss flag {c['rss_flag_mib']:g} MiB, feature set {c['feature_set']}, seed {c['seed']})")
    return "\n".join(lines)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def run_fuzz(cases: int, seed: int, *, workers: int = 2, time_cap_s: float = DEFAULT_TIME_CAP_S,
             mem_cap_mib: int = DEFAULT_MEM_CAP_MIB, rss_flag_mib: float = DEFAULT_RSS_FLAG_MIB,
             feature_set: str | None = None, results_dir: str | os.PathLike[str] = "bench/results",
             formats: Sequence[str] | None = None, mutations: Sequence[str] | None = None, first: int = 0,
             save_findings: bool = True) -> dict[str, Any]:
    """Run cases ``first .. first + cases - 1`` of ``seed``; return the report (also written as JSON)."""
    from bench.common import environment, write_result_file
    from bench.fuzz_corpus import FORMATS, MUTATIONS, make_case, make_seeds
    from memestream.features import DEFAULT_FEATURE_SET, default_asset, get_feature_set

    feature_set = feature_set or DEFAULT_FEATURE_SET
    fs = get_feature_set(feature_set)
    asset = default_asset(feature_set) if fs.make_asset is not None else None  # built once, before the workers race
    formats = tuple(formats or FORMATS)
    mutations = tuple(mutations or MUTATIONS)
    started_utc = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = started_utc.replace("-", "").replace(":", "")
    out_dir = Path(results_dir)
    run_dir = out_dir / f"fuzz-{stamp}"
    seeds = make_seeds()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    findings: list[dict[str, Any]] = []
    slowest: list[dict[str, Any]] = []
    hungriest: list[dict[str, Any]] = []
    t0 = time.monotonic()
    done = 0
    every = max(100, cases // 20)
    with WorkerPool(workers, time_cap_s, mem_cap_mib, feature_set, asset, run_dir / "workers", rss_flag_mib) as pool:
        t_pool = time.monotonic()
        generated = (make_case(seeds, seed, i, mutations, formats) for i in range(first, first + cases))
        for case, outcome in pool.run(generated):
            done += 1
            tally(rows, case, outcome)
            entry = {"index": case.index, "format": case.format, "variant": case.variant, "mutation": case.mutation,
                     "detail": case.detail[:300], "bytes": len(case.data), "kind": outcome.kind, "code": outcome.code,
                     "message": outcome.message, "seconds": outcome.seconds, "rss_growth_mib": outcome.rss_growth_mib}
            slowest = sorted(slowest + [entry], key=lambda e: -e["seconds"])[:10]
            hungriest = sorted(hungriest + [entry], key=lambda e: -(e["rss_growth_mib"] or 0.0))[:10]
            if outcome.kind in FINDINGS:
                if save_findings:
                    path = run_dir / "findings" / f"{_safe(case.name)}-{outcome.kind}.bin"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(case.data)
                    entry["file"] = str(path)
                findings.append(entry)
                log.warning("finding: case %d %s/%s %s -> %s: %s", case.index, case.format, case.variant, case.mutation,
                            outcome.kind, outcome.message[:160])
            if done % every == 0:
                rate = done / (time.monotonic() - t_pool)
                log.info("%d/%d cases, %.1f cases/s, %d findings", done, cases, rate, len(findings))
        stats = pool.stats
    duration = time.monotonic() - t0
    table = []
    for (fmt, mut), row in sorted(rows.items(), key=lambda kv: (FORMATS.index(kv[0][0]), MUTATIONS.index(kv[0][1]))):
        table.append({"format": fmt, "mutation": mut, **row, "codes": dict(row["codes"]), "max_seconds": round(row["max_seconds"], 3),
                      "max_rss_growth_mib": round(row["max_rss_growth_mib"], 1)})
    total = totals(rows)
    total["codes"] = dict(total["codes"])
    report = {
        "tool": "bench.fuzz",
        "started_utc": started_utc,
        "config": {"cases": cases, "first": first, "seed": seed, "workers": workers, "time_cap_s": time_cap_s,
                   "mem_cap_mib": mem_cap_mib, "rss_flag_mib": rss_flag_mib, "feature_set": feature_set, "formats": list(formats), "mutations": list(mutations)},
        "environment": environment(),
        "cases": done,
        "duration_s": round(duration, 2),
        "cases_per_s": round(done / duration, 2) if duration > 0 else None,
        "seeds": len(seeds),
        "workers_started": stats.started_workers,
        # what the cap must leave room for: the interpreter, OpenCV and the ONNX session after one image
        "worker_vm_after_probe_mib": {"peak_max": max(stats.vm_peak_mib, default=None),
                                      "size_max": max(stats.vm_size_mib, default=None)},
        "table": table,
        "totals": total,
        "findings_count": len(findings),
        "findings": findings,
        "slowest": slowest,
        "most_memory": hungriest,
        "findings_dir": str(run_dir / "findings") if findings and save_findings else None,
    }
    path = write_result_file(report, out_dir, "fuzz-", started_utc)
    report["json"] = str(path)
    return report


def replay(paths: Sequence[str], *, workers: int, time_cap_s: float, mem_cap_mib: int, feature_set: str | None,
           log_dir: Path, rss_flag_mib: float = DEFAULT_RSS_FLAG_MIB) -> list[tuple[str, Outcome]]:
    """Run saved inputs (files, or folders of ``*.bin``) through the same pool; ``(path, outcome)`` each."""
    from memestream.features import DEFAULT_FEATURE_SET, default_asset, get_feature_set

    @dataclass
    class _File:
        name: str
        data: bytes
        format: str = "file"
        mutation: str = "replay"

    files: list[_File] = []
    for p in map(Path, paths):
        for f in (sorted(p.glob("*.bin")) if p.is_dir() else [p]):
            files.append(_File(str(f), f.read_bytes()))
    feature_set = feature_set or DEFAULT_FEATURE_SET
    asset = default_asset(feature_set) if get_feature_set(feature_set).make_asset is not None else None
    with WorkerPool(workers, time_cap_s, mem_cap_mib, feature_set, asset, log_dir, rss_flag_mib) as pool:
        return sorted(((c.name, o) for c, o in pool.run(files)), key=lambda t: t[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help=f"cases to run (default: {DEFAULT_CASES})")
    parser.add_argument("--seed", type=int, default=0, help="run seed: case i of seed S is always the same bytes (default: 0)")
    parser.add_argument("--first", type=int, default=0, help="index of the first case (rerun a slice of a run)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: min(2, cores))")
    parser.add_argument("--time-cap", type=float, default=DEFAULT_TIME_CAP_S,
                        help=f"seconds per case before it counts as a hang and its worker is killed (default: {DEFAULT_TIME_CAP_S:g})")
    parser.add_argument("--mem-cap-mib", type=int, default=DEFAULT_MEM_CAP_MIB,
                        help=f"address-space cap of each worker, RLIMIT_AS, in MiB; 0: none (default: {DEFAULT_MEM_CAP_MIB})")
    parser.add_argument("--rss-flag-mib", type=float, default=DEFAULT_RSS_FLAG_MIB,
                        help="a case whose worker's resident memory rises by more than this many MiB is an OOM finding, "
                             f"even when it survives (default: {DEFAULT_RSS_FLAG_MIB:g})")
    parser.add_argument("--feature-set", default=None, help="feature set whose extraction runs after decode (default: the default set)")
    parser.add_argument("--formats", default=None, help="comma-separated subset of jpeg,png,gif,bmp,webp,tiff")
    parser.add_argument("--mutations", default=None, help="comma-separated subset of seed,flip,truncate,zero,duplicate,lie,splice,magic_garbage,bomb")
    parser.add_argument("--results-dir", default="bench/results", help="where the JSON and the findings go (default: bench/results)")
    parser.add_argument("--replay", nargs="+", metavar="PATH", help="run saved inputs (files or folders of *.bin) instead of generating cases")
    return parser


def _subset(value: str | None, allowed: Sequence[str], flag: str) -> tuple[str, ...] | None:
    if not value:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad:
        from memestream.errors import ConfigError

        raise ConfigError(f"{flag}: unknown {', '.join(bad)}; expected some of {','.join(allowed)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    from bench.fuzz_corpus import FORMATS, MUTATIONS
    from memestream.errors import MemestreamError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.replay:
            results = replay(args.replay, workers=args.workers, time_cap_s=args.time_cap, mem_cap_mib=args.mem_cap_mib,
                             feature_set=args.feature_set, log_dir=Path(args.results_dir) / "fuzz-replay",
                             rss_flag_mib=args.rss_flag_mib)
            for name, o in results:
                print(f"{o.kind:<10} {o.code or '-':<16} {o.seconds:7.3f}s {o.rss_growth_mib or 0:7.0f} MiB  {name}  {o.message[:120]}")
            return 1 if any(o.kind in FINDINGS for _, o in results) else 0
        report = run_fuzz(args.cases, args.seed, workers=args.workers, time_cap_s=args.time_cap, mem_cap_mib=args.mem_cap_mib,
                          rss_flag_mib=args.rss_flag_mib, feature_set=args.feature_set, results_dir=args.results_dir, first=args.first,
                          formats=_subset(args.formats, FORMATS, "--formats"), mutations=_subset(args.mutations, MUTATIONS, "--mutations"))
    except (MemestreamError, FuzzError) as exc:
        print(f"bench.fuzz: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if report["findings"]:
        print(f"findings' bytes: {report['findings_dir']} (rerun them with --replay)")
    print(f"results written to {report['json']}")
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
