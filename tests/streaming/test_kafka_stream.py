"""Kafka through the whole meme-stream query: same tables, same quarantine, exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic
from streaming.config import KafkaSourceConfig
from streaming.query import run_stream
from streaming.schema import label_totals, read_table
from streaming.sinks import DeltaOutput
from tests.streaming.conftest import make_config
from tests.streaming.test_kafka_source import big_noisy_png

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def _publish(bootstrap, topic, payloads, start=0):
    with ImagePublisher(PublisherConfig(bootstrap, topic)) as pub:
        for i, data in enumerate(payloads, start):
            pub.publish(data, {"n": str(i), "subreddit": "r/test"})
        pub.flush()


def _kafka_cfg(root, model_dir, bootstrap, topic, **kw):
    return make_config(root, model_dir, source="kafka", kafka=KafkaSourceConfig(bootstrap, topic, **kw),
                       checkpoint=root / "ck-kafka")


def test_kafka_images_reach_the_same_tables_exactly_once(spark, kafka_broker, tmp_path, trained_model_dir, image_bytes, bad_payloads):
    topic = "memes-e2e-3p"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=3)
    good = [image_bytes(["doom", "cats", "animal_crossing"][i % 3], 500 + i) for i in range(9)]
    payloads = good + [big_noisy_png(), bad_payloads["truncated_jpeg"], bad_payloads["text"], b""]
    assert len(payloads[9]) > 1024 * 1024
    _publish(kafka_broker.bootstrap, topic, payloads)
    cfg = _kafka_cfg(tmp_path, trained_model_dir, kafka_broker.bootstrap, topic, max_offsets_per_trigger=4)
    first = run_stream(spark, cfg)
    assert first.rows == len(payloads) and first.batches >= 4  # admission control: <= 4 records a batch
    batches = read_table(tmp_path / "output", "batches").to_pandas()
    assert batches["rows"].sum() == len(payloads) and batches["rows"].max() <= 4, batches["rows"].tolist()
    assert len(batches) == first.batches and batches["batch_id"].is_unique

    preds = read_table(tmp_path / "output", "predictions").to_pandas()
    assert len(preds) == len(payloads) and preds["origin"].is_unique
    assert set(preds["source"]) == {"kafka"}
    assert {o.split("/")[0] for o in preds["origin"]} == {topic} and {o.split("/")[1] for o in preds["origin"]} == {"0", "1", "2"}
    assert all(dict(h)["subreddit"] == "r/test" for h in preds["headers"])
    by_n = {dict(h)["n"]: row for h, (_, row) in zip(preds["headers"], preds.iterrows())}
    assert by_n["9"]["error"] is None and by_n["9"]["label"] is not None  # the >1 MB image is classified
    assert by_n["10"]["error_code"] == "truncated" and by_n["11"]["error_code"] == "not_an_image"
    assert by_n["12"]["error_code"] == "empty"
    quarantine = read_table(tmp_path / "output", "quarantine").to_pandas()
    assert sorted(quarantine["origin"]) == sorted(preds[preds["error"].notna()]["origin"])
    assert bytes(quarantine.set_index("origin").loc[by_n["10"]["origin"], "payload"]) == bad_payloads["truncated_jpeg"]

    # stop, publish more, restart with the same checkpoint: only the new ones
    more = [image_bytes("doom", 900 + i) for i in range(3)]
    _publish(kafka_broker.bootstrap, topic, more, start=len(payloads))
    second = run_stream(spark, cfg)
    assert second.rows == len(more)
    preds = read_table(tmp_path / "output", "predictions").to_pandas()
    assert len(preds) == len(payloads) + len(more) and preds["origin"].is_unique
    labelled = preds[preds["label"].notna()].groupby("label").size().to_dict()
    assert label_totals(tmp_path / "output") == labelled  # the batches table's totals, read without Spark
    assert DeltaOutput(tmp_path / "output", writer="reader").label_totals(spark) == labelled  # and with Spark


@pytest.mark.slow
def test_kafka_stream_killed_mid_batch_then_restarted(kafka_broker, tmp_path, trained_model_dir, image_bytes):
    topic = "memes-kill9"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=2)
    payloads = [image_bytes("cats", 40 + i) for i in range(10)]
    _publish(kafka_broker.bootstrap, topic, payloads)
    flags = ["--source", "kafka", "--bootstrap-servers", kafka_broker.bootstrap,
             "--topic", topic, "--data-dir", str(tmp_path), "--model", str(trained_model_dir),
             "--max-offsets-per-trigger", "3", "--available-now", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    crashed = subprocess.run([sys.executable, "-m", "tests.streaming.crash_stream", "files:1", *flags], env=env,
                             capture_output=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    done = subprocess.run([sys.executable, "-m", "streaming.cli", *flags], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    preds = read_table(tmp_path / "output", "predictions").to_pandas()
    assert len(preds) == len(payloads) and preds["origin"].is_unique and preds["error"].isna().all()
