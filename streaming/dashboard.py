"""``meme-dashboard``: a local, read-only web page over the stream's output tables.

It shows the rolling class counts per window as a chart, totals per class, the latest
predictions with a thumbnail, quarantined inputs by reason, throughput and latency of
the last batches, and the model version in use; the page refreshes itself while the
stream runs.

Why these pieces:

- the tables are read with DuckDB (:mod:`streaming.duck`): no JVM, a snapshot of 100k
  predictions takes tens of milliseconds, and the file listing skips the hidden and
  retired generations exactly as every other reader does;
- the charts are Plotly: its JavaScript (``plotly.min.js``) ships inside the ``plotly``
  wheel and is served from here, so the page works with no internet (no CDN); it draws
  SVG, so a headless browser test can count the plotted points;
- the server is the standard library's ``http.server``: a handful of GET routes need no
  framework. It binds 127.0.0.1 unless told otherwise, answers only GET/HEAD, and reads
  image files only from DATA_DIR/archive and DATA_DIR/quarantine (names are checked
  and resolved paths must stay inside those folders).
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_float, run_main
from memestream.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
THUMB_SIDE = 160
MAX_THUMB_SOURCE_BYTES = 32 * 1024 * 1024
LATEST = 12
BATCHES = 30
#: Windows shown in the chart (the newest ones); one slide each.
CHART_WINDOWS = 240


@dataclass(frozen=True)
class DashboardConfig:
    """One ``meme-dashboard`` run, built from flags in :func:`main`."""

    output: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8050
    refresh_s: float = 5.0

    def __post_init__(self) -> None:
        absolute_fields(self)


# ---------------------------------------------------------------------------------------
# Reading the tables
# ---------------------------------------------------------------------------------------
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
            row = con.execute("SELECT payload FROM quarantine WHERE image_id = ? AND payload IS NOT NULL LIMIT 1",
                              [image_id]).fetchone()
        return bytes(row[0]) if row and row[0] else None

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


# ---------------------------------------------------------------------------------------
# Files: thumbnails only from the archive and quarantine folders
# ---------------------------------------------------------------------------------------
def safe_file(root: Path, name: str) -> Path | None:
    """``root/name`` if ``name`` is a plain file name whose resolved path stays inside ``root``."""
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\x00")) or name.startswith("."):
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base) or target.parent != base or not target.is_file():
        return None
    return target


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes | None:
    """A small JPEG of an image's bytes, or None when they are not a decodable image."""
    import cv2

    from memestream.decode import BadImage, decode

    try:
        img, _ = decode(data, min_side=side)
    except (BadImage, ValueError):
        return None
    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


class Thumbnails:
    """Thumbnails of archived / quarantined files and quarantine payloads, with a small LRU cache."""

    def __init__(self, data_dir: Path, snapshots: Snapshots, capacity: int = 256) -> None:
        self.roots = {"archive": data_dir / "archive", "quarantine": data_dir / "quarantine"}
        self.snapshots = snapshots
        self._cache: OrderedDict[tuple, bytes | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def _cached(self, key: tuple, make) -> bytes | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return value

    def from_folder(self, kind: str, name: str) -> bytes | None:
        root = self.roots.get(kind)
        path = safe_file(root, name) if root is not None else None
        if path is None:
            return None
        st = path.stat()
        if st.st_size > MAX_THUMB_SOURCE_BYTES:
            return None
        return self._cached((str(path), st.st_mtime_ns, st.st_size), lambda: thumbnail(path.read_bytes()))

    def from_payload(self, image_id: str) -> bytes | None:
        if not image_id or not all(c in "0123456789abcdef" for c in image_id) or len(image_id) > 128:
            return None

        def make() -> bytes | None:
            data = self.snapshots.payload(image_id) if self.snapshots.output.is_dir() else None
            return thumbnail(data) if data else None

        return self._cached(("payload", image_id), make)


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------
def plotly_js_path() -> Path:
    """``plotly.min.js`` as shipped inside the plotly wheel (served locally: no CDN)."""
    try:
        import plotly
    except ImportError:
        raise ConfigError("meme-dashboard needs the 'plotly' package (pip install plotly)") from None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ConfigError(f"the plotly package has no {path.name} at {path.parent}; reinstall plotly")
    return path


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.snapshots = Snapshots(config.output)
        self.thumbs = Thumbnails(config.data_dir, self.snapshots)
        self.plotly_js = plotly_js_path().read_bytes()
        super().__init__((config.host, config.port), Handler)
        self._stop = threading.Event()
        self.snapshots.refresh()  # warm: the first page load needs no table scan
        threading.Thread(target=self._refresher, name="dashboard-refresh", daemon=True).start()

    def _refresher(self) -> None:
        """Re-read the tables every refresh interval while a page is open (a request in the
        last 30 s); an idle dashboard costs nothing."""
        while not self._stop.wait(self.config.refresh_s):
            if time.monotonic() - self.snapshots.last_request < max(30.0, 3 * self.config.refresh_s):
                self.snapshots.refresh()

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "meme-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def _host_allowed(self) -> bool:
        """On a loopback address, answer only requests addressed to a loopback name: a web page
        elsewhere cannot read the dashboard through a DNS name that resolves to 127.0.0.1."""
        if self.server.config.host not in LOOPBACK:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        return name.lower() in LOOPBACK

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: use http://127.0.0.1\n", "text/plain; charset=utf-8")
            return
        try:
            max_age = self.server.config.refresh_s
            if path == "/":
                data = self.server.snapshots.latest(max_age)
                self._send(HTTPStatus.OK, render_page(data, self.server.config).encode(), "text/html; charset=utf-8")
            elif path == "/api/data":
                data = self.server.snapshots.latest(max_age)
                self._send(HTTPStatus.OK, json.dumps(data).encode(), "application/json")
            elif path == "/static/plotly.min.js":
                self._send(HTTPStatus.OK, self.server.plotly_js, "text/javascript; charset=utf-8", cache="max-age=86400")
            elif path.startswith("/thumb/"):
                self._thumb(path[len("/thumb/"):])
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._not_found()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - never a stack trace to the browser
            log.exception("dashboard: %s failed", path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error (see the meme-dashboard log)\n", "text/plain; charset=utf-8")

    def _thumb(self, rest: str) -> None:
        kind, _, raw = rest.partition("/")
        name = unquote(raw)
        if kind == "payload":
            body = self.server.thumbs.from_payload(name)
        elif kind in ("archive", "quarantine"):
            body = self.server.thumbs.from_folder(kind, name)
        else:
            body = None
        if body is None:
            self._not_found()
            return
        self._send(HTTPStatus.OK, body, "image/jpeg", cache="max-age=3600")

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 - read-only


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------
def render_page(data: dict[str, Any], config: DashboardConfig) -> str:
    """The HTML page with the first snapshot embedded (first paint needs no extra request)."""
    initial = json.dumps(data).replace("<", "\\u003c")  # nothing in the data can close or open a tag
    return (
        _PAGE.replace("__TITLE__", html.escape(f"memestream - {config.output}"))
        .replace("__REFRESH_MS__", str(int(config.refresh_s * 1000)))
        .replace("__INITIAL__", initial)
    )


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
 header h1{font-size:18px;margin:0} header .meta{font-size:13px;opacity:.85}
 main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;padding:14px}
 section{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:10px 14px;min-width:0}
 section.wide{grid-column:1/-1} h2{font-size:15px;margin:4px 0 8px}
 table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eceef2}
 td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
 .msg{background:#fff4d6;border:1px solid #f0d48a;padding:8px 12px;border-radius:6px;margin:14px 14px 0}
 .empty{color:#6b7280;font-style:italic;padding:8px 0}
 .cards{display:flex;gap:14px;flex-wrap:wrap} .card{background:#f0f3f8;border-radius:6px;padding:6px 12px}
 .card b{display:block;font-size:20px}
 .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
 figure{margin:0;font-size:12px} figure img,figure .noimg{width:100%;height:110px;object-fit:cover;border-radius:4px;background:#e5e7eb;display:block}
 figure .noimg{display:flex;align-items:center;justify-content:center;color:#6b7280}
 .err{color:#b42318}
</style>
</head>
<body data-state="loading">
<header><h1>memestream</h1>
 <span class="meta">model in use: <b id="model">-</b></span>
 <span class="meta">output: <span id="output"></span></span>
 <span class="meta">updated <span id="updated">-</span> (query <span id="query-ms">-</span> ms)</span></header>
<div id="message" class="msg" hidden></div>
<main>
 <section class="wide"><h2>Summary</h2><div class="cards" id="cards"></div></section>
 <section class="wide"><h2>Rolling class counts per window</h2><div id="counts-chart" style="height:320px"></div><div id="counts-empty" class="empty" hidden></div></section>
 <section><h2>Totals per class</h2><table id="totals"><thead><tr><th>label</th><th class="n">images</th></tr></thead><tbody></tbody></table><div id="totals-empty" class="empty" hidden></div></section>
 <section><h2>Quarantined inputs by reason</h2><table id="reasons"><thead><tr><th>reason</th><th class="n">inputs</th></tr></thead><tbody></tbody></table><div id="reasons-empty" class="empty" hidden></div></section>
 <section class="wide"><h2>Last batches: throughput and latency</h2><div id="batches-chart" style="height:260px"></div>
  <table id="batches"><thead><tr><th>source</th><th class="n">batch</th><th class="n">images</th><th>processed</th><th class="n">images/s</th><th class="n">latency s (mean)</th><th class="n">p95</th></tr></thead><tbody></tbody></table><div id="batches-empty" class="empty" hidden></div></section>
 <section class="wide"><h2>Latest predictions</h2><div class="grid" id="latest"></div><div id="latest-empty" class="empty" hidden></div></section>
 <section class="wide"><h2>Latest quarantined inputs</h2><div class="grid" id="quarantined"></div><div id="quarantined-empty" class="empty" hidden></div></section>
 <section><h2>Model versions</h2><table id="models"><thead><tr><th>version</th><th class="n">predictions</th><th>last used</th></tr></thead><tbody></tbody></table><div id="models-empty" class="empty" hidden></div></section>
</main>
<script id="initial" type="application/json">__INITIAL__</script>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const $ = (id) => document.getElementById(id);
const fmt = (v, d) => (v === null || v === undefined) ? "" : (typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(d ?? 3)) : String(v));
const time = (iso) => iso ? new Date(iso).toLocaleString() : "";
function el(tag, attrs, text) { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) { if (v !== null && v !== undefined) e.setAttribute(k, v); } if (text !== undefined) e.textContent = text; return e; }
function empty(id, rows, text) { const box = $(id + "-empty"); box.hidden = rows.length > 0; box.textContent = text; return rows.length === 0; }
function fillTable(id, rows, cells, emptyText) {
  const body = $(id).tBodies[0]; body.replaceChildren();
  $(id).hidden = empty(id, rows, emptyText);
  for (const r of rows) { const tr = el("tr"); for (const [v, cls, key] of cells(r)) { const td = el("td", {class: cls}, fmt(v)); if (key) tr.dataset[key] = v ?? ""; tr.appendChild(td); } body.appendChild(tr); }
}
function thumb(src, alt) {
  if (!src) return el("div", {class: "noimg"}, "no image");
  const img = el("img", {src: src, alt: alt, loading: "eager", class: "thumb"});
  img.onload = () => { img.dataset.loaded = img.naturalWidth > 0 ? "1" : "0"; };
  img.onerror = () => { img.replaceWith(el("div", {class: "noimg", "data-missing": "1"}, "no image")); };
  return img;
}
function chartCounts(rows) {
  const byLabel = new Map();
  for (const r of rows) { if (!byLabel.has(r.label)) byLabel.set(r.label, {x: [], y: []}); const s = byLabel.get(r.label); s.x.push(r.window_end); s.y.push(r.n); }
  const traces = [...byLabel.entries()].map(([label, s]) => ({name: label, x: s.x, y: s.y, type: "scatter", mode: "lines+markers", marker: {size: 5}}));
  const box = $("counts-chart"); box.dataset.points = String(rows.length); box.dataset.series = String(traces.length);
  box.hidden = empty("counts", rows, "No class counts yet: they appear once meme-stream has classified images.");
  if (!box.hidden) Plotly.react(box, traces, {margin: {t: 10, r: 10, b: 40, l: 50}, xaxis: {title: {text: "window end"}}, yaxis: {title: {text: "images in window"}, rangemode: "tozero"}, legend: {orientation: "h"}}, {displaylogo: false, responsive: true});
}
function chartBatches(rows) {
  const box = $("batches-chart"); box.hidden = rows.length === 0;
  if (box.hidden) return;
  const x = rows.map(r => r.processed);
  Plotly.react(box, [
    {name: "images/s", x: x, y: rows.map(r => r.images_per_s), type: "bar", yaxis: "y"},
    {name: "latency s (mean)", x: x, y: rows.map(r => r.latency_s), type: "scatter", mode: "lines+markers", yaxis: "y2"}],
    {margin: {t: 10, r: 50, b: 40, l: 50}, yaxis: {title: {text: "images/s"}}, yaxis2: {title: {text: "latency s"}, overlaying: "y", side: "right", rangemode: "tozero"}, legend: {orientation: "h"}},
    {displaylogo: false, responsive: true});
}
let last = null;
function charts(d) {
  if (typeof Plotly === "undefined") return;  // still loading: drawn by its onload
  chartCounts(d.counts || []); chartBatches(d.batches || []);
}
function render(d) {
  last = d;
  $("output").textContent = d.output || ""; $("updated").textContent = time(d.generated_at); $("query-ms").textContent = fmt(d.query_ms, 0);
  const msg = $("message"); msg.hidden = !d.message; msg.textContent = d.message || "";
  $("model").textContent = d.model_version || "none yet";
  const s = d.summary || {};
  $("cards").replaceChildren(...[["predictions", s.predictions], ["quarantined", s.errors], ["classes", (d.totals || []).length], ["last batch", time(s.last_processed)]]
    .map(([k, v]) => { const c = el("div", {class: "card", "data-card": k}); c.appendChild(el("b", {}, fmt(v ?? 0))); c.appendChild(document.createTextNode(k)); return c; }));
  charts(d);
  fillTable("totals", d.totals || [], r => [[r.label, "", "label"], [r.n, "n", "count"]], "No predictions yet.");
  fillTable("reasons", d.reasons || [], r => [[r.error_code, "err", "reason"], [r.n, "n", "count"]], "Nothing quarantined.");
  const batches = d.batches || [];
  fillTable("batches", batches.slice().reverse(), r => [[r.source], [r.batch_id, "n"], [r.rows, "n"], [time(r.processed)], [r.images_per_s, "n"], [r.latency_s, "n"], [r.latency_p95_s, "n"]], "No batches yet.");
  fillTable("models", d.models || [], r => [[r.model_version, "", "version"], [r.n, "n"], [time(r.last_used)]], "No model has been used yet.");
  const latest = d.latest || []; $("latest").replaceChildren(); empty("latest", latest, "No predictions yet.");
  for (const r of latest) {
    const f = el("figure", {"data-image-id": r.image_id});
    f.appendChild(thumb(r.archive_name ? "/thumb/archive/" + encodeURIComponent(r.archive_name) : null, r.origin || ""));
    const cap = el("figcaption"); cap.appendChild(el("b", {class: r.label ? "" : "err"}, r.label || r.error_code || "?"));
    cap.appendChild(document.createTextNode(r.label ? " " + fmt(r.confidence, 2) : "")); cap.appendChild(el("br"));
    cap.appendChild(document.createTextNode(r.origin || r.image_id.slice(0, 12))); f.appendChild(cap); $("latest").appendChild(f);
  }
  const q = d.quarantined || []; $("quarantined").replaceChildren(); empty("quarantined", q, "Nothing quarantined.");
  for (const r of q) {
    const src = r.quarantine_name ? "/thumb/quarantine/" + encodeURIComponent(r.quarantine_name) : (r.has_payload ? "/thumb/payload/" + r.image_id : null);
    const f = el("figure", {"data-image-id": r.image_id}); f.appendChild(thumb(src, r.origin || ""));
    const cap = el("figcaption"); cap.appendChild(el("b", {class: "err"}, r.error_code || "error")); cap.appendChild(el("br"));
    cap.appendChild(document.createTextNode(r.origin || "")); cap.title = r.error || ""; f.appendChild(cap); $("quarantined").appendChild(f);
  }
}
function plotlyLoaded() {
  if (last) charts(last);
  document.body.dataset.chartMs = performance.now().toFixed(0);
  document.body.dataset.state = "ready";
}
function first() {
  render(JSON.parse($("initial").textContent));
  document.body.dataset.renderMs = performance.now().toFixed(0);
  requestAnimationFrame(() => { document.body.dataset.paintMs = performance.now().toFixed(0); });
  // the charting library (4.6 MB) loads after the tables and cards are on screen
  const js = document.createElement("script"); js.src = "/static/plotly.min.js"; js.onload = plotlyLoaded;
  js.onerror = () => { const m = $("message"); m.hidden = false; m.textContent = "plotly.min.js did not load: charts unavailable"; };
  document.head.appendChild(js);
  setInterval(async () => {
    try { const r = await fetch("/api/data", {cache: "no-store"}); if (r.ok) render(await r.json()); }
    catch (e) { const msg = $("message"); msg.hidden = false; msg.textContent = "meme-dashboard is not answering (" + e + "); retrying"; }
  }, REFRESH_MS);
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", first); else first();
</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-dashboard",
        description="Serve a local, read-only web page over meme-stream's output: rolling class counts, totals, "
        "latest predictions with thumbnails, quarantine reasons, batch throughput/latency, model version. "
        "It refreshes itself while the stream runs.",
        epilog="examples:\n  meme-dashboard --output memestream-data/output      # then open http://127.0.0.1:8050\n"
        "  meme-dashboard --output out --data-dir data --port 8060 --refresh 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", required=True, help="meme-stream's --output folder")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_DATA_DIR", default=None,
             help="meme-stream's --data-dir, where archive/ and quarantine/ hold the thumbnails' images "
             "(default: the folder that contains --output)")
    env_flag(parser, "--host", envvar="MEMESTREAM_DASHBOARD_HOST", default="127.0.0.1",
             help="address to listen on (default: 127.0.0.1, this machine only)")
    env_flag(parser, "--port", envvar="MEMESTREAM_DASHBOARD_PORT", type=int, default=8050, help="port (0 = any free port)")
    env_flag(parser, "--refresh", envvar="MEMESTREAM_DASHBOARD_REFRESH", type=positive_float, default=5.0,
             help="seconds between page refreshes")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> DashboardConfig:
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; expected meme-stream's --output folder")
    if not 0 <= int(args.port) <= 65535:
        raise ConfigError(f"--port expects 0-65535, found {args.port}")
    data_dir = Path(args.data_dir) if args.data_dir else output.resolve().parent
    return DashboardConfig(output, data_dir, args.host, int(args.port), float(args.refresh))


def serve(config: DashboardConfig) -> DashboardServer:
    """Bind the server (not yet serving); a port in use is a clear error."""
    try:
        return DashboardServer(config)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    server = serve(config)
    if config.host not in LOOPBACK:
        log.warning("listening on %s: anyone who can reach this address can read the dashboard", config.host)
    print(f"meme-dashboard: {server.url} (output {config.output}, images from {config.data_dir}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
