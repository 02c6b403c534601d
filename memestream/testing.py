"""What the tests, the benchmarks and ``meme-broker`` share to run the project's programs as processes.

- :func:`start_group` / :func:`stop_group`: a process (a stream, a broker, a Spark daemon) as
  the leader of its own process group; stopping it asks the leader first (a stream finishes
  its batch, a broker shuts down in order), then SIGKILLs the whole group after a timeout,
  so no JVM or Python worker it started outlives it.
- :func:`script_command`, :func:`run_command`, :func:`run_meme_train`: a console script run by
  this interpreter, and a failure that says which command failed, its exit code and the end of
  its output.
- :func:`free_port`.
- :func:`poison_hook` and its marker payloads: "a decoder" that crashes or hangs, for the
  poison-pill tests and ``python -m bench.poison`` (``MEMESTREAM_TEST_DECODER_HOOK``).

It lives in the package, not under ``tests/``, because the benchmarks (``python -m bench``) and
the broker use it as well.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

#: Marker payloads for :func:`poison_hook`: an abort (SIGABRT, like a failed assertion in C), a
#: segfault (a read of address 0), a hang (far longer than any time cap).
POISON_ABORT = b"MEMESTREAM-TEST-POISON:abort"
POISON_SEGFAULT = b"MEMESTREAM-TEST-POISON:segfault"
POISON_HANG = b"MEMESTREAM-TEST-POISON:hang"
#: The value of ``MEMESTREAM_TEST_DECODER_HOOK`` (memestream.decode.TEST_HOOK_ENV) that turns it on.
POISON_HOOK = "memestream.testing:poison_hook"


def poison_hook(data: bytes) -> None:
    """A decoder bug on demand: bytes starting with a marker kill or hang the process that
    decodes them, as a native decoder's bug would; other bytes pass untouched. Set in the
    environment before Spark starts, so its Python workers and isolation children have it."""
    if data.startswith(POISON_ABORT):
        os.abort()
    if data.startswith(POISON_SEGFAULT):
        import ctypes

        ctypes.string_at(0)
    if data.startswith(POISON_HANG):
        time.sleep(3600)


#: Lines of output a failure or a stop reports.
TAIL_LINES = 30


class CommandFailed(RuntimeError):
    """A subprocess exited with a non-zero code; the message ends with the tail of its output."""

    def __init__(self, what: str, returncode: int | None, tail: str) -> None:
        self.what, self.returncode, self.tail = what, returncode, tail
        super().__init__(f"{what} failed (exit code {returncode}):\n{tail}" if tail else
                         f"{what} failed (exit code {returncode}) with no output")


@dataclass(frozen=True)
class Stopped:
    """How a process group ended: ``graceful`` when the leader exited on the first signal in time."""

    exit_code: int | None
    graceful: bool
    seconds: float
    output_tail: str = ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(text: str | bytes | None, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-blank lines of ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = [ln for ln in (text or "").splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def file_tail(path: str | os.PathLike[str], lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-blank lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return tail(fh.read(), lines)
    except OSError:
        return ""


def script_command(script: str, *args: str) -> list[str]:
    """``script`` (a console script of this project, e.g. ``meme-stream``) run by this interpreter.

    Its entry point comes from the installed package's metadata, so the command works
    whether or not the script's folder is on ``PATH`` and runs exactly what the script runs.
    """
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == script]
    if not found:
        raise LookupError(f"expected a console script {script!r} in the installed package, found none (pip install -e .)")
    module, _, func = found[0].value.partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())", *args]


def run_command(cmd: Sequence[str], what: str | None = None, *, timeout: float | None = None,
                env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` to the end (output captured as text); :class:`CommandFailed` unless it exits with 0."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, cwd=cwd)
    if done.returncode != 0:
        raise CommandFailed(what or " ".join(map(str, cmd[:4])), done.returncode,
                            tail(done.stderr) or tail(done.stdout))
    return done


def meme_train_command(data: str | os.PathLike[str], model_dir: str | os.PathLike[str], *extra: str) -> list[str]:
    """``meme-train --data DATA --model-dir MODEL_DIR EXTRA...`` run by this interpreter."""
    return script_command("meme-train", "--data", str(data), "--model-dir", str(model_dir), *extra)


def run_meme_train(data: str | os.PathLike[str], model_dir: str | os.PathLike[str], extra: Sequence[str] = (), *,
                   timeout: float | None = 3600, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Train into ``model_dir``; :class:`CommandFailed` with meme-train's last output lines when it fails."""
    return run_command(meme_train_command(data, model_dir, *extra), f"meme-train --data {data}", timeout=timeout, env=env)


def start_group(cmd: Sequence[str], *, log_path: str | os.PathLike[str] | None = None, append: bool = False,
                **popen: Any) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (its own process group).

    With ``log_path``, stdout and stderr go to that file (``append`` keeps what is there);
    other keyword arguments go to :class:`subprocess.Popen` (``env``, ``cwd``, ``stdout=PIPE``...).
    """
    if log_path is None:
        return subprocess.Popen(list(cmd), start_new_session=True, **popen)
    with open(log_path, "ab" if append else "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    proc.log_path = Path(log_path)  # type: ignore[attr-defined] - read by stop_group for the tail
    return proc


def _pipe_tail(stream: IO | None, lines: int) -> str:
    """What is left in a pipe of a stopped process, without blocking (a process outside the
    group could still hold the pipe open)."""
    if stream is None or stream.closed:
        return ""
    chunks: list[bytes] = []
    try:
        fd = stream.fileno()
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except (OSError, ValueError):  # BlockingIOError: nothing more for now
        pass
    return tail(b"".join(chunks), lines)


def stop_group(proc: subprocess.Popen, timeout: float = 30.0, sig: int = signal.SIGTERM,
               lines: int = TAIL_LINES) -> Stopped:
    """Send ``sig`` to the leader and wait up to ``timeout`` s; then SIGKILL its whole process group.

    The group kill runs in every case: it takes down the leader if it hung and whatever it
    left behind (a JVM, Python workers) if it did not. ``proc`` must come from
    :func:`start_group` (its own group): this never signals the caller's group.
    """
    t0 = time.monotonic()
    graceful = True
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            graceful = False
    if proc.pid != os.getpgrp():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:  # not reaped even after SIGKILL: a stuck kernel call
        code = None
    log_path = getattr(proc, "log_path", None)
    if log_path is not None:
        output = file_tail(log_path, lines)
    else:
        output = "\n".join(t for t in (_pipe_tail(proc.stdout, lines), _pipe_tail(proc.stderr, lines)) if t)
    return Stopped(code, graceful, round(time.monotonic() - t0, 1), output)
