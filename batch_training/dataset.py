"""A labelled image folder as a Spark DataFrame, and a seeded stratified split of it.

Layout: ``ROOT/<class>/.../<file>``; the label is the first path component under ROOT,
so nested sub-folders are fine. Spark lists the files (path, size, mtime only), so
nothing here loops over images on the driver.
"""
from __future__ import annotations

import csv
import hashlib
import html
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from memestream.errors import DataError
from memestream.hidden import is_reader_hidden, walk_visible
from memestream.load import list_image_files

log = logging.getLogger(__name__)

REL_PATH = "rel_path"
LABEL = "label_name"
LABEL_INDEX = "label_index"
SPLIT = "split"
TRAIN, VALIDATION, TEST = "train", "validation", "test"


def _is_local(root: str) -> bool:
    return "://" not in root and not root.startswith("file:")


def check_folder(root: str) -> str:
    """Absolute root, or a :class:`DataError` saying what is missing."""
    if not _is_local(root):
        return root.rstrip("/")
    path = Path(root)
    if not path.exists():
        raise DataError(f"data folder {root} does not exist (expected a folder with one sub-folder per class)")
    if not path.is_dir():
        raise DataError(f"data folder {root} is a file, expected a folder with one sub-folder per class")
    return str(path.resolve())


def _has_file(folder: Path) -> bool:
    return next(walk_visible(folder, is_reader_hidden), None) is not None


def precheck_classes(root: str, min_classes: int = 2) -> list[str]:
    """Class folders holding at least one file (local roots only), checked before Spark starts.

    Stops at the first file of each class, so it costs a few ``stat`` calls, not a listing.
    """
    root = check_folder(root)
    if not _is_local(root):
        return []
    classes = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not is_reader_hidden(p.name) and _has_file(p))
    if not classes:
        raise DataError(f"data folder {root} holds no files in class sub-folders (expected {root}/<class>/<image files>)")
    if len(classes) < min_classes:
        raise DataError(f"data folder {root} has only one class folder ({classes[0]!r}); training needs at least two classes")
    return classes


def list_labelled(spark, root: str) -> DataFrame:
    """``path, rel_path, label_name, length, modificationTime`` for every non-hidden file.

    Files directly under ``root`` (no class folder) are skipped with a warning.
    """
    root = check_folder(root)
    try:
        files = list_image_files(spark, root)
    except Exception as exc:  # noqa: BLE001 - Spark raises on some unreadable roots
        raise DataError(f"cannot list {root}: {str(exc).strip().splitlines()[0][:300]}") from None
    # Spark reports "file:/abs/path/..." for local files; match on the part after the root.
    marker = root if _is_local(root) else root.split("://", 1)[-1].split("/", 1)[-1]
    marker = marker.rstrip("/") + "/"
    pos = F.locate(marker, F.col("path"))
    rel = F.when(pos > 0, F.col("path").substr(pos + F.lit(len(marker)), F.length("path")))
    df = files.withColumn(REL_PATH, rel)
    df = df.withColumn(LABEL, F.when(F.instr(F.col(REL_PATH), "/") > 0, F.substring_index(F.col(REL_PATH), "/", 1)))
    return df


def with_label_index(df: DataFrame, classes: list[str]) -> DataFrame:
    """Add ``label_index`` (position in ``classes``; double, as Spark ML classifiers want)."""
    names = F.array(*[F.lit(c) for c in classes])
    return df.withColumn(LABEL_INDEX, (F.array_position(names, F.col(LABEL)) - 1).cast("double"))


def split_counts(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes for a class of ``n`` rows: test first, then validation of the rest."""
    n_test = math.floor(n * test_fraction + 0.5)  # half up, as Spark's round() in stratified_split
    n_val = math.floor((n - n_test) * val_fraction + 0.5)
    return n - n_test - n_val, n_val, n_test


def stratified_split(df: DataFrame, test_fraction: float, val_fraction: float, seed: int) -> DataFrame:
    """Add ``split`` (train/validation/test) with exact per-class proportions.

    Rows are ranked inside their class by a seeded hash of the relative path (ties by
    the path), so the split is the same on every run and does not depend on the order
    Spark lists files in.
    """
    by_class = Window.partitionBy(LABEL)
    ranked = (
        df.withColumn("__h", F.xxhash64(F.lit(int(seed)), F.col(REL_PATH)))
        .withColumn("__rank", F.row_number().over(by_class.orderBy("__h", REL_PATH)) - 1)
        .withColumn("__n", F.count(F.lit(1)).over(by_class))
    )
    n_test = F.round(F.col("__n") * F.lit(float(test_fraction))).cast("int")
    n_val = F.round((F.col("__n") - n_test) * F.lit(float(val_fraction))).cast("int")
    split = (
        F.when(F.col("__rank") < n_test, F.lit(TEST))
        .when(F.col("__rank") < n_test + n_val, F.lit(VALIDATION))
        .otherwise(F.lit(TRAIN))
    )
    return ranked.withColumn(SPLIT, split).drop("__h", "__rank", "__n")


def fingerprint(df: DataFrame) -> dict[str, Any]:
    """sha256 over the sorted ``relative path, size, mtime`` lines of ``df`` plus the count (one Spark job)."""
    line = F.concat_ws("\t", F.col(REL_PATH), F.col("length").cast("string"), F.col("modificationTime").cast("long").cast("string"))
    row = df.agg(
        F.sha2(F.concat_ws("\n", F.array_sort(F.collect_list(line))), 256).alias("sha"), F.count(F.lit(1)).alias("n")
    ).first()
    return {"sha256": row["sha"], "count": int(row["n"]), "over": "sorted relative path, size, mtime (epoch s)"}


def fingerprint_rows(rows: Iterable[tuple[str, int, int]]) -> dict[str, Any]:
    """:func:`fingerprint` of ``(relative path, size, mtime epoch s)`` rows already on the
    driver (training collects its listing once): the same lines, order and digest."""
    lines = sorted(f"{rel}\t{size}\t{mtime}" for rel, size, mtime in rows)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return {"sha256": digest, "count": len(lines), "over": "sorted relative path, size, mtime (epoch s)"}


#: The titles file ``--titles auto`` looks for in the data folder (the scraper replay's layout).
TITLES_FILE = "posts.csv"
TITLE_COLUMNS = ("file", "title")


def titles_path(root: str, option: str) -> Path | None:
    """The titles CSV ``--titles`` names: None for ``none``, and for ``auto`` when the
    (local) data folder has no :data:`TITLES_FILE`."""
    if option == "none":
        return None
    if option == "auto":
        if not _is_local(root):
            return None
        path = Path(root) / TITLES_FILE
        return path if path.is_file() else None
    path = Path(option)
    if not path.is_file():
        raise DataError(f"--titles {option}: no such file (expected a CSV with columns {', '.join(TITLE_COLUMNS)}, or auto/none)")
    return path


def read_titles(path: Path, rel_paths: Iterable[str], required: bool = True) -> list[str] | None:
    """Per row of ``rel_paths``, the title the CSV gives its ``file`` ('' when none),
    HTML entities decoded (Reddit titles carry ``&amp;``). None when the CSV lacks the
    columns and ``required`` is false (an ``auto`` file that is something else)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if not all(c in columns for c in TITLE_COLUMNS):
                if not required:
                    log.info("titles: %s has columns %s, not %s; not used", path, columns, list(TITLE_COLUMNS))
                    return None
                raise DataError(f"titles file {path} needs columns {', '.join(TITLE_COLUMNS)}, found {', '.join(columns) or 'none'}")
            by_file = {row["file"].strip().removeprefix("./"): html.unescape(row["title"] or "").strip() for row in reader if row.get("file")}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"titles file {path} is unreadable: {type(exc).__name__}: {exc}") from None
    titles = [by_file.get(r.replace(os.sep, "/"), "") for r in rel_paths]
    found = sum(1 for t in titles if t)
    log.info("titles: %d of %d training images have a post title in %s", found, len(titles), path)
    return titles if found else None
