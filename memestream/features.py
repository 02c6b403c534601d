"""Feature sets: image bytes -> fixed-length float32 vector.

This module is the single definition of features for training *and* streaming: the
Spark featurizer stage, the benchmark's single-process baseline and the tests all call
:func:`featurize_batch`. A feature set is chosen by name and its name is saved in the
model, so a stream always computes the features its model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from memestream.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, BadImage, decode


@dataclass(frozen=True)
class FeatureSet:
    name: str
    dim: int
    color: bool
    #: Smallest short side the extractor needs; lets JPEGs decode at reduced scale.
    min_side: int
    extract: Callable[[np.ndarray], np.ndarray]
    description: str


def _gray32(img: np.ndarray) -> np.ndarray:
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    return small.reshape(-1).astype(np.float32) / np.float32(255.0)


# ---------------------------------------------------------------------------------------
# colortex: colour distribution + spatial colour layout + texture/shape descriptors.
# ---------------------------------------------------------------------------------------
_SIDE = 64
_HOG_CELL = 16
_HOG_BINS = 9


def _hog(gray: np.ndarray) -> np.ndarray:
    """Histogram of oriented gradients: 16px cells, 9 unsigned bins, 2x2-cell blocks (L2-Hys).

    Written with numpy rather than ``cv2.HOGDescriptor`` (absent from some OpenCV builds).
    """
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.degrees(np.arctan2(gy, gx)), 180.0)
    pos = ang / (180.0 / _HOG_BINS) - 0.5
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    lo %= _HOG_BINS
    hi = (lo + 1) % _HOG_BINS
    cells = g.shape[0] // _HOG_CELL
    cell_id = (np.arange(g.shape[0]) // _HOG_CELL)[:, None] * cells + (np.arange(g.shape[1]) // _HOG_CELL)[None, :]
    idx_lo = (cell_id * _HOG_BINS + lo).reshape(-1)
    idx_hi = (cell_id * _HOG_BINS + hi).reshape(-1)
    size = cells * cells * _HOG_BINS
    hist = np.bincount(idx_lo, (mag * (1 - frac)).reshape(-1), minlength=size)
    hist += np.bincount(idx_hi, (mag * frac).reshape(-1), minlength=size)
    hist = hist.reshape(cells, cells, _HOG_BINS)
    blocks = []
    for y in range(cells - 1):
        for x in range(cells - 1):
            v = hist[y : y + 2, x : x + 2].reshape(-1)
            v = v / np.sqrt((v * v).sum() + 1e-6)
            v = np.minimum(v, 0.2)
            blocks.append(v / np.sqrt((v * v).sum() + 1e-6))
    return np.concatenate(blocks).astype(np.float32)


def _lbp_hist(gray: np.ndarray) -> np.ndarray:
    """Uniform-ish 8-neighbour local binary pattern histogram (texture)."""
    g = gray.astype(np.int16)
    c = g[1:-1, 1:-1]
    code = np.zeros_like(c, dtype=np.uint8)
    shifts = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))
    for bit, (dy, dx) in enumerate(shifts):
        nb = g[dy : dy + c.shape[0], dx : dx + c.shape[1]]
        code |= ((nb >= c).astype(np.uint8) << bit)
    hist = np.bincount(code.reshape(-1), minlength=256).astype(np.float32)
    # fold the 256 codes into 36 rotation-invariant groups via their transition count
    # and number of set bits: compact and robust to small rotations.
    return (hist @ _LBP_FOLD) / max(1.0, float(code.size))


def _lbp_fold_matrix() -> np.ndarray:
    groups: dict[tuple[int, int], int] = {}
    assign = np.zeros(256, dtype=np.int64)
    for value in range(256):
        bits = [(value >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        key = (sum(bits), min(transitions, 4))
        groups.setdefault(key, len(groups))
        assign[value] = groups[key]
    fold = np.zeros((256, len(groups)), dtype=np.float32)
    fold[np.arange(256), assign] = 1.0
    return fold


_LBP_FOLD = _lbp_fold_matrix()


def _colortex(img: np.ndarray) -> np.ndarray:
    small = cv2.resize(img, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2Lab).astype(np.float32) / 255.0
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    n = float(_SIDE * _SIDE)
    # joint HSV histogram: 12 hues x 3 saturations x 3 values
    hsv_hist = cv2.calcHist([hsv], [0, 1, 2], None, [12, 3, 3], [0, 180, 0, 256, 0, 256]).reshape(-1) / n
    # per-channel hue and saturation histograms at finer resolution
    hue_hist = cv2.calcHist([hsv], [0], None, [18], [0, 180]).reshape(-1) / n
    sat_hist = cv2.calcHist([hsv], [1], None, [8], [0, 256]).reshape(-1) / n
    val_hist = cv2.calcHist([hsv], [2], None, [8], [0, 256]).reshape(-1) / n
    # spatial colour layout: mean and std of Lab in a 4x4 grid
    grid = lab.reshape(4, _SIDE // 4, 4, _SIDE // 4, 3)
    layout = np.concatenate([grid.mean(axis=(1, 3)).reshape(-1), grid.std(axis=(1, 3)).reshape(-1)])
    # global colourfulness and contrast
    b, g, r = (small[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colorful = np.array(
        [np.hypot(rg.std(), yb.std()) / 255.0, np.hypot(rg.mean(), yb.mean()) / 255.0, gray.std() / 255.0],
        dtype=np.float32,
    )
    # shape/texture: HOG on the 64x64 grayscale, LBP, edge density
    hog = _hog(gray)
    lbp = _lbp_hist(gray)
    edges = cv2.Canny(gray, 80, 160)
    edge_grid = edges.reshape(4, _SIDE // 4, 4, _SIDE // 4).mean(axis=(1, 3)).reshape(-1) / 255.0
    return np.concatenate(
        [hsv_hist, hue_hist, sat_hist, val_hist, layout, colorful, hog, lbp, edge_grid]
    ).astype(np.float32)


def _dim_of(fn: Callable[[np.ndarray], np.ndarray], color: bool) -> int:
    probe = np.zeros((_SIDE, _SIDE, 3) if color else (_SIDE, _SIDE), dtype=np.uint8)
    return int(fn(probe).shape[0])


FEATURE_SETS: dict[str, FeatureSet] = {}


def _register(name: str, fn: Callable[[np.ndarray], np.ndarray], color: bool, min_side: int, description: str) -> None:
    FEATURE_SETS[name] = FeatureSet(name, _dim_of(fn, color), color, min_side, fn, description)


_register("gray32", _gray32, False, 32, "grayscale 32x32 pixels, flattened (the original notebook's features)")
_register(
    "colortex",
    _colortex,
    True,
    _SIDE,
    "HSV histograms, 4x4 Lab colour layout, colourfulness, HOG and LBP texture, edge density on a 64x64 image",
)

DEFAULT_FEATURE_SET = "colortex"


def get_feature_set(name: str) -> FeatureSet:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        from memestream.errors import ConfigError

        raise ConfigError(f"unknown feature set {name!r}; expected one of: {', '.join(sorted(FEATURE_SETS))}") from None


def featurize_one(
    data: bytes | None,
    feature_set: FeatureSet,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray | None, str | None]:
    """Features for one image, or ``(None, "<code>: <reason>")``. Never raises on bad bytes."""
    try:
        img, _ = decode(
            data, color=feature_set.color, min_side=feature_set.min_side, max_bytes=max_bytes, max_pixels=max_pixels
        )
        vec = feature_set.extract(img)
    except BadImage as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not fail a stream batch
        return None, f"corrupt: decoder failed with {type(exc).__name__}: {str(exc)[:200]}"
    if not np.all(np.isfinite(vec)):
        return None, "corrupt: features are not finite"
    return vec, None


def featurize_batch(
    payloads: Sequence[bytes | None],
    feature_set: FeatureSet,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, list[str | None]]:
    """Features for many images as one ``(n, dim)`` float32 matrix plus an error per row.

    Rows that failed hold zeros (so a model never sees nulls) and a non-null error.
    """
    out = np.zeros((len(payloads), feature_set.dim), dtype=np.float32)
    errors: list[str | None] = []
    for i, data in enumerate(payloads):
        vec, err = featurize_one(data, feature_set, max_bytes, max_pixels)
        if vec is not None:
            out[i] = vec
        errors.append(err)
    return out, errors
