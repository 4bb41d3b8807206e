"""The float-keyed order book: spellings of one price are one level, both feeding paths agree."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.binance.fastpath import FAST_DECODER, DepthRoute, depth_levels
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


def test_the_rebuild_from_landing_takes_no_sample_inside_a_ledger_window(tmp_path):
    """Issue 11 item 5: the connection dropped after the diff at +1.2 s and came back at
    +4.2 s (diffs 111..130 lost). The live ingest dropped its book at the cut; the rebuild
    used to sample the pre-cut book at +2 s, +3 s and +4 s as if it were current."""
    from petrosa_pipelines.landing import GapRecord, LandingStore, LandingWriter

    s = "BTCUSDT"

    def snap(uid, t, bids, asks):
        lv = lambda xs: tuple((D(p), D(q)) for p, q in xs)  # noqa: E731
        return DepthSnapshotRecord("binance", s, uid, t, t, lv(bids), lv(asks), t + 50)

    with LandingWriter(tmp_path, "binance", "g1") as w:
        assert w.put(T0 + 110, bf.depth_update(s, 90, 95, 89, T0 + 100))
        assert w.put_snapshot(snap(100, T0 + 150, [("100", "1")], [("101", "1")]))
        assert w.put(T0 + 210, bf.depth_update(s, 96, 105, 95, T0 + 200, bids=[("100", "5")]))
        assert w.put(T0 + 1210, bf.depth_update(s, 106, 110, 105, T0 + 1200, asks=[("102", "2")]))
        # -- cut; what the live ingest ledgered when the stream came back:
        w.record_gap(GapRecord("depth", s, T0 + 1200, T0 + 4200, "disconnect", T0 + 4210, "g1"))
        assert w.put(T0 + 4210, bf.depth_update(s, 131, 135, 130, T0 + 4200, bids=[("99", "3")]))
        assert w.put_snapshot(snap(133, T0 + 4300, [("100", "7")], [("101", "8")]))
        assert w.put(T0 + 5210, bf.depth_update(s, 136, 140, 135, T0 + 5200, bids=[("98", "1")]))
        assert w.put(T0 + 6210, bf.depth_update(s, 141, 145, 140, T0 + 6200))
    store = LandingStore(tmp_path, depth_cadence_ms=1000, depth_top_n=2)
    got = [
        (x.snapshot_time - T0, x.last_update_id, x.bid_floats, x.ask_floats)
        for x in store.depth_samples("binance", s, T0, T0 + 10_000)
    ]
    assert got == [
        (1000, 105, [(100.0, 5.0)], [(101.0, 1.0)]),
        # nothing at 2000..4000: inside the window, and no fresh snapshot yet
        (5000, 135, [(100.0, 7.0), (99.0, 3.0)], [(101.0, 8.0)]),
        (6000, 140, [(100.0, 7.0), (99.0, 3.0)], [(101.0, 8.0)]),
    ]


def test_a_ledger_window_forces_a_resync_even_when_the_next_diff_chains(tmp_path):
    """A diff after the window whose ``pu`` happens to chain does not vouch for the book: the
    live ingest had dropped it, so only a snapshot newer than the break brings samples back."""
    from petrosa_pipelines.landing import GapRecord, LandingStore, LandingWriter

    s = "BTCUSDT"
    lv = lambda xs: tuple((D(p), D(q)) for p, q in xs)  # noqa: E731
    with LandingWriter(tmp_path, "binance", "g1") as w:
        assert w.put_snapshot(
            DepthSnapshotRecord("binance", s, 100, T0 + 150, None, lv([("100", "1")]),
                                lv([("101", "1")]), T0 + 160)
        )  # fmt: skip
        assert w.put(T0 + 210, bf.depth_update(s, 96, 105, 95, T0 + 200))
        w.record_gap(GapRecord("*", s, T0 + 200, T0 + 3200, "writer_restart", T0 + 3210, "g1"))
        assert w.put(T0 + 3210, bf.depth_update(s, 106, 110, 105, T0 + 3200))
        assert w.put(T0 + 4210, bf.depth_update(s, 111, 115, 110, T0 + 4200))
    store = LandingStore(tmp_path, depth_cadence_ms=1000, depth_top_n=2)
    assert [x.snapshot_time - T0 for x in store.depth_samples("binance", s, T0, T0 + 9000)] == []
