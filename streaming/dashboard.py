"""``meme-dashboard``: a local web page over the stream's output tables, and its review queue.

It shows the rolling class counts per window as a chart, totals per class, the latest
predictions with a thumbnail, quarantined inputs by reason, throughput and latency of
the last batches, and the model version in use; the page refreshes itself while the
stream runs. ``/review`` is the review queue (:mod:`streaming.review`): people correct
labels, which land in the ``labels`` table (:mod:`streaming.labels`).

Why these pieces:

- the tables are read with DuckDB (:mod:`streaming.dashboard_data`): no JVM, a snapshot of
  100k predictions takes tens of milliseconds, and the file listing skips the hidden and
  retired generations exactly as every other reader does;
- the page is package data (``streaming/static/``: an HTML template, its stylesheet and its
  script), served from here; the first snapshot is embedded in the HTML, so the first
  paint needs no data request;
- the charts are Plotly: its JavaScript (``plotly.min.js``) ships inside the ``plotly``
  wheel and is served from here, so the page works with no internet (no CDN); it draws
  SVG, so a headless browser test can count the plotted points;
- the server is the standard library's ``http.server``: a handful of routes need no
  framework. It reads image files only from DATA_DIR/archive and DATA_DIR/quarantine (names
  are checked and resolved paths must stay inside those folders).

Security, now that the page writes labels:

- it binds 127.0.0.1 by default, and there answers only requests addressed to a loopback
  name (a page elsewhere cannot reach it through a DNS name that resolves to 127.0.0.1);
- on any other address every request needs the token (``--token``,
  ``MEMESTREAM_DASHBOARD_TOKEN``, or one generated and printed once at start): a
  ``?token=`` link sets an HttpOnly, SameSite=Strict cookie, scripts send
  ``X-Memestream-Token``;
- a write (``POST /api/label``) always needs the token in the ``X-Memestream-Token`` header
  (a cookie alone never authorises a write: that is what a cross-site form would carry), a
  JSON body, and, when the browser says where the request comes from (``Origin``,
  ``Sec-Fetch-Site``), this very origin. The review page carries the token for its own requests;
- label names and image ids are validated by :mod:`streaming.labels` (a valid class name;
  an image the stream classified).
"""
from __future__ import annotations

import argparse
import functools
import hmac
import html
import importlib.resources
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_float, run_main, stop_signals
from memestream.errors import ConfigError
from memestream.hidden import is_dot_hidden
from streaming import review
from streaming.dashboard_data import Snapshots
from memestream.kafka import add_security_flags, security_from_args
from streaming.labels import KafkaRecords, LabelError, LabelRequest, LabelStore

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
THUMB_SIDE = 160
MAX_THUMB_SOURCE_BYTES = 32 * 1024 * 1024
#: The page: an HTML template (title, refresh interval and first snapshot filled in per request)
#: and the stylesheet and script it links, all package data in ``streaming/static/``.
PAGE_FILE = "dashboard.html"
REVIEW_FILE = "review.html"
STATIC_TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
                "review.js": "text/javascript; charset=utf-8"}
#: Header and cookie that carry the token.
TOKEN_HEADER = "X-Memestream-Token"
TOKEN_COOKIE = "memestream_token"
#: Largest label request body accepted (a label is a few hundred bytes).
MAX_BODY = 16 * 1024
#: Side of the large image on the review page.
REVIEW_SIDE = 480
PLOTLY_JS = "plotly.min.js"


@dataclass(frozen=True)
class DashboardConfig:
    """One ``meme-dashboard`` run, built from flags in :func:`main`."""

    output: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8050
    refresh_s: float = 5.0
    #: The secret for writes (and for any request off loopback); never shown in a repr.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    #: Whether the token came from --token / the environment (then it is never printed).
    token_given: bool = False
    #: The model store whose versions explain labels (nearest training memes); default DATA_DIR/models.
    model_dir: Path | None = None
    #: Where Kafka inputs are read back (thumbnails, kept bytes of labelled ones); None: not at all.
    kafka: Any = None  # streaming.labels.KafkaRecords

    def __post_init__(self) -> None:
        absolute_fields(self)

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


# ---------------------------------------------------------------------------------------
# Files: thumbnails only from the archive and quarantine folders
# ---------------------------------------------------------------------------------------
def safe_file(root: Path, name: str) -> Path | None:
    """``root/name`` if ``name`` is a plain file name whose resolved path stays inside ``root``."""
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\x00")) or is_dot_hidden(name):
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

    def __init__(self, data_dir: Path, snapshots: Snapshots, capacity: int = 256, kafka: Any = None) -> None:
        self.kafka = kafka
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

    def from_folder(self, kind: str, name: str, side: int = THUMB_SIDE) -> bytes | None:
        root = self.roots.get(kind)
        path = safe_file(root, name) if root is not None else None
        if path is None:
            return None
        st = path.stat()
        if st.st_size > MAX_THUMB_SOURCE_BYTES:
            return None
        return self._cached((str(path), st.st_mtime_ns, st.st_size, side), lambda: thumbnail(path.read_bytes(), side))

    def kafka_bytes(self, origin: str) -> bytes | None:
        """A Kafka input's bytes, read back from its topic at its offset (None without brokers)."""
        if self.kafka is None:
            return None
        return self.kafka.fetch(origin)

    def from_kafka(self, origin: str, side: int = THUMB_SIDE) -> bytes | None:
        return self._cached(("kafka", origin, side), lambda: (lambda d: thumbnail(d, side) if d else None)(self.kafka_bytes(origin)))

    def file_bytes(self, row: dict[str, Any]) -> bytes | None:
        """The stored bytes of an input (for near-duplicate hashes): a folder input's archived
        copy, or a Kafka input read back from its topic; None when neither is available."""
        if row.get("source") == "kafka" and row.get("origin"):
            return self.kafka_bytes(str(row["origin"]))
        path = review.archive_file(self.roots["archive"].parent, row)
        path = safe_file(path.parent, path.name) if path is not None else None
        if path is None or path.stat().st_size > MAX_THUMB_SOURCE_BYTES:
            return None
        return path.read_bytes()

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
    # Request threads are joined on close, and so is the refresher: a thread still inside
    # DuckDB or deltalake (native code) when the interpreter exits is cut down mid-call,
    # which aborts the process ("terminate called ... exception not rethrown").
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.snapshots = Snapshots(config.output)
        self.thumbs = Thumbnails(config.data_dir, self.snapshots, kafka=config.kafka)
        self.labels = LabelStore(config.output, config.data_dir, config.kafka)
        self.dhashes = review.DHashes(self.thumbs.file_bytes)
        self.explainer = review.Explainer(config.model_dir or config.data_dir / "models")
        self.plotly_js = plotly_js_path().read_bytes()
        super().__init__((config.host, config.port), Handler)
        self._stop = threading.Event()
        self.snapshots.refresh()  # warm: the first page load needs no table scan
        self._refresh_thread = threading.Thread(target=self._refresher, name="dashboard-refresh", daemon=True)
        self._refresh_thread.start()

    def _refresher(self) -> None:
        """Re-read the tables every refresh interval while a page is open (a request in the
        last 30 s); an idle dashboard costs nothing."""
        while not self._stop.wait(self.config.refresh_s):
            if time.monotonic() - self.snapshots.last_request < max(30.0, 3 * self.config.refresh_s):
                self.snapshots.refresh()

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()  # joins the request threads (block_on_close)
        self._refresh_thread.join(timeout=30)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "meme-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")  # no clickjacking of the review keys
        self.send_header("Referrer-Policy", "no-referrer")  # a ?token= link never leaks onwards
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str) -> None:
        self._send(status, (text.rstrip("\n") + "\n").encode(), "text/plain; charset=utf-8")

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _not_found(self) -> None:
        self._text(HTTPStatus.NOT_FOUND, "not found")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    # -- who may ask --------------------------------------------------------------------
    def _host_allowed(self) -> bool:
        """On a loopback address, answer only requests addressed to a loopback name: a web page
        elsewhere cannot read the dashboard through a DNS name that resolves to 127.0.0.1."""
        if not self.server.config.loopback:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        return name.lower() in LOOPBACK

    def _token_matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.server.config.token.encode())

    def _presented_token(self) -> str | None:
        """The token a request carries: the header, a bearer token or the cookie."""
        header = self.headers.get(TOKEN_HEADER)
        if header:
            return header.strip()
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return value.strip()
        return None

    def _read_allowed(self) -> bool:
        return self.server.config.loopback or self._token_matches(self._presented_token())

    def _same_origin(self) -> str | None:
        """Why a write is refused on its origin, or None when it comes from this page."""
        site = self.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            return f"Sec-Fetch-Site is {site!r}; writes come from this dashboard's own page"
        origin = self.headers.get("Origin")
        if origin is not None:
            expected = f"http://{(self.headers.get('Host') or '').strip()}"
            if origin.rstrip("/").lower() != expected.lower():
                return f"Origin {origin!r} is not this dashboard ({expected})"
        return None

    # -- GET ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        path = parts.path
        if not self._host_allowed():
            self._text(HTTPStatus.FORBIDDEN, "forbidden: use http://127.0.0.1")
            return
        try:
            if path == "/healthz":
                self._text(HTTPStatus.OK, "ok")
                return
            query = parse_qs(parts.query)
            link_token = (query.get("token") or [None])[-1]
            if link_token is not None and path in ("/", "/review"):
                self._token_link(path, link_token)
                return
            if not self._read_allowed():
                self._text(HTTPStatus.UNAUTHORIZED, "token required: open the link meme-dashboard printed at start, "
                           f"or send the {TOKEN_HEADER} header")
                return
            max_age = self.server.config.refresh_s
            if path == "/":
                data = self.server.snapshots.latest(max_age)
                self._send(HTTPStatus.OK, render_page(data, self.server.config).encode(), "text/html; charset=utf-8")
            elif path == "/review":
                self._send(HTTPStatus.OK, render_review(self.server.config).encode(), "text/html; charset=utf-8")
            elif path == "/api/data":
                self._json(HTTPStatus.OK, self.server.snapshots.latest(max_age))
            elif path == "/api/review":
                self._review(query)
            elif path == "/api/explain":
                self._explain(query)
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path.startswith("/thumb/"):
                self._thumb(path[len("/thumb/"):], query)
            else:
                self._not_found()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - never a stack trace to the browser
            log.exception("dashboard: %s failed", path)
            self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the meme-dashboard log)")

    def _token_link(self, path: str, token: str) -> None:
        """``/?token=...``: a right token becomes a cookie and the address loses it (history, referrers)."""
        if not self._token_matches(token):
            self._text(HTTPStatus.UNAUTHORIZED, "wrong token in the link")
            return
        cookie = f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain; charset=utf-8", headers={"Location": path, "Set-Cookie": cookie})

    def _static(self, name: str) -> None:
        """The page's own files (looked up by exact name, never as a path) and plotly.min.js."""
        if name == PLOTLY_JS:
            self._send(HTTPStatus.OK, self.server.plotly_js, "text/javascript; charset=utf-8", cache="max-age=86400")
        elif name in STATIC_TYPES:
            # no-cache: an upgraded package's page never runs yesterday's script
            self._send(HTTPStatus.OK, static_file(name), STATIC_TYPES[name], cache="no-cache")
        else:
            self._not_found()

    def _thumb(self, rest: str, query: dict[str, list[str]]) -> None:
        kind, _, raw = rest.partition("/")
        name = unquote(raw)
        side = REVIEW_SIDE if (query.get("size") or [""])[-1] == "large" else THUMB_SIDE
        if kind == "payload":
            body = self.server.thumbs.from_payload(name)
        elif kind == "kafka":  # /thumb/kafka/<topic>/<partition>/<offset>
            body = self.server.thumbs.from_kafka(name, side)
        elif kind == "train":  # /thumb/train/<version>/<reference row>
            version, _, index = name.partition("/")
            path = self.server.explainer.training_file(version, int(index)) if index.isdigit() else None
            body = thumbnail(path.read_bytes()) if path is not None and path.stat().st_size <= MAX_THUMB_SOURCE_BYTES else None
        elif kind in ("archive", "quarantine"):
            body = self.server.thumbs.from_folder(kind, name, side)
        else:
            body = None
        if body is None:
            self._not_found()
            return
        self._send(HTTPStatus.OK, body, "image/jpeg", cache="max-age=3600")

    def _review(self, query: dict[str, list[str]]) -> None:
        try:
            flt = review.ReviewFilter.from_query(query)
        except ConfigError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        if not self.server.config.output.is_dir():
            self._json(HTTPStatus.OK, {"items": [], "classes": [], "message": "no output yet"})
            return
        sql, params = review.candidates_sql(flt, flt.limit * review.POOL_FACTOR)
        rows = self.server.snapshots.query(sql, params)
        groups = review.near_duplicate_ids(rows, self.server.dhashes)
        items = review.spread(rows, groups, flt.limit)
        for item in items:
            archived = review.archive_file(self.server.config.data_dir, item)
            item["archive_name"] = archived.name if archived is not None else None
            item["kafka_origin"] = item["origin"] if item.get("source") == "kafka" and self.server.config.kafka else None
            item.pop("path", None)
        classes = [r["label"] for r in self.server.snapshots.query(
            "SELECT label FROM (SELECT label FROM predictions WHERE label IS NOT NULL UNION SELECT label FROM current_labels) "
            "GROUP BY label ORDER BY label")]
        self._json(HTTPStatus.OK, {"items": items, "classes": classes})

    def _explain(self, query: dict[str, list[str]]) -> None:
        """The training memes nearest to an archived image, under the model version that labelled it."""
        version = (query.get("version") or [""])[-1]
        name = (query.get("archive") or [""])[-1]
        origin = (query.get("kafka") or [""])[-1]
        data = None
        if origin:
            data = self.server.thumbs.kafka_bytes(origin)
        else:
            path = safe_file(self.server.thumbs.roots["archive"], name)
            if path is not None and path.stat().st_size <= MAX_THUMB_SOURCE_BYTES:
                data = path.read_bytes()
        if not data:
            self._json(HTTPStatus.OK, {"nearest": [], "message": "no stored image to compare"})
            return
        nearest = self.server.explainer.nearest(version, data)
        for item in nearest:
            item["thumb"] = f"/thumb/train/{version}/{item['index']}"
        self._json(HTTPStatus.OK, {"nearest": nearest, "version": version})

    # -- POST ---------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        try:
            if not self._host_allowed():
                self._text(HTTPStatus.FORBIDDEN, "forbidden: use http://127.0.0.1")
            elif path != "/api/label":
                self._refuse()
            elif not self._token_matches(self.headers.get(TOKEN_HEADER)):
                self._json(HTTPStatus.FORBIDDEN, {"error": f"a label needs the dashboard's token in the {TOKEN_HEADER} header"})
            elif (why := self._same_origin()) is not None:
                self._json(HTTPStatus.FORBIDDEN, {"error": why})
            elif (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
                self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "expected a JSON body (Content-Type: application/json)"})
            else:
                self._label()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - never a stack trace to the browser
            log.exception("dashboard: POST %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the meme-dashboard log)"})

    def _label(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > MAX_BODY else HTTPStatus.LENGTH_REQUIRED,
                       {"error": f"expected a JSON body of 1-{MAX_BODY} bytes with its Content-Length, found {length}"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not an object")
            request = LabelRequest(
                image_id=str(body.get("image_id") or ""), label=body.get("label"),
                labeller=str(body.get("labeller") or "reviewer"), how="review", request_id=str(body.get("request_id") or ""))
        except (ValueError, UnicodeDecodeError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"expected a JSON object with image_id, label and request_id: {exc}"})
            return
        except LabelError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        try:
            result, = self.server.labels.submit([request])
        except LabelError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, {"written": result.written, "image_id": request.image_id, "label": request.label,
                                   "previous_label": result.previous_label, "kept": result.image_path is not None})

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD" + (", POST" if urlsplit(self.path).path == "/api/label" else ""))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 - only labels are written, with POST


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------
@functools.cache
def static_file(name: str) -> bytes:
    """One of the page's files, shipped as package data in ``streaming/static/``."""
    return importlib.resources.files("streaming").joinpath("static", name).read_bytes()


def render_page(data: dict[str, Any], config: DashboardConfig) -> str:
    """The HTML page with the first snapshot embedded (first paint needs no data request)."""
    initial = json.dumps(data).replace("<", "\\u003c")  # nothing in the data can close or open a tag
    return (
        static_file(PAGE_FILE).decode("utf-8")
        .replace("__TITLE__", html.escape(f"memestream - {config.output}"))
        .replace("__REFRESH_MS__", str(int(config.refresh_s * 1000)))
        .replace("__INITIAL__", initial)
    )



def render_review(config: DashboardConfig) -> str:
    """The review page; it carries the token for its own label requests (only pages this
    server hands out can read it: the browser keeps other sites from reading this page)."""
    return (
        static_file(REVIEW_FILE).decode("utf-8")
        .replace("__TITLE__", html.escape(f"memestream review - {config.output}"))
        .replace("__TOKEN__", html.escape(config.token, quote=True))
    )


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-dashboard",
        description="Serve a local web page over meme-stream's output: rolling class counts, totals, "
        "latest predictions with thumbnails, quarantine reasons, batch throughput/latency, model version. "
        "It refreshes itself while the stream runs. /review is the review queue, where people correct labels "
        "(written to the 'labels' table for training).",
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
    env_flag(parser, "--model-dir", envvar="MEMESTREAM_MODEL_DIR", default=None,
             help="the model store, whose versions show the nearest training memes of an image under review "
             "(default: DATA_DIR/models)")
    env_flag(parser, "--bootstrap-servers", envvar="MEMESTREAM_KAFKA_BOOTSTRAP", default=None,
             help="the brokers of a Kafka stream: its inputs' images are read back from the topic for the review "
             "queue and kept when labelled (default: only folder inputs show an image)")
    add_security_flags(parser)
    env_flag(parser, "--token", envvar="MEMESTREAM_DASHBOARD_TOKEN", default=None,
             help="secret for label writes, and for every request when --host is not a loopback address "
             "(default: a new random one per start, printed once when needed)")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> DashboardConfig:
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; expected meme-stream's --output folder")
    if not 0 <= int(args.port) <= 65535:
        raise ConfigError(f"--port expects 0-65535, found {args.port}")
    data_dir = Path(args.data_dir) if args.data_dir else output.resolve().parent
    token = getattr(args, "token", None)
    if token is not None and (len(token) < 16 or not token.isprintable() or " " in token):
        raise ConfigError("--token expects at least 16 printable characters without spaces, found a shorter or "
                          "unprintable one")
    extra = {"token": token, "token_given": True} if token else {}
    model_dir = Path(args.model_dir) if getattr(args, "model_dir", None) else None
    kafka = KafkaRecords(args.bootstrap_servers, security_from_args(args)) if getattr(args, "bootstrap_servers", None) else None
    return DashboardConfig(output, data_dir, args.host, int(args.port), float(args.refresh), model_dir=model_dir,
                           kafka=kafka, **extra)


def serve(config: DashboardConfig) -> DashboardServer:
    """Bind the server (not yet serving); a port in use is a clear error."""
    try:
        return DashboardServer(config)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with stop_signals() as stop:  # DuckDB on the main thread would swallow a KeyboardInterrupt
        server = serve(config)
        try:
            if stop.is_set():  # Ctrl-C while the first snapshot was read
                return 130
            print(f"meme-dashboard: {server.url} (output {config.output}, images from {config.data_dir}); "
                  f"review queue {server.url}review; Ctrl-C to stop", flush=True)
            if not config.loopback:
                if config.token_given:
                    print("meme-dashboard: not a loopback address: every request needs the token you gave "
                          f"(open {server.url}?token=<token> once, or send {TOKEN_HEADER})", flush=True)
                else:  # generated: shown this once, never logged
                    print(f"meme-dashboard: not a loopback address: open {server.url}?token={config.token} "
                          f"(a new token each start; set --token or MEMESTREAM_DASHBOARD_TOKEN to keep one)", flush=True)
            serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="dashboard-http", daemon=True)
            serving.start()
            while not stop.wait(1.0) and serving.is_alive():
                pass
            server.shutdown()
        finally:
            server.server_close()
    print("meme-dashboard: stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
