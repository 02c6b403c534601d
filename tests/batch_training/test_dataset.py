"""Listing a labelled folder and the stratified split."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from batch_training.dataset import LABEL, REL_PATH, SPLIT, fingerprint, fingerprint_rows, list_labelled, split_counts, stratified_split
from memestream.errors import DataError


def _frame(spark, sizes: dict[str, int]):
    rows = [(f"{c}/sub/{i:04d}.jpg", c) for c, n in sizes.items() for i in range(n)]
    return spark.createDataFrame(rows, [REL_PATH, LABEL])


def test_split_counts_default_64_16_20():
    assert split_counts(100, 0.2, 0.2) == (64, 16, 20)
    assert split_counts(7, 0.2, 0.2) == (5, 1, 1)
    assert split_counts(10, 0.25, 0.0) == (7, 0, 3)  # half rounds up


def test_stratified_split_exact_per_class_and_deterministic(spark):
    sizes = {"a": 100, "b": 37, "c": 10, "d": 2}
    df = _frame(spark, sizes)
    first = stratified_split(df, 0.2, 0.2, seed=42)
    got = {(r[LABEL], r[SPLIT]): r["count"] for r in first.groupBy(LABEL, SPLIT).count().collect()}
    for c, n in sizes.items():
        train, val, test = split_counts(n, 0.2, 0.2)
        assert (got.get((c, "train"), 0), got.get((c, "validation"), 0), got.get((c, "test"), 0)) == (train, val, test)
    again = stratified_split(df.orderBy(F.rand(1)), 0.2, 0.2, seed=42)
    as_map = lambda d: {r[REL_PATH]: r[SPLIT] for r in d.collect()}  # noqa: E731
    assert as_map(first) == as_map(again)
    other_seed = as_map(stratified_split(df, 0.2, 0.2, seed=7))
    assert other_seed != as_map(first)


def test_list_labelled_labels_nested_and_skips_hidden(spark, tmp_path):
    (tmp_path / "cats" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "dogs").mkdir()
    (tmp_path / "cats" / "deep" / "er" / "x.jpg").write_bytes(b"x")
    (tmp_path / "dogs" / "y.png").write_bytes(b"yy")
    (tmp_path / "dogs" / ".hidden.png").write_bytes(b"h")
    (tmp_path / "loose.jpg").write_bytes(b"l")
    rows = {r[REL_PATH]: r[LABEL] for r in list_labelled(spark, str(tmp_path)).collect()}
    assert rows == {"cats/deep/er/x.jpg": "cats", "dogs/y.png": "dogs", "loose.jpg": None}
    fp = fingerprint(list_labelled(spark, str(tmp_path)))
    assert fp["count"] == 3 and len(fp["sha256"]) == 64
    # training computes it from its collected listing: the same digest
    listed = list_labelled(spark, str(tmp_path)).select(REL_PATH, "length", F.col("modificationTime").cast("long")).collect()
    assert fingerprint_rows([tuple(r) for r in listed]) == fp
    assert fingerprint_rows([tuple(r) for r in listed][:2]) != fp


def test_missing_folder_is_data_error(spark, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_labelled(spark, str(tmp_path / "nope"))


def test_titles_file_is_matched_by_relative_path_and_decoded(tmp_path):
    from batch_training.dataset import read_titles, titles_path
    from memestream.errors import DataError

    (tmp_path / "posts.csv").write_text(
        "label,file,title\n"
        "doom,doom/a.png,Rip &amp; tear\n"
        "doom,./doom/b.jpg,  until it is done  \n"
        "animal_crossing,animal_crossing/c.png,\n",
        encoding="utf-8",
    )
    assert titles_path(str(tmp_path), "auto") == tmp_path / "posts.csv"
    assert titles_path(str(tmp_path), "none") is None
    assert titles_path(str(tmp_path / "nowhere"), "auto") is None
    with pytest.raises(DataError, match="no such file"):
        titles_path(str(tmp_path), str(tmp_path / "missing.csv"))
    got = read_titles(tmp_path / "posts.csv", ["doom/a.png", "doom/b.jpg", "animal_crossing/c.png", "doom/unknown.png"])
    assert got == ["Rip & tear", "until it is done", "", ""]
    # a CSV without the columns: one clear error when asked for, ignored under auto
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="needs columns file, title"):
        read_titles(tmp_path / "other.csv", ["doom/a.png"])
    assert read_titles(tmp_path / "other.csv", ["doom/a.png"], required=False) is None
    # no row matched: nothing to add
    assert read_titles(tmp_path / "posts.csv", ["cats/x.png"]) is None
