"""Apply a saved model to image bytes and shape the labelled output.

Shared by streaming (every micro-batch) and evaluation, so both label rows the same
way: class name instead of an index, a probability per class, and a null label with an
error for inputs that could not be decoded.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from memestream.featurizer import ImageFeaturizer
from memestream.modelstore import LoadedModel

# Column names used inside saved pipelines.
FEATURES = "features"
SCALED = "scaled_features"
REDUCED = "pca_features"
PREDICTION = "prediction"
PROBABILITY = "probability"
RAW_PREDICTION = "raw_prediction"
ERROR = "error"

_INTERNAL = (FEATURES, SCALED, REDUCED, PREDICTION, PROBABILITY, RAW_PREDICTION)


def featurizer_of(model: LoadedModel) -> ImageFeaturizer:
    stage = model.pipeline.stages[0]
    if not isinstance(stage, ImageFeaturizer):
        raise TypeError(f"first stage of {model.path} is {type(stage).__name__}, expected ImageFeaturizer")
    return stage


def error_code(col: Column) -> Column:
    """``"truncated: ..."`` -> ``"truncated"``."""
    return F.when(col.isNotNull(), F.split(col, ":", 2).getItem(0))


def label_exprs(classes: Sequence[str], error_col: str = ERROR) -> dict[str, Column]:
    """Expressions turning ``prediction``/``probability`` into ``label``, ``probabilities``, ``confidence``."""
    names = F.array(*[F.lit(c) for c in classes])
    probs = vector_to_array(F.col(PROBABILITY), "float64")
    ok = F.col(error_col).isNull()
    return {
        "label": F.when(ok, F.element_at(names, F.col(PREDICTION).cast("int") + 1)),
        "probabilities": F.when(ok, F.map_from_arrays(names, probs)),
        "confidence": F.when(ok, F.array_max(probs)),
        "error_code": error_code(F.col(error_col)),
    }


def label_columns(df: DataFrame, classes: Sequence[str], error_col: str = ERROR) -> DataFrame:
    """Turn ``prediction``/``probability`` into ``label``, ``probabilities``, ``confidence``."""
    return df.withColumns(label_exprs(classes, error_col))


def classify(df: DataFrame, model: LoadedModel, keep_prediction_index: bool = False) -> DataFrame:
    """Featurize, predict and label ``df`` (which must hold the featurizer's input column).

    Built as one projection over the pipeline's output: a micro-batch pays a plan analysis
    per DataFrame step, so fewer steps is lower latency.
    """
    scored = model.pipeline.transform(df)
    new = label_exprs(model.classes, featurizer_of(model).getErrorCol())
    new["model_version"] = F.lit(model.version)
    drop = {c for c in _INTERNAL if not (keep_prediction_index and c in (PREDICTION, PROBABILITY))}
    keep = [F.col(c) for c in scored.columns if c not in drop and c not in new]
    return scored.select(*keep, *[expr.alias(name) for name, expr in new.items()])
