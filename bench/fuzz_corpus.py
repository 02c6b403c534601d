"""The fuzz corpus of :mod:`bench.fuzz`: seed images made in code, and the mutations applied to them.

Seeds cover every variant a decoder path has (baseline and progressive JPEG, palette and
interlaced PNG, animated GIF/WebP/PNG, multi-page and compressed TIFF in both byte orders...),
small so that a case costs milliseconds. Nothing is read from disk or downloaded.

Mutations know each container's structure: truncations land on its boundaries (JPEG markers,
PNG chunks, GIF blocks, RIFF chunks, TIFF IFDs and strips) and header lies rewrite real fields
(dimensions, lengths, counts, offsets) with the checksums recomputed, so they reach the decoder
instead of failing at the first CRC. Bombs are built directly: tiny files whose headers promise
huge canvases or thousands of frames/pages/scans.

Every case is a pure function of ``(seed, index)``: :func:`make_case` regenerates it.
"""
from __future__ import annotations

import io
import random
import struct
import zlib
import functools
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff")
#: Mutation names, in the table's order. ``seed`` is the unmodified seed (it must featurize).
MUTATIONS = ("seed", "flip", "truncate", "zero", "duplicate", "lie", "splice", "magic_garbage", "bomb")
_WEIGHTS = (1, 6, 4, 3, 3, 6, 2, 2, 2)


@dataclass(frozen=True)
class Seed:
    format: str
    variant: str
    data: bytes


@dataclass(frozen=True)
class Case:
    index: int
    format: str
    variant: str
    mutation: str
    detail: str
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.index:06d}-{self.format}-{self.variant}-{self.mutation}"


# ---------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _picture(width: int, height: int, seed: int = 5) -> np.ndarray:
    """A generated meme-like BGR picture (memestream.sample), resized small."""
    from memestream.sample import make_image

    return cv2.resize(make_image("doom", np.random.default_rng(seed)), (width, height), interpolation=cv2.INTER_AREA)


def _cv(img: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    if not ok:
        raise RuntimeError(f"cv2 could not encode {ext}")
    return buf.tobytes()


def _pil(img: np.ndarray, fmt: str, mode: str | None = None, frames: list[np.ndarray] | None = None, **kw) -> bytes:
    from PIL import Image  # Pillow: the dev extra; only the seeds need it

    def one(a: np.ndarray) -> "Image.Image":
        im = Image.fromarray(cv2.cvtColor(a, cv2.COLOR_BGR2RGB))
        return im.convert(mode) if mode else im

    out = io.BytesIO()
    if frames:
        one(img).save(out, format=fmt, save_all=True, append_images=[one(f) for f in frames], **kw)
    else:
        one(img).save(out, format=fmt, **kw)
    return out.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def interlaced_png(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow and OpenCV only write non-interlaced ones)."""
    h, w = rgb.shape[:2]
    raw = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        sub = rgb[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue  # an empty pass has no scanlines at all
        for row in sub:
            raw += b"\x00" + row.tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(bytes(raw))) + png_chunk(b"IEND", b"")


# A 1x1 GIF frame: LZW minimum code size 2, one sub-block of 2 bytes (clear, pixel 0, end), terminator.
_GIF_1X1_LZW = b"\x02\x02\x44\x01\x00"


def gif_bytes(screen: tuple[int, int], frames: int, frame_size: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF with a 2-colour table and ``frames`` 1x1-pixel frames (their descriptors may claim
    ``frame_size``), each with a graphic control extension: frame and canvas bombs."""
    sw, sh = screen
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    fw, fh = frame_size
    frame = b"\x21\xf9\x04\x04\x01\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, fw, fh, 0) + _GIF_1X1_LZW
    out += frame * frames
    out += b";"
    return bytes(out)


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


@functools.lru_cache(maxsize=1)
def _webp_vp8l_1x1() -> bytes:
    """The VP8L chunk payload of a lossless 1x1 WebP, cut out of OpenCV's encoding."""
    data = _cv(np.zeros((1, 1, 3), np.uint8), ".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))
    assert data[12:16] == b"VP8L", data[:20]
    (size,) = struct.unpack("<I", data[16:20])
    return data[20 : 20 + size]


def webp_animation(canvas: tuple[int, int], frames: int, frame_size: tuple[int, int] = (1, 1)) -> bytes:
    """An animated WebP (VP8X + ANIM + ``frames`` ANMF chunks of a 1x1 VP8L frame, whose headers
    may claim ``frame_size``): canvas and frame bombs."""
    cw, ch = canvas
    vp8x = struct.pack("<I", 0x02) + (cw - 1).to_bytes(3, "little") + (ch - 1).to_bytes(3, "little")
    anim = struct.pack("<IH", 0xFFFFFFFF, 0)
    fw, fh = frame_size
    frame = riff_chunk(
        b"ANMF",
        (0).to_bytes(3, "little") * 2 + (fw - 1).to_bytes(3, "little") + (fh - 1).to_bytes(3, "little")
        + (100).to_bytes(3, "little") + b"\x00" + riff_chunk(b"VP8L", _webp_vp8l_1x1()),
    )
    return _riff(riff_chunk(b"VP8X", vp8x) + riff_chunk(b"ANIM", anim) + frame * frames)


def tiff_bytes(
    pages: list[np.ndarray],
    *,
    order: str = "<",
    long_dims: bool = True,
    claim: tuple[int, int] | None = None,
    loop: bool = False,
    bigtiff: bool = False,
) -> bytes:
    """An uncompressed RGB TIFF written by hand: either byte order, ImageWidth/ImageLength as
    SHORT or LONG, optionally BigTIFF, a first IFD claiming ``claim`` = (width, height), or an
    IFD chain whose last page points back at the first (``loop``)."""
    e = order
    off_fmt, cnt_fmt, head = ("Q", "Q", 16) if bigtiff else ("I", "H", 8)
    out = bytearray(b"II" if e == "<" else b"MM")
    out += struct.pack(e + "H", 43 if bigtiff else 42)
    if bigtiff:
        out += struct.pack(e + "HH", 8, 0)
    out += struct.pack(e + off_fmt, 0)  # first IFD offset, patched below
    ifd_offsets: list[int] = []
    next_ptrs: list[int] = []
    for n, page in enumerate(pages):
        h, w = page.shape[:2]
        rgb = np.ascontiguousarray(cv2.cvtColor(page, cv2.COLOR_BGR2RGB))
        strip = len(out)
        out += rgb.tobytes()
        if len(out) % 2:
            out += b"\x00"
        bps = len(out)
        out += struct.pack(e + "HHH", 8, 8, 8)
        cw, chh = claim if (claim and n == 0) else (w, h)
        dim_type = 4 if long_dims or max(cw, chh) > 0xFFFF else 3
        entries = [
            (256, dim_type, 1, cw), (257, dim_type, 1, chh), (258, 3, 3, bps), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, strip), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, rgb.nbytes), (284, 3, 1, 1),
        ]
        ifd_offsets.append(len(out))
        out += struct.pack(e + cnt_fmt, len(entries))
        width = 8 if bigtiff else 4
        for tag, typ, count, value in entries:
            if tag == 258 and bigtiff:  # three SHORTs fit in BigTIFF's 8-byte value field
                val = struct.pack(e + "HHH", 8, 8, 8)
            else:
                val = struct.pack(e + ("H" if typ == 3 and count == 1 else "I"), value)
            out += struct.pack(e + ("HHQ" if bigtiff else "HHI"), tag, typ, count) + val.ljust(width, b"\x00")
        next_ptrs.append(len(out))
        out += struct.pack(e + off_fmt, 0)
    struct.pack_into(e + off_fmt, out, head - (8 if bigtiff else 4), ifd_offsets[0])
    for i, ptr in enumerate(next_ptrs[:-1]):
        struct.pack_into(e + off_fmt, out, ptr, ifd_offsets[i + 1])
    if loop:
        struct.pack_into(e + off_fmt, out, next_ptrs[-1], ifd_offsets[0])
    return bytes(out)


def progressive_scan_bomb(seed_jpeg: bytes, scans: int) -> bytes:
    """A progressive JPEG whose last scan (header and data) is repeated ``scans`` times: each
    repeat makes libjpeg walk the whole coefficient buffer again."""
    sos = [m for m in jpeg_markers(seed_jpeg) if seed_jpeg[m + 1] == 0xDA]
    eoi = seed_jpeg.rfind(b"\xff\xd9")
    last = seed_jpeg[sos[-1] : eoi]
    return seed_jpeg[:eoi] + last * scans + b"\xff\xd9"


def make_seeds() -> list[Seed]:
    """Every format and variant the decoders have a separate path for (small pictures)."""
    pic = _picture(96, 72)
    tall = _picture(40, 64, seed=7)
    frames = [_picture(96, 72, seed=s) for s in (8, 9)]
    rgb = cv2.cvtColor(pic, cv2.COLOR_BGR2RGB)
    seeds = [
        Seed("jpeg", "baseline", _cv(pic, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 85))),
        Seed("jpeg", "progressive", _pil(pic, "JPEG", quality=80, progressive=True)),
        Seed("jpeg", "cmyk", _pil(pic, "JPEG", mode="CMYK", quality=80)),
        Seed("jpeg", "exif_rotated", _exif_rotated_jpeg(tall)),
        Seed("jpeg", "restart_gray", _cv(cv2.cvtColor(pic, cv2.COLOR_BGR2GRAY), ".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 2))),
        Seed("png", "rgb8", _cv(pic, ".png")),
        Seed("png", "rgb16", _cv(pic.astype(np.uint16) * 257, ".png")),
        Seed("png", "palette", _pil(pic, "PNG", mode="P")),
        Seed("png", "interlaced", interlaced_png(rgb)),
        Seed("png", "animated", _pil(pic, "PNG", frames=frames)),
        Seed("gif", "animated", _pil(pic, "GIF", frames=frames, duration=100, loop=0)),
        Seed("gif", "static", _pil(tall, "GIF")),
        Seed("bmp", "rgb24", _cv(pic, ".bmp")),
        Seed("bmp", "palette8", _pil(pic, "BMP", mode="P")),
        Seed("webp", "lossy", _cv(pic, ".webp", (cv2.IMWRITE_WEBP_QUALITY, 80))),
        Seed("webp", "lossless", _cv(pic, ".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))),
        Seed("webp", "alpha", _pil(cv2.cvtColor(pic, cv2.COLOR_BGR2BGRA), "WEBP", mode="RGBA", quality=70)),
        Seed("webp", "animated", _pil(pic, "WEBP", frames=frames, duration=100, quality=70)),
        Seed("tiff", "multipage", _pil(pic, "TIFF", frames=frames)),
        Seed("tiff", "lzw", _pil(pic, "TIFF", compression="tiff_lzw")),
        Seed("tiff", "deflate", _pil(pic, "TIFF", compression="tiff_adobe_deflate")),
        Seed("tiff", "jpeg", _pil(pic, "TIFF", compression="jpeg")),
        Seed("tiff", "packbits", _pil(pic, "TIFF", compression="packbits")),
        Seed("tiff", "big_endian_short", tiff_bytes([tall], order=">", long_dims=False)),
        Seed("tiff", "bigtiff", tiff_bytes([tall], bigtiff=True)),
    ]
    return seeds


def _exif_rotated_jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _pil(img, "JPEG", quality=85, exif=exif.tobytes())


# ---------------------------------------------------------------------------------------
# Structure: boundaries and header fields per container
# ---------------------------------------------------------------------------------------
def jpeg_markers(data: bytes) -> list[int]:
    """Offsets of every marker (0xFF followed by neither 0x00 nor 0xFF), in order."""
    out, i = [], 0
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= len(data):
            return out
        if data[i + 1] not in (0x00, 0xFF):
            out.append(i)
        i += 1


def png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, payload length, type) of each chunk, while the lengths stay inside the file."""
    out, i = [], 8
    while i + 12 <= len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append((i, n, data[i + 4 : i + 8]))
        if i + 12 + n > len(data):
            break
        i += 12 + n
    return out


def gif_blocks(data: bytes) -> list[int]:
    """Offsets of the logical screen, colour tables, each extension/image block and sub-block."""
    out = [6, 13]
    if len(data) < 13:
        return out
    i = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while i < len(data):
        out.append(i)
        kind = data[i]
        if kind == 0x3B:
            break
        if kind == 0x21:
            i += 2
        elif kind == 0x2C and i + 10 <= len(data):
            flags = data[i + 9]
            i += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
            out.append(i)
            i += 1  # LZW minimum code size
        else:
            break
        while i < len(data) and data[i]:
            out.append(i)
            i += 1 + data[i]
        i += 1
    return out


def riff_chunks(data: bytes, start: int = 12, end: int | None = None) -> list[tuple[int, int, bytes]]:
    """(offset, payload length, fourcc) of each RIFF chunk, including those nested in ANMF frames."""
    end = len(data) if end is None else end
    out, i = [], start
    while i + 8 <= end:
        kind = data[i : i + 4]
        (n,) = struct.unpack("<I", data[i + 4 : i + 8])
        out.append((i, n, kind))
        if kind == b"ANMF" and i + 24 <= end:
            out.extend(riff_chunks(data, i + 24, min(end, i + 8 + n)))
        i += 8 + n + (n & 1)
    return out


_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}


@dataclass(frozen=True)
class TiffEntry:
    at: int  # offset of the 12-byte entry
    tag: int
    type: int
    count: int
    value_at: int  # offset of the value (inline or pointed to)


def tiff_ifds(data: bytes, limit: int = 64) -> list[tuple[int, list[TiffEntry]]]:
    """The classic-TIFF IFD chain: (IFD offset, entries), stopping at loops and bad offsets."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return []
    e = "<" if data[:2] == b"II" else ">"
    (off,) = struct.unpack(e + "I", data[4:8])
    seen, out = set(), []
    while off and off not in seen and off + 2 <= len(data) and len(out) < limit:
        seen.add(off)
        (n,) = struct.unpack(e + "H", data[off : off + 2])
        entries = []
        for k in range(n):
            at = off + 2 + 12 * k
            if at + 12 > len(data):
                break
            tag, typ, count = struct.unpack(e + "HHI", data[at : at + 8])
            size = _TIFF_TYPES.get(typ, 1) * count
            value_at = at + 8 if size <= 4 else struct.unpack(e + "I", data[at + 8 : at + 12])[0]
            entries.append(TiffEntry(at, tag, typ, count, value_at))
        out.append((off, entries))
        nxt = off + 2 + 12 * n
        if nxt + 4 > len(data):
            break
        (off,) = struct.unpack(e + "I", data[nxt : nxt + 4])
    return out


@functools.lru_cache(maxsize=256)
def boundaries(fmt: str, data: bytes) -> tuple[int, ...]:
    """Structural boundaries of ``data``: where a truncation or splice is most telling."""
    n = len(data)
    if fmt == "jpeg":
        out = jpeg_markers(data)
    elif fmt == "png":
        out = [8]
        for at, size, _ in png_chunks(data):
            out += [at, at + 4, at + 8, at + 8 + size]
    elif fmt == "gif":
        out = gif_blocks(data)
    elif fmt == "webp":
        out = [12]
        for at, size, _ in riff_chunks(data):
            out += [at, at + 8, at + 8 + size]
    elif fmt == "bmp":
        out = [14, 18, 26]
        if n >= 18:
            out.append(14 + struct.unpack("<I", data[14:18])[0])
        if n >= 14:
            out.append(struct.unpack("<I", data[10:14])[0])
    elif fmt == "tiff":
        out = [8]
        for off, entries in tiff_ifds(data):
            out += [off, off + 2 + 12 * len(entries)] + [en.at for en in entries]
            out += [en.value_at for en in entries if en.tag in (273, 279)]
    else:
        out = []
    out += [1, n // 2, n - 1]
    return tuple(sorted({b for b in out if 0 < b < n}))


@dataclass(frozen=True)
class Field:
    """A header field a lie can rewrite: where, how wide, which byte order, and what it is."""

    at: int
    size: int  # bytes (3 for WebP's 24-bit fields)
    order: str  # "<" or ">"
    what: str
    fix: Callable[[bytearray], None] | None = None  # recompute a checksum after rewriting


def _png_crc_fixer(at: int) -> Callable[[bytearray], None]:
    def fix(buf: bytearray) -> None:
        (n,) = struct.unpack(">I", buf[at : at + 4])
        end = at + 8 + n
        if end + 4 <= len(buf):
            struct.pack_into(">I", buf, end, zlib.crc32(bytes(buf[at + 4 : end])) & 0xFFFFFFFF)

    return fix


@functools.lru_cache(maxsize=256)
def header_fields(fmt: str, data: bytes) -> tuple[Field, ...]:
    """The fields of ``data``'s headers that say how big things are, where they are or how many."""
    f: list[Field] = []
    if fmt == "png":
        for at, size, kind in png_chunks(data):
            fix = _png_crc_fixer(at)
            f.append(Field(at, 4, ">", f"{kind.decode('latin-1')}.length"))  # not covered by the CRC
            if kind == b"IHDR":
                f += [Field(at + 8, 4, ">", "IHDR.width", fix), Field(at + 12, 4, ">", "IHDR.height", fix),
                      Field(at + 16, 1, ">", "IHDR.bit_depth", fix), Field(at + 17, 1, ">", "IHDR.color_type", fix),
                      Field(at + 20, 1, ">", "IHDR.interlace", fix)]
            elif kind in (b"acTL",):
                f += [Field(at + 8, 4, ">", "acTL.frames", fix)]
            elif kind == b"fcTL":
                f += [Field(at + 12, 4, ">", "fcTL.width", fix), Field(at + 16, 4, ">", "fcTL.height", fix),
                      Field(at + 20, 4, ">", "fcTL.x", fix)]
            elif kind == b"IDAT" and size >= 2:
                f.append(Field(at + 8, 1, ">", "IDAT.zlib_header", fix))
    elif fmt == "jpeg":
        for m in jpeg_markers(data):
            marker = data[m + 1]
            if marker in (0xD8, 0xD9, 0x01) or 0xD0 <= marker <= 0xD7 or m + 4 > len(data):
                continue
            f.append(Field(m + 2, 2, ">", f"FF{marker:02X}.length"))
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                f += [Field(m + 4, 1, ">", "SOF.precision"), Field(m + 5, 2, ">", "SOF.height"),
                      Field(m + 7, 2, ">", "SOF.width"), Field(m + 9, 1, ">", "SOF.components"),
                      Field(m + 11, 1, ">", "SOF.sampling")]
            elif marker == 0xDA:
                f += [Field(m + 4, 1, ">", "SOS.components"), Field(m + 6, 1, ">", "SOS.tables")]
            elif marker == 0xC4:
                f += [Field(m + 4, 1, ">", "DHT.class_id"), Field(m + 5, 1, ">", "DHT.count")]
            elif marker == 0xDD:
                f.append(Field(m + 4, 2, ">", "DRI.interval"))
    elif fmt == "gif":
        f += [Field(6, 2, "<", "screen.width"), Field(8, 2, "<", "screen.height"), Field(10, 1, "<", "screen.flags")]
        for b in gif_blocks(data):
            if b < len(data) and data[b] == 0x2C and b + 10 <= len(data):
                f += [Field(b + 1, 2, "<", "frame.left"), Field(b + 5, 2, "<", "frame.width"),
                      Field(b + 7, 2, "<", "frame.height"), Field(b + 9, 1, "<", "frame.flags")]
            elif b > 13 and b < len(data) and data[b] not in (0x21, 0x2C, 0x3B):
                f.append(Field(b, 1, "<", "sub_block.length"))
    elif fmt == "bmp":
        f += [Field(2, 4, "<", "file_size"), Field(10, 4, "<", "pixel_offset"), Field(14, 4, "<", "dib_size"),
              Field(18, 4, "<", "width"), Field(22, 4, "<", "height"), Field(26, 2, "<", "planes"),
              Field(28, 2, "<", "bits_per_pixel"), Field(30, 4, "<", "compression"), Field(34, 4, "<", "image_size"),
              Field(46, 4, "<", "colors_used")]
    elif fmt == "webp":
        f.append(Field(4, 4, "<", "RIFF.size"))
        for at, size, kind in riff_chunks(data):
            name = kind.decode("latin-1").strip()
            f.append(Field(at + 4, 4, "<", f"{name}.size"))
            if kind == b"VP8X":
                f += [Field(at + 8, 1, "<", "VP8X.flags"), Field(at + 12, 3, "<", "VP8X.canvas_width"),
                      Field(at + 15, 3, "<", "VP8X.canvas_height")]
            elif kind == b"ANMF":
                f += [Field(at + 8, 3, "<", "ANMF.x"), Field(at + 14, 3, "<", "ANMF.width"),
                      Field(at + 17, 3, "<", "ANMF.height")]
            elif kind == b"VP8L":
                f += [Field(at + 9, 4, "<", "VP8L.dims")]
            elif kind == b"VP8 ":
                f += [Field(at + 14, 2, "<", "VP8.width"), Field(at + 16, 2, "<", "VP8.height")]
    elif fmt == "tiff":
        e = "<" if data[:2] == b"II" else ">"
        f.append(Field(4, 4, e, "first_ifd_offset"))
        for off, entries in tiff_ifds(data):
            f.append(Field(off, 2, e, "IFD.entry_count"))
            f.append(Field(off + 2 + 12 * len(entries), 4, e, "IFD.next_offset"))
            for en in entries:
                f.append(Field(en.at + 2, 2, e, f"tag{en.tag}.type"))
                f.append(Field(en.at + 4, 4, e, f"tag{en.tag}.count"))
                vsize = 2 if en.type == 3 and en.value_at == en.at + 8 else 4
                f.append(Field(en.at + 8, vsize, e, f"tag{en.tag}.value"))
    return tuple(x for x in f if x.at + x.size <= len(data))


def _read(buf: bytes | bytearray, fld: Field) -> int:
    return int.from_bytes(buf[fld.at : fld.at + fld.size], "little" if fld.order == "<" else "big")


def _write(buf: bytearray, fld: Field, value: int) -> None:
    value &= (1 << (8 * fld.size)) - 1
    buf[fld.at : fld.at + fld.size] = value.to_bytes(fld.size, "little" if fld.order == "<" else "big")
    if fld.fix:
        fld.fix(buf)


def _lie_value(rng: random.Random, old: int, size: int) -> int:
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, top, top - 1, top >> 1, (top >> 1) + 1, old + 1, old - 1, old * 2, old * 16, old // 2,
               0x7FFF, 0x8000, 0xFFFF, 16384, 30000, 65535, 100000, 1 << 20, 1 << 24, rng.randrange(top + 1)]
    return rng.choice(choices)


# ---------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------
def _flip(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    buf = bytearray(s.data)
    k = rng.choice((1, 1, 2, 3, 4, 8, 16))
    head = rng.random() < 0.5
    spots = []
    for _ in range(k):
        i = rng.randrange(min(len(buf), 512) if head else len(buf))
        if rng.random() < 0.6:
            buf[i] ^= 1 << rng.randrange(8)
        else:
            buf[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        spots.append(i)
    return bytes(buf), f"{k} bytes at {sorted(spots)[:8]}"


def _truncate(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    cut = rng.choice(boundaries(s.format, s.data)) + rng.choice((0, 0, 0, 1, -1, 2, 4))
    cut = max(1, min(len(s.data) - 1, cut))
    return s.data[:cut], f"cut at {cut} of {len(s.data)}"


def _zero(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    start = rng.choice(boundaries(s.format, s.data) + (rng.randrange(len(s.data)),))
    length = min(len(s.data) - start, rng.choice((1, 2, 4, 8, 16, 64, 256, 4096)))
    fill = rng.choice((b"\x00", b"\xff"))
    return s.data[:start] + fill * length + s.data[start + length :], f"{length} x {fill!r} at {start}"


def _duplicate(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    marks = boundaries(s.format, s.data) + (len(s.data),)
    a = rng.choice(marks[:-1])
    later = [m for m in marks if m > a]
    b = rng.choice(later) if later and rng.random() < 0.7 else min(len(s.data), a + rng.randrange(1, 64))
    times = rng.choice((1, 1, 2, 3, 50))
    return s.data[:b] + s.data[a:b] * times + s.data[b:], f"[{a}:{b}] repeated {times}x"


def _lie(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    fields = header_fields(s.format, s.data)
    if not fields:
        return _flip(rng, s, seeds)
    buf = bytearray(s.data)
    parts = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        fld = rng.choice(fields)
        old = _read(buf, fld)
        new = _lie_value(rng, old, fld.size)
        _write(buf, fld, new)
        parts.append(f"{fld.what}@{fld.at}: {old}->{new & ((1 << (8 * fld.size)) - 1)}")
    return bytes(buf), "; ".join(parts)


def _splice(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    other = rng.choice(seeds)
    a = rng.choice(boundaries(s.format, s.data))
    b = rng.choice(boundaries(other.format, other.data) or (0,))
    return s.data[:a] + other.data[b:], f"{s.variant}[:{a}] + {other.format}/{other.variant}[{b}:]"


def _magic_garbage(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    marks = boundaries(s.format, s.data)
    keep = rng.choice((2, 4, 8, 12, 16, 26, 32, 64, marks[min(2, len(marks) - 1)]))
    keep = min(keep, len(s.data))
    n = rng.choice((0, 1, 16, 100, 1000, 10000))
    tail = rng.randbytes(n)
    if rng.random() < 0.2:  # garbage that ends like the container, so trailer checks pass
        tail += {"jpeg": b"\xff\xd9", "png": b"\x00\x00\x00\x00IEND\xaeB`\x82", "gif": b";"}.get(s.format, b"")
    return s.data[:keep] + tail, f"first {keep} bytes + {n} random"


def _bomb(rng: random.Random, s: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    """A tiny file that promises a huge canvas, or thousands of frames, pages or scans."""
    fmt = s.format
    big = rng.choice((6000, 16383, 16384, 65535))
    many = rng.choice((1000, 5000, 20000))
    if fmt == "gif":
        kind = rng.choice(("screen", "frames", "frame_size"))
        if kind == "screen":
            return gif_bytes((big, big), 1), f"{big}x{big} logical screen, one 1x1 frame"
        if kind == "frames":
            return gif_bytes((64, 64), many), f"{many} frames on a 64x64 screen"
        return gif_bytes((64, 64), 1, (big, big)), f"64x64 screen, frame descriptor claims {big}x{big}"
    if fmt == "webp":
        kind = rng.choice(("canvas", "frames", "frame_size"))
        if kind == "canvas":
            return webp_animation((big, big), 1), f"{big}x{big} canvas, one 1x1 frame"
        if kind == "frames":
            return webp_animation((64, 64), many), f"{many} frames on a 64x64 canvas"
        return webp_animation((64, 64), 1, (big, big)), f"64x64 canvas, ANMF claims {big}x{big}"
    if fmt == "tiff":
        kind = rng.choice(("dims", "dims_short", "pages", "loop", "second_page", "bigtiff", "bigtiff_dims"))
        px = _picture(4, 4)
        if kind == "dims":
            # under OpenCV's own 2^30-pixel limit (it would allocate) and above it (it refuses)
            huge = rng.choice((20000, 30000, 46000, 100000, 1 << 20, 0xFFFFFFFF))
            return tiff_bytes([px], order=rng.choice("<>"), claim=(huge, huge)), f"IFD claims {huge}x{huge} (LONG)"
        if kind == "dims_short":
            return tiff_bytes([px], order=rng.choice("<>"), long_dims=False, claim=(65535, 65535)), "IFD claims 65535x65535 (SHORT)"
        if kind == "pages":
            return tiff_bytes([px] * many), f"{many} pages"
        if kind == "loop":
            return tiff_bytes([px] * 3, loop=True), "IFD chain loops back to the first page"
        if kind == "second_page":
            data = tiff_bytes([px, px])
            ifds = tiff_ifds(data)
            e = ifds[1][1]
            buf = bytearray(data)
            struct.pack_into("<I", buf, e[0].at + 8, 100000)
            struct.pack_into("<I", buf, e[1].at + 8, 100000)
            return bytes(buf), "page 2 claims 100000x100000"
        dims = (100000, 100000) if kind == "bigtiff_dims" else None
        return tiff_bytes([px], bigtiff=True, claim=dims), f"BigTIFF{' claiming 100000x100000' if dims else ''}"
    if fmt == "png":
        kind = rng.choice(("ihdr", "zlib", "frames"))
        if kind == "ihdr":
            ihdr = struct.pack(">IIBBBBB", big, big, 8, 2, 0, 0, 0)
            idat = zlib.compress(b"\x00" * 64)
            return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")), \
                f"IHDR claims {big}x{big}, 64 bytes of pixels"
        if kind == "zlib":
            side = rng.choice((2000, 6000))
            ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
            idat = _zeros_deflated((side * 3 + 1) * side)
            return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")), \
                f"{side}x{side} of zeros in {len(idat):,} deflated bytes"
        ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
        body = png_chunk(b"acTL", struct.pack(">II", many, 0))
        pix = zlib.compress(b"\x00\x00\x00\x00")
        for k in range(many):
            body += png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 2 * k, 1, 1, 0, 0, 1, 10, 0, 0))
            body += png_chunk(b"IDAT" if k == 0 else b"fdAT", (b"" if k == 0 else struct.pack(">I", 2 * k + 1)) + pix)
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + body + png_chunk(b"IEND", b""), f"APNG of {many} frames"
    if fmt == "jpeg":
        prog = next(x for x in seeds if x.variant == "progressive").data
        if rng.random() < 0.5:
            scans = rng.choice((500, 2000, 10000))
            return progressive_scan_bomb(prog, scans), f"progressive JPEG with its last scan repeated {scans}x"
        side = rng.choice((6000, 8000))
        buf = bytearray(prog)
        sof = next(m for m in jpeg_markers(prog) if prog[m + 1] == 0xC2)
        struct.pack_into(">HH", buf, sof + 5, side, side)
        scans = rng.choice((200, 1000, 4000))
        return progressive_scan_bomb(bytes(buf), scans), f"progressive JPEG claiming {side}x{side}, last scan repeated {scans}x"
    # bmp: dimensions that lie about a tiny file
    buf = bytearray(s.data)
    w, h = rng.choice(((big, big), (1, -big), (-big, 1), (6000, 6000), (0x7FFFFFFF, 1)))
    struct.pack_into("<ii", buf, 18, w, h)
    return bytes(buf), f"BMP header claims {w}x{h}"


@functools.lru_cache(maxsize=4)
def _zeros_deflated(n: int) -> bytes:
    return zlib.compress(b"\x00" * n, 9)


_MUTATORS: dict[str, Callable[[random.Random, Seed, list[Seed]], tuple[bytes, str]]] = {
    "flip": _flip, "truncate": _truncate, "zero": _zero, "duplicate": _duplicate, "lie": _lie,
    "splice": _splice, "magic_garbage": _magic_garbage, "bomb": _bomb,
}


def make_case(seeds: list[Seed], seed: int, index: int, mutations: tuple[str, ...] = MUTATIONS,
              formats: tuple[str, ...] = FORMATS) -> Case:
    """Case ``index`` of run ``seed``: a seed picked and mutated by an RNG keyed on both."""
    rng = random.Random(f"{seed}:{index}")
    pool = [s for s in seeds if s.format in formats]
    s = rng.choice(pool)
    weights = [w for m, w in zip(MUTATIONS, _WEIGHTS) if m in mutations]
    names = [m for m in MUTATIONS if m in mutations]
    mutation = rng.choices(names, weights)[0]
    if mutation == "seed":
        return Case(index, s.format, s.variant, mutation, "unchanged", s.data)
    data, detail = _MUTATORS[mutation](rng, s, seeds)
    return Case(index, s.format, s.variant, mutation, detail, data)
