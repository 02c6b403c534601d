"""meme-train --labels: people's labels of stream images join the folder (new images, overrides,
new classes once big enough), recorded in the manifest; a real training run on real files."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from batch_training.config import TrainConfig, build_parser, config_from_args
from batch_training.train import train
from memestream.errors import ConfigError, DataError
from memestream.modelstore import ModelStore
from streaming import schema
from streaming.labels import LabelRequest, LabelStore
from tests.streaming.conftest import write_delta_rows

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _noise(seed: int, tint: tuple[int, int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 80, (96, 128, 3)) + np.array(tint)).clip(0, 255).astype(np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _stream_saw(data_dir: Path, out: Path, images: dict[str, bytes]) -> dict[str, str]:
    """Archive the images as the folder stream does and write their predictions; name -> image id."""
    (data_dir / "archive").mkdir(parents=True, exist_ok=True)
    ids, rows = {}, []
    for i, (name, data) in enumerate(images.items()):
        (data_dir / "archive" / name).write_bytes(data)
        ids[name] = hashlib.sha256(data).hexdigest()
        rows.append({"image_id": ids[name], "source": "folder", "path": f"file:{data_dir}/spool/{name}", "label": "cats",
                     "event_time": T0, "processing_time": T0, "model_version": "v0001", "batch_id": i, "writer": "folder"})
    write_delta_rows(out, schema.PREDICTIONS, rows)
    return ids


def test_stream_labels_add_images_override_and_make_a_class(spark, sample_dataset, tmp_path):
    stream_dir, out = tmp_path / "stream", tmp_path / "stream" / "output"
    folder_doom = sorted((Path(sample_dataset) / "doom").rglob("*.*"))[0]
    folder_cats = sorted((Path(sample_dataset) / "cats").rglob("*.*"))[0]
    images = {f"frog_{i}.png": _noise(i, (0, 120, 0)) for i in range(12)}
    images.update({f"lizard_{i}.png": _noise(100 + i, (0, 0, 150)) for i in range(2)})
    images["repost_of_doom" + folder_doom.suffix] = folder_doom.read_bytes()  # the folder has it: labelled cats
    images["same_cat" + folder_cats.suffix] = folder_cats.read_bytes()  # the folder has it, same label
    ids = _stream_saw(stream_dir, out, images)
    requests = [LabelRequest(ids[n], "frogs") for n in images if n.startswith("frog_")]
    requests += [LabelRequest(ids[n], "lizards") for n in images if n.startswith("lizard_")]
    requests += [LabelRequest(ids["repost_of_doom" + folder_doom.suffix], "cats"),
                 LabelRequest(ids["same_cat" + folder_cats.suffix], "cats")]
    LabelStore(out, stream_dir).submit(requests)

    models = tmp_path / "models"
    base = dict(data=str(sample_dataset), model_dir=str(models), pca_k=6, models=("logreg",), text="off", progress=False,
                plots=False)
    first = train(spark, TrainConfig(**base))
    assert first.manifest["promotion"] == {"promoted": True, "reason": "no current version"}
    result = train(spark, TrainConfig(**base, labels=str(out), min_class_images=10))
    # the champion (folder only) cannot say "frogs": the challenger is better on the same folds
    promotion = result.manifest["promotion"]
    assert promotion["promoted"] and promotion["current"] == first.version
    assert promotion["challenger_cv"] > promotion["champion_cv"] and promotion["mean_diff"] > 0
    assert ModelStore(models).current() == result.version
    merged = result.manifest["stream_labels"]
    assert merged["rows"] == 16 and merged["new_images"] == 12 and merged["duplicates_of_folder"] == 2
    assert merged["overrides"] == 1 and merged["override_examples"][0]["folder"] == "doom"
    assert merged["new_classes"] == {"frogs": 12} and merged["waiting_classes"] == {"lizards": 2}
    assert result.classes == ["animal_crossing", "cats", "doom", "frogs"]
    split = json.loads((Path(result.version_dir) / "report" / "split.json").read_text())
    streamed = [p for part in split.values() for p in part if p.startswith("_stream_labels/")]
    assert len(streamed) == 12
    report = json.loads((Path(result.version_dir) / "report" / "metrics.json").read_text())
    assert report["stream_labels"]["waiting_classes"] == {"lizards": 2}
    # the new class is learnt: the test split's frogs are recognised
    test_frogs = report["models"]["logreg"]["test"]["per_class"]["frogs"]
    assert test_frogs["support"] >= 1 and test_frogs["recall"] == 1.0


def test_labels_flag_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--data", "d", "--model-dir", "m", "--labels", "out", "--min-class-images", "3"])
    cfg = config_from_args(args)
    assert cfg.labels == str(tmp_path / "out") and cfg.min_class_images == 3
    with pytest.raises(ConfigError, match="local --output"):
        TrainConfig(data="d", model_dir="m", labels="s3a://bucket/out")
    from batch_training.stream_labels import read_stream_labels

    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="no labels table"):
        read_stream_labels(str(tmp_path / "out"))


def test_a_worse_version_is_saved_but_not_promoted(spark, sample_dataset, tmp_path):
    models = tmp_path / "models"
    base = dict(data=str(sample_dataset), model_dir=str(models), models=("logreg",), text="off", progress=False, plots=False)
    good = train(spark, TrainConfig(**base, pca_k=8))
    same = train(spark, TrainConfig(**base, pca_k=8))
    assert same.manifest["promotion"]["promoted"] and same.manifest["promotion"]["mean_diff"] == 0.0
    # one principal component and heavy shrinkage: much worse on the same folds
    bad_settings = dict(base, pca_k=1, reg_params=(1000.0,))
    worse = train(spark, TrainConfig(**bad_settings))
    promotion = worse.manifest["promotion"]
    assert not promotion["promoted"] and promotion["current"] == same.version
    assert promotion["challenger_cv"] < promotion["champion_cv"] and "stays current" in promotion["reason"]
    assert ModelStore(models).current() == same.version and worse.version in ModelStore(models).versions()
    report = json.loads((Path(worse.version_dir) / "report" / "metrics.json").read_text())
    assert report["promotion"]["promoted"] is False
    forced = train(spark, TrainConfig(**bad_settings, promote="always"))
    assert forced.manifest["promotion"] == {"promoted": True, "reason": "--promote always"}
    assert ModelStore(models).current() == forced.version
    assert good.version != same.version
