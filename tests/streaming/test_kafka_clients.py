"""Any Kafka client can feed the stream: confluent-kafka (librdkafka) and kafka-python, as scrapers use them.

The records carry the scraper's own keys and headers, and one is a 5 MB image (over Kafka's
1 MB defaults on every hop): the stream must classify every record and keep key and headers.
"""
from __future__ import annotations

import numpy as np
import pytest

from producers.kafka import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES, ensure_topic
from streaming.query import run_stream
from streaming.schema import read_table
from tests.streaming.conftest import make_config

pytestmark = pytest.mark.kafka


def five_mb_png() -> bytes:
    import cv2

    noise = np.random.default_rng(12).integers(0, 256, (1300, 1300, 3), dtype=np.uint8)  # incompressible
    ok, buf = cv2.imencode(".png", noise)
    assert ok
    return buf.tobytes()


def publish_with_confluent(bootstrap: str, topic: str, records: list[tuple[str, bytes, dict[str, str]]]) -> None:
    """A librdkafka producer as a scraper would configure it: acks=all, limit raised for big images."""
    from confluent_kafka import Producer

    errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "message.max.bytes": DEFAULT_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES,
    })

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=list(headers.items()), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0, "confluent-kafka could not deliver every record"
    assert errors == []


def publish_with_kafka_python(bootstrap: str, topic: str, records: list[tuple[str, bytes, dict[str, str]]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             max_request_size=DEFAULT_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES)
    futures = [producer.send(topic, value=value, key=key.encode(), headers=[(k, v.encode()) for k, v in h.items()])
               for key, value, h in records]
    producer.flush()
    for fut in futures:
        fut.get(timeout=60)
    producer.close()


def test_librdkafka_client_talks_to_the_broker(kafka_broker):
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=15)
    assert list(metadata.brokers) == [1]  # ApiVersions + Metadata parsed by librdkafka (tansu failed here)


def test_confluent_and_kafka_python_publishers_reach_the_tables(spark, kafka_broker, tmp_path, trained_model_dir, image_bytes):
    topic = "memes-any-client"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=2)
    big = five_mb_png()
    assert len(big) > 5_000_000
    confluent = [(f"post-c{i}", image_bytes(["doom", "cats", "animal_crossing"][i % 3], 700 + i, "jpeg"),
                  {"client": "confluent-kafka", "post": f"c{i}", "subreddit": "r/memes"}) for i in range(4)]
    confluent.append(("post-big", big, {"client": "confluent-kafka", "post": "big", "subreddit": "r/memes"}))
    kpython = [(f"post-k{i}", image_bytes(["cats", "doom"][i % 2], 800 + i, "png"),
                {"client": "kafka-python", "post": f"k{i}", "subreddit": "r/memes"}) for i in range(4)]
    publish_with_confluent(kafka_broker.bootstrap, topic, confluent)
    publish_with_kafka_python(kafka_broker.bootstrap, topic, kpython)

    from streaming.config import KafkaSourceConfig

    cfg = make_config(tmp_path, trained_model_dir, source="kafka", checkpoint=tmp_path / "ck",
                      kafka=KafkaSourceConfig(kafka_broker.bootstrap, topic, max_offsets_per_trigger=5))
    summary = run_stream(spark, cfg)
    sent = confluent + kpython
    assert summary.rows == len(sent) and summary.errors == 0

    preds = read_table(tmp_path / "output", "predictions").to_pandas()
    assert len(preds) == len(sent) and preds["origin"].is_unique
    assert preds["error"].isna().all() and preds["label"].notna().all(), preds[["origin", "error"]]
    by_key = {row.kafka_key: row for row in preds.itertuples()}
    assert set(by_key) == {key for key, _, _ in sent}
    for key, value, headers in sent:
        row = by_key[key]
        assert dict(row.headers) == headers, key
        assert row.size_bytes == len(value), key
    assert by_key["post-big"].size_bytes > 5_000_000 and by_key["post-big"].label is not None
