"""One micro-batch: score once, split into the output tables, commit exactly once, move the inputs.

:class:`BatchProcessor` is the ``foreachBatch`` target. It scores the rows once (one Spark
job, one decode per image), collects the small labelled result as Arrow, builds the three
tables (:func:`build_tables`) and writes them through :class:`streaming.sinks.OutputTables`,
idempotently per batch id; :class:`LiveSummary` prints one line per batch.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from memestream.decode import READ_ERROR
from memestream.inputs import EMPTY_FILE_MARKER, local_path
from streaming.config import StreamConfig
from memestream.novelty import OOD_CODE, UNKNOWN_LABEL
from streaming.counts import WindowSpec, late_mask, window_deltas
from streaming.models import ModelHolder
from streaming.schema import CLASS_COUNTS, PREDICTIONS, QUARANTINE, column_names
from streaming.scoring import StreamScorer
from streaming.sinks import BatchMarker, OutputTables

log = logging.getLogger(__name__)

#: ``on_stage(stage, batch_id)`` is called at these points of every batch: ``start`` (model
#: chosen, nothing scored yet), ``files`` (data files in place, no commit marker yet) and
#: ``committed`` (marker written, inputs not moved yet). The moments a crash is worst: for
#: instrumentation and fault injection (the exactly-once tests kill the process at each).
STAGES = ("start", "files", "committed")
StageHook = Callable[[str, int], None]


@dataclass
class BatchResult:
    """What one committed batch did (for the live summary)."""

    batch_id: int
    rows: int
    errors: int
    late: int
    seconds: float
    labels: dict[str, int]
    model_version: str


def build_tables(
    scored: pa.Table, batch_id: int, spec: WindowSpec, previous: BatchMarker | None, quarantine_paths: list[str | None]
) -> tuple[dict[str, pa.Table], BatchMarker]:
    """Split one collected batch into the three tables and its commit marker."""
    n = scored.num_rows
    event_us = pc.cast(scored.column("event_time"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    prev_max_ms = previous.max_event_time_ms if previous else None
    watermark_us = (prev_max_ms * 1000 - spec.watermark_s * 1_000_000) if prev_max_ms is not None else None
    late = late_mask(event_us, watermark_us)
    batch_col = pa.array(np.full(n, batch_id, dtype=np.int64))
    preds = scored.drop_columns(["payload"]).append_column("late", pa.array(late)).append_column("batch_id", batch_col)
    preds = preds.select([*column_names(PREDICTIONS), "date"])

    errors = pc.is_valid(scored.column("error"))
    quarantine = scored.append_column("quarantine_path", pa.array(quarantine_paths, type=pa.string()))
    quarantine = quarantine.append_column("batch_id", batch_col).filter(errors)
    quarantine = quarantine.select([*column_names(QUARANTINE), "date"])

    # a rejected out-of-distribution image has no class: it counts as "unknown", never as a class
    codes = scored.column("error_code").to_pylist()
    labels = [UNKNOWN_LABEL if c == OOD_CODE else lbl for lbl, c in zip(scored.column("label").to_pylist(), codes)]
    deltas = window_deltas(labels, event_us, late, spec)
    deltas = deltas.append_column("batch_id", pa.array(np.full(deltas.num_rows, batch_id, dtype=np.int64)))
    deltas = deltas.append_column("date", pc.strftime(deltas.column("window_start"), format="%Y-%m-%d"))

    totals: dict[str, int] = {}
    for lbl in labels:
        if lbl is not None:
            totals[lbl] = totals.get(lbl, 0) + 1
    this_max = int(event_us.max() // 1000) if n else None
    max_ms = max(v for v in (prev_max_ms, this_max) if v is not None) if (prev_max_ms or this_max) is not None else None
    marker = BatchMarker(
        batch_id=batch_id,
        rows=n,
        errors=int(pc.sum(errors.cast(pa.int64())).as_py() or 0),
        late=int(late.sum()),
        max_event_time_ms=max_ms,
        label_totals=totals,
    )
    return {PREDICTIONS: preds, QUARANTINE: quarantine, CLASS_COUNTS: deltas}, marker


class LiveSummary:
    """One line per batch in the terminal: throughput, batch latency, running counts."""

    def __init__(self, totals: dict[str, int], quiet: bool = False, stream=None) -> None:
        self.totals = dict(totals)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.batches = 0
        self.rows = 0
        self.errors = 0

    def batch_done(self, r: BatchResult) -> None:
        self.batches += 1
        self.rows += r.rows
        self.errors += r.errors
        for k, v in r.labels.items():
            self.totals[k] = self.totals.get(k, 0) + v
        if self.quiet:
            return
        rate = r.rows / r.seconds if r.seconds > 0 else 0.0
        counts = "  ".join(f"{k} {v}" for k, v in sorted(self.totals.items())) or "-"
        print(
            f"[batch {r.batch_id}] {r.rows} images ({r.errors} quarantined{', %d late' % r.late if r.late else ''}) "
            f"in {r.seconds:.2f}s = {rate:.1f} img/s | totals: {counts} | model {r.model_version}",
            file=self.stream,
            flush=True,
        )


class BatchProcessor:
    """``foreachBatch`` target: score once, write all tables exactly once per batch id."""

    def __init__(
        self,
        cfg: StreamConfig,
        tables: OutputTables,
        models: ModelHolder,
        summary: LiveSummary,
        on_stage: StageHook | None = None,
    ) -> None:
        self.cfg = cfg
        self.tables = tables
        self.models = models
        #: the scoring step (one Scorer per model version, its projection kept across batches)
        self.scoring = StreamScorer.from_config(cfg)
        self.summary = summary
        self.on_stage = on_stage
        self._last: BatchMarker | None = None
        #: ``time.monotonic()`` when the last batch started or ended, and whether one is running:
        #: how long the Python workers have been idle (``streaming.query.WorkerKeeper``)
        self.last_active = time.monotonic()
        self.running = False

    def _stage(self, stage: str, batch_id: int) -> None:
        if self.on_stage is not None:
            self.on_stage(stage, batch_id)

    def _previous_marker(self, batch_id: int) -> BatchMarker | None:
        """The marker before ``batch_id`` (watermark state): from memory in steady state,
        from disk after a restart or replay, so a long run does not list every marker."""
        if self._last is not None and self._last.batch_id == batch_id - 1:
            return self._last
        return self.tables.last_marker_before(batch_id)

    def _quarantine_targets(self, scored: pa.Table, batch_id: int) -> list[str | None]:
        """Where each bad folder input goes (decided before the commit, moved after it)."""
        qdir = self.cfg.quarantine_dir
        out: list[str | None] = []
        for err, path, origin in zip(
            scored.column("error").to_pylist(), scored.column("path").to_pylist(), scored.column("origin").to_pylist()
        ):
            bad_file = err is not None and path is not None and qdir is not None and not err.startswith(READ_ERROR)
            out.append(str(qdir / f"b{batch_id:06d}-{origin}") if bad_file else None)  # type: ignore[operator]
        return out

    def _finish_inputs(self, paths: list[str | None], marker: BatchMarker) -> None:
        """After a batch is committed: bad inputs to quarantine, the rest archived/deleted/kept."""
        if self.cfg.source != "folder":
            return
        for uri in paths:
            if uri is None:
                continue
            src = Path(local_path(uri))
            try:
                qpath = marker.quarantine_moves.get(uri)
                if qpath:
                    dest = Path(qpath)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if src.exists() and src.read_bytes()[: len(EMPTY_FILE_MARKER) + 1] == EMPTY_FILE_MARKER:
                        src.write_bytes(b"")  # restore the original (empty) content
                    os.replace(src, dest)
                    continue
                if self.cfg.processed == "delete":
                    src.unlink()
                elif self.cfg.processed == "archive":
                    assert self.cfg.archive is not None
                    self.cfg.archive.mkdir(parents=True, exist_ok=True)
                    os.replace(src, self.cfg.archive / src.name)
            except FileNotFoundError:
                pass  # handled by an earlier attempt of this batch
            except OSError as exc:
                log.warning("could not move processed input %s: %s", src, exc)

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        self.running, self.last_active = True, time.monotonic()
        try:
            self._process(batch_df, batch_id)
        finally:
            self.running, self.last_active = False, time.monotonic()

    def _process(self, batch_df: DataFrame, batch_id: int) -> None:
        if self.tables.is_committed(batch_id):
            log.info("batch %d was committed before a restart; skipping its replay", batch_id)
            if self.cfg.source == "folder":
                if not self.tables.marker_path(batch_id).exists():  # pruned: not the newest, so never replayed
                    log.warning("batch %d: its marker was pruned; its inputs stay where they are", batch_id)
                    return
                marker = self.tables.read_marker(batch_id)
                self._finish_inputs([r[0] for r in batch_df.select("path").collect()], marker)
            return
        start = time.monotonic()
        model = self.models.refresh()
        self._stage("start", batch_id)
        scored_df = self.scoring.score(batch_df, model)
        planned = time.monotonic()
        scored = scored_df.toArrow()
        scored_at = time.monotonic()
        if scored.num_rows == 0:
            return
        qpaths = self._quarantine_targets(scored, batch_id)
        previous = self._previous_marker(batch_id)
        tables, marker = build_tables(scored, batch_id, self.cfg.window, previous, qpaths)
        marker.model_version = model.version
        marker.quarantine_moves = {p: q for p, q in zip(scored.column("path").to_pylist(), qpaths) if p and q}
        for row in scored.filter(pc.is_valid(scored.column("error"))).select(["origin", "error"]).to_pylist():
            log.warning("quarantined %s: %s", row["origin"], row["error"])
        built = time.monotonic()
        self.tables.commit_batch(batch_id, tables, marker, after_files=lambda: self._stage("files", batch_id))
        self._last = marker
        committed = time.monotonic()
        self._stage("committed", batch_id)
        self._finish_inputs(scored.column("path").to_pylist(), marker)
        log.debug("batch %d: %d rows; plan %.3fs, score %.3fs, tables %.3fs, commit %.3fs, inputs %.3fs", batch_id,
                  scored.num_rows, planned - start, scored_at - planned, built - scored_at, committed - built,
                  time.monotonic() - committed)
        self.summary.batch_done(
            BatchResult(batch_id, marker.rows, marker.errors, marker.late, time.monotonic() - start, marker.label_totals, model.version)
        )
