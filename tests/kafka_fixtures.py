"""Kafka broker fixtures (pytest plugin loaded by tests/conftest.py).

``kafka_broker``: one real Apache Kafka broker (producers.broker, single-node KRaft) for the
whole session, on a free port, data in a session temp folder.
``kafka_topic``: a fresh single-partition topic per test (uuid name).
``restartable_broker``: a broker of the test's own (its own port and log folder) that a test may
``kill()`` and ``start()`` again: topics and records survive, as with any Kafka.
A machine without Java or Maven (and no cached jars) skips these tests with the reason; CI
resolves the jars in .ci/run first, so there a missing jar fails loudly instead.
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
    broker = _start(data_dir=tmp_path_factory.mktemp("kafka"))
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
    broker = _start(data_dir=tmp_path / "kafka")
    yield broker
    broker.close()
