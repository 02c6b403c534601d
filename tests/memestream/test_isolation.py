"""The poison-pill defence's pieces, with real processes: the time cap ends a process, the
sandbox tells crashes from hangs and goes on with the next input, and scoring a batch
isolated gives the rows the normal path gives, plus coded rows for the poison."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from memestream.isolation import (
    DECODER_CRASHED, DECODER_TIMEOUT, Sandbox, SandboxError, SandboxWork, failure_line, time_cap, worker_died,
)
from memestream import testing as poison


class Echo(SandboxWork):
    """Length of the bytes; the poison markers crash or hang it via the decoder hook's logic."""

    def __call__(self, value: bytes) -> int:
        poison.poison_hook(value)
        if value == b"raise":
            raise ValueError("a bug, not the input")
        return len(value)


def test_time_cap_ends_the_process_even_inside_a_sleep():
    code = textwrap.dedent("""
        import time
        from memestream.isolation import time_cap
        with time_cap(0.3):
            time.sleep(30)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGALRM


def test_time_cap_is_disarmed_after_the_block():
    code = textwrap.dedent("""
        import time
        from memestream.isolation import time_cap
        with time_cap(0.3):
            pass
        time.sleep(0.6)
        print("alive")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "alive"


def test_no_cap_is_a_no_op():
    """None leaves the process's timer and SIGALRM handler alone (pytest-timeout uses them here)."""
    before = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)[0]
    with time_cap(None):
        inside = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)[0]
    assert inside[0] == before[0] and abs(inside[1] - before[1]) < 5


def test_sandbox_tells_crashes_from_hangs_and_goes_on():
    values = [b"ab", poison.POISON_ABORT, b"abc", poison.POISON_SEGFAULT, poison.POISON_HANG + b"x", b"abcd"]
    with Sandbox(Echo(), cap=2.0) as box:
        outcomes = [box.run(v) for v in values]
        starts = box.starts
    assert [o.result for o in outcomes] == [2, None, 3, None, None, 4]
    assert [o.code for o in outcomes] == [None, DECODER_CRASHED, None, DECODER_CRASHED, DECODER_TIMEOUT, None]
    assert "SIGABRT" in outcomes[1].detail and "SIGSEGV" in outcomes[3].detail
    assert "2s cap" in outcomes[4].detail
    assert starts == 4  # the first child, and a new one after each of the three poison inputs


def test_an_exception_that_is_not_the_inputs_fault_is_raised():
    with Sandbox(Echo(), cap=5.0) as box, pytest.raises(SandboxError, match="a bug, not the input"):
        box.run(b"raise")


def test_isolated_scoring_matches_the_normal_path_and_codes_the_poison(spark, trained_model_dir, image_bytes):
    """score_isolated (each input in a child) against score_values (in process) on the same
    inputs: identical rows for the good and the merely bad, coded rows for the poison."""
    from memestream.classify import SCORE_ARROW_TYPE, score_isolated, score_values, scored_arrow
    from memestream.modelstore import load_model
    from memestream.scorer import Scorer

    model = load_model(trained_model_dir)
    spec = Scorer(model, time_cap=3.0).spec(from_path=False)
    good = [image_bytes("doom", 1), b"not an image", image_bytes("cats", 2)]
    values = [good[0], poison.POISON_ABORT, good[1], poison.POISON_HANG, good[2]]
    isolated = score_isolated(spec, values).to_pylist()
    normal = scored_arrow(score_values(spec, good)).to_pylist()
    for got, want in zip([isolated[i] for i in (0, 2, 4)], normal):
        assert np.allclose(got.pop("probabilities"), want.pop("probabilities"), atol=1e-9)  # one row vs a batch: last bits
        assert got.pop("novelty") == pytest.approx(want.pop("novelty"), abs=1e-6)
        assert got == want
    assert isolated[1]["error_code"] == DECODER_CRASHED and isolated[3]["error_code"] == DECODER_TIMEOUT
    for row, data in ((isolated[1], poison.POISON_ABORT), (isolated[3], poison.POISON_HANG)):
        assert row["payload"] == data and row["size_bytes"] == len(data) and row["prediction"] == -1
        assert row["error"].startswith(row["error_code"] + ": ")
        assert np.allclose(row["probabilities"], 0.0) and len(row["probabilities"]) == len(model.classes)
    # one Arrow type for the UDF's rows, whichever way they were made
    assert scored_arrow(score_values(spec, good)).type == SCORE_ARROW_TYPE == score_isolated(spec, []).type


def test_an_image_too_big_for_the_memory_cap_gets_a_coded_error(tmp_path):
    """Under an address-space cap a little above what the process maps, a 36-megapixel image
    (108 MB decoded) fails alone with out_of_memory; a small one still decodes."""
    import cv2

    big = tmp_path / "big.png"
    big.write_bytes(cv2.imencode(".png", np.zeros((6000, 6000, 3), np.uint8))[1].tobytes())
    small = tmp_path / "small.png"
    small.write_bytes(cv2.imencode(".png", np.full((64, 64, 3), 127, np.uint8))[1].tobytes())
    code = textwrap.dedent(f"""
        from memestream.features import featurize_inputs, get_feature_set
        from memestream.isolation import limit_memory
        fs = get_feature_set("gray32")
        featurize_inputs([{str(small)!r}], fs, from_path=True)  # everything loaded before the cap
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
        limit_memory(vm + (60 << 20))
        out = featurize_inputs([{str(big)!r}, {str(small)!r}], fs, from_path=True)
        print(out.codes[0], out.codes[1], out.errors[0])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second, message = proc.stdout.split(" ", 2)
    assert (first, second) == ("out_of_memory", "None"), proc.stdout
    assert "--worker-memory" in message


def test_only_a_dead_worker_is_isolated():
    assert worker_died(RuntimeError("Job aborted: ... org.apache.spark.SparkException: Python worker exited unexpectedly (crashed)"))
    assert worker_died(RuntimeError("Lost task 0.3: ExecutorLostFailure (executor 1 exited caused by one of the running tasks)"))
    assert not worker_died(RuntimeError("PythonException: ModelError: the model asset is missing"))
    assert not worker_died(RuntimeError("Job 12 cancelled because SparkContext was shut down"))
    crash = RuntimeError("An error occurred while calling o588.collectToPython.\n: org.apache.spark.SparkException: Job aborted: "
                         "Lost task 1.0: org.apache.spark.SparkException: Python worker exited unexpectedly (crashed). Consider setting x")
    assert failure_line(crash) == "Python worker exited unexpectedly (crashed)"
