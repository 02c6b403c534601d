"""Training ingest: one Spark pass reads, hashes, decodes, embeds and OCRs every image,
reusing what earlier runs computed.

Each image is identified by the sha256 of its bytes. Embeddings (per feature set and
version) and OCR text (per OCR version) of images seen before are kept under the model
store in ``_cache/`` (Parquet, one part per run that added something), so a rerun on
mostly the same images skips the expensive part. The computation itself is the shared
input path (:func:`memestream.features.featurize_inputs`): cached or fresh, the features
are those the saved featurizer computes in the stream.
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

from memestream.dedup import dhash
from memestream.features import FeatureSet, featurize_inputs, get_feature_set

log = logging.getLogger(__name__)

CACHE_DIR = "_cache"
_SCHEMA = (
    "sha256 string, features array<float>, dhash long, error string, error_code string, "
    "ocr_text string, ocr_error string, size_bytes long"
)


@dataclass
class Ingested:
    """Row-aligned driver-side arrays for the decodable images of a labelled folder."""

    rel_path: list[str]
    label: list[str]
    sha256: list[str]
    features: np.ndarray  # (n, dim) float32
    dhash: list[int]
    texts: list[str] | None  # OCR text ('' when none) when OCR was asked for
    ocr_errors: int
    cached_features: int
    cached_texts: int
    skipped: dict  # error summary of undecodable files


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


def _ingest_arrow(feature_set: str, max_bytes: int, max_pixels: int, asset: str | None, known_feats: frozenset, known_texts: frozenset, ocr: bool):
    """UDF body: path -> sha256, features (or null when cached), dhash, error, OCR text."""

    def run(paths: pa.Array) -> pa.Array:
        from memestream.inputs import local_path, read_capped

        fs = get_feature_set(feature_set)
        values = paths.to_pylist()
        n = len(values)
        read = [read_capped(local_path(p), max_bytes) for p in values]
        shas = [hashlib.sha256(d).hexdigest() if d is not None else None for d, _ in read]
        todo = [i for i in range(n) if shas[i] is not None and (shas[i] not in known_feats or (ocr and shas[i] not in known_texts))]
        feats: list = [None] * n
        hashes: list = [None] * n
        errors = [str(e) if e is not None else None for _, e in read]
        codes = [e.code if e is not None else None for _, e in read]
        texts: list = [None] * n
        ocr_errors: list = [None] * n
        if todo:
            out = featurize_inputs(
                [read[i][0] for i in todo], fs, max_bytes=max_bytes, max_pixels=max_pixels, asset=asset, keep_images=True
            )
            for j, i in enumerate(todo):
                if out.errors[j] is not None:
                    errors[i], codes[i] = out.errors[j], out.codes[j]
                    continue
                img = out.images[j]
                if shas[i] not in known_feats:
                    feats[i] = out.matrix[j]
                    hashes[i] = dhash(img)
                if ocr and shas[i] not in known_texts:
                    from memestream.text import ocr_text

                    try:
                        texts[i] = ocr_text(img)
                    except Exception as exc:  # noqa: BLE001 - recorded; the image still trains the image branch
                        ocr_errors[i] = f"{type(exc).__name__}: {str(exc)[:200]}"
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
                pa.array(texts, type=pa.string()),
                pa.array(ocr_errors, type=pa.string()),
                pa.array([len(d) if d is not None else None for d, _ in read], type=pa.int64()),
            ],
            names=["sha256", "features", "dhash", "error", "error_code", "ocr_text", "ocr_error", "size_bytes"],
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
    """Read, hash, featurize (and OCR) every file of ``labelled`` (``path, rel_path, label_name``)
    in the Spark workers, reusing and then extending ``cache``."""
    from pyspark.sql import functions as F

    from batch_training.dataset import LABEL, REL_PATH
    from batch_training.progress import SparkProgress

    known = cache.load_features() if cache else {}
    known_texts = cache.load_texts() if (cache and ocr) else {}
    if known:
        log.info("feature cache: %d %s embeddings, %d OCR texts already known", len(known), fs.cache_key, len(known_texts))
    udf = F.arrow_udf(
        _ingest_arrow(fs.name, max_bytes, max_pixels, asset, frozenset(known), frozenset(known_texts), ocr), _SCHEMA
    ).asNondeterministic()
    tasks = max(2, spark.sparkContext.defaultParallelism * 4)  # small tasks: OCR time varies a lot per image
    df = labelled.select("path", REL_PATH, LABEL).repartition(tasks).withColumn("r", udf(F.col("path")))
    df = df.select(REL_PATH, LABEL, "r.*")
    what = "embedding" + (" + OCR" if ocr else "")
    with SparkProgress(spark, f"{what} ({fs.name})", progress):
        table = df.toArrow()
    table = table.sort_by(REL_PATH)
    rel = table.column(REL_PATH).to_pylist()
    labels = table.column(LABEL).to_pylist()
    shas = table.column("sha256").to_pylist()
    errors = table.column("error").to_pylist()
    codes = table.column("error_code").to_pylist()
    feats_col = table.column("features").to_pylist()
    hashes_col = table.column("dhash").to_pylist()
    texts_col = table.column("ocr_text").to_pylist()
    ocr_err = table.column("ocr_error").to_pylist()
    skipped = _summarize(rel, errors, codes)

    keep = [i for i in range(len(rel)) if errors[i] is None]
    feats = np.zeros((len(keep), fs.dim), dtype=np.float32)
    hashes: list[int] = []
    texts: list[str] | None = [] if ocr else None
    new_f: dict[str, tuple[np.ndarray, int]] = {}
    new_t: dict[str, str] = {}
    n_cached_f = n_cached_t = n_ocr_err = 0
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
        if texts is not None:
            if texts_col[i] is not None:
                texts.append(texts_col[i])
                new_t[sha] = texts_col[i]
            elif sha in known_texts:
                texts.append(known_texts[sha] or "")
                n_cached_t += 1
            else:  # OCR failed: no text for this image (the image branch still has it)
                texts.append("")
                n_ocr_err += 1 if ocr_err[i] else 0
    if cache is not None:
        cache.add_features(list(new_f), np.stack([v for v, _ in new_f.values()]) if new_f else np.zeros((0, fs.dim), np.float32), [h for _, h in new_f.values()])
        cache.add_texts(list(new_t), list(new_t.values()))
    if n_ocr_err:
        log.warning("OCR failed on %d images; they train the image branch only", n_ocr_err)
    return Ingested(
        rel_path=[rel[i] for i in keep],
        label=[labels[i] for i in keep],
        sha256=[shas[i] for i in keep],
        features=feats,
        dhash=hashes,
        texts=texts,
        ocr_errors=n_ocr_err,
        cached_features=n_cached_f,
        cached_texts=n_cached_t,
        skipped=skipped,
    )
