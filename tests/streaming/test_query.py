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
from streaming.sinks import DeltaOutput
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
    assert DeltaOutput(stream_root / "output", "any").label_totals(spark) == expected
    # the same table through Spark, and each batch recorded once with its totals
    assert spark.read.format("delta").load(str(stream_root / "output" / "predictions")).count() == len(preds)
    batches = read_table(stream_root / "output", "batches").to_pandas()
    assert batches["rows"].sum() == len(preds) and batches["batch_id"].is_unique
    assert set(preds["writer"]) == set(batches["writer"]) and len(set(batches["writer"])) == 1


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


def test_kafka_stream_with_no_broker_is_a_clear_error_before_the_query_starts(spark, stream_root, trained_model_dir):
    from memestream.errors import BrokerError
    from memestream.testing import free_port

    cfg = make_config(stream_root, trained_model_dir, source="kafka", checkpoint=stream_root / "ck-kafka",
                      kafka=KafkaSourceConfig(f"127.0.0.1:{free_port()}", "memes", connect_timeout_s=1))
    with pytest.raises(BrokerError, match="expected a Kafka broker at 127.0.0.1"):
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


def _data_files(table_uri: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(table_uri).file_uris())


def test_in_stream_upkeep_compacts_and_changes_no_row(spark, tmp_path, trained_model_dir, image_bytes, bad_payloads):
    """One-file batches with OPTIMIZE/VACUUM every 3 batches inside the stream, against the same
    inputs streamed without upkeep: the same rows, fewer live files."""
    files = {f"img{i:02d}.jpg": image_bytes(["doom", "cats", "animal_crossing"][i % 3], 900 + i) for i in range(7)}
    files["bad.jpg"] = bad_payloads["text"]
    roots = {}
    for name, every in (("plain", None), ("upkept", 3)):
        root = roots[name] = tmp_path / name
        (root / "inbox").mkdir(parents=True)
        _drop(root / "inbox", files)
        cfg = make_config(root, trained_model_dir, max_files_per_trigger=1,
                          compact_every_batches=every, compact_every_s=None)
        assert run_stream(spark, cfg).batches == len(files)

    root = roots["upkept"]
    preds = _predictions(root)
    assert sorted(preds["origin"]) == sorted(files) and preds["image_id"].is_unique  # exactly once
    labelled = preds[preds["label"].notna()].groupby("label").size().to_dict()
    assert DeltaOutput(root / "output", "any").label_totals(spark) == labelled
    cols = ["origin", "image_id", "label", "confidence", "error_code", "late"]
    plain = _predictions(roots["plain"])
    assert preds[cols].sort_values("origin").reset_index(drop=True).equals(plain[cols].sort_values("origin").reset_index(drop=True))
    counts = [read_table(r / "output", "class_counts").to_pandas().groupby("label")["count"].sum().to_dict()
              for r in (root, roots["plain"])]
    assert counts[0] == counts[1] == {k: v * 10 for k, v in labelled.items()}
    # without upkeep one file per batch; with it, the optimized days hold fewer
    plain_files = _data_files(str(roots["plain"] / "output" / "predictions"))
    assert plain_files == len(files)
    assert _data_files(str(root / "output" / "predictions")) < plain_files
    history = spark.sql(f"DESCRIBE HISTORY delta.`{root / 'output' / 'predictions'}`").collect()
    assert any(r["operation"] == "OPTIMIZE" for r in history)


def test_folder_batches_get_one_task_per_core(spark):
    from streaming.query import folder_tasks

    assert folder_tasks(spark) == spark.sparkContext.defaultParallelism


def test_the_spool_read_and_the_scorer_run_in_different_stages(spark, stream_root, trained_model_dir):
    """Both are Python runners: in one stage each task held two Python workers at once, so the
    pool grew to two per core and each kept a model (~0.5 GiB). A round-robin exchange of the
    listing rows, one partition per core, separates them; Kafka's source (JVM) needs none."""
    from streaming.query import folder_tasks, source_frame

    cfg = make_config(stream_root, trained_model_dir)
    plan = source_frame(spark, cfg)._jdf.queryExecution().logical().toString()
    lines = plan.splitlines()
    repartition = next(i for i, line in enumerate(lines) if "Repartition" in line)
    assert f"Repartition {folder_tasks(spark)}, true" in lines[repartition]  # round robin, not coalesce
    scan = next(i for i, line in enumerate(lines) if "memestream-spool" in line or "StreamingRelation" in line)
    assert scan > repartition  # the read below the exchange: a stage of its own


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


def test_only_a_batch_after_a_start_or_a_failure_looks_for_earlier_rows(spark, stream_root, trained_model_dir, image_bytes,
                                                                         monkeypatch):
    """A batch that follows one this process committed is appended blind; the first batch of a
    run (which may replay a half-written one) looks first (streaming.sinks)."""
    looked: list[tuple[str, int]] = []
    original = DeltaOutput.has_batch

    def spy(self, spark_, table, batch_id):
        looked.append((table, batch_id))
        return original(self, spark_, table, batch_id)

    monkeypatch.setattr(DeltaOutput, "has_batch", spy)
    cfg = make_config(stream_root, trained_model_dir, max_files_per_trigger=2)
    _drop(stream_root / "inbox", {f"a{i}.jpg": image_bytes("doom", i) for i in range(6)})
    run_stream(spark, cfg)
    preds = _predictions(stream_root)
    assert sorted(preds["batch_id"].unique()) == [0, 1, 2]
    assert {b for _, b in looked} == {0}, looked  # batches 1 and 2 follow committed ones
    assert {t for t, _ in looked} == {"predictions", "class_counts", "batches"}
    looked.clear()
    _drop(stream_root / "inbox", {f"b{i}.jpg": image_bytes("cats", 50 + i) for i in range(4)})
    run_stream(spark, cfg)  # a new run: its first batch (3) looks, the next does not
    assert {b for _, b in looked} == {3}, looked
    preds = _predictions(stream_root)
    assert len(preds) == 10 and preds["image_id"].is_unique


def test_a_failed_batch_makes_the_next_one_look(stream_root, trained_model_dir, monkeypatch):
    """A batch that raised may be half written: whatever comes next checks each table first."""
    from streaming.batch import BatchProcessor, LiveSummary

    cfg = make_config(stream_root, trained_model_dir)
    processor = BatchProcessor(cfg, DeltaOutput(cfg.output, "folder_a1"), ModelHolder(trained_model_dir),
                               LiveSummary({}, quiet=True))
    assert processor._needs_check(0)  # nothing written by this process yet
    processor._written_through = 4
    assert not processor._needs_check(5) and processor._needs_check(7)

    def fail(batch_df, batch_id):
        raise RuntimeError("a task failed mid-append")

    monkeypatch.setattr(processor, "_process", fail)
    with pytest.raises(RuntimeError):
        processor(None, 5)
    assert processor._needs_check(5) and processor._needs_check(6)
