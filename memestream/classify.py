"""The pieces both scoring engines share: apply a saved model to image bytes and shape the
labelled output.

:class:`memestream.scorer.Scorer` chooses the engine and builds the projection; this module
holds what either engine runs: the JVM pipeline's columns (:func:`pipeline_columns`), the
in-worker computation (:func:`score_values`), and the expressions that label both alike
(:func:`label_exprs`): class name instead of an index, a probability per class, and a null
label with an error for inputs that could not be decoded.
"""
from __future__ import annotations

import dataclasses

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from memestream.decode import DEFAULT_MAX_BYTES
from memestream.features import featurize_inputs, get_feature_set
from memestream.featurizer import ImageFeaturizer
from memestream.image_stats import stats_of
from memestream.inference import LocalModel
from memestream.isolation import DEFAULT_TIME_CAP_S, limit_memory, rows_isolated, time_cap
from memestream.modelstore import LoadedModel
from memestream.novelty import DEFAULT_OOD_MODE, OOD_CODE, check_ood_mode
from memestream.stacking import DEFAULT_TEXT_MODE, TextBranch, TextResult, apply_text_branch, check_text_mode

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


def label_exprs(
    classes: Sequence[str],
    error_col: str = ERROR,
    prediction: Column | None = None,
    probabilities: Column | None = None,
    code: Column | None = None,
) -> dict[str, Column]:
    """Expressions turning a class index and a probability array into ``label``,
    ``probabilities`` (class -> probability), ``confidence`` and ``error_code``.

    Defaults read the pipeline's ``prediction``/``probability`` (vector) columns; the
    in-worker path passes its own, so both paths label rows with the same expressions.
    """
    names = F.array(*[F.lit(c) for c in classes])
    probs = probabilities if probabilities is not None else vector_to_array(F.col(PROBABILITY), "float64")
    index = prediction if prediction is not None else F.col(PREDICTION)
    ok = F.col(error_col).isNull()
    return {
        "label": F.when(ok & (index >= 0), F.element_at(names, index.cast("int") + 1)),
        "probabilities": F.when(ok, F.map_from_arrays(names, probs)),
        "confidence": F.when(ok, F.array_max(probs)),
        "error_code": code if code is not None else error_code(F.col(error_col)),
    }


def classify(df: DataFrame, model: LoadedModel, keep_prediction_index: bool = False, ood_mode: str | None = None) -> DataFrame:
    """Featurize, predict and label ``df`` (which must hold the featurizer's input column)
    with the PipelineModel in the JVM (the image branch; no OCR text branch).

    With ``ood_mode`` the model's calibration and novelty score are applied too
    (:func:`pipeline_columns`)."""
    scored, new, _ = pipeline_columns(df, model, ood_mode)
    drop = {c for c in _INTERNAL if not (keep_prediction_index and c in (PREDICTION, PROBABILITY))} | {_POSTED}
    keep = [F.col(c) for c in scored.columns if c not in drop and c not in new]
    return scored.select(*keep, *[expr.alias(name) for name, expr in new.items()])


def pipeline_columns(df: DataFrame, model: LoadedModel, ood_mode: str | None = None) -> tuple[DataFrame, dict[str, Column], Column]:
    """``(pipeline output, {labelled column: expression}, class probabilities as an array)``:
    the JVM engine's scoring of ``df``, for the caller's one projection (a micro-batch pays
    a plan analysis per DataFrame step, so fewer steps is lower latency).

    With ``ood_mode`` the model's calibration and novelty score are applied by one Arrow UDF
    over the pipeline's probability and feature vectors with the same numpy code as the
    in-worker scorer, so both engines report the same probabilities and labels."""
    scored = model.pipeline.transform(df)
    err = featurizer_of(model).getErrorCol()
    if ood_mode is None:
        new = label_exprs(model.classes, err)
        vector = vector_to_array(F.col(PROBABILITY), "float64")
    else:
        feat = featurizer_of(model)
        novelty = worker_novelty(model)
        # the novelty score's pixel view needs the image: the post step decodes the bytes again
        # (the featurizer stage keeps only the vector); without that view, an empty column
        stats_on = novelty is not None and ood_mode != "off" and novelty.wants_stats
        decode = (feat.getFeatureSet(), feat.getMaxBytes(), feat.getMaxPixels()) if stats_on else None
        post = F.arrow_udf(_jvm_post(jvm_calibrator(model), novelty, check_ood_mode(ood_mode), tuple(model.classes), decode),
                           _POST_SCHEMA).asNondeterministic()
        image = F.col(feat.getInputCol()) if stats_on else F.lit(None).cast("binary")
        scored = scored.withColumn(_POSTED, post(vector_to_array(F.col(FEATURES), "float32"), vector_to_array(F.col(PROBABILITY), "float64"),
                                                 image))
        vector = F.col(f"{_POSTED}.probabilities")
        new = label_exprs(model.classes, err, F.col(f"{_POSTED}.prediction"), vector,
                          code=F.coalesce(error_code(F.col(err)), F.col(f"{_POSTED}.code")))
        for name in NOVELTY_COLUMNS:
            new[name] = F.when(F.col(err).isNull(), F.col(f"{_POSTED}.{name}"))
        for name in TEXT_COLUMNS:
            new[name] = F.lit(None).cast(TEXT_COLUMNS[name])
    new["model_version"] = F.lit(model.version)
    return scored, new, vector


_POSTED = "__memestream_posted"
_POST_SCHEMA = "prediction int, probabilities array<double>, code string, novelty double, ood boolean, nearest_class string"


def _jvm_post(calibrator: Any, novelty: Any, ood_mode: str, classes: tuple[str, ...], decode: tuple[str, int, int] | None = None):
    """UDF body: calibration and novelty for rows scored by the JVM pipeline (same numpy as
    :func:`score_values`). ``decode``: (feature set, max bytes, max pixels) to decode the
    image bytes again for the novelty score's image statistics (None: no statistics)."""

    def run(features: pa.Array, probabilities: pa.Array, images: pa.Array) -> pa.Array:
        n = len(probabilities)
        k = len(classes)
        probs = np.asarray(probabilities.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(n, k)
        if calibrator is not None:
            probs = calibrator.apply(probs)
        index = probs.argmax(axis=1).astype(np.int32)
        codes: list[str | None] = [None] * n
        x = np.asarray(features.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0))
        stats = _stats_of_bytes(images.to_pylist(), *decode) if decode is not None else None
        nov, ood, near = novelty_columns(novelty, ood_mode, classes, x, np.ones(n, dtype=bool), index, codes, stats)
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
        return pa.StructArray.from_arrays(
            [pa.array(index, type=pa.int32()), pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1), type=pa.float64())),
             pa.array(codes, type=pa.string()), pa.array(nov, type=pa.float64()), pa.array(ood, type=pa.bool_()), pa.array(near, type=pa.string())],
            names=["prediction", "probabilities", "code", "novelty", "ood", "nearest_class"],
        )

    return run


# ---------------------------------------------------------------------------------------
# In-worker scoring: read, decode, featurize and classify in one Arrow UDF call
# ---------------------------------------------------------------------------------------
@dataclass
class ScoredBatch:
    """The in-worker scorer's result for a batch of inputs, row-aligned."""

    index: np.ndarray
    probs: np.ndarray
    featurized: Any  # memestream.features.Featurized
    text: Any  # memestream.stacking.TextResult
    novelty: list[float | None]
    ood: list[bool | None]
    nearest: list[str | None]


def score_values(spec: "ScoringSpec", values: Sequence[Any], batch_rows: int | None = None) -> ScoredBatch:
    """Read/decode/featurize, apply the model's stages as numpy and the text branch: the
    whole per-image computation of the stream, also run as a plain loop by the benchmark's
    single-process limit. ``batch_rows``: the rows of the task's batch these ``values`` are a
    chunk of (its size, not the chunk's, decides the wide OCR engine); default ``len(values)``."""
    fs = get_feature_set(spec.feature_set)
    text_on = spec.text is not None and spec.text_mode != "off"
    stats_on = spec.novelty is not None and spec.ood_mode != "off" and getattr(spec.novelty, "wants_stats", False)
    out = featurize_inputs(
        values, fs, from_path=spec.from_path, read_max=spec.read_max, max_bytes=spec.max_bytes,
        max_pixels=spec.max_pixels, asset=spec.asset, keep_images=text_on or stats_on, time_cap=spec.time_cap,
    )
    with time_cap(spec.time_cap * max(1, len(values)) if spec.time_cap else None):
        probs, text = apply_model(spec, out.matrix, out.ok, out.images, wide_ocr=(batch_rows or len(values)) <= spec.wide_ocr_rows)
        stats = stats_of(out.images) if stats_on else None  # the novelty score's pixel view, ~1.5 ms a row
    out.images = []  # free the decoded arrays early
    # the label is the most probable class of the probabilities the row reports
    index = probs.argmax(axis=1).astype(np.int32) if (spec.text is not None or spec.calibrator is not None) else spec.local.head.predict(probs)
    novelty, ood, nearest = novelty_columns(spec.novelty, spec.ood_mode, spec.classes, out.matrix, out.ok, index, out.codes, stats)
    return ScoredBatch(index, probs, out, text, novelty, ood, nearest)


def apply_model(
    spec: "ScoringSpec", matrix: np.ndarray, ok: np.ndarray, images: Sequence[Any] | None = None,
    read_rows: Callable[[np.ndarray], Sequence[str]] | None = None, wide_ocr: bool = False,
) -> tuple[np.ndarray, TextResult]:
    """Featurized rows -> the class probabilities they report: the model's stages as numpy,
    its text branch (OCR of ``images`` where the mode and cascade ask, or ``read_rows``' text)
    and calibration. Shared by :func:`score_values` and training's test scoring."""
    reduced = spec.local.transform(matrix)
    image_probs = spec.local.head(reduced)
    text = apply_text_branch(spec.text, spec.text_mode, image_probs, images if images is not None else [None] * len(ok), ok,
                             read_rows=read_rows, reduced=reduced, wide_ocr=wide_ocr)
    probs = text.probs
    if spec.calibrator is not None:
        probs = spec.calibrator.apply(probs)
    return probs, text


def novelty_columns(
    novelty: Any, ood_mode: str, classes: Sequence[str], matrix: np.ndarray, ok: np.ndarray, index: np.ndarray, codes: list[str | None],
    stats: np.ndarray | None = None,
) -> tuple[list[float | None], list[bool | None], list[str | None]]:
    """``(novelty, ood, nearest class)`` per row (None where not scored); with ``reject``,
    an out-of-distribution row loses its class (``index`` -1) and gets the
    ``out_of_distribution`` code. Shared by both scoring engines. ``stats``: the rows' image
    statistics (:mod:`memestream.image_stats`) where the engine holds the decoded images."""
    n = len(ok)
    scores_out: list[float | None] = [None] * n
    ood: list[bool | None] = [None] * n
    nearest: list[str | None] = [None] * n
    if novelty is None or ood_mode == "off" or not ok.any():
        return scores_out, ood, nearest
    scores, near = novelty.score(matrix[ok], stats[ok] if stats is not None else None)
    for j, i in enumerate(np.flatnonzero(ok)):
        scores_out[i] = float(scores[j])
        ood[i] = bool(scores[j] > novelty.threshold)
        nearest[i] = classes[int(near[j])]
        if ood[i] and ood_mode == "reject":
            index[i] = -1  # no class: label NULL, error_code out_of_distribution
            codes[i] = OOD_CODE
    return scores_out, ood, nearest


def _stats_of_bytes(payloads: Sequence[bytes | None], feature_set: str, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Image statistics of encoded images decoded as the feature set decodes them (NaN rows:
    not decodable; those rows carry the featurizer's error and no novelty anyway)."""
    from memestream.features import decode_for

    fs = get_feature_set(feature_set)
    images: list[np.ndarray | None] = []
    for data in payloads:
        try:
            images.append(decode_for(data, fs, max_bytes, max_pixels) if data is not None else None)
        except Exception:  # noqa: BLE001 - the featurizer already reported this row's error (BadImage or worse)
            images.append(None)
    return stats_of(images)


#: Inputs a worker decodes and scores at once. Spark hands the UDF Arrow batches of up to
#: ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows (256: fewer round trips); every decoded
#: image of a chunk stays in memory until the chunk is scored (the text branch and the pixel
#: statistics read them), 69 MB for 256 memes of 300 x 300. A scoring process's peak RSS over
#: 768 memes: 489 MiB in chunks of 256, 428 in chunks of 64, at the same images/s.
SCORE_CHUNK = 64


def score_arrow(spec: "ScoringSpec"):
    """Build the UDF body (module-level so cloudpickle ships arrays and a function reference).

    In a worker every input's work runs under the spec's time cap (a hang ends the worker,
    :mod:`memestream.isolation`); with ``spec.isolate`` each input runs in a process of its
    own, so one that crashes or hangs gets a coded row instead of failing the batch."""

    def run(inputs: pa.Array) -> pa.Array:
        limit_memory(spec.memory_cap)  # this worker's address space, before any work
        values = inputs.to_pylist()
        if spec.isolate:
            return score_isolated(spec, values)
        n = len(values)
        if n <= SCORE_CHUNK:
            return scored_arrow(score_values(spec, values))
        return pa.concat_arrays([scored_arrow(score_values(spec, values[i : i + SCORE_CHUNK], n)) for i in range(0, n, SCORE_CHUNK)])

    return run


def scored_arrow(scored: ScoredBatch) -> pa.StructArray:
    """A scored batch as the UDF's result struct (:data:`SCORE_FIELDS`)."""
    out, text, probs = scored.featurized, scored.text, scored.probs
    n, k = probs.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    payloads = out.payloads
    return pa.StructArray.from_arrays(
        [
            pa.array(scored.index, type=pa.int32()),
            pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1), type=pa.float64())),
            pa.array(out.errors, type=pa.string()),
            pa.array(out.codes, type=pa.string()),
            pa.array([hashlib.sha256(d).hexdigest() if d is not None else None for d in payloads], type=pa.string()),
            pa.array([len(d) if d is not None else None for d in payloads], type=pa.int64()),
            pa.array([d if e is not None else None for d, e in zip(payloads, out.errors)], type=pa.binary()),
            pa.array(text.ocr_ran, type=pa.bool_()),
            pa.array(text.ocr_text, type=pa.string()),
            pa.array(text.ocr_error, type=pa.string()),
            pa.array(scored.novelty, type=pa.float64()),
            pa.array(scored.ood, type=pa.bool_()),
            pa.array(scored.nearest, type=pa.string()),
        ],
        names=list(SCORE_FIELDS),
    )


def failed_row(spec: "ScoringSpec", value: Any, code: str, detail: str) -> dict[str, Any]:
    """The result row of an input whose work never finished (it crashed or hung its process):
    no class, the code and why, and its bytes for the quarantine when they can be read."""
    from memestream.inputs import local_path, read_capped

    payload = value
    if spec.from_path:
        payload = read_capped(local_path(str(value)), spec.read_max)[0] if value is not None else None
    row: dict[str, Any] = {name: None for name in SCORE_FIELDS}
    row.update(
        prediction=-1, probabilities=[0.0] * len(spec.classes), error=f"{code}: {detail}", error_code=code, ocr_ran=False,
        image_id=hashlib.sha256(payload).hexdigest() if payload is not None else None,
        size_bytes=len(payload) if payload is not None else None, payload=payload,
    )
    return row


def score_isolated(spec: "ScoringSpec", values: Sequence[Any]) -> pa.StructArray:
    """Score ``values`` one per sandbox child: the rows :func:`score_values` gives, except that
    an input that kills its process gets ``decoder_crashed`` and one that runs past the time cap
    ``decoder_timeout`` (:mod:`memestream.isolation`)."""
    inner = dataclasses.replace(spec, isolate=False, time_cap=None)  # the parent keeps the time
    sample = dataclasses.replace(inner, from_path=False)

    def warm() -> None:
        from memestream.sample import sample_image_bytes

        score_values(sample, [sample_image_bytes("doom", 1)])

    return rows_isolated(score_arrow(inner), values, pa.string() if spec.from_path else pa.binary(), SCORE_ARROW_TYPE,
                         lambda v, code, detail: failed_row(spec, v, code, detail), spec.time_cap or DEFAULT_TIME_CAP_S,
                         spec.memory_cap, warm)


@dataclass(frozen=True)
class ScoringSpec:
    """Everything the in-worker scorer needs, shipped to the workers with the UDF."""

    feature_set: str
    read_max: int
    max_bytes: int
    max_pixels: int
    asset: str | None
    local: LocalModel
    text: TextBranch | None
    text_mode: str
    from_path: bool
    calibrator: Any = None  # memestream.calibration.Calibrator
    novelty: Any = None  # memestream.novelty.NoveltyModel
    ood_mode: str = DEFAULT_OOD_MODE
    classes: tuple[str, ...] = ()
    #: a call with at most this many rows OCRs on the multi-threaded engine (0: never). The
    #: stream's tasks hold a few rows only when it is lightly loaded; the benchmark's
    #: single-process limit keeps 0, so it stays a one-core figure.
    wide_ocr_rows: int = 0
    #: seconds one input's work may take in a worker (decode; embed and OCR per row of a call)
    #: before the worker is ended: a hang becomes a failed task (None: no cap, as on a driver)
    time_cap: float | None = None
    #: score each input in a sandbox child of its own (after a batch failed in a worker)
    isolate: bool = False
    #: address-space cap of the Python worker running the UDF and of a sandbox child, bytes (None: none)
    memory_cap: int | None = None


def calibrator_for(model: LoadedModel, text_mode: str) -> Any:
    """The calibration map of the output the model gives in ``text_mode`` (None: none saved)."""
    stacked = model.text_branch is not None and text_mode != "off"
    return model.calibrators.get("stacked" if stacked else "image")


def jvm_calibrator(model: LoadedModel) -> Any:
    """The calibration map for the JVM pipeline's probabilities (None: none applies). A
    stacked model's "image" map calibrates its blended image view, not the bare regression
    the JVM runs."""
    blended = getattr(model.text_branch, "neighbours", None) is not None
    return None if blended else calibrator_for(model, "off")


def worker_novelty(model: LoadedModel) -> Any:
    """The novelty model as the workers need it: without the reference rows' file names
    (they explain labels to people, in the dashboard; shipped with every task they would
    only cost bytes)."""
    return dataclasses.replace(model.novelty, files=None) if model.novelty is not None else None


def scoring_spec(
    model: LoadedModel,
    local: LocalModel,
    from_path: bool,
    max_bytes: int = DEFAULT_MAX_BYTES,
    text_mode: str = DEFAULT_TEXT_MODE,
    ood_mode: str = DEFAULT_OOD_MODE,
    wide_ocr_rows: int = 0,
    time_cap: float | None = None,
    isolate: bool = False,
    memory_cap: int | None = None,
) -> ScoringSpec:
    feat = featurizer_of(model)
    return ScoringSpec(
        feat.getFeatureSet(), max_bytes, feat.getMaxBytes(), feat.getMaxPixels(), feat.getAssetPath(),
        local, model.text_branch, check_text_mode(text_mode), from_path, calibrator_for(model, text_mode),
        worker_novelty(model),
        check_ood_mode(ood_mode), tuple(model.classes), wide_ocr_rows, time_cap, isolate, memory_cap,
    )


#: Columns the in-worker scorer adds besides the labelled ones, with their Spark types.
TEXT_COLUMNS = {"ocr_ran": "boolean", "ocr_text": "string", "ocr_error": "string"}
NOVELTY_COLUMNS = {"novelty": "double", "ood": "boolean", "nearest_class": "string"}
EXTRA_COLUMNS = {**TEXT_COLUMNS, **NOVELTY_COLUMNS}
#: The scorer UDF's result struct, in order; its field list and Spark schema derive from it.
SCORE_TYPES = {
    "prediction": "int", "probabilities": "array<double>", "error": "string", "error_code": "string",
    "image_id": "string", "size_bytes": "long", "payload": "binary", **EXTRA_COLUMNS,
}
SCORE_FIELDS = tuple(SCORE_TYPES)
#: Spark scorer calls with at most this many rows OCR on two threads (see ScoringSpec).
WIDE_OCR_ROWS = 4
SCORE_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in SCORE_TYPES.items())
_ARROW_TYPES = {"int": pa.int32(), "array<double>": pa.list_(pa.float64()), "string": pa.string(), "long": pa.int64(),
                "binary": pa.binary(), "boolean": pa.bool_(), "double": pa.float64()}
#: The same struct as an Arrow type (the rows :func:`failed_arrow` builds)
SCORE_ARROW_TYPE = pa.struct([(name, _ARROW_TYPES[kind]) for name, kind in SCORE_TYPES.items()])


SCORED = "__memestream_scored"
