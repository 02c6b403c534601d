"""The labelled files of a training run: listed by Spark, checked on the driver, and the
undecodable ones summarised (also for ``meme-evaluate``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_training import dataset as ds
from batch_training.config import TrainConfig
from batch_training.ingest import Ingested
from memestream.classify import error_code
from memestream.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    root: str
    labelled: DataFrame  # path, rel_path, label_name, length, modificationTime
    fingerprint: dict[str, Any]
    file_counts: dict[str, int]
    classes: list[str]


def list_inputs(spark: SparkSession, cfg: TrainConfig) -> Inputs:
    """Step 1: the labelled files and their classes (Spark lists; nothing is read yet)."""
    root = ds.check_folder(cfg.data)
    listing = ds.list_labelled(spark, root)
    # one Spark job: the listing is small (a row per file), the checks below run on the driver
    cols = ("path", ds.REL_PATH, ds.LABEL, "length", "modificationTime")
    rows = [tuple(r) for r in listing.select(*cols[:-1], F.col("modificationTime").cast("long").alias("mtime"), F.col("modificationTime")).collect()]
    # the titles file (--titles auto) sits there by design: not worth a warning
    titles_file = ds.TITLES_FILE if cfg.titles == "auto" and cfg.text != "off" else None
    loose = sorted(r[1] for r in rows if r[2] is None and r[1] != titles_file)[:5]
    if loose:
        log.warning("skipping files directly under %s (not in a class folder), e.g. %s", root, ", ".join(str(r) for r in loose))
    rows = [r for r in rows if r[2] is not None]
    fp = ds.fingerprint_rows((r[1], r[3], r[4]) for r in rows)
    if fp["count"] == 0:
        raise DataError(f"data folder {root} holds no files in class sub-folders (expected {root}/<class>/<image files>)")
    labelled = spark.createDataFrame([(r[0], r[1], r[2], r[3], r[5]) for r in rows], listing.select(*cols).schema)
    file_counts: dict[str, int] = {}
    for r in rows:
        file_counts[r[2]] = file_counts.get(r[2], 0) + 1
    classes = sorted(file_counts)
    if len(classes) < 2:
        raise DataError(f"data folder {root} has only one class folder ({classes[0]!r}); training needs at least two classes")
    log.info("found %d files in %d classes under %s: %s", fp["count"], len(classes), root, ", ".join(f"{c}={file_counts[c]}" for c in classes))
    return Inputs(root, labelled, fp, file_counts, classes)


def check_decodable(inputs: Inputs, data: Ingested) -> None:
    """Warn about the files that are not decodable images; a class left with none is an error."""
    skipped = data.skipped
    if skipped["count"]:
        log.warning(
            "skipped %d files that are not decodable images (%s); e.g. %s",
            skipped["count"],
            ", ".join(f"{k}={v}" for k, v in sorted(skipped["by_code"].items())),
            "; ".join(f"{inputs.root}/{e['path']} ({e['error']})" for e in skipped["examples"]),
        )
    good = {c: 0 for c in inputs.classes}
    for label in data.label:
        good[label] += 1
    empty = [c for c in inputs.classes if good[c] == 0]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(f'{inputs.root}/{c}' for c in empty)} hold no decodable images "
            f"({', '.join(f'{c}: {inputs.file_counts[c]} files' for c in empty)}); expected JPEG/PNG/... images"
        )


def summarize_errors(feats: DataFrame, rel_col: str, error_col: str, examples: int = 5) -> dict[str, Any]:
    """Counts of undecodable files by error code plus a few example paths (one small job each)."""
    bad = feats.filter(F.col(error_col).isNotNull())
    counts = {r["code"]: int(r["count"]) for r in bad.groupBy(error_code(F.col(error_col)).alias("code")).count().collect()}
    sample = [{"path": r[rel_col], "error": r[error_col]} for r in bad.select(rel_col, error_col).orderBy(rel_col).limit(examples).collect()] if counts else []
    return {"count": sum(counts.values()), "by_code": counts, "examples": sample}
