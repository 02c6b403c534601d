"""The model bundle: a version saved by ModelVersion has meme-train's layout and loads back whole."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memestream.errors import ModelError
from memestream.modelstore import MANIFEST, ModelStore, ModelVersion, load_model


def _files(folder: Path) -> set[str]:
    """The files of a saved model, Spark's per-save part-file ids left out."""
    return {re.sub(r"part-(\d+)-[0-9a-f-]+", r"part-\1", p.relative_to(folder).as_posix())
            for p in folder.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))}


def test_a_resaved_model_has_the_trained_layout_and_loads_back_whole(spark, trained_model_dir, tmp_path):
    trained = load_model(trained_model_dir, which="stacked")
    store = tmp_path / "models"
    bundle = ModelVersion.create(store)
    assert bundle.name.startswith("v0001-") and ModelStore(store).current() is None
    bundle.save_model("logreg", trained.pipeline, novelty=trained.novelty, calibration=({"image": trained.calibrators["image"]}, {}))
    path = bundle.save_model("stacked", copy_of="logreg", text_branch=trained.text_branch, calibration=(trained.calibrators, {}))
    manifest = {"version": bundle.name, "classes": trained.classes, "best": "stacked", "feature_set": trained.feature_set,
                "models": {"logreg": {"path": "models/logreg"}, "stacked": {"path": path, "text_branch": f"{path}/text_branch"}}}
    with pytest.raises(ModelError, match="does not exist"):
        bundle.mark_current()  # no manifest yet: not a loadable version
    bundle.write_manifest(manifest)
    bundle.mark_current()

    assert ModelStore(store).current() == bundle.name and json.loads((bundle.path / MANIFEST).read_text()) == manifest
    original = Path(trained_model_dir) / trained.version / "models" / "stacked"
    assert _files(bundle.model_path("stacked")) == _files(original)  # the format meme-train writes
    again = load_model(store)
    assert (again.name, again.version, again.classes) == ("stacked", bundle.name, trained.classes)
    assert set(again.calibrators) == set(trained.calibrators) and again.text_branch.cascade == trained.text_branch.cascade
    assert again.novelty.threshold == trained.novelty.threshold and len(again.novelty.labels) == len(trained.novelty.labels)
    assert load_model(store, which="logreg").text_branch is None
