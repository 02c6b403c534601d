"""meme-stream over Kafka reads with Spark's Kafka source (spark-sql-kafka-0-10 at the installed PySpark's
exact version, in every session: memestream.jars). Without its jars (not cached, no network) meme-stream
says so in one line naming the artifact and the cache; with them, a run is exactly once across kill -9.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic

ROOT = Path(__file__).resolve().parents[2]


def test_missing_jars_offline_is_one_clear_line(tmp_path, trained_model_dir, offline_mvn):
    """A fresh process (no session to borrow) whose jar cache is empty and whose Maven is offline."""
    bindir = offline_mvn("org.apache.spark:spark-sql-kafka-0-10_2.13:pom:4.1.1")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "MEMESTREAM_JAR_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1",
                           "--topic", "t", "--model", str(trained_model_dir), "--data-dir", str(tmp_path / "d"),
                           "--available-now"], env=env, capture_output=True, text=True, timeout=300)
    err = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("fetching ")]
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("meme-stream: error: "), err
    assert "org.apache.spark:spark-sql-kafka-0-10_2.13" in err[0] or "io.delta:delta-spark" in err[0]
    assert str(tmp_path / "cache") in err[0]


def test_the_kafka_impl_flag_is_gone():
    from streaming.cli import build_parser

    assert "--kafka-impl" not in build_parser().format_help()


def _stream(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    """meme-stream, or with ``kill_at="stage:batch"`` the same run SIGKILLed there (tests.streaming.crash_stream)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    entry = ["-m", "streaming.cli"] if kill_at is None else ["-m", "tests.streaming.crash_stream", kill_at]
    return subprocess.run([sys.executable, *entry, *args], env=env, capture_output=True, timeout=900)


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_stream_is_exactly_once_across_kill9(kafka_broker, tmp_path, trained_model_dir,
                                                                          image_bytes, bad_payloads):
    from streaming.schema import read_table

    topic = "memes-spark-reader"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=2)
    payloads = [image_bytes(["doom", "cats"][i % 2], 60 + i) for i in range(8)]
    payloads += [bad_payloads["truncated_jpeg"], bad_payloads["text"]]
    with ImagePublisher(PublisherConfig(kafka_broker.bootstrap, topic)) as pub:
        for i, data in enumerate(payloads):
            pub.publish(data, {"n": str(i)})
        pub.flush()
    common = ["--source", "kafka", "--bootstrap-servers", kafka_broker.bootstrap, "--topic", topic,
              "--model", str(trained_model_dir), "--max-offsets-per-trigger", "3", "--available-now", "--quiet"]
    args = [*common, "--data-dir", str(tmp_path / "spark")]
    crashed = _stream(args, kill_at="files:1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    done = _stream(args)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    preds = read_table(tmp_path / "spark" / "output", "predictions").to_pandas()
    assert len(preds) == len(payloads) and preds["origin"].is_unique  # exactly once across the kill
    assert sorted(dict(h)["n"] for h in preds["headers"]) == sorted(str(i) for i in range(len(payloads)))
    quarantine = read_table(tmp_path / "spark" / "output", "quarantine").to_pandas()
    assert sorted(quarantine["error_code"]) == ["not_an_image", "truncated"]
