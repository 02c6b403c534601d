"""Versioned model directory: every training run adds a version, one is marked current.

Layout::

    models/
      CURRENT                      # name of the current version (replaced atomically)
      v0003-20261127T130501Z/
        manifest.json              # classes, feature set, metrics, fingerprint, versions
        models/logreg/             # one saved PipelineModel per classifier (+ novelty, calibration)
        models/stacked/text_branch/  # the OCR text branch of the stacked model
        models/random_forest/
        report/                    # metrics JSON/CSV and plots of that run

A running stream polls ``CURRENT`` between batches and switches when it changes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memestream.calibration import load_calibrators, save_calibrators
from memestream.errors import ModelError
from memestream.novelty import NoveltyModel
from memestream.stacking import TextBranch

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
MANIFEST = "manifest.json"
MODELS_DIR = "models"
#: A stacked model's text branch, inside its model folder.
TEXT_BRANCH_DIR = "text_branch"
_VERSION_RE = re.compile(r"^v(\d{4,})-")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelStore:
    """The versioned model directory made by ``meme-train``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name) and (p / MANIFEST).exists()]
        return sorted(found, key=lambda name: int(_VERSION_RE.match(name).group(1)))  # type: ignore[union-attr]

    def new_version_name(self, now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        numbers = [int(_VERSION_RE.match(p.name).group(1)) for p in self.root.glob("v*") if _VERSION_RE.match(p.name)]  # type: ignore[union-attr]
        return f"v{(max(numbers) + 1) if numbers else 1:04d}-{now.strftime('%Y%m%dT%H%M%SZ')}"

    def current(self) -> str | None:
        try:
            name = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def mark_current(self, version: str) -> None:
        if not (self.root / version / MANIFEST).exists():
            raise ModelError(f"cannot mark {version!r} current: {self.root / version / MANIFEST} does not exist")
        atomic_write_text(self.root / CURRENT_FILE, version + "\n")

    def manifest(self, version: str) -> dict[str, Any]:
        return read_manifest(self.root / version)


def read_manifest(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(version_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model version folder {version_dir} has no {MANIFEST}; was it written by meme-train?") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc})") from None


def resolve_version_dir(model: str | os.PathLike[str], version: str | None = None) -> Path:
    """Map a ``--model`` argument (store root or one version folder) to a version folder."""
    path = Path(model)
    if not path.exists():
        raise ModelError(f"no model at {path}: the folder does not exist (train one with: meme-train --model-dir {path})")
    if (path / MANIFEST).exists():
        if version and path.name != version:
            raise ModelError(f"{path} is version {path.name}, but --model-version asks for {version}")
        return path
    store = ModelStore(path)
    if version:
        if not (path / version / MANIFEST).exists():
            raise ModelError(f"model version {version!r} not found in {path}; available: {', '.join(store.versions()) or 'none'}")
        return path / version
    current = store.current()
    if current is None:
        raise ModelError(
            f"no model at {path}: expected a model directory made by meme-train (with a {CURRENT_FILE} file) "
            f"or one version folder (with {MANIFEST})"
        )
    if not (path / current / MANIFEST).exists():
        raise ModelError(f"{path / CURRENT_FILE} names version {current!r}, but {path / current / MANIFEST} is missing")
    return path / current


@dataclass
class LoadedModel:
    """A fitted PipelineModel with the metadata needed to label its output."""

    pipeline: Any
    version: str
    name: str
    classes: list[str]
    feature_set: str
    path: Path
    manifest: dict[str, Any]
    #: OCR text branch stacked with the image branch (memestream.stacking.TextBranch), if trained.
    text_branch: Any = None
    #: Probability calibration per output ("image", "stacked"): memestream.calibration.Calibrator.
    calibrators: dict[str, Any] = field(default_factory=dict)
    #: Novelty ("none of these") model: memestream.novelty.NoveltyModel, if trained.
    novelty: Any = None


def _check_assets(pipeline: Any, where: Path) -> None:
    """Open the featurizer's asset (its ONNX graph) now, on the driver: a missing or corrupt
    file must fail the load with one line (a running stream then keeps its old model),
    not fail a batch later inside a worker."""
    stage = pipeline.stages[0] if pipeline.stages else None
    asset = stage.getAssetPath() if hasattr(stage, "getAssetPath") else None
    if asset:
        # lazy: ONNX Runtime is loaded only for a model with a graph, and only when it loads
        from memestream.effnet.runtime import get_embedder

        get_embedder(asset)


def load_model(model: str | os.PathLike[str], version: str | None = None, which: str | None = None) -> LoadedModel:
    """Load the chosen (or named) PipelineModel of a version. Needs an active SparkSession."""
    return ModelVersion(resolve_version_dir(model, version)).load(which)


class ModelVersion:
    """One version folder: the bundle training saves and every loader reads.

    ``models/<name>/`` holds a saved PipelineModel plus, when trained, the novelty reference
    (``novelty.npz``), the calibration maps (``calibration.json``) and the text branch
    (``text_branch/``); ``manifest.json`` names the models and the best one, and the store's
    ``CURRENT`` file names the version streams follow.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, store: str | os.PathLike[str], name: str | None = None) -> "ModelVersion":
        """A new, empty version folder in ``store`` (named by :meth:`ModelStore.new_version_name`)."""
        path = Path(store) / (name or ModelStore(store).new_version_name())
        (path / MODELS_DIR).mkdir(parents=True, exist_ok=False)
        return cls(path)

    @property
    def name(self) -> str:
        return self.path.name

    def model_path(self, name: str) -> Path:
        return self.path / MODELS_DIR / name

    def save_model(
        self,
        name: str,
        pipeline: Any = None,
        *,
        copy_of: str | None = None,
        novelty: Any = None,
        calibration: tuple[dict[str, Any], dict[str, Any]] | None = None,
        text_branch: Any = None,
    ) -> str:
        """(Re)write ``models/<name>``: ``pipeline`` (a fitted PipelineModel), or a copy of the
        model ``copy_of`` already saved here, then its novelty reference, ``calibration``
        (``(calibrators, cv scores)``: one map per output, :func:`save_calibrators`) and text
        branch. Returns the folder relative to the version, as the manifest names it."""
        folder = self.model_path(name)
        if copy_of is not None:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(self.model_path(copy_of), folder)
        else:
            pipeline.write().overwrite().save(str(folder))
        if novelty is not None:
            novelty.save(folder)
        if text_branch is not None:
            text_branch.save(folder / TEXT_BRANCH_DIR)
        if calibration is not None:
            save_calibrators(folder, *calibration)
        return f"{MODELS_DIR}/{name}"

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest.json`` atomically (it is what makes the folder a loadable version)."""
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def mark_current(self) -> None:
        """Make this the version ``CURRENT`` names (streams switch to it at their next batch)."""
        ModelStore(self.path.parent).mark_current(self.name)

    def load(self, which: str | None = None) -> LoadedModel:
        """The named model (default: the manifest's best) with its text branch, calibration
        and novelty reference. Needs an active SparkSession."""
        # lazy: console scripts check --model (resolve_version_dir) before Spark ML is imported
        from pyspark.ml import PipelineModel

        vdir = self.path
        manifest = read_manifest(vdir)
        name = which or manifest.get("best")
        models = manifest.get("models", {})
        if name not in models:
            raise ModelError(f"model {name!r} not in {vdir / MANIFEST}; available: {', '.join(models) or 'none'}")
        mpath = vdir / models[name]["path"]
        try:
            pipeline = PipelineModel.load(str(mpath))
        except Exception as exc:  # noqa: BLE001 - Py4J errors carry a Java trace; keep one line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load model {name!r} from {mpath}: {first}") from None
        _check_assets(pipeline, mpath)
        branch_rel = models[name].get("text_branch")
        return LoadedModel(
            calibrators=load_calibrators(mpath),
            novelty=NoveltyModel.load(mpath),
            text_branch=TextBranch.load(vdir / branch_rel) if branch_rel else None,
            pipeline=pipeline,
            version=manifest.get("version", vdir.name),
            name=name,
            classes=list(manifest["classes"]),
            feature_set=manifest.get("feature_set", "?"),
            path=vdir,
            manifest=manifest,
        )
