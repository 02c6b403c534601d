"""Poison-pill defence: a time cap on every input's work, and a process of its own for suspects.

A native decoder (libjpeg, libpng, libwebp, libtiff, giflib inside OpenCV) or the ONNX and OCR
runtimes can meet an input that crashes the Python worker (a segfault, an abort, an OOM kill)
or hangs it. Spark then fails the task, the micro-batch and, after a restart, the same batch
again: one file would stop the stream for good. Two pieces keep it going:

- :func:`time_cap` bounds a stage's work in a Spark worker with an interval timer whose
  ``SIGALRM`` keeps its default action: the kernel ends the process at the deadline, even when
  native code holds the GIL. A hang becomes a failed task within the cap, like a crash.
- :func:`memestream.classify.score_isolated` scores a batch again with **each input in a child process** of its
  own (:class:`Sandbox`; one child, reused until an input kills it). An input whose child
  dies gets ``decoder_crashed``, one that runs past the cap ``decoder_timeout``; every other
  input gets the row it would have had. The stream runs it after a batch failed in a worker
  (``streaming.batch``), so a poison pill costs one failed attempt and one isolated pass.

The child is a fresh interpreter (``python -m memestream.isolation``), not a fork of the
worker: the worker's runtimes hold threads and sessions that a fork would copy half-alive.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence


#: Default seconds one input may take in any stage (decode, embed, OCR) before its worker is ended.
DEFAULT_TIME_CAP_S = 10.0
#: Default address-space cap of a Python worker and of a sandbox child (``--worker-memory``). A
#: worker with the default model and OCR loaded maps ~1.6 GB (RSS ~0.4 GB); the rest is room
#: for one batch's images, and an allocation past it fails as a coded error for its input.
DEFAULT_WORKER_MEMORY = 4 << 30
#: Seconds a fresh child may take to import the runtimes and load the model before its first input.
CHILD_START_S = 120.0
#: The codes a poison input gets in the quarantine table.
DECODER_CRASHED = "decoder_crashed"
DECODER_TIMEOUT = "decoder_timeout"


@contextlib.contextmanager
def time_cap(seconds: float | None) -> Iterator[None]:
    """End this process (``SIGALRM``, default action) when the block runs longer than ``seconds``.

    Only for processes that may die: a Spark Python worker or a sandbox child, never a driver.
    ``None`` or 0: no cap. The timer is process-wide, so blocks do not nest."""
    if not seconds:
        yield
        return
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # only the main thread may; the worker's UDFs run there
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)


def limit_memory(max_bytes: int | None) -> None:
    """Cap this process's address space (``RLIMIT_AS``): an allocation above it fails with
    MemoryError/``cv2.error`` (a coded error) instead of the kernel's OOM killer taking the
    machine's biggest process. None: no cap."""
    if not max_bytes:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    if soft == resource.RLIM_INFINITY or max_bytes < soft:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))  # the soft limit only: a later, larger cap may raise it


#: What a failed Spark job's error says when a Python worker or a whole executor died under it:
#: a crash, an abort, an OOM kill, or :func:`time_cap` ending a hang.
_WORKER_DIED = ("Python worker exited", "ExecutorLostFailure")


def worker_died(exc: BaseException) -> bool:
    """Whether a failed job lost a Python worker or an executor (maybe to a poison input),
    rather than failing for a reason an isolated retry would only repeat."""
    text = str(exc)
    return any(marker in text for marker in _WORKER_DIED)


def failure_line(exc: BaseException) -> str:
    """The part of a failed job's error that says what died (Py4J's own first line names only
    the call, "An error occurred while calling o588.collectToPython.")."""
    from memestream.cli import one_line

    for line in str(exc).splitlines():
        for marker in _WORKER_DIED:
            if marker in line:
                return line[line.index(marker):].split(". Consider", 1)[0][:300]
    return one_line(exc)


# ---------------------------------------------------------------------------------------
# The child: a loop over length-prefixed pickles on an inherited socket
# ---------------------------------------------------------------------------------------
def _send(sock: socket.socket, obj: Any) -> None:
    from pyspark import cloudpickle  # the scoring spec holds functions and arrays: cloudpickle ships it

    data = cloudpickle.dumps(obj)
    sock.sendall(struct.pack(">Q", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    (n,) = struct.unpack(">Q", _recv_exact(sock, 8))
    return pickle.loads(_recv_exact(sock, n))


def _child_main(fd: int) -> None:
    """Receive ``(work, memory cap)``, say ready, then answer each input with ``("ok", result)``
    or ``("error", message)`` (an exception that is not the input's fault: the caller raises it)."""
    sock = socket.socket(fileno=fd)
    work, memory = _recv(sock)
    limit_memory(memory)
    work.warm_up()
    _send(sock, ("ready", None))
    while True:
        try:
            value = _recv(sock)
        except EOFError:
            return
        try:
            _send(sock, ("ok", work(value)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            _send(sock, ("error", f"{type(exc).__name__}: {exc}"))


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; ``signal 77`` for a number the platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class SandboxError(RuntimeError):
    """The child could not start, or its work failed in a way that is not the input's fault."""


@dataclass(frozen=True)
class Outcome:
    """One input's fate in the sandbox: ``result`` when it finished, else the code and why."""

    result: Any = None
    code: str | None = None
    detail: str | None = None


class SandboxWork:
    """What a child runs per input; subclasses are pickled to the child once."""

    def warm_up(self) -> None:  # load models before the first input, so its time cap is its own
        """Called once in the child before the first input."""

    def __call__(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Sandbox:
    """A child interpreter that runs :class:`SandboxWork` on one input at a time, each within
    ``cap`` seconds; restarted after an input kills it or runs over."""

    def __init__(self, work: SandboxWork, cap: float, memory: int | None = None) -> None:
        self.work = work
        self.cap = float(cap)
        self.memory = memory
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        #: children started (the first, and one after each crash or timeout)
        self.starts = 0

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "memestream.isolation", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
        )
        theirs.close()
        self._sock = ours
        self.starts += 1
        _send(ours, (self.work, self.memory))
        kind, _ = self._wait(CHILD_START_S)
        if kind != "ready":
            status = self._stop()
            raise SandboxError(f"the isolation process did not start ({status if kind == 'closed' else 'no answer in %.0fs' % CHILD_START_S})")

    def _wait(self, seconds: float) -> tuple[str, Any]:
        """The child's next message; ``("closed", None)`` when it died (its end of the socket
        closed), ``("silent", None)`` when it said nothing for ``seconds``."""
        assert self._sock is not None
        self._sock.settimeout(seconds)
        try:
            return _recv(self._sock)
        except socket.timeout:
            return ("silent", None)
        except (EOFError, OSError):
            return ("closed", None)

    def _stop(self) -> str:
        """End the child; return how it ended ("killed by SIGSEGV", "exit status 3")."""
        proc, self._proc = self._proc, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        return f"killed by {signal_name(-code)}" if code < 0 else f"exit status {code}"

    def run(self, value: Any) -> Outcome:
        """Run the work on ``value`` in the child: its result, or why there is none."""
        if self._proc is None:
            self._start()
        assert self._sock is not None
        started = time.monotonic()
        try:
            _send(self._sock, value)
        except OSError:
            pass  # the child is gone: _wait sees it
        kind, payload = self._wait(self.cap)
        if kind == "silent":
            self._stop()
            return Outcome(code=DECODER_TIMEOUT, detail=f"decoding and scoring this input ran past the {self.cap:g}s cap (--time-cap)")
        if kind == "closed":
            elapsed = time.monotonic() - started
            status = self._stop()
            return Outcome(code=DECODER_CRASHED, detail=f"the process decoding this input died ({status}) after {elapsed:.2f}s")
        if kind == "error":
            raise SandboxError(f"scoring failed in the isolation process, not because of one input: {payload}")
        return Outcome(result=payload)

    def close(self) -> None:
        self._stop()


class ArrowWork(SandboxWork):
    """One input through an Arrow UDF body (``fn(one-element array) -> one-row struct``) in a
    sandbox child; ``warm`` (optional) loads what the body needs before the first input."""

    def __init__(self, fn: Callable[[Any], Any], input_type: Any, warm: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.input_type = input_type
        self.warm = warm

    def warm_up(self) -> None:
        if self.warm is not None:
            self.warm()

    def __call__(self, value: Any) -> Any:
        import pyarrow as pa

        return self.fn(pa.array([value], type=self.input_type))


def rows_isolated(fn: Callable[[Any], Any], values: Sequence[Any], input_type: Any, result_type: Any,
                  failed_row: Callable[[Any, str, str], dict[str, Any]], cap: float, memory: int | None = None,
                  warm: Callable[[], None] | None = None) -> Any:
    """An Arrow UDF body's result for ``values``, computed one input per sandbox child: the rows
    ``fn`` gives, except that an input that kills its child or runs past ``cap`` gets
    ``failed_row(value, code, detail)`` (a dict of the result's fields)."""
    import pyarrow as pa

    def report(i: int, outcome: Outcome) -> None:
        print(f"memestream: isolated a poison input ({outcome.code}: {outcome.detail}): {str(values[i])[:200]}",
              file=sys.stderr, flush=True)

    outcomes = run_isolated(ArrowWork(fn, input_type, warm), values, cap, memory, on_failure=report)
    rows = [o.result if o.code is None else pa.array([failed_row(v, o.code, o.detail or "")], type=result_type)
            for v, o in zip(values, outcomes)]
    return pa.concat_arrays(rows) if rows else pa.array([], type=result_type)


def run_isolated(work: SandboxWork, values: Sequence[Any], cap: float, memory: int | None = None,
                 on_failure: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
    """Each of ``values`` through ``work`` in a sandbox child, in order."""
    outcomes = []
    with Sandbox(work, cap, memory) as box:
        for i, value in enumerate(values):
            outcome = box.run(value)
            if outcome.code is not None and on_failure is not None:
                on_failure(i, outcome)
            outcomes.append(outcome)
    return outcomes


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
