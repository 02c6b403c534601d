"""A small exception hierarchy: every console script turns these into one clear line."""
from __future__ import annotations


class MemestreamError(Exception):
    """Base class: a problem the user can fix, reported as one line, exit code 2."""

    exit_code = 2


class ConfigError(MemestreamError):
    """A flag, environment variable or combination of them is wrong."""


class DataError(MemestreamError):
    """An input folder or table is missing, empty or not laid out as expected."""


class PoisonFlood(DataError):
    """More batches failed in a worker than the poison-pill bound allows: an outage, not one bad input."""


class ModelError(MemestreamError):
    """A model directory is missing, incomplete or incompatible."""


class CheckpointError(MemestreamError):
    """A checkpoint was written by an incompatible configuration."""


class BrokerError(MemestreamError):
    """A Kafka broker cannot be reached, or a topic is missing."""


class EnvironmentProblem(MemestreamError):
    """Something the machine lacks (Java, a writable folder)."""
