"""Smoke test of the benchmark harness on generated data: the JSON has the fields, not timings."""
from __future__ import annotations

import json
import os

import pytest

from bench.__main__ import build_parser, config_from_args, format_table, run_benchmark, write_report
from bench.common import finite
from memestream.errors import ConfigError, ModelError
from memestream.sample import write_dataset


@pytest.mark.slow  # fits a model and runs Spark jobs: ~30 s idle, minutes on a loaded machine
def test_limit_scenario_writes_report_with_required_fields(spark, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, per_class=8, classes=["doom", "animal_crossing"], seed=2)
    args = build_parser().parse_args(
        ["--only", "limit", "--quick", "--fit-in-bench", "--data", str(data), "--work-dir", str(tmp_path / "work"),
         "--results-dir", str(tmp_path / "results")]
    )
    config = config_from_args(args)
    report = run_benchmark(config, spark=spark)
    path = write_report(report, config.results_dir)

    saved = json.loads(path.read_text())
    assert path.parent == tmp_path / "results" and path.suffix == ".json"
    env = saved["environment"]
    assert env["cpu_count"] >= 1 and env["python"] and env["pyspark"] and env["opencv"]
    assert saved["data"]["images"] == 16 and saved["data"]["classes"] == ["animal_crossing", "doom"]
    limit = saved["scenarios"]["limit"]
    assert limit["status"] == "ok", limit.get("error")
    for key in ("decode_images_per_s", "featurize_images_per_s", "images_per_s_per_core", "images_per_cpu_s"):
        assert limit[key] > 0, key
    assert set(limit["latency_ms"]) == {"p50", "p95", "p99"}
    # the numpy copy of the model must agree with Spark's own predictions
    assert limit["numpy_vs_spark_agreement"] == 1.0
    assert limit["bad_images"] == 0
    cap = limit["time_cap_cost"]  # the poison-pill time cap measured on the normal path, both ways
    assert cap["images"] == 16 * 3 and cap["cpu_s_with"] > 0 and cap["cpu_s_without"] > 0 and cap["ratio"] > 0
    assert "end to end" in format_table(saved) and "time cap on the normal path" in format_table(saved)
    assert spark.range(1).count() == 1  # the shared session is still usable


def test_unknown_scenario_is_a_config_error():
    args = build_parser().parse_args(["--only", "limit,warp-drive"])
    with pytest.raises(ConfigError, match="warp-drive"):
        config_from_args(args)


def test_report_json_and_table_without_spark(tmp_path):
    """The writer keeps JSON strict (NaN -> null) and the table shows every scenario's rows."""
    report = {
        "started_utc": "2026-11-27T13:00:00Z",
        "environment": {"cpu_count": 2, "python": "3.11", "pyspark": "4.3.0", "opencv": "5.0.0"},
        "data": {"images": 3},
        "scenarios": {
            "limit": {"status": "ok", "wall_s": 1.0, "rows": [{"case": "end to end", "images": 3, "images_per_s": float("nan")}]},
            "train": {"status": "failed", "wall_s": 0.1, "error": "RuntimeError: boom"},
        },
    }
    path = write_report(finite(report), tmp_path)
    saved = json.loads(path.read_text())
    assert saved["scenarios"]["limit"]["rows"][0]["images_per_s"] is None
    assert write_report(finite(report), tmp_path) != path  # same second: a second file, not an overwrite
    table = format_table(saved)
    assert "[limit] ok" in table and "[train] failed" in table and "boom" in table


def test_augmented_dataset_has_exact_size_and_distinct_bytes(tmp_path):
    from bench.common import augmented_dataset, list_labelled

    write_dataset(tmp_path / "base", per_class=3, classes=["doom", "cats"], seed=1)
    base = list_labelled(tmp_path / "base")
    big = augmented_dataset(base, 10, tmp_path / "work")
    assert len(big) == 10 and big.classes == ["cats", "doom"]
    assert len({p.read_bytes() for p in big.files}) == 10
    assert not any(str(p).startswith(str(tmp_path / "base")) for p in big.files)
    small = augmented_dataset(base, 4, tmp_path / "work")
    assert len(small) == 4 and set(small.labels) == {"cats", "doom"}


# -- bench.longrun -------------------------------------------------------------------------------

def test_longrun_delivery_check_fails_on_duplicate_missing_and_extra_rows():
    """The exactly-once count itself: each way of being wrong is caught, the right table passes."""
    import pyarrow as pa

    from bench.longrun import NAME_FORMAT
    from bench.longrun_checks import check_delivery

    fed = [NAME_FORMAT.format(i) for i in range(5)]
    good = check_delivery(fed, pa.table({"origin": fed}), pa.table({"origin": [fed[2]]}))
    assert good["ok"] and good["rows"] == good["distinct_origins"] == 5 and good["quarantine_rows"] == 1

    duplicated = check_delivery(fed, pa.table({"origin": fed + [fed[3]]}))
    assert not duplicated["ok"] and duplicated["duplicated"] == 1 and duplicated["rows"] == 6
    assert duplicated["examples"]["duplicated"] == [fed[3]]

    missing = check_delivery(fed, pa.table({"origin": fed[:4]}))
    assert not missing["ok"] and missing["missing"] == 1 and missing["examples"]["missing"] == [fed[4]]

    # same row count, but one input twice and another never: counting rows alone would pass
    swapped = check_delivery(fed, pa.table({"origin": fed[:4] + [fed[0]]}))
    assert not swapped["ok"] and swapped["rows"] == 5 and swapped["missing"] == 1 and swapped["duplicated"] == 1

    extra = check_delivery(fed, pa.table({"origin": fed[:4] + ["stranger.jpg"]}))
    assert not extra["ok"] and extra["unexpected"] == 1

    stray_quarantine = check_delivery(fed, pa.table({"origin": fed}), pa.table({"origin": ["stranger.jpg"]}))
    assert not stray_quarantine["ok"] and stray_quarantine["quarantine_not_in_predictions"] == 1


def _synthetic_samples(n_images: int, grow: bool, slow_down: bool) -> tuple[list[dict], list[tuple[float, int]]]:
    samples, progress, t = [], [], 0.0
    for i in range(0, n_images + 1, n_images // 20):
        rate = 5.0 if (slow_down and i > 0.8 * n_images) else 10.0  # 20,000 images: ~35 min, long enough to judge memory
        t += (n_images // 20) / rate if i else 0.0
        samples.append({
            "t_s": t, "images": i, "jvm_live_heap_mib": 80.0 + (i / 1000 if grow else 0), "driver_jvm": 500.0,
            "python_driver": 200.0, "python_workers": 300.0, "rss_mib": 1000.0,
            "output_files": 30 + (i // 10 if grow else 0), "delta_log_files": 25, "checkpoint_files": 40, "checkpoint_bytes": 50_000,
            "spool_files": 3000 if i < n_images else 0,
        })
        progress.append((t, i))
    return samples, progress


def test_longrun_targets_pass_when_flat_and_fail_when_growing_or_slowing():
    from bench.longrun_checks import compute_targets, format_report, window_rate

    assert window_rate([(0.0, 0), (10.0, 1000), (20.0, 2000)], 500, 2000) == 100.0
    assert window_rate([(0.0, 0), (10.0, 1000)], 500, 5000) is None  # never reached: no number, not a guess

    n = 20_000
    flat = {t["key"]: t for t in compute_targets(*_synthetic_samples(n, grow=False, slow_down=False), n)}
    assert all(t["pass"] is True for t in flat.values()), [t for t in flat.values() if not t["pass"]]
    assert flat["output_files"]["slope_per_10k_images"] == 0

    bad = {t["key"]: t for t in compute_targets(*_synthetic_samples(n, grow=True, slow_down=True), n)}
    assert bad["jvm_live_heap_mib"]["pass"] is False and bad["jvm_live_heap_mib"]["ratio"] > 1.1
    assert bad["output_files"]["pass"] is False and bad["output_files"]["slope_per_10k_images"] == 1000
    assert bad["images_per_s"]["pass"] is False and bad["images_per_s"]["ratio"] == 0.5
    assert bad["checkpoint_bytes"]["pass"] is True  # only what grows fails

    short = {t["key"]: t for t in compute_targets(*_synthetic_samples(300, grow=True, slow_down=False), 300)}
    assert short["jvm_live_heap_mib"]["pass"] is None  # 30 s of samples: warm-up, no memory verdict

    few = compute_targets(*_synthetic_samples(n, grow=False, slow_down=False)[:1], [], n)
    assert {t["key"]: t["pass"] for t in few}["images_per_s"] is None  # no progress trace: n/a
    result = {"environment": {"cpu_count": 2}, "config": {"images": n, "stream_args": []}, "targets": list(bad.values()),
              "delivery": {"ok": False, "fed": n, "rows": n - 1, "distinct_origins": n - 1, "missing": 1, "duplicated": 0,
                           "unexpected": 0}}
    table = format_report(result)
    assert "FAIL" in table and "missing 1" in table and "cores=2" in table


def test_meme_bench_runs_longrun_only_when_named():
    args = build_parser().parse_args(["--only", "longrun", "--longrun-images", "1000"])
    config = config_from_args(args)
    assert config.only == ("longrun",) and config.longrun_images == 1000
    assert "longrun" not in config_from_args(build_parser().parse_args([])).only


@pytest.mark.slow  # a real meme-stream subprocess (JVM start, 300 images): ~1 min idle, more when loaded
def test_longrun_quick_run_counts_every_image_and_writes_json_and_plot(spark, tmp_path):
    from bench.common import list_labelled
    from bench.longrun import main, tiny_image_bytes
    from bench.model import fit_in_process

    data = tmp_path / "train"
    for label in ("animal_crossing", "cats", "doom"):
        (data / label).mkdir(parents=True)
        for i in range(8):
            (data / label / f"{i}.jpg").write_bytes(tiny_image_bytes(label, i))
    model = fit_in_process(spark, list_labelled(data, generated=True), tmp_path / "model", "gray32", pca_k=8)
    results, work, png = tmp_path / "results", tmp_path / "work", tmp_path / "plots" / "longrun.png"

    # A 30-second run is all JIT warm-up for the driver JVM: C2 compiling grows its RSS >10% between
    # the quarters the memory checks compare, which hours of a real long run would not show. The
    # harness is under test here, so the driver runs C1 only (flags pass through, in order).
    code = main(["--images", "300", "--model", str(model), "--work-dir", str(work), "--results-dir", str(results),
                 "--plot", str(png), "--sample-seconds", "2", "--stream-arg=--driver-java-options=-XX:TieredStopAtLevel=1",
                 "--stream-arg=--no-ui", "--quiet"])

    (path,) = results.glob("longrun-*.json")
    saved = json.loads(path.read_text())
    assert code == 0, saved.get("error")
    assert saved["delivery"]["ok"] and saved["delivery"]["rows"] == saved["delivery"]["distinct_origins"] == 300
    assert saved["stop"]["graceful"] and saved["stop"]["exit_code"] == 0
    assert saved["stream_command"][-1] == "--no-ui"  # pass-through flags reach meme-stream, last
    last = saved["samples"][-1]
    assert last["images"] == 300 and last["spool_files"] == 0 and last["delta_log_files"] >= 1
    for key in ("driver_jvm", "python_driver", "rss_mib", "output_files", "output_bytes", "checkpoint_files",
                "checkpoint_bytes", "spool_bytes", "inbox_files", "t_s", "fed"):
        assert key in last, key
    assert saved["progress"][-1][1] == 300 and saved["run"]["images_per_s"] > 0
    assert {t["key"] for t in saved["targets"]} >= {"jvm_live_heap_mib", "output_files", "checkpoint_bytes", "images_per_s"}
    assert all(t["pass"] is not False for t in saved["targets"])
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_meme_bench_longrun_scenario_passes_its_flags_and_reports_rows(tmp_path, monkeypatch):
    """The registry path (no stream: the run itself is replaced by a crafted result)."""
    import bench.longrun as longrun
    from bench.context import BenchContext
    from bench.longrun_checks import compute_targets

    seen = {}
    samples, progress = _synthetic_samples(300, grow=False, slow_down=False)

    def fake_run(cfg):
        seen["cfg"] = cfg
        return {"started_utc": "2026-11-29T19:00:00Z", "environment": {"cpu_count": 2},
                "config": {"images": cfg.images, "stream_args": list(cfg.stream_args)}, "samples": samples,
                "progress": progress, "run": {"images_per_s": 50.0, "seconds": 6.0},
                "targets": compute_targets(samples, progress, cfg.images),
                "delivery": {"ok": True, "rows": 300, "distinct_origins": 300, "fed": 300}}

    monkeypatch.setattr(longrun, "run_longrun_config", fake_run)
    args = build_parser().parse_args(["--only", "longrun", "--quick", "--results-dir", str(tmp_path),
                                      "--stream-arg=--keep-commits", "--stream-arg=7"])
    result = longrun.run_longrun(BenchContext(config_from_args(args)))
    assert seen["cfg"].images == 300 and seen["cfg"].stream_args == ("--keep-commits", "7")
    assert result["passed"] and result["rows"][0]["images"] == 300
    assert result["rows"][1]["case"] == "longrun delivery: PASS (300 rows, 300 distinct, 300 fed)"
    assert json.loads((tmp_path / "longrun-20261129T190000Z.json").read_text())["config"]["images"] == 300
    assert (tmp_path / "longrun-20261129T190000Z.png").stat().st_size > 10_000


def test_stream_scenarios_run_the_streams_default_trigger_and_pass_extra_flags_last(tmp_path, monkeypatch):
    """The light-load latency is the default stream's: no hard-coded --trigger; a --stream-arg
    can still set one (it comes last, so it wins)."""
    from bench.stream import stream_args
    from streaming.cli import build_parser as stream_parser
    from streaming.config import DEFAULT_TRIGGER_S

    monkeypatch.delenv("MEMESTREAM_TRIGGER", raising=False)
    args = stream_args("folder", tmp_path, tmp_path / "out", tmp_path / "model")
    assert "--trigger" not in args
    assert stream_parser().parse_args(args).trigger == DEFAULT_TRIGGER_S
    args = stream_args("folder", tmp_path, tmp_path / "out", tmp_path / "model", ("--text", "off", "--trigger", "0.5"))
    assert args[-4:] == ["--text", "off", "--trigger", "0.5"] and stream_parser().parse_args(args).trigger == 0.5


def test_result_files_name_no_machine_paths(tmp_path, monkeypatch):
    import os
    import tempfile

    from bench.common import portable_paths

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "t"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "proj" / "main"
    data = tmp_path / "proj" / "shared" / "datasets"
    project.mkdir(parents=True)
    data.mkdir(parents=True)
    doc = {"model": str(tmp_path / "t" / "m1"), "python": str(tmp_path / "home" / ".pyenv" / "bin" / "python"),
           "data": str(data), "url": "/thumb/archive/x.png", "n": 3, "runs": [str(tmp_path / "t" / "r")]}
    out = portable_paths(doc, cwd=str(project))
    assert out["model"] == "$TMPDIR/m1" and out["runs"] == ["$TMPDIR/r"] and out["n"] == 3
    assert out["python"] == "~/.pyenv/bin/python"
    assert out["data"] == os.path.join("..", "shared", "datasets")
    assert out["url"] == "/thumb/archive/x.png"  # not a path of this machine


def test_holdout_keeps_near_duplicates_together_and_titles_of_the_training_part_only(tmp_path, image_bytes):
    """``bench.holdout``'s split: reposts (same bytes, or a re-encode) of a held-back meme are
    held back with it, the training folder's posts.csv lists only training files, and the two
    symlink trees partition the inputs."""
    import csv

    import numpy as np

    from batch_training import selection as sel
    from bench.holdout import _groups, _link_tree, _split_titles

    root = tmp_path / "data"
    rel = []
    for label in ("doom", "animal_crossing"):
        for i in range(10):
            data = image_bytes(label=label, seed=i)
            for copy in ("a", "b"):  # every meme posted twice: the same bytes
                r = f"{label}/{i}{copy}.jpg"
                (root / label).mkdir(parents=True, exist_ok=True)
                (root / r).write_bytes(data)
                rel.append(r)
    with (root / "posts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "title"])
        w.writerows([(r, f"title of {r}") for r in rel])
    files = [root / r for r in rel]
    groups = _groups(files, "gray32")
    assert len(set(groups.tolist())) <= 20 and all(groups[i] == groups[i + 1] for i in range(0, len(rel), 2))
    y = np.array([0 if r.startswith("doom") else 1 for r in rel])
    held = sel.grouped_split(groups, y, 0.2, 1042)
    assert 0 < held.sum() < len(rel) and all(held[i] == held[i + 1] for i in range(0, len(rel), 2))
    train_rel = [r for r, h in zip(rel, held) if not h]
    _link_tree(root, train_rel, tmp_path / "train")
    _link_tree(root, [r for r, h in zip(rel, held) if h], tmp_path / "held")
    _split_titles(root, set(train_rel), tmp_path / "train")
    linked = {p.relative_to(tmp_path / d).as_posix() for d in ("train", "held") for p in (tmp_path / d).rglob("*.jpg")}
    assert linked == set(rel)
    with (tmp_path / "train" / "posts.csv").open() as fh:
        titled = [row["file"] for row in csv.DictReader(fh)]
    assert sorted(titled) == sorted(train_rel)


@pytest.mark.slow  # two console scripts as subprocesses (meme-train, meme-evaluate): ~1 min idle
def test_holdout_trains_on_the_rest_and_scores_the_held_back_fifth(sample_dataset, tmp_path):
    import json

    from bench.holdout import main as holdout_main

    out = tmp_path / "holdout.json"
    assert holdout_main(["--data", str(sample_dataset), "--work-dir", str(tmp_path / "w"), "--seeds", "3", "--out", str(out),
                         "--train-arg=--text", "--train-arg=off", "--train-arg=--models", "--train-arg=logreg"]) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["seeds"]
    assert row["train_images"] + row["held_images"] == 72 and 8 <= row["held_images"] <= 20
    assert 0.8 <= row["accuracy"] <= 1.0 and doc["mean"]["accuracy"] == round(row["accuracy"], 4)
    assert not row["ocr_share"] and not doc["mean"]["ocr_share"]  # --text off: nothing OCR'd
    assert 0.0 <= row["ece_floor"] < 0.5 and doc["mean"]["ece_floor"] == round(row["ece_floor"], 4)  # meme-evaluate's, carried


def test_memory_sampler_reports_the_largest_single_python_worker(tmp_path):
    """The per-worker memory target needs the biggest Spark Python worker on its own, not the
    sum of the tree: a child whose command line is a pyspark.daemon worker holding ~80 MB."""
    import subprocess
    import sys
    import time

    from bench.common import MemorySampler

    ready = tmp_path / "ready"
    code = "import sys, time, pathlib; x = bytearray(80_000_000); x[::4096] = b'1' * len(x[::4096]); pathlib.Path(sys.argv[1]).touch(); time.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", code, str(ready), "pyspark.daemon"])
    try:
        with MemorySampler(os.getpid(), interval=0.05) as sampler:
            deadline = time.monotonic() + 20
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        result = sampler.result()
    finally:
        child.kill()
        child.wait()
    assert 75 <= result["peak_python_worker_mib"] < result["peak_python_mib"], result
    # the child's 80 MB are its own (not shared): PSS counts them, and never more than RSS does
    assert 75 <= result["peak_pss_mib"] <= result["peak_rss_mib"], result


def test_memory_sampler_counts_pages_shared_by_forked_workers_once_in_pss():
    """Summed RSS counts a page shared by a forked child once per process; summed PSS counts it
    once: a parent holding ~120 MB that forks a child which only sleeps."""
    import time

    from bench.common import tree_rss

    held = bytearray(120_000_000)
    held[::4096] = b"1" * len(held[::4096])
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        parts = tree_rss(os.getpid())
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    rss = parts["jvm"] + parts["python"] + parts["other"]
    assert rss - parts["pss"] >= 100_000_000, parts  # the 120 MB counted twice by RSS, once by PSS


def test_predictions_watcher_counts_rows_errors_and_ocr_failures_once(tmp_path):
    """The stream benchmark's reader of the predictions table: a row counts once its Delta commit
    is in the log (a Parquet file no commit names is not read), once even when it comes again,
    and OCR runs and OCR failures are counted (a broken OCR engine falls back to the image branch
    and would otherwise pass for a fast cascade)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from bench.stream import PredictionsWatcher

    table = tmp_path / "predictions"

    def rows(origins, errors, ocr_ran, ocr_errors):
        return pa.table({"origin": origins, "error": pa.array(errors, pa.string()), "ocr_ran": pa.array(ocr_ran, pa.bool_()),
                         "ocr_error": pa.array(ocr_errors, pa.string()), "date": ["2026-11-30"] * len(origins)})

    write_deltalake(str(table), rows(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [None, None, "not_an_image", None],
                                     [True, False, None, True], [None, None, None, "ocr_failed: boom"]), partition_by=["date"])
    watcher = PredictionsWatcher(tmp_path, "origin")
    assert watcher.poll() == 4 and watcher.poll() == 0
    pq.write_table(rows(["z.jpg"], [None], [True], [None]).drop(["date"]), table / "part-uncommitted.parquet")
    assert watcher.poll() == 0  # written, not committed: no reader sees it yet
    write_deltalake(str(table), rows(["a.jpg", "e.jpg"], [None, None], [True, False], [None, None]), mode="append")
    assert watcher.poll() == 1
    assert (watcher.errors, watcher.ocr_rows, watcher.ocr_errors) == (1, 2, 1)
    assert set(watcher.first_seen) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"}


def test_a_failing_meme_train_is_one_clear_error_not_another_model(tmp_path, monkeypatch):
    """No silent in-process fallback: every scenario needing the model gets meme-train's failure,
    and meme-train runs once."""
    import bench.context as context

    data = tmp_path / "data"
    write_dataset(data, per_class=2, classes=["doom", "animal_crossing"], seed=2)
    runs = []
    real = context.run_meme_train
    monkeypatch.setattr(context, "run_meme_train", lambda *a, **k: runs.append(a) or real(*a, **k))
    ctx = context.BenchContext(context.BenchConfig(data=str(data), work=str(tmp_path / "work"), train_args=("--feature-set", "nope")))
    try:
        for _ in range(2):
            with pytest.raises(ModelError, match="meme-train could not train the benchmark's model .*invalid choice: 'nope'"):
                ctx.model_dir()
        assert len(runs) == 1 and not (ctx.tmp / "model").exists()  # no model fitted in its place
    finally:
        ctx.close()


def test_query_scenario_writes_a_delta_table_and_times_a_cold_duckdb_query(tmp_path):
    """bench.query's folder is a Delta table in the contract's schema; meme-query answers over it cold."""
    from deltalake import DeltaTable

    from bench.query import cold_query, write_output
    from streaming.schema import PREDICTIONS, arrow_schema, read_table

    out = write_output(tmp_path / "out", 330, batch_rows=33)
    assert DeltaTable(str(out / PREDICTIONS)).version() == 9  # one commit per batch
    table = read_table(out, PREDICTIONS)
    assert table.num_rows == 330 and table.schema.names == arrow_schema(PREDICTIONS).names
    wall, cpu = cold_query("duckdb", out)
    assert 0 < wall < 60 and cpu > 0
    wall, _ = cold_query("duckdb", out, extra=["--as-of", "4"])
    assert wall > 0


def test_upkeep_bench_records_batches_with_and_without_the_upkeep_thread(spark, monkeypatch, capsys):
    """bench.upkeep on the test session: the upkeep run ends with the predictions compacted to one
    file per date, VACUUMed and its log checkpointed at the newest version; the run without it
    keeps every small file, and its few commits (below checkpointInterval) no checkpoint."""
    import bench.upkeep as upkeep_bench

    results = []
    real = upkeep_bench.measure
    monkeypatch.setattr(upkeep_bench, "measure", lambda *a, **k: results.append(real(*a, **k)) or results[-1])
    assert upkeep_bench.main(["--batches", "3", "--rows", "6", "--compact-every", "2", "--pause", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:11] for line in lines] == ["upkeep off:", "upkeep on :"]
    off, on = results
    assert off["batches_rows"] == on["batches_rows"] == 3  # one batches row per recorded batch
    assert off["passes"] == 0 and off["live_files"] == off["disk_files"] >= 3 * 2  # a file per batch and date at least
    assert on["passes"] >= 1 and on["live_files"] == on["disk_files"] == 2  # OPTIMIZEd per date, then VACUUMed
    for r in (off, on):
        # predictions' log: its creation, the retention property, an append per batch (and the upkeep's commits)
        assert r["log_json_commits"] >= 2 + 3
        assert f"{r['live_files']} live files, {r['disk_files']} on disk" in lines[r["upkeep"]]
    assert off["log_checkpoints"] == 0 and off["log_commits_after_checkpoint"] == off["log_json_commits"]
    assert on["log_checkpoints"] >= 1 and on["log_commits_after_checkpoint"] == 0  # the final pass checkpointed
    assert spark.range(1).count() == 1  # the shared session was not stopped


def test_label_value_queue_order_is_ood_then_margin_one_per_group_first():
    import numpy as np

    from bench.label_value import queue_order

    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.51, 0.49], [0.7, 0.3]])
    ood = np.array([False, False, True, False, False])
    groups = np.array([0, 1, 2, 1, 4])  # rows 1 and 3: one meme and its repost
    assert queue_order(probs, ood, groups, [str(i) for i in range(5)]) == [2, 3, 4, 0, 1]


def test_label_value_runs_on_a_small_folder_and_reports_every_order_and_budget(sample_dataset, tmp_path):
    from bench.label_value import main

    out = tmp_path / "lv.json"
    assert main(["--data", str(sample_dataset), "--seeds", "1", "--budgets", "0,6", "--seed-images", "15",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["mean_accuracy"]) == {"queue", "margin", "random"}
    assert all(0 <= v <= 1 for row in doc["mean_accuracy"].values() for v in row.values())
    runs = doc["runs"]
    assert len(runs) == 6 and {r["labels"] for r in runs} == {0, 6} and doc["cores"] == os.cpu_count()
    assert all(r["seed_images"] + r["pool"] + r["test"] == 72 for r in runs)


@pytest.mark.slow
def test_poison_bench_measures_a_recovery_and_checks_the_rows(trained_model_dir, tmp_path, capsys):
    import json

    from bench.poison import main

    assert main(["--model", str(trained_model_dir), "--images", "12", "--max-files-per-trigger", "6", "--kind", "segfault",
                 "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]) == 0
    saved = json.loads(next((tmp_path / "results").glob("poison-*.json")).read_text())
    assert saved["codes"] == {"labelled": 12, "decoder_crashed": 1}
    assert saved["isolation_s"] > 0 and saved["poisoned_batch_s"] >= saved["isolation_s"] and saved["cores"] >= 1
    assert saved["baseline"]["rows"] == 12 and saved["poisoned"]["rows"] == 13
    assert "recovery : isolation" in capsys.readouterr().out


@pytest.mark.slow  # two meme-stream subprocesses on local-cluster (a JVM each, plus executors): minutes
def test_scale_out_streams_on_one_and_two_executors_and_reports_the_ratio(trained_model_dir, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, per_class=4, classes=["doom", "cats"], seed=4)
    args = build_parser().parse_args(
        ["--only", "scale-out", "--quick", "--stream-images", "6", "--data", str(data), "--model", str(trained_model_dir),
         "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")])
    config = config_from_args(args)
    assert "scale-out" not in config_from_args(build_parser().parse_args([])).only  # only when named
    report = run_benchmark(config)
    result = report["scenarios"]["scale-out"]
    assert result["status"] == "ok", result.get("error")
    for n in ("1", "2"):
        run = result["runs"][n]
        assert run["master"] == f"local-cluster[{n},1,2048]" and run["stream_exit_code"] == 0
        assert run["saturation"]["complete"] and run["saturation"]["images"] == 6
        assert run["saturation"]["images_per_s"] > 0 and run["peak_rss_mib"] > 0
        assert run["burst_cpu_s"]["executors"] > 0 and run["burst_cpu_s"]["driver_jvm"] > 0
    assert result["two_vs_one"] == pytest.approx(
        result["runs"]["2"]["saturation"]["images_per_s"] / result["runs"]["1"]["saturation"]["images_per_s"], rel=0.01)
    assert "two executors / one" in format_table(report)


def test_cpu_by_role_gives_a_python_worker_to_the_executors_and_the_rest_to_the_driver():
    import subprocess
    import sys

    from bench.common import tree_cpu_by_role

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint(1, flush=True)\ninput()"
    workers = [subprocess.Popen([sys.executable, "-c", spin, *tag], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for tag in ((), ("pyspark.daemon",))]
    try:
        for w in workers:
            assert w.stdout.readline().strip() == "1"  # its 0.3 CPU-s are spent, and it is still alive
        plain, daemon = (tree_cpu_by_role(w.pid) for w in workers)
    finally:
        for w in workers:
            w.communicate("\n", timeout=30)
    assert set(plain) == set(daemon) == {"driver_python", "driver_jvm", "executors", "other"}
    assert plain["driver_python"] >= 0.25 and plain["executors"] == 0
    assert daemon["executors"] >= 0.25 and daemon["driver_python"] == 0
