"""The spool's sequence names: strictly increasing, and never behind a listing (no Spark here)."""
from __future__ import annotations

import threading


from memestream import spool as spool_mod
from memestream.inbox import InboxMover
from memestream.spool import SpoolSequence, parse_seq, seq_name
from streaming.spool_source import SpoolStreamReader


def test_names_parse_and_sort_by_number():
    assert parse_seq(seq_name(42, "a-b.jpg")) == 42
    assert seq_name(42, "x").startswith("0000000000000000042-")
    assert parse_seq("cat.jpg") is None and parse_seq("12-cat.jpg") is None  # too few digits: not ours
    assert parse_seq("1795978410307795472-") is None  # no original name


def test_numbers_keep_increasing_when_the_clock_steps_back(tmp_path, monkeypatch):
    seq = SpoolSequence(tmp_path / "spool")
    with seq.locked() as held:
        first = held.next_seq()
    monkeypatch.setattr(spool_mod.time, "time_ns", lambda: first - 10_000_000_000)  # 10 s back
    with seq.locked() as held:
        second, third = held.next_seq(), held.next_seq()
    assert first < second < third
    assert seq.lock_path.parent == (tmp_path).resolve() and not list((tmp_path / "spool").iterdir())


def test_a_lost_sequence_file_restarts_above_the_spool_and_the_readers_position(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    big = 3_000_000_000_000_000_000  # beyond the clock: only the names and the reader can say so
    (spool / seq_name(big, "left.jpg")).write_bytes(b"x")
    seq = SpoolSequence(spool)
    seq.lock_path.write_text("garbage")
    with seq.locked() as held:
        assert held.next_seq() == big + 1
    seq.lock_path.unlink()
    (spool / seq_name(big, "left.jpg")).unlink()
    with seq.locked() as held:
        held.ensure_above(big + 100)  # what the reader does with its committed position
        assert held.next_seq() == big + 101


def test_concurrent_movers_and_a_listing_reader_never_skip_or_repeat_a_file(tmp_path):
    """Several movers (threads, each its own lock holder, as separate processes would be) spool
    files while the reader plans ranges as fast as it can: every file lands in exactly one range."""
    spool = tmp_path / "spool"
    movers = [InboxMover(tmp_path / f"inbox{i}", spool, settle=0) for i in range(4)]
    per_mover = 150
    for i, m in enumerate(movers):
        for j in range(per_mover):
            (m.inbox / f"m{i}-{j:03d}.png").write_bytes(b"p")
    reader = SpoolStreamReader(spool, max_files=1000, num_partitions=3, keep_processed=True)
    planned: list[str] = []
    done = threading.Event()

    def plan_until_done():
        start = reader.initialOffset()
        while True:
            finished = done.is_set()  # read before listing: a final pass after the movers stop
            end = reader.latestOffset()
            for part in reader.partitions(start, end):
                planned.extend(part.names)
            start = end
            if finished:
                return

    planner = threading.Thread(target=plan_until_done)
    planner.start()
    threads = [threading.Thread(target=m.sweep, kwargs={"settle": 0.0}) for m in movers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    planner.join(timeout=60)
    assert sum(m.moved for m in movers) == 4 * per_mover
    spooled = sorted(p.name for p in spool.iterdir())
    assert len(planned) == len(set(planned)), "a file was planned twice"
    assert sorted(planned) == spooled, "a file was skipped"
    seqs = [parse_seq(n) for n in spooled]
    assert len(set(seqs)) == len(seqs)
