"""Near-duplicate detection: a 64-bit difference hash per image and groups of close hashes.

Reposts of a meme are rarely byte-identical: they are re-encoded, resized or slightly
cropped. If one copy lands in training and another in test, the test score measures
memory, not generalisation (and model selection picks the model that memorises best).
Training therefore groups images whose dHash differs in at most a few bits (or whose
sha256 is equal) and keeps each group on one side of every split.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

#: Default Hamming distance (bits out of 64) up to which two images count as one meme.
DEFAULT_MAX_DISTANCE = 6


def dhash(image: np.ndarray) -> int:
    """64-bit difference hash: sign of horizontal gradients on a 9x8 grey thumbnail.

    Robust to re-encoding, resizing and small colour shifts; returned as a signed int64
    (so it fits a Spark ``long``).
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= (1 << 63) else value


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    count = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        count += _BYTE_POP[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)]
    return count


_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_groups(
    hashes: Sequence[int], sha256: Sequence[str] | None = None, max_distance: int = DEFAULT_MAX_DISTANCE
) -> np.ndarray:
    """Group id per image: images linked by a chain of dHash distances <= ``max_distance``
    (or by equal sha256) share a group. The id is the smallest index in the group.

    Candidate pairs come from bands (pigeonhole: two 64-bit hashes within d bits agree
    exactly on at least one of d+1 bands), so the cost stays near-linear in the number of
    images rather than quadratic.
    """
    n = len(hashes)
    uf = _UnionFind(n)
    if sha256 is not None:
        first: dict[str, int] = {}
        for i, s in enumerate(sha256):
            if s is None:
                continue
            if s in first:
                uf.union(first[s], i)
            else:
                first[s] = i
    if n < 2:
        return np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    h = np.array([x & ((1 << 64) - 1) for x in hashes], dtype=np.uint64)
    bands = max_distance + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    seen: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        width = hi - lo
        if width <= 0:
            continue
        key = (h >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = order[s:e]
            sub = h[members]
            dist = _popcount(sub[:, None] ^ sub[None, :])
            ii, jj = np.nonzero(np.triu(dist <= max_distance, k=1))
            for a, b in zip(members[ii], members[jj]):
                pair = (int(min(a, b)), int(max(a, b)))
                if pair not in seen:
                    seen.add(pair)
                    uf.union(*pair)
    return np.array([uf.find(i) for i in range(n)], dtype=np.int64)


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")
