"""Publisher API and meme-publish CLI against a real Apache Kafka broker."""
from __future__ import annotations

import csv
import hashlib

import pytest

from memestream.errors import BrokerError, DataError
from memestream.kafka import KafkaSecurity
from memestream.testing import free_port
from producers.kafka import ImagePublisher, PublisherConfig, iter_image_files, main


def consume_all(bootstrap: str, topic: str, partitions: int = 1, max_bytes: int = 20 * 2**20) -> list:
    """Every record of ``topic`` (all partitions), read with a plain kafka-python consumer."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=max_bytes, fetch_max_bytes=4 * max_bytes)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    out, empty = [], 0
    while empty < 3:
        batch = consumer.poll(timeout_ms=500)
        empty = 0 if batch else empty + 1
        for recs in batch.values():
            out.extend(recs)
    consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def test_config_repr_masks_password():
    cfg = PublisherConfig("h:1", "t", security=KafkaSecurity("SASL_SSL", "PLAIN", "alice", "s3cret-pw"))
    assert "s3cret-pw" not in repr(cfg)
    assert "***" in repr(cfg)
    assert cfg.producer_kwargs()["sasl_plain_password"] == "s3cret-pw"
    assert cfg.producer_kwargs()["max_request_size"] > cfg.max_message_bytes


def test_iter_image_files_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for rel in ["a/x.jpg", "a/.h.png", "a/.hidden/y.png", "posts.csv", "b.PNG"]:
        (tmp_path / rel).write_bytes(b"1")
    found = sorted(p.relative_to(tmp_path).as_posix() for p, _ in iter_image_files([tmp_path]))
    assert found == ["a/x.jpg", "b.PNG"]
    assert [p.name for p, _ in iter_image_files([tmp_path / "posts.csv"])] == ["posts.csv"]


@pytest.mark.kafka
def test_publish_keys_headers_and_delivery(kafka_broker, kafka_topic, image_bytes, tmp_path):
    img = image_bytes("doom", 1, "jpeg")
    path = tmp_path / "meme.png"
    path.write_bytes(image_bytes("cats", 2, "png"))
    with ImagePublisher(PublisherConfig(kafka_broker.bootstrap, kafka_topic)) as pub:
        md = pub.publish(img, {"title": "Rip and tear ✓", "subreddit": "Doom"}).get(timeout=10)
        pub.publish_file(path, {"source": "test"}, key="k-2")
        pub.flush()
    assert md.topic == kafka_topic and md.offset == 0
    recs = consume_all(kafka_broker.bootstrap, kafka_topic)
    assert [r.value for r in recs] == [img, path.read_bytes()]
    assert recs[0].key.decode() == hashlib.sha256(img).hexdigest()
    assert dict(recs[0].headers) == {"title": "Rip and tear ✓".encode(), "subreddit": b"Doom"}
    assert recs[1].key == b"k-2"
    assert dict(recs[1].headers) == {"filename": b"meme.png", "source": b"test"}


@pytest.mark.kafka
def test_over_limit_image_refused_before_sending(kafka_broker, kafka_topic):
    with ImagePublisher(PublisherConfig(kafka_broker.bootstrap, kafka_topic, max_message_bytes=1000)) as pub:
        with pytest.raises(DataError, match=r"image of 1001 bytes exceeds the message limit of 1000 bytes"):
            pub.publish(b"x" * 1001)
        pub.publish(b"y" * 1000).get(timeout=10)
    assert [len(r.value) for r in consume_all(kafka_broker.bootstrap, kafka_topic)] == [1000]


@pytest.mark.kafka
def test_missing_topic_is_a_clear_error(kafka_broker):
    cfg = PublisherConfig(kafka_broker.bootstrap, "no-such-topic-xyz", timeout_s=3)
    with ImagePublisher(cfg) as pub, pytest.raises(BrokerError, match="no-such-topic-xyz"):
        pub.publish(b"abc")


@pytest.mark.kafka
def test_cli_posts_csv_headers_and_per_file_failures(kafka_broker, image_bytes, tmp_path, capsys):
    root = tmp_path / "scrape"
    (root / "doom").mkdir(parents=True)
    a, b, big = root / "doom" / "a.jpg", root / "doom" / "b.png", root / "doom" / "big.png"
    a.write_bytes(image_bytes("doom", 3, "jpeg"))
    b.write_bytes(image_bytes("doom", 4, "png"))
    big.write_bytes(b"\x89PNG" + b"\x00" * 300_000)
    posts = tmp_path / "posts.csv"
    with open(posts, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "file", "sha256", "subreddit", "id", "title", "ups", "num_comments", "created_utc", "url"])
        w.writerow(["doom", "doom/a.jpg", "", "Doom", "p1", "by path", "5", "1", "1584663653.0", "https://x/a"])
        w.writerow(["doom", "elsewhere/zz.png", hashlib.sha256(b.read_bytes()).hexdigest(), "Doom", "p2",
                    "by sha", "7", "2", "1584663654.0", "https://x/b"])
    rc = main(["--bootstrap-servers", kafka_broker.bootstrap, "--topic", "cli-topic", "--create-topic",
               "--posts-csv", str(posts), "--header", "batch=one", "--max-message-bytes", "262144", "-q", str(root)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("failed:") == 1 and f"failed: {big}" in err and "exceeds the message limit of 262144 bytes" in err
    recs = consume_all(kafka_broker.bootstrap, "cli-topic")
    heads = {dict(r.headers)["filename"].decode(): {k: v.decode() for k, v in r.headers}
             for r in recs}
    assert set(heads) == {"a.jpg", "b.png"}
    assert heads["a.jpg"]["title"] == "by path" and heads["a.jpg"]["batch"] == "one"
    assert heads["b.png"]["title"] == "by sha" and heads["b.png"]["id"] == "p2"


def test_cli_unreachable_broker_one_line(tmp_path, capsys):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"\xff\xd8\xff")
    rc = main(["--bootstrap-servers", f"127.0.0.1:{free_port()}", "--topic", "t", "--timeout", "2", str(img)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert "expected a Kafka broker at 127.0.0.1:" in err and "Traceback" not in err
