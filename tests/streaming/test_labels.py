"""People's labels: the labels table, meme-label, the review queue's order, and the dashboard's
write path with each of its refusals. Predictions are real Delta tables (written with
``deltalake``) and the images real files whose sha256 is their image id."""
from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from streaming import duck, schema
from streaming.dashboard import TOKEN_HEADER, DashboardConfig, build_parser, config_from_args, serve
from streaming.label_cli import main as label_main
from streaming.labels import LabelError, LabelRequest, LabelStore
from streaming.review import ReviewFilter, spread

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def labelled_world(tmp_path, image_bytes, delta_output):
    """DATA_DIR with archive/ holding 6 folder inputs, one quarantined Kafka payload, and the
    predictions (and quarantine) rows the stream would have written for them."""
    data = tmp_path / "data"
    (data / "archive").mkdir(parents=True)
    out = data / "output"
    images, rows = {}, []
    specs = [  # (label, probabilities, ood)
        ("doom", {"doom": 0.51, "cats": 0.49}, False),      # margin 0.02
        ("cats", {"cats": 0.95, "doom": 0.05}, False),      # margin 0.90
        ("cats", {"cats": 0.60, "doom": 0.40}, True),       # OOD: first whatever its margin
        ("doom", {"doom": 0.70, "cats": 0.30}, False),      # margin 0.40
        ("animal_crossing", {"animal_crossing": 0.55, "cats": 0.45}, False),  # margin 0.10
        ("doom", {"doom": 0.99, "cats": 0.01}, False),
    ]
    for i, (label, probs, ood) in enumerate(specs):
        data_bytes = image_bytes(label, 700 + i, "jpeg")
        image_id = hashlib.sha256(data_bytes).hexdigest()
        name = f"17966{i:04d}-in_{i}.jpg"
        (data / "archive" / name).write_bytes(data_bytes)
        images[i] = image_id
        rows.append({"image_id": image_id, "source": "folder", "origin": f"in_{i}.jpg",
                     "path": f"file:{data}/spool/{name}", "event_time": T0 + timedelta(minutes=i),
                     "processing_time": T0 + timedelta(minutes=i, seconds=1), "label": label,
                     "confidence": max(probs.values()), "probabilities": list(probs.items()), "ood": ood,
                     "nearest_class": label, "model_version": "v0001", "batch_id": 0, "writer": "folder"})
    payload = image_bytes("cats", 799, "png")
    kafka_id = hashlib.sha256(payload).hexdigest()
    rows.append({"image_id": kafka_id, "source": "kafka", "origin": "memes/0/5", "event_time": T0,
                 "processing_time": T0, "error": "too big", "error_code": "too_large", "model_version": "v0001",
                 "batch_id": 0, "writer": "kafka"})
    no_bytes = "ee" * 32
    rows.append({"image_id": no_bytes, "source": "kafka", "origin": "memes/0/6", "event_time": T0,
                 "processing_time": T0, "label": "doom", "probabilities": [("doom", 0.8), ("cats", 0.2)],
                 "model_version": "v0001", "batch_id": 0, "writer": "kafka"})
    delta_output(out, schema.PREDICTIONS, rows)
    delta_output(out, schema.QUARANTINE, [{"image_id": kafka_id, "source": "kafka", "payload": payload,
                                            "error_code": "too_large", "event_time": T0, "writer": "kafka"}])
    return {"data": data, "output": out, "ids": images, "kafka_id": kafka_id, "payload": payload,
            "no_bytes": no_bytes}


def _current(output: Path) -> dict[str, str]:
    con = duck.connect()
    duck.register_views(con, output)
    return dict(con.execute("SELECT image_id, label FROM current_labels").fetchall())


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------
def test_a_label_row_says_who_changed_what_and_keeps_the_image(labelled_world):
    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    first, = store.submit([LabelRequest(w["ids"][0], "cats", "ana", "review", "req-1")])
    assert first.written and first.previous_label == "doom" and first.model_version == "v0001"
    kept = Path(first.image_path)
    assert kept.parent == w["data"] / "labelled" and kept.suffix == ".jpg"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == w["ids"][0]
    second, = store.submit([LabelRequest(w["ids"][0], "new_fandom", "bo", "cli", "req-2")])
    assert second.previous_label == "cats"  # the people's label, not the model's, is what changed
    rows = store.rows().sort_by("labelled_at").to_pylist()
    assert [(r["label"], r["previous_label"], r["labeller"], r["how"], r["request_id"]) for r in rows] == [
        ("cats", "doom", "ana", "review", "req-1"), ("new_fandom", "cats", "bo", "cli", "req-2")]
    assert _current(w["output"]) == {w["ids"][0]: "new_fandom"}  # the latest row wins
    assert DeltaTable(store.uri).metadata().configuration["delta.appendOnly"] == "true"


def test_a_double_submitted_request_writes_one_row(labelled_world):
    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    req = LabelRequest(w["ids"][1], "doom", "ana", "review", "click-7")
    results = []
    threads = [threading.Thread(target=lambda: results.extend(store.submit([req]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.written for r in results) == [False, False, False, True]
    assert store.submit([req])[0].written is False  # and again later, from the table
    assert store.rows().num_rows == 1


def test_refusals_name_what_was_expected(labelled_world):
    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    for bad in ("", "a b", "../up", "x" * 65, "dö", "a/b"):
        with pytest.raises(LabelError, match="1-64 letters"):
            LabelRequest(w["ids"][0], bad)
    with pytest.raises(LabelError, match="64 hex digits"):
        LabelRequest("not-a-sha", "doom")
    with pytest.raises(LabelError, match="no prediction has image_id " + "ab" * 32):
        store.submit([LabelRequest("ab" * 32, "doom")])
    assert not (w["output"] / "labels").exists()  # nothing was written by the refused request


def test_bytes_come_from_the_quarantine_payload_or_are_reported_missing(labelled_world):
    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    from_payload, no_copy = store.submit([LabelRequest(w["kafka_id"], "cats"), LabelRequest(w["no_bytes"], "doom")])
    assert Path(from_payload.image_path).read_bytes() == w["payload"] and from_payload.image_path.endswith(".png")
    assert no_copy.written and no_copy.image_path is None


def test_an_undo_withdraws_the_label_and_keeps_the_history(labelled_world):
    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    store.submit([LabelRequest(w["ids"][2], "doom", how="review", request_id="a")])
    undo, = store.submit([LabelRequest(w["ids"][2], None, how="review", request_id="b")])
    assert undo.previous_label == "doom"
    assert _current(w["output"]) == {}
    assert store.rows().num_rows == 2


def test_labels_survive_retention_and_are_a_spark_view(labelled_world, spark):
    from streaming.tables import register_views
    from streaming.upkeep import UpkeepConfig, run_upkeep

    w = labelled_world
    store = LabelStore(w["output"], w["data"])
    store.submit([LabelRequest(w["ids"][3], "cats", request_id="keep-me")])
    run_upkeep(spark, UpkeepConfig(str(w["output"]), retention_days=1))  # every prediction is older
    assert store.rows().column("request_id").to_pylist() == ["keep-me"]
    assert len(list((w["data"] / "labelled").iterdir())) == 1
    register_views(spark, str(w["output"]))
    assert [tuple(r) for r in spark.sql("SELECT image_id, label FROM current_labels").collect()] == [(w["ids"][3], "cats")]


# ---------------------------------------------------------------------------------------
# meme-label
# ---------------------------------------------------------------------------------------
def test_meme_label_one_image_and_a_csv(labelled_world, capsys, tmp_path, monkeypatch):
    w = labelled_world
    monkeypatch.chdir(w["data"])  # relative paths, as typed
    assert label_main(["--output", "output", w["ids"][0], "cats", "--labeller", "ana"]) == 0
    assert "doom -> cats" in capsys.readouterr().out
    csv = tmp_path / "fix.csv"
    csv.write_text(f"image_id,label\n{w['ids'][1]},doom\n{w['ids'][4].upper()},new_class\n\n")
    assert label_main(["--output", "output", "--csv", str(csv), "--request-id", "batch-1"]) == 0
    assert "2 label(s) written" in capsys.readouterr().out
    assert label_main(["--output", "output", "--csv", str(csv), "--request-id", "batch-1"]) == 0  # retried
    assert "0 label(s) written, 2 already recorded" in capsys.readouterr().out
    rows = LabelStore(w["output"], w["data"]).rows().to_pylist()
    assert sorted((r["label"], r["how"]) for r in rows) == [("cats", "cli"), ("doom", "import"), ("new_class", "import")]


@pytest.mark.parametrize("argv, message", [
    (["IMG", "bad label"], "1-64 letters"),
    (["ab" * 32, "doom"], "no prediction has image_id"),
    ([], "expected IMAGE_ID LABEL"),
    (["--csv", "missing.csv"], "--csv missing.csv: No such file"),
    (["--csv", "header.csv"], "expected a header with columns image_id,label"),
])
def test_meme_label_errors_are_one_line(labelled_world, capsys, monkeypatch, argv, message):
    w = labelled_world
    monkeypatch.chdir(w["data"])
    (w["data"] / "header.csv").write_text("id,name\nx,y\n")
    argv = [w["ids"][0] if a == "IMG" else a for a in argv]
    assert label_main(["--output", "output", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------------------
# The review queue
# ---------------------------------------------------------------------------------------
def test_spread_keeps_one_row_per_near_duplicate_group():
    rows = [{"image_id": str(i)} for i in range(6)]
    picked = spread(rows, [0, 0, 2, 0, 4, 2], limit=10)
    assert [r["image_id"] for r in picked] == ["0", "2", "4"]
    assert [r["reposts"] for r in picked] == [2, 1, 0]
    assert len(spread(rows, list(range(6)), limit=2)) == 2


def test_review_filter_checks_what_arrives_from_the_url():
    assert ReviewFilter.from_query({"class": ["doom"], "ood": ["1"], "from": ["2026-12-01"], "limit": ["5"]}) == \
        ReviewFilter("doom", None, True, datetime(2026, 12, 1).date(), None, 5)
    from memestream.errors import ConfigError

    for query, message in (({"class": ["x'; DROP"]}, "class"), ({"from": ["yesterday"]}, "YYYY-MM-DD"),
                           ({"limit": ["1000"]}, "limit"), ({"model": ["v 1"]}, "model")):
        with pytest.raises(ConfigError, match=message):
            ReviewFilter.from_query(query)


@pytest.fixture
def dashboard():
    servers = []

    def start(output: Path, data_dir: Path, **kwargs):
        server = serve(DashboardConfig(output, data_dir, port=0, refresh_s=0.2, **kwargs))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _call(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def test_review_queue_order_and_labelling_through_the_dashboard(labelled_world, dashboard):
    w = labelled_world
    server = dashboard(w["output"], w["data"], token="t" * 20)
    status, data = _call(server.url + "api/review?limit=10")
    assert status == 200
    order = [it["image_id"] for it in data["items"]]
    ids = w["ids"]
    # OOD first, then by margin (0.02, 0.10, 0.40, 0.60 for the Kafka row, 0.90, 0.98); the errored row never
    assert order == [ids[2], ids[0], ids[4], ids[3], w["no_bytes"], ids[1], ids[5]]
    assert data["items"][0]["archive_name"].endswith("in_2.jpg") and data["items"][4]["archive_name"] is None
    assert data["classes"] == ["animal_crossing", "cats", "doom"]
    headers = {TOKEN_HEADER: "t" * 20}
    status, res = _call(server.url + "api/label", {"image_id": ids[2], "label": "cats", "request_id": "r1"}, headers)
    assert status == 200 and res["written"] and res["kept"]
    status, res = _call(server.url + "api/label", {"image_id": ids[2], "label": "cats", "request_id": "r1"}, headers)
    assert status == 200 and res["written"] is False  # the double click
    status, data = _call(server.url + "api/review?limit=10")
    assert [it["image_id"] for it in data["items"]][0] == ids[0]  # labelled: out of the queue
    _, only_ood = _call(server.url + "api/review?ood=1")
    assert only_ood["items"] == []
    _, cats = _call(server.url + "api/review?class=cats")
    assert [it["image_id"] for it in cats["items"]] == [ids[1]]
    status, page = _call(server.url + "review")
    assert status == 200 and 'content="' + "t" * 20 + '"' in page


def test_review_queue_spreads_reposts(labelled_world, dashboard, delta_output, image_bytes):
    w = labelled_world
    import cv2
    import numpy as np

    original = (w["data"] / "archive").glob("*in_0.jpg").__next__().read_bytes()
    img = cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR)
    repost = cv2.imencode(".jpg", cv2.resize(img, (img.shape[1] - 7, img.shape[0] - 5)), [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    rid = hashlib.sha256(repost).hexdigest()
    (w["data"] / "archive" / "17969999-repost.jpg").write_bytes(repost)
    delta_output(w["output"], schema.PREDICTIONS, [{
        "image_id": rid, "source": "folder", "path": f"file:{w['data']}/spool/17969999-repost.jpg", "label": "doom",
        "probabilities": [("doom", 0.505), ("cats", 0.495)], "event_time": T0, "processing_time": T0,
        "model_version": "v0001", "batch_id": 1, "writer": "folder"}])
    server = dashboard(w["output"], w["data"])
    _, data = _call(server.url + "api/review?limit=10")
    order = [it["image_id"] for it in data["items"]]
    assert rid in order and w["ids"][0] not in order  # the repost (smaller margin) stands for both
    assert data["items"][order.index(rid)]["reposts"] == 1


# ---------------------------------------------------------------------------------------
# Security: each refusal
# ---------------------------------------------------------------------------------------
def test_each_write_refusal(labelled_world, dashboard):
    w = labelled_world
    server = dashboard(w["output"], w["data"], token="s" * 20)
    url, good = server.url + "api/label", {"image_id": w["ids"][0], "label": "cats", "request_id": "x1"}
    token = {TOKEN_HEADER: "s" * 20}
    cases = [
        ({}, good, 403, "token"),                                            # no token
        ({TOKEN_HEADER: "wrong-token-wrong"}, good, 403, "token"),          # a wrong one
        ({"Cookie": "memestream_token=" + "s" * 20}, good, 403, "token"),   # a cookie never authorises a write
        ({**token, "Origin": "http://evil.example"}, good, 403, "Origin"),  # another site's page
        ({**token, "Sec-Fetch-Site": "cross-site"}, good, 403, "Sec-Fetch-Site"),
        ({**token, "Content-Type": "text/plain"}, good, 415, "JSON"),      # a form post
        (token, {**good, "label": "../../etc"}, 400, "1-64 letters"),
        (token, {**good, "label": "x" * 65}, 400, "1-64 letters"),
        (token, {**good, "image_id": "ab" * 32}, 400, "no prediction"),
        (token, {**good, "request_id": ""}, 400, "request ids"),
    ]
    for headers, body, status, text in cases:
        got, res = _call(url, body, headers)
        assert (got, text in json.dumps(res)) == (status, True), (headers, body, res)
    assert not (w["output"] / "labels").exists()  # none of them wrote
    got, res = _call(url, good, {**token, "Origin": server.url.rstrip("/"), "Sec-Fetch-Site": "same-origin"})
    assert got == 200 and res["written"]
    big = urllib.request.Request(url, data=b"{" + b" " * 20000 + b"}", method="POST",
                                 headers={"Content-Type": "application/json", **token})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(big, timeout=30)
    assert exc.value.code == 413


def test_off_loopback_every_request_needs_the_token(labelled_world, dashboard):
    w = labelled_world
    server = dashboard(w["output"], w["data"], host="0.0.0.0", token="u" * 20, token_given=True)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    for path in ("", "review", "api/data", "api/review"):
        status, _ = _call(base + path)
        assert status == 401, path
    assert _call(base + "healthz")[0] == 200
    assert _call(base + "api/review", headers={TOKEN_HEADER: "u" * 20})[0] == 200
    assert _call(base + "api/review", headers={"Authorization": "Bearer " + "u" * 20})[0] == 200
    # the printed link: a right token becomes an HttpOnly cookie and leaves the address
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(base + "?token=" + "u" * 20, timeout=30) as resp:
        assert resp.status == 200 and resp.url == base and b"memestream" in resp.read()
    with opener.open(base + "api/review", timeout=30) as resp:
        assert resp.status == 200
    assert _call(base + "?token=wrong")[0] == 401


def test_token_flags(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMESTREAM_DASHBOARD_TOKEN", raising=False)
    a = config_from_args(build_parser().parse_args(["--output", str(tmp_path)]))
    b = config_from_args(build_parser().parse_args(["--output", str(tmp_path)]))
    assert a.token != b.token and len(a.token) >= 24 and not a.token_given
    assert a.token not in repr(a)
    monkeypatch.setenv("MEMESTREAM_DASHBOARD_TOKEN", "e" * 16)
    c = config_from_args(build_parser().parse_args(["--output", str(tmp_path), "--host", "0.0.0.0"]))
    assert (c.token, c.token_given, c.loopback) == ("e" * 16, True, False)
    from memestream.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 16"):
        config_from_args(build_parser().parse_args(["--output", str(tmp_path), "--token", "short"]))


def test_review_explains_a_label_with_the_nearest_training_memes(tmp_path, dashboard, trained_model_dir, sample_dataset):
    import shutil

    from memestream.modelstore import ModelStore

    data = tmp_path / "data"
    (data / "archive").mkdir(parents=True)
    (data / "output").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    train_file = sorted((Path(sample_dataset) / "doom").rglob("*.*"))[0]
    shutil.copy(train_file, data / "archive" / train_file.name)  # a training meme, streamed again
    version = ModelStore(trained_model_dir).current()
    server = dashboard(data / "output", data, model_dir=Path(trained_model_dir))
    status, res = _call(server.url + f"api/explain?archive={train_file.name}&version={version}")
    assert status == 200 and len(res["nearest"]) == 3
    first = res["nearest"][0]
    assert first["file"] == train_file.relative_to(sample_dataset).as_posix() and first["label"] == "doom"
    assert first["similarity"] > 0.999 >= res["nearest"][1]["similarity"]
    with urllib.request.urlopen(server.url + first["thumb"].lstrip("/"), timeout=30) as resp:
        assert resp.headers["Content-Type"] == "image/jpeg" and resp.read()[:2] == b"\xff\xd8"
    for query in (f"archive=../secret.jpg&version={version}", f"archive={train_file.name}&version=v9999-nope",
                  f"archive={train_file.name}&version=../{version}"):
        assert _call(server.url + "api/explain?" + query)[1]["nearest"] == [], query
    for path in (f"thumb/train/{version}/99999", f"thumb/train/{version}/-1", "thumb/train/../../etc/passwd"):
        assert _call(server.url + path)[0] == 404, path


@pytest.mark.slow
def test_review_page_is_keyboard_first_in_chromium(labelled_world, dashboard, tmp_path):
    """A person in a real browser: 1-9 pick a class, Enter confirms, s skips, u undoes, n names a new class."""
    from tests.cdp import Browser

    w = labelled_world
    server = dashboard(w["output"], w["data"])
    try:
        browser = Browser(tmp_path / "profile")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    ids = w["ids"]
    current = 'document.body.dataset.state === "item" && document.body.dataset.imageId'
    try:
        browser.open(server.url + "review")
        assert browser.wait_for(current) == ids[2]  # OOD first
        assert browser.evaluate('document.getElementById("item-label").textContent') == "cats"
        browser.key("3")  # classes: animal_crossing, cats, doom
        assert browser.wait_for(f'({current}) !== "{ids[2]}" && {current}') == ids[0]
        browser.key("Enter")  # confirm the prediction (doom)
        assert browser.wait_for(f'({current}) !== "{ids[0]}" && {current}') == ids[4]
        browser.key("s")  # skip: no row
        assert browser.wait_for(f'({current}) !== "{ids[4]}" && {current}') == ids[3]
        browser.key("u")  # undo the skip: back to it
        assert browser.wait_for(f'({current}) === "{ids[4]}" && {current}') == ids[4]
        browser.key("n")
        browser.wait_for('document.activeElement && document.activeElement.id === "new-class-name"')
        for ch in "frogs":
            browser.key(ch)
        browser.key("Enter")
        assert browser.wait_for(f'({current}) !== "{ids[4]}" && {current}') == ids[3]
        browser.key("u")  # undo the label: withdrawn, back in front
        assert browser.wait_for(f'({current}) === "{ids[4]}" && {current}') == ids[4]
        browser.wait_for('document.getElementById("done").children.length >= 4')
    finally:
        browser.close()
    store = LabelStore(w["output"], w["data"])
    rows = sorted(store.rows().to_pylist(), key=lambda r: r["labelled_at"])
    assert [(r["image_id"], r["label"], r["how"]) for r in rows] == [
        (ids[2], "doom", "review"), (ids[0], "doom", "review"), (ids[4], "frogs", "review"), (ids[4], None, "review")]
    assert _current(w["output"]) == {ids[2]: "doom", ids[0]: "doom"}


def test_a_kafka_input_is_read_back_from_its_topic_for_review_and_training(tmp_path, image_bytes, delta_output,
                                                                           kafka_broker, kafka_topic, dashboard):
    """The stream keeps no bytes of a good Kafka image; the record is still in the topic at its
    offset, so labelling keeps a copy from there and the review page shows it."""
    from producers.kafka import ImagePublisher, PublisherConfig
    from streaming.labels import KafkaRecords

    data_bytes = image_bytes("doom", 901, "png")
    with ImagePublisher(PublisherConfig(kafka_broker.bootstrap, kafka_topic)) as pub:
        pub.publish(image_bytes("cats", 900)).get(timeout=30)
        meta = pub.publish(data_bytes).get(timeout=30)
    origin = f"{kafka_topic}/{meta.partition}/{meta.offset}"
    image_id = hashlib.sha256(data_bytes).hexdigest()
    data = tmp_path / "data"
    out = data / "output"
    delta_output(out, schema.PREDICTIONS, [{
        "image_id": image_id, "source": "kafka", "origin": origin, "label": "cats", "event_time": T0,
        "processing_time": T0, "probabilities": [("cats", 0.52), ("doom", 0.48)], "model_version": "v0001",
        "batch_id": 0, "writer": "kafka"}])
    kafka = KafkaRecords(kafka_broker.bootstrap)
    assert kafka.fetch(f"{kafka_topic}/{meta.partition}/{meta.offset + 5}") is None  # not (yet) there
    assert kafka.fetch("../etc/0/1") is None
    server = dashboard(out, data, kafka=kafka)
    _, queue = _call(server.url + "api/review")
    item, = queue["items"]
    assert item["kafka_origin"] == origin and item["archive_name"] is None
    with urllib.request.urlopen(server.url + f"thumb/kafka/{origin}?size=large", timeout=30) as resp:
        assert resp.headers["Content-Type"] == "image/jpeg"
    result, = LabelStore(out, data, kafka).submit([LabelRequest(image_id, "doom", request_id="k1")])
    assert result.image_path is not None and Path(result.image_path).read_bytes() == data_bytes
    # brokers that cannot be reached: no copy, and no exception (the label itself never depends on it)
    assert KafkaRecords("127.0.0.1:1", timeout_s=2).fetch(origin) is None


def test_meme_label_reads_a_kafka_input_back_with_bootstrap_servers(tmp_path, image_bytes, delta_output, kafka_broker,
                                                                   kafka_topic, capsys):
    from producers.kafka import ImagePublisher, PublisherConfig

    data_bytes = image_bytes("cats", 905, "jpeg")
    with ImagePublisher(PublisherConfig(kafka_broker.bootstrap, kafka_topic)) as pub:
        meta = pub.publish(data_bytes).get(timeout=30)
    image_id = hashlib.sha256(data_bytes).hexdigest()
    out = tmp_path / "data" / "output"
    delta_output(out, schema.PREDICTIONS, [{
        "image_id": image_id, "source": "kafka", "origin": f"{kafka_topic}/{meta.partition}/{meta.offset}",
        "label": "doom", "event_time": T0, "processing_time": T0, "model_version": "v0001", "batch_id": 0,
        "writer": "kafka"}])
    assert label_main(["--output", str(out), image_id, "cats"]) == 0
    assert "1 without a stored image" in capsys.readouterr().out
    assert label_main(["--output", str(out), image_id, "cats", "--bootstrap-servers", kafka_broker.bootstrap]) == 0
    assert "without a stored image" not in capsys.readouterr().out
    kept = tmp_path / "data" / "labelled" / f"{image_id}.jpg"
    assert kept.read_bytes() == data_bytes
