"""Near-duplicate hashing and grouping (no Spark)."""
from __future__ import annotations

import cv2
import numpy as np

from memestream.dedup import dhash, hamming, near_duplicate_groups


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_dhash_survives_reencoding_resizing_and_small_shifts(image_bytes):
    img = _decode(image_bytes("doom", 4, "png"))
    base = dhash(img)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    variants = {
        "jpeg q60": _decode(jpeg.tobytes()),
        "half size": cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA),
        "brighter": cv2.convertScaleAbs(img, alpha=1.0, beta=12),
        "grey": cv2.cvtColor(img, cv2.COLOR_BGR2GRAY),
    }
    for name, v in variants.items():
        assert hamming(base, dhash(v)) <= 4, name
    other = dhash(_decode(image_bytes("animal_crossing", 9, "png")))
    assert hamming(base, other) > 10
    assert -(1 << 63) <= base < (1 << 63)  # fits a Spark long


def test_groups_link_close_hashes_transitively_and_equal_sha256():
    a = 0b1011 << 40
    hashes = [a, a ^ 0b11, a ^ 0b11 ^ (0b111 << 20), 0x0F0F0F0F0F0F0F0F, 12345, 999]
    sha = ["s1", "s2", "s3", "s4", "dup", "dup"]
    groups = near_duplicate_groups(hashes, sha, max_distance=3)
    # 0-1 differ by 2 bits, 1-2 by 3: one chain; 4 and 5 share a sha256; 3 is alone
    assert groups[0] == groups[1] == groups[2]
    assert groups[4] == groups[5]
    assert len({groups[0], groups[3], groups[4]}) == 3
    assert list(near_duplicate_groups(hashes, sha, max_distance=0)) == [0, 1, 2, 3, 4, 4]


def test_banded_search_finds_the_same_pairs_as_brute_force():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**63, 60, dtype=np.int64).tolist()
    hashes = base + [h ^ (1 << int(b)) ^ (1 << int(c)) for h, b, c in zip(base[:30], rng.integers(0, 63, 30), rng.integers(0, 63, 30))]
    d = 4
    got = near_duplicate_groups(hashes, None, d)
    n = len(hashes)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if hamming(hashes[i], hashes[j]) <= d:
                ri, rj = find(i), find(j)
                parent[max(ri, rj)] = min(ri, rj)
    assert [find(i) for i in range(n)] == list(got)
