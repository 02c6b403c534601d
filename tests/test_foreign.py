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


def test_like_memes_stores_each_image_as_the_training_memes_are_stored():
    """``--like-memes 300``: every kind comes out a 300x300 JPEG of the same picture (stretched,
    not cropped: its mean colour stays), so a score can be checked for leaning on size or encoding."""
    plain = foreign_set(1, seed=5)
    copies = foreign_set(1, seed=5, like_memes=300)
    assert set(copies) == set(plain)
    for kind, (blob,) in copies.items():
        assert blob[:2] == b"\xff\xd8", kind
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (300, 300, 3), kind
        orig = cv2.imdecode(np.frombuffer(plain[kind][0], np.uint8), cv2.IMREAD_COLOR)
        assert orig.shape[:2] != (300, 300)
        assert np.abs(img.reshape(-1, 3).mean(0) - orig.reshape(-1, 3).mean(0)).max() < 4, kind


def test_the_foreign_benchmark_reports_old_and_new_per_kind(sample_dataset, tmp_path):
    """``python -m bench.ood --foreign`` on the small generated folder: every kind gets an AUROC
    and a flag rate for both scores, the cost is measured, and the JSON is written."""
    import json

    from bench.ood import main, run_foreign

    result = run_foreign(str(sample_dataset), [42], per_kind=2, foreign_seed=0, folds=3)
    for which in ("old", "new"):
        kinds = result["mean"][which]["kinds"]
        assert set(kinds) == set(KINDS)
        assert all(0.0 <= v["auroc"] <= 1.0 and 0.0 <= v["flagged"] <= 1.0 for v in kinds.values())
        assert 0.0 <= result["mean"][which]["memes_flagged"] <= 1.0
    assert result["seeds"][0]["held_memes"] > 0 and result["seeds"][0]["train_memes"] > result["seeds"][0]["held_memes"]
    assert result["cost"]["new_ms_per_image"] > result["cost"]["image_stats_ms_per_image"] > 0
    out = tmp_path / "ood.json"
    assert main(["--foreign", "--data", str(sample_dataset), "--seeds", "1", "--per-kind", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["split_seeds"] == [1]
    assert main(["--foreign", "--data", str(sample_dataset), "--seeds", "1", "--per-kind", "1", "--like-memes", "64",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["like_memes"] == 64
