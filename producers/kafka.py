"""Publish meme images to a Kafka topic: the API a scraper calls, and the ``meme-publish`` CLI.

One Kafka record per image: value = the raw file bytes, key = sha256 hex of the bytes (so a
re-scraped image lands on the same partition and downstream can deduplicate), headers = post
metadata (utf-8). Every send is confirmed (acks=all + flush + each future checked), so the CLI
can say which file failed and why, and exit non-zero.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_int, run_main
from memestream.errors import BrokerError, ConfigError, DataError
from memestream.hidden import is_dot_hidden, walk_visible
from memestream.kafka import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD_BYTES,
    KafkaSecurity,
    add_security_flags,
    bootstrap_list,
    security_from_args,
)

log = logging.getLogger(__name__)

#: Extensions picked up when walking a folder (files named explicitly are always sent).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif"})


@dataclass(frozen=True)
class PublisherConfig:
    """Where and how to publish; ``max_message_bytes`` caps one image (the broker must allow it too)."""

    bootstrap_servers: str
    topic: str
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    acks: str = "all"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    timeout_s: float = 30.0
    linger_ms: int = 5
    batch_size: int = 256 * 1024
    client_id: str = "memestream-publisher"

    def producer_kwargs(self) -> dict[str, Any]:
        timeout_ms = int(self.timeout_s * 1000)
        request_bytes = self.max_message_bytes + RECORD_OVERHEAD_BYTES
        return {
            "bootstrap_servers": bootstrap_list(self.bootstrap_servers),
            "client_id": self.client_id,
            "acks": int(self.acks) if self.acks.lstrip("-").isdigit() else self.acks,
            "max_request_size": request_bytes,
            "batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "send_buffer_bytes": min(request_bytes, 4 * 1024 * 1024),
            "request_timeout_ms": timeout_ms,
            "max_block_ms": timeout_ms,
            "delivery_timeout_ms": max(timeout_ms * 2, 120_000) if timeout_ms > 0 else 120_000,
            "bootstrap_timeout_ms": timeout_ms,
            "retries": 5,
            "allow_auto_create_topics": False,  # a typo must not create a topic: ensure_topic is explicit
            **self.security.kwargs(),
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _connect_error(bootstrap: str, exc: BaseException, security: KafkaSecurity | None = None) -> BrokerError:
    from memestream.kafka_diagnose import explain_connect_failure

    why = explain_connect_failure(bootstrap, security)  # TLS/SASL: say which step failed
    if why:
        return BrokerError(f"Kafka broker at {bootstrap}: {why}")
    detail = str(exc) if type(exc).__name__ in str(exc) else f"{type(exc).__name__}: {exc}"
    return BrokerError(f"expected a Kafka broker at {bootstrap}, could not connect ({detail})")


def _admin(bootstrap: str, security: KafkaSecurity | None, timeout_s: float):
    """A kafka-python admin client, or BrokerError naming the broker when it cannot connect."""
    from kafka import KafkaAdminClient

    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap_list(bootstrap), request_timeout_ms=int(timeout_s * 1000),
                                bootstrap_timeout_ms=int(timeout_s * 1000), **(security or KafkaSecurity()).kwargs())
    except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, DNS, SSL setup
        raise _connect_error(bootstrap, exc, security) from None


def topic_exists(bootstrap: str, topic: str, security: KafkaSecurity | None = None, timeout_s: float = 15.0) -> bool:
    """Whether ``topic`` exists, without the by-name metadata request that makes tansu create it."""
    admin = _admin(bootstrap, security, timeout_s)
    try:
        return topic in admin.list_topics()
    finally:
        admin.close()


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    security: KafkaSecurity | None = None,
    timeout_s: float = 15.0,
) -> bool:
    """Create ``topic`` if missing (tansu does not auto-create); returns True when it was created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(bootstrap, security, timeout_s)
    try:
        if topic in admin.list_topics():
            return False
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        except TopicAlreadyExistsError:
            return False
        deadline = time.monotonic() + timeout_s
        while topic not in admin.list_topics():
            if time.monotonic() > deadline:
                raise BrokerError(f"created topic {topic!r} on {bootstrap} but it did not appear within {timeout_s:.0f} s")
            time.sleep(0.1)
        log.info("created topic %s with %d partition(s) on %s", topic, partitions, bootstrap)
        return True
    finally:
        admin.close()


class ImagePublisher:
    """Send images to one topic with confirmed delivery; use as a context manager.

    ``publish`` returns kafka-python's future (``.get()`` gives partition/offset or raises);
    ``flush`` waits for every pending send. Images over ``max_message_bytes`` are refused
    before sending (DataError naming size and limit).
    """

    def __init__(self, config: PublisherConfig) -> None:
        from kafka import KafkaProducer

        self.config = config
        try:
            self._producer = KafkaProducer(**config.producer_kwargs())
        except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, DNS, SSL setup
            raise _connect_error(config.bootstrap_servers, exc, config.security) from None
        self._checked_topic = False

    def _check_topic(self) -> None:
        # Asked via an all-topics listing: tansu auto-creates a topic (4 partitions) when a client
        # asks for its metadata by name, whatever allow_auto_create_topics says.
        if self._checked_topic:
            return
        if not topic_exists(self.config.bootstrap_servers, self.config.topic, self.config.security,
                            self.config.timeout_s):
            raise BrokerError(
                f"expected topic {self.config.topic!r} on {self.config.bootstrap_servers}, found none "
                "(create it with meme-publish --create-topic, or ensure_topic())"
            )
        self._checked_topic = True

    def publish(self, data: bytes, metadata: Mapping[str, str] | None = None, key: str | None = None):
        """Queue one image; key defaults to the sha256 hex of ``data``; metadata become utf-8 headers."""
        if len(data) > self.config.max_message_bytes:
            raise DataError(
                f"image of {len(data)} bytes exceeds the message limit of {self.config.max_message_bytes} bytes "
                "(raise --max-message-bytes, and the broker's message.max.bytes and the consumer's fetch sizes)"
            )
        self._check_topic()
        headers = [(str(k), str(v).encode("utf-8")) for k, v in (metadata or {}).items()]
        return self._producer.send(
            self.config.topic, value=data, key=(key or sha256_hex(data)).encode("utf-8"), headers=headers
        )

    def publish_file(self, path: str | os.PathLike, metadata: Mapping[str, str] | None = None, key: str | None = None):
        """Read and queue one file; adds a ``filename`` header unless the metadata has one."""
        path = Path(path)
        size = path.stat().st_size
        if size > self.config.max_message_bytes:  # refuse without reading a huge file
            raise DataError(f"{path}: image of {size} bytes exceeds the message limit of "
                            f"{self.config.max_message_bytes} bytes (--max-message-bytes)")
        meta = {"filename": path.name, **(metadata or {})}
        return self.publish(path.read_bytes(), meta, key)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> "ImagePublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class PublishReport:
    """What a batch publish achieved: per-file failures carry the reason."""

    sent: int = 0
    bytes_sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def iter_image_files(inputs: Iterable[str | os.PathLike], all_files: bool = False) -> Iterator[tuple[Path, Path]]:
    """(file, root) pairs: files as given; folders walked recursively, hidden entries skipped and,
    unless ``all_files``, only image extensions kept (a scraper folder also holds its posts.csv)."""
    for item in inputs:
        root = Path(item)
        if root.is_file():
            yield root, root.parent
        elif root.is_dir():
            for path in walk_visible(root, is_dot_hidden):
                if all_files or path.suffix.lower() in IMAGE_SUFFIXES:
                    yield path, root
        else:
            raise DataError(f"expected an image file or a folder, found nothing at {root}")


class PostsIndex:
    """Rows of a scraper's posts.csv, found by relative file path or by sha256 of the bytes."""

    def __init__(self, csv_path: str | os.PathLike) -> None:
        self.path = Path(csv_path)
        self.by_file: dict[str, dict[str, str]] = {}
        self.by_sha: dict[str, dict[str, str]] = {}
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not ({"file", "sha256"} & set(reader.fieldnames)):
                    raise DataError(f"expected a posts CSV with a 'file' or 'sha256' column at {self.path}, "
                                    f"found columns {reader.fieldnames}")
                for row in reader:
                    row = {k: v for k, v in row.items() if k and v not in (None, "")}
                    if row.get("file"):
                        self.by_file[row["file"].replace("\\", "/")] = row
                    if row.get("sha256"):
                        self.by_sha[row["sha256"].lower()] = row
        except OSError as exc:
            raise DataError(f"cannot read posts CSV {self.path}: {exc}") from None

    def lookup(self, path: Path, root: Path, data: bytes | None = None) -> dict[str, str] | None:
        candidates = [path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name]
        try:
            candidates.append(path.resolve().relative_to(self.path.resolve().parent).as_posix())
        except ValueError:
            pass
        for rel in candidates:
            if rel in self.by_file:
                return self.by_file[rel]
        if data is not None:
            return self.by_sha.get(sha256_hex(data))
        return None


def publish_paths(
    publisher: ImagePublisher,
    files: Sequence[tuple[Path, Path]],
    headers: Mapping[str, str] | None = None,
    posts: PostsIndex | None = None,
    progress: bool = False,
    window: int = 256,
) -> PublishReport:
    """Publish files, confirming each delivery; at most ``window`` sends are awaited at once."""
    from tqdm import tqdm

    report = PublishReport()
    pending: list[tuple[Path, int, Any]] = []
    started = time.perf_counter()
    bar = tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def settle(upto: int) -> None:
        while len(pending) > upto:
            path, size, fut = pending.pop(0)
            try:
                md = fut.get(timeout=publisher.config.timeout_s * 2)
                report.sent += 1
                report.bytes_sent += size
                log.debug("published %s -> %s/%d@%d", path, md.topic, md.partition, md.offset)
            except Exception as exc:  # noqa: BLE001 - reported per file
                report.failed.append((str(path), f"{type(exc).__name__}: {exc}"))
            bar.update(1)

    try:
        for path, root in files:
            try:
                data = path.read_bytes()
                meta: dict[str, str] = {"filename": path.name}
                if posts is not None:
                    row = posts.lookup(path, root, data)
                    if row:
                        meta.update(row)
                    else:
                        log.warning("no posts.csv row for %s", path)
                meta.update(headers or {})
                pending.append((path, len(data), publisher.publish(data, meta)))
            except BrokerError:
                raise
            except (DataError, OSError) as exc:
                report.failed.append((str(path), str(exc)))
                bar.update(1)
                continue
            settle(window)
        publisher.flush()
        settle(0)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------- CLI


def _parse_headers(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"expected --header KEY=VALUE, found {item!r}")
        out[k] = v
    return out


@dataclass(frozen=True)
class PublishRun:
    """One ``meme-publish`` run, built from flags in :func:`main`; ``posts_csv`` (and the
    security files) absolute from here on; the inputs are read at once and named as typed."""

    publisher: PublisherConfig
    inputs: tuple[str, ...]
    posts_csv: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    all_files: bool = False
    create_topic: bool = False
    partitions: int = 1

    def __post_init__(self) -> None:
        absolute_fields(self)


def config_from_args(args: argparse.Namespace) -> PublishRun:
    publisher = PublisherConfig(
        bootstrap_servers=args.bootstrap_servers, topic=args.topic, max_message_bytes=int(args.max_message_bytes),
        security=security_from_args(args), timeout_s=float(args.timeout),
    )
    return PublishRun(publisher, tuple(args.inputs), Path(args.posts_csv) if args.posts_csv else None,
                      _parse_headers(args.header), bool(args.all_files), bool(args.create_topic), int(args.partitions))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-publish",
        description="Publish image files (folders walked recursively) to a Kafka topic, one record per image, "
                    "with confirmed delivery. Exit code 1 if any file failed.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="images or folders of images")
    env_flag(parser, "--bootstrap-servers", envvar="MEMESTREAM_KAFKA_BOOTSTRAP", required=True,
             help="HOST:PORT[,HOST:PORT]")
    env_flag(parser, "--topic", envvar="MEMESTREAM_KAFKA_TOPIC", required=True, help="topic to publish to")
    parser.add_argument("--posts-csv", help="scraper metadata (label,file,sha256,subreddit,id,title,...) "
                                            "attached as headers, matched by relative path or sha256")
    parser.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                        help="a header added to every record (repeatable)")
    env_flag(parser, "--max-message-bytes", envvar="MEMESTREAM_KAFKA_MAX_MESSAGE_BYTES", type=positive_int,
             default=DEFAULT_MAX_MESSAGE_BYTES, help="largest image accepted (the broker must allow it too)")
    parser.add_argument("--all-files", action="store_true",
                        help="in folders, send every non-hidden file, not only image extensions")
    parser.add_argument("--create-topic", action="store_true", help="create the topic first if it is missing")
    parser.add_argument("--partitions", type=positive_int, default=1, help="partitions for --create-topic")
    env_flag(parser, "--timeout", envvar="MEMESTREAM_KAFKA_TIMEOUT", type=float, default=30.0,
             help="seconds to wait for the broker (connect, metadata, each delivery)")
    add_security_flags(parser)
    add_common_flags(parser)
    return parser


def _publish(args: argparse.Namespace) -> int:
    run = config_from_args(args)
    config = run.publisher
    posts = PostsIndex(run.posts_csv) if run.posts_csv else None
    if args.verbose < 2:  # kafka-python logs every reconnect attempt; we report failures ourselves
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    files = list(iter_image_files(run.inputs, run.all_files))
    if not files:
        raise DataError(f"expected image files under {', '.join(run.inputs)}, found none")
    if run.create_topic:
        ensure_topic(config.bootstrap_servers, config.topic, run.partitions, config.security, timeout_s=config.timeout_s)
    with ImagePublisher(config) as publisher:
        report = publish_paths(publisher, files, run.headers, posts, progress=not args.quiet and len(files) >= 20)
    for path, reason in report.failed:
        print(f"meme-publish: failed: {path}: {reason}", file=sys.stderr)
    mb = report.bytes_sent / 1e6
    rate = report.sent / report.seconds if report.seconds else 0.0
    log.info("published %d image(s), %.1f MB to %s in %.1f s (%.0f img/s, %.1f MB/s); %d failed",
             report.sent, mb, config.topic, report.seconds, rate, mb / report.seconds if report.seconds else 0.0,
             len(report.failed))
    return 1 if report.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_publish, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
