"""Ctrl-C is a clean stop at any moment of ``meme-stream``, starting up included."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_ctrl_c_while_starting_stops_cleanly(tmp_path, trained_model_dir):
    """PySpark's own SIGINT handler (installed with the SparkContext) calls into the JVM from
    inside the main thread's JVM call: a Ctrl-C in the seconds between the session and the
    query failed with a reentrant Py4J error and a traceback. The stream's flag takes it now."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streaming.cli", "--data-dir", str(tmp_path / "data"), "--model", str(trained_model_dir)]
    log = tmp_path / "stream.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while "scoring with model" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # a subprocess's output: polled, there is no event to wait on
        proc.send_signal(signal.SIGINT)  # the session and tables exist; the warm-up and the query come next
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "scoring with model" in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    # (PySpark's worker daemon may print a BrokenPipe traceback of its own as the JVM stops it)
    assert "Py4J" not in text and "reentrant" not in text and "meme-stream: error" not in text, text[-3000:]
    assert "SIGINT received while starting: not starting the query" in text, text[-3000:]
