"""Cluster mode: meme-train and meme-stream against a real standalone master + two workers.

The master and workers are the ones the pip pyspark wheel ships (``bin/spark-class``), bound
to 127.0.0.1 on free ports: separate processes, separate work directories, one core each.
The console scripts run as subprocesses with ``--master spark://...`` exactly as an operator
would run them. That the *executors* did the work is read from Spark's event log (enabled
through ``PYSPARK_SUBMIT_ARGS``): every task's executor id and metrics, and which worker each
executor ran on (its log URLs name the worker's web UI port); not just from the result.

``test_stream_into_delta_through_kill_9`` needs the Delta writer of meme-stream (branch i22);
it skips itself, with that reason, while ``streaming.query`` cannot be imported.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from memestream.testing import free_port, run_command, start_group, stop_group

pytestmark = pytest.mark.slow

START_TIMEOUT = 120
BIN = Path(sys.executable).parent
TRACE = re.compile(r"^(\tat |Exception in thread)", re.M)


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


def _event_log_env(env: dict[str, str], events: Path) -> dict[str, str]:
    events.mkdir(parents=True, exist_ok=True)
    return {**env, "PYSPARK_SUBMIT_ARGS": f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events.as_uri()} "
                                          "--conf spark.eventLog.compress=false --conf spark.eventLog.rolling.enabled=false "
                                          "pyspark-shell"}


def tasks_per_worker(events: Path, worker_ports: dict[int, str]) -> tuple[Counter, Counter]:
    """``(tasks, bytes written)`` per worker name, from every event log in ``events``: each
    SparkListenerTaskEnd's executor id, mapped to its worker through the executor's log URL."""
    tasks: Counter = Counter()
    written: Counter = Counter()
    where: dict[str, str] = {}  # executor ids restart per application: logs are read one by one, in order
    logs = sorted(p for p in events.rglob("*") if p.is_file() and not p.name.startswith((".", "appstatus")))
    for path in logs:
        if path.parent == events:
            where = {}
        elif path.name.startswith("events_1_"):
            where = {}  # the first file of a rolled log: a new application
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run's .inprogress log
            if not isinstance(event, dict):
                continue
            kind = event.get("Event")
            if kind == "SparkListenerExecutorAdded":
                urls = " ".join(event["Executor Info"].get("Log Urls", {}).values())
                port = re.search(r"//[^:/]+:(\d+)/", urls)
                where[event["Executor ID"]] = worker_ports.get(int(port.group(1)), "?") if port else "?"
            elif kind == "SparkListenerTaskEnd":
                exec_id = event["Task Info"]["Executor ID"]
                name = where.get(exec_id, "driver" if exec_id == "driver" else "?")
                tasks[name] += 1
                metrics = event.get("Task Metrics") or {}
                written[name] += int((metrics.get("Output Metrics") or {}).get("Bytes Written", 0))
    return tasks, written


@pytest.fixture()
def standalone(tmp_path):
    """A standalone master + two workers (1 core, 1 GiB each, own SPARK_WORKER_DIR) on 127.0.0.1.

    Yields a dict: ``url``, ``env``, ``works`` (worker name -> work dir), ``ports`` (worker
    web UI port -> worker name)."""
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)  # the test session's (memestream.spark): a cluster's workers lack it
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
    procs: list[subprocess.Popen] = []
    works: dict[str, Path] = {}
    ports: dict[int, str] = {}
    try:
        master_log = tmp_path / "master.log"
        master = start_group(
            [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())],
            log_path=master_log, env=env,
        )
        procs.append(master)
        _wait_for(master_log, "I have been elected leader", master)
        for name in ("worker1", "worker2"):
            work = tmp_path / f"{name}-work"
            ui_port = free_port()
            log = tmp_path / f"{name}.log"
            worker = start_group(
                [_spark_class(), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "1g", "--webui-port", str(ui_port), "--work-dir", str(work)],
                log_path=log, env={**env, "SPARK_WORKER_DIR": str(work)},
            )
            procs.append(worker)
            _wait_for(log, "Successfully registered with master", worker)
            works[name] = work
            ports[ui_port] = name
        yield {"url": url, "env": env, "works": works, "ports": ports}
    finally:
        for proc in reversed(procs):
            stop_group(proc)


def _train(url: str, data: Path, models: Path | str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_command([str(BIN / "meme-train"), "--master", url, "--data", str(data), "--model-dir", str(models),
                        "--feature-set", "gray32", "--pca-k", "8", "--models", "logreg", "--text", "off", "--no-plots"],
                       env=env, timeout=900)


def test_train_on_two_workers(standalone, tmp_path):
    from memestream.modelstore import ModelStore
    from memestream.sample import write_dataset

    data = tmp_path / "data"
    write_dataset(data, per_class=12, classes=["doom", "cats"], seed=5)
    models = tmp_path / "models"
    events = tmp_path / "events"
    _train(standalone["url"], data, models.as_uri(), _event_log_env(standalone["env"], events))  # a file: URI store

    store = ModelStore(models)
    assert store.current() is not None
    assert sorted(store.manifest(store.current())["classes"]) == ["cats", "doom"]
    for name, work in standalone["works"].items():
        stderr = list(work.glob("app-*/*/stderr"))
        assert stderr, f"meme-train started no executor on {name} ({work})"
    tasks, _ = tasks_per_worker(events, standalone["ports"])
    assert tasks["worker1"] > 0 and tasks["worker2"] > 0, f"tasks per worker: {dict(tasks)}"
    assert set(tasks) <= {"worker1", "worker2"}, f"tasks outside the workers' executors: {dict(tasks)}"


_EXECUTOR_ENV = """
import os, sys
from memestream.spark import build_spark, stop_spark
spark = build_spark("env-probe", sys.argv[1])
def env(_):
    pid, java = os.getpid(), None
    while pid > 1 and java is None:  # up from the Python worker to the JVM that started it
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        java = cmd if cmd and cmd[0].endswith(b"java") else None
    yield os.environ.get("MALLOC_ARENA_MAX"), pid, b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in java
print(sorted(set(spark.sparkContext.parallelize(range(4), 4).mapPartitions(env).collect())))
stop_spark(spark)
"""


def test_executors_on_workers_get_the_drivers_malloc_arenas(standalone, tmp_path):
    """The workers were started without MALLOC_ARENA_MAX; build_spark passes its value to the
    executors (``spark.executorEnv``), so their Python workers run with two arenas too."""
    from memestream.spark import MALLOC_ARENA_MAX

    proc = run_command([sys.executable, "-c", _EXECUTOR_ENV, standalone["url"]], env=standalone["env"], timeout=600)
    found = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's printed list
    assert {(value, executor) for value, _, executor in found} == {(MALLOC_ARENA_MAX, True)}, found


def test_local_cluster_stops_without_stack_traces(tmp_path):
    """``--master local-cluster[2,1,1024]``: the in-JVM master and workers stop after the
    executors are released (memestream.spark.stop_spark), so no executor is relaunched while
    they shut down and nothing prints a Java stack trace."""
    from memestream.sample import write_dataset

    data = tmp_path / "data"
    write_dataset(data, per_class=8, classes=["doom", "cats"], seed=3)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([str(BIN / "meme-train"), "--master", "local-cluster[2,1,1024]", "--data", str(data),
                           "--model-dir", str(tmp_path / "models"), "--feature-set", "gray32", "--pca-k", "4",
                           "--models", "logreg", "--text", "off", "--no-plots"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    traces = TRACE.findall(proc.stderr + proc.stdout)
    assert not traces, f"{len(traces)} stack trace lines at exit:\n{proc.stderr[-4000:]}"


def _delta_writer_present() -> str | None:
    try:
        import streaming.query  # noqa: F401 - the stream's writer (Delta, branch i22)
        from streaming.schema import read_table  # noqa: F401
    except ImportError as exc:
        return f"needs meme-stream's Delta writer (branch i22): {exc}"
    return None


@pytest.mark.skipif(_delta_writer_present() is not None, reason=str(_delta_writer_present()))
def test_stream_into_delta_through_kill_9(standalone, tmp_path):
    """meme-train, then meme-stream (folder source) into Delta on the two workers, killed with SIGKILL mid-run and restarted: every input has exactly
    one row, and the executors (both workers) wrote the table's data files."""
    from memestream.sample import write_dataset
    from streaming.schema import read_table

    url, env = standalone["url"], standalone["env"]
    data = tmp_path / "data"
    write_dataset(data, per_class=12, classes=["doom", "cats"], seed=5)
    models = tmp_path / "models"
    _train(url, data, models, env)

    inbox = tmp_path / "sd" / "inbox"
    inbox.mkdir(parents=True)
    dropped = sorted(p for p in data.rglob("*") if p.suffix in (".jpg", ".png"))
    for i, src in enumerate(dropped):
        (inbox / f"{i:03d}-{src.name}").write_bytes(src.read_bytes())
    out = tmp_path / "out"
    events = tmp_path / "events"
    cmd = [str(BIN / "meme-stream"), "--master", url, "--source", "folder", "--data-dir", str(tmp_path / "sd"),
           "--output", out.as_uri(), "--model", models.as_uri(), "--max-files-per-trigger", "4", "--available-now",
           "--no-ui", "--no-compact"]
    stream_env = _event_log_env(env, events)
    first = start_group(cmd, log_path=tmp_path / "stream-1.log", env=stream_env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:  # kill -9 once some batch is committed
        if (out / "predictions" / "_delta_log").is_dir() and any((out / "predictions" / "_delta_log").glob("*.json")):
            break
        time.sleep(0.2)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait(60)
    second = subprocess.run(cmd, env=stream_env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not TRACE.findall(second.stderr), second.stderr[-4000:]

    rows = read_table(str(out), "predictions")
    origins = Counter(rows.column("origin").to_pylist())
    assert sorted(origins) == sorted(f"{i:03d}-{src.name}" for i, src in enumerate(dropped))
    assert set(origins.values()) == {1}, f"duplicates: {[o for o, n in origins.items() if n > 1]}"
    files = [p for p in (out / "predictions").rglob("*.parquet") if "_delta_log" not in p.parts]
    assert files, "no Delta data files"
    tasks, written = tasks_per_worker(events, standalone["ports"])
    assert written["worker1"] + written["worker2"] > 0, f"bytes written per worker: {dict(written)}"
    assert written.get("driver", 0) == 0, f"the driver wrote table files: {dict(written)}"
    assert tasks["worker1"] > 0 and tasks["worker2"] > 0, f"tasks per worker: {dict(tasks)}"
