"""``bench.leads``: the offline replay of ``bench.holdout`` that ranks accuracy leads (issue 25)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import leads


def test_ctc_gaps_become_spaces_only_where_the_columns_jump():
    # "DaisyMae": the recogniser's columns jump 3 -> 9 between "y" and "M"
    assert leads.spaced("DaisyMae", [0, 1, 2, 2, 3, 9, 10, 11], gap=3) == "Daisy Mae"
    assert leads.spaced("DaisyMae", [0, 1, 2, 2, 3, 9, 10, 11], gap=6) == "DaisyMae"
    assert leads.spaced("a b", [0, 5, 10], gap=3) == "a b"  # an emitted space is not doubled
    assert leads.spaced("abc", [0, 1], gap=0) == "abc"  # columns that do not fit the text: unchanged
    assert leads.spaced("abc", None, gap=0) == "abc"


def test_segmenter_splits_glued_ocr_text_into_words():
    seg = leads.Segmenter()
    assert seg("Whenyou'rerunningtoNook'sbutthen") == "when you're running to nook's but then"
    assert "nook" in seg("runningtoNook").split()
    assert seg("missed DaisyMae cause sleptin") == "missed daisy mae cause slept in"
    assert seg("RIP AND TEAR") == "rip and tear"  # words already apart stay as they are


def test_text_area_is_the_share_of_the_image_the_boxes_cover():
    box = {"pts": [[0, 0], [50, 0], [50, 20], [0, 20]], "text": "x", "score": 1.0}
    assert leads.text_area([box], (100, 100)) == pytest.approx(0.1)
    assert leads.text_area([box, box], (100, 200)) == pytest.approx(0.1)
    assert leads.text_area([], (100, 100)) == 0.0


def test_product_text_keeps_the_product_s_score_filter_and_reading_order():
    boxes = [{"pts": [[60, 0], [90, 0], [90, 10], [60, 10]], "text": "tear", "score": 0.9},
             {"pts": [[0, 0], [50, 0], [50, 10], [0, 10]], "text": "rip and", "score": 0.9},
             {"pts": [[0, 40], [50, 40], [50, 50], [0, 50]], "text": "福", "score": 0.2}]
    assert leads.product_text(boxes) == "rip and tear"


def _synthetic(n_per_class: int = 40, seed: int = 0) -> leads.Harvest:
    """Two classes apart in feature space, every other meme with a caption naming its game."""
    rng = np.random.default_rng(seed)
    rel, feats, boxes = [], [], []
    for c, (label, words) in enumerate((("animal_crossing", "nook miles turnip"), ("doom", "slayer rip tear"))):
        for i in range(n_per_class):
            rel.append(f"{label}/{i:03d}.jpg")
            feats.append(rng.normal(size=12) + (2.0 if c else -2.0) * (np.arange(12) < 4))
            text = f"{words} {rng.choice(['when', 'me', 'you'])}" if i % 2 else ""
            boxes.append([{"pts": [[0, 0], [40, 0], [40, 10], [0, 10]], "text": text, "score": 0.9, "cols": None}] if text else [])
    n = len(rel)
    return leads.Harvest(rel, [f"{i:064x}" for i in range(n)], [int(rng.integers(0, 2**62)) for _ in range(n)], boxes,
                         [(100, 100)] * n, np.array(feats, dtype=np.float32), np.array(feats, dtype=np.float32),
                         [""] * n)


def test_replay_scores_bench_holdouts_held_back_fifth_and_restores_what_it_swaps():
    from batch_training import selection as sel
    from memestream import text_model as tm

    h = _synthetic()
    before = (tm.char_ngrams, sel._masked, sel.image_cv, sel.neighbour_cv)
    lead = leads.Lead("probe", "a lead with its own analyzer", analyzer=lambda text, lo=2, hi=5: tm._char_wb(tm.normalize(text), lo, hi) + ["w:x"])
    result = leads.replay(h, lead, seeds=(3,))
    (row,) = result["seeds"]
    y = np.array([r.startswith("doom") for r in h.rel], dtype=int)
    from memestream.dedup import near_duplicate_groups

    held = sel.grouped_split(near_duplicate_groups(h.dhash, h.sha256, 6), y, 0.2, 3 + 1000)
    assert row["held_images"] == int(held.sum()) > 0
    assert row["accuracy"] >= 0.9 and result["mean"]["accuracy"] == row["accuracy"]
    assert 0.0 <= row["ocr_share"] <= 1.0 and row["ece"] is not None
    assert 0.0 <= row["ece_floor"] < 0.5 and 0.5 <= row["confidence"] <= 1.0
    m = result["mean"]  # one seed: pooling its rows gives its own ECE back
    assert m["ece_pooled"] == round(row["ece"], 4) and m["ece_floor_pooled"] == row["ece_floor"]
    assert (tm.char_ngrams, sel._masked, sel.image_cv, sel.neighbour_cv) == before


def test_a_trigger_lead_ocrs_the_rows_it_names_whatever_the_image_branch_says():
    h = _synthetic()
    everything = leads.Lead("all", "trigger every row", trigger=lambda hv: np.ones(len(hv.rel), dtype=bool))
    (row,) = leads.replay(h, everything, seeds=(3,))["seeds"]
    assert row["ocr_share"] == 1.0


def test_harvest_writes_what_load_harvest_reads(tmp_path, image_bytes):
    data = tmp_path / "data"
    for label in ("doom", "animal_crossing"):
        (data / label).mkdir(parents=True)
        (data / label / "a.jpg").write_bytes(image_bytes(label=label, seed=1))
    (data / "posts.csv").write_text("file,title\ndoom/a.jpg,rip and tear\n")
    out = tmp_path / "h" / "harvest.npz"
    assert leads.harvest(data, out)["images"] == 2
    h = leads.load_harvest(out, data)
    assert h.rel == ["animal_crossing/a.jpg", "doom/a.jpg"] and h.titles == ["", "rip and tear"]
    assert h.features.shape == h.mirrored.shape and h.features.shape[0] == 2
    assert not np.allclose(h.features, h.mirrored)  # the mirror is a different view
    doc = json.loads(out.with_suffix(".json").read_text())
    assert all(isinstance(m["boxes"], list) for m in doc["images"])
    # another backbone's embeddings of the same images, in the same order, for the backbone leads
    done = leads.embed(out, data, "effnet_lite1_ms")
    assert done["images"] == 2 and leads.embedding_path(out, "effnet_lite1_ms").is_file()
    lite1 = leads.leads()["lite1-ms"].features(h)
    assert lite1.shape == (2, 1904) and not np.allclose(lite1, h.features)
    with pytest.raises(SystemExit, match="effnet_lite2_ms embeddings"):
        leads.leads()["lite2-ms"].features(h)  # not embedded yet: one line naming the command


def test_a_calibration_lead_forces_the_method_on_the_stacked_output():
    h = _synthetic()
    (row,) = leads.replay(h, leads.leads()["cal-temperature"], seeds=(3,))["seeds"]
    assert row["calibration"] == "temperature"


def test_a_lead_without_the_neighbour_vote_scores_the_plain_image_branch():
    h = _synthetic()
    (row,) = leads.replay(h, leads.Lead("no-vote", "--neighbours 0", train={"neighbours": 0}), seeds=(3,))["seeds"]
    assert row["accuracy"] >= 0.9
