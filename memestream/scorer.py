"""One scorer for every caller: ``meme-evaluate``, training's test split, the stream and the benchmarks.

A :class:`Scorer` is built once per loaded model and options. It chooses the engine once
(``python``: the model's stages compiled to numpy and run in the Python worker that
decodes, :mod:`memestream.inference`; ``spark``: the PipelineModel in the JVM; ``auto``:
python when the model compiles), compiles the numpy stages once, and keeps the UDF and
Column expressions it builds: building a Column costs a Py4J round trip each (about 700 per
projection, ~0.13 s a micro-batch), and a UDF object keeps its pickled body and JVM
counterpart. Unresolved Columns are reusable across DataFrames, so a stream's batches share
them. Both engines give the same rows (tests compare them field by field).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pyspark.ml import PipelineModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from memestream.classify import (
    EXTRA_COLUMNS, FEATURES, PREDICTION, PROBABILITY, SCORE_SCHEMA, SCORED, WIDE_OCR_ROWS, ScoringSpec, apply_model,
    error_code, featurizer_of, jvm_calibrator, label_exprs, pipeline_columns, score_arrow, scoring_spec,
)
from memestream.decode import DEFAULT_MAX_BYTES
from memestream.errors import ConfigError
from memestream.inference import ENGINES, LocalModel, NotCompilable, compile_stages
from memestream.load import read_files
from memestream.modelstore import LoadedModel
from memestream.novelty import DEFAULT_OOD_MODE, check_ood_mode
from memestream.stacking import DEFAULT_TEXT_MODE, TextResult, check_text_mode

log = logging.getLogger(__name__)

#: Where the inputs are: ``path`` (files, read in the workers, size-capped), ``content`` (bytes
#: already in the frame, e.g. Kafka values), ``auto`` (``content`` when the frame has it).
INPUTS = ("auto", "path", "content")
#: The columns :meth:`Scorer.score` adds, in order: the labelled row, the input's id and size,
#: the bytes of a bad input (for a quarantine), what the text branch and the novelty score
#: did, and the reported class probabilities in class order (for metrics).
LABELLED = ("label", "probabilities", "confidence", "error", "error_code", "model_version",
            "image_id", "size_bytes", "payload", *EXTRA_COLUMNS, "probability_vector")
_LOAD_ERROR = "load_error"


def compile_model(model: LoadedModel) -> LocalModel | None:
    """The model's stages after the featurizer as numpy arrays, or None when some stage
    (a RandomForest, say) only runs in Spark."""
    try:
        return compile_stages(model.pipeline.stages[1:], featurizer_of(model).getOutputCol(), len(model.classes))
    except NotCompilable as exc:
        log.info("model %s/%s is scored by Spark ML in the JVM: %s", model.version, model.name, exc)
        return None


@dataclass
class FeatureScores:
    """:meth:`Scorer.score_features`' result, row-aligned."""

    probs: np.ndarray
    #: the JVM's predicted class (Spark ML's own argmax); None: the most probable class
    prediction: np.ndarray | None
    #: what the text branch did (None: the JVM engine, which has no text branch)
    text: TextResult | None
    #: the novelty score of each row, and whether it is above the model's threshold (None:
    #: the model has no novelty reference)
    novelty: np.ndarray | None
    ood: np.ndarray | None
    #: the calibration map's method, when one was applied
    calibration: str | None


class Scorer:
    """A loaded model with its scoring options: the engine chosen once, what it builds kept."""

    def __init__(
        self,
        model: LoadedModel,
        engine: str = "auto",
        text_mode: str = DEFAULT_TEXT_MODE,
        ood_mode: str = DEFAULT_OOD_MODE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        input: str = "auto",
        time_cap: float | None = None,
        memory_cap: int | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"--scoring must be one of {', '.join(ENGINES)}, found {engine!r}")
        if input not in INPUTS:
            raise ConfigError(f"scoring input must be one of {', '.join(INPUTS)}, found {input!r}")
        self.model = model
        self.text_mode = check_text_mode(text_mode)
        self.ood_mode = check_ood_mode(ood_mode)
        self.max_bytes = max_bytes
        self.input = input
        #: seconds per input in a worker before it is ended, and a sandbox child's memory cap
        #: (:mod:`memestream.isolation`); None: no cap (callers that score on the driver)
        self.time_cap = time_cap
        self.memory_cap = memory_cap
        self.local: LocalModel | None = None if engine == "spark" else compile_model(model)
        if engine == "python" and self.local is None:
            raise ConfigError(f"model {model.version}/{model.name} has stages that run only in Spark; use --scoring auto or spark")
        if self.local is None and model.text_branch is not None:
            log.warning("model %s/%s: the JVM engine scores the logistic regression only (its text branch and neighbour vote "
                        "need the Python engine)", model.version, model.name)
        self._udfs: dict[tuple[bool, bool], tuple[Column, dict[str, Column]]] = {}
        self._projections: dict[tuple, tuple[Column, list[Column]]] = {}

    @property
    def engine(self) -> str:
        """``python`` or ``spark``: the engine this scorer runs (``auto`` resolved)."""
        return "python" if self.local is not None else "spark"

    def describe(self) -> str:
        where = "the Python worker (numpy)" if self.local is not None else "Spark ML (JVM)"
        return f"model {self.model.version}/{self.model.name} runs in {where}"

    def spec(self, from_path: bool, wide_ocr_rows: int = 0, isolate: bool = False) -> ScoringSpec:
        """What the in-worker scorer needs (:func:`memestream.classify.score_values`); the
        Python engine only. ``wide_ocr_rows``: see :class:`ScoringSpec` (0 keeps a one-core figure)."""
        if self.local is None:
            raise ConfigError(f"model {self.model.version}/{self.model.name} has stages that run only in Spark: no in-worker scorer")
        return scoring_spec(self.model, self.local, from_path, self.max_bytes, self.text_mode, self.ood_mode, wide_ocr_rows,
                            self.time_cap, isolate, self.memory_cap)

    def _from_path(self, df: DataFrame) -> bool:
        if self.input == "auto":
            return "content" not in df.columns
        if self.input == "path" and "content" in df.columns:
            raise ConfigError("scoring input 'path' reads the files into a 'content' column, but the frame already has one")
        return self.input == "path"

    def score(self, df: DataFrame, output: Sequence[str] | None = None, extra: Mapping[str, Column] | None = None,
              isolate: bool = False) -> DataFrame:
        """``df`` (``path`` to read or ``content``) -> one labelled row per input, errors kept.

        Columns: ``output`` in that order (names of ``df``'s columns, of :data:`LABELLED` or of
        ``extra``), by default ``df``'s columns then :data:`LABELLED`. ``extra``: the caller's
        own expressions over ``df``'s columns, added in the same projection (one plan step).
        The Python engine keeps the projection per frame layout, ``output`` and ``extra``
        names, so pass the same expressions for the same names. ``isolate``: each input in a
        process of its own (Python engine; after a batch failed in a worker: a poison pill gets
        ``decoder_crashed``/``decoder_timeout`` instead of failing the batch again)."""
        from_path = self._from_path(df)
        extra = dict(extra or {})
        if self.local is None:
            return self._score_in_jvm(df, from_path, output, extra)
        key = (from_path, isolate, tuple(df.columns), tuple(output) if output is not None else None, tuple(extra))
        if key not in self._projections:
            call, new = self._udf_columns(from_path, isolate)
            new = {**new, **{name: expr.alias(name) for name, expr in extra.items()}}
            names = output if output is not None else [*(c for c in df.columns if c not in new), *LABELLED, *extra]
            self._projections[key] = (call, [new[c] if c in new else F.col(c) for c in names])
        call, projection = self._projections[key]
        return df.withColumn(SCORED, call).select(*projection)

    def _udf_columns(self, from_path: bool, isolate: bool = False) -> tuple[Column, dict[str, Column]]:
        """``(UDF call, {output name: expression over its result})``: the in-worker scorer.

        One Arrow UDF call per row batch reads the file (``from_path``) or takes the bytes,
        decodes once, embeds, runs the model's stages as numpy and, when the text mode asks
        and the model has a text branch, OCR and the stacker. Image bytes and vectors never
        travel back to the JVM; only labels, probabilities, ids and the payload of bad inputs."""
        if (from_path, isolate) not in self._udfs:
            spec = self.spec(from_path, wide_ocr_rows=WIDE_OCR_ROWS, isolate=isolate)
            udf = F.arrow_udf(score_arrow(spec), SCORE_SCHEMA).asNondeterministic()  # never duplicated into each field read below (one decode per image)
            new = label_exprs(
                self.model.classes, f"{SCORED}.error", F.col(f"{SCORED}.prediction"), F.col(f"{SCORED}.probabilities"),
                code=F.col(f"{SCORED}.error_code"),
            )
            new["error"] = F.col(f"{SCORED}.error")
            new["model_version"] = F.lit(self.model.version)
            for name in ("image_id", "size_bytes", "payload", *EXTRA_COLUMNS):
                new[name] = F.col(f"{SCORED}.{name}")
            new["probability_vector"] = F.col(f"{SCORED}.probabilities")
            self._udfs[(from_path, isolate)] = (udf(F.col("path" if from_path else "content")), {name: expr.alias(name) for name, expr in new.items()})
        return self._udfs[(from_path, isolate)]

    def _score_in_jvm(self, df: DataFrame, from_path: bool, output: Sequence[str] | None, extra: dict[str, Column]) -> DataFrame:
        """The PipelineModel in the JVM, then calibration and novelty by the same numpy code as
        the Python engine (:func:`memestream.classify.pipeline_columns`), in one projection."""
        if from_path:
            read = read_files(df, path_col="path", content_col="content", error_col=_LOAD_ERROR, max_bytes=self.max_bytes)
        else:
            read = df.withColumn(_LOAD_ERROR, F.lit(None).cast("string"))
        scored, new, vector = pipeline_columns(read, self.model, self.ood_mode)
        load_error = F.col(_LOAD_ERROR)
        err = F.coalesce(load_error, F.col(featurizer_of(self.model).getErrorCol()))
        ok = err.isNull()
        content = F.col("content")
        cols = {
            **new,
            "label": F.when(ok, new["label"]),
            "probabilities": F.when(ok, new["probabilities"]),
            "confidence": F.when(ok, new["confidence"]),
            "error": err,
            "error_code": F.coalesce(error_code(load_error), new["error_code"]),
            "image_id": F.sha2(content, 256),
            "size_bytes": F.length(content).cast("long"),
            "payload": F.when(~ok, content),
            "probability_vector": vector,
            **extra,
        }
        names = output if output is not None else [*(c for c in df.columns if c not in cols), *LABELLED, *extra]
        return scored.select(*[cols[c].alias(c) if c in cols else F.col(c) for c in names])

    def score_features(self, features: np.ndarray, texts: Callable[[np.ndarray], Sequence[str]] | None = None,
                       stats: np.ndarray | None = None) -> FeatureScores:
        """Rows already featurized on the driver (training's test split) through the same
        stages, text branch and calibration as :meth:`score`. ``texts(rows)`` gives the OCR
        text of the rows the cascade asks for, all at once; required when the text mode reads
        text and the model has a text branch (Python engine). ``stats``: the rows' image
        statistics for the novelty score (:mod:`memestream.image_stats`; None: the embedding
        view alone, as for an image the scorer could not see)."""
        if self.local is not None and self.model.text_branch is not None and self.text_mode != "off" and texts is None:
            raise ValueError(f"text mode {self.text_mode!r} reads OCR text: pass texts (or score with text mode 'off')")
        reference = self.model.novelty
        novelty = reference.score(features, stats)[0] if reference is not None else None
        ood = novelty > reference.threshold if reference is not None else None
        if self.local is None:
            return self._features_in_jvm(features, novelty, ood)
        spec = self.spec(from_path=False)
        probs, text = apply_model(spec, features, np.ones(len(features), dtype=bool), read_rows=texts)
        return FeatureScores(probs, None, text, novelty, ood, spec.calibrator.method if spec.calibrator is not None else None)

    def _features_in_jvm(self, features: np.ndarray, novelty: np.ndarray | None, ood: np.ndarray | None) -> FeatureScores:
        """The stages after the featurizer in the JVM over a frame of the rows (a random forest);
        the model's calibration map, if it has one, as the Python engine applies it."""
        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ConfigError("scoring features with Spark ML needs an active SparkSession")
        stages = PipelineModel(stages=self.model.pipeline.stages[1:])
        frame = features_frame(spark, features, featurizer_of(self.model).getOutputCol())
        rows = stages.transform(frame).select(vector_to_array(F.col(PROBABILITY), "float64").alias("p"),
                                              F.col(PREDICTION).cast("int").alias("yhat")).collect()
        probs = np.array([r["p"] for r in rows], dtype=np.float64).reshape(len(rows), len(self.model.classes))
        calibrator = jvm_calibrator(self.model)
        if calibrator is not None:
            probs = calibrator.apply(probs)
        prediction = probs.argmax(axis=1) if calibrator is not None else np.array([r["yhat"] for r in rows], dtype=np.int64)
        return FeatureScores(probs, prediction, None, novelty, ood, calibrator.method if calibrator is not None else None)


def features_frame(spark: SparkSession, features: np.ndarray, column: str = FEATURES, columns: Mapping[str, np.ndarray] | None = None) -> DataFrame:
    """Driver rows -> a Spark frame: ``column`` (a vector per row) plus ``columns`` as they are.
    float64 rows (PCA coordinates) stay doubles, float32 embeddings go over as float32."""
    n, dim = features.shape
    dtype = np.float64 if features.dtype == np.float64 else np.float32
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    table = pa.table({"__f": pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1).astype(dtype))), **(columns or {})})
    df = spark.createDataFrame(table)
    return df.select(array_to_vector(F.col("__f")).alias(column), *[F.col(c) for c in (columns or {})])
