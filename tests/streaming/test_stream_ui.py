"""meme-stream starts the Spark UI (with its Structured Streaming tab) unless --no-ui."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from memestream.spark import UI_CONF
from memestream.testing import start_group, stop_group
from streaming.cli import build_parser


def test_no_ui_flag_and_env_fallback(monkeypatch):
    monkeypatch.delenv("MEMESTREAM_NO_UI", raising=False)
    assert build_parser().parse_args([]).no_ui is False
    assert build_parser().parse_args(["--no-ui"]).no_ui is True
    monkeypatch.setenv("MEMESTREAM_NO_UI", "1")
    assert build_parser().parse_args([]).no_ui is True


def test_ui_bookkeeping_is_bounded():
    for key in ("spark.ui.retainedJobs", "spark.ui.retainedStages", "spark.sql.ui.retainedExecutions",
                "spark.sql.streaming.ui.retainedQueries", "spark.sql.streaming.ui.retainedProgressUpdates"):
        assert int(UI_CONF[key]) <= 100, key
    assert int(UI_CONF["spark.ui.retainedTasks"]) <= 2000


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode("utf-8", "replace")


@pytest.mark.slow  # a JVM of its own: ~20 s idle, a minute on a loaded machine
def test_stream_serves_the_spark_ui_and_prints_its_url(tmp_path, trained_model_dir, image_bytes):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"img{i}.jpg").write_bytes(image_bytes("doom", 500 + i))
    env = {k: v for k, v in os.environ.items() if k != "MEMESTREAM_NO_UI"}
    cmd = [sys.executable, "-m", "streaming.cli", "--data-dir", str(tmp_path), "--model", str(trained_model_dir),
           "--trigger", "0.5", "--quiet"]
    proc = start_group(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        url = None
        deadline = time.monotonic() + 300
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Spark UI: (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "no 'Spark UI:' line in:\n" + "".join(lines[-20:])
        assert re.match(r"http://(localhost|127\.0\.0\.1|[\w.-]+):4[01]\d\d$", url.rstrip("/")), url  # 4040 or next free
        # wait until the stream has committed its first batch, then look at the tab
        deadline = time.monotonic() + 300
        while not list((tmp_path / "output" / "_commits").glob("*/*.json")) and time.monotonic() < deadline:
            time.sleep(0.5)
        page = _get(url.rstrip("/") + "/StreamingQuery/")
        assert "Streaming Query" in page and "meme" in page.lower()
        apps = _get(url.rstrip("/") + "/api/v1/applications")
        assert "meme-stream-folder" in apps
    finally:
        stop_group(proc, 120)
