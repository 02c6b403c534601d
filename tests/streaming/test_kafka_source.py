"""Spark's Kafka source (spark-sql-kafka-0-10, in every session) through streaming.sources against a real
Apache Kafka broker: option mapping, the pre-flight check, each record once, admission control,
a broker restart."""
from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest

from memestream.errors import BrokerError
from memestream.kafka import KafkaSecurity
from memestream.testing import free_port
from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic
from streaming.config import KafkaSourceConfig
from streaming.sources import check_topic, kafka_source


def publish(bootstrap: str, topic: str, payloads: list[bytes], first: int = 0) -> None:
    """Send all payloads, then one flush: the producer batches them (one produce request, many records)."""
    with ImagePublisher(PublisherConfig(bootstrap, topic)) as pub:
        for i, data in enumerate(payloads, start=first):
            pub.publish(data, {"i": str(i)})
        pub.flush()


def topic_rows(spark, cfg: KafkaSourceConfig):
    """The connector's rows reshaped like the stream's input (content, kafka_key, headers, topic, partition, offset, event_time)."""
    from pyspark.sql import functions as F

    src = kafka_source(cfg)
    raw = spark.readStream.format(src.format).options(**src.options).load()
    return raw.select(
        F.col("value").alias("content"),
        F.col("key").cast("string").alias("kafka_key"),
        F.map_from_entries(F.transform(F.coalesce(F.col("headers"), F.array()),
                                       lambda h: F.struct(h["key"], h["value"].cast("string")))).alias("headers"),
        "topic", "partition", "offset", F.col("timestamp").alias("event_time"),
    )


def run_available_now(spark, cfg: KafkaSourceConfig, tmp_path, name: str = "run") -> list[int]:
    """One availableNow run into a parquet sink (same checkpoint each call); rows per micro-batch."""
    q = (topic_rows(spark, cfg).writeStream.format("parquet")
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


def test_options_map_to_the_connector_and_security_to_kafka_settings(tmp_path):
    cfg = KafkaSourceConfig("h1:9092,h2:9092", "memes", starting_offsets="latest", max_offsets_per_trigger=7,
                            security=KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "scraper", 's3cr"t',
                                                   ssl_cafile=str(tmp_path / "ca.pem")))
    opts = cfg.spark_options()
    assert {k: opts[k] for k in ("kafka.bootstrap.servers", "subscribe", "startingOffsets", "maxOffsetsPerTrigger",
                                 "failOnDataLoss", "includeHeaders")} == {
        "kafka.bootstrap.servers": "h1:9092,h2:9092", "subscribe": "memes", "startingOffsets": "latest",
        "maxOffsetsPerTrigger": "7", "failOnDataLoss": "true", "includeHeaders": "true"}
    assert int(opts["kafka.max.partition.fetch.bytes"]) > cfg.max_message_bytes
    assert opts["kafka.security.protocol"] == "SASL_SSL" and opts["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert opts["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="scraper" password="s3cr\\"t";')
    assert opts["kafka.ssl.truststore.type"] == "PEM" and opts["kafka.ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert not any(k.startswith(("kafka.group", "kafka.enable.auto")) for k in opts)  # the checkpoint is the position
    plain = KafkaSourceConfig("h:1", "t", security=KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p")).spark_options()
    assert plain["kafka.sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    (tmp_path / "c.pem").write_text("CERT")
    (tmp_path / "k.pem").write_text("KEY")
    mtls = KafkaSecurity("SSL", ssl_certfile=str(tmp_path / "c.pem"), ssl_keyfile=str(tmp_path / "k.pem"))
    assert {k: v for k, v in mtls.java_client_options().items() if "keystore" in k} == {
        "kafka.ssl.keystore.type": "PEM", "kafka.ssl.keystore.certificate.chain": "CERT", "kafka.ssl.keystore.key": "KEY"}
    assert "s3cr" not in repr(cfg)


def test_the_password_is_redacted_in_the_query_plan(spark, capsys):
    cfg = KafkaSourceConfig("127.0.0.1:1", "t", security=KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "hunter2-secret"))
    src = kafka_source(cfg, check=False)
    df = spark.readStream.format(src.format).options(**src.options).load()
    df.explain(True)
    plan = capsys.readouterr().out
    assert "kafka.sasl.jaas.config" in plan and "hunter2" not in plan, plan
    assert "hunter2" not in spark.sparkContext.getConf().toDebugString()


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
    cfg = KafkaSourceConfig(bootstrap, topic)
    q = (topic_rows(spark, cfg).writeStream.format("parquet")
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


