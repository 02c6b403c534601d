"""``meme-dashboard``: a local, read-only web page over the stream's output tables.

It shows the rolling class counts per window as a chart, totals per class, the latest
predictions with a thumbnail, quarantined inputs by reason, throughput and latency of
the last batches, and the model version in use; the page refreshes itself while the
stream runs.

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
- the server is the standard library's ``http.server``: a handful of GET routes need no
  framework. It binds 127.0.0.1 unless told otherwise, answers only GET/HEAD, and reads
  image files only from DATA_DIR/archive and DATA_DIR/quarantine (names are checked
  and resolved paths must stay inside those folders).
"""
from __future__ import annotations

import argparse
import functools
import html
import importlib.resources
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_float, run_main, stop_signals
from memestream.errors import ConfigError
from memestream.hidden import is_dot_hidden
from streaming.dashboard_data import Snapshots

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
THUMB_SIDE = 160
MAX_THUMB_SOURCE_BYTES = 32 * 1024 * 1024
#: The page: an HTML template (title, refresh interval and first snapshot filled in per request)
#: and the stylesheet and script it links, all package data in ``streaming/static/``.
PAGE_FILE = "dashboard.html"
STATIC_TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
PLOTLY_JS = "plotly.min.js"


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
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
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

    def _static(self, name: str) -> None:
        """The page's own files (looked up by exact name, never as a path) and plotly.min.js."""
        if name == PLOTLY_JS:
            self._send(HTTPStatus.OK, self.server.plotly_js, "text/javascript; charset=utf-8", cache="max-age=86400")
        elif name in STATIC_TYPES:
            # no-cache: an upgraded package's page never runs yesterday's script
            self._send(HTTPStatus.OK, static_file(name), STATIC_TYPES[name], cache="no-cache")
        else:
            self._not_found()

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
    with stop_signals() as stop:  # DuckDB on the main thread would swallow a KeyboardInterrupt
        server = serve(config)
        try:
            if stop.is_set():  # Ctrl-C while the first snapshot was read
                return 130
            if config.host not in LOOPBACK:
                log.warning("listening on %s: anyone who can reach this address can read the dashboard", config.host)
            print(f"meme-dashboard: {server.url} (output {config.output}, images from {config.data_dir}); Ctrl-C to stop",
                  flush=True)
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
