"""--kafka-impl spark: Spark's own Kafka source (spark-sql-kafka-0-10 at the installed PySpark's version,
or the 4.2.0 fallback when Maven Central does not serve that version, as for 4.3.0).

The connector is resolved from Maven Central like the broker's jars. When no candidate can be had,
meme-stream says so in one line, and the end-to-end test is skipped with Maven's answer as the
reason; otherwise that test holds Spark's reader to the Python reader's promises: exactly once
across kill -9, bad records quarantined, and the same rows as the Python reader for the same topic.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from producers.kafka import ImagePublisher, PublisherConfig, ensure_topic

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
OFFLINE_MVN = ("#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not transfer artifact "
               "org.apache.spark:spark-sql-kafka-0-10_2.13:pom:4.3.0 from/to central: Unknown host'\nexit 1\n")


def test_kafka_impl_spark_without_the_connector_is_one_clear_line(tmp_path, monkeypatch, capsys, trained_model_dir):
    from streaming.cli import main

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mvn").write_text(OFFLINE_MVN)
    (bindir / "mvn").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MEMESTREAM_JAR_CACHE", str(tmp_path / "cache"))
    rc = main(["--source", "kafka", "--kafka-impl", "spark", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t",
               "--model", str(trained_model_dir), "--data-dir", str(tmp_path / "d"), "--available-now"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("meme-stream: error: --kafka-impl spark: "), err
    assert "Spark's Kafka source" in err[-1] and "use --kafka-impl python" in err[-1]


# A stand-in mvn that serves the 4.2.0 connector (plus a Scala library PySpark already ships) and
# answers "not found" for 4.3.0, as Maven Central does; it counts its calls in calls.log.
FAKE_MVN = """#!/bin/sh
echo call >> "$(dirname "$0")/calls.log"
for a in "$@"; do
  case "$a" in -f) pom=next ;; -DoutputDirectory=*) out="${a#-DoutputDirectory=}" ;; *) [ "$pom" = next ] && pom="$a" ;; esac
done
if grep -q '<version>4.3.0</version>' "$pom"; then
  echo '[ERROR] Failed to execute goal: Could not find artifact org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0 in central'
  exit 1
fi
mkdir -p "$out" && touch "$out/spark-sql-kafka-0-10_2.13-4.2.0.jar" "$out/kafka-clients-3.9.2.jar" "$out/scala-library-2.13.15.jar"
"""


def test_unserved_connector_falls_back_to_4_2_0_once_with_a_warning(tmp_path, monkeypatch, caplog):
    from memestream import jars

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mvn").write_text(FAKE_MVN)
    (bindir / "mvn").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MEMESTREAM_JAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jars, "_installed_spark_version", lambda: "4.3.0")
    assert jars.spark_kafka_candidates("4.3.0") == ["4.3.0", "4.2.0"]
    assert jars.spark_kafka_candidates("4.1.1") == ["4.1.1"] and jars.spark_kafka_candidates("5.0.0") == ["5.0.0"]

    with caplog.at_level("WARNING", logger="memestream.jars"):
        conf = jars.spark_kafka_conf()
    names = sorted(Path(j).name for j in conf["spark.jars"].split(","))
    assert names == ["kafka-clients-3.9.2.jar", "spark-sql-kafka-0-10_2.13-4.2.0.jar"]  # PySpark's Scala kept
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and "4.3.0" in warning[0] and "using the 4.2.0 connector" in warning[0]
    assert (bindir / "calls.log").read_text().count("call") == 2  # 4.3.0 refused, 4.2.0 fetched

    jars.spark_kafka_conf()  # the "not served" answer is remembered: no Maven call at all
    assert (bindir / "calls.log").read_text().count("call") == 2
    assert not (tmp_path / "cache" / "spark-sql-kafka-4.3.0").exists()


def _connector_or_skip() -> list[Path]:
    from memestream.jars import JarsUnavailable, resolve_spark_kafka

    try:
        return resolve_spark_kafka(quiet=True)[1]
    except JarsUnavailable as exc:  # e.g. neither 4.3.0 nor the 4.2.0 fallback served: nothing to run
        pytest.skip(f"Spark's Kafka source cannot run here: {exc}")


def _stream(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    """meme-stream, or with ``kill_at="stage:batch"`` the same run SIGKILLed there (tests.streaming.crash_stream)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    entry = ["-m", "streaming.cli"] if kill_at is None else ["-m", "tests.streaming.crash_stream", kill_at]
    return subprocess.run([sys.executable, *entry, *args], env=env, capture_output=True, timeout=900)


@pytest.mark.slow
def test_spark_reader_matches_the_python_reader_exactly_once_across_kill9(kafka_broker, tmp_path, trained_model_dir,
                                                                          image_bytes, bad_payloads):
    _connector_or_skip()
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
    spark_args = [*common, "--kafka-impl", "spark", "--data-dir", str(tmp_path / "spark")]
    crashed = _stream(spark_args, kill_at="files:1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    done = _stream(spark_args)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    python = _stream([*common, "--kafka-impl", "python", "--data-dir", str(tmp_path / "python")])
    assert python.returncode == 0, python.stderr.decode()[-2000:]

    cols = ["origin", "kafka_key", "label", "error_code"]
    by_spark = read_table(tmp_path / "spark" / "output", "predictions").to_pandas()
    by_python = read_table(tmp_path / "python" / "output", "predictions").to_pandas()
    assert len(by_spark) == len(payloads) and by_spark["origin"].is_unique  # exactly once across the kill
    left = by_spark.sort_values("origin").reset_index(drop=True)
    right = by_python.sort_values("origin").reset_index(drop=True)
    assert left[cols].fillna("").values.tolist() == right[cols].fillna("").values.tolist()
    assert [dict(h) for h in left["headers"]] == [dict(h) for h in right["headers"]]
    for a, b in zip(left["probabilities"], right["probabilities"]):
        assert (a is None) == (b is None)
        if a is not None:
            assert dict(a).keys() == dict(b).keys()
            assert all(abs(dict(a)[k] - dict(b)[k]) < 1e-9 for k in dict(a))
    quarantine = read_table(tmp_path / "spark" / "output", "quarantine").to_pandas()
    assert sorted(quarantine["error_code"]) == ["not_an_image", "truncated"]
