"""Kafka security for real: SASL_PLAINTEXT (SCRAM-SHA-512) and SSL against the local Apache Kafka.

One broker for the module with three listeners (PLAINTEXT for set-up, SASL_PLAINTEXT, SSL); the
CA and the server certificate are generated in the test (tests/kafka_security.py). meme-publish
and meme-stream get the right credentials (records flow, every one classified) and wrong ones
(one clear line, the password nowhere: not in output, --help, or the query plan).
"""
from __future__ import annotations

import uuid

import pytest

from memestream.errors import BrokerError
from producers.kafka import KafkaSecurity, ensure_topic
from tests.kafka_security import make_pki, secure_broker_settings

pytestmark = pytest.mark.kafka

USER, PASSWORD, WRONG = "scraper", "Sup3r-s3cret-pw", "Wr0ng-pw-xyz"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    from memestream.errors import EnvironmentProblem
    from memestream.testing import free_port
    from producers.broker import start_broker

    root = tmp_path_factory.mktemp("kafka-secure")
    pki = make_pki(root / "pki")
    ports = {"SASL_PLAINTEXT": free_port(), "SSL": free_port()}
    try:
        broker = start_broker(data_dir=root / "broker", extra_properties=secure_broker_settings(pki),
                              extra_listeners=ports, scram_users={USER: PASSWORD})
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))
    broker.pki = pki
    broker.sasl = f"127.0.0.1:{ports['SASL_PLAINTEXT']}"
    broker.ssl = f"127.0.0.1:{ports['SSL']}"
    yield broker
    broker.close()


def _sasl_flags(broker) -> list[str]:
    return ["--bootstrap-servers", broker.sasl, "--security-protocol", "SASL_PLAINTEXT",
            "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", USER, "--timeout", "5"]


def _ssl_flags(broker, cafile) -> list[str]:
    return ["--bootstrap-servers", broker.ssl, "--security-protocol", "SSL", "--ssl-cafile", str(cafile), "--timeout", "5"]


def _images(tmp_path, image_bytes, prefix: str, n: int = 3) -> list[str]:
    folder = tmp_path / prefix
    folder.mkdir()
    for i in range(n):
        (folder / f"{prefix}{i}.jpg").write_bytes(image_bytes(["doom", "cats", "animal_crossing"][i % 3], 300 + i, "jpeg"))
    return [str(folder)]


def test_publish_and_stream_over_sasl_scram_and_ssl(secure_broker, spark, tmp_path, trained_model_dir, image_bytes,
                                                    monkeypatch, capsys):
    from producers.kafka import main as publish_main
    from streaming.config import KafkaSourceConfig
    from streaming.query import run_stream
    from streaming.schema import read_table
    from tests.streaming.conftest import make_config

    topic = f"secure-{uuid.uuid4().hex[:8]}"
    ensure_topic(secure_broker.bootstrap, topic)
    monkeypatch.setenv("MEMESTREAM_KAFKA_SASL_PASSWORD", PASSWORD)  # as the docs advise: not a flag
    assert publish_main([*_sasl_flags(secure_broker), "--topic", topic, "-q", *_images(tmp_path, image_bytes, "sasl")]) == 0
    monkeypatch.delenv("MEMESTREAM_KAFKA_SASL_PASSWORD")
    assert publish_main([*_ssl_flags(secure_broker, secure_broker.pki.ca_pem), "--topic", topic, "-q",
                         *_images(tmp_path, image_bytes, "tls")]) == 0
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err

    sasl = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD)
    cfg = make_config(tmp_path, trained_model_dir, source="kafka", checkpoint=tmp_path / "ck",
                      kafka=KafkaSourceConfig(secure_broker.sasl, topic, security=sasl))
    summary = run_stream(spark, cfg)
    assert summary.rows == 6 and summary.errors == 0
    preds = read_table(tmp_path / "output", "predictions").to_pandas()
    assert sorted(dict(h)["filename"][:3] for h in preds["headers"]) == ["sas"] * 3 + ["tls"] * 3
    assert preds["label"].notna().all()



def test_spark_source_reads_over_sasl_scram_and_tls_and_hides_the_password(secure_broker, spark, capsys):
    """Source level (no sink): Spark's Kafka source with the security flags mapped to kafka.* options."""
    from producers.kafka import ImagePublisher, PublisherConfig
    from streaming.config import KafkaSourceConfig
    from streaming.sources import kafka_source

    topic = f"secure-{uuid.uuid4().hex[:8]}"
    ensure_topic(secure_broker.bootstrap, topic)
    with ImagePublisher(PublisherConfig(secure_broker.bootstrap, topic)) as pub:
        for i in range(4):
            pub.publish(b"img-%d" % i, {"n": str(i)})
        pub.flush()
    sasl = KafkaSourceConfig(secure_broker.sasl, topic, security=KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, PASSWORD))
    tls = KafkaSourceConfig(secure_broker.ssl, topic, security=KafkaSecurity("SSL", ssl_cafile=str(secure_broker.pki.ca_pem)))
    for cfg in (sasl, tls):
        src = kafka_source(cfg)  # the pre-flight check passes too
        rows = spark.read.format(src.format).options(**src.options).load().select("value", "offset").collect()
        assert sorted(bytes(r.value) for r in rows) == [b"img-%d" % i for i in range(4)]

    # The password is in an option of the source (the JAAS line): it must not show in what Spark prints.
    df = spark.readStream.format("kafka").options(**kafka_source(sasl, check=False).options).load()
    df.explain(True)
    plan = capsys.readouterr().out
    assert "StreamingRelation" in plan and PASSWORD not in plan


def test_wrong_password_is_one_clear_line_for_publish_and_stream(secure_broker, tmp_path, trained_model_dir,
                                                                  image_bytes, monkeypatch, capsys):
    from producers.kafka import main as publish_main
    from streaming.cli import main as stream_main

    topic = f"secure-{uuid.uuid4().hex[:8]}"
    ensure_topic(secure_broker.bootstrap, topic)
    monkeypatch.setenv("MEMESTREAM_KAFKA_SASL_PASSWORD", WRONG)
    assert publish_main([*_sasl_flags(secure_broker), "--topic", topic, *_images(tmp_path, image_bytes, "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"SASL SCRAM-SHA-512 authentication as '{USER}' failed: wrong user name or password" in err
    assert WRONG not in err

    rc = stream_main(["--source", "kafka", *_sasl_flags(secure_broker)[:-2], "--topic", topic,
                      "--data-dir", str(tmp_path / "d"), "--model", str(trained_model_dir), "--available-now", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert "wrong user name or password" in err and topic in err and WRONG not in err

    with pytest.raises(BrokerError, match=r"does not accept SASL mechanism SCRAM-SHA-256 \(it accepts: SCRAM-SHA-512\)"):
        from streaming.config import KafkaSourceConfig
        from streaming.sources import check_topic

        check_topic(KafkaSourceConfig(secure_broker.sasl, topic, connect_timeout_s=3,
                                      security=KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", USER, PASSWORD)))


def test_untrusted_certificate_is_one_clear_line(secure_broker, tmp_path, image_bytes, capsys):
    from producers.kafka import main as publish_main
    from streaming.config import KafkaSourceConfig
    from streaming.sources import check_topic

    topic = f"secure-{uuid.uuid4().hex[:8]}"
    ensure_topic(secure_broker.bootstrap, topic)
    other = secure_broker.pki.other_ca_pem
    assert publish_main([*_ssl_flags(secure_broker, other), "--topic", topic, *_images(tmp_path, image_bytes, "u")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "certificate" in err and "is not trusted by the CA in" in err and str(other) in err, err
    with pytest.raises(BrokerError, match=f"topic '{topic}': TLS: the broker's certificate .* is not trusted"):
        check_topic(KafkaSourceConfig(secure_broker.ssl, topic, connect_timeout_s=3,
                                      security=KafkaSecurity("SSL", ssl_cafile=str(other))))


def test_password_from_env_is_not_shown_in_help(monkeypatch):
    from producers.kafka import build_parser as publish_parser
    from streaming.cli import build_parser as stream_parser

    monkeypatch.setenv("MEMESTREAM_KAFKA_SASL_PASSWORD", PASSWORD)
    for parser in (publish_parser(), stream_parser()):
        text = parser.format_help()
        assert "--sasl-password" in text and PASSWORD not in text
