"""The stream's scoring step: the core :class:`memestream.scorer.Scorer` plus the stream's own columns.

The Scorer chooses the engine, compiles the model and keeps its projection; this module adds
what only the stream has: ``processing_time`` and the ``date`` partition in the same
projection, the output layout (:data:`SCORED_COLUMNS`), one Scorer per model version (a new
one when the stream switches), and the warm-up before the first batch.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from memestream.decode import DEFAULT_MAX_BYTES
from memestream.inputs import EMPTY_FILE_MARKER
from memestream.modelstore import LoadedModel
from memestream.novelty import DEFAULT_OOD_MODE
from memestream.sample import sample_image_bytes
from memestream.scorer import Scorer
from memestream.stacking import DEFAULT_TEXT_MODE
from streaming.config import StreamConfig
from streaming.schema import PREDICTIONS, column_names

log = logging.getLogger(__name__)

#: Columns :meth:`StreamScorer.score` returns before ``date``: the predictions table's without
#: what the batch adds (``late``, ``batch_id``, ``writer``), plus the bytes of bad inputs for the quarantine.
SCORED_COLUMNS = tuple(c for c in column_names(PREDICTIONS) if c not in ("late", "batch_id", "writer")) + ("payload",)


@dataclass
class StreamScorer:
    """Scores micro-batches with the stream's options: a :class:`Scorer` per model version."""

    engine: str = "auto"
    text: str = DEFAULT_TEXT_MODE
    ood: str = DEFAULT_OOD_MODE
    max_bytes: int = DEFAULT_MAX_BYTES
    #: the shape of the stream's frames (``folder``: paths to read, ``kafka``: bytes), for the warm-up
    source: str = "folder"
    #: seconds per input in a worker (memestream.isolation.time_cap); None: no cap
    time_cap: float | None = None
    #: address-space cap of a Python worker, bytes (memestream.isolation.limit_memory); None: none
    memory_cap: int | None = None
    _scorer: Scorer | None = field(default=None, init=False, repr=False)
    _extra: dict[str, Column] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, cfg: StreamConfig) -> "StreamScorer":
        return cls(cfg.scoring, cfg.text, cfg.ood, cfg.max_bytes, cfg.source, cfg.time_cap_s, cfg.worker_memory)

    def scorer(self, model: LoadedModel) -> Scorer:
        """The Scorer of ``model``, built (engine chosen, stages compiled) when the model changes;
        ConfigError when the engine cannot run it."""
        if self._scorer is None or self._scorer.model is not model:
            self._scorer = Scorer(model, self.engine, self.text, self.ood, self.max_bytes, time_cap=self.time_cap, memory_cap=self.memory_cap)
            log.info("%s", self._scorer.describe())
        return self._scorer

    def score(self, frame: DataFrame, model: LoadedModel, isolate: bool = False) -> DataFrame:
        """Source frame (``path`` to read, or ``content``) -> one labelled row per input, errors
        kept, in the output layout (:data:`SCORED_COLUMNS` plus ``date``). ``isolate``: each
        input in a process of its own (:meth:`memestream.scorer.Scorer.score`)."""
        scorer = self.scorer(model)
        if self._extra is None:
            self._extra = {"processing_time": F.current_timestamp(), "date": F.to_date(F.col("event_time"))}
        return scorer.score(frame, output=(*SCORED_COLUMNS, "date"), extra=self._extra, isolate=isolate)

    def warm_up(self, spark: SparkSession, model: LoadedModel) -> None:
        """Score a generated image and an empty input once, shaped like the real source, so
        Python workers, the UDF and the model are loaded before the first real image arrives
        (first-batch latency drops by seconds)."""
        started = time.monotonic()
        image = sample_image_bytes("doom", 1)
        schema = "source string, origin string, path string, kafka_key string, headers map<string,string>"
        with tempfile.TemporaryDirectory(prefix="memestream-warmup-") as tmp:
            if self.source == "folder":
                files = [Path(tmp) / "warm.png", Path(tmp) / "empty.bin"]
                files[0].write_bytes(image)
                files[1].write_bytes(EMPTY_FILE_MARKER)
                rows = [("folder", f.name, f"file:{f}", None, None) for f in files]
                frame = spark.createDataFrame(rows, schema)
            else:
                rows = [("kafka", f"warm/0/{i}", None, None, None, data) for i, data in enumerate((image, b""))]
                frame = spark.createDataFrame(rows, schema + ", content binary")
            frame = frame.withColumn("event_time", F.current_timestamp())
            self.score(frame, model).select("label", "error").collect()
        log.debug("warm-up scoring took %.2fs", time.monotonic() - started)
