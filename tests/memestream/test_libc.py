"""The C library calls (memestream.libc) on this machine: they work where Linux/glibc has them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memestream import libc

LINUX_GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, not yet reaped


@pytest.mark.skipif(not LINUX_GLIBC, reason="malloc_trim and prctl are Linux/glibc calls")
def test_heap_trimmer_runs():
    trim = libc.heap_trimmer()
    assert trim is not None
    trim()  # returns the heap's free pages; must not raise


@pytest.mark.skipif(not LINUX_GLIBC, reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_with_the_parent_death_signal_dies_with_its_parent():
    parent = (
        "import signal, subprocess, sys\n"
        "from memestream.libc import parent_death_signal\n"
        "child = subprocess.Popen(['sleep', '120'], preexec_fn=parent_death_signal(signal.SIGTERM))\n"
        "print(child.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        assert not _gone(child)
        proc.kill()  # SIGKILL: no Python cleanup runs, only the kernel's signal reaches the child
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the child outlived its parent"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
