"""ImageFeaturizer: schema checks, bad rows, save/load, and one featurizer call per row."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from memestream.errors import DataError
from memestream.features import DEFAULT_FEATURE_SET, featurize_batch, get_feature_set
from memestream.featurizer import ImageFeaturizer


@pytest.fixture(scope="module")
def rows(image_bytes, bad_payloads):
    """(name, bytes) pairs: four good images, every conftest bad payload and a null."""
    good = [(f"good{i}", image_bytes(("doom", "animal_crossing")[i % 2], i, ("jpeg", "png")[i % 2])) for i in range(4)]
    return good + sorted(bad_payloads.items()) + [("null", None)]


@pytest.fixture(scope="module")
def images(spark, rows):
    return spark.createDataFrame([(n, None if b is None else bytearray(b)) for n, b in rows], "name string, content binary").repartition(2)


def test_good_rows_get_features_and_bad_rows_a_zero_vector_and_error(images, rows):
    fz = ImageFeaturizer(featureSet="gray32")
    out = {r["name"]: r for r in fz.transform(images).select("name", vector_to_array("features").alias("f"), "error").collect()}
    assert len(out) == len(rows)
    expected, _ = featurize_batch([b for _, b in rows], get_feature_set("gray32"))
    for i, (name, _) in enumerate(rows):
        vec = np.array(out[name]["f"], dtype=np.float32)
        assert vec.shape == (1024,)
        np.testing.assert_allclose(vec, expected[i], atol=1e-6)  # same numbers as the plain function
        if name.startswith("good"):
            assert out[name]["error"] is None and vec.any()
        else:
            assert out[name]["error"], name
            assert not vec.any(), f"{name}: bad rows must hold a zero vector"
    assert out["huge_dimensions"]["error"].startswith("too_many_pixels: ")
    assert out["null"]["error"].startswith("empty: ")


def test_schema_errors_are_clear(spark, images):
    fz = ImageFeaturizer()
    with pytest.raises(DataError, match=r"expects a binary column 'content'; found columns \['name', 'bytes'\]"):
        fz.transform(images.withColumnRenamed("content", "bytes"))
    with pytest.raises(DataError, match="expects 'content' to be binary, found string"):
        fz.transform(images.withColumn("content", F.lit("x")))
    with pytest.raises(DataError, match="output column 'features' already exists"):
        fz.transform(images.withColumn("features", F.lit(1)))
    with pytest.raises(DataError, match="output column 'error' already exists"):
        fz.transform(images.withColumn("error", F.lit(1)))


def test_params_round_trip_through_a_saved_pipeline(tmp_path, images):
    fz = ImageFeaturizer(inputCol="content", outputCol="vec", errorCol="why", featureSet="gray32", maxBytes=5000, maxPixels=123456)
    Pipeline(stages=[fz]).fit(images).write().save(str(tmp_path / "model"))
    loaded = PipelineModel.load(str(tmp_path / "model")).stages[0]
    assert isinstance(loaded, ImageFeaturizer)
    assert (loaded.getOutputCol(), loaded.getErrorCol(), loaded.getFeatureSet()) == ("vec", "why", "gray32")
    assert (loaded.getMaxBytes(), loaded.getMaxPixels()) == (5000, 123456)
    assert loaded.dim() == 1024
    errors = {r["name"]: r["why"] for r in loaded.transform(images).select("name", "why").collect()}
    assert errors["good1"].startswith("oversized: ") and "5,000-byte cap" in errors["good1"]  # maxBytes survived
    assert ImageFeaturizer().getFeatureSet() == DEFAULT_FEATURE_SET


def test_featurizer_runs_once_per_row_when_features_and_error_are_both_used(spark, images, rows, tmp_path, monkeypatch):
    """Reading both struct fields and filtering on the error must not decode an image twice."""
    log = tmp_path / "calls.log"
    body = ImageFeaturizer._udf_body

    def counting_body(self, read_max, from_path):
        run = body(self, read_max, from_path)
        path = str(log)

        def counted(values: pa.Array) -> pa.Array:  # a closure: cloudpickle ships it (and the log path) to the workers
            with open(path, "a", encoding="ascii") as fh:  # O_APPEND: safe across worker processes
                fh.write(f"{len(values)}\n")
            return run(values)

        return counted

    monkeypatch.setattr(ImageFeaturizer, "_udf_body", counting_body)
    out = ImageFeaturizer(featureSet="gray32").transform(images)

    def calls() -> int:
        counts = [int(x) for x in log.read_text().split()] if log.exists() else []
        log.unlink(missing_ok=True)
        return sum(counts)

    ok = out.filter(F.col("error").isNull()).select("name", vector_to_array("features").alias("f"), "error").collect()
    assert len(ok) == 4 and all(len(r["f"]) == 1024 for r in ok)
    assert calls() == len(rows)
    bad = out.filter(F.col("error").isNotNull()).select("error", F.size(vector_to_array("features")).alias("n")).collect()
    assert len(bad) == len(rows) - 4
    assert calls() == len(rows)


def test_transform_paths_gives_the_same_features_and_errors_as_reading_then_transform(spark, image_bytes, bad_payloads, tmp_path):
    """Training reads and featurizes in one UDF call; it must match the saved stage exactly."""
    from memestream.load import EMPTY_FILE_MARKER, read_files

    files = {f"g{i}.jpg": image_bytes(["doom", "cats"][i % 2], 40 + i, "jpeg") for i in range(4)}
    files.update({f"bad_{k}.bin": v for k, v in bad_payloads.items() if v})
    files["empty.png"] = EMPTY_FILE_MARKER
    cap = max(len(v) for v in files.values()) + 100
    files["big.jpg"] = image_bytes("doom", 1, "jpeg") + b"\0" * cap  # over the cap
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = spark.createDataFrame([(str(tmp_path / n),) for n in sorted(files)], "path string")
    feat = ImageFeaturizer(inputCol="content", outputCol="features", errorCol="error")

    fused = feat.transform_paths(paths, "path", read_max_bytes=cap).select("path", vector_to_array("features").alias("f"), "error")
    two_step = (feat.transform(read_files(paths, max_bytes=cap))
                .select("path", vector_to_array("features").alias("f"), F.coalesce("load_error", "error").alias("error")))
    a = {r["path"]: (r["f"], r["error"]) for r in fused.collect()}
    b = {r["path"]: (r["f"], r["error"]) for r in two_step.collect()}
    assert a.keys() == b.keys() and len(a) == len(files)
    for path in a:
        assert a[path][1] == b[path][1], path
        assert np.array_equal(np.array(a[path][0]), np.array(b[path][0])), path
    errors = {p.rsplit("/", 1)[1]: e.split(":")[0] for p, (_, e) in a.items() if e}
    assert errors["big.jpg"] == "oversized" and errors["empty.png"] == "empty"
    assert set(errors) == set(files) - {f"g{i}.jpg" for i in range(4)}
