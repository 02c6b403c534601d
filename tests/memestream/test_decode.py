"""decode(): every supported format decodes; every kind of bad input gets its own code and reason."""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest

from memestream import decode as D
from memestream.decode import BadImage, decode, read_info, sniff_format
from memestream.sample import make_image


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return make_image("doom", np.random.default_rng(5))


def _encode(img: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def _animated_gif(frames: list[np.ndarray]) -> bytes:
    from PIL import Image  # Pillow: a dev dependency (pyproject)

    pil = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
    out = io.BytesIO()
    pil[0].save(out, format="GIF", save_all=True, append_images=pil[1:], duration=100, loop=0)
    return out.getvalue()


def _jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF dimensions of a real JPEG (a decompression-bomb header)."""
    i = 2
    while True:
        marker, seglen = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xC3:
            return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]
        i += 2 + seglen


@pytest.mark.parametrize("ext,fmt", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp"), (".bmp", "bmp"), (".tiff", "tiff"), (".gif", "gif")])
def test_supported_formats_decode_to_the_right_size(picture, ext, fmt):
    img, info = decode(_encode(picture, ext))
    assert info.format == fmt
    assert img.shape == picture.shape
    assert (info.width, info.height) == (picture.shape[1], picture.shape[0])
    # lossy formats differ a little, but it is the same picture, not a grey placeholder
    assert np.abs(img.astype(int) - picture.astype(int)).mean() < 30


def test_grayscale_decode_has_one_channel(picture):
    img, _ = decode(_encode(picture, ".png"), color=False)
    assert img.ndim == 2 and img.shape == picture.shape[:2]


def test_animated_gif_decodes_its_first_frame():
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 2] = 255
    blue = np.zeros((40, 60, 3), np.uint8)
    blue[..., 0] = 255
    img, info = decode(_animated_gif([red, blue]))
    assert (info.format, info.width, info.height) == ("gif", 60, 40)
    assert img[..., 2].mean() > 200 and img[..., 0].mean() < 50  # red, i.e. frame 0


def _payloads(picture, bad_payloads) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, expected code, a word the reason must contain)."""
    gif = _encode(picture, ".gif")
    webp = _encode(picture, ".webp")
    return {
        "empty": (bad_payloads["empty"], D.EMPTY, "0 bytes"),
        "truncated_jpeg": (bad_payloads["truncated_jpeg"], D.TRUNCATED, "end-of-image"),
        "truncated_png": (bad_payloads["truncated_png"], D.TRUNCATED, "IEND"),
        "truncated_gif": (gif[: len(gif) // 2], D.TRUNCATED, "trailer"),
        "truncated_webp": (webp[: len(webp) // 2], D.TRUNCATED, "declares"),
        "garbage": (bad_payloads["garbage"], D.NOT_AN_IMAGE, "binary data"),
        "text": (bad_payloads["text"], D.NOT_AN_IMAGE, "found text"),
        "huge_dimensions": (bad_payloads["huge_dimensions"], D.TOO_MANY_PIXELS, "30000x30000"),
        "heic": (bad_payloads["heic"], D.UNSUPPORTED_FORMAT, "heic"),
        "avif": (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + b"\x00" * 64, D.UNSUPPORTED_FORMAT, "avif"),
        "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', D.UNSUPPORTED_FORMAT, "svg"),
        "corrupt_jpeg": (bad_payloads["corrupt_jpeg"], D.CORRUPT, "JPEG"),
    }


def test_every_bad_input_has_its_code_and_a_distinct_reason(picture, bad_payloads):
    cases = _payloads(picture, bad_payloads)
    reasons = {}
    for name, (data, code, word) in cases.items():
        with pytest.raises(BadImage) as err:
            decode(data)
        assert err.value.code == code, f"{name}: {err.value}"
        assert str(err.value).startswith(f"{code}: "), name
        assert word in err.value.detail, f"{name}: {err.value.detail!r} should mention {word!r}"
        reasons[name] = str(err.value)
    assert len(set(reasons.values())) == len(reasons), "two kinds of bad input share one message"
    assert set(D.ERROR_CODES) >= {c for _, c, _ in cases.values()}


def test_fixture_covers_every_kind(bad_payloads):
    """Each conftest payload fails with the code its name promises."""
    expected = {
        "empty": D.EMPTY, "truncated_jpeg": D.TRUNCATED, "truncated_png": D.TRUNCATED, "garbage": D.NOT_AN_IMAGE,
        "text": D.NOT_AN_IMAGE, "huge_dimensions": D.TOO_MANY_PIXELS, "heic": D.UNSUPPORTED_FORMAT, "corrupt_jpeg": D.CORRUPT,
    }
    for name, data in bad_payloads.items():
        with pytest.raises(BadImage) as err:
            decode(data)
        assert err.value.code == expected[name], f"{name}: {err.value}"


def test_oversized_input_is_refused_with_the_cap(picture):
    data = _encode(picture, ".png")
    with pytest.raises(BadImage) as err:
        decode(data, max_bytes=1000)
    assert err.value.code == D.OVERSIZED
    assert "1,000-byte cap" in err.value.detail and f"{len(data):,} bytes" in err.value.detail


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_huge_dimensions_are_refused_without_decoding(picture, bad_payloads, monkeypatch, kind):
    data = bad_payloads["huge_dimensions"] if kind == "png" else _jpeg_claiming(_encode(picture, ".jpg"), 30000, 30000)
    calls = []
    monkeypatch.setattr(D.cv2, "imdecode", lambda *a: calls.append(a))
    with pytest.raises(BadImage) as err:
        decode(data)
    assert calls == [], "the pixels were handed to the decoder"
    assert err.value.code == D.TOO_MANY_PIXELS
    assert "30000x30000" in err.value.detail and "40,000,000-pixel cap" in err.value.detail


def test_pixel_cap_is_configurable(picture):
    with pytest.raises(BadImage, match=r"^too_many_pixels: .*1,000-pixel cap"):
        decode(_encode(picture, ".png"), max_pixels=1000)


def test_truncated_tiff_is_refused_readably(picture):
    data = _encode(picture, ".tiff")
    with pytest.raises(BadImage) as err:
        decode(data[: len(data) // 2])
    assert err.value.code in (D.CORRUPT, D.TRUNCATED)
    assert "0x0" not in err.value.detail and "TIFF" in err.value.detail


def test_read_info_parses_headers_without_decoding(picture, monkeypatch):
    monkeypatch.setattr(D.cv2, "imdecode", None)  # any decode attempt would crash
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png"), (".webp", "webp"), (".bmp", "bmp"), (".gif", "gif")):
        info = read_info(_encode(picture, ext))
        assert (info.format, info.width, info.height) == (fmt, picture.shape[1], picture.shape[0])


def test_sniff_format_names_containers():
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_format(b"GIF89a....") == "gif"
    assert sniff_format(b"hello") is None


def test_large_jpeg_is_decoded_at_one_eighth_scale():
    big = cv2.resize(make_image("animal_crossing", np.random.default_rng(2)), (1600, 1200))
    data = _encode(big, ".jpg")
    img, info = decode(data, min_side=64)
    assert (info.width, info.height) == (1600, 1200)
    assert img.shape[:2] == (150, 200)  # 1200/8 x 1600/8
    assert decode(data, min_side=300)[0].shape[:2] == (300, 400)  # 1/4 keeps 300
    assert decode(data)[0].shape[:2] == (1200, 1600)
    # PNG has no reduced decode: full size whatever min_side says
    assert decode(_encode(big, ".png"), min_side=64)[0].shape[:2] == (1200, 1600)
