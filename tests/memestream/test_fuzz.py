"""Hostile inputs (issue 24): what bench.fuzz found stays fixed, and a seeded slice of it runs in CI.

Every input is generated here (bench.fuzz_corpus writes the containers by hand or with Pillow);
cases that once crashed, hung or ran out of memory run in bench.fuzz's worker processes, under
its time and memory caps, so a regression is reported as the finding it was instead of taking
pytest down with it.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench.fuzz_corpus as corpus
from bench.fuzz import FINDINGS, Outcome, WorkerPool, allocation_failure, classify, main
from bench.fuzz_corpus import FORMATS, MUTATIONS, Case
from memestream import decode as D
from memestream.decode import BadImage, decode, read_info
from memestream.features import DEFAULT_FEATURE_SET, default_asset


def _case(data: bytes, name: str = "case") -> Case:
    return Case(0, "test", name, "regression", name, data)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two workers of the real harness: the default feature set, 10 s and 2 GiB per case."""
    with WorkerPool(2, 10.0, 2048, DEFAULT_FEATURE_SET, default_asset(DEFAULT_FEATURE_SET),
                    tmp_path_factory.mktemp("fuzz-workers")) as p:
        yield p


def _run(pool: WorkerPool, named: dict[str, bytes]) -> dict[str, Outcome]:
    return {case.variant: outcome for case, outcome in pool.run(_case(d, n) for n, d in named.items())}


def _colour(rgb: tuple[int, int, int], w: int = 40, h: int = 30) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rgb[::-1]  # BGR
    return img


RED, BLUE = (230, 20, 20), (20, 20, 230)


# -- TIFF: dimensions from the first IFD, before OpenCV allocates ----------------------------
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("long_dims", [True, False])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_tiff_dimensions_come_from_the_first_ifd_without_decoding(monkeypatch, order, long_dims, bigtiff):
    data = corpus.tiff_bytes([_colour(RED, 40, 30), _colour(BLUE, 8, 8)], order=order, long_dims=long_dims, bigtiff=bigtiff)
    monkeypatch.setattr(D.cv2, "imdecode", None)  # any decode attempt would fail
    assert read_info(data) == D.ImageInfo("tiff", 40, 30)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_bigtiff_decodes_like_classic_tiff(bigtiff):
    img, info = decode(corpus.tiff_bytes([_colour(RED)], order=">", bigtiff=bigtiff))
    assert (info.format, info.width, info.height) == ("tiff", 40, 30)
    assert img[..., 2].mean() > 200 and img[..., 0].mean() < 50


def test_tiff_claiming_huge_dimensions_is_refused_before_opencv_allocates(pool):
    """Finding (oom): a 188-byte TIFF whose IFD says 30000x30000 made OpenCV allocate 2.7 GB
    before the pixel cap was checked on the decoded image."""
    px = _colour(RED, 4, 4)
    named = {
        "30000x30000 LONG little-endian": corpus.tiff_bytes([px], claim=(30000, 30000)),
        "20000x20000 LONG big-endian": corpus.tiff_bytes([px], order=">", claim=(20000, 20000)),
        "65535x65535 SHORT": corpus.tiff_bytes([px], long_dims=False, claim=(65535, 65535)),
        "30000x30000 BigTIFF": corpus.tiff_bytes([px], bigtiff=True, claim=(30000, 30000)),
    }
    for name, outcome in _run(pool, named).items():
        assert (outcome.kind, outcome.code) == ("coded", D.TOO_MANY_PIXELS), f"{name}: {outcome}"
        assert "40,000,000-pixel cap" in outcome.message, name


def _tiff_with_entry(tag: int, typ: int, count: int, value: int) -> bytes:
    """A little-endian TIFF whose first IFD has ImageLength 30 and one hand-written ``tag`` entry."""
    entries = [(257, 3, 1, 30), (tag, typ, count, value)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


_TIFF_HEADER_PROBLEMS = [
    (b"II*\x00" + struct.pack("<I", 4096) + bytes(32), D.TRUNCATED, "outside its"),
    (b"MM\x00*" + struct.pack(">I", 2), D.CORRUPT, "at byte 2"),
    (_tiff_with_entry(258, 3, 1, 8), D.CORRUPT, "no ImageWidth"),
    (_tiff_with_entry(256, 2, 4, 0x41414141), D.CORRUPT, "type 2, expected SHORT or LONG"),
    (_tiff_with_entry(256, 4, 0, 40), D.CORRUPT, "count 0"),
    (_tiff_with_entry(256, 4, 1, 0), D.CORRUPT, "empty 0x30"),
    (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 9) + bytes(20), D.TRUNCATED, "before its ImageWidth and ImageLength"),
    (b"II+\x00" + struct.pack("<HH", 4, 0) + bytes(8), D.CORRUPT, "4-byte offsets"),
]


@pytest.mark.parametrize("data,code,words", _TIFF_HEADER_PROBLEMS, ids=[w for _, _, w in _TIFF_HEADER_PROBLEMS])
def test_tiff_header_problems_have_codes_and_reasons(data, code, words):
    with pytest.raises(BadImage) as err:
        decode(data)
    assert err.value.code == code, str(err.value)
    assert words in err.value.detail


_ENTRY = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 20), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.sampled_from("<>"), width=st.integers(1, 2**32 - 1), height=st.integers(1, 2**32 - 1),
       short=st.booleans(), before=st.lists(_ENTRY, max_size=4), cut=st.integers(0, 200))
def test_tiff_ifd_reader_finds_the_dimensions_or_says_why(order, width, height, short, before, cut):
    """Hypothesis: any first IFD (random entries around ImageWidth/ImageLength, either byte order,
    SHORT or LONG, cut anywhere) gives exactly its dimensions, or a BadImage; nothing else."""
    if short:
        width, height = width & 0xFFFF or 1, height & 0xFFFF or 1
    typ = 3 if short else 4
    value = (lambda v: struct.pack(order + "H", v) + b"\x00\x00") if short else (lambda v: struct.pack(order + "I", v))
    entries = [struct.pack(order + "HHII", t, ty, c, v) for t, ty, c, v in before if t not in (256, 257)]
    entries += [struct.pack(order + "HHI", 256, typ, 1) + value(width), struct.pack(order + "HHI", 257, typ, 1) + value(height)]
    data = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    data += struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    assert read_info(data) == D.ImageInfo("tiff", width, height)
    if cut < len(data) - 4:  # the next-IFD pointer is not needed for the dimensions
        with pytest.raises(BadImage) as err:
            read_info(data[:cut])
        assert err.value.code in D.ERROR_CODES


_MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM" + bytes(24), b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00",
           b"MM\x00*", b"II+\x00", b"MM\x00+"]


@settings(max_examples=500, deadline=None)
@given(magic=st.sampled_from(_MAGICS), body=st.binary(max_size=256))
def test_header_parsers_raise_only_bad_image(magic, body):
    """Hypothesis: read_info on a valid magic followed by anything returns or raises BadImage."""
    try:
        info = read_info(magic + body)
    except BadImage as err:
        assert err.code in D.ERROR_CODES
    else:
        assert info.width >= 0 and info.height >= 0


@pytest.mark.parametrize("chunk", [b"VP8L", b"VP8X", b"VP8 "])
def test_a_webp_cut_inside_its_first_chunk_header_is_truncated(chunk):
    """Finding (hypothesis, in CI): ``RIFF`` + size 0 + ``WEBPVP8L`` and nothing more raised
    IndexError out of the header parser (VP8X's slice gave a 1x1 image instead). Every cut of a
    whole header short of its dimensions is ``truncated``; the whole header parses."""
    whole = {b"VP8L": b"\x2f" + bytes([9, 64, 36, 0]), b"VP8X": bytes(4) + bytes([9, 0, 0, 4, 0, 0]),
             b"VP8 ": bytes(3) + b"\x9d\x01\x2a" + struct.pack("<HH", 10, 5)}[chunk]
    data = b"RIFF" + struct.pack("<I", 0) + b"WEBP" + chunk + bytes(4) + whole
    assert len(data) == {b"VP8X": 30, b"VP8L": 25, b"VP8 ": 30}[chunk]
    info = read_info(data)
    assert info.format == "webp" and info.width > 1 and info.height > 1
    for cut in range(16, len(data)):
        with pytest.raises(BadImage) as err:
            read_info(data[:cut])
        assert err.value.code == D.TRUNCATED, cut


# -- PNG: chunk lengths that lie ---------------------------------------------------------------
def test_png_chunk_length_past_the_end_is_refused_before_opencv_allocates_it(pool):
    """Finding (oom, by atheris): a 45-byte PNG whose second chunk declared 0xFF000000 bytes made
    OpenCV's PNG reader allocate (and touch) 4 GB; under the worker's cap the refused allocation
    was swallowed and logged as "unknown exception"."""
    ihdr = struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 37, 65535) + b"\xff" * 5 + b"\xff" * 4  # bad fields, bad CRC
    atheris_input = b"\x89PNG\r\n\x1a\n" + ihdr + struct.pack(">I", 0xFF000000) + b"IEND" + b"\xaeB`\x82"
    assert len(atheris_input) == 45
    png = corpus._cv(_colour(RED), ".png")
    lying_text = corpus.png_chunk(b"tEXt", b"Comment\x00" + b"x" * 32)
    lying_text = struct.pack(">I", 0x7FFFFFF0) + lying_text[4:]  # the length is outside the CRC: still "valid"
    after_ihdr = 8 + 12 + 13
    # an APNG whose second frame's fdAT lies: OpenCV never reads it, the first frame decodes
    apng = _pil_frames("PNG", [_colour(RED), _colour(BLUE)])
    fdat = apng.index(b"fdAT") - 4
    apng = apng[:fdat] + struct.pack(">I", 0x7FFFFFF0) + apng[fdat + 4 :]
    named = {"atheris": atheris_input, "lying tEXt": png[:after_ihdr] + lying_text + png[after_ihdr:],
             "the real one": png, "APNG, later frame lies": apng}
    out = _run(pool, named)
    for name in ("atheris", "lying tEXt"):
        assert (out[name].kind, out[name].code) == ("coded", D.CORRUPT), f"{name}: {out[name]}"
        assert "follow in the file" in out[name].message, name
    assert out["the real one"].kind == out["APNG, later frame lies"].kind == "featurized"


# -- JPEG: scan bombs --------------------------------------------------------------------------
def test_progressive_scan_bomb_is_refused_in_bounded_time(pool):
    """Finding (hang): a 2.2 MB progressive JPEG claiming 6000x6000 with its last scan repeated
    4000 times kept libjpeg busy past the 10 s cap, one pass over the image per scan."""
    prog = next(s for s in corpus.make_seeds() if s.variant == "progressive").data
    buf = bytearray(prog)
    sof = next(m for m in corpus.jpeg_markers(prog) if prog[m + 1] == 0xC2)
    struct.pack_into(">HH", buf, sof + 5, 6000, 6000)
    named = {"4000 scans": corpus.progressive_scan_bomb(bytes(buf), 4000), "10000 small scans": corpus.progressive_scan_bomb(prog, 10000),
             "the seed": prog}
    out = _run(pool, named)
    for name in ("4000 scans", "10000 small scans"):
        assert (out[name].kind, out[name].code) == ("coded", D.CORRUPT), f"{name}: {out[name]}"
        assert f"expected at most {D.MAX_JPEG_SCANS}" in out[name].message
    assert out["the seed"].kind == "featurized", out["the seed"]


def test_jpeg_scan_limit_counts_scans_not_bytes_in_app_segments():
    """An FF DA pair inside an APP segment before the first scan is not a scan."""
    base = corpus._cv(corpus._picture(64, 48), ".jpg")
    app = b"\xff\xe1" + struct.pack(">H", 2 + 2 * 600) + b"\xff\xda" * 600
    img, info = decode(base[:2] + app + base[2:])
    assert (info.width, info.height) == (64, 48) and img.shape == (48, 64, 3)


# -- frames and pages: only the first is decoded, bombs cost bounded time and memory ------------
def _pil_frames(fmt: str, frames: list[np.ndarray], **kw) -> bytes:
    return corpus._pil(frames[0], fmt, frames=frames[1:], **kw)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_animated_and_multi_page_images_decode_their_first_frame(fmt):
    data = _pil_frames(fmt, [_colour(RED), _colour(BLUE), _colour(BLUE)], **({"duration": 100} if fmt != "TIFF" else {}))
    img, info = decode(data)
    assert (info.width, info.height) == (40, 30)
    assert img[..., 2].mean() > 180 and img[..., 0].mean() < 70, f"{fmt}: not the first (red) frame"


def test_frame_page_and_canvas_bombs_cost_bounded_time_and_memory(pool):
    """Thousands of frames or pages, IFD loops and frames bigger than their canvas: each is
    featurized (first frame) or refused with a code within the harness's 10 s and 2 GiB caps."""
    named = {
        "GIF 20000 frames": corpus.gif_bytes((64, 64), 20000),
        "GIF frame claims 65535x65535": corpus.gif_bytes((64, 64), 1, (65535, 65535)),
        "GIF 65535x65535 screen": corpus.gif_bytes((65535, 65535), 1),
        "WebP 20000 frames": corpus.webp_animation((64, 64), 20000),
        "WebP frame claims 16384x16384": corpus.webp_animation((64, 64), 1, (16384, 16384)),
        "WebP 16384x16384 canvas": corpus.webp_animation((16384, 16384), 1),
        "TIFF 20000 pages": corpus.tiff_bytes([_colour(RED, 2, 2)] * 20000),
        "TIFF IFD loop": corpus.tiff_bytes([_colour(RED, 2, 2)] * 3, loop=True),
    }
    out = _run(pool, named)
    assert set(out) == set(named)
    for name, o in out.items():
        assert o.kind in ("featurized", "coded"), f"{name}: {o}"
    assert out["GIF 65535x65535 screen"].code == out["WebP 16384x16384 canvas"].code == D.TOO_MANY_PIXELS


def test_lying_header_dimensions_are_refused_before_allocation(monkeypatch):
    """PNG IHDR (CRC recomputed), WebP VP8X, GIF screen, BMP and TIFF IFD claims above the cap."""
    ihdr = corpus.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + ihdr + corpus.png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + corpus.png_chunk(b"IEND", b"")
    bmp = bytearray(corpus._cv(_colour(RED), ".bmp"))
    struct.pack_into("<ii", bmp, 18, 20000, -20000)
    claims = {
        "png": png, "webp": corpus.webp_animation((16384, 16384), 1), "gif": corpus.gif_bytes((65535, 65535), 1),
        "bmp": bytes(bmp), "tiff": corpus.tiff_bytes([_colour(RED, 4, 4)], order=">", claim=(30000, 30000)),
    }
    calls = []
    monkeypatch.setattr(D.cv2, "imdecode", lambda *a: calls.append(a))
    for fmt, data in claims.items():
        with pytest.raises(BadImage) as err:
            decode(data)
        assert err.value.code == D.TOO_MANY_PIXELS, f"{fmt}: {err.value}"
    assert calls == [], "pixels were handed to the decoder"


# -- the harness itself ------------------------------------------------------------------------
def test_classify_separates_codes_from_findings():
    assert classify(None, None).kind == "featurized"
    assert classify("truncated: PNG ends", "truncated").kind == "coded"
    assert classify("corrupt: decoder failed with IndexError: index 3", "corrupt").kind == "uncoded"
    assert classify("corrupt: TIFF could not be decoded: (-4:Insufficient memory) Failed to allocate 9 bytes", "corrupt").kind == "oom"
    # the stream's own name for it (a worker's --worker-memory cap) is still a finding here: the
    # input asked for more than the harness's cap, which no real image within the pixel cap does
    assert classify("out_of_memory: TIFF could not be decoded: it needed more memory", "out_of_memory").kind == "oom"


def test_allocation_failures_on_stderr_are_told_from_libtiffs_refusals():
    """Lines as OpenCV and libtiff print them (captured from fuzz workers)."""
    swallowed = "[ERROR:0@0.3] global loadsave.cpp:1381 imdecode_ imdecode_(''): can't read header: unknown exception"
    cv_alloc = "error: (-4:Insufficient memory) Failed to allocate 2700000000 bytes in function 'OutOfMemoryError'"
    tiff_refused = ("TIFF_Warning ReadDirEntryArray: Requested memory size for tag 347 (0x15b) 2147483647 is greater than "
                    "filesize 4497. Memory not allocated, tag not read\n"
                    'TIFF_Warning TIFFFetchNormalTag: Out of memory reading of "JPEGTables"; tag ignored')
    tiff_empty = "TIFF_Error Failed to allocate memory for to read TIFF directory (0 elements of 12 bytes each)"
    tiff_real = 'TIFF_Error TIFFReadDirectory: Out of memory reading of "StripOffsets"'
    assert allocation_failure(swallowed) == swallowed
    assert allocation_failure("libpng warning: iCCP: known incorrect sRGB profile\n" + cv_alloc) == cv_alloc
    assert allocation_failure(tiff_refused) is None
    assert allocation_failure(tiff_empty) is None
    assert allocation_failure(tiff_real) == tiff_real
    assert allocation_failure("") is None


def test_pool_flags_a_case_whose_resident_memory_grows_past_the_flag(tmp_path):
    """A survivor can still be a memory bomb: the 6000x6000 PNG raises a worker's RSS by ~100 MiB."""
    good = corpus._cv(corpus._picture(64, 48), ".jpg")
    with WorkerPool(1, 10.0, 2048, "gray32", None, tmp_path, rss_flag_mib=50) as p:
        out = {c.variant: o for c, o in p.run([_case(_slow_png(), "big"), _case(good, "small")])}
    assert out["big"].kind == "oom" and out["big"].rss_growth_mib > 50, out["big"]
    assert "resident memory grew" in out["big"].message
    assert out["small"].kind == "featurized" and out["small"].rss_growth_mib < 50


def _slow_png() -> bytes:
    """A valid 6000x6000 PNG of 105 KB: decoding it takes a fraction of a second and 108 MB."""
    side = 6000
    ihdr = corpus.png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + corpus.png_chunk(b"IDAT", corpus._zeros_deflated((side * 3 + 1) * side)) + corpus.png_chunk(b"IEND", b"")


def test_pool_reports_a_dead_worker_as_a_crash_and_replaces_it(tmp_path):
    good = corpus._cv(corpus._picture(64, 48), ".jpg")
    with WorkerPool(1, 10.0, 2048, "gray32", None, tmp_path) as p:

        def cases():
            yield _case(good, "before")
            os.kill(p._slots[0].proc.pid, signal.SIGKILL)  # the worker dies before or while taking the next case
            yield _case(good, "killed")
            yield _case(good, "after")

        out = {c.variant: o for c, o in p.run(cases())}
        assert p.stats.started_workers == 2
    assert out["before"].kind == out["after"].kind == "featurized"
    assert out["killed"].kind == "crash" and "SIGKILL" in out["killed"].message


def test_pool_reports_a_case_past_the_time_cap_as_a_hang(tmp_path):
    good = corpus._cv(corpus._picture(64, 48), ".jpg")
    with WorkerPool(1, 0.02, 2048, "gray32", None, tmp_path) as p:
        out = {c.variant: o for c, o in p.run([_case(_slow_png(), "slow"), _case(good, "next")])}
        assert p.stats.started_workers >= 2
    assert out["slow"].kind == "hang" and "0.02 s time cap" in out["slow"].message
    assert out["next"].kind in ("featurized", "hang")  # the replacement worker runs (0.02 s may be short for it too)


def test_pool_reports_an_allocation_above_the_memory_cap_as_oom(tmp_path):
    with WorkerPool(1, 10.0, 2048, "gray32", None, tmp_path / "probe") as p:
        size = p.stats.vm_size_mib[0]
    cap = int(size) + 48  # room for the worker, not for a 108 MB decoded image
    with WorkerPool(1, 10.0, cap, "gray32", None, tmp_path / "capped") as p:
        ((_, outcome),) = list(p.run([_case(_slow_png(), "big")]))
    assert outcome.kind == "oom", outcome


# -- a CI-sized slice of the harness -----------------------------------------------------------
def test_seeded_fuzz_slice_has_no_findings(tmp_path, capsys):
    """400 cases of seed 24 through ``python -m bench.fuzz``: every case featurized or refused
    with a code of memestream.decode.ERROR_CODES; no crash, hang, OOM or uncoded exception."""
    assert main(["--cases", "400", "--seed", "24", "--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    (path,) = tmp_path.glob("fuzz-*.json")
    report = json.loads(path.read_text())
    totals = report["totals"]
    assert report["cases"] == totals["cases"] == 400
    assert {k: totals[k] for k in FINDINGS} == {k: 0 for k in FINDINGS}, report["findings"]
    assert set(totals["codes"]) <= set(D.ERROR_CODES)
    assert totals["featurized"] > 0 and totals["coded"] > 0
    assert totals["featurized"] + totals["coded"] == 400
    assert {r["format"] for r in report["table"]} == set(FORMATS)
    assert {r["mutation"] for r in report["table"]} == set(MUTATIONS)
    assert report["environment"]["cpu_count"] == os.cpu_count() and report["cases_per_s"] > 0
    assert "cases/s on" in printed and "findings: 0" in printed


def test_cases_are_a_pure_function_of_seed_and_index():
    seeds = corpus.make_seeds()
    a = [corpus.make_case(seeds, 7, i) for i in range(50)]
    b = [corpus.make_case(corpus.make_seeds(), 7, i) for i in range(50)]
    assert a == b
    assert len({c.data for c in a}) > 40


def test_every_seed_featurizes(pool):
    """The corpus's seeds are real images of every format and variant: all decode."""
    seeds = corpus.make_seeds()
    assert {s.format for s in seeds} == set(FORMATS)
    out = _run(pool, {f"{s.format}/{s.variant}": s.data for s in seeds})
    bad = {name: o for name, o in out.items() if o.kind != "featurized"}
    assert not bad, bad


def test_interlaced_png_is_adam7_and_decodes_to_the_picture():
    rgb = cv2.cvtColor(corpus._picture(37, 21), cv2.COLOR_BGR2RGB)  # odd sizes: some passes are empty
    data = corpus.interlaced_png(rgb)
    assert data[8 + 8 + 12] == 1  # IHDR interlace method
    img, _ = decode(data)
    assert np.array_equal(img, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
