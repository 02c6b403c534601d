"""meme-dashboard: the server's routes and limits, then the page in a real headless Chromium.

The browser test loads the page served over an output written by a real stream (fixture
``streamed``) and checks what a person would look at: the chart has points, the totals
table matches the predictions table, and thumbnails loaded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streaming import duck
from streaming.dashboard import DashboardConfig, build_parser, config_from_args, safe_file, serve

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def running():
    """Start a dashboard server on a free port over a given data folder; stopped after the test."""
    servers = []

    def start(output: Path, data_dir: Path | None = None):
        server = serve(DashboardConfig(output, data_dir or output.parent, port=0, refresh_s=0.2))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_defaults_bind_localhost_and_data_dir_is_outputs_parent(tmp_path, monkeypatch):
    for var in ("MEMESTREAM_DASHBOARD_HOST", "MEMESTREAM_DASHBOARD_PORT", "MEMESTREAM_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    cfg = config_from_args(build_parser().parse_args(["--output", str(tmp_path / "out")]))
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8050)
    assert cfg.data_dir == tmp_path.resolve()


def test_safe_file_stays_inside_its_folder(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    (root / "ok.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.jpg")
    assert safe_file(root, "ok.jpg") == (root / "ok.jpg").resolve()
    for name in ("../secret.txt", "..", ".", "", "/etc/passwd", "sub/../../secret.txt", ".hidden", "link.jpg", "a\x00b"):
        assert safe_file(root, name) is None, name


def test_routes_never_serve_files_outside_the_data_folders(tmp_path, running, image_bytes):
    data = tmp_path / "data"
    (data / "archive").mkdir(parents=True)
    (data / "output").mkdir()
    (data / "archive" / "cat.jpg").write_bytes(image_bytes("cats", 1))
    (data / "secret.jpg").write_bytes(image_bytes("doom", 2))  # a real image, one folder too high
    url = running(data / "output", data)
    status, body = _get(url + "thumb/archive/cat.jpg")
    assert status == 200 and body[:2] == b"\xff\xd8"
    for attempt in ("thumb/archive/..%2Fsecret.jpg", "thumb/archive/../secret.jpg", "thumb/archive/%2E%2E%2Fsecret.jpg",
                    "thumb/quarantine/..%2Farchive%2Fcat.jpg", "thumb/payload/..%2Fsecret.jpg", "thumb/elsewhere/secret.jpg",
                    "static/..%2F..%2Fsecret.jpg", "..%2Fsecret.jpg"):
        status, body = _get(url + attempt)
        assert status == 404 and b"\xff\xd8" not in body, attempt
    req = urllib.request.Request(url, headers={"Host": "attacker.example:8050"})  # DNS rebinding
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 403
    req = urllib.request.Request(url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 405  # read-only


def test_page_escapes_whatever_the_tables_hold(tmp_path):
    from streaming.dashboard import render_page

    page = render_page({"message": "</script><script>alert(1)</script><!--"}, DashboardConfig(tmp_path, tmp_path))
    assert "alert(1)" in page and "<script>alert" not in page and "<!--" not in page.split('id="initial"')[1]


def test_page_files_are_package_data_served_by_exact_name(tmp_path, running):
    import fnmatch
    import tomllib

    from streaming import dashboard

    static = Path(dashboard.__file__).parent / "static"
    names = sorted(p.name for p in static.iterdir())
    assert names == ["dashboard.css", "dashboard.html", "dashboard.js", "review.html", "review.js"]
    pyproject = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["streaming"]
    assert all(any(fnmatch.fnmatch(f"static/{n}", p) for p in patterns) for n in names), "not shipped in the wheel"
    url = running(tmp_path / "output")
    status, body = _get(url)
    page = body.decode()
    assert status == 200 and "__TITLE__" not in page and "__REFRESH_MS__" not in page and 'data-refresh-ms="200"' in page
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
        assert f'"/static/{name}"' in page
        with urllib.request.urlopen(url + "static/" + name, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith(kind) and resp.read() == (static / name).read_bytes()
    assert _get(url + "static/dashboard.html")[0] == 404  # the template is served only filled in, at /
    assert _get(url + "static/review.html")[0] == 404  # ... and the review page only at /review
    status, body = _get(url + "review")
    assert status == 200 and b"__TOKEN__" not in body and b'"/static/review.js"' in body
    assert _get(url + "static/plotly.min.js")[0] == 200


def test_missing_and_broken_tables_are_a_message_not_a_stack_trace(tmp_path, running):
    url = running(tmp_path / "not-yet")
    status, body = _get(url + "api/data")
    assert status == 200 and "does not exist yet" in json.loads(body)["message"]
    status, body = _get(url)
    assert status == 200 and b"does not exist yet" in body and b"Traceback" not in body
    (tmp_path / "not-yet").mkdir()
    time.sleep(0.5)  # older than the refresh interval: the next request reads again
    data = json.loads(_get(url + "api/data")[1])
    assert data["summary"]["predictions"] == 0 and data["counts"] == [] and "message" not in data
    bad = tmp_path / "not-yet" / "predictions" / "date=2026-11-29"
    bad.mkdir(parents=True)
    (bad / "part-main-0000000000.parquet").write_bytes(b"this is not parquet")  # the layout before Delta Lake
    time.sleep(0.5)
    status, body = _get(url + "api/data")
    message = json.loads(body)["message"]
    assert status == 200 and "could not read" in message and "meme-compact --output" in message and "--convert" in message
    (tmp_path / "not-yet" / "predictions" / "_delta_log").mkdir()
    (tmp_path / "not-yet" / "predictions" / "_delta_log" / "00000000000000000000.json").write_text("{not json\n")
    time.sleep(0.5)
    status, body = _get(url + "api/data")
    assert status == 200 and "could not read" in json.loads(body)["message"]
    status, body = _get(url)
    assert status == 200 and b"could not read" in body and b"Traceback" not in body


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (.ci/run installs it: apt-get install chromium)")
    return path


def _browser(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,2000", *mode, url]
    proc = subprocess.run(cmd, capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc


def test_page_in_headless_chromium(streamed, running, tmp_path, monkeypatch):
    monkeypatch.chdir(streamed)  # relative paths, as a user types them (and no machine path in the screenshot)
    url = running(Path("output"), Path("."))
    # the virtual-time budget lets pending fetches (thumbnails from a server busy with other
    # tests) finish before the dump: without it a loaded machine dumped before any thumbnail
    dom = _browser(tmp_path, url, "--virtual-time-budget=20000", "--dump-dom").stdout.decode()
    assert 'data-state="ready"' in dom, dom[:3000]
    # the chart: Plotly drew one SVG point per (window, label) row of class_counts
    points = int(re.search(r'id="counts-chart"[^>]*data-points="(\d+)"', dom).group(1))
    con = duck.connect()
    duck.register_views(con, streamed / "output")
    windows = con.execute("SELECT count(*) FROM class_counts WHERE label IS NOT NULL").fetchone()[0]
    assert points == windows > 0
    chart = dom[dom.index('id="counts-chart"'):dom.index('id="counts-empty"')]
    assert chart.count('class="point"') == points
    # totals on the page == the table
    page_totals = dict(re.findall(r'<tr data-label="([^"]+)" data-count="(\d+)">', dom))
    table = dict(con.execute("SELECT label, count(*) FROM predictions WHERE label IS NOT NULL GROUP BY label").fetchall())
    assert {k: int(v) for k, v in page_totals.items()} == table and sum(table.values()) == 10
    assert 'data-card="predictions"><b>12</b>' in dom
    # thumbnails of the latest predictions loaded from the archive; quarantined ones from their folder
    # ... and stayed loaded while the page redrew itself every 200 ms: a redraw moves a drawn
    # thumbnail into the new gallery instead of fetching it again (once it left none loaded)
    renders = int(re.search(r'<body[^>]*data-renders="(\d+)"', dom).group(1))
    assert renders > 1 and dom.count('data-loaded="1"') >= 10, f"thumbnails did not load ({renders} renders)"
    assert re.search(r'data-reason="not_an_image"', dom) and re.search(r'data-reason="truncated"', dom)
    assert "model in use: <b id=\"model\">v" in dom
    shot = tmp_path / "dashboard.png"
    _browser(tmp_path, url, f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    if os.environ.get("MEMESTREAM_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS / "dashboard.png")


def test_quarantine_payload_thumbnail(tmp_path, running, image_bytes, delta_output):
    """Kafka inputs have no file: the quarantine table's payload is the thumbnail's source."""
    from datetime import date

    out = tmp_path / "output"
    out.mkdir()
    image, junk = image_bytes("cats", 3), b"not an image at all"
    delta_output(out, "quarantine", [
        {"image_id": "ab" * 32, "payload": image, "error_code": "unsupported_format", "date": date(2026, 11, 29)},
        {"image_id": "cd" * 32, "payload": junk, "error_code": "garbage", "date": date(2026, 11, 29)}])
    url = running(out)
    status, body = _get(url + "thumb/payload/" + "ab" * 32)
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert _get(url + "thumb/payload/" + "cd" * 32)[0] == 404  # not decodable: no thumbnail, no error
    assert _get(url + "thumb/payload/" + "ef" * 32)[0] == 404
    assert _get(url + "thumb/payload/nothex")[0] == 404
