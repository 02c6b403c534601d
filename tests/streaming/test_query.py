"""The folder stream end to end, in-process, with availableNow triggers."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from memestream.errors import CheckpointError, ConfigError, ModelError
from memestream.modelstore import ModelStore
from streaming.cli import main
from streaming.config import KafkaSourceConfig
from streaming.models import ModelHolder
from streaming.query import run_stream
from streaming.schema import read_table
from streaming.sinks import OutputTables
from tests.streaming.conftest import make_config

BAD_KINDS = {
    "truncated_jpeg": "truncated",
    "garbage": "not_an_image",
    "text": "not_an_image",
    "huge_dimensions": "too_many_pixels",
    "heic": "unsupported_format",
}


def _drop(inbox, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (inbox / name).write_bytes(data)


def _predictions(root) -> pd.DataFrame:
    return read_table(root / "output", "predictions").to_pandas()


def test_folder_stream_classifies_every_input_once_and_quarantines_bad_ones(spark, stream_root, trained_model_dir, image_bytes, bad_payloads):
    good = {f"good_{i}.{'jpg' if i % 2 else 'png'}": image_bytes(["doom", "cats", "animal_crossing"][i % 3], 100 + i, "jpeg" if i % 2 else "png") for i in range(9)}
    bad = {f"bad_{k}.jpg": bad_payloads[k] for k in BAD_KINDS}
    _drop(stream_root / "inbox", {**good, **bad, "empty.png": b"", ".hidden.jpg": good["good_1.jpg"], "partial.jpg.part": b"x"})
    cfg = make_config(stream_root, trained_model_dir)
    summary = run_stream(spark, cfg)

    preds = _predictions(stream_root)
    assert summary.rows == len(good) + len(bad) + 1
    assert sorted(preds["origin"]) == sorted([*good, *bad, "empty.png"])  # hidden/temp files ignored
    ok = preds[preds["error"].isna()]
    assert set(ok["origin"]) == set(good)
    assert ok["label"].isin(["doom", "cats", "animal_crossing"]).all()
    assert all(abs(sum(p.values()) - 1.0) < 1e-6 if isinstance(p, dict) else abs(sum(v for _, v in p) - 1) < 1e-6 for p in ok["probabilities"])
    assert ok["image_id"].str.len().eq(64).all() and ok["model_version"].notna().all()
    assert (ok["source"] == "folder").all()

    codes = dict(zip(preds["origin"], preds["error_code"]))
    for kind, code in BAD_KINDS.items():
        assert codes[f"bad_{kind}.jpg"] == code
    assert codes["empty.png"] == "empty"
    quarantine = read_table(stream_root / "output", "quarantine").to_pandas()
    assert sorted(quarantine["origin"]) == sorted([*bad, "empty.png"])
    assert quarantine["error"].str.contains(":").all()
    # bad files moved to the quarantine folder, good ones archived; spool drained
    assert sorted(p.name.split("-", 1)[1] for p in (stream_root / "quarantine").iterdir()) == sorted([*bad, "empty.png"])
    assert (stream_root / "quarantine" / next(p.name for p in (stream_root / "quarantine").iterdir() if p.name.endswith("empty.png"))).read_bytes() == b""
    assert len(list((stream_root / "archive").iterdir())) == len(good)
    assert list((stream_root / "spool").iterdir()) == []
    # several batches (rate limit 4 files per trigger), counts match predictions
    assert preds["batch_id"].nunique() >= 4
    counts = read_table(stream_root / "output", "class_counts").to_pandas()
    per_label = counts.groupby("label")["count"].sum().to_dict()
    expected = ok.groupby("label").size().to_dict()
    assert per_label == {k: v * 10 for k, v in expected.items()}  # 10-minute window, 1-minute slide
    assert OutputTables(stream_root / "output").label_totals() == expected
    # the same table through Spark
    assert spark.read.parquet(str(stream_root / "output" / "predictions")).count() == len(preds)


def test_restart_with_same_checkpoint_processes_only_new_files(spark, stream_root, trained_model_dir, image_bytes):
    cfg = make_config(stream_root, trained_model_dir)
    _drop(stream_root / "inbox", {f"a{i}.jpg": image_bytes("doom", i) for i in range(3)})
    run_stream(spark, cfg)
    _drop(stream_root / "inbox", {f"b{i}.jpg": image_bytes("cats", 50 + i) for i in range(2)})
    run_stream(spark, cfg)
    preds = _predictions(stream_root)
    assert sorted(preds["origin"]) == ["a0.jpg", "a1.jpg", "a2.jpg", "b0.jpg", "b1.jpg"]
    assert preds["image_id"].is_unique


def test_new_model_version_is_picked_up_and_recorded_per_row(spark, stream_root, trained_model_dir, image_bytes, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained_model_dir, models)
    store = ModelStore(models)
    first = store.current()
    cfg = make_config(stream_root, models)
    _drop(stream_root / "inbox", {"one.jpg": image_bytes("doom", 1)})
    run_stream(spark, cfg)
    # a second version (a copy, as a rerun of meme-train would write) becomes current
    second = store.new_version_name()
    shutil.copytree(models / first, models / second)
    manifest = (models / second / "manifest.json").read_text().replace(first, second)
    (models / second / "manifest.json").write_text(manifest)
    store.mark_current(second)
    # and a broken third version is not current: pinning would fail, following keeps working
    _drop(stream_root / "inbox", {"two.jpg": image_bytes("cats", 2)})
    run_stream(spark, cfg)
    versions = dict(zip(_predictions(stream_root)["origin"], _predictions(stream_root)["model_version"]))
    assert versions == {"one.jpg": first, "two.jpg": second}


def test_broken_new_model_keeps_the_old_one(spark, stream_root, trained_model_dir, image_bytes, tmp_path, caplog):
    models = tmp_path / "models"
    shutil.copytree(trained_model_dir, models)
    store = ModelStore(models)
    holder = ModelHolder(models)
    old = holder.model.version
    broken = store.new_version_name()
    (models / broken / "models").mkdir(parents=True)
    (models / broken / "manifest.json").write_text('{"version": "%s", "classes": ["a"], "best": "logreg", "models": {"logreg": {"path": "models/logreg"}}}' % broken)
    store.mark_current(broken)
    assert holder.refresh().version == old
    assert any("failed to load" in r.message for r in caplog.records)


def test_incompatible_checkpoint_and_missing_model_are_clear_errors(spark, stream_root, trained_model_dir, tmp_path):
    cfg = make_config(stream_root, trained_model_dir)
    run_stream(spark, cfg)
    other = make_config(stream_root, trained_model_dir, spool=tmp_path / "other-spool")
    with pytest.raises(CheckpointError, match="belongs to another configuration"):
        run_stream(spark, other)
    with pytest.raises(ModelError, match="no model at"):
        run_stream(spark, make_config(stream_root, tmp_path / "nowhere", checkpoint=tmp_path / "ck2"))


def test_kafka_impl_spark_without_its_jar_is_a_clear_error(spark, stream_root, trained_model_dir):
    cfg = make_config(stream_root, trained_model_dir, source="kafka", kafka_impl="spark",
                      kafka=KafkaSourceConfig("127.0.0.1:9", "memes"), checkpoint=stream_root / "ck-kafka")
    with pytest.raises(ConfigError, match="Kafka connector"):
        run_stream(spark, cfg)


def test_meme_stream_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--available-now"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model at" in err[0] and "meme-train" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["--source", "ftp"])
    assert exc.value.code == 2
    assert main(["--data-dir", str(tmp_path), "--window", "1m", "--slide", "5m"]) == 2
    assert "slide" in capsys.readouterr().err


def _layout(output) -> dict[str, list[str]]:
    return {str(d.relative_to(output)): sorted(p.name for p in d.iterdir())
            for t in ("predictions", "quarantine", "class_counts") for d in sorted((output / t).glob("date=*"))}


def test_long_running_bookkeeping_stays_bounded_and_in_stream_compaction_changes_no_row(
        spark, tmp_path, trained_model_dir, image_bytes, bad_payloads, monkeypatch):
    """One-file batches with 3 markers kept, a short Spark checkpoint history (3 instead of the
    stream's 10+) and compaction every 3 batches inside the stream; against the same inputs
    streamed without compaction."""
    from streaming import query

    monkeypatch.setattr(query, "min_batches_to_retain", lambda cfg: 3)
    files = {f"img{i:02d}.jpg": image_bytes(["doom", "cats", "animal_crossing"][i % 3], 900 + i) for i in range(8)}
    files["bad.jpg"] = bad_payloads["text"]
    roots = {}
    for name, every in (("plain", None), ("compacted", 3)):
        root = roots[name] = tmp_path / name
        (root / "inbox").mkdir(parents=True)
        _drop(root / "inbox", files)
        cfg = make_config(root, trained_model_dir, max_files_per_trigger=1, keep_commits=3,
                          compact_every_batches=every, compact_every_s=None)
        assert run_stream(spark, cfg).batches == len(files)

    root = roots["compacted"]
    out = root / "output"
    preds = _predictions(root)
    assert sorted(preds["origin"]) == sorted(files) and preds["image_id"].is_unique  # exactly once
    labelled = preds[preds["label"].notna()].groupby("label").size().to_dict()
    assert OutputTables(out).label_totals() == labelled  # the rollup plus the kept markers
    # the same rows as the stream that did not compact (batch order and event times differ)
    cols = ["origin", "image_id", "label", "confidence", "error_code", "late"]
    plain = _predictions(roots["plain"])
    assert preds[cols].sort_values("origin").reset_index(drop=True).equals(plain[cols].sort_values("origin").reset_index(drop=True))
    quarantined = [sorted(read_table(r / "output", "quarantine").to_pandas()["origin"]) for r in (root, roots["plain"])]
    assert quarantined[0] == quarantined[1] == ["bad.jpg"]
    counts = [read_table(r / "output", "class_counts").to_pandas().groupby("label")["count"].sum().to_dict()
              for r in (root, roots["plain"])]
    assert counts[0] == counts[1] == {k: v * 10 for k, v in labelled.items()}
    # sealed batches (below the newest) in at most one file per date per table; without compaction, one per batch
    newest = int(preds["batch_id"].max())
    for folder, names in _layout(out).items():
        sealed = [n for n in names if not n.endswith(f"-{newest:010d}.parquet")]
        assert len(sealed) <= 1, (folder, names)
    assert sum(len(v) for k, v in _layout(roots["plain"] / "output").items() if k.startswith("predictions/")) == len(files)
    # bounded bookkeeping: 3 markers and the rollup; Spark's offsets/commits logs purged to ~3
    writer = next((out / "_commits").glob("folder_*"))
    assert sorted(p.name for p in writer.iterdir()) == [f"{b:010d}.json" for b in range(newest - 2, newest + 1)] + ["_base.json"]
    spark_ck = root / "checkpoints" / "spark"
    for log_dir in ("offsets", "commits"):
        entries = sorted(int(p.name) for p in (spark_ck / log_dir).iterdir() if p.name.isdigit())
        assert entries[-1] == newest and len(entries) <= 4, (log_dir, entries)
    assert not (spark_ck / "state").exists()  # windowed counts are Python (markers): no Spark state store


def test_folder_batches_get_one_task_per_core(spark):
    from streaming.query import folder_tasks

    assert folder_tasks(spark) == spark.sparkContext.defaultParallelism


def test_worker_keeper_warms_only_after_a_quiet_spell_and_never_raises(caplog):
    """Spark stops idle Python workers after a minute without tasks; the keeper scores a warm-up
    image once the last batch and the last warm-up are ``every_s`` old, not more often."""
    from streaming.query import WorkerKeeper

    now = [100.0]
    calls = []
    keeper = WorkerKeeper(lambda: calls.append(now[0]), every_s=40, clock=lambda: now[0])
    last_batch = 100.0
    now[0] = 130.0
    assert not keeper.tick(last_batch) and calls == []
    last_batch = 125.0  # a batch ran: the quiet spell starts again
    now[0] = 150.0
    assert not keeper.tick(last_batch)
    now[0] = 166.0
    assert not keeper.tick(last_batch, busy=True)  # a long batch is running: its workers are busy
    assert keeper.tick(last_batch) and calls == [166.0]
    now[0] = 200.0
    assert not keeper.tick(last_batch)  # 34 s since the warm-up
    now[0] = 207.0
    assert keeper.tick(last_batch) and calls == [166.0, 207.0]

    def broken() -> None:
        raise RuntimeError("session stopped\nstack")

    failing = WorkerKeeper(broken, every_s=1, clock=lambda: now[0])
    now[0] = 300.0
    assert failing.tick(0.0) and failing.runs == 1
    assert "keeping the Python workers warm failed: session stopped" in caplog.text
