"""The inbox mover never lets the stream see a half-written file."""
from __future__ import annotations

import threading
import time

from memestream.inbox import InboxMover
from memestream.inputs import EMPTY_FILE_MARKER
from memestream.spool import parse_seq


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_sweep_moves_existing_complete_files_with_unique_names(tmp_path):
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    (inbox / "nested").mkdir(parents=True)
    (inbox / "a.jpg").write_bytes(b"A" * 10)
    (inbox / "nested" / "a.jpg").write_bytes(b"B" * 10)  # same name, other folder
    (inbox / ".hidden.jpg").write_bytes(b"C")
    (inbox / "empty.png").write_bytes(b"")
    mover = InboxMover(inbox, spool, settle=0.05)
    assert mover.sweep() == 3
    moved = sorted(p.name.split("-", 1)[1] for p in spool.iterdir())
    assert moved == ["a.jpg", "a.jpg", "empty.png"]
    contents = sorted(p.read_bytes() for p in spool.iterdir())
    assert contents == sorted([b"A" * 10, b"B" * 10, EMPTY_FILE_MARKER])
    assert (inbox / ".hidden.jpg").exists()


def test_a_file_still_being_written_is_not_moved_until_complete(tmp_path):
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    mover = InboxMover(inbox, spool, settle=0.4)
    mover.start()
    try:
        fh = open(inbox / "slow.jpg", "wb")
        seen_partial = []

        def writer():
            for _ in range(8):  # ~0.8 s of slow copying, chunks 0.1 s apart (< settle)
                fh.write(b"x" * 1000)
                fh.flush()
                seen_partial.extend(spool.iterdir())
                time.sleep(0.1)
            fh.close()

        t = threading.Thread(target=writer)
        t.start()
        t.join()
        assert seen_partial == [], "a partial file reached the spool"
        assert _wait_for(lambda: len(list(spool.iterdir())) == 1)
        (moved,) = list(spool.iterdir())
        assert moved.read_bytes() == b"x" * 8000
    finally:
        mover.stop()


def test_watcher_moves_files_that_arrive_later(tmp_path):
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    mover = InboxMover(inbox, spool, settle=0.1)
    mover.start()
    try:
        for i in range(5):
            (inbox / f"n{i}.png").write_bytes(b"p" * (i + 1))
        assert _wait_for(lambda: len(list(spool.iterdir())) == 5)
        assert list(inbox.iterdir()) == []
    finally:
        mover.stop()


def test_mover_spools_empty_files_and_cross_device_copies_under_sequence_names(tmp_path, monkeypatch):
    import errno
    import os

    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    mover = InboxMover(inbox, spool, settle=0)
    (inbox / "e.png").write_bytes(b"")
    (inbox / "x.png").write_bytes(b"data")
    real_rename = os.rename

    def exdev(src, dst):  # noqa: ANN001
        if str(src).startswith(str(inbox)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", exdev)
    assert mover.sweep(settle=0) == 2
    names = sorted(p.name for p in spool.iterdir())
    assert [n.split("-", 1)[1] for n in names] == ["e.png", "x.png"]
    assert all(parse_seq(n) for n in names)
    assert list(inbox.iterdir()) == []
    # nothing hidden left behind by the copy path
    assert not [p for p in spool.iterdir() if p.name.startswith(".")]
