"""The float-keyed order book: spellings of one price are one level, both feeding paths agree."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.ingest.fastpath import FAST_DECODER, DepthRoute, depth_levels
from petrosa_pipelines.landing.book import Applied, BookSync, OrderBook
from petrosa_pipelines_tests.test_landing import binance_frames as bf

T0 = 1_704_240_000_000
D = Decimal


def _snap(uid: int, bids, asks) -> DepthSnapshotRecord:
    lv = lambda xs: tuple((D(p), D(q)) for p, q in xs)  # noqa: E731
    return DepthSnapshotRecord("binance", "BTCUSDT", uid, T0, None, lv(bids), lv(asks), T0)


def _diff(first, final, prev, t, bids=(), asks=()) -> DepthUpdateRecord:
    lv = lambda xs: tuple((D(p), D(q)) for p, q in xs)  # noqa: E731
    return DepthUpdateRecord("binance", "BTCUSDT", t, t, first, final, prev, lv(bids), lv(asks))


def test_spellings_of_one_price_are_one_level():
    book = OrderBook("BTCUSDT")
    book.load(_snap(10, [("100.10", "1"), ("99", "2")], [("101.000", "3")]))
    assert book.apply(_diff(11, 11, 10, T0 + 1, bids=[("100.1", "5")], asks=[("101", "0.0")]))
    bids, asks = book.top(5)
    assert bids == [(100.1, 5.0), (99.0, 2.0)]
    assert asks == []  # "101" removed the level loaded as "101.000"
    assert book.apply(_diff(12, 12, 11, T0 + 2, bids=[("1.001E+2", "0")])) is Applied.APPLIED
    assert book.top(5)[0] == [(99.0, 2.0)]


def test_top_is_best_first_on_both_sides_and_removal_of_unknown_is_fine():
    book = OrderBook("BTCUSDT")
    book.load(_snap(1, [("1", "1"), ("3", "1"), ("2", "1")], [("6", "1"), ("4", "1"), ("5", "1")]))
    book.apply(_diff(2, 2, 1, T0, bids=[("2.5", "7"), ("9", "0")], asks=[("4.5", "2"), ("4", "0")]))
    bids, asks = book.top(3)
    assert [p for p, _ in bids] == [3.0, 2.5, 2.0]
    assert [p for p, _ in asks] == [4.5, 5.0, 6.0]
    assert book.top(0) == ([], [])


def test_fast_path_levels_and_records_build_the_same_samples():
    frames = [
        bf.depth_update("BTCUSDT", 11 + i, 11 + i, 10 + i, T0 + 300 * i,
                        bids=[(f"{100 - i % 7}.{i % 10}0", f"{i % 4}.000")],
                        asks=[(f"{101 + i % 5}.{i % 3}", f"{(i + 1) % 3}")])
        for i in range(60)
    ]  # fmt: skip
    snap = _snap(10, [("95", "1")], [("106", "1")])
    fast = BookSync("BTCUSDT", cadence_ms=1000, top_n=3)
    slow = BookSync("BTCUSDT", cadence_ms=1000, top_n=3)
    fast.on_snapshot(snap)
    slow.on_snapshot(snap)
    route = DepthRoute("btcusdt@depth@100ms", "BTCUSDT")
    parse = BinanceUsdmAdapter().parse
    got_fast, got_slow = [], []
    for f in frames:
        d = FAST_DECODER.decode(f).data
        bids, asks = depth_levels(f, route, d)
        got_fast += fast.on_update(d.E, d.U, d.u, d.pu, None, bids, asks)[1]
        got_slow += slow.on_diff(parse(f))[1]
    assert len(got_fast) > 10 and got_fast == got_slow
    assert [s.bids for s in got_fast] == [s.bids for s in got_slow]
    assert all(isinstance(p, Decimal) for s in got_fast for p, _ in s.bids + s.asks)


def test_checkpoint_round_trip_keeps_the_book():
    a = BookSync("BTCUSDT", cadence_ms=1000, top_n=5)
    a.on_snapshot(_snap(10, [("0.00000010", "3"), ("0.0000002", "1")], [("0.0000003", "2")]))
    cp = a.book.checkpoint("binance", T0)
    assert cp.bids == ((D("2E-7"), D("1.0")), (D("1E-7"), D("3.0")))
    b = BookSync("BTCUSDT", cadence_ms=1000, top_n=5)
    b.on_snapshot(cp)
    assert b.book.top(5) == a.book.top(5)


def test_a_break_drops_the_book_and_buffers_the_diff():
    s = BookSync("BTCUSDT", cadence_ms=1000, top_n=2)
    assert s.on_diff(_diff(5, 6, 4, T0))[0] is Applied.BUFFERED
    ok, _ = s.on_snapshot(_snap(5, [("1", "1")], [("2", "1")]))
    assert ok and s.book.last_update_id == 6
    assert s.on_diff(_diff(8, 9, 7, T0 + 10))[0] is Applied.BREAK
    assert not s.book.synced and len(s.buffer) == 1


_price = st.integers(1, 40).map(lambda i: i / 4)  # a small grid: diffs hit the same prices often
_level = st.tuples(_price, st.sampled_from([0.0, 0.0, 1.0, 2.5, 7.0]))
_diffs = st.lists(
    st.tuples(st.lists(_level, max_size=6), st.lists(_level, max_size=6), st.booleans()),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(snapshot=st.tuples(st.lists(_level, max_size=10), st.lists(_level, max_size=10)),
       diffs=_diffs)  # fmt: skip
def test_book_equals_applying_every_level_in_order(snapshot, diffs):
    """Against the definition: a level's quantity is its last update, zero removes it.

    Reads (top-N, length, checkpoint) are interleaved at random, since the book may defer work
    until it is read.
    """
    book = OrderBook("BTCUSDT")
    book.load(_snap(10, [(str(p), str(q)) for p, q in snapshot[0]],
                    [(str(p), str(q)) for p, q in snapshot[1]]))  # fmt: skip
    ref_bids = {p: q for p, q in snapshot[0] if q}
    ref_asks = {p: q for p, q in snapshot[1] if q}
    for i, (bids, asks, read) in enumerate(diffs):
        r = book.apply_update(T0 + i, 11 + i, 11 + i, 10 + i, None, bids, asks)
        assert r is Applied.APPLIED
        for ref, levels in ((ref_bids, bids), (ref_asks, asks)):
            for p, q in levels:
                if q:
                    ref[p] = q
                else:
                    ref.pop(p, None)
        if read:
            want_bids = sorted(ref_bids.items(), reverse=True)[:3]
            want_asks = sorted(ref_asks.items())[:3]
            assert book.top(3) == (want_bids, want_asks)
    assert book.top(100) == (sorted(ref_bids.items(), reverse=True), sorted(ref_asks.items()))
    cp = book.checkpoint("binance", T0)
    assert [(float(p), float(q)) for p, q in cp.bids] == sorted(ref_bids.items(), reverse=True)
    assert len(book.bids) == len(ref_bids) and len(book.asks) == len(ref_asks)
