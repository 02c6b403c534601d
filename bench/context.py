"""Benchmark configuration and the per-run context every scenario receives."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LabelledImages, augmented_dataset, base_dataset, work_dir
from bench.model import fit_in_process
from memestream.testing import CommandFailed, run_meme_train
from memestream.errors import ModelError
from memestream.features import DEFAULT_FEATURE_SET
from memestream.spark import build_spark

log = logging.getLogger(__name__)

SCENARIOS = ("limit", "notebook", "train", "features", "stream-folder", "stream-kafka", "scale", "query")
#: Run only when named in ``--only`` (minutes to hours at full size), after the default ones.
OPTIONAL_SCENARIOS = ("scale-out", "longrun")


@dataclass(frozen=True)
class BenchConfig:
    only: tuple[str, ...] = SCENARIOS
    quick: bool = False
    data: str | None = None
    work: str | None = None
    results_dir: str = "bench/results"
    model: str | None = None
    feature_set: str | None = None  # None: memestream.features.DEFAULT_FEATURE_SET
    fit_in_bench: bool = False
    master: str = "local[*]"
    driver_memory: str = "4g"
    scale_sizes: tuple[int, ...] = (1000, 10000, 50000)
    train_multiplier: int = 10
    stream_rate: float = 5.0
    stream_seconds: float = 45.0
    stream_saturation_images: int = 3000
    longrun_images: int = 200_000
    limit_images: int = 0  # 0 = every base image
    profile: bool = False
    train_args: tuple[str, ...] = ()
    stream_args: tuple[str, ...] = ()


@dataclass
class BenchContext:
    """Lazily built shared state: one SparkSession, the data sets, a trained model."""

    config: BenchConfig
    spark: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    _own_spark: bool = False
    _base: LabelledImages | None = None
    _model_dir: Path | None = None
    _model_error: ModelError | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    @property
    def work(self) -> Path:
        return work_dir(self.config.work)

    @property
    def tmp(self) -> Path:
        """A scratch folder removed at the end of the run (stream outputs, checkpoints)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="memestream-bench-run-")
        return Path(self._tmp.name)

    def base(self) -> LabelledImages:
        if self._base is None:
            base = base_dataset(self.config.data, self.work, generated_per_class=40 if self.config.quick else 120)
            if self.config.quick and len(base) > 200:
                base = augmented_dataset(base, 200, self.work)
            self._base = base
            log.info("base data set: %d images in %s (%s)", len(base), base.root, ", ".join(base.classes))
        return self._base

    @property
    def feature_set(self) -> str:
        return self.config.feature_set or DEFAULT_FEATURE_SET

    def cpu_count(self) -> int:
        """Cores Spark uses: ``local[N]`` -> N, otherwise the machine's core count."""
        m = re.fullmatch(r"local\[(\d+)\]", self.config.master)
        return int(m.group(1)) if m else (os.cpu_count() or 1)

    def get_spark(self):
        if self.spark is None:
            self.spark = build_spark("memestream-bench", master=self.config.master, driver_memory=self.config.driver_memory)
            self._own_spark = True
        return self.spark

    def model_dir(self) -> Path:
        """A model store trained on the base set: ``--model``, or meme-train (``--fit-in-bench``:
        fitted here instead, without meme-train). A failed meme-train is an error of every
        scenario that needs the model, never silently replaced by another model."""
        if self._model_dir is not None:
            return self._model_dir
        if self._model_error is not None:
            raise self._model_error
        if self.config.model:
            self._model_dir = Path(self.config.model)
            return self._model_dir
        out = self.tmp / "model"
        if self.config.fit_in_bench:
            self._model_dir = fit_in_process(self.get_spark(), self.base(), out, self.feature_set)
            return self._model_dir
        try:
            run_meme_train(self.base().root, out, ["--models", "logreg", "--no-plots", *self.config.train_args])
        except CommandFailed as exc:
            last = next((line.strip() for line in reversed(exc.tail.splitlines()) if line.strip()), "no message")
            self._model_error = ModelError(f"meme-train could not train the benchmark's model on {self.base().root} "
                                           f"(exit {exc.returncode}: {last}); fix that, or pass --model DIR or --fit-in-bench")
            raise self._model_error from None
        self._model_dir = out
        return out

    def close(self) -> None:
        if self._own_spark and self.spark is not None:
            self.spark.stop()
            self.spark = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
