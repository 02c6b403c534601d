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


@pytest.mark.parametrize("text, value", [("4g", 4 << 30), ("512m", 512 << 20), ("1.5GiB", 3 << 29), ("2048", 2048), ("0", 0)])
def test_byte_size_reads_units(text: str, value: int) -> None:
    from memestream.cli import byte_size

    assert byte_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1g", "4x"])
def test_byte_size_refuses_what_is_not_a_size(text: str) -> None:
    import argparse

    from memestream.cli import byte_size

    with pytest.raises(argparse.ArgumentTypeError, match="expected a size"):
        byte_size(text)
