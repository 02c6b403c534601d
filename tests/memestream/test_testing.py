"""memestream.testing: process groups stop completely, failures say what failed and how."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys

import pytest

from memestream.testing import (
    CommandFailed,
    free_port,
    run_command,
    run_meme_train,
    script_command,
    start_group,
    stop_group,
)

#: A leader that starts a child ignoring SIGTERM, reports both ready, then waits; argument "1"
#: makes the leader ignore SIGTERM too.
FAMILY = """
import signal, subprocess, sys, time
if sys.argv[1] == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child ready', flush=True); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _start_family(leader_ignores: bool) -> tuple[subprocess.Popen, int]:
    proc = start_group([sys.executable, "-c", FAMILY, "1" if leader_ignores else "0"], stdout=subprocess.PIPE, text=True)
    lines = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
    assert "child ready" in lines, lines  # the child's SIGTERM handler is in place
    (child,) = (int(x) for x in lines if x.isdigit())
    assert os.getpgid(child) == proc.pid != os.getpgrp()  # one group of its own
    return proc, child


def _exits(pid_fd: int) -> bool:
    """True once the process behind ``pid_fd`` has ended (a pidfd turns readable then)."""
    readable, _, _ = select.select([pid_fd], [], [], 30)
    return bool(readable)


def test_a_child_that_ignores_sigterm_is_killed_with_its_group():
    proc, child = _start_family(leader_ignores=False)
    child_fd = os.pidfd_open(child)
    try:
        stopped = stop_group(proc, timeout=20)
        assert stopped.graceful and stopped.exit_code == -signal.SIGTERM  # the leader obeyed SIGTERM...
        assert _exits(child_fd), "the child that ignores SIGTERM outlived stop_group"  # ...the child needed SIGKILL
    finally:
        os.close(child_fd)


def test_a_leader_that_ignores_sigterm_is_killed_after_the_timeout():
    proc, child = _start_family(leader_ignores=True)
    child_fd = os.pidfd_open(child)
    try:
        stopped = stop_group(proc, timeout=0.5)
        assert not stopped.graceful and stopped.exit_code == -signal.SIGKILL
        assert _exits(child_fd)
    finally:
        os.close(child_fd)


def test_stop_reports_the_tail_of_the_log(tmp_path):
    log = tmp_path / "out.log"
    proc = start_group([sys.executable, "-c", "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"], log_path=log)
    proc.wait(60)
    stopped = stop_group(proc)
    assert stopped.exit_code == 3 and stopped.graceful
    lines = stopped.output_tail.splitlines()
    assert lines[-1] == "line 99" and "line 0" not in lines and len(lines) == 30


def test_a_failing_meme_train_raises_with_its_output_tail(tmp_path):
    with pytest.raises(CommandFailed) as failed:
        run_meme_train(tmp_path / "no-such-folder", tmp_path / "models", ["--no-plots"], timeout=300)
    exc = failed.value
    assert exc.returncode == 2 and "meme-train" in str(exc)
    assert "meme-train: error:" in exc.tail and "does not exist" in exc.tail, exc.tail
    assert not (tmp_path / "models").exists()


def test_run_command_returns_the_output_or_names_the_failure():
    assert run_command([sys.executable, "-c", "print('fine')"]).stdout == "fine\n"
    with pytest.raises(CommandFailed, match=r"(?s)the step failed \(exit code 4\):\nwhy it broke"):
        run_command([sys.executable, "-c", "import sys; print('why it broke', file=sys.stderr); sys.exit(4)"], "the step")


def test_script_command_runs_the_console_scripts_entry_point():
    cmd = script_command("meme-broker", "--help")
    assert cmd[0] == sys.executable and "from producers.broker import main" in cmd[2]
    assert "usage: meme-broker" in run_command(cmd).stdout
    with pytest.raises(LookupError, match="no-such-script"):
        script_command("no-such-script")


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
