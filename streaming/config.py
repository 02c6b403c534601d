"""What ``meme-stream`` runs with: :class:`StreamConfig` and its Kafka part, validated once when built.

Built by ``streaming.cli`` from flags, by the demo and by tests directly; everything after
that (source, scoring, batch handling) trusts it. No Spark import here, so ``--help`` and
flag errors stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from memestream.novelty import DEFAULT_OOD_MODE, OOD_MODES
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES
from pathlib import Path, PurePath
from typing import Any, Mapping

from memestream.abspath import absolute_fields, is_uri
from memestream.decode import DEFAULT_MAX_BYTES
from memestream.errors import ConfigError
from memestream.inference import ENGINES
from memestream.isolation import DEFAULT_TIME_CAP_S, DEFAULT_WORKER_MEMORY
from memestream.kafka import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES, KafkaSecurity, bootstrap_list

@dataclass(frozen=True)
class WindowSpec:
    window_s: int = 600
    slide_s: int = 60
    watermark_s: int = 3600

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.slide_s <= 0 or self.watermark_s < 0:
            raise ValueError("window and slide must be positive and the watermark non-negative")
        if self.slide_s > self.window_s:
            raise ValueError(f"slide ({self.slide_s}s) must not exceed the window ({self.window_s}s)")


def parse_duration(text: str) -> int:
    """``"10 minutes"``, ``"30s"``, ``"1h"``, ``"90"`` -> seconds."""
    units = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
    t = text.strip().lower().replace(" ", "")
    num = "".join(ch for ch in t if ch.isdigit() or ch == ".")
    unit = t[len(num):].rstrip("s") or "s"
    if not num or unit not in units:
        raise ValueError(f"expected a duration like '30s', '10 minutes' or '1h', found {text!r}")
    return int(float(num) * units[unit])


SOURCES = ("folder", "kafka")
#: What happens to a processed folder input after its batch is committed.
PROCESSED = ("archive", "delete", "keep")
#: spool: our Data Source over the mover's sequence names (state does not grow); binaryfile:
#: Spark's file source (remembers every file seen; kept to compare).
FOLDER_IMPLS = ("spool", "binaryfile")
#: Seconds between micro-batch starts (``--trigger``). A file that lands while the stream is
#: idle waits up to this long before a batch picks it up, so it bounds light-load latency from
#: below; when batches take longer than this they run back to back anyway. An idle stream
#: lists the spool (one lock, one ``scandir``) once per interval: at 0.1 s that measured 0.026
#: of a core for the whole process tree against 0.016 at 0.5 s.
DEFAULT_TRIGGER_S = 0.1


@dataclass(frozen=True)
class KafkaSourceConfig:
    """The Kafka input: Spark's Kafka source (``spark-sql-kafka-0-10``, see :meth:`spark_options`);
    kafka-python only checks broker and topic before the query starts (streaming.sources.check_topic)."""

    bootstrap_servers: str
    topic: str
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: One consumer poll in a read task (the connector's ``kafkaConsumer.pollTimeoutMs``).
    poll_timeout_ms: int = 120_000
    #: Fail the query when offsets it was to read are gone (retention, topic recreated) instead of
    #: silently skipping them (the connector's ``failOnDataLoss``).
    fail_on_data_loss: bool = True
    #: How long the pre-flight check tries to reach the broker before BrokerError.
    connect_timeout_s: float = 15.0
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        if self.starting_offsets not in ("earliest", "latest"):
            raise ConfigError(f"expected startingOffsets 'earliest' or 'latest', found {self.starting_offsets!r}")
        if not self.bootstrap_servers or not self.topic:
            raise ConfigError(f"expected Kafka bootstrap servers and a topic, found {self.bootstrap_servers!r} "
                              f"and {self.topic!r}")

    def spark_options(self) -> dict[str, str]:
        """Options of Spark's Kafka source (``spark.readStream.format("kafka")``). The offsets live in
        the query's checkpoint only (no consumer group commits); the fetch sizes allow one record of
        ``max_message_bytes`` plus framing; security maps to the Java client's ``kafka.*`` settings."""
        one = self.max_message_bytes + RECORD_OVERHEAD_BYTES
        opts = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "subscribe": self.topic,
            "startingOffsets": self.starting_offsets,
            "failOnDataLoss": str(self.fail_on_data_loss).lower(),
            "includeHeaders": "true",
            "kafkaConsumer.pollTimeoutMs": str(self.poll_timeout_ms),
            "kafka.max.partition.fetch.bytes": str(one),
            "kafka.fetch.max.bytes": str(max(one, 64 * 1024 * 1024)),
        }
        if self.max_offsets_per_trigger:
            opts["maxOffsetsPerTrigger"] = str(self.max_offsets_per_trigger)
        opts.update(self.security.java_client_options())
        return opts

    def consumer_kwargs(self) -> dict[str, Any]:
        """kafka-python consumer settings for the pre-flight check (no group, nothing committed)."""
        return {
            "bootstrap_servers": bootstrap_list(self.bootstrap_servers),
            "client_id": "memestream-preflight",
            "group_id": None,
            "enable_auto_commit": False,
            "allow_auto_create_topics": False,
            "request_timeout_ms": 30_000,
            "bootstrap_timeout_ms": int(self.connect_timeout_s * 1000),
            **self.security.kwargs(),
        }


def _one_of(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, found {value!r}")


@dataclass(frozen=True)
class StreamConfig:
    """Everything one stream needs; invalid combinations fail here, with the flag's name."""

    source: str
    #: Local folders (Path) or Hadoop URIs (str: hdfs://, s3a://, abfss://, gs://, file:), see memestream.uris.
    output: Path | str
    checkpoint: Path | str
    model_dir: Path | str
    inbox: Path | None = None
    spool: Path | None = None
    archive: Path | None = None
    quarantine_dir: Path | None = None
    model_version: str | None = None
    trigger_seconds: float = DEFAULT_TRIGGER_S
    available_now: bool = False
    max_files_per_trigger: int = 1000
    processed: str = "archive"
    window: WindowSpec = field(default_factory=WindowSpec)
    max_bytes: int = DEFAULT_MAX_BYTES
    watch: bool = True
    quiet: bool = False
    kafka: KafkaSourceConfig | None = None
    folder_impl: str = "spool"
    scoring: str = "auto"
    #: The model's OCR text branch: off | cascade (OCR only when the image branch is unsure) | always.
    text: str = DEFAULT_TEXT_MODE
    #: Novelty ("none of these"): off | flag (keep the label, ood = true) | reject (label NULL, counted as unknown).
    ood: str = DEFAULT_OOD_MODE
    #: Bounded tables for a long life (``streaming.upkeep``): OPTIMIZE, retention and VACUUM
    #: inside the stream every N recorded batches or M seconds (None = that trigger off; both
    #: None = no in-stream upkeep); rows of days older than ``retention_days`` are deleted.
    compact_every_batches: int | None = 50
    compact_every_s: float | None = 600.0
    retention_days: int | None = None
    #: Poison pills (``memestream.isolation``): seconds one input's work may take in a worker
    #: before the worker is ended (None: no cap), and how many batches may need isolating
    #: within ``isolation_window_s`` before the stream stops (a flood is not a poison pill).
    time_cap_s: float | None = DEFAULT_TIME_CAP_S
    #: address-space cap of each Python worker (and sandbox child), bytes; None: none
    worker_memory: int | None = DEFAULT_WORKER_MEMORY
    max_isolations: int = 10
    isolation_window_s: float = 3600.0

    @property
    def compacts(self) -> bool:
        """Whether the stream keeps its tables bounded itself (a background thread)."""
        return self.compact_every_batches is not None or self.compact_every_s is not None

    def __post_init__(self) -> None:
        for name in ("output", "checkpoint", "model_dir"):  # a URI stays a str; a local path becomes a Path
            value = getattr(self, name)
            if isinstance(value, str) and not is_uri(value):
                object.__setattr__(self, name, Path(value))
            elif isinstance(value, PurePath) and is_uri(str(value)):
                raise ConfigError(f"--{name.replace('_dir', '')} {value}: pass a URI as a string (a Path folds 'hdfs://' into 'hdfs:/')")
        absolute_fields(self)  # the paths mean what they meant where the config was built
        _one_of("--source", self.source, SOURCES)
        _one_of("--scoring", self.scoring, ENGINES)
        _one_of("--text", self.text, TEXT_MODES)
        _one_of("--ood", self.ood, OOD_MODES)
        _one_of("--processed", self.processed, PROCESSED)
        _one_of("--folder-source", self.folder_impl, FOLDER_IMPLS)
        if self.source == "kafka" and not isinstance(self.kafka, KafkaSourceConfig):
            raise ConfigError(f"a Kafka stream needs a KafkaSourceConfig (bootstrap servers and topic), found {self.kafka!r}")
        if self.source == "folder" and self.spool is None:
            raise ConfigError("a folder stream needs a spool folder (--spool), found none")
        if self.source == "folder" and self.processed == "archive" and self.archive is None:
            raise ConfigError("--processed archive needs an archive folder, found none")
        for flag, value in (("--trigger", self.trigger_seconds), ("--max-files-per-trigger", self.max_files_per_trigger),
                            ("--max-bytes", self.max_bytes), ("--max-isolations", self.max_isolations),
                            ("--time-cap", self.time_cap_s if self.time_cap_s is not None else 1)):
            if value <= 0:
                raise ConfigError(f"{flag} expects a positive number, found {value}")
        for flag, opt in (("--compact-every-batches", self.compact_every_batches), ("--compact-every-minutes", self.compact_every_s),
                          ("--retention-days", self.retention_days)):
            if opt is not None and opt <= 0:
                raise ConfigError(f"{flag} expects a positive number, found {opt}")

    def identity(self) -> dict[str, str]:
        """What a checkpoint is bound to: changing any of these needs a new checkpoint."""
        ident = {"source": self.source, "output": self.output if isinstance(self.output, str) else str(self.output.resolve())}
        if self.source == "folder":
            ident["spool"] = str(self.spool.resolve()) if self.spool else ""
            ident["folder_impl"] = self.folder_impl
        else:
            ident["topic"] = self.kafka.topic if self.kafka else ""
        return ident
