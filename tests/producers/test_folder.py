"""meme-drop copies files into the inbox atomically and reports problems in one line."""
from __future__ import annotations

from producers.folder import drop_files, main


def test_drop_files_copies_atomically_and_never_overwrites(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.jpg").write_bytes(b"one")
    inbox = tmp_path / "inbox"
    first = drop_files([src / "m.jpg"], inbox)
    second = drop_files([src], inbox)
    assert first[0].read_bytes() == b"one" and second[0].read_bytes() == b"one"
    assert first[0] != second[0]
    assert not [p for p in inbox.iterdir() if p.name.startswith(".")]


def test_meme_drop_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--inbox", str(tmp_path / "inbox"), str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    assert main(["--inbox", str(tmp_path / "inbox")]) == 2
