"""The three hidden-file rules (memestream.hidden) and the walk that applies them."""
from __future__ import annotations

from memestream.hidden import is_dot_hidden, is_inbox_ignored, is_reader_hidden, walk_visible


def test_hidden_and_temporary_names_are_ignored():
    assert is_inbox_ignored(".DS_Store") and is_inbox_ignored("meme.jpg.part") and is_inbox_ignored("x.crdownload") and is_inbox_ignored("_tmp")
    assert is_inbox_ignored("~$report.docx") and is_inbox_ignored("MEME.JPG.CRDOWNLOAD")
    assert not is_inbox_ignored("meme.jpg")


def test_the_three_rules_differ_where_they_should():
    # dot rule: what a person points at (meme-publish, the dashboard) keeps "_" names
    assert is_dot_hidden(".git") and not is_dot_hidden("_cover.jpg") and not is_dot_hidden("meme.jpg.part")
    # reader rule: Spark/Hadoop names are hidden, unfinished downloads are not its business
    assert is_reader_hidden("_SUCCESS") and is_reader_hidden(".part-1.parquet.tmp") and is_reader_hidden("_commits")
    assert not is_reader_hidden("part-main-0000000001.parquet") and not is_reader_hidden("meme.jpg.part")
    # inbox rule: the reader rule and more
    for name in ("_SUCCESS", ".x", "~$x", "a.tmp", "a.partial", "a.download", "a.swp", "a~", "a.filepart"):
        assert is_inbox_ignored(name), name


def test_walk_visible_skips_hidden_files_and_folders_in_name_order(tmp_path):
    for rel in ("b.jpg", "a.jpg", ".hidden.jpg", "_meta.json", "sub/c.jpg", "sub/.d.jpg", "_staging/e.jpg", ".git/f.jpg", "sub/deeper/g.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in walk_visible(tmp_path, is_reader_hidden)]
    assert got == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/g.jpg"]
    dot = [p.relative_to(tmp_path).as_posix() for p in walk_visible(tmp_path, is_dot_hidden)]
    assert dot == ["_meta.json", "a.jpg", "b.jpg", "_staging/e.jpg", "sub/c.jpg", "sub/deeper/g.jpg"]
    assert list(walk_visible(tmp_path / "missing", is_dot_hidden)) == []
