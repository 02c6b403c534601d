"""memestream.spark's stop path: the JVM's raw stderr during a ``local-cluster`` stop is copied
to ours without the stack trace of Spark's worker-cleanup race, and with everything else."""
from __future__ import annotations

from memestream.spark import _JvmStderr, drop_known_stop_traces

RACE = (
    "java.util.concurrent.RejectedExecutionException: Task Future(<not completed>) rejected from "
    "java.util.concurrent.ThreadPoolExecutor@5a2eaf79[Shutting down, pool size = 1, active threads = 1, "
    "queued tasks = 0, completed tasks = 0]\n"
    "\tat java.base/java.util.concurrent.ThreadPoolExecutor$AbortPolicy.rejectedExecution(ThreadPoolExecutor.java:2065)\n"
    "\tat scala.concurrent.impl.Promise$Transformation.run(Promise.scala:537)\n"
    "\tat java.base/java.lang.Thread.run(Thread.java:840)\n"
)
OTHER = "java.lang.IllegalStateException: something else\n\tat org.example.Thing.run(Thing.java:1)\n"


def test_the_cleanup_race_trace_goes_and_other_traces_stay():
    kept, skipping = drop_known_stop_traces("before\n" + RACE + OTHER + "after\n")
    assert kept == "before\n" + OTHER + "after\n"
    assert not skipping


def test_a_race_trace_split_across_reads_is_dropped_whole():
    first, second = RACE[:RACE.index("\tat scala")], RACE[RACE.index("\tat scala"):]
    kept1, skipping = drop_known_stop_traces(first)
    assert kept1 == "" and skipping
    kept2, skipping = drop_known_stop_traces(second + "next line\n", skipping)
    assert kept2 == "next line\n" and not skipping


def test_a_rejected_execution_of_another_kind_is_kept():
    other = "java.util.concurrent.RejectedExecutionException: rejected by my pool\n\tat a.B.c(B.java:1)\n"
    assert drop_known_stop_traces(other)[0] == other


def test_jvm_stderr_is_copied_without_the_race(spark, capfd):
    jvm = spark.sparkContext._jvm
    original = jvm.java.lang.System.err
    capture = _JvmStderr(spark)
    try:
        err = jvm.java.lang.System.err
        err.println("a line the JVM printed")
        jvm.java.util.concurrent.RejectedExecutionException(
            "Task Future(<not completed>) rejected from java.util.concurrent.ThreadPoolExecutor@1[Shutting down]"
        ).printStackTrace()
        err.println("a line after the trace")
        assert "RejectedExecutionException: Task Future" in capture.path.read_text()  # it did print
        capture.flush()
        printed = capfd.readouterr().err
    finally:
        jvm.java.lang.System.setErr(original)
        capture.flush(final=True)
    assert "a line the JVM printed\n" in printed
    assert "a line after the trace\n" in printed
    assert "RejectedExecutionException" not in printed and "\tat " not in printed
    assert not capture.path.exists()
