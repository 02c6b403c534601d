"""People's labels: the ``labels`` Delta table beside the stream's outputs, and the images they name.

A person who reads the stream's output corrects a label (the dashboard's review queue, or
``meme-label`` from the shell); training then learns from it (``meme-train --labels``).
What this module guarantees, and why:

- **Append-only, the latest row wins.** A correction never rewrites history: each row says
  who changed which image from what to what, with which model, and when. Readers take the
  newest row per image (the ``current_labels`` view). The table is created with
  ``delta.appendOnly``, so Delta itself refuses an update or delete.
- **One row per request.** Every write carries a request id (the page makes one per click;
  ``meme-label`` one per run). A request id already in the table, or one being written by this
  process, writes nothing: a double-submitted click is one row. The check and the append run
  under one lock per process; Delta appends never conflict, so a second process may append at
  the same time.
- **Only images the stream has seen.** The image id must be in ``predictions`` (its sha256),
  and a label name must be 1-64 letters, digits, ``_`` or ``-``: it becomes a class name and a
  folder name in training.
- **The bytes are kept.** Training needs the image, and the stream's archive and quarantine are
  subject to the operator's clean-up. At labelling time a copy goes to
  ``DATA_DIR/labelled/<image_id><ext>`` (from the archive folder, the quarantine folder or the
  quarantine table's payload, checked against the sha256). Retention and compaction never
  touch ``labelled/`` nor the ``labels`` table. A Kafka input's bytes are read back from the
  topic at its offset (``origin`` = topic/partition/offset) when the writer is given the
  brokers, while the topic still retains the record; otherwise its row says it has no copy
  (``image_path`` NULL).

Written with ``deltalake`` (delta-rs): no JVM, so the dashboard and ``meme-label`` start in a
fraction of a second; Spark, DuckDB and every Delta reader read the table.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from memestream.abspath import is_uri
from memestream.errors import DataError
from streaming import schema

log = logging.getLogger(__name__)

LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
IMAGE_ID_RE = re.compile(r"[0-9a-f]{64}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
LABELLER_MAX = 128
HOW = ("review", "cli", "import")
#: Folder under DATA_DIR where labelled images are copied.
LABELLED_DIR = "labelled"
#: How training names a labelled image (``_stream_labels/<file in labelled/>``): never a class folder.
TRAINING_PREFIX = "_stream_labels"
#: Properties of the labels table: append-only (Delta refuses updates and deletes), the same
#: log retention as the stream's tables. No upkeep pass checkpoints it and labels commit
#: rarely, so Delta's own interval stays short here.
TABLE_PROPERTIES = {
    "delta.appendOnly": "true",
    "delta.logRetentionDuration": "interval 7 days",
    "delta.checkpointInterval": "20",
}
_IMAGE_EXTS = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"BM": ".bmp", b"II*\x00": ".tif",
               b"MM\x00*": ".tif"}


class LabelError(DataError):
    """A label request that cannot be written: what was expected, what was found."""


def check_label(name: str) -> str:
    """A label name as a class and folder name: 1-64 letters, digits, ``_`` or ``-``."""
    if not isinstance(name, str) or not LABEL_RE.fullmatch(name):
        raise LabelError(f"label names are 1-64 letters, digits, '_' or '-' (they become class and folder names), "
                         f"found {name!r}")
    return name


def check_image_id(image_id: str) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID_RE.fullmatch(image_id):
        raise LabelError(f"image ids are the 64 hex digits of the image's sha256 (the predictions' image_id), "
                         f"found {str(image_id)[:80]!r}")
    return image_id


@dataclass(frozen=True)
class LabelRequest:
    """One label to write. ``request_id`` makes a retried or double-submitted request one row.
    ``label`` None withdraws the image's label (the review queue's undo): the row is kept, and
    ``current_labels`` then has no label for the image."""

    image_id: str
    label: str | None
    labeller: str = "unknown"
    how: str = "cli"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        check_image_id(self.image_id)
        if self.label is not None:
            check_label(self.label)
        if self.how not in HOW:
            raise LabelError(f"how must be one of {', '.join(HOW)}, found {self.how!r}")
        if not REQUEST_ID_RE.fullmatch(self.request_id or ""):
            raise LabelError(f"request ids are 1-128 letters, digits or '_.:-', found {self.request_id!r}")
        if not self.labeller or len(self.labeller) > LABELLER_MAX or any(ord(c) < 32 for c in self.labeller):
            raise LabelError(f"the labeller is a name of 1-{LABELLER_MAX} printable characters, found {self.labeller!r}")


@dataclass(frozen=True)
class LabelResult:
    """What one request did: ``written`` is False for a request id already recorded."""

    request: LabelRequest
    written: bool
    previous_label: str | None
    model_version: str | None
    image_path: str | None


_ORIGIN_RE = re.compile(r"([A-Za-z0-9._-]{1,249})/(\d{1,6})/(\d{1,19})")


@dataclass(frozen=True)
class KafkaRecords:
    """Where the stream's Kafka inputs can be read back: the brokers and the client security."""

    bootstrap_servers: str
    security: "object | None" = None  # memestream.kafka.KafkaSecurity
    timeout_s: float = 10.0

    def fetch(self, origin: str) -> bytes | None:
        """The value of the record at ``topic/partition/offset``, or None (gone with the topic's
        retention, or the brokers unreachable: a label never fails for want of a copy)."""
        match = _ORIGIN_RE.fullmatch(origin or "")
        if match is None:
            return None
        from kafka import KafkaConsumer, TopicPartition

        from memestream.kafka import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES, bootstrap_list

        topic, partition, offset = match.group(1), int(match.group(2)), int(match.group(3))
        extra = self.security.kwargs() if self.security is not None else {}  # type: ignore[attr-defined]
        try:
            consumer = KafkaConsumer(bootstrap_servers=bootstrap_list(self.bootstrap_servers), enable_auto_commit=False,
                                     group_id=None, max_partition_fetch_bytes=DEFAULT_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES,
                                     fetch_max_bytes=DEFAULT_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES,
                                     request_timeout_ms=int(self.timeout_s * 1000) + 1000, **extra)
        except Exception as exc:  # noqa: BLE001 - no broker: the label is written without a copy
            log.warning("labels: cannot reach Kafka at %s to keep %s: %s", self.bootstrap_servers, origin, exc)
            return None
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=500).get(tp, []):
                    if record.offset == offset:
                        return record.value
                    if record.offset > offset:  # compacted or deleted: not there any more
                        return None
            return None
        except Exception as exc:  # noqa: BLE001 - the copy is best effort, the label is not
            log.warning("labels: could not read %s back from Kafka: %s", origin, exc)
            return None
        finally:
            consumer.close()


@dataclass(frozen=True)
class _Seen:
    """What the stream recorded about one image: its newest prediction and where its bytes are."""

    label: str | None
    model_version: str | None
    source: str | None
    path: str | None
    quarantine_path: str | None
    origin: str | None = None


def _ext(data: bytes, name: str | None) -> str:
    for magic, ext in _IMAGE_EXTS.items():
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    suffix = Path(name or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"


class LabelStore:
    """Writes and reads the ``labels`` table under one ``--output``; one per process."""

    def __init__(self, output: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                 kafka: KafkaRecords | None = None) -> None:
        self.kafka = kafka
        self.output = schema.local_folder(output, "labels are written to a local --output folder for now")
        self.data_dir = Path(data_dir) if data_dir is not None else self.output.parent
        self.uri = schema.table_uri(self.output, schema.LABELS)
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        from streaming import duck

        con = duck.connect(threads=1)
        try:
            duck.register_views(con, self.output)
            return con.execute(sql, list(params or [])).fetchall()
        finally:
            con.close()

    def _seen(self, image_ids: Sequence[str]) -> dict[str, _Seen]:
        """The newest prediction of each image id, and its quarantine copy if any."""
        if not image_ids:
            return {}
        marks = ", ".join("?" for _ in image_ids)
        rows = self._query(f"""
            WITH p AS (SELECT image_id, label, model_version, source, path, origin,
                              ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY processing_time DESC) AS rn
                       FROM predictions WHERE image_id IN ({marks})),
                 q AS (SELECT image_id, max(quarantine_path) AS quarantine_path FROM quarantine
                       WHERE image_id IN ({marks}) GROUP BY image_id)
            SELECT p.image_id, p.label, p.model_version, p.source, p.path, q.quarantine_path, p.origin
            FROM p LEFT JOIN q USING (image_id) WHERE rn = 1""", [*image_ids, *image_ids])
        return {r[0]: _Seen(*r[1:]) for r in rows}

    def current(self, image_ids: Sequence[str] | None = None) -> dict[str, str]:
        """The label people gave each image (the latest row per image, unless withdrawn)."""
        if image_ids is not None and not image_ids:
            return {}
        where = f"WHERE image_id IN ({', '.join('?' for _ in image_ids)})" if image_ids else ""
        return dict(self._query(f"SELECT image_id, label FROM {schema.CURRENT_LABELS} {where}", image_ids or []))

    def _recorded_requests(self, request_ids: Sequence[str]) -> set[str]:
        marks = ", ".join("?" for _ in request_ids)
        return {r[0] for r in self._query(f"SELECT DISTINCT request_id FROM labels WHERE request_id IN ({marks})",
                                          request_ids)}

    def rows(self) -> pa.Table:
        """Every row of the labels table (empty, with its columns, before the first label)."""
        return schema.read_table(self.output, schema.LABELS)

    # -- the bytes ------------------------------------------------------------------------
    def _payload(self, image_id: str) -> bytes | None:
        rows = self._query("SELECT payload FROM quarantine WHERE image_id = ? AND payload IS NOT NULL LIMIT 1",
                           [image_id])
        return bytes(rows[0][0]) if rows and rows[0][0] else None

    def _candidates(self, image_id: str, seen: _Seen) -> Iterable[tuple[str, bytes | None]]:
        from memestream.inputs import local_path

        names: list[Path] = []
        if seen.path and seen.source == "folder":
            original = Path(local_path(seen.path)) if is_uri(seen.path) else Path(seen.path)
            names += [self.data_dir / "archive" / original.name, original]
        if seen.quarantine_path:
            names.append(Path(seen.quarantine_path))
        for path in names:
            try:
                yield path.name, path.read_bytes()
            except OSError:
                continue
        yield "payload", self._payload(image_id)
        if seen.source == "kafka" and self.kafka is not None and seen.origin:
            yield "kafka", self.kafka.fetch(seen.origin)

    def keep_bytes(self, image_id: str, seen: _Seen) -> str | None:
        """Copy the image into ``DATA_DIR/labelled/`` (once); its path there, or None when no
        stored copy matches the image id."""
        folder = self.data_dir / LABELLED_DIR
        existing = sorted(folder.glob(f"{image_id}.*")) if folder.is_dir() else []
        if existing:
            return str(existing[0])
        for name, data in self._candidates(image_id, seen):
            if data and hashlib.sha256(data).hexdigest() == image_id:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{image_id}{_ext(data, name)}"
                tmp = folder / f".{target.name}.{uuid.uuid4().hex}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, target)
                return str(target)
        return None

    # -- writing --------------------------------------------------------------------------
    def submit(self, requests: Sequence[LabelRequest]) -> list[LabelResult]:
        """Write every request not already recorded, in one Delta commit; all or nothing."""
        if not requests:
            return []
        ids = list(dict.fromkeys(r.image_id for r in requests))
        with self._lock:
            seen = self._seen(ids)
            missing = [i for i in ids if i not in seen]
            if missing:
                shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                raise LabelError(f"no prediction has image_id {shown}: label images the stream has classified "
                                 f"(see SELECT image_id FROM predictions)")
            recorded = self._recorded_requests(list({r.request_id for r in requests}))
            people = self.current(ids)
            results: list[LabelResult] = []
            new_rows: list[dict] = []
            start = datetime.now(timezone.utc)
            for number, req in enumerate(requests):
                now = start + timedelta(microseconds=number)  # rows of one call keep their order
                if req.request_id in recorded:
                    results.append(LabelResult(req, False, None, seen[req.image_id].model_version, None))
                    continue
                recorded.add(req.request_id)  # the same id twice in one call is one row too
                s = seen[req.image_id]
                previous = people.get(req.image_id, s.label)
                if req.label is None:
                    people.pop(req.image_id, None)
                else:
                    people[req.image_id] = req.label  # one image twice in a CSV: the later row's previous
                kept = self.keep_bytes(req.image_id, s) if req.label is not None else None
                new_rows.append({
                    "image_id": req.image_id, "label": req.label, "previous_label": previous,
                    "model_version": s.model_version, "labeller": req.labeller, "labelled_at": now,
                    "how": req.how, "request_id": req.request_id, "image_path": kept, schema.DATE: now.date(),
                })
                results.append(LabelResult(req, True, previous, s.model_version, kept))
            if new_rows:
                self._append(new_rows)
        return results

    def _append(self, rows: list[dict]) -> None:
        from deltalake import write_deltalake

        table = pa.Table.from_pylist(rows, schema=schema.arrow_schema(schema.LABELS))
        first = not (self.output / schema.LABELS / "_delta_log").is_dir()
        self.output.mkdir(parents=True, exist_ok=True)
        try:
            write_deltalake(self.uri, table, mode="append", partition_by=[schema.DATE],
                            configuration=TABLE_PROPERTIES if first else None)
        except Exception as exc:  # noqa: BLE001 - two first writers: the loser appends to the winner's table
            if not first or "exists" not in str(exc).lower():
                raise
            write_deltalake(self.uri, table, mode="append", partition_by=[schema.DATE])
        log.info("labels: %d row(s) appended to %s", len(rows), self.uri)
