"""The depth rebuild from landing honours every ledger window, for a venue that sends its book
in the stream (Bybit, https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook).

The new connection's snapshot ends a disconnect window: the book it replaces was dropped at the
cut, so the ticks in between are no samples of it (the e2e run sampled the pre-cut book at a
second inside the window). Whatever a window's bounds, no sample lies strictly inside it.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.landing import GapRecord, LandingStore, LandingWriter
from petrosa_pipelines_tests.test_landing import binance_frames as bf

S = "BTCUSDT"
T0 = 1_709_423_700_000


SNAP_90 = ([["90", "5"]], [["91", "5"]])


def bybit_book(kind: str, u: int, ts: int, bids, asks) -> bytes:
    data = {"s": S, "b": bids, "a": asks, "u": u, "seq": 1_000 + u}
    return orjson.dumps(
        {"topic": f"orderbook.50.{S}", "type": kind, "ts": ts, "data": data, "cts": ts - 1}
    )


def _samples(root, exchange: str, end: int) -> list[tuple[int, int, list]]:
    store = LandingStore(root, depth_cadence_ms=1000, depth_top_n=1)
    return [
        (x.snapshot_time - T0, x.last_update_id, x.bid_floats)
        for x in store.depth_samples(exchange, S, T0, T0 + end)
    ]


def test_the_snapshot_after_a_cut_does_not_sample_the_pre_cut_book(tmp_path):
    with LandingWriter(tmp_path, "bybit-linear", "g1") as w:
        assert w.put(T0 + 105, bybit_book("snapshot", 10, T0 + 100, [["100", "1"]], [["101", "1"]]))
        assert w.put(T0 + 1_015, bybit_book("delta", 11, T0 + 1_014, [["100", "2"]], []))
        # -- cut after the delta at +1.014 s; the new connection's snapshot at +3.010 s
        w.record_gap(GapRecord("depth", S, T0 + 1_014, T0 + 3_010, "disconnect", T0 + 3_020, "g1"))
        assert w.put(T0 + 3_015, bybit_book("snapshot", 1, T0 + 3_010, *SNAP_90))
        assert w.put(T0 + 4_015, bybit_book("delta", 2, T0 + 4_010, [["90", "6"]], []))
        assert w.put(T0 + 5_015, bybit_book("delta", 3, T0 + 5_010, [["89", "1"]], []))
    assert _samples(tmp_path, "bybit-linear", 10_000) == [
        (1_000, 10, [(100.0, 1.0)]),
        # nothing at 2000 or 3000: the book of before the cut is not the venue's book then
        (4_000, 1, [(90.0, 5.0)]),
        (5_000, 2, [(90.0, 6.0)]),
    ]


def test_a_restart_snapshot_without_a_window_replaces_the_book_in_place(tmp_path):
    """No cut: the venue restarted its book service (``u`` back to 1) on a live connection,
    so the old book was the venue's book until the snapshot."""
    with LandingWriter(tmp_path, "bybit-linear", "g1") as w:
        assert w.put(T0 + 105, bybit_book("snapshot", 50, T0 + 100, [["100", "1"]], [["101", "1"]]))
        assert w.put(T0 + 1_015, bybit_book("delta", 51, T0 + 1_014, [["100", "2"]], []))
        assert w.put(T0 + 3_015, bybit_book("snapshot", 1, T0 + 3_010, *SNAP_90))
        assert w.put(T0 + 4_015, bybit_book("delta", 2, T0 + 4_010, [["90", "6"]], []))
    assert _samples(tmp_path, "bybit-linear", 10_000) == [
        (1_000, 50, [(100.0, 1.0)]),
        (2_000, 51, [(100.0, 2.0)]),
        (3_000, 51, [(100.0, 2.0)]),
        (4_000, 1, [(90.0, 5.0)]),
    ]


def test_no_sample_strictly_inside_a_window_even_after_a_resync_within_it(tmp_path):
    """A window that ends after the snapshot that resynced the book (how earlier ingests
    ledgered a REST resync: up to the last caught-up diff) still holds no sample."""
    lv = lambda xs: tuple((Decimal(p), Decimal(q)) for p, q in xs)  # noqa: E731
    with LandingWriter(tmp_path, "binance", "g1") as w:
        assert w.put_snapshot(
            DepthSnapshotRecord("binance", S, 100, T0 + 150, None, lv([("100", "1")]),
                                lv([("101", "1")]), T0 + 160)
        )  # fmt: skip
        assert w.put(T0 + 210, bf.depth_update(S, 96, 105, 95, T0 + 200))
        w.record_gap(GapRecord("depth", S, T0 + 200, T0 + 4_200, "sequence_break", T0, "g1"))
        assert w.put(T0 + 1_210, bf.depth_update(S, 110, 115, 109, T0 + 1_200))  # breaks
        assert w.put_snapshot(
            DepthSnapshotRecord("binance", S, 112, T0 + 1_500, None, lv([("99", "2")]),
                                lv([("101", "1")]), T0 + 1_510)
        )  # fmt: skip
        for i, t in enumerate((2_200, 3_200, 4_200, 5_200, 6_200)):
            assert w.put(T0 + t + 10, bf.depth_update(S, 116 + 5 * i, 120 + 5 * i,
                                                      115 + 5 * i, T0 + t))  # fmt: skip
    assert [t for t, _, _ in _samples(tmp_path, "binance", 10_000)] == [5_000, 6_000]
