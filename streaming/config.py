"""What ``meme-stream`` runs with: :class:`StreamConfig` and its Kafka part, validated once when built.

Built by ``streaming.cli`` from flags, by the demo and by tests directly; everything after
that (source, scoring, batch handling) trusts it. No Spark import here, so ``--help`` and
flag errors stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from memestream.novelty import DEFAULT_OOD_MODE, OOD_MODES
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES
from pathlib import Path
from typing import Any, Mapping

from memestream.abspath import absolute_fields
from memestream.decode import DEFAULT_MAX_BYTES
from memestream.errors import ConfigError
from memestream.inference import ENGINES
from memestream.kafka import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES, KafkaSecurity, bootstrap_list
from streaming.counts import WindowSpec

SOURCES = ("folder", "kafka")
#: What happens to a processed folder input after its batch is committed.
PROCESSED = ("archive", "delete", "keep")
#: spool: our Data Source over the mover's sequence names (state does not grow); binaryfile:
#: Spark's file source (remembers every file seen; kept to compare).
FOLDER_IMPLS = ("spool", "binaryfile")
#: python: our Data Source (kafka-python); spark: Spark's built-in connector (its jar must be on the classpath).
KAFKA_IMPLS = ("python", "spark")
#: Seconds between micro-batch starts (``--trigger``). A file that lands while the stream is
#: idle waits up to this long before a batch picks it up, so it bounds light-load latency from
#: below; when batches take longer than this they run back to back anyway. An idle stream
#: lists the spool (one lock, one ``scandir``) once per interval: at 0.1 s that measured 0.026
#: of a core for the whole process tree against 0.016 at 0.5 s.
DEFAULT_TRIGGER_S = 0.1


#: Data-source option name -> KafkaSecurity field.
_SECURITY_OPTIONS = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.cafile": "ssl_cafile",
    "ssl.certfile": "ssl_certfile",
    "ssl.keyfile": "ssl_keyfile",
}


@dataclass(frozen=True)
class KafkaSourceConfig:
    """The Kafka input (``streaming.kafka_source``); travels to executors as data-source options (strings)."""

    bootstrap_servers: str
    topic: str
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    poll_timeout_ms: int = 1000
    #: A read task fails (naming topic/partition/offset) after this long without progress.
    stall_timeout_s: float = 60.0
    #: Split a partition's range into Spark tasks of at most this many records (0 = no split).
    max_records_per_task: int = 0
    #: How long to try reaching the broker before BrokerError.
    connect_timeout_s: float = 15.0
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        if self.starting_offsets not in ("earliest", "latest"):
            raise ConfigError(f"expected startingOffsets 'earliest' or 'latest', found {self.starting_offsets!r}")
        if not self.bootstrap_servers or not self.topic:
            raise ConfigError(f"expected Kafka bootstrap servers and a topic, found {self.bootstrap_servers!r} "
                              f"and {self.topic!r}")

    def options(self) -> dict[str, str]:
        """Data-source options (Spark redacts values of keys containing 'password' in plans/logs)."""
        opts = {
            "bootstrap.servers": self.bootstrap_servers,
            "topic": self.topic,
            "startingOffsets": self.starting_offsets,
            "maxMessageBytes": str(self.max_message_bytes),
            "pollTimeoutMs": str(self.poll_timeout_ms),
            "stallTimeoutS": str(self.stall_timeout_s),
            "maxRecordsPerTask": str(self.max_records_per_task),
            "connectTimeoutS": str(self.connect_timeout_s),
        }
        if self.max_offsets_per_trigger:
            opts["maxOffsetsPerTrigger"] = str(self.max_offsets_per_trigger)
        sec = self.security.kwargs()
        for opt, attr in _SECURITY_OPTIONS.items():
            if attr in sec:
                opts[opt] = str(sec[attr])
        return opts

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> "KafkaSourceConfig":
        opts = {str(k).lower(): v for k, v in options.items()}

        def get(name: str, default: Any = None) -> Any:
            value = opts.get(name.lower())
            return default if value in (None, "") else value

        try:
            security = KafkaSecurity(**{attr: get(opt) for opt, attr in _SECURITY_OPTIONS.items() if get(opt)})
            mopt = get("maxOffsetsPerTrigger")
            return cls(
                bootstrap_servers=get("bootstrap.servers", ""),
                topic=get("topic", ""),
                starting_offsets=str(get("startingOffsets", "earliest")).lower(),
                max_offsets_per_trigger=int(mopt) if mopt else None,
                max_message_bytes=int(get("maxMessageBytes", DEFAULT_MAX_MESSAGE_BYTES)),
                poll_timeout_ms=int(get("pollTimeoutMs", 1000)),
                stall_timeout_s=float(get("stallTimeoutS", 60.0)),
                max_records_per_task=int(get("maxRecordsPerTask", 0)),
                connect_timeout_s=float(get("connectTimeoutS", 15.0)),
                security=security,
            )
        except ValueError as exc:
            raise ConfigError(f"bad memestream-kafka option: {exc}") from None

    def consumer_kwargs(self, fetch_wait_ms: int = 500) -> dict[str, Any]:
        one = self.max_message_bytes + RECORD_OVERHEAD_BYTES
        return {
            "bootstrap_servers": bootstrap_list(self.bootstrap_servers),
            "client_id": "memestream-source",
            "group_id": None,
            "enable_auto_commit": False,
            "allow_auto_create_topics": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": one,
            "fetch_max_bytes": max(one, 64 * 1024 * 1024),
            "receive_message_max_bytes": max(one, 64 * 1024 * 1024) + RECORD_OVERHEAD_BYTES,
            "fetch_max_wait_ms": fetch_wait_ms,
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
    output: Path
    checkpoint: Path
    model_dir: Path
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
    kafka_impl: str = "python"
    folder_impl: str = "spool"
    scoring: str = "auto"
    #: The model's OCR text branch: off | cascade (OCR only when the image branch is unsure) | always.
    text: str = DEFAULT_TEXT_MODE
    #: Novelty ("none of these"): off | flag (keep the label, ood = true) | reject (label NULL, counted as unknown).
    ood: str = DEFAULT_OOD_MODE
    #: Bounded bookkeeping for a long life: commit markers kept per writer (older ones rolled up;
    #: also Spark's minBatchesToRetain, at least 10), and compaction inside the stream every
    #: N batches or M seconds (None = that trigger off; both None = no in-stream compaction),
    #: each run bounded to ``compact_budget_s``; date folders older than ``retention_days`` go.
    keep_commits: int = 100
    compact_every_batches: int | None = 50
    compact_every_s: float | None = 600.0
    compact_budget_s: float = 60.0
    retention_days: int | None = None

    @property
    def compacts(self) -> bool:
        """Whether the stream compacts its output itself (a background thread)."""
        return self.compact_every_batches is not None or self.compact_every_s is not None

    def __post_init__(self) -> None:
        absolute_fields(self)  # the paths mean what they meant where the config was built
        _one_of("--source", self.source, SOURCES)
        _one_of("--scoring", self.scoring, ENGINES)
        _one_of("--text", self.text, TEXT_MODES)
        _one_of("--ood", self.ood, OOD_MODES)
        _one_of("--processed", self.processed, PROCESSED)
        _one_of("--kafka-impl", self.kafka_impl, KAFKA_IMPLS)
        _one_of("--folder-source", self.folder_impl, FOLDER_IMPLS)
        if self.source == "kafka" and not isinstance(self.kafka, KafkaSourceConfig):
            raise ConfigError(f"a Kafka stream needs a KafkaSourceConfig (bootstrap servers and topic), found {self.kafka!r}")
        if self.source == "folder" and self.spool is None:
            raise ConfigError("a folder stream needs a spool folder (--spool), found none")
        if self.source == "folder" and self.processed == "archive" and self.archive is None:
            raise ConfigError("--processed archive needs an archive folder, found none")
        for flag, value in (("--trigger", self.trigger_seconds), ("--max-files-per-trigger", self.max_files_per_trigger),
                            ("--max-bytes", self.max_bytes)):
            if value <= 0:
                raise ConfigError(f"{flag} expects a positive number, found {value}")
        if self.keep_commits < 2:
            raise ConfigError(f"--keep-commits expects at least 2 (the newest decides a replay), found {self.keep_commits}")
        for flag, opt in (("--compact-every-batches", self.compact_every_batches), ("--compact-every-minutes", self.compact_every_s),
                          ("--retention-days", self.retention_days)):
            if opt is not None and opt <= 0:
                raise ConfigError(f"{flag} expects a positive number, found {opt}")

    def identity(self) -> dict[str, str]:
        """What a checkpoint is bound to: changing any of these needs a new checkpoint."""
        ident = {"source": self.source, "output": str(self.output.resolve())}
        if self.source == "folder":
            ident["spool"] = str(self.spool.resolve()) if self.spool else ""
            ident["folder_impl"] = self.folder_impl
        else:
            ident["topic"] = self.kafka.topic if self.kafka else ""
        return ident
