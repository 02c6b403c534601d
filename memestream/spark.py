"""Build a SparkSession with the settings this project depends on.

Called from each console script's ``main()`` (never at import), so tests and library
users can pass their own session instead. Local mode gets defaults that matter on a
small machine: no UI, few shuffle partitions, workers on the interpreter that has the
project installed, and a quiet log4j configuration.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Mapping

from memestream.errors import EnvironmentProblem

log = logging.getLogger(__name__)

#: Settings every memestream session gets unless the caller overrides them.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    # Arrow batches feed the decode/featurize UDF; 256 images of a few hundred KB each
    # keeps a batch well under the worker's memory while amortising the round trip.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
    "spark.sql.execution.pythonUDF.arrow.enabled": "true",
    # Listing a folder with thousands of small files in parallel (a Spark job per
    # listing) costs more than the listing itself: list on the driver.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
    # Spark packs files into read tasks as if each cost 4 MB extra; images are ~50-500 KB
    # and each task pays a Python round trip, so 1000 images became 32 tiny tasks (263
    # img/s). At 64 KB they split into about one task per core (533 img/s, same run).
    "spark.sql.files.openCostInBytes": "65536",
    "spark.sql.streaming.fileSource.cleaner.numThreads": "1",
    "spark.sql.adaptive.enabled": "true",
    "spark.python.worker.reuse": "true",
    # Talk to the Python workers over Unix domain sockets instead of loopback TCP: every
    # Python runner of a task (the spool source's read, the scoring UDF) waited ~40-50 ms
    # on the TCP handshake/ACK timing; an Arrow UDF over 2 rows went 137 -> 85 ms a job.
    "spark.python.unix.domain.socket.enabled": "true",
    "spark.sql.parquet.compression.codec": "snappy",
    # Delta rebuilds a table's snapshot (its log replayed) with a shuffle of 50 partitions by
    # default: 50 tasks per snapshot update, several per append, for tables whose log is a few
    # KB. The stream's appends spent most of each batch there.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.streaming.stopGracefullyOnShutdown": "false",
    # The driver keeps a record of every finished job, stage, task and SQL execution for the
    # UI even when the UI is off (defaults 1000/1000/100000/1000). A stream runs a few jobs
    # per micro-batch, so those records grew the live heap by ~1 MiB a minute in a 20-minute
    # soak (bench.soak); keep only recent ones.
    # Spark caches the status of every listed file (session-wide, up to 250 MB by default):
    # ~1.6 KB of heap per image a stream has seen, measured with class histograms after 1k
    # and 10k files. Spooled files are listed once and then archived, so the cache never
    # hits; 0 turns it off.
    "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
    "spark.ui.retainedJobs": "100",
    "spark.ui.retainedStages": "100",
    "spark.ui.retainedTasks": "2000",
    "spark.sql.ui.retainedExecutions": "50",
    "spark.ui.retainedDeadExecutors": "10",
    "spark.worker.ui.retainedExecutors": "10",
    "spark.worker.ui.retainedDrivers": "10",
}


#: Delta Lake in every session (the output tables are Delta tables): its SQL extension and catalog.
#: The jars themselves come from :func:`memestream.jars.spark_stack_conf` (``spark.jars``).
DELTA_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
#: Spark redacts option and conf values whose *key* matches this in plans, logs and the UI. Spark's
#: default covers "secret|password|token|access[.]?key"; the Kafka source's JAAS line carries the
#: SASL password under ``kafka.sasl.jaas.config``, and SSL key material under ``kafka.ssl.*``
#: keys: covered by the added ``jaas`` and ``ssl...key`` alternatives.
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|jaas|ssl[.].*key"
#: Plans print a source's options unredacted; Spark replaces matches of this in explain output and
#: the UI's SQL tab: the password inside a JAAS line (``password="..."``).
PLAN_REDACTION_REGEX = r"(?i)password=(\"[^\"]*\"|\S+)"


def stack_conf() -> dict[str, str]:
    """The pinned stack's settings for a new session: the jars (Spark's Kafka source and Delta
    Lake, resolved once into the cache: memestream.jars), Delta's extension and catalog, and the
    redaction rule that hides Kafka credentials. JarsUnavailable (one line) when the jars are not
    cached and cannot be fetched."""
    from memestream.jars import spark_stack_conf

    return {**spark_stack_conf(), **DELTA_CONF, "spark.redaction.regex": REDACTION_REGEX,
            "spark.sql.redaction.string.regex": PLAN_REDACTION_REGEX}


#: Settings that turn the Spark UI on for a long-running stream (``meme-stream``), with its
#: Structured Streaming tab. The retained-record limits keep the UI's bookkeeping small:
#: a stream runs a few jobs per micro-batch, forever.
UI_CONF: dict[str, str] = {
    "spark.ui.enabled": "true",
    "spark.ui.port": "4040",  # Spark tries 4041, 4042... when it is taken
    "spark.ui.retainedJobs": "50",
    "spark.ui.retainedStages": "50",
    "spark.ui.retainedTasks": "1000",
    "spark.sql.ui.retainedExecutions": "20",
    "spark.sql.streaming.ui.enabled": "true",
    "spark.sql.streaming.ui.retainedQueries": "5",
    "spark.sql.streaming.ui.retainedProgressUpdates": "60",
    "spark.sql.streaming.numRecentProgressUpdates": "60",
}


def ui_url(spark) -> str | None:
    """The address of the session's Spark UI (with the port Spark actually bound), or None when off."""
    try:
        return spark.sparkContext.uiWebUrl
    except Exception:  # noqa: BLE001 - a remote/Connect session has no local UI
        return None


def check_java() -> None:
    """Fail with one clear line when no Java runtime is on the machine."""
    if os.environ.get("JAVA_HOME") and os.path.exists(os.path.join(os.environ["JAVA_HOME"], "bin", "java")):
        return
    if shutil.which("java") is None:
        raise EnvironmentProblem(
            "Spark needs a Java 17 runtime, but no 'java' was found on PATH and JAVA_HOME is not set "
            "(on Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
        )


def _log4j_conf_path() -> str:
    return str(resources.files("memestream").joinpath("log4j2.properties"))


#: glibc malloc arenas for the JVM and the Python workers (``MALLOC_ARENA_MAX``, unless set).
MALLOC_ARENA_MAX = "2"


def prepare_environment(master: str | None) -> None:
    """Environment PySpark reads when it launches the JVM and its Python workers."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # glibc gives each thread that allocates an arena of its own (up to 8 per core), and the
    # driver JVM runs dozens of threads: its RSS swung between 0.9 and 2.0 GiB from one folder
    # stream run to the next (a 1 GiB heap). With two arenas it stayed at 1.07-1.14 GiB
    # (docs/benchmarks.md). The JVM and the Python workers it starts inherit this; executors
    # on a cluster get it through ``spark.executorEnv`` (:func:`build_spark`).
    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)
    if master is None or master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


#: JVM options for a long-running stream's driver: none beyond the JVM's defaults. Until the
#: Delta sink, the driver JVM only orchestrated and ran C1 only (``-XX:TieredStopAtLevel=1``);
#: now it runs four Delta commits per batch, which C2 makes faster (median of 20 warm
#: rounds of four idempotent appends: 2.34 s with C1 only, 1.66 s with C2), and Delta's code
#: overflowed C1's 48 MB code cache ("CodeCache is full", then failing calls).
STREAM_DRIVER_JAVA_OPTIONS = ""

#: Code cache for a JVM held to C1: with C1 only its default is 48 MB, which Delta fills.
_C1_CODE_CACHE = "-XX:ReservedCodeCacheSize=240m"


def with_code_cache(java_options: str) -> str:
    """Give a C1-only JVM (``-XX:TieredStopAtLevel=1``) the code cache Delta's code needs."""
    if "TieredStopAtLevel" in java_options and "ReservedCodeCacheSize" not in java_options:
        return f"{java_options} {_C1_CODE_CACHE}"
    return java_options


def build_spark(
    app_name: str = "memestream",
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
    driver_memory: str | None = None,
    driver_java_options: str | None = None,
):
    """Create (or reuse) the SparkSession for a console script.

    ``master`` defaults to ``$SPARK_MASTER`` or ``local[*]``. When the script runs under
    ``spark-submit`` the master and conf come from there and are not overridden.
    """
    check_java()
    under_submit = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"
    master = master or os.environ.get("SPARK_MASTER") or (None if under_submit else "local[*]")
    prepare_environment(master)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    merged = dict(DEFAULT_CONF)
    merged.update(stack_conf())
    merged.update(conf or {})
    log4j = _log4j_conf_path()
    java_opts = f"-Dlog4j2.configurationFile=file:{log4j} -Dlog4j.configurationFile=file:{log4j}"
    if driver_java_options:
        java_opts = f"{java_opts} {with_code_cache(driver_java_options)}"
    merged.setdefault("spark.driver.extraJavaOptions", java_opts)
    merged.setdefault("spark.executor.extraJavaOptions", java_opts)
    # executors on a cluster's workers start from the worker's environment, not this one
    merged.setdefault("spark.executorEnv.MALLOC_ARENA_MAX", os.environ["MALLOC_ARENA_MAX"])
    if driver_memory:
        merged["spark.driver.memory"] = driver_memory
    for key, value in merged.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.debug("spark session ready: master=%s version=%s", spark.sparkContext.master, spark.version)
    return spark


def session_for(app_name: str, master: str | None = None, **build_kwargs):
    """The running session (tests, notebooks: the caller owns it) or a new one from
    :func:`build_spark` (``build_kwargs`` go to it); returns ``(spark, created)``, so a console
    script stops only what it built."""
    # lazy, as in build_spark: console scripts import this module before their flags are checked
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:
        running = SparkSession.active()
    except PySparkRuntimeError:
        running = None
    if running is not None:
        return running, False
    # outside the except block: an error or Ctrl-C while building is not chained to "no session"
    return build_spark(app_name, master, **build_kwargs), True


def _executor_count(sc) -> int:
    """Live executors (the driver's own entry left out)."""
    return max(0, len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1)


def release_executors(spark, timeout_s: float = 30.0) -> bool:
    """Ask the cluster manager to kill this application's executors and not replace them, and
    wait until they are gone; True when none is left.

    Why, before ``SparkContext.stop()``: with ``local-cluster[...]`` the master and workers live
    in the driver's JVM. A stop that tears them down while the application still wants its
    executors (a stop from the JVM's shutdown hook, when Python just exits) lets the workers'
    shutdown kill the executors, the master sees them fail and launches new ones on the workers
    that are still up, and those die at once: dozens of stack traces at every exit. Asking for
    zero executors first leaves nothing to relaunch.
    """
    import time

    sc = spark.sparkContext
    jsc = sc._jsc.sc()
    try:
        ids = jsc.getExecutorIds()
        if ids.isEmpty():
            return True
        jsc.killExecutors(ids)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot kill executors: the plain stop follows
        log.debug("could not release the executors before stopping: %s", exc)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _executor_count(sc) > 0:
        time.sleep(0.2)  # the driver's view: polled, Spark has no event for it
    if sc.master.startswith("local-cluster"):
        _wait_executor_processes(sc.applicationId, deadline)
    return _executor_count(sc) == 0


#: After the executor processes exit, their workers report it to the master over RPC; a stop
#: inside that exchange printed a RejectedExecutionException stack trace (local-cluster). 1 s
#: was not always enough on a loaded machine (the full test suite at load 3-4 hit it again).
_STATUS_SETTLE_S = 3.0


def _wait_executor_processes(app_id: str, deadline: float) -> None:
    """``local-cluster``: wait until this application's executor JVMs (children of the in-JVM
    workers, on this machine) have exited, then for their workers to report it. The driver
    forgets an executor when it is asked to die, not when its process has gone."""
    import time

    proc = Path("/proc")
    if not proc.is_dir():
        return

    def running() -> bool:
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"CoarseGrainedExecutorBackend" in cmd and app_id.encode() in cmd:
                return True
        return False

    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(_STATUS_SETTLE_S)


#: The first line of a stack trace Spark's in-JVM workers print when ``local-cluster`` stops:
#: a worker's app-directory cleanup future completes while the worker's cleanup pool is
#: shutting down, and Scala's default reporter prints the rejected callback (Worker's
#: ``maybeCleanupApplication``; the app unregisters and the workers stop inside one
#: ``SparkContext.stop()``, so no wait on our side can order them). Harmless: the directory
#: was already deleted.
_CLEANUP_RACE = re.compile(r"^java\.util\.concurrent\.RejectedExecutionException: Task Future\(.*\) rejected from "
                           r"java\.util\.concurrent\.ThreadPoolExecutor@")


def drop_known_stop_traces(text: str, skipping: bool = False) -> tuple[str, bool]:
    """``text`` (the JVM's raw stderr while a ``local-cluster`` session stops) without the
    stack traces of Spark's worker-cleanup race (:data:`_CLEANUP_RACE`); everything else kept.
    Also returns whether ``text`` ended inside such a trace, to pass as ``skipping`` with the
    text that follows."""
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        if _CLEANUP_RACE.match(line):
            skipping = True
            continue
        if skipping and (line.startswith(("\tat ", "\t... ", "Caused by: ")) or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    return "".join(kept), skipping


class _JvmStderr:
    """Point the JVM's ``System.err`` at a file while a ``local-cluster`` session stops, then
    copy it to our stderr without the known cleanup-race trace. log4j's console appender keeps
    the stream it was configured with (``follow`` is false), so log lines are not affected;
    only raw ``printStackTrace`` output lands in the file. The file stays the JVM's stderr
    until this process exits (a late cleanup thread may print after ``stop()`` returns); what
    arrives by then is copied too."""

    def __init__(self, spark) -> None:
        import atexit
        import tempfile

        fd, name = tempfile.mkstemp(prefix="memestream-jvm-stop-", suffix=".err")
        os.close(fd)
        self.path = Path(name)
        self.copied = 0
        self.skipping = False
        jvm = spark.sparkContext._jvm
        jvm.java.lang.System.setErr(jvm.java.io.PrintStream(jvm.java.io.FileOutputStream(name, True), True))
        atexit.register(self.flush, final=True)

    def flush(self, final: bool = False) -> None:
        """Copy the whole lines the JVM wrote since the last flush (known race traces dropped)."""
        try:
            data = self.path.read_text(errors="replace")
        except OSError:
            return
        if final:
            self.path.unlink(missing_ok=True)
        end = len(data) if final else data.rfind("\n") + 1
        if end <= self.copied:
            return
        rest, self.skipping = drop_known_stop_traces(data[self.copied:end], self.skipping)
        self.copied = end
        if rest.strip():
            sys.stderr.write(rest)
            sys.stderr.flush()


def stop_spark(spark) -> None:
    """Stop a session this program built, in order, while Python and the JVM are both up: its
    streaming queries, then (``local-cluster``/standalone) its executors, then the SparkContext.
    A console script calls it on every exit path; never the JVM's shutdown hook."""
    stderr: _JvmStderr | None = None
    try:
        for query in spark.streams.active:
            try:
                query.stop()
            except Exception as exc:  # noqa: BLE001 - stopping interrupts the batch; it replays on restart
                log.debug("query %s stopped with: %s", query.name, exc)
        master = spark.sparkContext.master or ""
        if master.startswith(("local-cluster", "spark://")):
            release_executors(spark)
        if master.startswith("local-cluster"):
            try:
                stderr = _JvmStderr(spark)
            except Exception as exc:  # noqa: BLE001 - without the capture the stop is the same, only noisier
                log.debug("could not capture the JVM's stderr for the stop: %s", exc)
    finally:
        spark.stop()
        if stderr is not None:
            stderr.flush()
