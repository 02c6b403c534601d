"""The stacker and the text branch (memestream.stacking): fast, no Spark."""
from __future__ import annotations

import numpy as np
import pytest

from memestream import ocr
from memestream.errors import DataError
from memestream.stacking import Stacker, stack_features


def _branch_scores(k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    image = rng.normal(0, 1.0, (n, k)) + 1.5 * np.eye(k)[y]
    text = rng.normal(0, 1.0, (n, k)) + 2.5 * np.eye(k)[y]
    to_logp = lambda z: z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    has = rng.random(n) < 0.7
    return to_logp(image), to_logp(text), has, y


@pytest.mark.parametrize("k", [2, 3])
def test_stacker_matches_sklearn_and_uses_text(k):
    image, text, has, y = _branch_scores(k, 400, seed=k)
    stacker = Stacker.fit(image, text, has, y, C=1.0)
    proba = stacker.predict_proba(image, text, has)
    X = stack_features(image, text, has)
    np.testing.assert_allclose(proba, stacker._sklearn.predict_proba(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.exp(stacker.predict_log_proba(image, text, has)), proba, rtol=0, atol=1e-12)
    acc_stack = (proba.argmax(axis=1) == y)[has].mean()
    acc_image = (image.argmax(axis=1) == y)[has].mean()
    assert acc_stack > acc_image + 0.05  # the text branch helps where there is text


@pytest.mark.parametrize("k", [2, 3])
def test_stacker_without_text_depends_on_image_only(k, tmp_path):
    image, text, has, y = _branch_scores(k, 300, seed=10 + k)
    stacker = Stacker.fit(image, text, has, y)
    none = np.zeros(len(y))
    a = stacker.predict_proba(image, text, none)
    b = stacker.predict_proba(image, np.roll(text, 7, axis=0) * 3.0 - 1.0, none)
    np.testing.assert_array_equal(a, b)
    loaded = Stacker.load(stacker.save(tmp_path / "stacker"))
    assert isinstance(loaded, Stacker)
    np.testing.assert_array_equal(loaded.predict_proba(image, text, has), stacker.predict_proba(image, text, has))


def test_stacker_rejects_mismatched_inputs():
    image, text, has, y = _branch_scores(2, 50, seed=1)
    with pytest.raises(DataError):
        Stacker.fit(image, text[:10], has, y)
    stacker = Stacker.fit(image, text, has, y)
    three = np.log(np.full((5, 3), 1 / 3))
    with pytest.raises(DataError):
        stacker.predict_proba(three, three, np.ones(5))


class _OcrEveryRow:
    """A text branch that OCRs every decodable row and keeps the image branch's probabilities."""

    cascade = 2.0
    neighbours = None

    def image_view(self, probs, reduced):
        return probs

    def needs_ocr(self, probs, ok, mode):
        return ok.copy()

    def combine(self, probs, texts, has):
        return probs


class _Local:
    """A model's numpy stages: the features unchanged, then ``head``."""

    def __init__(self, head):
        self.head = head

    def transform(self, x):
        return x


def _ocr_every_row_spec(head, wide_ocr_rows: int):
    """A two-class gray32 spec whose text branch OCRs every row (:class:`_OcrEveryRow`)."""
    from memestream.classify import ScoringSpec

    return ScoringSpec("gray32", 10**7, 10**7, 10**8, None, _Local(head), _OcrEveryRow(), "cascade", False, classes=("a", "b"),
                       wide_ocr_rows=wide_ocr_rows)


def test_scorer_ocrs_small_calls_on_the_wide_engine_only_when_asked(monkeypatch, image_bytes):
    """The stream's tasks hold a few rows only at light load: those use the two-thread engine;
    a spec with ``wide_ocr_rows=0`` (the benchmark's one-core limit) never does."""
    from memestream.classify import score_values

    seen = []

    def fake_ocr(image, wide=False):
        seen.append(wide)
        return "nook miles"

    monkeypatch.setattr(ocr, "ocr_text", fake_ocr)

    payload = image_bytes()
    for rows, wide_rows, want in ((2, 4, True), (6, 4, False), (2, 0, False)):
        seen.clear()
        spec = _ocr_every_row_spec(lambda x: np.tile([0.5, 0.5], (len(x), 1)), wide_rows)
        score_values(spec, [payload] * rows)
        assert seen == [want] * rows, (rows, wide_rows)


def test_the_udf_scores_a_large_arrow_batch_in_chunks_as_one_batch(monkeypatch, image_bytes):
    """A task's Arrow batch (up to 256 rows) is decoded and scored SCORE_CHUNK inputs at a time,
    so a worker holds one chunk's decoded images; the rows come back in order, and the wide OCR
    engine is still chosen by the batch's size, not by a short last chunk."""
    import pyarrow as pa

    from memestream import classify
    from memestream.classify import score_arrow

    seen, chunks = [], []
    real = classify.featurize_inputs

    def counting(values, *args, **kwargs):
        chunks.append(len(values))
        return real(values, *args, **kwargs)

    monkeypatch.setattr(ocr, "ocr_text", lambda image, wide=False: seen.append(wide) or "nook")
    monkeypatch.setattr(classify, "featurize_inputs", counting)
    monkeypatch.setattr(classify, "SCORE_CHUNK", 4)

    values = [image_bytes("doom", i) for i in range(6)] + [b"not an image"] + [image_bytes("cats", i) for i in range(3)]
    spec = _ocr_every_row_spec(lambda x: np.column_stack([x[:, 0], 1 - x[:, 0]]), 4)  # a row's own pixels: order shows
    batched = score_arrow(spec)(pa.array(values, pa.binary())).to_pylist()
    assert chunks == [4, 4, 2] and seen == [False] * 9  # nine decodable inputs, none on the wide engine
    one_by_one = [score_arrow(spec)(pa.array([v], pa.binary())).to_pylist()[0] for v in values]
    assert len(batched) == 10 and batched[6]["error_code"] is not None
    for got, want in zip(batched, one_by_one):
        assert np.allclose(got.pop("probabilities"), want.pop("probabilities")) and got == want
