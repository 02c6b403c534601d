"""The featurizer as a Spark ML Transformer, saved as the first stage of every model.

Loading a model therefore brings the exact feature computation it was trained with.
The work runs in an Arrow UDF over :func:`memestream.features.featurize_inputs`; the UDF
is marked non-deterministic so Spark's optimizer cannot duplicate it into every column
that reads its struct result (which would decode each image twice).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import array_to_vector
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable, DefaultParamsWriter
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from memestream.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from memestream.errors import ConfigError, DataError, ModelError
from memestream.features import DEFAULT_FEATURE_SET, FEATURE_SETS, featurize_inputs, get_feature_set
from memestream.abspath import is_uri
from memestream.inputs import local_path

_UDF_SCHEMA = "features array<float>, error string"


def _featurize_arrow(feature_set: str, read_max: int, max_bytes: int, max_pixels: int, asset: str | None, from_path: bool):
    """Build the Arrow UDF body (module-level so cloudpickle ships a reference, not code):
    the one input path (:func:`featurize_inputs`) over a column of bytes or of file paths."""

    def run(values: pa.Array) -> pa.Array:
        fs = get_feature_set(feature_set)
        out = featurize_inputs(
            values.to_pylist(), fs, from_path=from_path, read_max=read_max, max_bytes=max_bytes, max_pixels=max_pixels, asset=asset
        )
        n = len(values)
        offsets = pa.array(np.arange(0, (n + 1) * fs.dim, fs.dim, dtype=np.int32))
        features = pa.ListArray.from_arrays(offsets, pa.array(out.matrix.reshape(-1), type=pa.float32()))
        return pa.StructArray.from_arrays([features, pa.array(out.errors, type=pa.string())], names=["features", "error"])

    return run


class _FeaturizerWriter(DefaultParamsWriter):
    """Params as JSON (Spark's default) plus the feature set's asset (an ONNX graph) in
    ``data/``: a saved model carries everything a stream or an executor needs."""

    def saveImpl(self, path: str) -> None:
        super().saveImpl(path)
        inst: ImageFeaturizer = self.instance  # type: ignore[assignment]
        fs = get_feature_set(inst.getFeatureSet())
        if fs.asset is None:
            return
        from memestream.features import default_asset

        src = Path(inst.getAssetPath() or default_asset(fs.name))
        if not src.is_file():
            raise ModelError(f"cannot save the {fs.name} featurizer: its asset {src} does not exist")
        dest = Path(local_path(path)) / "data" / fs.asset
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()
        try:
            os.link(src, dest)  # one copy on disk for all the models of a version
        except OSError:
            shutil.copyfile(src, dest)


class _FeaturizerReader(DefaultParamsReader):
    def load(self, path: str) -> "ImageFeaturizer":
        inst = super().load(path)
        fs = get_feature_set(inst.getFeatureSet())
        if fs.asset is not None and is_uri(path) and not path.startswith("file:"):
            # hdfs://, s3a://...: the loader (memestream.modelstore) points this at a local copy
            inst._set(assetPath=f"{path.rstrip('/')}/data/{fs.asset}")
        elif fs.asset is not None:
            asset = Path(local_path(path)) / "data" / fs.asset
            if not asset.is_file() or asset.stat().st_size == 0:
                raise ModelError(f"the {fs.name} featurizer saved in {local_path(path)} is missing its {fs.asset} (expected {asset})")
            inst._set(assetPath=str(asset))
        return inst


class ImageFeaturizer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Image bytes (binary column) -> feature vector column plus an error column.

    Rows that cannot be decoded get a zero vector and a non-null ``errorCol`` of the form
    ``"<code>: <reason>"``; downstream stages never see a null vector.
    """

    featureSet = Param(
        Params._dummy(), "featureSet", f"feature set name: one of {sorted(FEATURE_SETS)}", TypeConverters.toString
    )
    errorCol = Param(Params._dummy(), "errorCol", "output column for the decode error (null when fine)", TypeConverters.toString)
    maxBytes = Param(Params._dummy(), "maxBytes", "inputs larger than this many bytes are refused", TypeConverters.toInt)
    maxPixels = Param(Params._dummy(), "maxPixels", "images with more pixels than this are refused", TypeConverters.toInt)
    assetPath = Param(
        Params._dummy(), "assetPath", "file the feature set needs (its ONNX graph); set on load to the copy saved in the stage", TypeConverters.toString
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        errorCol: str = "error",
        featureSet: str = DEFAULT_FEATURE_SET,
        maxBytes: int = DEFAULT_MAX_BYTES,
        maxPixels: int = DEFAULT_MAX_PIXELS,
        assetPath: str = "",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="features",
            errorCol="error",
            featureSet=DEFAULT_FEATURE_SET,
            maxBytes=DEFAULT_MAX_BYTES,
            maxPixels=DEFAULT_MAX_PIXELS,
            assetPath="",
        )
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "ImageFeaturizer":
        return self._set(**kwargs)

    def getFeatureSet(self) -> str:
        return self.getOrDefault(self.featureSet)

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    def getMaxBytes(self) -> int:
        return self.getOrDefault(self.maxBytes)

    def getMaxPixels(self) -> int:
        return self.getOrDefault(self.maxPixels)

    def getAssetPath(self) -> str | None:
        return self.getOrDefault(self.assetPath) or None

    def write(self) -> _FeaturizerWriter:
        return _FeaturizerWriter(self)

    @classmethod
    def read(cls) -> _FeaturizerReader:
        return _FeaturizerReader(cls)

    def dim(self) -> int:
        return get_feature_set(self.getFeatureSet()).dim

    def _udf_body(self, read_max: int, from_path: bool):
        return _featurize_arrow(self.getFeatureSet(), read_max, self.getMaxBytes(), self.getMaxPixels(), self.getAssetPath(), from_path)

    def _check_schema(self, dataset: DataFrame) -> None:
        schema = dataset.schema
        col = self.getInputCol()
        if col not in schema.names:
            raise DataError(f"ImageFeaturizer expects a binary column {col!r}; found columns {schema.names}")
        if not isinstance(schema[col].dataType, BinaryType):
            raise DataError(f"ImageFeaturizer expects {col!r} to be binary, found {schema[col].dataType.simpleString()}")
        for out in (self.getOutputCol(), self.getErrorCol()):
            if out in schema.names:
                raise DataError(f"ImageFeaturizer output column {out!r} already exists in the input")
        if self.getFeatureSet() not in FEATURE_SETS:
            raise ConfigError(f"unknown feature set {self.getFeatureSet()!r}; expected one of {sorted(FEATURE_SETS)}")

    def transform_paths(self, dataset: DataFrame, path_col: str = "path", read_max_bytes: int | None = None) -> DataFrame:
        """Like :meth:`transform`, for a column of file paths: each file is read inside the
        same UDF call that featurizes it, so its bytes never travel to the JVM and back.

        The features are exactly the stage's (same ``featurize_inputs``, feature set and
        caps); the error column also carries read errors (``oversized``, ``empty``,
        ``read_error``). Used by training, which reads files by path.
        """
        if path_col not in dataset.columns:
            raise DataError(f"ImageFeaturizer.transform_paths expects a path column {path_col!r}; found {dataset.columns}")
        udf = F.arrow_udf(self._udf_body(read_max_bytes or self.getMaxBytes(), from_path=True), _UDF_SCHEMA).asNondeterministic()
        tmp = "__memestream_featurized"
        staged = dataset.withColumn(tmp, udf(F.col(path_col)))
        return staged.select(
            *[F.col(c) for c in dataset.columns],
            array_to_vector(F.col(f"{tmp}.features")).alias(self.getOutputCol()),
            F.col(f"{tmp}.error").alias(self.getErrorCol()),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_schema(dataset)
        udf = F.arrow_udf(self._udf_body(self.getMaxBytes(), from_path=False), _UDF_SCHEMA).asNondeterministic()
        tmp = "__memestream_featurized"
        staged = dataset.withColumn(tmp, udf(F.col(self.getInputCol())))
        # one select instead of withColumn/drop chains: each step costs a plan analysis
        return staged.select(
            *[F.col(c) for c in dataset.columns],
            array_to_vector(F.col(f"{tmp}.features")).alias(self.getOutputCol()),
            F.col(f"{tmp}.error").alias(self.getErrorCol()),
        )
