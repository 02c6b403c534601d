"""Shared fixtures: one local SparkSession for the whole run, image factories, a tiny model.

Kafka broker fixtures live in ``tests/kafka_fixtures.py`` (loaded as a plugin below).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# meme-stream processes started by tests run without the Spark UI (tests that want it unset this)
os.environ.setdefault("MEMESTREAM_NO_UI", "1")
# the poison-pill tests' decoder hook (memestream.testing.poison_hook): set before Spark starts, so its Python
# workers and every process the tests start inherit it; it acts on marker payloads only
os.environ.setdefault("MEMESTREAM_TEST_DECODER_HOOK", "memestream.testing:poison_hook")

pytest_plugins = ["tests.kafka_fixtures"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "doom-crossing"


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for every test: UI off, 2 shuffle partitions. Never stopped in a test."""
    from memestream.spark import build_spark

    session = build_spark(
        "memestream-tests",
        master="local[2]",
        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.driver.memory": "2g"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def image_bytes():
    """Factory: ``image_bytes(label="doom", seed=0, fmt="jpeg") -> bytes`` of a generated image."""
    from memestream.sample import sample_image_bytes

    return sample_image_bytes


@pytest.fixture(scope="session")
def bad_payloads(image_bytes):
    """One payload per kind of bad input, keyed by the error code it must produce."""
    import struct

    import numpy as np

    jpeg = image_bytes("doom", 1, "jpeg")
    png = image_bytes("cats", 2, "png")
    huge = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 30000, 30000) + b"\x08\x02\x00\x00\x00" + b"\x00" * 4 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return {
        "empty": b"",
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "garbage": bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8)),
        "text": b"this is not an image, it is a caption\n" * 10,
        "huge_dimensions": huge,
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "corrupt_jpeg": jpeg[:200] + bytes(len(jpeg) - 400) + jpeg[-200:],
    }


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """A generated labelled folder (3 classes x 24 images, nested sub-folders)."""
    from memestream.sample import write_dataset

    root = tmp_path_factory.mktemp("sample-data")
    write_dataset(root, per_class=24, seed=11)
    return root


@pytest.fixture(scope="session")
def shared_dataset():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data set not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained_model_dir(spark, sample_dataset, tmp_path_factory):
    """Model store root with one version (logreg + a small random forest) trained on ``sample_dataset``.

    Trained once per session through ``batch_training.train.train``; treat it as read-only
    (copy it with shutil.copytree before adding versions).
    """
    from batch_training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(
        data=str(sample_dataset),
        model_dir=str(root),
        pca_k=8,
        models=("logreg", "random_forest"),
        num_trees=5,
        max_depth=5,
        progress=False,
    )
    train(spark, cfg)
    return root


@pytest.fixture()
def offline_mvn(tmp_path):
    """Factory: ``offline_mvn(artifact) -> folder`` holding an ``mvn`` that fails the way Maven
    does without network for ``artifact``; put the folder first on PATH."""

    def make(artifact: str) -> Path:
        bindir = tmp_path / "offline-bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "mvn").write_text(f"#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not transfer artifact "
                                    f"{artifact} from/to central: Unknown host repo.maven.apache.org'\nexit 1\n")
        (bindir / "mvn").chmod(0o755)
        return bindir

    return make
