"""A foreign reference set for the novelty score: images that are no fandom's meme, rendered
in code from what installed packages ship (matplotlib, its DejaVu fonts, PIL, scikit-image's
and scikit-learn's sample photos), seeded, never written to the repository.

Used only to choose the novelty method and to report how it does per kind (``bench.ood
--foreign``); never as training data: the score's threshold comes from in-distribution
images alone. The kinds lean on what a general feed carries and the old score missed
(text-heavy images: charts, pages, screens, slides, code, tables), plus photos and
synthetic patterns. Sizes, aspect ratios and encodings (JPEG/PNG) vary, as in the wild.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her "
    "she there one all we their can has more will would about if been when who so no out up into than them only other time new "
    "some could these two may first then do any like my now over such our man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three revenue quarter growth market report analysis data "
    "results system user account settings value total customer service policy program section figure table review project"
).split()


def _font(rng: np.random.Generator, size: int, mono: bool = False):
    from matplotlib import font_manager
    from PIL import ImageFont

    root = Path(font_manager.findfont("DejaVu Sans")).parent
    names = ["DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"] if mono else [
        "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSans-Oblique.ttf"]
    return ImageFont.truetype(str(root / names[int(rng.integers(len(names)))]), size)


def _sentence(rng: np.random.Generator, n: int) -> str:
    words = list(rng.choice(_WORDS, size=n))
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def _size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): memes here are ~300x300; foreign images come at any size and aspect."""
    w = int(rng.integers(280, 1100))
    aspect = float(rng.choice([0.56, 0.75, 1.0, 1.33, 1.41, 1.78]))
    return w, max(200, int(w / aspect)) if rng.random() < 0.5 else max(200, int(w * aspect))


def _pale(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.55:
        return (255, 255, 255)
    return tuple(int(v) for v in rng.integers(215, 256, 3))  # type: ignore[return-value]


def _to_bgr(pil_img) -> np.ndarray:
    return cv2.cvtColor(np.asarray(pil_img.convert("RGB")), cv2.COLOR_RGB2BGR)


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def text_page(rng: np.random.Generator) -> np.ndarray:
    """A page of plain text: paragraphs in one or two columns, a heading sometimes, pale or tinted paper."""
    from PIL import Image, ImageDraw

    w, h = _size(rng)
    img = Image.new("RGB", (w, h), _pale(rng))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(11, 26))
    font = _font(rng, size)
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    margin = int(rng.integers(10, 50))
    cols = 2 if (w > 600 and rng.random() < 0.5) else 1
    col_w = (w - 2 * margin - (cols - 1) * 20) // cols
    y0 = margin
    if rng.random() < 0.5:
        head = _font(rng, int(size * 1.7))
        draw.text((margin, y0), _sentence(rng, int(rng.integers(3, 7)))[:-1], font=head, fill=ink)
        y0 += int(size * 2.6)
    for c in range(cols):
        x, y = margin + c * (col_w + 20), y0
        while y < h - margin - size:
            for line in _wrap(draw, " ".join(_sentence(rng, int(rng.integers(5, 16))) for _ in range(int(rng.integers(2, 6)))), font, col_w):
                if y >= h - margin - size:
                    break
                draw.text((x, y), line, font=font, fill=ink)
                y += int(size * 1.35)
            y += size
    return _to_bgr(img)


def chart(rng: np.random.Generator) -> np.ndarray:
    """A business chart with title, axes and legend: bar, line, pie, scatter or stacked area."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = _size(rng)
    styles = ["default", "ggplot", "seaborn-v0_8-whitegrid", "bmh", "fivethirtyeight", "classic"]
    with plt.style.context(styles[int(rng.integers(len(styles)))]):
        fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
        kind = int(rng.integers(5))
        x = np.arange(int(rng.integers(4, 13)))
        labels = [f"Q{i % 4 + 1} {2019 + i // 4}" for i in x]
        if kind == 0:
            for s in range(int(rng.integers(1, 4))):
                ax.bar(x + s * 0.25, rng.uniform(10, 100, len(x)), width=0.25, label=f"Series {s + 1}")
            ax.set_xticks(x, labels, rotation=45, fontsize=7)
        elif kind == 1:
            for s in range(int(rng.integers(1, 4))):
                ax.plot(x, np.cumsum(rng.normal(1, 3, len(x))) + 50, marker="o", label=f"Region {s + 1}")
            ax.set_xticks(x, labels, rotation=45, fontsize=7)
        elif kind == 2:
            n = int(rng.integers(3, 7))
            ax.pie(rng.uniform(1, 10, n), labels=[f"Segment {chr(65 + i)}" for i in range(n)], autopct="%1.0f%%")
        elif kind == 3:
            n = int(rng.integers(30, 200))
            ax.scatter(rng.normal(0, 1, n), rng.normal(0, 1, n), c=rng.uniform(0, 1, n), s=12)
        else:
            ys = rng.uniform(1, 5, (3, len(x)))
            ax.stackplot(x, ys, labels=["North", "South", "West"])
        ax.set_title(_sentence(rng, int(rng.integers(3, 7)))[:-1])
        if kind != 2:
            ax.set_xlabel("Period")
            ax.set_ylabel("Revenue (USD m)")
            if kind in (0, 1, 4) and rng.random() < 0.7:
                ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    return cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)


def table(rng: np.random.Generator) -> np.ndarray:
    """A spreadsheet: header row, gridlines, numbers and names in cells."""
    from PIL import Image, ImageDraw

    w, h = _size(rng)
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(10, 18))
    font = _font(rng, size)
    row_h = int(size * 1.8)
    col_w = int(rng.integers(60, 140))
    head = tuple(int(v) for v in rng.integers(150, 240, 3))
    grid = (200, 200, 200)
    for r, y in enumerate(range(0, h, row_h)):
        if r == 0:
            draw.rectangle([0, 0, w, row_h], fill=head)
        elif r % 2 == 0 and rng.random() < 0.5:
            draw.rectangle([0, y, w, y + row_h], fill=(242, 242, 247))
        for c, x in enumerate(range(0, w, col_w)):
            text = (f"Column {chr(65 + c % 26)}" if r == 0 else (str(rng.choice(_WORDS)) if c == 0 else f"{rng.uniform(0, 9999):,.2f}"))
            draw.text((x + 4, y + 3), text, font=font, fill=(20, 20, 20))
            draw.line([x, 0, x, h], fill=grid)
        draw.line([0, y, w, y], fill=grid)
    return _to_bgr(img)


def ui_screen(rng: np.random.Generator) -> np.ndarray:
    """An app-like screen: a title bar, a list of rows with icons and labels, buttons, a tab bar."""
    from PIL import Image, ImageDraw

    w, h = _size(rng)
    if rng.random() < 0.5:
        w, h = min(w, h), max(w, h)  # phone
    dark = rng.random() < 0.3
    bg = (30, 30, 34) if dark else _pale(rng)
    fg = (230, 230, 230) if dark else (30, 30, 30)
    accent = tuple(int(v) for v in rng.integers(0, 230, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(12, 22))
    font = _font(rng, size)
    bar = int(size * 3)
    draw.rectangle([0, 0, w, bar], fill=accent)
    draw.text((size, bar // 3), _sentence(rng, 2)[:-1], font=_font(rng, int(size * 1.2)), fill=(255, 255, 255))
    y = bar + size
    while y < h - 3 * bar:
        kind = rng.random()
        if kind < 0.6:
            r = size
            draw.ellipse([size, y, size + 2 * r, y + 2 * r], fill=tuple(int(v) for v in rng.integers(60, 240, 3)))
            draw.text((3 * size + 10, y), _sentence(rng, int(rng.integers(2, 5)))[:-1], font=font, fill=fg)
            draw.text((3 * size + 10, y + size + 2), _sentence(rng, int(rng.integers(3, 8))), font=_font(rng, int(size * 0.8)), fill=(128, 128, 128))
            y += int(2.8 * size)
            draw.line([size, y - size // 2, w - size, y - size // 2], fill=(200, 200, 200) if not dark else (70, 70, 70))
        elif kind < 0.8:
            bw = int(rng.integers(w // 4, w - 2 * size))
            draw.rounded_rectangle([size, y, size + bw, y + 2 * size], radius=size // 2, fill=accent)
            draw.text((size + 10, y + size // 3), str(rng.choice(["Sign in", "Continue", "Save", "Buy now", "Settings", "OK"])), font=font,
                      fill=(255, 255, 255))
            y += 3 * size
        else:
            draw.rounded_rectangle([size, y, w - size, y + 2 * size], radius=4, outline=(160, 160, 160), fill=bg)
            draw.text((size + 8, y + size // 3), "Search " + str(rng.choice(_WORDS)), font=font, fill=(150, 150, 150))
            y += 3 * size
    draw.rectangle([0, h - bar, w, h], fill=(245, 245, 245) if not dark else (45, 45, 50))
    for i in range(4):
        cx = int((i + 0.5) * w / 4)
        draw.rectangle([cx - size // 2, h - bar + size // 2, cx + size // 2, h - bar + int(1.5 * size)], fill=accent)
    return _to_bgr(img)


def slide(rng: np.random.Generator) -> np.ndarray:
    """A presentation slide: a title, bullets, a coloured band or background, sometimes a small chart box."""
    from PIL import Image, ImageDraw

    w = int(rng.integers(400, 1280))
    h = int(w * float(rng.choice([0.5625, 0.75])))
    theme = int(rng.integers(3))
    bg = [(255, 255, 255), tuple(int(v) for v in rng.integers(0, 80, 3)), tuple(int(v) for v in rng.integers(200, 256, 3))][theme]
    fg = (240, 240, 240) if theme == 1 else (25, 25, 25)
    accent = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    size = max(12, h // int(rng.integers(14, 22)))
    draw.rectangle([0, 0, w, int(size * 2.8)], fill=accent)
    draw.text((size, int(size * 0.6)), _sentence(rng, int(rng.integers(2, 6)))[:-1], font=_font(rng, int(size * 1.3)), fill=(255, 255, 255))
    y = int(size * 4)
    font = _font(rng, size)
    text_w = w - 3 * size if rng.random() < 0.6 else w // 2
    while y < h - 2 * size:
        draw.ellipse([size, y + size // 3, size + size // 2, y + size // 3 + size // 2], fill=accent)
        for line in _wrap(draw, _sentence(rng, int(rng.integers(3, 12))), font, text_w - 2 * size)[:2]:
            draw.text((2 * size, y), line, font=font, fill=fg)
            y += int(size * 1.3)
        y += size // 2
    if text_w < w - 3 * size:
        x0 = w // 2 + size
        draw.rectangle([x0, 4 * size, w - size, h - 2 * size], outline=fg)
        n = 5
        for i in range(n):
            bh = int(rng.uniform(0.2, 0.9) * (h - 7 * size))
            bx = x0 + size + i * (w - x0 - 2 * size) // n
            draw.rectangle([bx, h - 3 * size - bh, bx + (w - x0 - 2 * size) // n - 6, h - 3 * size], fill=accent)
    return _to_bgr(img)


def code_screen(rng: np.random.Generator) -> np.ndarray:
    """A code editor screenshot: monospace lines with indentation and syntax colours, light or dark theme."""
    from PIL import Image, ImageDraw

    w, h = _size(rng)
    dark = rng.random() < 0.6
    img = Image.new("RGB", (w, h), (30, 30, 30) if dark else (250, 250, 250))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(10, 20))
    font = _font(rng, size, mono=True)
    palette = [(86, 156, 214), (206, 145, 120), (106, 153, 85), (220, 220, 170), (212, 212, 212)] if dark else \
        [(0, 0, 255), (163, 21, 21), (0, 128, 0), (121, 94, 38), (30, 30, 30)]
    keywords = ["def", "return", "import", "for", "if", "else:", "class", "while", "self.", "print(", "yield", "with"]
    indent, y, n = 0, 4, 1
    while y < h - size:
        draw.text((4, y), f"{n:>3}", font=font, fill=(120, 120, 120))
        x = 4 + 5 * size * 0.6 + indent * size * 2.4
        for t in range(int(rng.integers(1, 7))):
            token = str(rng.choice(keywords)) if t == 0 and rng.random() < 0.5 else str(rng.choice(_WORDS)) + str(rng.choice(["", "(", ")", ",", " =", "[0]", ":"]))
            colour = palette[int(rng.integers(len(palette)))]
            draw.text((x, y), token, font=font, fill=colour)
            x += draw.textlength(token + " ", font=font)
        indent = int(np.clip(indent + rng.integers(-1, 2), 0, 4))
        y += int(size * 1.4)
        n += 1
    return _to_bgr(img)


def _sample_photos() -> list[np.ndarray]:
    photos: list[np.ndarray] = []
    try:
        import skimage.data as sd

        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                     "motorcycle_left", "brick", "camera", "grass", "gravel", "moon", "clock", "horse", "coins", "cell"):  # files the wheel ships
            try:
                img = np.asarray(getattr(sd, name)())
            except Exception:  # noqa: BLE001 - some need a download (pooch): skip those
                continue
            if img.dtype != np.uint8:
                img = (255 * (img.astype(np.float64) / max(1e-9, float(img.max())))).astype(np.uint8)
            code = {2: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}[img.shape[2] if img.ndim == 3 else 2]
            photos.append(cv2.cvtColor(img, code))
    except ImportError:
        log.info("scikit-image is not installed: photos from scikit-learn only")
    try:
        from sklearn.datasets import load_sample_images

        photos += [cv2.cvtColor(im, cv2.COLOR_RGB2BGR) for im in load_sample_images().images]
    except Exception:  # noqa: BLE001
        pass
    return photos


def photo(rng: np.random.Generator) -> np.ndarray:
    """A crop of a shipped sample photo at a random scale (the same few photos, different views)."""
    photos = _sample_photos_cached()
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    f = float(rng.uniform(0.5, 1.0))
    ch, cw = max(64, int(h * f)), max(64, int(w * f * rng.uniform(0.8, 1.2)))
    ch, cw = min(ch, h), min(cw, w)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = img[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


_PHOTOS: list[np.ndarray] = []


def _sample_photos_cached() -> list[np.ndarray]:
    if not _PHOTOS:
        _PHOTOS.extend(_sample_photos())
    return _PHOTOS


def pattern(rng: np.random.Generator) -> np.ndarray:
    """Gradients, noise, stripes, checkerboards and flat colour."""
    w, h = _size(rng)
    kind = int(rng.integers(5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
    if kind == 0:
        t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / max(w, h) + 1) / 2
    elif kind == 1:
        t = rng.random((h, w)).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), float(rng.uniform(0.5, 8)))
        t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    elif kind == 2:
        period = float(rng.uniform(6, 60))
        t = (np.sin((xx * np.cos(rng.uniform(0, np.pi)) + yy * np.sin(rng.uniform(0, np.pi))) / period * 2 * np.pi) > 0).astype(np.float32)
    elif kind == 3:
        cell = int(rng.integers(8, 64))
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    else:
        t = np.zeros((h, w), np.float32) + float(rng.uniform(0, 1))
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


#: kind -> renderer ``(rng) -> BGR uint8 image``
KINDS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "charts": chart,
    "text_pages": text_page,
    "tables": table,
    "ui_screens": ui_screen,
    "slides": slide,
    "code": code_screen,
    "photos": photo,
    "patterns": pattern,
}


def foreign_bytes(kind: str, seed: int, index: int) -> bytes:
    """One encoded foreign image: the renderer's image as JPEG (quality 70-95) or PNG, chosen by the seed."""
    rng = np.random.default_rng([seed, index, sorted(KINDS).index(kind)])
    img = KINDS[kind](rng)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
    else:
        ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {kind} image")
    return buf.tobytes()


def foreign_set(per_kind: int, seed: int = 0, kinds: tuple[str, ...] | None = None, like_memes: int | None = None) -> dict[str, list[bytes]]:
    """``per_kind`` encoded images of each kind, reproducible from ``seed``; with ``like_memes``,
    each as :func:`meme_copy` stores it."""
    out = {k: [foreign_bytes(k, seed, i) for i in range(per_kind)] for k in (kinds or tuple(KINDS))}
    if like_memes is not None:
        out = {k: [meme_copy(b, like_memes) for b in v] for k, v in out.items()}
    return out


def meme_copy(data: bytes, side: int, quality: int = 90) -> bytes:
    """An encoded image stored as doom-crossing stores its memes: stretched to ``side`` x ``side``
    and saved as JPEG. A novelty score that flags the rendered images but not these copies
    tells the training memes' size, resampling or encoding apart from the images' own, not their
    content: in the wild, memes come at every size and from every encoder."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("meme_copy: the input does not decode")
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()
