"""Training ingest: one Spark pass reads, hashes, decodes and embeds every image; a
second pass OCRs only the images training asks for (:func:`ocr_rows`), reusing what
earlier runs computed.

OCR costs ~10x the embedding, and the cascade only ever reads the text of images the
image branch is unsure of, so training decides which images need text once it has the
image branch's out-of-fold confidences (``batch_training.selection.select``) instead of
OCR-ing the whole folder.

Each image is identified by the sha256 of its bytes. Embeddings (per feature set and
version) and OCR text (per OCR version) of images seen before are kept under the model
store in ``_cache/`` (Parquet, one part per run that added something), so a rerun on
mostly the same images skips the expensive part. The computation itself is the shared
input path (:func:`memestream.features.featurize_inputs`): cached or fresh, the features
are those the saved featurizer computes in the stream, and OCR reads the image exactly
as decoded for the feature set, as the stream's cascade does.
"""
from __future__ import annotations

import hashlib
import re
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from batch_training.dataset import LABEL, REL_PATH
from batch_training.progress import SparkProgress
from memestream.decode import decode
from memestream.dedup import dhash
from memestream.features import FeatureSet, featurize_inputs, get_feature_set
from memestream.inputs import local_path, read_capped
from memestream.isolation import (
    DEFAULT_TIME_CAP_S, DEFAULT_WORKER_MEMORY, failure_line, limit_memory, rows_isolated, worker_died,
)
from memestream.ocr import ocr_text

log = logging.getLogger(__name__)

CACHE_DIR = "_cache"
_SCHEMA = "sha256 string, features array<float>, dhash long, error string, error_code string, size_bytes long"
_OCR_SCHEMA = "sha256 string, ocr_text string, ocr_error string"


@dataclass
class Ingested:
    """Row-aligned driver-side arrays for the decodable images of a labelled folder."""

    path: list[str]  # as Spark listed it (for the OCR pass)
    rel_path: list[str]
    label: list[str]
    sha256: list[str]
    features: np.ndarray  # (n, dim) float32
    dhash: list[int]
    #: OCR text per row when the text branch is on: '' when none, None while not read yet
    #: (:func:`ocr_rows` fills in the rows training needs); None when text is off.
    texts: list[str | None] | None
    ocr_errors: int
    cached_features: int
    cached_texts: int
    skipped: dict  # error summary of undecodable files
    ocr_run: int = 0  # images OCR'd by this run (the rest came from the cache)
    #: post title per row ('' when the titles file has none for it); None: no titles file
    titles: list[str] | None = None
    #: per-row image statistics for the novelty score (memestream.image_stats), filled on first use
    image_stats: np.ndarray | None = None


class FeatureCache:
    """sha256 -> features (and dhash) for one feature set; sha256 -> OCR text for one OCR version."""

    def __init__(self, model_dir: str | os.PathLike[str], fs: FeatureSet, ocr_version: str | None) -> None:
        root = Path(model_dir) / CACHE_DIR
        self.feat_dir = root / fs.cache_key
        self.ocr_dir = root / ("ocr-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", ocr_version)) if ocr_version else None
        self.fs = fs

    @staticmethod
    def _read(folder: Path | None) -> pa.Table | None:
        if folder is None or not folder.is_dir():
            return None
        parts = sorted(p for p in folder.glob("part-*.parquet"))
        if not parts:
            return None
        try:
            return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
        except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
            log.warning("ignoring the feature cache in %s (%s)", folder, exc)
            return None

    def load_features(self) -> dict[str, tuple[np.ndarray, int]]:
        table = self._read(self.feat_dir)
        if table is None:
            return {}
        shas = table.column("sha256").to_pylist()
        dims = table.column("features").combine_chunks()
        flat = dims.values.to_numpy(zero_copy_only=False).astype(np.float32)
        if len(flat) != len(shas) * self.fs.dim:
            log.warning("ignoring the feature cache in %s (dimension is not %d)", self.feat_dir, self.fs.dim)
            return {}
        mat = flat.reshape(len(shas), self.fs.dim)
        hashes = table.column("dhash").to_pylist()
        return {s: (mat[i], int(hashes[i])) for i, s in enumerate(shas)}

    def load_texts(self) -> dict[str, str]:
        table = self._read(self.ocr_dir)
        if table is None:
            return {}
        return dict(zip(table.column("sha256").to_pylist(), table.column("text").to_pylist()))

    @staticmethod
    def _write(folder: Path, table: pa.Table) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)

    def add_features(self, shas: list[str], features: np.ndarray, hashes: list[int]) -> None:
        if not shas:
            return
        offsets = pa.array(np.arange(0, (len(shas) + 1) * self.fs.dim, self.fs.dim, dtype=np.int32))
        values = pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1), type=pa.float32()))
        self._write(self.feat_dir, pa.table({"sha256": shas, "features": values, "dhash": pa.array(hashes, type=pa.int64())}))

    def add_texts(self, shas: list[str], texts: list[str]) -> None:
        if shas and self.ocr_dir is not None:
            self._write(self.ocr_dir, pa.table({"sha256": shas, "text": texts}))


#: The ingest UDF's result as an Arrow type (the rows of an isolated input that crashed or hung).
_ARROW = pa.struct([("sha256", pa.string()), ("features", pa.list_(pa.float32())), ("dhash", pa.int64()),
                    ("error", pa.string()), ("error_code", pa.string()), ("size_bytes", pa.int64())])


def _failed_row(path: str, code: str, detail: str, max_bytes: int) -> dict:
    """An image whose decoding killed or hung its process: skipped with the code, like any bad file."""
    data, _ = read_capped(local_path(path), max_bytes)
    return {"sha256": hashlib.sha256(data).hexdigest() if data is not None else None, "features": None, "dhash": None,
            "error": f"{code}: {detail}", "error_code": code, "size_bytes": len(data) if data is not None else None}


def _ingest_arrow(feature_set: str, max_bytes: int, max_pixels: int, asset: str | None, known_feats: frozenset,
                  time_cap: float | None = DEFAULT_TIME_CAP_S, memory: int | None = DEFAULT_WORKER_MEMORY,
                  isolate: bool = False):
    """UDF body: path -> sha256, features (or null when cached), dhash, error. Each decode runs
    under ``time_cap`` in a worker capped at ``memory`` (memestream.isolation), as in the stream;
    with ``isolate`` each path runs in a process of its own, so an image that crashes or hangs
    its decoder is skipped as ``decoder_crashed``/``decoder_timeout`` instead of failing training."""
    if isolate:
        plain = _ingest_arrow(feature_set, max_bytes, max_pixels, asset, known_feats, None, memory)

        def isolated(paths: pa.Array) -> pa.Array:
            limit_memory(memory)
            return rows_isolated(plain, paths.to_pylist(), pa.string(), _ARROW,
                                 lambda p, code, detail: _failed_row(p, code, detail, max_bytes),
                                 time_cap or DEFAULT_TIME_CAP_S, memory)

        return isolated

    def run(paths: pa.Array) -> pa.Array:
        limit_memory(memory)
        fs = get_feature_set(feature_set)
        values = paths.to_pylist()
        n = len(values)
        read = [read_capped(local_path(p), max_bytes) for p in values]
        shas = [hashlib.sha256(d).hexdigest() if d is not None else None for d, _ in read]
        todo = [i for i in range(n) if shas[i] is not None and shas[i] not in known_feats]
        feats: list = [None] * n
        hashes: list = [None] * n
        errors = [str(e) if e is not None else None for _, e in read]
        codes = [e.code if e is not None else None for _, e in read]
        if todo:
            out = featurize_inputs(
                [read[i][0] for i in todo], fs, max_bytes=max_bytes, max_pixels=max_pixels, asset=asset, keep_images=True,
                time_cap=time_cap,
            )
            for j, i in enumerate(todo):
                if out.errors[j] is not None:
                    errors[i], codes[i] = out.errors[j], out.codes[j]
                    continue
                feats[i] = out.matrix[j]
                hashes[i] = dhash(out.images[j])
        dim = fs.dim
        lengths = [dim if f is not None else 0 for f in feats]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        flat = np.concatenate([f for f in feats if f is not None]) if any(f is not None for f in feats) else np.zeros(0, np.float32)
        mask = pa.array([f is None for f in feats])
        features = pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.float32()), mask=mask)
        return pa.StructArray.from_arrays(
            [
                pa.array(shas, type=pa.string()),
                features,
                pa.array(hashes, type=pa.int64()),
                pa.array(errors, type=pa.string()),
                pa.array(codes, type=pa.string()),
                pa.array([len(d) if d is not None else None for d, _ in read], type=pa.int64()),
            ],
            names=["sha256", "features", "dhash", "error", "error_code", "size_bytes"],
        )

    return run


def _ocr_arrow(feature_set: str, max_bytes: int, max_pixels: int):
    """UDF body: path -> sha256 and OCR text of the image decoded as for ``feature_set``
    (or the reason OCR did not run); the caller checks the sha256 against the ingest pass."""

    def run(paths: pa.Array) -> pa.Array:
        fs = get_feature_set(feature_set)
        shas, texts, errors = [], [], []
        for p in paths.to_pylist():
            data, err = read_capped(local_path(p), max_bytes)
            shas.append(hashlib.sha256(data).hexdigest() if data is not None else None)
            text = None
            if err is None:
                try:
                    img, _ = decode(data, color=fs.color, min_side=fs.min_side, max_bytes=max_bytes, max_pixels=max_pixels)
                    text = ocr_text(img)
                except Exception as exc:  # noqa: BLE001 - recorded; the image still trains the image branch
                    err = f"{type(exc).__name__}: {str(exc)[:200]}"
            texts.append(text)
            errors.append(str(err) if err is not None else None)
        return pa.StructArray.from_arrays(
            [pa.array(shas, type=pa.string()), pa.array(texts, type=pa.string()), pa.array(errors, type=pa.string())],
            names=["sha256", "ocr_text", "ocr_error"],
        )

    return run


def _summarize(rel: list[str], errors: list[str | None], codes: list[str | None], examples: int = 5) -> dict:
    bad = [(r, e, c) for r, e, c in zip(rel, errors, codes) if e is not None]
    by_code: dict[str, int] = {}
    for _, _, c in bad:
        by_code[c or "unknown"] = by_code.get(c or "unknown", 0) + 1
    sample = [{"path": r, "error": e} for r, e, _ in sorted(bad)[:examples]]
    return {"count": len(bad), "by_code": by_code, "examples": sample}


def ingest(
    spark,
    labelled,
    fs: FeatureSet,
    *,
    max_bytes: int,
    max_pixels: int,
    asset: str | None,
    cache: FeatureCache | None,
    ocr: bool,
    progress: bool = False,
) -> Ingested:
    """Read, hash and featurize every file of ``labelled`` (``path, rel_path, label_name``)
    in the Spark workers, reusing and then extending ``cache``. With ``ocr`` the texts the
    cache already knows are attached (None for the others: :func:`ocr_rows` reads those
    training asks for)."""
    known = cache.load_features() if cache else {}
    known_texts = cache.load_texts() if (cache and ocr) else {}
    if known:
        log.info("feature cache: %d %s embeddings, %d OCR texts already known", len(known), fs.cache_key, len(known_texts))
    tasks = max(2, spark.sparkContext.defaultParallelism * 2)

    def embedded(isolate: bool) -> pa.Table:
        udf = F.arrow_udf(_ingest_arrow(fs.name, max_bytes, max_pixels, asset, frozenset(known), isolate=isolate),
                          _SCHEMA).asNondeterministic()
        df = labelled.select("path", REL_PATH, LABEL).repartition(tasks).withColumn("r", udf(F.col("path")))
        with SparkProgress(spark, f"embedding ({fs.name})" + (", one image per process" if isolate else ""), progress):
            return df.select("path", REL_PATH, LABEL, "r.*").toArrow()

    try:
        table = embedded(isolate=False)
    except Exception as exc:  # noqa: BLE001 - only a dead worker is retried
        if not worker_died(exc):
            raise
        log.warning("a worker died embedding the images (%s): embedding them again with each image in its own process, "
                    "so the image that kills its decoder is skipped", failure_line(exc))
        table = embedded(isolate=True)
    table = table.sort_by(REL_PATH)
    paths = table.column("path").to_pylist()
    rel = table.column(REL_PATH).to_pylist()
    labels = table.column(LABEL).to_pylist()
    shas = table.column("sha256").to_pylist()
    errors = table.column("error").to_pylist()
    codes = table.column("error_code").to_pylist()
    feats_col = table.column("features").to_pylist()
    hashes_col = table.column("dhash").to_pylist()
    skipped = _summarize(rel, errors, codes)

    keep = [i for i in range(len(rel)) if errors[i] is None]
    feats = np.zeros((len(keep), fs.dim), dtype=np.float32)
    hashes: list[int] = []
    new_f: dict[str, tuple[np.ndarray, int]] = {}
    n_cached_f = 0
    for j, i in enumerate(keep):
        sha = shas[i]
        if feats_col[i] is not None:
            feats[j] = np.asarray(feats_col[i], dtype=np.float32)
            hashes.append(int(hashes_col[i]))
            new_f[sha] = (feats[j], hashes[-1])
        else:
            vec, h = known[sha]
            feats[j] = vec
            hashes.append(h)
            n_cached_f += 1
    if cache is not None:
        cache.add_features(list(new_f), np.stack([v for v, _ in new_f.values()]) if new_f else np.zeros((0, fs.dim), np.float32), [h for _, h in new_f.values()])
    return Ingested(
        path=[paths[i] for i in keep],
        rel_path=[rel[i] for i in keep],
        label=[labels[i] for i in keep],
        sha256=[shas[i] for i in keep],
        features=feats,
        dhash=hashes,
        texts=[known_texts.get(shas[i]) for i in keep] if ocr else None,
        ocr_errors=0,
        cached_features=n_cached_f,
        cached_texts=0,
        skipped=skipped,
    )


def ocr_rows(
    spark,
    data: Ingested,
    rows,
    fs: FeatureSet,
    *,
    max_bytes: int,
    max_pixels: int,
    cache: FeatureCache | None,
    progress: bool = False,
) -> None:
    """Make ``data.texts[i]`` a string for every ``i`` in ``rows``: from the cache when
    known, else OCR'd in one Spark pass over just those files (then cached). An image
    whose OCR fails (or that changed since the ingest pass) gets '' and is counted in
    ``data.ocr_errors``: it trains the image branch only."""
    if data.texts is None:
        raise ValueError("ocr_rows needs an ingest with ocr=True")
    rows = sorted({int(i) for i in rows})
    todo = [i for i in rows if data.texts[i] is None]
    data.cached_texts += len(rows) - len(todo)
    if not todo:
        return
    udf = F.arrow_udf(_ocr_arrow(fs.name, max_bytes, max_pixels), _OCR_SCHEMA).asNondeterministic()
    # small tasks (~8 images): OCR time varies a lot per image (a tweet screenshot has dozens
    # of lines), and with a few long tasks the last one runs while the other cores wait
    tasks = max(1, min(-(-len(todo) // 8), spark.sparkContext.defaultParallelism * 32))
    df = spark.createDataFrame([(data.path[i], i) for i in todo], "path string, row int").repartition(tasks)
    df = df.select("row", udf(F.col("path")).alias("r")).select("row", "r.*")
    with SparkProgress(spark, f"OCR of {len(todo)} images ({len(rows) - len(todo)} cached)", progress):
        table = df.toArrow()
    new_t: dict[str, str] = {}
    errors = 0
    for i, sha, text, err in zip(*(table.column(c).to_pylist() for c in ("row", "sha256", "ocr_text", "ocr_error"))):
        if text is not None and sha == data.sha256[i]:
            data.texts[i] = text
            new_t[sha] = text
        else:
            data.texts[i] = ""
            errors += 1
            log.debug("no OCR text for %s: %s", data.rel_path[i], err or "the file changed since it was embedded")
    missing = [i for i in todo if data.texts[i] is None]
    for i in missing:  # cannot happen unless Spark lost rows; never leave None behind
        data.texts[i] = ""
    errors += len(missing)
    data.ocr_run += len(new_t)
    data.ocr_errors += errors
    if cache is not None:
        cache.add_texts(list(new_t), list(new_t.values()))
    if errors:
        log.warning("OCR failed on %d images; they train the image branch only", errors)
