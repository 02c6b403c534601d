"""``memestream-kafka``: a PySpark 4 Python Data Source that streams a Kafka topic (kafka-python).

Why not Spark's built-in connector: its jar is not on a pip-installed PySpark's classpath
(and Maven may be unreachable); ``spark_kafka_available`` tells whether it is.

Offsets are ``{"<partition>": next_offset}`` (Spark stores them in the checkpoint's offset
log); a micro-batch reads ``[start, end)`` per partition, so a replayed batch reads the same
records. No consumer-group commits: the checkpoint is the only position.

Broker quirk handled here: tansu reports the end offset of a partition as *base offset of the
last record batch + 1*, so after a batched produce (20 records, one request) it says 1 while
offsets 0..19 exist. ``latestOffset`` therefore never trusts the reported end: it fetches from
there and advances to one past the last record actually returned (cached per reported end, so
an idle topic costs one metadata round trip per trigger).

Missing topic or unreachable broker when the query starts -> BrokerError (clear, no waiting).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow

from memestream.errors import BrokerError
from streaming.config import KafkaSourceConfig
from streaming.sources import StreamSource

log = logging.getLogger(__name__)

SOURCE_NAME = "memestream-kafka"
#: Re-probe an unchanged reported end after this long (an empty probe poll may have been a slow fetch).
PROBE_MAX_AGE_S = 10.0
#: An empty poll this long ends a probe: several fetch round trips at PROBE_FETCH_WAIT_MS. Every
#: batch with new records pays it once, so it is part of the light-load latency.
PROBE_POLL_MS = 80
#: Longest a probe may take before the batch is planned with what it found so far.
PROBE_BUDGET_S = 0.6
#: How long the broker may hold the probe's fetch when no record is past the offset.
PROBE_FETCH_WAIT_MS = 20
SCHEMA = (
    "content binary, kafka_key string, headers map<string,string>, topic string, "
    "partition int, offset long, event_time timestamp"
)
class TopicMissingError(BrokerError):
    """The broker answers but has no such topic (not retried: waiting will not create it)."""


class KafkaRange(InputPartition):
    """One Spark task: records ``[start, end)`` of one Kafka partition."""

    def __init__(self, topic: str, partition: int, start: int, end: int) -> None:
        super().__init__((topic, partition, start, end))
        self.topic, self.partition, self.start, self.end = topic, partition, start, end

    def __repr__(self) -> str:
        return f"KafkaRange({self.topic}/{self.partition} [{self.start}, {self.end}))"


def _new_consumer(cfg: KafkaSourceConfig, fetch_wait_ms: int = 500):
    from kafka import KafkaConsumer

    try:
        return KafkaConsumer(**cfg.consumer_kwargs(fetch_wait_ms))
    except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, timeouts, SSL setup
        from memestream.kafka_diagnose import explain_connect_failure

        why = explain_connect_failure(cfg.bootstrap_servers, cfg.security)  # TLS/SASL: which step failed
        if why:
            raise BrokerError(f"Kafka broker at {cfg.bootstrap_servers} for topic {cfg.topic!r}: {why}") from None
        raise BrokerError(f"expected a Kafka broker at {cfg.bootstrap_servers} for topic {cfg.topic!r}, "
                          f"could not connect ({exc})") from None


def topic_partitions(consumer, cfg: KafkaSourceConfig) -> list[int]:
    """Partition ids of the topic; BrokerError naming topic and broker when it does not exist."""
    # consumer.topics() lists all topics; asking for one by name would make tansu auto-create it.
    parts = consumer.partitions_for_topic(cfg.topic) if cfg.topic in consumer.topics() else None
    if not parts:
        raise TopicMissingError(f"expected topic {cfg.topic!r} on Kafka broker {cfg.bootstrap_servers}, found none "
                          "(create it: meme-publish --create-topic, or producers.kafka.ensure_topic)")
    return sorted(parts)


def check_topic(cfg: KafkaSourceConfig) -> list[int]:
    """Fail fast on the driver (broker down, topic missing) before Spark starts the query."""
    consumer = _new_consumer(cfg)
    try:
        return topic_partitions(consumer, cfg)
    finally:
        consumer.close()


def spread_limit(available: Mapping[int, int], max_rows: int) -> dict[int, int]:
    """Split ``max_rows`` across partitions fairly (water-filling): small backlogs are served in
    full, the rest is shared equally, so a busy partition cannot starve the others."""
    alloc = {p: 0 for p in available}
    remaining = max_rows
    while remaining > 0:
        active = [p for p in sorted(available) if alloc[p] < available[p]]
        if not active:
            break
        share = max(1, remaining // len(active))
        for p in active:
            take = min(share, available[p] - alloc[p], remaining)
            alloc[p] += take
            remaining -= take
            if remaining == 0:
                break
    return alloc


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Driver side plans ``[start, end)`` per partition; ``read`` runs in the executors."""

    def __init__(self, cfg: KafkaSourceConfig) -> None:
        self.cfg = cfg
        self._consumer = None
        #: partition -> (reported end, probed true end, monotonic time of the probe)
        self._ends: dict[int, tuple[int, int, float]] = {}
        self._target: dict[int, int] | None = None

    def __getstate__(self) -> dict:
        # Only the configuration travels to executors; clients and caches stay on the driver.
        return {"cfg": self.cfg, "_consumer": None, "_ends": {}, "_target": None}

    # ---------------------------------------------------------------- driver side

    def _driver_consumer(self):
        if self._consumer is None:
            # short fetch wait: the end probe stops at its first empty poll, which waits this long
            self._consumer = _new_consumer(self.cfg, fetch_wait_ms=PROBE_FETCH_WAIT_MS)
        return self._consumer

    def _true_ends(self, reported: Mapping[int, int]) -> dict[int, int]:
        """One past the last record that really exists per partition, probing past the (possibly
        low) reported ends: tansu reports base offset + 1 of the last produce batch.

        All stale partitions are probed together in one poll loop that ends on the first empty
        poll (~``PROBE_POLL_MS``). An empty poll could be a slow fetch, so a cached answer for an
        unchanged reported end is re-checked after ``PROBE_MAX_AGE_S``.
        """
        from kafka import TopicPartition

        now = time.monotonic()
        ends: dict[int, int] = {}
        stale: dict[int, int] = {}
        for p, rep in reported.items():
            cached = self._ends.get(p)
            if cached and cached[0] == rep and now - cached[2] < PROBE_MAX_AGE_S:
                ends[p] = cached[1]
            else:
                stale[p] = max(rep, cached[1] if cached else 0)
        if stale:
            consumer = self._driver_consumer()
            tps = {p: TopicPartition(self.cfg.topic, p) for p in stale}
            consumer.assign(list(tps.values()))
            for p, tp in tps.items():
                consumer.seek(tp, stale[p])
            # Bounded: under a steady publish rate every poll finds a fresh record, and an
            # endless probe would stall the stream; what arrives later goes to the next batch.
            deadline = time.monotonic() + PROBE_BUDGET_S
            while time.monotonic() < deadline:
                polled = consumer.poll(timeout_ms=PROBE_POLL_MS, max_records=100_000)
                if not polled:
                    break
                for tp, batch in polled.items():
                    if batch and tp.partition in stale:
                        stale[tp.partition] = max(stale[tp.partition], batch[-1].offset + 1)
            probed_at = time.monotonic()
            for p, end in stale.items():
                if end != reported[p]:
                    log.debug("topic %s partition %d: broker reports end %d, records exist up to %d",
                              self.cfg.topic, p, reported[p], end)
                self._ends[p] = (reported[p], end, probed_at)
                ends[p] = end
        return ends

    def _latest(self) -> dict[int, int]:
        """True end offsets; a broker outage is ridden out for ``stall_timeout_s`` (retrying with a
        fresh client), then BrokerError. A missing topic fails at once."""
        deadline = time.monotonic() + self.cfg.stall_timeout_s
        attempt = 0
        while True:
            try:
                return self._latest_once()
            except TopicMissingError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection refused/reset, timeouts
                attempt += 1
                self.stop()
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"topic {self.cfg.topic}: Kafka broker {self.cfg.bootstrap_servers} unreachable for "
                        f"{self.cfg.stall_timeout_s:.0f} s while planning a micro-batch ({exc})"
                    ) from None
                log.warning("topic %s: broker %s unreachable (%s); retrying (attempt %d)",
                            self.cfg.topic, self.cfg.bootstrap_servers, exc, attempt)
                time.sleep(min(5.0, 0.25 * 2 ** attempt))

    def _latest_once(self) -> dict[int, int]:
        from kafka import TopicPartition

        consumer = self._driver_consumer()
        parts = topic_partitions(consumer, self.cfg)
        tps = [TopicPartition(self.cfg.topic, p) for p in parts]
        reported = consumer.end_offsets(tps)
        return self._true_ends({tp.partition: int(reported[tp]) for tp in tps})

    def _earliest(self, parts: list[int]) -> dict[int, int]:
        from kafka import TopicPartition

        tps = [TopicPartition(self.cfg.topic, p) for p in parts]
        begins = self._driver_consumer().beginning_offsets(tps)
        return {tp.partition: int(begins[tp]) for tp in tps}

    def initialOffset(self) -> dict:
        consumer = self._driver_consumer()
        parts = topic_partitions(consumer, self.cfg)
        offsets = self._latest() if self.cfg.starting_offsets == "latest" else self._earliest(parts)
        log.info("topic %s: starting at %s offsets %s", self.cfg.topic, self.cfg.starting_offsets, offsets)
        return {str(p): int(offsets[p]) for p in sorted(offsets)}

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.cfg.max_offsets_per_trigger:
            return ReadMaxRows(int(self.cfg.max_offsets_per_trigger))
        return ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._latest()
        log.info("topic %s: available-now target offsets %s", self.cfg.topic, self._target)

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        latest = self._latest()
        if self._target is not None:  # Trigger.AvailableNow: nothing past the target
            latest = {p: min(e, self._target[p]) for p, e in latest.items() if p in self._target}
        begin = {p: int(start.get(str(p), 0)) for p in latest}  # new partitions start at 0 (earliest)
        for p, off in start.items():  # partitions never vanish from the offsets
            if int(p) not in latest:
                latest[int(p)] = begin[int(p)] = int(off)
        latest = {p: max(latest[p], begin[p]) for p in latest}
        if isinstance(limit, ReadMaxRows):
            alloc = spread_limit({p: latest[p] - begin[p] for p in latest}, int(limit.max_rows))
            latest = {p: begin[p] + alloc[p] for p in latest}
        return {str(p): int(latest[p]) for p in sorted(latest)}

    def reportLatestOffset(self) -> dict | None:
        return {str(p): e for p, (_, e, _) in sorted(self._ends.items())} or None

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        step = self.cfg.max_records_per_task
        out: list[InputPartition] = []
        for key in sorted(end, key=int):
            lo, hi = int(start.get(key, 0)), int(end[key])
            while lo < hi:
                nxt = min(hi, lo + step) if step > 0 else hi
                out.append(KafkaRange(self.cfg.topic, int(key), lo, nxt))
                lo = nxt
        return out

    def commit(self, end: dict) -> None:
        log.debug("topic %s: committed up to %s", self.cfg.topic, end)

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # ---------------------------------------------------------------- executor side

    def read(self, partition: KafkaRange) -> Iterator[tuple]:
        """Records ``[start, end)`` of one partition, in offset order; fails clearly if stuck."""
        yield from read_range(self.cfg, partition.partition, partition.start, partition.end)


def _row(rec) -> tuple:
    headers: dict[str, str] = {}
    for k, v in rec.headers or ():
        headers[k] = v.decode("utf-8", "replace") if v is not None else None
    key = rec.key.decode("utf-8", "replace") if rec.key is not None else None
    ts = datetime.fromtimestamp(rec.timestamp / 1000.0, tz=timezone.utc) if rec.timestamp and rec.timestamp >= 0 else None
    return (rec.value, key, headers, rec.topic, rec.partition, rec.offset, ts)


#: Consumers kept per Python worker process between tasks (workers are reused), keyed by the
#: source settings: a new KafkaConsumer costs a bootstrap connection and metadata round
#: trips (tens of ms) on every micro-batch otherwise. One per key: tasks in one worker
#: process run one at a time.
_POOL: dict[Any, Any] = {}
_POOL_LOCK = threading.Lock()


def _pooled_consumer(cfg: KafkaSourceConfig):
    """``(pool key, a consumer this worker kept from an earlier task, or None)``."""
    key = repr(sorted(cfg.consumer_kwargs().items(), key=lambda kv: kv[0]))
    with _POOL_LOCK:
        return key, _POOL.pop(key, None)


def _return_consumer(key: Any, consumer) -> None:
    with _POOL_LOCK:
        old = _POOL.pop(key, None)
        _POOL[key] = consumer
    if old is not None:
        old.close()


def read_range(cfg: KafkaSourceConfig, partition: int, start: int, end: int) -> Iterator[tuple]:
    """Yield rows for offsets ``[start, end)``; gaps (compaction, transaction markers) are skipped.

    A broker hiccup is retried (new consumer, seek to the next offset) until no progress was made
    for ``stall_timeout_s``; then BrokerError names topic, partition and offset.
    """
    from kafka import TopicPartition

    tp = TopicPartition(cfg.topic, partition)
    nxt = start
    failures = 0
    last_progress = time.monotonic()
    pool_key, consumer = _pooled_consumer(cfg) if start < end else (None, None)
    positioned = False
    finished = False
    try:
        while nxt < end:
            try:
                if consumer is None:
                    consumer = _new_consumer(cfg)
                if not positioned:
                    consumer.assign([tp])
                    consumer.seek(tp, nxt)
                    positioned = True
                batch = consumer.poll(timeout_ms=cfg.poll_timeout_ms).get(tp, [])
                position = consumer.position(tp)
            except Exception as exc:  # noqa: BLE001 - retried, then reported with the position
                failures += 1
                log.warning("topic %s partition %d offset %d: read failed (%s), attempt %d", cfg.topic, partition,
                            nxt, exc, failures)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001
                        pass
                consumer = None
                positioned = False
                batch, position = [], nxt
                if time.monotonic() - last_progress > cfg.stall_timeout_s or failures > 20:
                    raise BrokerError(f"reading topic {cfg.topic} partition {partition} at offset {nxt} "
                                      f"(batch ends at {end}) from {cfg.bootstrap_servers} failed: {exc}") from None
                time.sleep(min(5.0, 0.2 * 2 ** failures))
                continue
            for rec in batch:
                if rec.offset < nxt:
                    continue
                if rec.offset >= end:
                    nxt = end
                    break
                yield _row(rec)
                nxt = rec.offset + 1
            if batch:
                last_progress = time.monotonic()
            elif position is not None and position > nxt:  # gap: offsets with no records
                nxt = min(position, end)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > cfg.stall_timeout_s:
                raise BrokerError(
                    f"expected records up to offset {end} on topic {cfg.topic} partition {partition}, "
                    f"but nothing arrived at offset {nxt} for {cfg.stall_timeout_s:.0f} s from {cfg.bootstrap_servers} "
                    "(broker down, or the records were deleted)"
                )
        finished = True
    finally:
        if consumer is not None:
            if finished and pool_key is not None:
                _return_consumer(pool_key, consumer)  # healthy: the next task in this worker reuses it
            else:
                consumer.close()


class MemestreamKafkaDataSource(DataSource):
    """``spark.readStream.format("memestream-kafka")``: one row per Kafka record."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> KafkaStreamReader:
        return KafkaStreamReader(KafkaSourceConfig.from_options(self.options))


def register(spark) -> None:
    """Register the data source with this session (once)."""
    if getattr(spark, "_memestream_kafka_registered", False):
        return
    spark.dataSource.register(MemestreamKafkaDataSource)
    try:
        spark._memestream_kafka_registered = True
    except AttributeError:  # a session object that refuses attributes: registering again is harmless
        pass


def topic_source(spark, cfg: KafkaSourceConfig, check: bool = True) -> StreamSource:
    """The topic as a stream input (rows of schema ``SCHEMA``); checks broker and topic first and
    registers the data source with ``spark``. ``streaming.query.open_stream`` opens it."""
    if check:
        parts = check_topic(cfg)
        log.info("topic %s on %s: %d partition(s)", cfg.topic, cfg.bootstrap_servers, len(parts))
    register(spark)
    return StreamSource(SOURCE_NAME, cfg.options())


def spark_kafka_available(spark) -> bool:
    """Whether Spark's own Kafka connector (spark-sql-kafka-0-10 jar) is on the JVM classpath."""
    try:
        jvm = spark._jvm
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider", False, loader)
        return True
    except Exception:  # noqa: BLE001 - ClassNotFoundException, or no JVM (Spark Connect)
        return False
