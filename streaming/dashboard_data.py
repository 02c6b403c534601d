"""What ``meme-dashboard`` shows, read from the stream's output tables with DuckDB.

:class:`Snapshots` reads every panel in one pass (one scan of each table's Delta snapshot into memory, then
small queries), keeps the newest snapshot for the refresh interval, and turns any problem into
a ``message`` for the page instead of an exception. DuckDB needs no JVM, and ``deltalake``
hands it exactly the files of the committed version (:mod:`streaming.duck`), as every Delta reader sees them.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

#: Rows in the latest-predictions and latest-quarantined panels.
LATEST = 12
#: Batches in the throughput and latency panel.
BATCHES = 30
#: Windows shown in the chart (the newest ones); one slide each.
CHART_WINDOWS = 240


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def _rows(con, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [{n: _jsonable(v) for n, v in zip(names, row)} for row in cur.fetchall()]


def _archive_name(path: str | None) -> str | None:
    """The archived copy of a folder input is ``DATA_DIR/archive/<file name>``."""
    if not path:
        return None
    name = unquote(path.rsplit("/", 1)[-1])
    return name or None


class Snapshots:
    """Reads one consistent-enough snapshot of every panel; one DuckDB connection, one reader at a time."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self._lock = threading.Lock()
        self._con = None
        self._cached: tuple[float, dict[str, Any]] | None = None
        self.last_request = 0.0

    def latest(self, max_age: float) -> dict[str, Any]:
        """The newest snapshot if younger than ``max_age`` seconds, else a new one: a page load
        or poll costs no table scan while the background refresher keeps the cache warm."""
        self.last_request = time.monotonic()
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        return self.refresh()

    def refresh(self) -> dict[str, Any]:
        data = self.snapshot()
        self._cached = (time.monotonic(), data)
        return data

    def _connection(self):
        if self._con is None:
            from streaming import duck

            self._con = duck.connect(threads=2)
        return self._con

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data; problems become a ``message``, never an exception."""
        started = time.perf_counter()
        with self._lock:
            try:
                data = self._read()
            except Exception as exc:  # noqa: BLE001 - the page shows one line, the log has the rest
                log.warning("dashboard snapshot of %s failed: %s", self.output, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                data = {"message": f"could not read {self.output}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}"}
        data["output"] = str(self.output)
        data["generated_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
        data["query_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return data

    def payload(self, image_id: str) -> bytes | None:
        """The stored bytes of one quarantined input (Kafka inputs have no file to show)."""
        from streaming import duck

        with self._lock:
            con = self._connection()
            duck.register_views(con, self.output)
            rows = con.execute("SELECT payload FROM quarantine WHERE image_id = ? AND payload IS NOT NULL LIMIT 1",
                               [image_id]).fetchall()  # fetchall: no unfinished result left on the connection
            row = rows[0] if rows else None
        return bytes(row[0]) if row and row[0] else None

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of one query over the tables' newest versions (views registered afresh, so a label
        written a moment ago is seen)."""
        from streaming import duck

        with self._lock:
            con = self._connection()
            duck.register_views(con, self.output)
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [{n: _jsonable(v) for n, v in zip(names, row)} for row in cur.fetchall()]

    def _read(self) -> dict[str, Any]:
        from streaming import duck

        if not self.output.is_dir():
            return {"message": f"output folder {self.output} does not exist yet: start meme-stream with --output {self.output}"}
        con = self._connection()
        for attempt in (1, 2):
            infos = duck.register_views(con, self.output)
            try:
                return self._panels(con, {i.name: i.files for i in infos})
            except Exception as exc:  # noqa: BLE001 - a file swapped by compaction: list again once
                if attempt == 2 or not duck.vanished_file(exc):
                    raise
        raise AssertionError("unreachable")

    def _panels(self, con, files: dict[str, int]) -> dict[str, Any]:
        # One scan of each table into memory (the columns the panels use), then every panel
        # queries that: 100k predictions in ~0.1 s instead of one Parquet scan per panel.
        con.execute("""CREATE OR REPLACE TEMP TABLE snap_p AS SELECT source, label, error IS NOT NULL AS failed,
            model_version, event_time, processing_time, batch_id FROM predictions""")
        con.execute("""CREATE OR REPLACE TEMP TABLE snap_cc AS SELECT window_start, window_end, label, "count" AS n
            FROM class_counts WHERE label IS NOT NULL""")
        counts = _rows(con, f"""
            WITH recent AS (SELECT DISTINCT window_start FROM snap_cc ORDER BY window_start DESC LIMIT {CHART_WINDOWS})
            SELECT window_start, window_end, label, n FROM snap_cc WHERE window_start IN (SELECT window_start FROM recent)
            ORDER BY window_start, label""")
        totals = _rows(con, "SELECT label, count(*) AS n FROM snap_p WHERE label IS NOT NULL GROUP BY label ORDER BY n DESC, label")
        summary = _rows(con, """
            SELECT count(*) AS predictions, count(*) FILTER (WHERE failed) AS errors,
                   max(processing_time) AS last_processed FROM snap_p""")[0]
        recent_ids = [r["batch_id"] for r in _rows(con, f"""
            SELECT DISTINCT batch_id FROM (SELECT batch_id FROM snap_p ORDER BY processing_time DESC LIMIT {LATEST})""")]
        latest = _rows(con, f"""
            SELECT image_id, source, origin, path, label, confidence, error_code, model_version, processing_time
            FROM predictions WHERE batch_id IN ({", ".join(str(int(b)) for b in recent_ids) or "NULL"})
            ORDER BY processing_time DESC, batch_id DESC, origin LIMIT {LATEST}""")
        for row in latest:
            row["archive_name"] = _archive_name(row.pop("path")) if row["source"] == "folder" else None
        reasons = _rows(con, "SELECT error_code, count(*) AS n FROM quarantine GROUP BY error_code ORDER BY n DESC, error_code")
        quarantined = _rows(con, f"""
            SELECT image_id, origin, error_code, error, quarantine_path, processing_time, payload IS NOT NULL AS has_payload
            FROM quarantine ORDER BY processing_time DESC, origin LIMIT {LATEST}""")
        for row in quarantined:
            qp = row.pop("quarantine_path")
            row["quarantine_name"] = Path(qp).name if qp else None
        batches = _rows(con, f"""
            WITH recent AS (SELECT source, batch_id, max(processing_time) AS processed FROM snap_p GROUP BY source, batch_id
                            ORDER BY processed DESC, batch_id DESC LIMIT {BATCHES + 1})
            SELECT source, batch_id, count(*) AS rows, max(processing_time) AS processed,
                   avg(date_diff('millisecond', event_time, processing_time)) / 1000.0 AS latency_s,
                   quantile_cont(date_diff('millisecond', event_time, processing_time), 0.95) / 1000.0 AS latency_p95_s
            FROM snap_p JOIN recent USING (source, batch_id) GROUP BY source, batch_id
            ORDER BY processed DESC, batch_id DESC""")
        batches.reverse()
        for prev, cur in zip([None, *batches], batches):
            cur["images_per_s"] = None
            if prev is not None and prev["source"] == cur["source"]:
                gap = (datetime.fromisoformat(cur["processed"]) - datetime.fromisoformat(prev["processed"])).total_seconds()
                cur["images_per_s"] = round(cur["rows"] / gap, 2) if gap > 0 else None
        batches = batches[-BATCHES:]
        models = _rows(con, """
            SELECT model_version, count(*) AS n, max(processing_time) AS last_used FROM snap_p
            WHERE model_version IS NOT NULL GROUP BY model_version ORDER BY last_used DESC LIMIT 5""")
        return {
            "files": files, "summary": summary, "counts": counts, "totals": totals, "latest": latest,
            "reasons": reasons, "quarantined": quarantined, "batches": batches, "models": models,
            "model_version": models[0]["model_version"] if models else None,
        }
