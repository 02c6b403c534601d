"""The memestream-kafka Python Data Source against a real Apache Kafka broker and a real Spark session."""
from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest

from memestream.errors import BrokerError
from memestream.testing import free_port
from producers.broker import start_broker
from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic
from streaming import kafka_source as ks
from streaming.config import KafkaSourceConfig
from streaming.kafka_source import KafkaStreamReader, check_topic, spark_kafka_available, spread_limit, topic_source
from streaming.query import open_stream


def publish(bootstrap: str, topic: str, payloads: list[bytes], first: int = 0) -> None:
    """Send all payloads, then one flush: the producer batches them (one produce request, many records)."""
    with ImagePublisher(PublisherConfig(bootstrap, topic)) as pub:
        for i, data in enumerate(payloads, start=first):
            pub.publish(data, {"i": str(i)})
        pub.flush()


def run_available_now(spark, cfg: KafkaSourceConfig, tmp_path, name: str = "run") -> list[int]:
    """One availableNow run into a parquet sink (same checkpoint each call); rows per micro-batch."""
    q = (open_stream(spark, topic_source(spark, cfg)).writeStream.format("parquet")
         .option("path", str(tmp_path / "out")).option("checkpointLocation", str(tmp_path / "ckpt"))
         .trigger(availableNow=True).queryName(f"{name}_{uuid.uuid4().hex[:6]}").start())
    assert q.awaitTermination(300), "availableNow query did not finish"
    assert q.exception() is None, q.exception()
    return [p["numInputRows"] for p in q.recentProgress if p["numInputRows"]]


def big_noisy_png(seed: int = 5) -> bytes:
    import cv2

    noise = np.random.default_rng(seed).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", noise)
    assert ok
    return buf.tobytes()


def test_spread_limit_is_fair():
    assert spread_limit({0: 100, 1: 2, 2: 100}, 10) == {0: 4, 1: 2, 2: 4}
    assert spread_limit({0: 1, 1: 1}, 10) == {0: 1, 1: 1}
    assert sum(spread_limit({0: 7, 1: 7, 2: 7}, 5).values()) == 5


def test_partitions_split_ranges_and_new_partitions():
    reader = KafkaStreamReader(KafkaSourceConfig("h:1", "t", max_records_per_task=4))
    parts = reader.partitions({"0": 0, "1": 5}, {"0": 10, "1": 5, "2": 3})
    assert [(p.partition, p.start, p.end) for p in parts] == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (2, 0, 3)]


def test_spark_kafka_connector_probe(spark):
    # pip-installed PySpark ships without spark-sql-kafka; the probe must say so, not raise.
    assert spark_kafka_available(spark) is False


@pytest.mark.kafka
def test_latest_offset_does_not_trust_reported_end(kafka_broker, kafka_topic):
    from kafka import KafkaConsumer, TopicPartition
    from pyspark.sql.streaming.datasource import ReadAllAvailable

    publish(kafka_broker.bootstrap, kafka_topic, [b"m%d" % i for i in range(20)])
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    tp = TopicPartition(kafka_topic, 0)
    reported = consumer.end_offsets([tp])[tp]
    consumer.close()
    reader = KafkaStreamReader(KafkaSourceConfig(kafka_broker.bootstrap, kafka_topic))
    try:
        assert reader.initialOffset() == {"0": 0}
        # Kafka reports 20; tansu reported 1 (base offset of the last batch + 1): the probe must not care.
        assert reader.latestOffset({"0": 0}, ReadAllAvailable()) == {"0": 20}, f"broker reported {reported}"
        publish(kafka_broker.bootstrap, kafka_topic, [b"late"], first=20)
        assert reader.latestOffset({"0": 20}, ReadAllAvailable()) == {"0": 21}
        rows = list(reader.read(reader.partitions({"0": 0}, {"0": 21})[0]))
    finally:
        reader.stop()
    assert [r[5] for r in rows] == list(range(21))
    assert rows[7][0] == b"m7" and rows[7][2] == {"i": "7"} and rows[20][0] == b"late"


@pytest.mark.kafka
def test_missing_topic_and_unreachable_broker_are_clear(kafka_broker):
    with pytest.raises(BrokerError, match=r"topic 'nope-[0-9a-f]+' on Kafka broker 127\.0\.0\.1:\d+"):
        check_topic(KafkaSourceConfig(kafka_broker.bootstrap, f"nope-{uuid.uuid4().hex[:6]}"))
    with pytest.raises(BrokerError, match="expected a Kafka broker at 127.0.0.1"):
        check_topic(KafkaSourceConfig(f"127.0.0.1:{free_port()}", "t", connect_timeout_s=1))


@pytest.mark.kafka
def test_stream_reads_each_record_once_and_resumes_from_checkpoint(spark, kafka_broker, kafka_topic, image_bytes, tmp_path):
    payloads = [image_bytes("doom", i, "jpeg" if i % 2 else "png") for i in range(6)]
    payloads += [big_noisy_png(), b"\xff\xd8\xff corrupt jpeg", b""]
    assert len(payloads[6]) > 1024 * 1024
    publish(kafka_broker.bootstrap, kafka_topic, payloads)
    cfg = KafkaSourceConfig(kafka_broker.bootstrap, kafka_topic)

    assert sum(run_available_now(spark, cfg, tmp_path)) == len(payloads)
    rows = sorted(spark.read.parquet(str(tmp_path / "out")).collect(), key=lambda r: r.offset)
    assert [r.offset for r in rows] == list(range(len(payloads)))
    assert [bytes(r.content) for r in rows] == payloads
    assert all(r.kafka_key == hashlib.sha256(p).hexdigest() for r, p in zip(rows, payloads))
    assert [r.headers["i"] for r in rows] == [str(i) for i in range(len(payloads))]
    assert {(r.topic, r.partition) for r in rows} == {(kafka_topic, 0)}
    assert all(r.event_time is not None for r in rows)

    more = [image_bytes("cats", 100 + i, "jpeg") for i in range(4)]
    publish(kafka_broker.bootstrap, kafka_topic, more, first=len(payloads))
    assert sum(run_available_now(spark, cfg, tmp_path)) == len(more)  # only the new ones
    offsets = [r.offset for r in spark.read.parquet(str(tmp_path / "out")).select("offset").collect()]
    assert sorted(offsets) == list(range(len(payloads) + len(more)))


@pytest.mark.kafka
def test_three_partitions_with_admission_control(spark, kafka_broker, tmp_path):
    from kafka import KafkaProducer

    topic = f"memes3-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_broker.bootstrap, topic, partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20)
    for i in range(17):
        producer.send(topic, b"v%d" % i, partition=[0, 0, 0, 1, 2][i % 5])
    producer.flush()
    producer.close()

    cfg = KafkaSourceConfig(kafka_broker.bootstrap, topic, max_offsets_per_trigger=5)
    batches = run_available_now(spark, cfg, tmp_path)
    assert sum(batches) == 17 and len(batches) >= 4 and max(batches) <= 5, batches
    rows = spark.read.parquet(str(tmp_path / "out")).select("partition", "offset", "content").collect()
    assert len({(r.partition, r.offset) for r in rows}) == 17
    assert {r.partition for r in rows} == {0, 1, 2}
    assert sorted(bytes(r.content) for r in rows) == sorted(b"v%d" % i for i in range(17))


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_mid_stream_exactly_once(spark, restartable_broker, tmp_path):
    bootstrap = restartable_broker.bootstrap
    topic = "restart-memes"
    ensure_topic(bootstrap, topic)
    publish(bootstrap, topic, [b"before-%d" % i for i in range(6)])
    cfg = KafkaSourceConfig(bootstrap, topic, stall_timeout_s=30)
    q = (open_stream(spark, topic_source(spark, cfg)).writeStream.format("parquet")
         .option("path", str(tmp_path / "out")).option("checkpointLocation", str(tmp_path / "ckpt"))
         .trigger(processingTime="500 milliseconds").start())
    try:
        q.processAllAvailable()
        restartable_broker.kill()  # crash, then come back on the same port with the same data
        restartable_broker.start()
        publish(bootstrap, topic, [b"after-%d" % i for i in range(4)], first=6)
        try:
            q.processAllAvailable()
            recovered = True
        except Exception as exc:  # noqa: BLE001 - failing is allowed, failing unclearly is not
            recovered = False
            print("query failed with:", str(exc)[:1500])
            assert topic in str(exc) or "Kafka" in str(exc), exc
    finally:
        q.stop()
    print(f"broker restart: query recovered without failing: {recovered}")
    if not recovered:
        run_available_now(spark, cfg, tmp_path)
    rows = spark.read.parquet(str(tmp_path / "out")).select("offset", "content").collect()
    assert sorted(r.offset for r in rows) == list(range(10))
    assert sorted(bytes(r.content) for r in rows) == sorted([b"before-%d" % i for i in range(6)] +
                                                            [b"after-%d" % i for i in range(4)])


@pytest.mark.kafka
def test_broker_gone_fails_clearly_with_topic_partition_offset(tmp_path):
    from pyspark.sql.streaming.datasource import ReadAllAvailable

    with start_broker(log_dir=tmp_path) as broker:
        ensure_topic(broker.bootstrap, "gone")
        publish(broker.bootstrap, "gone", [b"a", b"b", b"c"])
        reader = KafkaStreamReader(KafkaSourceConfig(broker.bootstrap, "gone", stall_timeout_s=2, connect_timeout_s=1))
        assert reader.latestOffset(reader.initialOffset(), ReadAllAvailable()) == {"0": 3}
        broker.stop()
        with pytest.raises(BrokerError, match=r"topic gone: Kafka broker 127\.0\.0\.1:\d+ unreachable"):
            reader.latestOffset({"0": 3}, ReadAllAvailable())
        with pytest.raises(BrokerError, match=r"topic gone partition 0 at offset 1"):
            list(reader.read(reader.partitions({"0": 1}, {"0": 3})[0]))
        reader.stop()


@pytest.mark.kafka
def test_read_range_reuses_a_healthy_consumer_and_drops_a_broken_one(kafka_broker, kafka_topic):
    """Tasks in one worker share a pooled consumer (no reconnect per micro-batch); a
    consumer whose reads failed is closed, never handed to the next task."""
    publish(kafka_broker.bootstrap, kafka_topic, [b"r%d" % i for i in range(6)])
    cfg = KafkaSourceConfig(kafka_broker.bootstrap, kafka_topic)
    ks._POOL.clear()
    assert [r[0] for r in ks.read_range(cfg, 0, 0, 3)] == [b"r0", b"r1", b"r2"]
    assert len(ks._POOL) == 1
    pooled = next(iter(ks._POOL.values()))
    assert [r[0] for r in ks.read_range(cfg, 0, 3, 6)] == [b"r3", b"r4", b"r5"]
    assert next(iter(ks._POOL.values())) is pooled  # the same client served the second range

    rows = ks.read_range(cfg, 0, 4, 6)
    assert next(rows)[0] == b"r4"
    rows.close()  # the consumer stopped mid-range (task cancelled): not returned to the pool
    assert ks._POOL == {}
    assert [r[0] for r in ks.read_range(cfg, 0, 5, 6)] == [b"r5"]
    assert len(ks._POOL) == 1 and next(iter(ks._POOL.values())) is not pooled
    ks._POOL.clear()
