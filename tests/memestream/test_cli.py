"""memestream.cli: signals become an event a native library cannot swallow."""
from __future__ import annotations

import os
import signal

import pytest

from memestream.cli import stop_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_sets_the_event_instead_of_raising(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with stop_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill() returns to Python code
        assert stop.wait(5), f"{sig.name} did not set the stop event"
    assert signal.getsignal(sig) is before, "the previous handler must come back"


def test_a_second_ctrl_c_raises() -> None:
    with pytest.raises(KeyboardInterrupt):
        with stop_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(5)
            os.kill(os.getpid(), signal.SIGINT)
            stop.wait(5)  # the handler raises here at the latest
