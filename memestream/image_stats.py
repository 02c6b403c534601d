"""Cheap low-level statistics of a decoded image: the novelty score's second view.

The EfficientNet embedding puts anything with text on flat colour (a page of text, a
chart, an app screen) near the text-captioned memes, so its distance alone misses those
(issue 25: AUROC 0.05 on pages of text). Rendered graphics differ from game screenshots
in plain pixel statistics instead: few distinct colours, large flat or near-white areas,
two-tone (ink on paper) cells, edges on long straight lines (rules, bars, panels), edge rows
that repeat (lines of text). These 22 numbers, on a 128x128 copy of the image, take ~1 ms
with numpy/OpenCV. The image's size and aspect ratio are left out on purpose: the training
memes are all one size, so they would separate anything of another size without saying
anything about the content (with the aspect ratio, AUROC 0.99 on our foreign set, for that
reason alone).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:
    from memestream.features import FeatureSet

#: Bump when the computation changes: a novelty model stores the version it was fitted with.
STATS_VERSION = "2"
STAT_NAMES = (
    "flat_share", "near_white_share", "colour_count", "top_colour_share", "colour_entropy", "edge_density", "colourfulness",
    "saturation_mean", "value_mean", "gray_std", "edge_row_spread", "edge_col_spread", "dark_share",
    "flat_cells", "two_tone_cells", "midtone_cells", "laplacian_log_var", "gray_levels", "saturated_cells",
    "horizontal_edge_share", "vertical_edge_share", "text_row_period",
)
_SIDE = 128


def image_stats(img: np.ndarray) -> np.ndarray:
    """``(22,)`` float32 statistics of one BGR (or gray) uint8 image, see :data:`STAT_NAMES`."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    s = cv2.resize(img, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(s, cv2.COLOR_BGR2HSV)
    gray_u8 = cv2.cvtColor(s, cv2.COLOR_BGR2GRAY)
    gray = gray_u8.astype(np.float32)
    sat, val = hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    gi = gray_u8.astype(np.int16)
    gx, gy = np.abs(np.diff(gi, axis=1)), np.abs(np.diff(gi, axis=0))
    flat = float(((gx[:-1, :] <= 2) & (gy[:, :-1] <= 2)).mean())
    q = (s // 32).astype(np.int32)  # 8 levels per channel: JPEG noise rarely crosses a level
    counts = np.bincount((q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel(), minlength=512)
    p = counts / counts.sum()
    nz = p[p > 0]
    edges = cv2.Canny(gray_u8, 80, 160) > 0
    b, g, r = (s[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    # 8x8-pixel cells: flat, two-tone (text: ink and paper) or mid-tone (shaded, photographic)
    cells = gray.reshape(16, 8, 16, 8).transpose(0, 2, 1, 3).reshape(256, 64)
    spread = cells.max(1) - cells.min(1)
    near = ((cells - cells.min(1, keepdims=True) < 0.15 * spread[:, None])
            | (cells.max(1, keepdims=True) - cells < 0.15 * spread[:, None])).mean(1)
    textured = spread > 40
    cell_std = cells.std(1)
    # edges on axis-aligned runs of 15+ pixels: rendered layouts are made of them, scenes rarely
    edge_u8 = edges.astype(np.uint8)
    n_edges = max(1, int(edges.sum()))
    h_runs = cv2.morphologyEx(edge_u8, cv2.MORPH_OPEN, np.ones((1, 15), np.uint8))
    v_runs = cv2.morphologyEx(edge_u8, cv2.MORPH_OPEN, np.ones((15, 1), np.uint8))
    # lines of text repeat down the image: the row profile's autocorrelation at 4-40 rows
    rows = edges.mean(axis=1).astype(np.float64)
    rows -= rows.mean()
    auto = np.correlate(rows, rows, "full")[_SIDE - 1 :]
    period = float((auto[4:40] / auto[0]).max()) if auto[0] > 0 else 0.0
    return np.array(
        [
            flat,
            float(((val > 0.9) & (sat < 0.12)).mean()),
            float((p > 0.002).sum()),
            float(p.max()),
            float(-(nz * np.log(nz)).sum()),
            float(edges.mean()),
            float(np.hypot(rg.std(), yb.std()) / 255.0),
            float(sat.mean()),
            float(val.mean()),
            float(gray.std() / 255.0),
            float(edges.mean(axis=1).std()),
            float(edges.mean(axis=0).std()),
            float((val < 0.15).mean()),
            float((cell_std < 3).mean()),
            float(near[textured].mean()) if textured.any() else 1.0,
            float(((cell_std > 8) & (near < 0.6)).mean()),
            float(np.log1p(cv2.Laplacian(gray, cv2.CV_32F).var())),
            float((np.bincount(gray_u8.ravel(), minlength=256) > 3).sum() / 256.0),
            float((sat.reshape(16, 8, 16, 8).mean(axis=(1, 3)) > 0.25).mean()),
            float(h_runs.sum() / n_edges),
            float(v_runs.sum() / n_edges),
            period,
        ],
        dtype=np.float32,
    )


def stats_of(images: list[np.ndarray | None]) -> np.ndarray:
    """``(n, 22)`` statistics; NaN rows where the image is missing (not decoded)."""
    out = np.full((len(images), len(STAT_NAMES)), np.nan, dtype=np.float32)
    for i, img in enumerate(images):
        if img is not None:
            out[i] = image_stats(img)
    return out


def stats_of_paths(paths: Sequence[str], fs: "FeatureSet", max_bytes: int, max_pixels: int) -> np.ndarray:
    """``(n, 22)`` statistics of image files decoded as the feature set decodes them (training:
    the novelty view's reference rows; ~3 ms an image on the driver). NaN rows: unreadable."""
    from memestream.decode import BadImage
    from memestream.features import decode_for
    from memestream.inputs import local_path, read_capped

    images: list[np.ndarray | None] = []
    for p in paths:
        data, err = read_capped(local_path(str(p)), max_bytes)
        try:
            images.append(decode_for(data, fs, max_bytes, max_pixels) if err is None else None)
        except BadImage:
            images.append(None)
    return stats_of(images)
