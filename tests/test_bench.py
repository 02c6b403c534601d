"""Smoke test of the benchmark harness on generated data: the JSON has the fields, not timings."""
from __future__ import annotations

import json

import pytest

from bench.__main__ import _clean, build_parser, config_from_args, format_table, run_benchmark, write_report
from memestream.errors import ConfigError
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
    assert "end to end" in format_table(saved)
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
    path = write_report(_clean(report), tmp_path)
    saved = json.loads(path.read_text())
    assert saved["scenarios"]["limit"]["rows"][0]["images_per_s"] is None
    assert write_report(_clean(report), tmp_path) != path  # same second: a second file, not an overwrite
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
