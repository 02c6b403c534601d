"""Feature sets: fixed length, finite, pure functions of the image; featurize never raises."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from memestream.decode import decode
from memestream.errors import ConfigError
from memestream.features import (
    DEFAULT_FEATURE_SET,
    FEATURE_SETS,
    featurize_batch,
    featurize_one,
    get_feature_set,
)
from memestream.sample import make_image

ALL_SETS = sorted(FEATURE_SETS)


def test_default_set_is_registered_and_unknown_names_are_config_errors():
    assert DEFAULT_FEATURE_SET in FEATURE_SETS
    with pytest.raises(ConfigError, match="unknown feature set 'nope'.*gray32"):
        get_feature_set("nope")


@pytest.mark.parametrize("name", ALL_SETS)
def test_features_have_the_declared_length_and_are_finite(name, image_bytes):
    fs = get_feature_set(name)
    for fmt, seed in (("jpeg", 0), ("png", 1)):
        vec, err = featurize_one(image_bytes("animal_crossing", seed, fmt), fs)
        assert err is None
        assert vec.dtype == np.float32 and vec.shape == (fs.dim,)
        assert np.all(np.isfinite(vec)) and np.any(vec != 0)


@pytest.mark.parametrize("name", ALL_SETS)
def test_features_are_a_pure_function_of_the_image(name, image_bytes):
    """Same bytes -> same vector, whatever was featurized before (no fitted or hidden state)."""
    fs = get_feature_set(name)
    data = image_bytes("doom", 3, "jpeg")
    first, _ = featurize_one(data, fs)
    featurize_batch([image_bytes("cats", s) for s in range(3)], fs)
    again, _ = featurize_one(data, fs)
    np.testing.assert_array_equal(first, again)
    other, _ = featurize_one(image_bytes("animal_crossing", 3, "jpeg"), fs)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", ALL_SETS)
def test_odd_shapes_do_not_break_extractors(name):
    """Tiny, thin, flat and greyscale images still give finite vectors of the right length."""
    fs = get_feature_set(name)
    shapes = [np.zeros((1, 1, 3), np.uint8), np.full((3, 900, 3), 255, np.uint8), np.full((500, 7, 3), 128, np.uint8)]
    for img in shapes + [np.dstack([make_image("cats", np.random.default_rng(1))[..., 0]] * 3)]:
        data = cv2.imencode(".png", img)[1].tobytes()
        vec, err = featurize_one(data, fs)
        assert err is None, err
        assert vec.shape == (fs.dim,) and np.all(np.isfinite(vec))


def test_gray32_is_the_notebooks_flattened_32x32_grayscale(image_bytes):
    data = image_bytes("doom", 4, "png")
    vec, _ = featurize_one(data, get_feature_set("gray32"))
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    expected = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
    np.testing.assert_allclose(vec, expected, atol=1e-6)


@pytest.mark.parametrize("name", ALL_SETS)
def test_reduced_jpeg_decode_gives_nearly_the_full_decode_features(name):
    """A 1600x1200 JPEG decodes at reduced DCT scale; its features stay close to a full decode's."""
    fs = get_feature_set(name)
    big = cv2.resize(make_image("animal_crossing", np.random.default_rng(2)), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", big)[1].tobytes()
    reduced_img, _ = decode(data, color=fs.color, min_side=fs.min_side)
    full_img, _ = decode(data, color=fs.color)
    assert reduced_img.shape[0] <= full_img.shape[0] // 2  # the fast path was taken (1/2 to 1/8 scale)
    reduced, _ = featurize_one(data, fs)
    full = fs.extract_images([full_img])[0]
    assert np.linalg.norm(reduced - full) / np.linalg.norm(full) < 0.1
    assert np.corrcoef(reduced, full)[0, 1] > 0.99


def test_featurize_never_raises_and_reports_each_bad_input(bad_payloads, image_bytes, monkeypatch):
    fs = get_feature_set(DEFAULT_FEATURE_SET)
    names = list(bad_payloads)
    payloads = [bad_payloads[n] for n in names] + [None, image_bytes("doom", 0)]
    matrix, errors = featurize_batch(payloads, fs)
    assert matrix.shape == (len(payloads), fs.dim)
    for i, name in enumerate(names):
        assert errors[i] and ": " in errors[i], name
        assert not matrix[i].any(), f"{name} row must be all zeros"
    assert errors[len(names)].startswith("empty: ")  # None payload
    assert errors[-1] is None and matrix[-1].any()
    codes = {e.split(":", 1)[0] for e in errors[:-1]}
    assert codes == {"empty", "truncated", "not_an_image", "too_many_pixels", "unsupported_format", "corrupt"}

    # a bug inside an extractor becomes a row error, not an exception
    def boom(img):
        raise IndexError("extractor bug")

    broken = fs.__class__(fs.name, fs.dim, fs.color, fs.min_side, boom, fs.description)
    vec, err = featurize_one(image_bytes("doom", 0), broken)
    assert vec is None and err.startswith("corrupt: decoder failed with IndexError: extractor bug")
    nan = fs.__class__(fs.name, fs.dim, fs.color, fs.min_side, lambda img: np.full(fs.dim, np.nan, np.float32), "")
    assert featurize_one(image_bytes("doom", 0), nan) == (None, "corrupt: features are not finite")


@pytest.mark.shared_data
def test_real_memes_featurize_without_errors(shared_dataset):
    files = sorted((shared_dataset / "doom").iterdir())[:10] + sorted((shared_dataset / "animal_crossing").iterdir())[:10]
    for name in ALL_SETS:
        matrix, errors = featurize_batch([f.read_bytes() for f in files], get_feature_set(name))
        assert errors == [None] * len(files), name
        assert np.all(np.isfinite(matrix)) and matrix.any(axis=1).all()
