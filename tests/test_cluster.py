"""Cluster mode: meme-train and meme-stream against a real standalone master + worker.

The master and worker are the ones the pip pyspark wheel ships (``bin/spark-class``),
bound to 127.0.0.1 on free ports. The console scripts run as subprocesses with
``--master spark://...`` exactly as an operator would run them; the assertions check
their outputs and that executors really ran on the worker (an ``app-*`` work folder).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memestream.testing import free_port, run_command, start_group, stop_group

pytestmark = pytest.mark.slow

START_TIMEOUT = 120


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _wait_for(log: Path, needle: str, proc: subprocess.Popen) -> None:
    """Poll a daemon's log for its ready line (the daemons have no other readiness signal)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"{log.name}: exited with {proc.returncode} before {needle!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{log.name}: no {needle!r} within {START_TIMEOUT}s:\n{log.read_text()[-3000:]}")


@pytest.fixture()
def standalone(tmp_path):
    """A standalone master + one worker (1 core, 1 GiB) on 127.0.0.1; yields (url, work_dir, env)."""
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(tmp_path / "spark-logs"),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        # the REST submission server would take fixed port 6066; nothing here needs it
        SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
    )
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    work = tmp_path / "worker-work"
    procs: list[subprocess.Popen] = []
    try:
        master_log = tmp_path / "master.log"
        master = start_group(
            [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())],
            log_path=master_log, env=env,
        )
        procs.append(master)
        _wait_for(master_log, "I have been elected leader", master)
        worker_log = tmp_path / "worker.log"
        worker = start_group(
            [_spark_class(), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
             "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(work)],
            log_path=worker_log, env=env,
        )
        procs.append(worker)
        _wait_for(worker_log, "Successfully registered with master", worker)
        yield url, work, env
    finally:
        for proc in reversed(procs):
            stop_group(proc)


def test_train_and_stream_on_a_standalone_cluster(standalone, tmp_path):
    from memestream.modelstore import ModelStore
    from memestream.sample import write_dataset

    url, work, env = standalone
    bin_dir = Path(sys.executable).parent
    data = tmp_path / "data"
    write_dataset(data, per_class=12, classes=["doom", "cats"], seed=5)
    models = tmp_path / "models"

    run_command([str(bin_dir / "meme-train"), "--master", url, "--data", str(data), "--model-dir", str(models),
                 "--feature-set", "gray32", "--pca-k", "8", "--models", "logreg", "--no-plots"], env=env, timeout=600)
    store = ModelStore(models)
    assert store.current() is not None
    assert sorted(store.manifest(store.current())["classes"]) == ["cats", "doom"]
    apps_after_train = list(work.glob("app-*"))
    assert apps_after_train, "meme-train did not run executors on the worker"

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dropped = sorted((data / "doom").glob("*.jpg"))[:3] + sorted((data / "cats").glob("*.jpg"))[:2]
    for src in dropped:
        (inbox / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    run_command([str(bin_dir / "meme-stream"), "--master", url, "--source", "folder", "--data-dir", str(tmp_path / "sd"),
                 "--inbox", str(inbox), "--output", str(out), "--model", str(models), "--available-now", "--quiet"],
                env=env, timeout=600)
    preds = pq.ParquetDataset(str(out / "predictions")).read()
    assert sorted(preds.column("origin").to_pylist()) == sorted(p.name for p in dropped)
    assert None not in preds.column("label").to_pylist()
    assert len(list(work.glob("app-*"))) > len(apps_after_train), "meme-stream did not use the cluster"
