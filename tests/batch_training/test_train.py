"""meme-train end to end on the generated sample folder (the session's ``trained_model_dir``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batch_training.train import TrainConfig, train
from memestream.classify import PREDICTION, classify
from memestream.features import DEFAULT_FEATURE_SET
from memestream.load import read_files
from memestream.modelstore import ModelStore, load_model


def test_trained_version_has_models_manifest_report_and_is_current(trained_model_dir):
    store = ModelStore(trained_model_dir)
    version = store.current()
    assert version is not None and version.startswith("v0001-")
    vdir = Path(trained_model_dir) / version
    m = json.loads((vdir / "manifest.json").read_text())
    assert m["version"] == version and m["feature_set"] == DEFAULT_FEATURE_SET
    assert m["classes"] == ["animal_crossing", "cats", "doom"]
    assert m["best"] in m["models"] and set(m["models"]) == {"logreg", "random_forest"}
    assert m["pca_k"] == 8 and m["feature_dim"] > 8
    assert m["split"]["sizes"]["test"] == {"animal_crossing": 5, "cats": 5, "doom": 5}
    assert m["split"]["sizes"]["train"] == {"animal_crossing": 15, "cats": 15, "doom": 15}
    assert m["data"]["fingerprint"]["count"] == 72 and len(m["data"]["fingerprint"]["sha256"]) == 64
    assert set(m["library_versions"]) >= {"pyspark", "opencv", "numpy", "python"}
    for name, info in m["models"].items():
        assert (vdir / info["path"] / "metadata").is_dir()
        assert info["validation"]["n"] == 12 and info["test"]["n"] == 15
        assert info["test"]["accuracy"] >= 0.8, f"{name} should separate the generated classes"
    report = vdir / "report"
    for f in ("metrics.json", "metrics.csv", "per_class.csv", "class_balance.csv", "class_balance.png", "model_comparison.png", "confusion_logreg.png", "roc_logreg.png"):
        assert (report / f).stat().st_size > 0, f
    doc = json.loads((report / "metrics.json").read_text())
    assert doc["models"]["logreg"]["test"]["accuracy"] == m["models"]["logreg"]["test"]["accuracy"]


def test_rerun_adds_v0002_and_saved_model_predicts_like_in_memory(spark, trained_model_dir, sample_dataset, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)
    cfg = TrainConfig(data=str(sample_dataset), model_dir=str(root), pca_k=6, models=("logreg",), progress=False, plots=False)
    result = train(spark, cfg)
    assert result.version.startswith("v0002-")
    assert ModelStore(root).current() == result.version
    first = ModelStore(root).manifest(ModelStore(root).versions()[0])
    assert result.manifest["data"]["fingerprint"] == first["data"]["fingerprint"]

    rows = read_files(spark.createDataFrame([(str(p),) for p in sorted(Path(sample_dataset).rglob("*.png"))[:9]], ["path"]))
    loaded = load_model(root)
    assert loaded.version == result.version and loaded.name == "logreg"
    saved = {r["path"]: int(r[PREDICTION]) for r in classify(rows, loaded, keep_prediction_index=True).collect()}
    in_memory = {r["path"]: int(r[PREDICTION]) for r in result.pipelines["logreg"].transform(rows).select("path", PREDICTION).collect()}
    assert len(saved) == 9 and saved == in_memory
    labels = classify(rows, loaded).select("path", "label").collect()
    assert all(r["label"] == Path(r["path"]).relative_to(sample_dataset).parts[0] for r in labels)


def test_saved_featurizer_must_match_the_training_one():
    from batch_training.train import check_same_featurizer
    from memestream.errors import ModelError
    from memestream.featurizer import ImageFeaturizer

    trained = ImageFeaturizer(featureSet="gray32")
    check_same_featurizer(ImageFeaturizer(featureSet="gray32"), trained, "v1")
    with pytest.raises(ModelError, match=r"featureSet: saved 'colortex', trained with 'gray32'"):
        check_same_featurizer(ImageFeaturizer(featureSet="colortex"), trained, "v1")
    with pytest.raises(ModelError, match="maxBytes"):
        check_same_featurizer(ImageFeaturizer(featureSet="gray32", maxBytes=10), trained, "v1")
