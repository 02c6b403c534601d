"""PySpark's Python worker daemon, without a traceback when the JVM hangs up on a worker.

Spark forks Python workers from ``pyspark.daemon``. When the JVM closes a worker's socket
first (the session stops, or an idle worker is reaped after a minute), the forked worker's
first write fails and the daemon prints ``BrokenPipeError`` tracebacks to the terminal:
noise in a stream's console that looks like a failure and is not one. This module runs the
same daemon with that one case made quiet (any other error still prints). Spark starts it
through ``spark.python.daemon.module`` (set in :data:`memestream.spark.DEFAULT_CONF`).
"""
from __future__ import annotations

import pyspark.daemon as _daemon

_worker = _daemon.worker


def _quiet_worker(sock, authenticated):  # noqa: ANN001 - pyspark.daemon.worker's signature
    try:
        return _worker(sock, authenticated)
    except (BrokenPipeError, ConnectionResetError):
        return 1  # the JVM is gone from this socket: the worker ends, as the daemon would


_daemon.worker = _quiet_worker

if __name__ == "__main__":
    _daemon.manager()
