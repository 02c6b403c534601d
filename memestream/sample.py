"""Generate a small labelled meme-like image folder, so demos and tests need no download.

Each class has its own palette, shapes and caption words; images vary in size, layout
and noise, and are written as JPEG and PNG. Classes overlap a little (shared shapes,
noise) so a model has something to learn rather than a single pixel to read.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from memestream.cli import add_common_flags, positive_int, run_main

log = logging.getLogger(__name__)

# class name -> (background BGR colours, foreground BGR colours, shape, caption words)
STYLES: dict[str, tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], str, list[str]]] = {
    "doom": (
        [(10, 10, 40), (20, 20, 70), (5, 5, 20)],
        [(30, 60, 220), (20, 120, 255), (0, 0, 160)],
        "spikes",
        ["RIP", "TEAR", "DEMONS", "BFG", "SLAYER"],
    ),
    "animal_crossing": (
        [(200, 235, 200), (230, 220, 170), (210, 240, 250)],
        [(90, 170, 60), (60, 200, 240), (200, 150, 80)],
        "circles",
        ["NOOK", "BELLS", "ISLAND", "TURNIP", "VILLAGER"],
    ),
    "cats": (
        [(150, 120, 160), (180, 170, 170), (120, 110, 130)],
        [(240, 240, 240), (60, 60, 60), (120, 160, 200)],
        "boxes",
        ["MEOW", "CAT", "LOAF", "NAP", "FISH"],
    ),
}


def make_image(label: str, rng: np.random.Generator) -> np.ndarray:
    """One procedural meme of class ``label`` (BGR uint8)."""
    backgrounds, foregrounds, shape, words = STYLES[label]
    h, w = int(rng.integers(160, 360)), int(rng.integers(160, 360))
    top = np.array(backgrounds[rng.integers(len(backgrounds))], dtype=np.float32)
    bottom = np.array(backgrounds[rng.integers(len(backgrounds))], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp) * np.ones((h, w, 3), dtype=np.float32)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(c) for c in foregrounds[rng.integers(len(foregrounds))])
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(10, max(12, min(h, w) // 3)))
        kind = shape if rng.random() < 0.8 else ("circles", "boxes", "spikes")[rng.integers(3)]
        if kind == "circles":
            cv2.circle(img, (cx, cy), size, colour, -1, lineType=cv2.LINE_AA)
        elif kind == "boxes":
            cv2.rectangle(img, (cx - size, cy - size), (cx + size, cy + size // 2), colour, -1)
        else:
            pts = np.array([[cx, cy - size], [cx - size // 2, cy + size], [cx + size // 2, cy + size]], dtype=np.int32)
            cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
    text = " ".join(rng.choice(words, size=int(rng.integers(1, 3))))
    scale = max(0.5, min(h, w) / 250)
    for y, line in ((int(0.15 * h) + 10, text), (int(0.92 * h), words[rng.integers(len(words))])):
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def encode(img: np.ndarray, fmt: str) -> bytes:
    ext = {"jpeg": ".jpg", "png": ".png"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, 88] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return buf.tobytes()


def sample_image_bytes(label: str = "doom", seed: int = 0, fmt: str = "jpeg") -> bytes:
    """Bytes of one generated image: handy for tests and for publishing a demo message."""
    return encode(make_image(label, np.random.default_rng(seed)), fmt)


def write_dataset(
    out: str | Path,
    per_class: int = 40,
    classes: Sequence[str] | None = None,
    seed: int = 7,
    nested: bool = True,
) -> dict[str, int]:
    """Write ``per_class`` images for each class under ``out/<class>/``; returns counts.

    With ``nested``, a third of each class goes into a sub-folder, as real scrapes do.
    """
    out = Path(out)
    classes = list(classes or STYLES)
    unknown = [c for c in classes if c not in STYLES]
    if unknown:
        raise ValueError(f"unknown sample classes {unknown}; available: {sorted(STYLES)}")
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for label in classes:
        for i in range(per_class):
            fmt = "jpeg" if i % 3 else "png"
            folder = out / label / ("batch2" if nested and i % 3 == 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{label}_{i:05d}.{'jpg' if fmt == 'jpeg' else 'png'}"
            path.write_bytes(encode(make_image(label, rng), fmt))
        counts[label] = per_class
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-sample",
        description="Write a small labelled folder of generated meme-like images (one sub-folder per class).",
        epilog="examples:\n  meme-sample --out data/sample\n  meme-sample --out /tmp/big --per-class 2000 --classes doom,cats",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="folder to write (created if missing)")
    parser.add_argument("--per-class", type=positive_int, default=40, help="images per class (default: 40)")
    parser.add_argument("--classes", default=",".join(STYLES), help=f"comma-separated classes (default: {','.join(STYLES)})")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    add_common_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    from memestream.errors import ConfigError

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        counts = write_dataset(args.out, args.per_class, classes, args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
