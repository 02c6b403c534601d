"""``meme-stream`` that SIGKILLs itself at one stage of one batch: the crash the exactly-once tests inject.

    python -m tests.streaming.crash_stream STAGE:BATCH [meme-stream flags...]

STAGE is one of :data:`streaming.batch.STAGES`. The kill is an ``on_stage`` hook handed to
``run_stream``; production code has no test switch, this wrapper supplies the hook.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys

from streaming import cli, query
from streaming.batch import STAGES

log = logging.getLogger(__name__)


def kill_at(stage: str, batch_id: int):
    """An ``on_stage`` hook that SIGKILLs this process at ``stage`` of ``batch_id``."""
    if stage not in STAGES:
        raise SystemExit(f"crash_stream: stage must be one of {', '.join(STAGES)}, found {stage!r}")

    def hook(at: str, batch: int) -> None:
        if (at, batch) == (stage, batch_id):
            log.warning("crash_stream: SIGKILL at %s of batch %d", at, batch)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(argv: list[str]) -> int:
    stage, _, batch = argv[0].partition(":")
    query.run_stream = functools.partial(query.run_stream, on_stage=kill_at(stage, int(batch)))
    return cli.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
