"""bench.foreign: the rendered foreign reference set decodes, varies and is reproducible."""
from __future__ import annotations

import cv2
import numpy as np

from bench.foreign import KINDS, foreign_bytes, foreign_set


def test_every_kind_renders_decodable_images_reproducibly():
    images = foreign_set(2, seed=5)
    assert set(images) == set(KINDS) and len(KINDS) >= 5
    shapes = set()
    for kind, blobs in images.items():
        for i, blob in enumerate(blobs):
            assert blob[:2] == b"\xff\xd8" or blob[:4] == b"\x89PNG", kind  # JPEG or PNG
            img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.ndim == 3 and min(img.shape[:2]) >= 32, kind
            shapes.add(img.shape[:2])
            assert foreign_bytes(kind, 5, i) == blob  # the same seed renders the same bytes
    assert len(shapes) > 4  # sizes and aspect ratios vary
    assert foreign_bytes("text_pages", 6, 0) != images["text_pages"][0]
