"""A progress bar for long Spark phases, fed by the driver's status tracker.

Spark's own console progress bar is off (it interleaves with our logs); this one polls
``statusTracker()`` from a daemon thread and shows completed/total tasks of the stages
that ran during the current phase, with a phase line such as "featurizing 1275 images".
"""
from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)


class SparkProgress:
    """Context manager: ``with SparkProgress(spark, "fitting logreg"): ...``."""

    def __init__(self, spark, phase: str, enabled: bool = True, interval: float = 0.3) -> None:
        self.sc = spark.sparkContext
        self.phase = phase
        # a bar redrawn into a log file or pipe is noise: only on a terminal (phase lines always)
        self.enabled = enabled and sys.stderr is not None and sys.stderr.isatty()
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[int, tuple[int, int]] = {}
        self._bar = None

    def _poll(self) -> None:
        tracker = self.sc.statusTracker()
        for sid in tracker.getActiveStageIds():
            info = tracker.getStageInfo(sid)
            if info is not None:
                self._seen[sid] = (info.numCompletedTasks, info.numTasks)
        # stages that finished between polls: count them complete
        for sid, (done, total) in list(self._seen.items()):
            if sid not in tracker.getActiveStageIds():
                self._seen[sid] = (total, total)
        done = sum(d for d, _ in self._seen.values())
        total = sum(t for _, t in self._seen.values())
        if self._bar is not None and total:
            self._bar.total = total
            self._bar.n = done
            self._bar.set_postfix_str(f"{len(self._seen)} stages", refresh=False)
            self._bar.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - a display problem must never fail training
                log.debug("progress poll failed", exc_info=True)
                return

    def __enter__(self) -> "SparkProgress":
        log.info("%s", self.phase)
        if self.enabled:
            import shutil

            from tqdm import tqdm

            size = shutil.get_terminal_size((100, 20))  # a pty without a size reports 0 x 0, which hides tqdm
            self._bar = tqdm(
                total=0, desc=self.phase, unit="task", file=sys.stderr, leave=False,
                ncols=min(size.columns or 100, 120), nrows=size.lines or 20,
            )
            self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._bar.close()


@contextmanager
def phase(spark, text: str, enabled: bool = True) -> Iterator[None]:
    """Shorthand for ``with SparkProgress(...)`` that yields nothing."""
    with SparkProgress(spark, text, enabled):
        yield
