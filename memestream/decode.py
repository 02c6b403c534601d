"""Decode image bytes safely: sniff the format, check size and dimensions, then decode.

Every failure is a :class:`BadImage` with a stable ``code`` (for grouping in the
quarantine table) and a message that says what was expected and what was found. The
header is parsed *before* OpenCV sees the bytes, so a 100-megapixel "decompression
bomb" is refused without allocating it (TIFF included: its first IFD is read here), and
JPEGs are decoded at reduced scale (``IMREAD_REDUCED_*``) when the feature set only needs
a small image. ``python -m bench.fuzz`` throws hostile bytes at this path (docs/benchmarks.md).
"""
from __future__ import annotations

import functools
import importlib
import os
import struct
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

#: Default cap on input size (bytes). Larger inputs are refused, not decoded.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
#: Default cap on decoded pixels (width x height): 40 megapixels, e.g. 8000x5000.
DEFAULT_MAX_PIXELS = 40_000_000
#: Most scans a JPEG may have. Encoders write 1 (baseline) to ~10 (progressive) and scan
#: scripts rarely pass 100, but libjpeg walks the whole coefficient buffer once per scan: a
#: 2.2 MB file claiming 6000x6000 with 4000 scans took over 10 s (bench.fuzz); 500 keeps the
#: worst case at the pixel cap to about 2 s.
MAX_JPEG_SCANS = 500

# Stable error codes (the part before the colon in an error message).
EMPTY = "empty"
OVERSIZED = "oversized"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_MANY_PIXELS = "too_many_pixels"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
READ_ERROR = "read_error"
#: decoding needed more memory than the worker's address-space cap (``--worker-memory``) allows
OUT_OF_MEMORY = "out_of_memory"
ERROR_CODES = (EMPTY, OVERSIZED, NOT_AN_IMAGE, UNSUPPORTED_FORMAT, TOO_MANY_PIXELS, TRUNCATED, CORRUPT, READ_ERROR, OUT_OF_MEMORY)

# cv2 refuses images above this many pixels on its own; keep it above our cap so our
# message (with the cap in it) is the one users see.
cv2.setNumThreads(1)


class BadImage(ValueError):
    """Bytes that cannot become an image. ``str(err)`` is ``"<code>: <detail>"``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    """Name the container from magic bytes, or None when nothing matches."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF, BigTIFF
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
            return "heic"
        if brand in (b"avif", b"avis"):
            return "avif"
        return "video"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    stripped = head.lstrip()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in data[:1024]):
        return "svg"
    return None


#: Formats we recognise but do not decode (OpenCV's pip wheel lacks them, or they are not rasters).
UNSUPPORTED = {"heic", "avif", "svg", "video", "jpeg2000"}


def _jpeg_info(data: bytes) -> tuple[int, int, int]:
    """Return (width, height, offset of the first start-of-scan marker) of a JPEG."""
    i, n = 2, len(data)
    width = height = -1
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise BadImage(CORRUPT, f"JPEG marker expected at byte {i}, found 0x{data[i]:02x}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seglen,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if width < 0:
                raise BadImage(CORRUPT, "JPEG has image data before its frame header (no SOF marker)")
            return width, height, i
        i += 2 + seglen
    raise BadImage(TRUNCATED, f"JPEG ends after {n} bytes, before its image data (no start-of-scan marker)")


#: Integer TIFF types libtiff accepts for a dimension (the spec says SHORT or LONG; libtiff also
#: reads BYTE, the signed ones and BigTIFF's LONG8), as struct formats.
_TIFF_DIM_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _tiff_info(data: bytes) -> tuple[int, int]:
    """(width, height) from the first IFD's ImageWidth/ImageLength (classic TIFF and BigTIFF, both
    byte orders, any integer type libtiff reads): OpenCV decodes that page, and a header claiming
    100000x100000 must be refused before it allocates, not after."""
    n = len(data)
    e = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack(e + "H", data[2:4])
    if magic == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        bytesize, _ = struct.unpack(e + "HH", data[4:8])
        if bytesize != 8:
            raise BadImage(CORRUPT, f"BigTIFF header declares {bytesize}-byte offsets, expected 8")
        (ifd,) = struct.unpack(e + "Q", data[8:16])
        count_fmt, entry_size, value_size = "Q", 20, 8
    else:
        (ifd,) = struct.unpack(e + "I", data[4:8])
        count_fmt, entry_size, value_size = "H", 12, 4
    head = struct.calcsize(count_fmt)
    if ifd < 8 or ifd + head > n:
        kind = TRUNCATED if ifd >= n else CORRUPT
        raise BadImage(kind, f"TIFF's first IFD is at byte {ifd}, outside its {n} bytes")
    (entries,) = struct.unpack(e + count_fmt, data[ifd : ifd + head])
    dims: dict[int, int] = {}
    for k in range(min(entries, (n - ifd - head) // entry_size)):
        at = ifd + head + k * entry_size
        tag, typ = struct.unpack(e + "HH", data[at : at + 4])
        if tag not in (256, 257):
            continue
        fmt = _TIFF_DIM_TYPES.get(typ)
        name = "ImageWidth" if tag == 256 else "ImageLength"
        if fmt is None or struct.calcsize(fmt) > value_size:
            raise BadImage(CORRUPT, f"TIFF {name} has type {typ}, expected SHORT or LONG (or another integer type)")
        (count,) = struct.unpack(e + ("Q" if value_size == 8 else "I"), data[at + 4 : at + 4 + value_size])
        if count < 1:
            raise BadImage(CORRUPT, f"TIFF {name} has no value (count 0)")
        value_at = at + 4 + value_size  # the count field is as wide as the value field
        dims[tag] = struct.unpack(e + fmt, data[value_at : value_at + struct.calcsize(fmt)])[0]
        if dims[tag] < 0:
            raise BadImage(CORRUPT, f"TIFF {name} is negative ({dims[tag]})")
    if 256 not in dims or 257 not in dims:
        missing = " and ".join(name for tag, name in ((256, "ImageWidth"), (257, "ImageLength")) if tag not in dims)
        if entries * entry_size + ifd + head > n:
            raise BadImage(TRUNCATED, f"TIFF's first IFD ends after {n} bytes, before its {missing}")
        raise BadImage(CORRUPT, f"TIFF's first IFD has no {missing}")
    return dims[256], dims[257]


def _png_chunks_fit(data: bytes) -> None:
    """Every chunk before the image data lies inside the file. OpenCV's PNG reader allocates each
    of those chunks' declared length before reading it: a 45-byte PNG whose second chunk claimed
    0xFF000000 bytes made it allocate and touch 4 GB (found by bench.fuzz_atheris). From the first
    IDAT on, libpng streams the data and caps what it buffers, so later chunks are left to it (a
    lying length in an APNG's later frame does not stop its first frame from decoding)."""
    i, n = 8, len(data)
    while i + 8 <= n:
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        if kind == b"IDAT":
            return
        if i + 12 + length > n:
            raise BadImage(CORRUPT, f"PNG chunk {kind!r} at byte {i} declares {length:,} bytes of data, "
                                    f"only {max(0, n - i - 12):,} follow in the file")
        if kind == b"IEND":  # no image data at all: libpng says so
            return
        i += 12 + length
    raise BadImage(TRUNCATED, f"PNG ends after {n} bytes before its image data (no IDAT chunk)")


def read_info(data: bytes) -> ImageInfo:
    """Parse format and dimensions from the header without decoding pixels.

    Also checks the container's end marker, so a file cut short in transit is reported
    as ``truncated`` rather than decoded into a half-grey image.
    """
    fmt = sniff_format(data)
    if fmt is None:
        printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in data[:64])
        kind = "text" if data[:64] and printable == len(data[:64]) else "binary data"
        raise BadImage(
            NOT_AN_IMAGE,
            f"expected JPEG, PNG, GIF, BMP, WebP or TIFF bytes, found {kind} starting {data[:8]!r}",
        )
    if fmt in UNSUPPORTED:
        raise BadImage(UNSUPPORTED_FORMAT, f"{fmt} images are not supported (supported: JPEG, PNG, GIF, BMP, WebP, TIFF)")
    n = len(data)
    try:
        if fmt == "jpeg":
            width, height, sos = _jpeg_info(data)
            eoi = data.rfind(b"\xff\xd9")
            if eoi < sos:
                raise BadImage(TRUNCATED, f"JPEG of {width}x{height} ends after {n} bytes without its end-of-image marker")
            # 0xFF in entropy-coded data is stuffed (FF 00), so every FF DA from here on starts a scan
            scans = data.count(b"\xff\xda", sos)
            if scans > MAX_JPEG_SCANS:
                raise BadImage(CORRUPT, f"JPEG of {width}x{height} has {scans:,} scans, expected at most {MAX_JPEG_SCANS} "
                                        "(each one costs a pass over the whole image)")
        elif fmt == "png":
            if n < 33 or data[12:16] != b"IHDR":
                raise BadImage(TRUNCATED if n < 33 else CORRUPT, f"PNG header is incomplete ({n} bytes)")
            width, height = struct.unpack(">II", data[16:24])
            if data.rfind(b"IEND", max(0, n - 64)) < 0:
                raise BadImage(TRUNCATED, f"PNG of {width}x{height} ends after {n} bytes without its IEND chunk")
            _png_chunks_fit(data)
        elif fmt == "gif":
            width, height = struct.unpack("<HH", data[6:10])
            if not data.rstrip(b"\x00").endswith(b";"):
                raise BadImage(TRUNCATED, f"GIF of {width}x{height} ends after {n} bytes without its trailer")
        elif fmt == "bmp":
            declared = struct.unpack("<I", data[2:6])[0]
            dib = struct.unpack("<I", data[14:18])[0]
            if dib == 12:
                width, height = struct.unpack("<HH", data[18:22])
            else:
                width, height = struct.unpack("<ii", data[18:26])
            height = abs(height)
            if declared and n < declared:
                raise BadImage(TRUNCATED, f"BMP declares {declared} bytes, found {n}")
        elif fmt == "webp":
            declared = struct.unpack("<I", data[4:8])[0] + 8
            if n < declared:
                raise BadImage(TRUNCATED, f"WebP declares {declared} bytes, found {n}")
            chunk = data[12:16]
            # the first chunk's header must be whole: a slice past the end is short, not an error
            need = _WEBP_HEADER_BYTES.get(chunk)
            if need is not None and n < need:
                raise BadImage(TRUNCATED, f"WebP header is cut short: its {chunk.decode()} chunk needs {need} bytes, found {n}")
            if chunk == b"VP8X":
                width = 1 + int.from_bytes(data[24:27], "little")
                height = 1 + int.from_bytes(data[27:30], "little")
            elif chunk == b"VP8L":
                b = data[21:25]
                width = 1 + (((b[1] & 0x3F) << 8) | b[0])
                height = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            elif chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                width &= 0x3FFF
                height &= 0x3FFF
            else:
                raise BadImage(CORRUPT, f"WebP has an unknown first chunk {chunk!r}")
        else:  # tiff: OpenCV decodes the first page, whose size is in the first IFD
            width, height = _tiff_info(data)
    except struct.error as exc:
        raise BadImage(TRUNCATED, f"{fmt.upper()} header is cut short ({n} bytes)") from exc
    return ImageInfo(fmt, int(width), int(height))


#: Bytes a WebP file needs for its dimensions, by first chunk (the RIFF header, the chunk
#: header, then VP8X's canvas size, VP8L's 14-bit sizes after the signature byte, or the lossy
#: frame's sizes after its start code).
_WEBP_HEADER_BYTES = {b"VP8X": 30, b"VP8L": 25, b"VP8 ": 30}

#: What OpenCV says when an allocation fails (under the worker's address-space cap, say).
_CV_NO_MEMORY = ("Insufficient memory", "Failed to allocate", "bad_alloc")


def cv_error(exc: Exception, what: str) -> BadImage:
    """An OpenCV (or allocation) failure as a coded error: ``out_of_memory`` when memory ran out
    (the worker's cap, ``--worker-memory``), else ``corrupt``."""
    text = str(exc).strip()
    last = text.splitlines()[-1][:200] if text else type(exc).__name__
    if isinstance(exc, MemoryError) or any(m in text for m in _CV_NO_MEMORY):
        return BadImage(OUT_OF_MEMORY, f"{what}: it needed more memory than this worker may use (--worker-memory): {last}")
    return BadImage(CORRUPT, f"{what}: {last}")


def _reduction(info: ImageInfo, min_side: int | None) -> int:
    """Largest JPEG DCT scale factor (1, 2, 4, 8) that keeps the short side >= min_side."""
    if info.format != "jpeg" or not min_side or info.width <= 0:
        return 1
    short = min(info.width, info.height)
    for factor in (8, 4, 2):
        if short // factor >= min_side:
            return factor
    return 1


#: Tests only: ``module:function`` called with every input's bytes before they are decoded. The
#: poison-pill tests make "the decoder" crash or hang on a marker payload with it, in the Spark
#: workers and the isolation children alike (they inherit the environment). Unset otherwise.
TEST_HOOK_ENV = "MEMESTREAM_TEST_DECODER_HOOK"


@functools.cache
def _test_hook(spec: str | None) -> Callable[[bytes], None] | None:
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


_REDUCED = {
    (True, 2): cv2.IMREAD_REDUCED_COLOR_2,
    (True, 4): cv2.IMREAD_REDUCED_COLOR_4,
    (True, 8): cv2.IMREAD_REDUCED_COLOR_8,
    (False, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (False, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (False, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def decode(
    data: bytes | None,
    *,
    color: bool = True,
    min_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``data`` into a uint8 BGR (``color``) or grayscale array.

    ``min_side`` is the smallest short side the caller needs; JPEGs are decoded at the
    largest DCT reduction that still provides it. Raises :class:`BadImage`.
    """
    if data is None or len(data) == 0:
        raise BadImage(EMPTY, "expected image bytes, found 0 bytes")
    hook = _test_hook(os.environ.get(TEST_HOOK_ENV))
    if hook is not None:
        hook(data)
    if len(data) > max_bytes:
        raise BadImage(OVERSIZED, f"input is {len(data):,} bytes, above the {max_bytes:,}-byte cap (--max-bytes)")
    info = read_info(data)
    if info.width * info.height > max_pixels:
        raise BadImage(
            TOO_MANY_PIXELS,
            f"{info.format.upper()} is {info.width}x{info.height} = {info.width * info.height:,} pixels, "
            f"above the {max_pixels:,}-pixel cap (--max-pixels)",
        )
    if info.width == 0 or info.height == 0:
        raise BadImage(CORRUPT, f"{info.format.upper()} header declares an empty {info.width}x{info.height} image")
    factor = _reduction(info, min_side)
    flag = _REDUCED[(color, factor)] if factor > 1 else (cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, flag)
    except cv2.error as exc:  # OpenCV raises on some malformed streams instead of returning None
        raise cv_error(exc, f"{info.format.upper()} could not be decoded") from exc
    if img is None or img.size == 0:
        raise BadImage(CORRUPT, f"{info.format.upper()} of {info.width}x{info.height} could not be decoded "
                                f"({len(data):,} bytes of damaged or incomplete data)")
    if info.format == "tiff":
        h, w = img.shape[:2]  # an EXIF-style orientation tag may swap the sides
        if w * h > max_pixels:  # cannot happen when libtiff read the IFD we read; kept as a backstop
            raise BadImage(TOO_MANY_PIXELS, f"TIFF is {w}x{h} pixels, above the {max_pixels:,}-pixel cap (--max-pixels)")
        info = ImageInfo("tiff", w, h)
    return img, info
