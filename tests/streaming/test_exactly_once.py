"""kill -9 the stream at the worst moments, restart it, and count: every input exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streaming.schema import read_table

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parents[2]


def _stream_cmd(root, model_dir, *extra, kill_at=None):
    """meme-stream, or with ``kill_at="stage:batch"`` the same run SIGKILLed there (tests.streaming.crash_stream)."""
    entry = ["-m", "streaming.cli"] if kill_at is None else ["-m", "tests.streaming.crash_stream", kill_at]
    return [sys.executable, *entry, "--data-dir", str(root), "--model", str(model_dir),
            "--max-files-per-trigger", "3", "--trigger", "0.2", "--quiet", *extra]


def _env():
    """This checkout first on the path, so the subprocess runs the code under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _check_exactly_once(root, expected_names):
    preds = read_table(root / "output", "predictions").to_pandas()
    assert sorted(preds["origin"]) == sorted(expected_names), "every input exactly once"
    counts = read_table(root / "output", "class_counts").to_pandas()
    labelled = preds[preds["label"].notna()].groupby("label").size().to_dict()
    windows_per_row = 10  # default 10-minute window sliding by 1 minute
    assert (counts.groupby("label")["count"].sum() // windows_per_row).to_dict() == labelled
    batches = read_table(root / "output", "batches").to_pandas()
    assert not batches.duplicated(["writer", "batch_id"]).any(), "each batch recorded once"
    totals: dict[str, int] = {}
    for entries in batches["label_totals"]:
        for label, n in entries:
            totals[label] = totals.get(label, 0) + n
    assert totals == labelled
    assert batches["rows"].sum() == len(preds)
    assert list((root / "spool").iterdir()) == []


@pytest.mark.parametrize("point", ["start", "predictions", "files", "committed"])
def test_sigkill_inside_a_batch_then_restart(tmp_path, trained_model_dir, image_bytes, point):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"img{i:02d}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        (inbox / name).write_bytes(image_bytes(["doom", "cats"][i % 2], 300 + i))
    (inbox / "broken.jpg").write_bytes(image_bytes("doom", 1)[:500])
    names.append("broken.jpg")

    crashed = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, "--available-now", kill_at=f"{point}:1"),
                             env=_env(), capture_output=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    done = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, "--available-now"), env=_env(),
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _check_exactly_once(tmp_path, names)


def test_sigkill_at_a_random_moment_of_a_running_stream(tmp_path, trained_model_dir, image_bytes):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"r{i:02d}.png" for i in range(20)]
    proc = subprocess.Popen(_stream_cmd(tmp_path, trained_model_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for i, name in enumerate(names):
            (inbox / name).write_bytes(image_bytes(["doom", "animal_crossing"][i % 2], 700 + i, "png"))
        log = tmp_path / "output" / "batches" / "_delta_log"  # version 0 creates the table, then one per batch
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(log.glob("*.json")) if log.exists() else []) < 3:
            if proc.poll() is not None:
                pytest.fail(f"stream exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        assert len(list(log.glob("*.json"))) >= 3, "stream made no progress"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, "--available-now"), env=_env(),
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _check_exactly_once(tmp_path, names)


def test_sigkill_with_upkeep_every_batch(tmp_path, trained_model_dir, image_bytes):
    """The same guarantee when the stream runs OPTIMIZE/VACUUM after every batch: killed after
    batch 5 is recorded, restarted, every input once, and the live files stay few."""
    from deltalake import DeltaTable

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"p{i:02d}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        (inbox / name).write_bytes(image_bytes(["doom", "cats"][i % 2], 500 + i))
    upkeep = ("--max-files-per-trigger", "1", "--compact-every-batches", "1", "--available-now")
    crashed = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, *upkeep, kill_at="committed:5"),
                             env=_env(), capture_output=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    done = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, *upkeep), env=_env(), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _check_exactly_once(tmp_path, names)
    assert len(DeltaTable(str(tmp_path / "output" / "predictions")).file_uris()) < len(names)


@pytest.mark.parametrize("point", ["predictions", "files"])
def test_sigkill_after_a_poison_batch_was_isolated(tmp_path, trained_model_dir, image_bytes, point):
    """A batch whose worker crashed on a poison input is scored again isolated; a kill -9 after
    its tables were (partly) appended, then a restart: the replay crashes and isolates again,
    finds the tables it had appended and skips them, and every input, the poison included, has one row."""
    from memestream import testing as poison

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"img{i:02d}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        (inbox / name).write_bytes(image_bytes(["doom", "cats"][i % 2], 700 + i))
    (inbox / "img04_poison.jpg").write_bytes(poison.POISON_ABORT)  # sorted: batch 1 is img03, img04, img04_poison
    names.append("img04_poison.jpg")

    crashed = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, "--available-now", kill_at=f"{point}:1"),
                             env=_env(), capture_output=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    assert b"isolated 1 poison input(s)" in crashed.stderr
    done = subprocess.run(_stream_cmd(tmp_path, trained_model_dir, "--available-now"), env=_env(),
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"isolated 1 poison input(s)" in done.stderr  # the replay met it again
    assert done.stderr.count(b"img04_poison.jpg: decoder_crashed") == 1  # one line per poison input, not two
    _check_exactly_once(tmp_path, names)
    quarantine = read_table(tmp_path / "output", "quarantine").to_pandas()
    assert quarantine["origin"].tolist() == ["img04_poison.jpg"] and quarantine["error_code"].tolist() == ["decoder_crashed"]
