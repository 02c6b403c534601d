"""meme-train end to end on the generated sample folder (the session's ``trained_model_dir``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batch_training.config import TrainConfig
from batch_training.train import train
from memestream.classify import PREDICTION, classify
from memestream.features import DEFAULT_FEATURE_SET, get_feature_set
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
    assert m["best"] == "stacked" and set(m["models"]) == {"logreg", "random_forest", "stacked"}
    assert m["pca_k"] == 8 and m["feature_dim"] == get_feature_set(DEFAULT_FEATURE_SET).dim == 1904
    sizes = m["split"]["sizes"]
    for cls in m["classes"]:  # whole near-duplicate groups move, so about 20 % of each class
        assert sizes["train"][cls] + sizes["test"][cls] == 24 and 3 <= sizes["test"][cls] <= 7
    n_test = sum(sizes["test"].values())
    assert m["data"]["fingerprint"]["count"] == 72 and len(m["data"]["fingerprint"]["sha256"]) == 64
    assert set(m["library_versions"]) >= {"pyspark", "opencv", "numpy", "python", "onnxruntime"}
    assert m["split"]["folds"] == 5 and m["cv"]["image"]["pca_k"] == 8
    assert m["models"]["stacked"]["text_branch"] and 0 < m["models"]["stacked"]["cascade"] <= 1.01
    for name, info in m["models"].items():
        assert (vdir / info["path"] / "metadata").is_dir()
        assert info["test"]["n"] == n_test
        assert info["test"]["accuracy"] >= 0.8, f"{name} should separate the generated classes"
    for name in ("logreg", "stacked"):
        cv = m["models"][name]["cv"]
        assert len(cv["folds"]) == 5 and 0.8 <= cv["mean"] <= 1.0
    report = vdir / "report"
    for f in ("metrics.json", "metrics.csv", "per_class.csv", "class_balance.csv", "class_balance.png", "model_comparison.png",
              "confusion_logreg.png", "roc_logreg.png", "accuracy_vs_ocr.png"):
        assert (report / f).stat().st_size > 0, f
    doc = json.loads((report / "metrics.json").read_text())
    assert doc["models"]["logreg"]["test"]["accuracy"] == m["models"]["logreg"]["test"]["accuracy"]


def test_rerun_adds_v0002_and_saved_model_predicts_like_in_memory(spark, trained_model_dir, sample_dataset, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)
    cfg = TrainConfig(data=str(sample_dataset), model_dir=str(root), pca_k=6, models=("logreg",), text="off", progress=False, plots=False)
    result = train(spark, cfg)
    assert result.version.startswith("v0002-")
    assert result.manifest["cache"]["features_reused"] == 72  # the embeddings of v0001's run were kept
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
    from batch_training.scoring import check_same_featurizer
    from memestream.errors import ModelError
    from memestream.featurizer import ImageFeaturizer

    trained = ImageFeaturizer(featureSet="gray32")
    check_same_featurizer(ImageFeaturizer(featureSet="gray32"), trained, "v1")
    with pytest.raises(ModelError, match=r"featureSet: saved 'colortex', trained with 'gray32'"):
        check_same_featurizer(ImageFeaturizer(featureSet="colortex"), trained, "v1")
    with pytest.raises(ModelError, match="maxBytes"):
        check_same_featurizer(ImageFeaturizer(featureSet="gray32", maxBytes=10), trained, "v1")


def test_training_features_equal_the_saved_featurizers(spark, trained_model_dir, sample_dataset):
    """What the model was trained on (training ingest, cached or not) is exactly what its
    saved featurizer stage computes in the stream, for the same files."""
    import numpy as np
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from batch_training import dataset as ds
    from batch_training.ingest import FeatureCache, ingest
    from memestream.classify import featurizer_of
    from memestream.features import get_feature_set

    loaded = load_model(trained_model_dir, which="logreg")
    feat = featurizer_of(loaded)
    fs = get_feature_set(feat.getFeatureSet())
    labelled = ds.list_labelled(spark, str(sample_dataset)).filter(F.col(ds.LABEL).isNotNull())
    fresh = ingest(spark, labelled, fs, max_bytes=feat.getMaxBytes(), max_pixels=feat.getMaxPixels(), asset=feat.getAssetPath(), cache=None, ocr=False)
    cached = ingest(spark, labelled, fs, max_bytes=feat.getMaxBytes(), max_pixels=feat.getMaxPixels(), asset=feat.getAssetPath(),
                    cache=FeatureCache(trained_model_dir, fs, None), ocr=False)
    assert cached.cached_features == 72 and fresh.cached_features == 0
    assert np.array_equal(fresh.features, cached.features)
    rows = read_files(spark.createDataFrame([(str(Path(sample_dataset) / r),) for r in fresh.rel_path], ["path"]))
    streamed = feat.transform(rows).select("path", vector_to_array("features").alias("f")).collect()
    by_path = {Path(r["path"]).relative_to(sample_dataset).as_posix(): np.array(r["f"], dtype=np.float32) for r in streamed}
    for i, rel in enumerate(fresh.rel_path):
        assert np.array_equal(by_path[rel], fresh.features[i]), rel


def test_cascade_and_text_off_agree_where_the_image_branch_is_confident(spark, trained_model_dir, sample_dataset):
    from memestream.scorer import Scorer

    loaded = load_model(trained_model_dir)
    assert loaded.name == "stacked" and loaded.text_branch is not None
    loaded.calibrators = {}  # compare raw image confidences with the cascade threshold (which was fitted on them)
    paths = spark.createDataFrame([(str(p),) for p in sorted(Path(sample_dataset).rglob("*.*"))], ["path"])
    off = {r["path"]: r for r in Scorer(loaded, text_mode="off").score(paths).collect()}
    cascade = {r["path"]: r for r in Scorer(loaded, text_mode="cascade").score(paths).collect()}
    always = {r["path"]: r for r in Scorer(loaded, text_mode="always").score(paths).collect()}
    confident = [p for p, r in off.items() if r["confidence"] >= loaded.text_branch.cascade]
    unsure = [p for p in off if p not in confident]
    for p in confident:
        assert cascade[p]["label"] == off[p]["label"], p
        assert cascade[p]["ocr_ran"] is False and cascade[p]["ocr_text"] is None
    for p in unsure:
        assert cascade[p]["ocr_ran"] is True
    assert all(r["ocr_ran"] is True for r in always.values())
    assert any(r["ocr_text"] for r in always.values())  # the generated images carry caption words
    assert all(off[p]["ocr_ran"] is None for p in off)


def test_a_model_with_a_corrupt_or_missing_onnx_fails_to_load_in_one_line(trained_model_dir, tmp_path):
    from memestream.errors import ModelError

    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)
    vdir = root / ModelStore(root).current()
    graphs = list((vdir / "models" / "logreg").rglob("*.onnx"))
    assert len(graphs) == 1
    graphs[0].unlink()
    graphs[0].write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError, match=r"\.onnx") as err:
        load_model(root, which="logreg")
    assert "\n" not in str(err.value)
    graphs[0].unlink()
    with pytest.raises(ModelError, match=f"missing its {DEFAULT_FEATURE_SET}.onnx"):
        load_model(root, which="logreg")


def test_stream_model_holder_switches_across_feature_sets(spark, trained_model_dir, sample_dataset, tmp_path):
    from streaming.models import ModelHolder

    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)
    holder = ModelHolder(root)
    assert holder.model.feature_set == DEFAULT_FEATURE_SET
    train(spark, TrainConfig(data=str(sample_dataset), model_dir=str(root), feature_set="gray32", pca_k=6, models=("logreg",),
                             text="off", progress=False, plots=False))
    new = holder.refresh()
    assert new.feature_set == "gray32" and holder.switches == 1
    from memestream.scorer import Scorer

    paths = spark.createDataFrame([(str(p),) for p in sorted(Path(sample_dataset).rglob("*.png"))[:6]], ["path"])
    rows = Scorer(new).score(paths).collect()
    assert len(rows) == 6 and all(r["label"] in new.classes and r["model_version"] == new.version for r in rows)


def test_a_foreign_photo_is_flagged_and_a_training_image_is_not(spark, trained_model_dir, sample_dataset, tmp_path):
    import cv2

    from memestream.scorer import Scorer

    photos = pytest.importorskip("skimage.data")  # a photo shipped with scikit-image (dev dependency)
    cat = tmp_path / "chelsea.png"
    cv2.imwrite(str(cat), cv2.cvtColor(photos.chelsea(), cv2.COLOR_RGB2BGR))
    own = sorted(Path(sample_dataset).rglob("*.png"))[0]
    loaded = load_model(trained_model_dir)
    assert loaded.novelty is not None
    paths = spark.createDataFrame([(str(cat),), (str(own),)], ["path"])
    flag = {Path(r["path"]).name: r for r in Scorer(loaded, ood_mode="flag").score(paths).collect()}
    assert flag["chelsea.png"]["ood"] is True and flag["chelsea.png"]["label"] is not None  # flag keeps the label
    assert flag[own.name]["ood"] is False and flag[own.name]["novelty"] < flag["chelsea.png"]["novelty"]
    assert flag["chelsea.png"]["nearest_class"] in loaded.classes
    reject = {Path(r["path"]).name: r for r in Scorer(loaded, ood_mode="reject").score(paths).collect()}
    assert reject["chelsea.png"]["label"] is None and reject["chelsea.png"]["error_code"] == "out_of_distribution"
    assert reject["chelsea.png"]["error"] is None  # not a bad input: no quarantine
    assert reject[own.name]["label"] == flag[own.name]["label"]
    off = Scorer(loaded, ood_mode="off").score(paths).collect()
    assert all(r["ood"] is None and r["novelty"] is None for r in off)


def test_a_page_of_text_is_kept_out_of_the_classes_on_either_engine(spark, trained_model_dir, sample_dataset, tmp_path):
    """Issue 25: a text-heavy foreign image (bench.foreign's page of text) is rejected by the
    novelty score's statistics view in the Python engine and in the JVM one (which decodes
    the bytes again for it); a training image keeps its label."""
    from bench.foreign import foreign_bytes
    from memestream.scorer import Scorer

    page = tmp_path / "page.img"
    page.write_bytes(foreign_bytes("text_pages", 0, 0))
    own = sorted(Path(sample_dataset).rglob("*.png"))[0]
    loaded = load_model(trained_model_dir)
    assert loaded.novelty.wants_stats
    paths = spark.createDataFrame([(str(page),), (str(own),)], ["path"])
    for engine in ("python", "spark"):
        rows = {Path(r["path"]).name: r for r in Scorer(loaded, engine=engine, ood_mode="reject").score(paths).collect()}
        assert rows["page.img"]["label"] is None and rows["page.img"]["error_code"] == "out_of_distribution", engine
        assert rows[own.name]["label"] in loaded.classes and rows[own.name]["ood"] is False, engine
        assert rows["page.img"]["novelty"] > loaded.novelty.threshold >= rows[own.name]["novelty"], engine


def test_evaluate_and_the_stream_report_the_same_probabilities(spark, trained_model_dir, sample_dataset):
    """meme-evaluate's metrics equal those computed from the stream's own rows."""
    import numpy as np

    from batch_training.evaluate import evaluate
    from batch_training.metrics import calibration_metrics
    from streaming.scoring import StreamScorer
    from streaming.sources import folder_frame

    got = evaluate(spark, str(trained_model_dir), str(sample_dataset))
    listing = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(sample_dataset)).select("path", "length", "modificationTime")
    rows = StreamScorer().score(listing.transform(folder_frame), load_model(trained_model_dir)).select("path", "probabilities").collect()
    loaded = load_model(trained_model_dir)
    y = [loaded.classes.index(Path(r["path"].replace("file:", "")).relative_to(sample_dataset).parts[0]) for r in rows]
    probs = np.array([[dict(r["probabilities"])[c] for c in loaded.classes] for r in rows])
    mine = calibration_metrics(y, probs)
    assert got["n"] == len(rows) == 72
    for key in ("ece", "ece_floor", "brier", "log_loss"):
        assert got[key] == pytest.approx(mine[key], abs=1e-9), key


def test_stacked_neighbour_vote_holds_the_training_rows_as_the_stream_projects_them(trained_model_dir, sample_dataset):
    """The vote's stored coordinates come from the driver's PCA; the stream computes a
    row's coordinates with the saved stages. A training image must find itself (cosine 1)."""
    import numpy as np

    from memestream.classify import featurizer_of
    from memestream.features import featurize_inputs
    from memestream.scorer import compile_model

    loaded = load_model(trained_model_dir)
    vdir = Path(trained_model_dir) / loaded.version
    m = json.loads((vdir / "manifest.json").read_text())
    nv = loaded.text_branch.neighbours
    assert nv is not None and m["models"]["stacked"]["neighbours"] == nv.neighbours
    # the final fit: every labelled row, the test split's too
    assert nv.vectors.shape == (sum(m["split"]["sizes"]["train"].values()) + sum(m["split"]["sizes"]["test"].values()), m["pca_k"])
    split = json.loads((vdir / "report" / "split.json").read_text())
    feat = featurizer_of(loaded)
    paths = [str(Path(sample_dataset) / r) for r in split["train"][:6]]
    out = featurize_inputs(paths, get_feature_set(feat.getFeatureSet()), from_path=True, max_bytes=feat.getMaxBytes(),
                           max_pixels=feat.getMaxPixels(), asset=feat.getAssetPath())
    reduced = compile_model(loaded).transform(out.matrix)
    unit = reduced / np.linalg.norm(reduced, axis=1, keepdims=True)
    best = (unit @ nv.vectors.T).max(axis=1)
    assert np.all(best > 0.9999), best
    classes = m["classes"]
    want = [classes.index(Path(r).parts[0]) for r in split["train"][:6]]
    nearest = (unit @ nv.vectors.T).argmax(axis=1)
    assert nv.labels[nearest].tolist() == want


def test_post_titles_in_the_data_folder_train_the_text_branch(spark, trained_model_dir, sample_dataset, tmp_path):
    """``--titles auto``: DATA/posts.csv (file, title) adds one text document per training meme;
    the file is not reported as a stray file, and the manifest says how many titles were used."""
    import csv

    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    with (data / "posts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "file", "title"])
        for i, f in enumerate(files):
            if i % 4:  # a few memes have no title
                w.writerow([f.split("/")[0], f, f"my {f.split('/')[0]} post &amp; more"])
    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)  # warm caches: embeddings and OCR text
    cfg = TrainConfig(data=str(data), model_dir=str(root), pca_k=8, models=("logreg",), progress=False, plots=False)
    result = train(spark, cfg)
    stacked = result.manifest["models"]["stacked"]
    split = json.loads((Path(result.version_dir) / "report" / "split.json").read_text())
    titled = {f for i, f in enumerate(files) if i % 4}
    assert stacked["title_documents"] == len([r for r in split["train"] if r in titled]) > 0
    assert result.manifest["data"]["fingerprint"]["count"] == 72  # posts.csv is not an input image
    # the same data with --titles none: no title documents
    off = train(spark, TrainConfig(data=str(data), model_dir=str(root), pca_k=8, models=("logreg",), titles="none", progress=False, plots=False))
    assert off.manifest["models"]["stacked"]["title_documents"] == 0


def test_final_fit_refits_the_shipped_model_on_every_row_after_the_test_is_scored(spark, trained_model_dir, sample_dataset, tmp_path):
    """Default ``--final-fit all`` (the session model) against ``--final-fit train`` on the same
    data and seed: the same test figures (scored before the refit), but the saved logreg/stacked
    models learned from all 72 images; the forest, a comparison model, keeps its training-part fit."""
    import numpy as np

    root = tmp_path / "models"
    shutil.copytree(trained_model_dir, root)
    kept = train(spark, TrainConfig(data=str(sample_dataset), model_dir=str(root), pca_k=8, models=("logreg", "random_forest"),
                                    num_trees=5, max_depth=5, final_fit="train", progress=False, plots=False))
    full = ModelStore(trained_model_dir).manifest(ModelStore(trained_model_dir).current())
    n_train = sum(full["split"]["sizes"]["train"].values())
    assert "final_fit" not in kept.manifest
    assert full["final_fit"]["rows"] == 72 and full["final_fit"]["models"] == ["logreg", "stacked"]
    assert full["models"]["logreg"]["fit_rows"] == full["models"]["stacked"]["fit_rows"] == 72
    assert full["models"]["random_forest"]["fit_rows"] == kept.manifest["models"]["logreg"]["fit_rows"] == n_train < 72
    for name in ("logreg", "stacked"):
        assert full["models"][name]["test"]["accuracy"] == pytest.approx(kept.manifest["models"][name]["test"]["accuracy"])
        assert full["models"][name]["test"]["log_loss"] == pytest.approx(kept.manifest["models"][name]["test"]["log_loss"], abs=1e-6)

    a, b = load_model(trained_model_dir, which="stacked"), load_model(root, which="stacked")
    assert len(a.novelty.labels) == 72 and len(b.novelty.labels) == n_train
    assert a.text_branch.neighbours.vectors.shape[0] == 72 and b.text_branch.neighbours.vectors.shape[0] == n_train
    mean_a, mean_b = (np.array(m.pipeline.stages[1].mean.toArray()) for m in (a, b))
    assert not np.allclose(mean_a, mean_b), "the saved scaler should have seen the test images too"
    # the stacker and the calibration maps come from the training part's out-of-fold predictions in both
    assert np.allclose(a.text_branch.stacker.coef, b.text_branch.stacker.coef)
    assert (Path(a.path) / "models/stacked/calibration.json").read_text() == (Path(b.path) / "models/stacked/calibration.json").read_text()


def test_an_image_that_kills_its_decoder_is_skipped_not_fatal(spark, trained_model_dir, sample_dataset, tmp_path, caplog):
    """Training's ingest meets a file that crashes the worker decoding it: it embeds the folder
    again one image per process, skips that file as decoder_crashed and keeps every other
    image, with the same features as a clean run."""
    import logging
    import shutil

    import numpy as np
    from pyspark.sql import functions as F

    from batch_training import dataset as ds
    from batch_training.ingest import ingest
    from memestream.classify import featurizer_of
    from memestream.features import get_feature_set
    from memestream.testing import POISON_ABORT

    folder = tmp_path / "data"
    shutil.copytree(sample_dataset, folder)
    label = sorted(p.name for p in folder.iterdir() if p.is_dir())[0]
    (folder / label / "zz_poison.jpg").write_bytes(POISON_ABORT)
    feat = featurizer_of(load_model(trained_model_dir, which="logreg"))
    fs = get_feature_set(feat.getFeatureSet())
    limits = dict(max_bytes=feat.getMaxBytes(), max_pixels=feat.getMaxPixels(), asset=feat.getAssetPath(), cache=None, ocr=False)
    with caplog.at_level(logging.WARNING, logger="batch_training.ingest"):
        got = ingest(spark, ds.list_labelled(spark, str(folder)).filter(F.col(ds.LABEL).isNotNull()), fs, **limits)
    assert "a worker died embedding the images (Python worker exited unexpectedly (crashed))" in caplog.text
    assert got.skipped["by_code"] == {"decoder_crashed": 1}
    assert got.skipped["examples"][0]["path"] == f"{label}/zz_poison.jpg" and "SIGABRT" in got.skipped["examples"][0]["error"]
    clean = ingest(spark, ds.list_labelled(spark, str(sample_dataset)).filter(F.col(ds.LABEL).isNotNull()), fs, **limits)
    assert got.rel_path == clean.rel_path and np.array_equal(got.features, clean.features)
