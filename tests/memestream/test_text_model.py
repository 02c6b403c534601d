"""Char n-grams and the text model (memestream.text_model), and its saved format: fast, no Spark."""
from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest

from memestream import text_model as mt
from memestream.errors import DataError, ModelError


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
    model.save(tmp_path / "text")
    loaded = mt.TextModel.load(tmp_path / "text")
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
    folder = mt.TextModel.fit(texts, y, 2).save(tmp_path / "m")
    damage(folder)
    with pytest.raises(ModelError, match=file) as info:
        mt.TextModel.load(folder)
    assert "\n" not in str(info.value)


def test_load_missing_folder_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        mt.TextModel.load(tmp_path / "nowhere")


def test_saved_format_memestream_text_1_is_unchanged(tmp_path):
    """Folders written by earlier versions (the literal files below, as ``memestream.text.save``
    wrote them) load, and saving writes the same files again, byte for byte."""
    from memestream.stacking import LOGP_FLOOR, Stacker

    tm_meta = ('{\n  "format": "memestream-text/1",\n  "kind": "TextModel",\n  "classes_count": 2,\n  "C": 3.0,\n'
               '  "ngram_range": [\n    2,\n    5\n  ],\n  "normalization": "nfkc-lower-digits0-v1"\n}\n')
    st_meta = ('{\n  "format": "memestream-text/1",\n  "kind": "Stacker",\n  "classes_count": 2,\n  "C": 1.0,\n'
               '  "logp_floor": -20.0\n}\n')
    old_tm, old_st = tmp_path / "old" / "text_model", tmp_path / "old" / "stacker"
    old_tm.mkdir(parents=True), old_st.mkdir(parents=True)
    (old_tm / "model.json").write_text(tm_meta)
    (old_tm / "vocabulary.json").write_text('[" n", "no", "ok", " é"]')
    tm_arrays = {"idf": np.array([1.0, 1.5, 2.0, 1.2]), "coef": np.array([[0.5, -1.0, 2.0, 0.1]]), "intercept": np.array([0.25])}
    with open(old_tm / "arrays.npz", "wb") as fh:
        np.savez(fh, **tm_arrays)
    (old_st / "model.json").write_text(st_meta)
    st_arrays = {"coef": np.array([[1.0, -1.0, 2.0, -2.0, 0.5]]), "intercept": np.array([-0.1])}
    with open(old_st / "arrays.npz", "wb") as fh:
        np.savez(fh, **st_arrays)

    model, stacker = mt.TextModel.load(old_tm), Stacker.load(old_st)
    assert model.vocabulary == (" n", "no", "ok", " é") and (model.classes_count, model.C, model.ngram_range) == (2, 3.0, (2, 5))
    np.testing.assert_array_equal(model.coef, tm_arrays["coef"])
    assert (stacker.classes_count, stacker.C, LOGP_FLOOR) == (2, 1.0, -20.0)
    np.testing.assert_array_equal(stacker.coef, st_arrays["coef"])
    model.save(tmp_path / "new" / "text_model")
    stacker.save(tmp_path / "new" / "stacker")
    for rel in ("text_model/model.json", "text_model/vocabulary.json", "text_model/arrays.npz", "stacker/model.json", "stacker/arrays.npz"):
        assert (tmp_path / "new" / rel).read_bytes() == (tmp_path / "old" / rel).read_bytes(), rel
    with pytest.raises(ModelError, match="expected a 'TextModel'"):
        mt.TextModel.load(old_st)
