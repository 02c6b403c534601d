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

from memestream import uris
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
    """The versioned model directory made by ``meme-train``: a local folder (``root`` a
    :class:`~pathlib.Path`) or a Hadoop URI (``root`` a ``str``, read and written through the
    running SparkSession's Hadoop FileSystem, :mod:`memestream.uris`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.is_uri = uris.is_uri(root)
        self.root: Any = os.fspath(root) if self.is_uri else Path(root)

    def _names(self) -> list[tuple[str, bool]]:
        if self.is_uri:
            return uris.list_dir(None, self.root)
        if not self.root.is_dir():
            return []
        return [(p.name, p.is_dir()) for p in self.root.iterdir()]

    def has(self, version: str) -> bool:
        """Whether ``version`` is a loadable version folder (it has its manifest)."""
        if self.is_uri:
            return uris.exists(None, uris.join(self.root, version, MANIFEST))
        return (self.root / version / MANIFEST).exists()

    def version_dir(self, version: str) -> Any:
        return uris.join(self.root, version) if self.is_uri else self.root / version

    def versions(self) -> list[str]:
        found = [n for n, is_dir in self._names() if is_dir and _VERSION_RE.match(n) and self.has(n)]
        return sorted(found, key=lambda name: int(_VERSION_RE.match(name).group(1)))  # type: ignore[union-attr]

    def new_version_name(self, now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        numbers = [int(_VERSION_RE.match(n).group(1)) for n, _ in self._names() if _VERSION_RE.match(n)]  # type: ignore[union-attr]
        return f"v{(max(numbers) + 1) if numbers else 1:04d}-{now.strftime('%Y%m%dT%H%M%SZ')}"

    def current(self) -> str | None:
        try:
            if self.is_uri:
                name = uris.read_text(None, uris.join(self.root, CURRENT_FILE)).strip()
            else:
                name = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def mark_current(self, version: str) -> None:
        if not self.has(version):
            raise ModelError(f"cannot mark {version!r} current: {uris.join(self.root, version, MANIFEST)} does not exist")
        if self.is_uri:
            uris.write_text(None, uris.join(self.root, CURRENT_FILE), version + "\n")
        else:
            atomic_write_text(self.root / CURRENT_FILE, version + "\n")

    def manifest(self, version: str) -> dict[str, Any]:
        return read_manifest(self.version_dir(version))

    def publish(self, local_version: str | os.PathLike[str], mark_current: bool = True) -> str:
        """Copy a version folder made locally into this (URI) store: the version folder first
        (its manifest makes it loadable), ``CURRENT`` last. Returns the version's URI."""
        local_version = Path(local_version)
        target = uris.join(self.root, local_version.name)
        uris.mkdirs(None, self.root)
        staging = uris.join(self.root, f"_publishing-{local_version.name}")
        uris.delete(None, staging)
        uris.copy_from_local(None, local_version, staging)
        fs, _ = uris._fs(None, staging)  # noqa: SLF001 - one rename on the same FileSystem
        jvm = uris.active_spark()._jvm
        if not fs.rename(jvm.org.apache.hadoop.fs.Path(staging), jvm.org.apache.hadoop.fs.Path(target)):
            raise ModelError(f"cannot publish {local_version.name} into {self.root}: rename of {staging} failed")
        if mark_current:
            self.mark_current(local_version.name)
        return target


def read_manifest(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    if uris.is_uri(version_dir):
        location = uris.join(version_dir, MANIFEST)
        try:
            return json.loads(uris.read_text(None, location))
        except FileNotFoundError:
            raise ModelError(f"model version folder {version_dir} has no {MANIFEST}; was it written by meme-train?") from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"{location} is not valid JSON ({exc})") from None
    path = Path(version_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model version folder {version_dir} has no {MANIFEST}; was it written by meme-train?") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc})") from None


def resolve_version_dir(model: str | os.PathLike[str], version: str | None = None) -> Any:
    """Map a ``--model`` argument (store root or one version folder) to a version folder: a
    ``Path`` for a local folder, a URI ``str`` for a Hadoop URI (needs a running SparkSession)."""
    if uris.is_uri(model):
        return _resolve_uri(os.fspath(model), version)
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


def _resolve_uri(model: str, version: str | None) -> str:
    if uris.exists(None, uris.join(model, MANIFEST)):
        if version and uris.name(model) != version:
            raise ModelError(f"{model} is version {uris.name(model)}, but --model-version asks for {version}")
        return model
    if not uris.exists(None, model):
        raise ModelError(f"no model at {model}: it does not exist (train one with: meme-train --model-dir {model})")
    store = ModelStore(model)
    if version:
        if not store.has(version):
            raise ModelError(f"model version {version!r} not found in {model}; available: {', '.join(store.versions()) or 'none'}")
        return store.version_dir(version)
    current = store.current()
    if current is None:
        raise ModelError(
            f"no model at {model}: expected a model directory made by meme-train (with a {CURRENT_FILE} file) "
            f"or one version folder (with {MANIFEST})"
        )
    if not store.has(current):
        raise ModelError(f"{uris.join(model, CURRENT_FILE)} names version {current!r}, but its {MANIFEST} is missing")
    return store.version_dir(current)


SPARKFILES = uris.SPARKFILES
local_asset = uris.local_asset
_shipped: set[str] = set()


def ship_file(spark: Any, local: Path, key: str) -> str:
    """Hand a local file to every executor (``SparkContext.addFile``) under a name unique to
    ``key`` (the version and model), so a new version is a new file and a hot-swap ships it
    too; returns its ``sparkfiles:`` reference."""
    shipped = f"{key}--{local.name}"
    shipped = "".join(c if c.isalnum() or c in "-_." else "_" for c in shipped)
    if shipped not in _shipped:
        folder = uris.cache_root() / "shipped"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / shipped
        if not target.exists():
            tmp = folder / f".{shipped}.{os.getpid()}"
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        spark.sparkContext.addFile(str(target))
        _shipped.add(shipped)
    return SPARKFILES + shipped


def cached_version(spark: Any, version_uri: str) -> Path:
    """A local copy of a version folder at a URI (its report left out), made once per version:
    versions never change once published, so the copy is reused by every later load."""
    target = uris.cache_dir("models", uris.parent(version_uri)) / uris.name(version_uri)
    if (target / MANIFEST).is_file():
        return target
    staging = target.parent / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for entry, _ in uris.list_dir(spark, version_uri):
            if entry in ("report",) or entry.startswith((".", "_")):
                continue
            uris.copy_to_local(spark, uris.join(version_uri, entry), staging / entry)
        if not (staging / MANIFEST).is_file():
            raise ModelError(f"model version folder {version_uri} has no {MANIFEST}; was it written by meme-train?")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("model %s cached in %s", version_uri, target)
    return target


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

        get_embedder(local_asset(asset))


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
        self.is_uri = uris.is_uri(path)
        self.path: Any = os.fspath(path) if self.is_uri else Path(path)

    @classmethod
    def create(cls, store: str | os.PathLike[str], name: str | None = None) -> "ModelVersion":
        """A new, empty version folder in ``store`` (named by :meth:`ModelStore.new_version_name`)."""
        path = Path(store) / (name or ModelStore(store).new_version_name())
        (path / MODELS_DIR).mkdir(parents=True, exist_ok=False)
        return cls(path)

    @property
    def name(self) -> str:
        return uris.name(self.path) if self.is_uri else self.path.name

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
        if self.is_uri:
            return self._load_uri(which)
        vdir = self.path
        manifest = read_manifest(vdir)
        name, rel = _chosen(manifest, which, vdir / MANIFEST)
        pipeline = _load_pipeline(name, vdir / rel)
        _check_assets(pipeline, vdir / rel)
        return _assemble(pipeline, manifest, name, rel, files=vdir, path=vdir, default_version=vdir.name)

    def _load_uri(self, which: str | None) -> LoadedModel:
        """A version at a Hadoop URI. The PipelineModel is read by Spark from the URI (its
        stages' data through Hadoop, as any Spark read); the files Python reads (manifest,
        calibration, novelty reference, text branch, the featurizer's ONNX graph) come from a
        local copy of the version (:func:`cached_version`), and the graph goes to the
        executors by ``SparkContext.addFile`` under a name unique to the version: no executor
        needs the model folder mounted."""
        spark = uris.active_spark()
        vdir = self.path
        local = cached_version(spark, vdir)
        manifest = read_manifest(local)
        name, rel = _chosen(manifest, which, uris.join(vdir, MANIFEST))
        mpath = uris.join(vdir, rel)
        pipeline = _load_pipeline(name, mpath)
        stage = pipeline.stages[0] if pipeline.stages else None
        if hasattr(stage, "getAssetPath") and stage.getAssetPath():
            found = sorted((local / rel).glob(f"stages/0_*/data/{Path(stage.getAssetPath()).name}"))
            if not found:
                raise ModelError(f"the featurizer of {mpath} is missing its asset {Path(stage.getAssetPath()).name}")
            stage._set(assetPath=ship_file(spark, found[0], f"{self.name}--{name}"))
        _check_assets(pipeline, local / rel)
        return _assemble(pipeline, manifest, name, rel, files=local, path=vdir, default_version=self.name)


def _chosen(manifest: dict[str, Any], which: str | None, where: object) -> tuple[str, str]:
    """The model to load (``which``, default the manifest's best) and its folder, relative to the version."""
    name = which or manifest.get("best")
    models = manifest.get("models", {})
    if name not in models:
        raise ModelError(f"model {name!r} not in {where}; available: {', '.join(models) or 'none'}")
    return name, models[name]["path"]


def _load_pipeline(name: str, mpath: str | Path):  # noqa: ANN202 - a pyspark PipelineModel
    """``PipelineModel.load`` with a one-line error (Py4J errors carry a Java trace)."""
    # lazy: console scripts check --model (resolve_version_dir) before Spark ML is imported
    from pyspark.ml import PipelineModel

    try:
        return PipelineModel.load(str(mpath))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {name!r} from {mpath}: {first}") from None


def _assemble(pipeline, manifest: dict[str, Any], name: str, rel: str, files: Path, path,  # noqa: ANN001
              default_version: str) -> LoadedModel:
    """A loaded model from its pipeline and the Python-side files of the version in ``files``
    (the version folder, or a URI version's local copy)."""
    branch_rel = manifest["models"][name].get("text_branch")
    return LoadedModel(
        calibrators=load_calibrators(files / rel),
        novelty=NoveltyModel.load(files / rel),
        text_branch=TextBranch.load(files / branch_rel) if branch_rel else None,
        pipeline=pipeline,
        version=manifest.get("version", default_version),
        name=name,
        classes=list(manifest["classes"]),
        feature_set=manifest.get("feature_set", "?"),
        path=path,
        manifest=manifest,
    )
