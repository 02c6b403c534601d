"""OCR, char n-grams, the text model and the stacker (memestream.text): fast, no Spark."""
from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from memestream import text as mt
from memestream.errors import DataError, ModelError


def _meme(words: str, fg: tuple[int, int, int], bg: tuple[int, int, int], y: int = 150) -> np.ndarray:
    """A 300x300 BGR image with ``words`` rendered centred, like a captioned meme."""
    image = np.full((300, 300, 3), bg, np.uint8)
    font, scale, thickness = cv2.FONT_HERSHEY_DUPLEX, 1.0, 2
    (w, _), _ = cv2.getTextSize(words, font, scale, thickness)
    cv2.putText(image, words, ((300 - w) // 2, y), font, scale, fg, thickness, cv2.LINE_AA)
    return image


def _squash(s: str) -> str:
    # PP-OCRv4 often drops the space between words ("DOOMETERNAL"); the n-gram model does not need it.
    return "".join(s.split()).lower()


# ---------------------------------------------------------------------------------------------- OCR


def test_ocr_reads_dark_on_light_and_light_on_dark():
    nook = mt.ocr_text(_meme("NOOK MILES", (0, 0, 0), (255, 255, 255)))
    doom = mt.ocr_text(_meme("DOOM ETERNAL", (255, 255, 255), (40, 30, 30)))
    assert "nookmiles" in _squash(nook), nook
    assert "doometernal" in _squash(doom), doom


def test_ocr_blank_and_noise_images_give_empty_text():
    assert mt.ocr_text(np.full((300, 300, 3), 255, np.uint8)) == ""
    assert mt.ocr_text(np.zeros((300, 300), np.uint8)) == ""  # gray input accepted


def test_ocr_reading_order_lines_top_to_bottom_words_left_to_right():
    image = _meme("TOP LINE", (0, 0, 0), (255, 255, 255), y=60)
    cv2.putText(image, "LEFT", (20, 210), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "RIGHT", (175, 215), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    lines = mt.ocr_text(image).lower().split("\n")
    assert len(lines) == 2, lines
    assert _squash(lines[0]) == "topline"
    assert lines[1].index("left") < lines[1].index("right")


def test_ocr_reads_each_line_at_its_own_width_on_both_engines():
    """One line per recogniser call (``OCR_REC_BATCH``): a short word under a long line is not
    padded to the long line's width; both engines are configured alike and read the same."""
    image = np.full((300, 600, 3), 255, np.uint8)
    cv2.putText(image, "IS IT TIME FOR NOOK MILES", (20, 90), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, "DOOM", (260, 220), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    assert mt.OCR_REC_BATCH == 1 and "rec1" in mt.OCR_VERSION
    assert mt._engine().text_rec.rec_batch_num == mt.OCR_REC_BATCH
    narrow = mt.ocr_text(image)
    assert "nookmiles" in _squash(narrow) and _squash(narrow.split("\n")[-1]) == "doom", narrow
    if mt._wide_engine() is not mt._engine():  # a one-core machine has no second engine
        assert mt._wide_engine().text_rec.rec_batch_num == mt.OCR_REC_BATCH
        assert mt.ocr_text(image, wide=True) == narrow


def test_ocr_accepts_bgra_and_large_images():
    image = _meme("NOOK MILES", (0, 0, 0), (255, 255, 255))
    bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    assert "nookmiles" in _squash(mt.ocr_text(bgra))
    big = cv2.resize(image, (1200, 1200), interpolation=cv2.INTER_CUBIC)  # shrunk to OCR_SIDE first
    assert "nookmiles" in _squash(mt.ocr_text(big))


@pytest.mark.parametrize(
    "bad",
    [None, "an image", np.zeros((300, 300, 3), np.float32), np.zeros((300, 300, 2), np.uint8), np.zeros((0, 5, 3), np.uint8)],
    ids=["none", "str", "float", "two-channels", "empty"],
)
def test_ocr_bad_input_raises_ocr_error_only(bad):
    with pytest.raises(mt.OcrError):
        mt.ocr_text(bad)


def test_ocr_engine_failure_is_ocr_error(monkeypatch):
    class Broken:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(mt, "_ENGINE", Broken())
    with pytest.raises(mt.OcrError, match="onnxruntime exploded"):
        mt.ocr_text(np.full((300, 300, 3), 255, np.uint8))


def test_ocr_engine_created_once_across_threads_and_failure_remembered(monkeypatch):
    import threading
    import time

    calls = []

    def slow_factory():
        calls.append(1)
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(mt, "_ENGINE", None)
    monkeypatch.setattr(mt, "_create_engine", slow_factory)
    got = []
    threads = [threading.Thread(target=lambda: got.append(mt._engine())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 8 and all(g is got[0] for g in got)

    def failing_factory():
        calls.append(1)
        raise mt.OcrError("OCR engine failed to load: no models")

    monkeypatch.setattr(mt, "_ENGINE", None)
    monkeypatch.setattr(mt, "_ENGINE_ERROR", None)
    monkeypatch.setattr(mt, "_create_engine", failing_factory)
    calls.clear()
    for _ in range(3):
        with pytest.raises(mt.OcrError, match="no models"):
            mt.ocr_text(np.full((50, 50, 3), 255, np.uint8))
    assert len(calls) == 1  # not retried for every image


def test_ocr_engine_is_one_per_process_and_quiet(capfd, monkeypatch):
    monkeypatch.setattr(mt, "_ENGINE", None)  # create a fresh engine while output is captured
    mt.ocr_text(np.full((64, 64, 3), 255, np.uint8))
    first = mt._engine()
    assert mt._engine() is first
    mt.ocr_text(_meme("NOOK MILES", (0, 0, 0), (255, 255, 255)))
    out, err = capfd.readouterr()  # file descriptors: also catches ONNX Runtime's C++ logging
    assert out == "" and err == ""
    import logging

    assert all(logging.getLogger(name).getEffectiveLevel() >= logging.WARNING for name in mt._RAPIDOCR_LOGGERS)
    # one ONNX Runtime thread per session (Spark runs one Python worker per core)
    for session in (first.text_det.infer, first.text_rec.session):
        assert session.session.get_session_options().intra_op_num_threads == 1


def _rss_mb() -> float:
    import re

    with open("/proc/self/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def test_ocr_gives_freed_memory_back():
    # Without malloc_trim this loop leaves ~130 MB of ONNX Runtime temporaries in the heap.
    if mt._find_malloc_trim() is None or not Path("/proc/self/status").exists():
        pytest.skip("needs glibc malloc_trim and /proc (Linux)")
    mt.ocr_text(np.full((300, 300, 3), 255, np.uint8))
    before = _rss_mb()
    rng = np.random.default_rng(0)
    words = "nook miles blathers daisy mae turnip doom eternal slayer demon chainsaw rip and tear".split()
    for i in range(12):
        image = np.full((300 + 40 * (i % 3), 300, 3), 255, np.uint8)
        for line in range(9):
            cv2.putText(image, " ".join(rng.choice(words, 3)), (8, 30 + 30 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        assert mt.has_text(mt.ocr_text(image))
    assert _rss_mb() - before < 40  # measured: 3-14 MB with the trim, 65-130 MB without


# ---------------------------------------------------------------------------------------- n-grams


@pytest.mark.parametrize(
    "s",
    ["Nook miles", "DOOM  Eternal\nrip and tear", "a I ox", "Blathers' DIY workbench!", "  spaced   out  ", ""],
)
def test_char_ngrams_match_sklearn_char_wb(s):
    from sklearn.feature_extraction.text import TfidfVectorizer

    sk = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=True).build_analyzer()
    # no digits or compatibility characters here, so normalize() only lowercases, like sklearn
    assert Counter(mt.char_ngrams(s)) == Counter(sk(s))
    sk13 = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=True).build_analyzer()
    assert Counter(mt.char_ngrams(s, 1, 3)) == Counter(sk13(s))


def test_normalize_folds_case_width_and_digits():
    assert mt.normalize("ＮＯＯＫ Miles 2020") == "nook miles 0000"
    assert mt.normalize("ﬁsh") == "fish"
    assert mt.has_text("Nook") and not mt.has_text("") and not mt.has_text(" 中 ") and not mt.has_text("!!")


# ---------------------------------------------------------------------------------------- TextModel

_WORDS = {
    0: ["nook", "miles", "blathers", "daisy", "mae", "turnip", "island", "villager", "diy", "workbench", "bells"],
    1: ["doom", "eternal", "slayer", "demon", "chainsaw", "marauder", "rip", "tear", "bfg", "hell", "imp"],
    2: ["creeper", "diamond", "pickaxe", "nether", "enderman", "redstone", "villager", "block", "craft", "mine"],
}
_FILLER = ["me", "when", "the", "my", "friends", "lol", "this", "is", "fine", "game", "play"]


def _captions(k: int, n_per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for c in range(k):
        for _ in range(n_per_class):
            words = list(rng.choice(_WORDS[c], 2)) + list(rng.choice(_FILLER, 3))
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(c)
    return texts, np.array(labels)


@pytest.mark.parametrize("k", [2, 3])
def test_text_model_separates_held_out_captions_and_matches_sklearn(k):
    train, y_train = _captions(k, 40, seed=1)
    test, y_test = _captions(k, 20, seed=2)
    test = test + ["", "!!"]  # no text: still defined
    model = mt.TextModel.fit(train, y_train, k, C=10.0, min_df=2, seed=0)
    logp = model.decision(test)
    assert logp.shape == (len(test), k)
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)
    assert (logp[: len(y_test)].argmax(axis=1) == y_test).mean() >= 0.95
    vectorizer, lr = model._sklearn
    np.testing.assert_allclose(logp, lr.predict_log_proba(vectorizer.transform(test)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.decision_function(test).reshape(len(test), -1),
                               lr.decision_function(vectorizer.transform(test)).reshape(len(test), -1), rtol=0, atol=1e-9)
    assert model.coef.shape == (1 if k == 2 else k, len(model.vocabulary))


def test_text_model_ignores_rows_without_text_when_fitting():
    train, y = _captions(2, 30, seed=3)
    with_blanks = train + [""] * 20
    y_blanks = np.concatenate([y, np.zeros(20, dtype=int)])
    a = mt.TextModel.fit(train, y, 2, C=5.0)
    b = mt.TextModel.fit(with_blanks, y_blanks, 2, C=5.0)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.intercept, b.intercept)


def test_text_model_rejects_bad_training_data():
    texts, y = _captions(2, 10, seed=4)
    with pytest.raises(DataError, match="class"):
        mt.TextModel.fit(texts, y, 3)  # class 2 has no rows
    with pytest.raises(DataError, match="labels"):
        mt.TextModel.fit(texts, y[:-1], 2)


def test_text_model_save_load_pickle_round_trip(tmp_path):
    texts, y = _captions(3, 20, seed=5)
    model = mt.TextModel.fit(texts, y, 3, C=3.0)
    mt.save(model, tmp_path / "text")
    loaded = mt.load(tmp_path / "text")
    assert isinstance(loaded, mt.TextModel)
    assert loaded.vocabulary == model.vocabulary
    for name in ("idf", "coef", "intercept"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.classes_count, loaded.C, loaded.ngram_range) == (3, 3.0, (2, 5))
    np.testing.assert_array_equal(loaded.decision(texts), model.decision(texts))
    model.decision(["warm the index"])
    clone = pickle.loads(pickle.dumps(model))
    assert "_index" not in clone.__dict__ and "_sklearn" not in clone.__dict__
    np.testing.assert_array_equal(clone.decision(texts), model.decision(texts))


@pytest.mark.parametrize(
    "damage, file",
    [
        (lambda d: (d / "arrays.npz").write_bytes(b"not a zip"), "arrays.npz"),
        (lambda d: (d / "arrays.npz").unlink(), "arrays.npz"),
        (lambda d: (d / "model.json").write_text("{ broken"), "model.json"),
        (lambda d: (d / "model.json").unlink(), "model.json"),
        (lambda d: (d / "vocabulary.json").write_text('["ab", 3]'), "vocabulary.json"),
        (lambda d: (d / "vocabulary.json").write_text('["ab"]'), "arrays.npz"),  # shapes disagree
    ],
    ids=["npz-garbage", "npz-missing", "json-garbage", "json-missing", "vocab-not-strings", "vocab-short"],
)
def test_load_damaged_model_raises_model_error_naming_the_file(tmp_path, damage, file):
    texts, y = _captions(2, 10, seed=6)
    folder = mt.save(mt.TextModel.fit(texts, y, 2), tmp_path / "m")
    damage(folder)
    with pytest.raises(ModelError, match=file) as info:
        mt.load(folder)
    assert "\n" not in str(info.value)


def test_load_missing_folder_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        mt.load(tmp_path / "nowhere")


def test_fit_text_cv_groups_and_out_of_fold_scores():
    texts, y = _captions(2, 30, seed=7)
    texts[0] = ""
    groups = np.arange(len(texts)) // 2  # pairs share a group
    cv = mt.fit_text_cv(texts, y, groups, k_folds=5, Cs=(0.1, 10.0), seed=0)
    assert cv.C in (0.1, 10.0)
    assert cv.oof_log_proba.shape == (len(texts), 2)
    assert not cv.has_text[0] and cv.has_text[1:].all()
    assert cv.log_loss_by_C[cv.C] == min(cv.log_loss_by_C.values())
    assert cv.accuracy_by_C[cv.C] >= 0.9
    with pytest.raises(DataError, match="groups"):
        mt.fit_text_cv(texts, y, np.zeros(len(texts)), k_folds=5)


# ---------------------------------------------------------------------------------------- Stacker


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
    stacker = mt.Stacker.fit(image, text, has, y, C=1.0)
    proba = stacker.predict_proba(image, text, has)
    X = mt.stack_features(image, text, has)
    np.testing.assert_allclose(proba, stacker._sklearn.predict_proba(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.exp(stacker.predict_log_proba(image, text, has)), proba, rtol=0, atol=1e-12)
    acc_stack = (proba.argmax(axis=1) == y)[has].mean()
    acc_image = (image.argmax(axis=1) == y)[has].mean()
    assert acc_stack > acc_image + 0.05  # the text branch helps where there is text


@pytest.mark.parametrize("k", [2, 3])
def test_stacker_without_text_depends_on_image_only(k, tmp_path):
    image, text, has, y = _branch_scores(k, 300, seed=10 + k)
    stacker = mt.Stacker.fit(image, text, has, y)
    none = np.zeros(len(y))
    a = stacker.predict_proba(image, text, none)
    b = stacker.predict_proba(image, np.roll(text, 7, axis=0) * 3.0 - 1.0, none)
    np.testing.assert_array_equal(a, b)
    loaded = mt.load(mt.save(stacker, tmp_path / "stacker"))
    assert isinstance(loaded, mt.Stacker)
    np.testing.assert_array_equal(loaded.predict_proba(image, text, has), stacker.predict_proba(image, text, has))


def test_stacker_rejects_mismatched_inputs():
    image, text, has, y = _branch_scores(2, 50, seed=1)
    with pytest.raises(DataError):
        mt.Stacker.fit(image, text[:10], has, y)
    stacker = mt.Stacker.fit(image, text, has, y)
    three = np.log(np.full((5, 3), 1 / 3))
    with pytest.raises(DataError):
        stacker.predict_proba(three, three, np.ones(5))


def test_wide_engine_reads_the_same_text_and_falls_back_to_one_thread(monkeypatch):
    img = _meme("NOOK MILES", (0, 0, 0), (255, 255, 255))
    assert mt.ocr_text(img, wide=True) == mt.ocr_text(img)
    if (os.cpu_count() or 1) >= 2:
        assert mt._wide_engine() is not mt._engine()

    def failing_factory(threads=1):
        raise mt.OcrError("OCR engine failed to load: no threads")

    monkeypatch.setattr(mt, "_WIDE_ENGINE", None)
    monkeypatch.setattr(mt, "_create_engine", failing_factory)
    assert mt._wide_engine() is mt._engine()  # the one-thread engine, already built
    assert _squash(mt.ocr_text(img, wide=True)) == _squash(mt.ocr_text(img))
    # one core: the one-thread engine, built on demand (the creation lock is not reentrant)
    monkeypatch.setattr(mt.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(mt, "_ENGINE", None)
    monkeypatch.setattr(mt, "_create_engine", lambda threads=1: ("engine", threads))
    assert mt._wide_engine() == ("engine", 1)


def test_scorer_ocrs_small_calls_on_the_wide_engine_only_when_asked(monkeypatch, image_bytes):
    """The stream's tasks hold a few rows only at light load: those use the two-thread engine;
    a spec with ``wide_ocr_rows=0`` (the benchmark's one-core limit) never does."""
    from memestream.classify import ScoringSpec, score_values

    seen = []

    def fake_ocr(image, wide=False):
        seen.append(wide)
        return "nook miles"

    monkeypatch.setattr(mt, "ocr_text", fake_ocr)

    class Branch:
        cascade = 2.0  # every row is OCR'd
        neighbours = None

        def image_view(self, probs, reduced):
            return probs

        def needs_ocr(self, probs, ok, mode):
            return ok.copy()

        def combine(self, probs, texts, has):
            return probs

    class Local:
        def transform(self, x):
            return x

        def head(self, x):
            return np.tile([0.5, 0.5], (len(x), 1))

    payload = image_bytes()
    for rows, wide_rows, want in ((2, 4, True), (6, 4, False), (2, 0, False)):
        seen.clear()
        spec = ScoringSpec("gray32", 10**7, 10**7, 10**8, None, Local(), Branch(), "cascade", False, classes=("a", "b"), wide_ocr_rows=wide_rows)
        score_values(spec, [payload] * rows)
        assert seen == [want] * rows, (rows, wide_rows)
