"""Both scoring engines (numpy in the Python worker, Spark ML in the JVM) give the same rows."""
from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import functions as F

from memestream.errors import ConfigError
from memestream.load import EMPTY_FILE_MARKER
from memestream.modelstore import load_model
from memestream.scorer import Scorer, compile_model
from streaming.scoring import StreamScorer
from streaming.sources import folder_frame


def _scored_both_ways(spark, frame, model):
    out = {}
    for engine in ("python", "spark"):
        table = StreamScorer(engine).score(frame, model).drop("processing_time").toPandas().sort_values("origin")
        out[engine] = table.reset_index(drop=True)
    return out["python"], out["spark"]


def _assert_same_rows(py, jvm):
    assert list(py.columns) == list(jvm.columns)
    for col in ("origin", "label", "error", "error_code", "image_id", "size_bytes", "model_version", "date"):
        assert [None if pd.isna(v) else v for v in py[col]] == [None if pd.isna(v) else v for v in jvm[col]], col
    assert [p if p is None else bytes(p) for p in py["payload"]] == [p if p is None else bytes(p) for p in jvm["payload"]]
    for a, b in zip(py["probabilities"], jvm["probabilities"]):
        if a is None or b is None:
            assert a is None and b is None
            continue
        da, db = dict(a), dict(b)
        assert da.keys() == db.keys() and all(abs(da[k] - db[k]) < 1e-9 for k in da)
    assert (py["confidence"].fillna(-1) - jvm["confidence"].fillna(-1)).abs().max() < 1e-9
    for col in ("ood", "nearest_class", "ocr_ran", "ocr_text"):  # novelty applied alike; no OCR in either
        assert [None if pd.isna(v) else v for v in py[col]] == [None if pd.isna(v) else v for v in jvm[col]], col
    assert (py["novelty"].fillna(-1) - jvm["novelty"].fillna(-1)).abs().max() < 1e-6
    assert py["novelty"].notna().sum() == py["error"].isna().sum()  # every decodable row is scored


def test_python_and_spark_scoring_give_the_same_rows(spark, trained_model_dir, image_bytes, bad_payloads, tmp_path):
    """The in-worker (numpy) model and Spark ML label every input alike, bad ones included,
    for file paths (folder) and for bytes (Kafka)."""
    model = load_model(trained_model_dir, which="logreg")
    files = {f"g{i}.png": image_bytes(["doom", "cats", "animal_crossing"][i % 3], 300 + i, "png") for i in range(6)}
    files.update({f"b_{k}.jpg": v for k, v in bad_payloads.items() if v})
    files["empty.jpg"] = EMPTY_FILE_MARKER
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    listing = spark.read.format("binaryFile").load(str(tmp_path)).select("path", "length", "modificationTime")
    py, jvm = _scored_both_ways(spark, listing.transform(folder_frame), model)
    _assert_same_rows(py, jvm)
    assert py["error"].isna().sum() == 6 and set(py.loc[py["error"].notna(), "origin"]) == set(files) - {f"g{i}.png" for i in range(6)}

    rows = [("kafka", f"t/0/{i}", None, None, None, data) for i, data in enumerate([*files.values(), b"", None])]
    frame = spark.createDataFrame(rows, "source string, origin string, path string, kafka_key string, "
                                  "headers map<string,string>, content binary").withColumn("event_time", F.current_timestamp())
    py, jvm = _scored_both_ways(spark, frame, model)
    _assert_same_rows(py, jvm)
    assert py["error"].notna().sum() == len(files) - 6 + 2


def test_spark_only_model_is_scored_in_the_jvm_and_python_engine_refuses_it(spark, trained_model_dir):
    rf = load_model(trained_model_dir, which="random_forest")
    assert compile_model(rf) is None and Scorer(rf).engine == "spark"
    assert compile_model(load_model(trained_model_dir, which="logreg")) is not None
    frame = spark.createDataFrame([("folder", "x", "file:/nonexistent/x.png", None, None)],
                                  "source string, origin string, path string, kafka_key string, headers map<string,string>")
    with pytest.raises(ConfigError, match="run only in Spark"):
        StreamScorer("python").score(frame, rf)
    row = StreamScorer("auto").score(frame.selectExpr("*", "current_timestamp() as event_time"), rf).collect()[0]
    assert row["error_code"] == "read_error" and row["label"] is None
