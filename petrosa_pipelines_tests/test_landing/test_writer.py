"""The landing writer: visibility only after close, rotation, the group lock, spill, recovery."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from petrosa_pipelines.landing import (
    GapRecord,
    GroupLockedError,
    LandingStore,
    LandingWriter,
    layout,
)
from petrosa_pipelines.landing.segments import recover_temp_file, valid_prefix_length
from petrosa_pipelines.landing.spill import SpillQueue
from petrosa_pipelines.landing.writer import WriterConfig, format_line
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_start_ms

DAY = dt.date(2024, 1, 2)
T0 = day_start_ms(DAY)


def _lines(store: LandingStore, start: int = T0 - 2 * HOUR_MS, end: int = T0 + 26 * HOUR_MS):
    return list(store.iter_lines("binance", start, end, slack_ms=0))


def test_open_segment_is_invisible_until_rotated(tmp_path):
    store = LandingStore(tmp_path)
    with LandingWriter(tmp_path, "binance", "g1") as w:
        for i in range(10):
            assert w.put(T0 + i, b'{"n":%d}' % i)
        w.queue.wake()
        # durable (fsynced) but not yet published
        deadline = time.monotonic() + 5
        while w.stats.lines_durable < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.stats.lines_durable == 10
        assert _lines(store) == []
        assert list(tmp_path.rglob(".seg-*.tmp"))
        w.rotate()
        assert [p for _, p in _lines(store)] == [b'{"n":%d}' % i for i in range(10)]
        assert [r for r, _ in _lines(store)] == [T0 + i for i in range(10)]
    assert not list(tmp_path.rglob(".seg-*.tmp"))


def test_segments_follow_receipt_hour_and_size(tmp_path):
    cfg = WriterConfig(segment_max_bytes=2_000)
    with LandingWriter(tmp_path, "binance", "g1", config=cfg) as w:
        for i in range(100):
            w.put(T0 - HOUR_MS // 2 + i * 36_000, b'{"pad":"' + b"x" * 100 + b'"}')
    segs = sorted(tmp_path.rglob("seg-*.jsonl"))
    hours = {(s.parent.parent.name, s.parent.name) for s in segs}
    assert hours == {("2024-01-01", "23"), ("2024-01-02", "00")}
    assert all(s.stat().st_size <= 2_000 + 200 for s in segs)
    assert len(segs) > 5
    # each segment holds only lines of its own receipt hour, and names sort in time
    for s in segs:
        name = layout.SegmentName.parse(s.name)
        first = int(s.read_bytes().split(b" ", 1)[0])
        assert name.first_recv_ms == first
        assert layout.data_hour_dir(tmp_path, "binance", "g1", first) == s.parent
    assert len(_lines(LandingStore(tmp_path))) == 100


def test_newline_inside_a_frame_cannot_split_a_line():
    assert format_line(5, b'{"a":\n1}') == b'5 {"a": 1}\n'


def test_second_writer_of_a_group_is_refused(tmp_path):
    with LandingWriter(tmp_path, "binance", "g1"):
        with pytest.raises(GroupLockedError):
            LandingWriter(tmp_path, "binance", "g1").start()
        # another group is independent
        with LandingWriter(tmp_path, "binance", "g2"):
            pass
    with LandingWriter(tmp_path, "binance", "g1"):
        pass


def test_reserved_and_unsafe_names_are_rejected(tmp_path):
    for bad in ("_gaps", "../x", "a/b", ""):
        with pytest.raises(ValueError):
            LandingWriter(tmp_path, "binance", bad)


def test_slow_disk_spills_instead_of_growing_memory_and_loses_nothing(tmp_path):
    cfg = WriterConfig(max_memory_bytes=2_000, max_spill_bytes=10_000_000)
    w = LandingWriter(tmp_path, "binance", "g1", config=cfg)
    # the writer thread is not started yet: everything queues up, as with a stalled disk
    for i in range(5_000):
        assert w.put(T0 + i, b'{"n":%d}' % i)
    assert w.queue.memory_bytes <= 2_000
    assert w.queue.spilled_total > 4_900
    w.start()
    w.close()
    got = [p for _, p in _lines(LandingStore(tmp_path))]
    assert got == [b'{"n":%d}' % i for i in range(5_000)]
    assert not list(tmp_path.rglob(".spill-*"))


def test_full_spill_refuses_instead_of_dropping(tmp_path):
    q = SpillQueue(tmp_path / "s.tmp", max_memory_bytes=100, max_spill_bytes=300)
    accepted = [q.put(0, i, format_line(i, b"x" * 40)) for i in range(20)]
    assert accepted[:3] == [True, True, True]
    assert accepted[-1] is False
    n_ok = sum(accepted)
    assert q.refused_total == 20 - n_ok
    out = []
    while batch := q.get_batch(timeout=0):
        out.extend(batch)
    assert [r for _, r, _ in out] == list(range(n_ok))
    # drained: accepting again, in memory
    assert q.put(0, 99, format_line(99, b"y"))
    assert q.spill_bytes == 0


def test_orphaned_spill_is_relanded_on_restart(tmp_path):
    cfg = WriterConfig(max_memory_bytes=100)
    w = LandingWriter(tmp_path, "binance", "g1", config=cfg)
    for i in range(50):
        w.put(T0 + i, b'{"n":%d}' % i)
    w.queue._spill_w.flush()  # what the OS would hold after a crash of a process
    # a crash: the process is gone, the spill file stays; a new writer takes over
    with LandingWriter(tmp_path, "binance", "g1"):
        pass
    got = [p for _, p in _lines(LandingStore(tmp_path))]
    assert set(got) >= {b'{"n":%d}' % i for i in range(5, 50)}
    assert len(got) == len(set(got))


def test_recover_keeps_complete_lines_and_drops_a_cut_one(tmp_path):
    temp = tmp_path / ".seg-1-abc-1.jsonl.tmp"
    temp.write_bytes(b'1 {"a":1}\n2 {"a":2}\n3 {"a"')
    published = recover_temp_file(temp)
    assert published == tmp_path / "seg-1-abc-1.jsonl"
    assert published.read_bytes() == b'1 {"a":1}\n2 {"a":2}\n'
    empty = tmp_path / ".seg-2-abc-2.jsonl.tmp"
    empty.write_bytes(b"12")
    assert recover_temp_file(empty) is None
    assert not empty.exists()
    assert valid_prefix_length(b"1 x\n\x00\x00\n2 y\n") == 4


def test_restart_recovers_predecessor_temp_files(tmp_path):
    w = LandingWriter(tmp_path, "binance", "g1")
    w._lock.acquire()
    seg = w._stores[0].segment_for(T0)
    seg.write(format_line(T0, b'{"kept":1}') + b"17049")
    seg.sync()
    seg.abandon()
    w._lock.release()  # the kernel does this when a process dies
    with LandingWriter(tmp_path, "binance", "g1") as w2:
        assert w2.stats.recovered_segments == 1
    assert [p for _, p in _lines(LandingStore(tmp_path))] == [b'{"kept":1}']


def test_gap_ledger_round_trip(tmp_path):
    with LandingWriter(tmp_path, "binance", "g1") as w:
        w.record_gap(GapRecord("trades", "BTCUSDT", T0, T0 + 5_000, "disconnect", T0 + 6_000))
        w.record_gap(GapRecord("depth", "ETHUSDT", T0 + 10, T0 + 20, "sequence_break", T0))
        w.record_gap(GapRecord("*", "*", T0 + 100, T0 + 200, "writer_restart", T0))
    store = LandingStore(tmp_path)
    assert len(store.gaps("binance", T0, T0 + HOUR_MS)) == 3
    trades = store.gaps("binance", T0, T0 + HOUR_MS, dataset="trades", symbol="btcusdt")
    assert [(g.cause, g.start_ms) for g in trades] == [
        ("disconnect", T0),
        ("writer_restart", T0 + 100),
    ]
    assert store.gaps("binance", T0 + 6_000, T0 + 7_000) == []
    assert [g.cause for g in store.gaps("binance", T0 + 150, T0 + 151, dataset="depth")] == [
        "writer_restart"
    ]


def test_dead_letters_keep_raw_bytes_reason_and_time(tmp_path):
    raw = b"\xff\xfe{not json\n"
    with LandingWriter(tmp_path, "binance", "g1") as w:
        w.put_dead_letter(T0 + 5, raw, "not valid JSON", "<message>")
        w.put_dead_letter(T0 + 25 * HOUR_MS, b"{}", "next day", "e")
    store = LandingStore(tmp_path)
    (dl,) = store.dead_letters("binance", DAY)
    assert (dl.raw, dl.reason, dl.field, dl.received_at, dl.group) == (
        raw,
        "not valid JSON",
        "<message>",
        T0 + 5,
        "g1",
    )
    assert [d.reason for d in store.dead_letters("binance", DAY + dt.timedelta(days=1))] == [
        "next day"
    ]
