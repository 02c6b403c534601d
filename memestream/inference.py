"""A fitted pipeline's model stages as numpy arrays, applied inside the Python worker.

The featurizer already runs in a Python worker. Handing its vectors back to the JVM just
to run a scaler, a PCA projection and a small classifier costs an Arrow round trip and
two Python/JVM conversions per row. For stages that are plain linear algebra
(StandardScaler, PCA, LogisticRegression, MultilayerPerceptron) the same arithmetic in
numpy gives the same probabilities (to rounding; tests compare against Spark), so the
streaming query can read, decode, featurize and classify in one UDF call.

Anything else (a RandomForest, an unknown stage, non-default thresholds) is refused with
:class:`NotCompilable`, and the caller falls back to ``PipelineModel.transform``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


#: Where a model's stages run (``--scoring``): ``python``, as numpy in the Python worker that
#: decodes (this module); ``spark``, the PipelineModel in the JVM; ``auto``, python when the
#: model compiles. :class:`memestream.scorer.Scorer` makes the choice.
ENGINES = ("auto", "python", "spark")


class NotCompilable(Exception):
    """The pipeline has a stage that this module does not reproduce exactly."""


@dataclass(frozen=True)
class Standardize:
    mean: np.ndarray
    scale: np.ndarray  # 1/std, 0 where std == 0 (Spark's StandardScalerModel does the same)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) * self.scale


@dataclass(frozen=True)
class Project:
    matrix: np.ndarray  # (in, k): PCAModel.pc, applied as pc^T x without centering, like Spark

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.matrix


@dataclass(frozen=True)
class LogisticHead:
    coef: np.ndarray  # (classes or 1, in)
    intercept: np.ndarray
    binomial: bool
    threshold: float = 0.5

    def __call__(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.coef.T + self.intercept
        if self.binomial:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        return softmax(logits)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        if self.binomial:
            return (probs[:, 1] > self.threshold).astype(np.int32)
        return probs.argmax(axis=1).astype(np.int32)


@dataclass(frozen=True)
class PerceptronHead:
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W (out, in), b (out,)) per layer

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = 1.0 / (1.0 + np.exp(-x))  # Spark's hidden layers are sigmoid
        return softmax(x)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        return probs.argmax(axis=1).astype(np.int32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LocalModel:
    """Scaler/PCA transforms then a classifier head, as numpy: ``predict(features)``."""

    transforms: tuple[Any, ...]
    head: Any
    num_classes: int

    def transform(self, features: np.ndarray) -> np.ndarray:
        """The head's input: the features through the scaler/PCA stages."""
        x = np.asarray(features, dtype=np.float64)  # Spark vectors are doubles
        for t in self.transforms:
            x = t(x)
        return x

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.head(self.transform(features))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (n, classes), predicted index (n,))``."""
        probs = self.predict_proba(features)
        return probs, self.head.predict(probs)


def _standardize(stage: Any) -> Standardize:
    std = stage.std.toArray()
    mean = stage.mean.toArray() if stage.getWithMean() else np.zeros_like(std)
    if stage.getWithStd():
        scale = np.where(std != 0.0, 1.0 / np.where(std != 0.0, std, 1.0), 0.0)
    else:
        scale = np.ones_like(std)
    return Standardize(mean, scale)


def _logistic(stage: Any, num_classes: int) -> LogisticHead:
    if stage.isSet(stage.thresholds):
        raise NotCompilable("LogisticRegression with per-class thresholds")
    coef = stage.coefficientMatrix.toArray()
    intercept = stage.interceptVector.toArray()
    binomial = coef.shape[0] == 1
    if binomial and num_classes != 2:
        raise NotCompilable(f"binomial LogisticRegression for {num_classes} classes")
    return LogisticHead(coef, intercept, binomial, float(stage.getThreshold()) if binomial else 0.5)


def _perceptron(stage: Any) -> PerceptronHead:
    if stage.isSet(stage.thresholds):
        raise NotCompilable("MultilayerPerceptron with per-class thresholds")
    sizes = list(stage.getLayers())
    flat = stage.weights.toArray()
    layers = []
    offset = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        # Spark stores each affine layer as a column-major (out x in) matrix, then the bias
        w = flat[offset : offset + n_in * n_out].reshape((n_out, n_in), order="F")
        offset += n_in * n_out
        b = flat[offset : offset + n_out]
        offset += n_out
        layers.append((w.copy(), b.copy()))
    if offset != flat.size:
        raise NotCompilable(f"MultilayerPerceptron weights have {flat.size} values, layers {sizes} need {offset}")
    return PerceptronHead(tuple(layers))


def compile_stages(stages: Sequence[Any], first_input: str, num_classes: int) -> LocalModel:
    """Compile the stages after the featurizer; raises :class:`NotCompilable` with the reason.

    ``first_input`` is the featurizer's output column: each stage must read the column the
    previous one wrote, so a pipeline wired differently is never compiled by accident.
    """
    # lazy: only the driver compiles; the Python workers that unpickle a LocalModel import this
    # module and need no Spark ML
    from pyspark.ml.classification import LogisticRegressionModel, MultilayerPerceptronClassificationModel
    from pyspark.ml.feature import PCAModel, StandardScalerModel

    transforms: list[Any] = []
    column = first_input
    for i, stage in enumerate(stages):
        name = type(stage).__name__
        reads = stage.getOrDefault("inputCol") if stage.hasParam("inputCol") else stage.getOrDefault("featuresCol")
        if reads != column:
            raise NotCompilable(f"stage {i} ({name}) reads {reads!r}, expected {column!r}")
        last = i == len(stages) - 1
        if isinstance(stage, StandardScalerModel):
            transforms.append(_standardize(stage))
        elif isinstance(stage, PCAModel):
            transforms.append(Project(stage.pc.toArray()))
        elif isinstance(stage, (LogisticRegressionModel, MultilayerPerceptronClassificationModel)):
            if not last:
                raise NotCompilable(f"classifier stage {i} ({name}) is followed by more stages")
            head = _logistic(stage, num_classes) if isinstance(stage, LogisticRegressionModel) else _perceptron(stage)
            return LocalModel(tuple(transforms), head, num_classes)
        else:
            raise NotCompilable(f"stage {i} is {name}, which runs only in Spark")
        column = stage.getOrDefault("outputCol")
    raise NotCompilable("the pipeline has no classifier stage")
