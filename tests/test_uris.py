"""Hadoop URIs for --model (and the helpers behind them), tested with file: URIs.

A model store at a URI is read through the session's Hadoop FileSystem: the PipelineModel by
Spark from the URI, the Python-side files from a local cache copy per version, and the
featurizer's ONNX graph shipped to the executors with ``SparkContext.addFile``.
"""
from __future__ import annotations

import shutil

import pytest

from memestream import uris


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMESTREAM_CACHE", str(tmp_path / "cache"))


def test_join_name_parent():
    assert uris.join("s3a://b/models", "v0001-x", "manifest.json") == "s3a://b/models/v0001-x/manifest.json"
    assert uris.join("hdfs://nn:8020/m/", "/CURRENT") == "hdfs://nn:8020/m/CURRENT"
    assert uris.name("s3a://b/models/v0001-x/") == "v0001-x"
    assert uris.parent("s3a://b/models/v0001-x") == "s3a://b/models"
    assert uris.scheme("abfss://c@a.dfs.core.windows.net/x") == "abfss"
    assert uris.scheme("/local/x") == "" and not uris.is_uri("/local/x") and uris.is_uri("gs://b/x")


def test_read_write_list_copy_through_hadoop(spark, tmp_path):
    root = tmp_path.as_uri()  # file:///...
    target = uris.join(root, "store", "CURRENT")
    uris.write_text(spark, target, "v0001-a\n")
    uris.write_text(spark, target, "v0002-b\n")  # replaces
    assert uris.read_text(spark, target) == "v0002-b\n"
    assert (tmp_path / "store" / "CURRENT").read_text() == "v0002-b\n"
    assert not list((tmp_path / "store").glob(".*")), "no checksum or temporary files left beside it"
    assert uris.list_dir(spark, uris.join(root, "store")) == [("CURRENT", False)]
    assert uris.list_dir(spark, uris.join(root, "missing")) == []
    assert uris.exists(spark, target) and uris.is_dir(spark, uris.join(root, "store"))
    with pytest.raises(FileNotFoundError):
        uris.read_text(spark, uris.join(root, "nope"))
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "f.txt").write_text("x")
    uris.copy_from_local(spark, tmp_path / "tree", uris.join(root, "up"))
    assert (tmp_path / "up" / "a" / "f.txt").read_text() == "x"
    got = uris.copy_to_local(spark, uris.join(root, "up"), tmp_path / "down")
    assert (got / "a" / "f.txt").read_text() == "x"


def test_model_store_at_a_file_uri_loads_and_ships_the_graph(spark, trained_model_dir, tmp_path, image_bytes):
    from memestream.modelstore import SPARKFILES, ModelStore, load_model, resolve_version_dir
    from memestream.scorer import Scorer
    from streaming.models import ModelHolder

    store_dir = tmp_path / "models"
    shutil.copytree(trained_model_dir, store_dir, ignore=shutil.ignore_patterns("_cache"))
    uri = store_dir.as_uri()
    store = ModelStore(uri)
    current = ModelStore(store_dir).current()
    assert store.current() == current and store.versions() == ModelStore(store_dir).versions()
    assert resolve_version_dir(uri) == f"{uri}/{current}"

    local = load_model(store_dir)
    remote = load_model(uri)
    assert remote.version == local.version and remote.classes == local.classes and remote.path == f"{uri}/{current}"
    asset = remote.pipeline.stages[0].getAssetPath()
    if local.pipeline.stages[0].getAssetPath():  # a feature set with an ONNX graph: shipped, not mounted
        assert asset.startswith(SPARKFILES) and current in asset
    frame = spark.createDataFrame([(f"img{i}", image_bytes(c, i)) for i, c in enumerate(["doom", "cats", "doom"])],
                                  "origin string, content binary")
    rows_local = Scorer(local).score(frame).select("origin", "label", "confidence").orderBy("origin").collect()
    rows_remote = Scorer(remote).score(frame).select("origin", "label", "confidence").orderBy("origin").collect()
    assert [(r.origin, r.label) for r in rows_remote] == [(r.origin, r.label) for r in rows_local]
    assert [round(r.confidence, 6) for r in rows_remote] == [round(r.confidence, 6) for r in rows_local]

    # a hot swap: a new version published at the URI and marked current is picked up, and shipped under its own name
    holder = ModelHolder(uri)
    assert holder.refresh() is holder.model
    new = "v9999-20990101T000000Z"
    shutil.copytree(store_dir / current, store_dir / new)
    manifest = (store_dir / new / "manifest.json").read_text().replace(current, new)
    (store_dir / new / "manifest.json").write_text(manifest)
    store.mark_current(new)
    switched = holder.refresh()
    assert switched.version == new and holder.switches == 1
    if local.pipeline.stages[0].getAssetPath():
        assert new in switched.pipeline.stages[0].getAssetPath()


def test_meme_train_publishes_to_a_file_uri(spark, sample_dataset, tmp_path):
    from batch_training.train import TrainConfig, train
    from memestream.modelstore import ModelStore, load_model

    uri = (tmp_path / "remote-models").as_uri()
    cfg = TrainConfig(data=str(sample_dataset), model_dir=uri, feature_set="gray32", pca_k=4, models=("logreg",),
                      text="off", progress=False, plots=False)
    result = train(spark, cfg)
    store = ModelStore(uri)
    assert store.current() == result.version and result.version_dir == f"{uri}/{result.version}"
    folder = tmp_path / "remote-models" / result.version
    assert (folder / "manifest.json").is_file() and (folder / "models" / "logreg").is_dir()
    assert not list((tmp_path / "remote-models").glob("_publishing-*")), "the staging folder was renamed into place"
    # written through the raw local FS: no checksum files beside what meme-train wrote itself
    assert not list((tmp_path / "remote-models").glob(".*.crc")) and not list(folder.glob(".*.crc"))
    staging = uris.cache_dir("train", uri)
    assert not (staging / result.version).exists(), "the local staging copy is removed once published"
    assert load_model(uri).version == result.version
    second = train(spark, cfg)
    assert int(second.version[1:5]) == int(result.version[1:5]) + 1 and store.current() == second.version


def test_stream_config_keeps_uris_as_strings(tmp_path):
    from pathlib import Path

    from streaming.config import StreamConfig

    cfg = StreamConfig(source="folder", output="s3a://bucket/out", checkpoint="hdfs://nn:8020/ck/folder",
                       model_dir="file:/srv/models", spool=tmp_path / "spool", archive=tmp_path / "archive")
    assert (cfg.output, cfg.checkpoint, cfg.model_dir) == ("s3a://bucket/out", "hdfs://nn:8020/ck/folder", "file:/srv/models")
    assert cfg.identity()["output"] == "s3a://bucket/out"
    local = StreamConfig(source="folder", output="out", checkpoint=Path("ck"), model_dir="models", spool=tmp_path / "spool",
                         archive=tmp_path / "archive")
    assert all(isinstance(v, Path) and v.is_absolute() for v in (local.output, local.checkpoint, local.model_dir))
