"""meme-train / meme-evaluate console behaviour: one-line errors, exit code 2, --json output."""
from __future__ import annotations

import json

import pytest

from batch_training import config, evaluate, train


def _one_error_line(capsys, prog: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: ")
    assert "Traceback" not in err[0] and "java" not in err[0].lower()
    return err[0]


def test_train_missing_folder(spark, tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "nope"), "--model-dir", str(tmp_path / "m"), "-q"]) == 2
    assert "does not exist" in _one_error_line(capsys, "meme-train")


def test_train_empty_folder(spark, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert train.main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m"), "-q"]) == 2
    assert "no files" in _one_error_line(capsys, "meme-train")


def test_train_one_class_only(spark, tmp_path, image_bytes, capsys):
    (tmp_path / "data" / "doom").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "data" / "doom" / f"{i}.jpg").write_bytes(image_bytes("doom", i))
    assert train.main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m"), "-q"]) == 2
    assert "only one class" in _one_error_line(capsys, "meme-train")
    assert not (tmp_path / "m").exists()


def test_train_class_without_decodable_images(spark, tmp_path, image_bytes, capsys):
    (tmp_path / "data" / "doom").mkdir(parents=True)
    (tmp_path / "data" / "notes").mkdir()
    for i in range(3):
        (tmp_path / "data" / "doom" / f"{i}.jpg").write_bytes(image_bytes("doom", i))
    (tmp_path / "data" / "notes" / "a.txt").write_text("not an image")
    assert train.main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m"), "-q", "--feature-set", "gray32"]) == 2
    line = _one_error_line(capsys, "meme-train")
    assert "notes" in line and "no decodable images" in line


def test_train_function_checks_empty_folder_in_spark(spark, tmp_path):
    """The Spark-side check (used for remote roots, which skip the local pre-check)."""
    from batch_training.config import TrainConfig
    from memestream.errors import DataError

    (tmp_path / "data" / "empty_class").mkdir(parents=True)
    with pytest.raises(DataError, match="no files in class sub-folders"):
        train.train(spark, TrainConfig(data=str(tmp_path / "data"), model_dir=str(tmp_path / "m"), progress=False))


def test_train_bad_models_flag(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert train.main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m"), "--models", "svm"]) == 2
    assert "--models" in _one_error_line(capsys, "meme-train")


@pytest.mark.parametrize("value", ["0.9,x", "0.9,1.5", "0"])
def test_train_bad_cascades_flag(tmp_path, capsys, value):
    (tmp_path / "data").mkdir()
    assert train.main(["--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "m"), "--cascades", value]) == 2
    assert "--cascades" in _one_error_line(capsys, "meme-train")


def test_train_cascades_flag_sets_the_candidates():
    args = config.build_parser().parse_args(["--data", "d", "--model-dir", "m", "--cascades", "0.9,0.8"])
    assert config.config_from_args(args).cascades == (0.9, 0.8)
    default = config.config_from_args(config.build_parser().parse_args(["--data", "d", "--model-dir", "m"]))
    assert default.cascades == config.DEFAULT_CASCADES


def test_train_config_makes_its_paths_absolute_when_built(tmp_path, monkeypatch):
    """Relative --data, --model-dir and --titles resolve against the directory the command
    ran in, once: a later change of working directory cannot move them. URIs stay as given."""
    monkeypatch.chdir(tmp_path)
    args = config.build_parser().parse_args(["--data", "memes", "--model-dir", "models", "--titles", "posts.csv"])
    cfg = config.config_from_args(args)
    assert (cfg.data, cfg.model_dir, cfg.titles) == (str(tmp_path / "memes"), str(tmp_path / "models"), str(tmp_path / "posts.csv"))
    assert config.TrainConfig(data="hdfs://nn/memes", model_dir="m", titles="auto").data == "hdfs://nn/memes"
    assert config.TrainConfig(data="d", model_dir="m", titles="none").titles == "none"


def test_evaluate_missing_model(spark, tmp_path, sample_dataset, capsys):
    assert evaluate.main(["--model", str(tmp_path / "none"), "--data", str(sample_dataset), "-q"]) == 2
    assert "no model" in _one_error_line(capsys, "meme-evaluate")


def test_evaluate_json_on_sample(spark, trained_model_dir, sample_dataset, capsys):
    assert evaluate.main(["--model", str(trained_model_dir), "--data", str(sample_dataset), "--json", "-q", "--which", "random_forest"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # exactly one JSON object
    assert doc["model"] == "random_forest" and doc["n"] == 72
    assert 0.8 <= doc["accuracy"] <= 1.0
    assert set(doc["per_class"]) == {"animal_crossing", "cats", "doom"}


def test_evaluate_unknown_class_is_an_error(spark, trained_model_dir, tmp_path, image_bytes, capsys):
    (tmp_path / "data" / "frogs").mkdir(parents=True)
    (tmp_path / "data" / "frogs" / "f.jpg").write_bytes(image_bytes("doom", 3))
    assert evaluate.main(["--model", str(trained_model_dir), "--data", str(tmp_path / "data"), "-q"]) == 2
    line = _one_error_line(capsys, "meme-evaluate")
    assert "frogs" in line and "does not know" in line
