"""The pinned stack: every session from memestream.spark.build_spark has Delta Lake and Spark's Kafka
source (jars resolved once into the cache by memestream.jars), and no cross-version fallback exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from memestream import jars


def test_stack_is_pyspark_s_own_version_and_delta_for_that_line():
    kafka_set, = [s for s in jars.spark_stack_jars("4.1.3") if "kafka" in s.name]
    delta_set, = [s for s in jars.spark_stack_jars("4.1.3") if "delta" in s.name]
    assert kafka_set.artifacts == ("org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.3",)
    assert delta_set.artifacts == (f"io.delta:delta-spark_4.1_2.13:{jars.DELTA_VERSION}",)
    assert [s.artifacts[0] for s in jars.spark_stack_jars("4.2.0")] == [
        f"io.delta:delta-spark_4.2_2.13:{jars.DELTA_VERSION}", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"]
    assert not hasattr(jars, "SPARK_KAFKA_FALLBACKS") and not hasattr(jars, "resolve_spark_kafka")


def test_delta_version_matches_the_delta_spark_pin():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"delta-spark=={jars.DELTA_VERSION}"' in text


def test_missing_jars_offline_is_one_line_naming_artifact_and_cache(tmp_path, monkeypatch, offline_mvn):
    bindir = offline_mvn("io.delta:delta-spark_4.1_2.13:pom:4.4.0")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MEMESTREAM_JAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    monkeypatch.delenv("SPARK_ENV_LOADED", raising=False)
    with pytest.raises(jars.JarsUnavailable) as info:
        jars.spark_stack_conf()
    line = str(info.value)
    assert "\n" not in line and "io.delta:delta-spark_4.1_2.13:4.4.0" in line and str(tmp_path / "cache") in line
    assert "cannot be reached" in line and not list((tmp_path / "cache").glob("delta-*"))


def test_jars_pyspark_ships_are_not_added_twice(tmp_path, monkeypatch):
    for js in jars.spark_stack_jars():
        folder = tmp_path / js.name
        folder.mkdir()
        for name in (js.artifacts[0].split(":")[1] + "-x.jar", "scala-library-2.13.15.jar", "commons-logging-1.3.0.jar",
                     "kafka-clients-3.9.1.jar"):
            (folder / name.replace("-x.jar", "-1.0.jar")).touch()
        (folder / jars.COMPLETE_MARKER).write_text("test\n")
    names = [j.name for j in jars.resolve_spark_stack(tmp_path, quiet=True)]
    assert "scala-library-2.13.15.jar" not in names and "commons-logging-1.3.0.jar" not in names
    assert names.count("kafka-clients-3.9.1.jar") == 1 and any(n.startswith("delta-spark_") for n in names)


def test_session_writes_and_reads_delta_and_has_the_kafka_source(spark, tmp_path):
    conf = spark.sparkContext.getConf()
    assert "delta-spark_" in conf.get("spark.jars", "") and "spark-sql-kafka-0-10" in conf.get("spark.jars", "")
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
    out = str(tmp_path / "tiny")
    spark.createDataFrame([(1, "doom"), (2, "cats")], "id int, label string").write.format("delta").save(out)
    assert sorted(tuple(r) for r in spark.read.format("delta").load(out).collect()) == [(1, "doom"), (2, "cats")]
    assert (tmp_path / "tiny" / "_delta_log").is_dir()
    # The Kafka source resolves (its provider class is on the classpath); nothing connects until start.
    frame = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:1")
             .option("subscribe", "t").load())
    assert frame.isStreaming and [f.name for f in frame.schema.fields][:2] == ["key", "value"]


def test_a_c1_only_driver_gets_the_code_cache_delta_needs():
    from memestream.spark import STREAM_DRIVER_JAVA_OPTIONS, with_code_cache
    # C1 alone reserves 48 MB of code cache; Delta's commit path filled it in the demo, and
    # calls into the JVM then failed, so a C1-only JVM is given 240 MB unless the user sized it.
    assert with_code_cache("-XX:TieredStopAtLevel=1").split() == [
        "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=240m"]
    assert with_code_cache("-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=64m").split() == [
        "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=64m"]
    assert with_code_cache("-Xss4m") == "-Xss4m"
    assert "TieredStopAtLevel" not in STREAM_DRIVER_JAVA_OPTIONS


def test_the_driver_jvm_and_its_python_workers_run_with_two_malloc_arenas(spark):
    """glibc's per-thread arenas swung the driver JVM's RSS by a GiB from run to run;
    build_spark sets MALLOC_ARENA_MAX before the JVM starts, so the JVM and every Python
    worker it forks inherit it (the test session is built by build_spark)."""
    from memestream.spark import MALLOC_ARENA_MAX

    if os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX) != MALLOC_ARENA_MAX:
        pytest.skip("MALLOC_ARENA_MAX set by the caller: build_spark keeps it")
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    jvm_env = Path(f"/proc/{jvm_pid}/environ").read_bytes().split(b"\0")
    assert f"MALLOC_ARENA_MAX={MALLOC_ARENA_MAX}".encode() in jvm_env

    def worker_env(_):
        yield os.environ.get("MALLOC_ARENA_MAX")

    assert set(spark.sparkContext.parallelize(range(2), 2).mapPartitions(worker_env).collect()) == {MALLOC_ARENA_MAX}
