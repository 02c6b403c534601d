"""Rolling class counts over event-time windows, as per-batch deltas.

Each micro-batch contributes, for every (window, label), how many of *its* rows fall in
the window. Deltas are written with the batch (exactly once with it), so the table can
be read while the stream runs: the ``class_counts`` view sums deltas per window/label.

Late data: the watermark is the largest event time of earlier batches minus the allowed
delay. Rows older than the watermark are still predicted and stored (never lost), marked
``late``, but no longer change windowed counts, the same contract as Spark's watermark.
Windows follow Spark's ``window(event_time, W, S)``: start = k*S (epoch-aligned), end =
start + W, and a row at t belongs to every window with start <= t < end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_US = 1_000_000


@dataclass(frozen=True)
class WindowSpec:
    window_s: int = 600
    slide_s: int = 60
    watermark_s: int = 3600

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.slide_s <= 0 or self.watermark_s < 0:
            raise ValueError("window and slide must be positive and the watermark non-negative")
        if self.slide_s > self.window_s:
            raise ValueError(f"slide ({self.slide_s}s) must not exceed the window ({self.window_s}s)")


def parse_duration(text: str) -> int:
    """``"10 minutes"``, ``"30s"``, ``"1h"``, ``"90"`` -> seconds."""
    units = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
    t = text.strip().lower().replace(" ", "")
    num = "".join(ch for ch in t if ch.isdigit() or ch == ".")
    unit = t[len(num):].rstrip("s") or "s"
    if not num or unit not in units:
        raise ValueError(f"expected a duration like '30s', '10 minutes' or '1h', found {text!r}")
    return int(float(num) * units[unit])


def late_mask(event_us: np.ndarray, watermark_us: int | None) -> np.ndarray:
    if watermark_us is None:
        return np.zeros(event_us.shape, dtype=bool)
    return event_us < watermark_us


def window_deltas(labels: list[str | None], event_us: np.ndarray, late: np.ndarray, spec: WindowSpec) -> pa.Table:
    """Count rows per (window, label) for labelled, on-time rows; returns an Arrow table."""
    ok = np.array([lbl is not None for lbl in labels], dtype=bool) & ~late
    w_us, s_us = spec.window_s * _US, spec.slide_s * _US
    per_row = -(-w_us // s_us)  # windows a row can fall in (ceil)
    counts: dict[tuple[int, str], int] = {}
    idx = np.nonzero(ok)[0]
    if idx.size:
        t = event_us[idx]
        last_start = (t // s_us) * s_us
        for k in range(per_row):
            starts = last_start - k * s_us
            inside = t < starts + w_us
            for i, start in zip(idx[inside], starts[inside]):
                key = (int(start), labels[i])  # type: ignore[index]
                counts[key] = counts.get(key, 0) + 1
    keys = sorted(counts)
    starts = np.array([k[0] for k in keys], dtype=np.int64)
    return pa.table(
        {
            "window_start": pa.array(starts, type=pa.timestamp("us", tz="UTC")),
            "window_end": pa.array(starts + w_us, type=pa.timestamp("us", tz="UTC")),
            "label": pa.array([k[1] for k in keys], type=pa.string()),
            "count": pa.array([counts[k] for k in keys], type=pa.int64()),
        }
    )
