"""Poison pills through the whole stream: an input that crashes or hangs its Python worker is
quarantined as ``decoder_crashed``/``decoder_timeout``, every other input gets its one row, and
the stream goes on (memestream.testing.poison_hook plays the native decoder's bug)."""
from __future__ import annotations

import pytest

from memestream.errors import PoisonFlood
from memestream.isolation import DECODER_CRASHED, DECODER_TIMEOUT
from producers.kafka import ensure_topic
from streaming.batch import PoisonBudget
from streaming.query import run_stream
from streaming.schema import read_table
from memestream import testing as poison
from tests.streaming.conftest import make_config
from tests.streaming.test_kafka_stream import _kafka_cfg, _publish

CLASSES = ["doom", "cats", "animal_crossing"]


def _tables(root):
    preds = read_table(root / "output", "predictions").to_pandas()
    quarantine = read_table(root / "output", "quarantine").to_pandas()
    batches = read_table(root / "output", "batches").to_pandas()
    return preds, quarantine, batches


def test_a_crashing_input_is_quarantined_and_the_folder_stream_goes_on(spark, stream_root, trained_model_dir, image_bytes):
    inbox = stream_root / "inbox"
    for i in range(100):
        (inbox / f"good_{i:03d}.jpg").write_bytes(image_bytes(CLASSES[i % 3], 1000 + i))
    (inbox / "good_050_poison.jpg").write_bytes(poison.POISON_ABORT + b" the rest of a file")
    summary = run_stream(spark, make_config(stream_root, trained_model_dir, max_files_per_trigger=60))
    preds, quarantine, batches = _tables(stream_root)
    assert summary.rows == 101 and len(preds) == 101 and preds["origin"].is_unique
    assert preds["label"].notna().sum() == 100  # every good image labelled, exactly once
    bad = preds[preds["error"].notna()]
    assert bad["origin"].tolist() == ["good_050_poison.jpg"] and bad["error_code"].tolist() == [DECODER_CRASHED]
    assert "SIGABRT" in bad["error"].iloc[0]
    assert quarantine["origin"].tolist() == ["good_050_poison.jpg"]
    assert bytes(quarantine["payload"].iloc[0]).startswith(poison.POISON_ABORT)
    assert len(batches) == summary.batches >= 2 and batches["rows"].sum() == 101  # batches after the poison ran too
    assert [p.name.split("-", 1)[1] for p in (stream_root / "quarantine").iterdir()] == ["good_050_poison.jpg"]
    assert len(list((stream_root / "archive").iterdir())) == 100


def test_a_hanging_input_is_cut_at_the_time_cap(spark, stream_root, trained_model_dir, image_bytes):
    inbox = stream_root / "inbox"
    for i in range(6):
        (inbox / f"good_{i}.png").write_bytes(image_bytes(CLASSES[i % 3], 2000 + i, "png"))
    (inbox / "good_3_hang.png").write_bytes(poison.POISON_HANG)
    summary = run_stream(spark, make_config(stream_root, trained_model_dir, max_files_per_trigger=10, time_cap_s=3.0))
    preds, quarantine, _ = _tables(stream_root)
    assert summary.rows == 7 and preds["label"].notna().sum() == 6
    row = preds[preds["origin"] == "good_3_hang.png"].iloc[0]
    assert row["error_code"] == DECODER_TIMEOUT and "3s cap" in row["error"]
    assert quarantine["origin"].tolist() == ["good_3_hang.png"]


@pytest.mark.kafka
def test_a_crashing_input_on_the_kafka_source(spark, kafka_broker, tmp_path, trained_model_dir, image_bytes):
    topic = "memes-poison"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=2)
    payloads = [image_bytes(CLASSES[i % 3], 3000 + i) for i in range(100)]
    payloads.insert(40, poison.POISON_SEGFAULT)
    _publish(kafka_broker.bootstrap, topic, payloads)
    summary = run_stream(spark, _kafka_cfg(tmp_path, trained_model_dir, kafka_broker.bootstrap, topic, max_offsets_per_trigger=60))
    preds, quarantine, batches = _tables(tmp_path)
    assert summary.rows == 101 and len(preds) == 101 and preds["origin"].is_unique
    assert preds["label"].notna().sum() == 100
    bad = preds[preds["error"].notna()]
    assert bad["error_code"].tolist() == [DECODER_CRASHED] and "SIGSEGV" in bad["error"].iloc[0]
    assert dict(bad["headers"].iloc[0])["n"] == "40"
    assert bytes(quarantine["payload"].iloc[0]) == poison.POISON_SEGFAULT
    assert batches["rows"].sum() == 101 and len(batches) >= 2


def test_the_poison_budget_stops_a_flood_with_one_line():
    budget = PoisonBudget(limit=2, window_s=3600)
    budget.admit(1, RuntimeError("Python worker exited unexpectedly (crashed)"))
    budget.admit(2, RuntimeError("Python worker exited unexpectedly (crashed)"))
    with pytest.raises(PoisonFlood, match=r"batch 3 failed in a worker: 3 such batches within 60 minutes \(at most 2, --max-isolations\)"):
        budget.admit(3, RuntimeError("Python worker exited unexpectedly (crashed)\n\tat org.apache.spark..."))
    old = PoisonBudget(limit=1, window_s=0.0)
    old.admit(1, RuntimeError("x"))
    old.admit(2, RuntimeError("x"))  # the first one left the window
