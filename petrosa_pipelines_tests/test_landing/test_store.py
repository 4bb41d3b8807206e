"""Reading the landing zone back: records, dataset frames, the day boundary, depth rebuild."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd

from petrosa_pipelines.catalog.schemas import dataset_schema
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, TradeRecord
from petrosa_pipelines.landing import LandingStore, LandingWriter
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, day_start_ms
from petrosa_pipelines.tooling.demo import today_summary
from petrosa_pipelines_tests.test_landing import binance_frames as bf

DAY = dt.date(2024, 1, 2)
T0 = day_start_ms(DAY)
D = Decimal


def _land(root, items, group="g1"):
    """items: (recv_ms, frame bytes) or DepthSnapshotRecord, landed in order."""
    with LandingWriter(root, "binance", group) as w:
        for it in items:
            if isinstance(it, DepthSnapshotRecord):
                assert w.put_snapshot(it)
            else:
                assert w.put(*it)


def _count_parses(monkeypatch, adapter_cls) -> list[bytes]:
    """Every payload ``adapter_cls.parse_frame`` is given from now on, in order."""
    parsed: list[bytes] = []
    original = adapter_cls.parse_frame

    def counting(self, payload, received_at=None):
        parsed.append(payload)
        return original(self, payload, received_at)

    monkeypatch.setattr(adapter_cls, "parse_frame", counting)
    return parsed


def _snap(lid, t, bids, asks, recv, symbol="BTCUSDT"):
    return DepthSnapshotRecord(
        exchange="binance", symbol=symbol, last_update_id=lid, event_time=t,
        transaction_time=t, bids=tuple((D(p), D(q)) for p, q in bids),
        asks=tuple((D(p), D(q)) for p, q in asks), received_at=recv,
    )  # fmt: skip


def test_trades_cross_the_day_boundary_dedup_and_conform(tmp_path):
    _land(
        tmp_path,
        [
            (T0 - 1_000, bf.agg_trade("BTCUSDT", 9, T0 - 1_500)),  # previous day: excluded
            (T0 + 50, bf.agg_trade("BTCUSDT", 10, T0 - 1)),  # received after midnight: excluded
            (T0 + 100, bf.agg_trade("BTCUSDT", 11, T0 + 10, price="100.123456789")),
            (T0 + 101, bf.agg_trade("BTCUSDT", 11, T0 + 10, price="100.123456789")),  # dup
            (T0 + 102, bf.agg_trade("ETHUSDT", 500, T0 + 20)),
            (T0 + DAY_MS - 10, bf.agg_trade("BTCUSDT", 13, T0 + DAY_MS - 20)),
            (T0 + DAY_MS + 30, bf.agg_trade("BTCUSDT", 12, T0 + DAY_MS - 5)),  # late: included
            (T0 + DAY_MS + 40, bf.agg_trade("BTCUSDT", 14, T0 + DAY_MS)),  # next day: excluded
        ],
    )
    store = LandingStore(tmp_path)
    frame = store.read_frame("binance", "trades", "BTCUSDT", T0, T0 + DAY_MS)
    schema = dataset_schema("trades")
    assert list(frame.columns) == schema.column_names
    assert frame["agg_trade_id"].tolist() == [11, 12, 13]
    assert frame["price"].iloc[0] == 100.123456789
    assert (frame["source"] == "ws").all()
    assert frame["received_at"].iloc[0] == pd.Timestamp(T0 + 100, unit="ms", tz="UTC")
    assert frame.dtypes.equals(schema.empty_frame().dtypes)
    recs = list(store.read_records("binance", T0, T0 + DAY_MS))
    assert sorted(r.agg_trade_id for r in recs) == [11, 11, 12, 13, 500]
    assert all(type(r) is TradeRecord for r in recs)
    eth = list(store.read_records("binance", T0, T0 + DAY_MS, symbols=["ethusdt"]))
    assert [r.symbol for r in eth] == ["ETHUSDT"]


def test_candles_only_closed_1m_first_receipt_wins(tmp_path):
    minute = 60_000
    _land(
        tmp_path,
        [
            (T0 + 30_000, bf.kline("BTCUSDT", T0, closed=False)),
            (T0 + minute + 5, bf.kline("BTCUSDT", T0, closed=True)),
            (T0 + minute + 6, bf.kline("BTCUSDT", T0, closed=True)),  # duplicate
            (T0 + DAY_MS + 3, bf.kline("BTCUSDT", T0 + DAY_MS - minute, closed=True)),
            (T0 + 5 * minute, bf.kline("BTCUSDT", T0 + minute, closed=True).replace(
                b"kline_1m", b"kline_5m").replace(b'"i":"1m"', b'"i":"5m"')),
        ],
    )  # fmt: skip
    frame = LandingStore(tmp_path).read_frame("binance", "candles", "BTCUSDT", T0, T0 + DAY_MS)
    assert frame["open_time"].tolist() == [
        pd.Timestamp(T0, unit="ms", tz="UTC"),
        pd.Timestamp(T0 + DAY_MS - minute, unit="ms", tz="UTC"),
    ]
    assert frame["interval"].tolist() == ["1m", "1m"]
    assert frame["received_at"].iloc[0] == pd.Timestamp(T0 + minute + 5, unit="ms", tz="UTC")


def test_funding_from_mark_price_samples(tmp_path):
    settle = T0 + 8 * HOUR_MS
    items = []
    for k in range(-3, 3):
        t = settle + k * 1_000
        nxt = settle if t < settle else settle + 8 * HOUR_MS
        rate = "0.00010000" if t < settle else "0.00020000"
        items.append((t + 20, bf.mark_price("BTCUSDT", t, rate, nxt, mark="42000.5")))
    _land(tmp_path, items)
    store = LandingStore(tmp_path)
    frame = store.read_frame("binance", "funding", "BTCUSDT", T0, T0 + DAY_MS)
    assert frame["funding_time"].tolist() == [pd.Timestamp(settle, unit="ms", tz="UTC")]
    assert frame["funding_rate"].tolist() == [0.0001]
    assert frame["mark_price"].tolist() == [42000.5]
    assert store.read_frame("binance", "funding", "BTCUSDT", settle + 1, T0 + DAY_MS).empty


def test_depth_rebuilt_from_snapshot_and_diffs_with_a_break(tmp_path):
    s = "BTCUSDT"
    _land(
        tmp_path,
        [
            (T0 + 110, bf.depth_update(s, 90, 95, 89, T0 + 100, bids=[("100", "9")])),
            _snap(100, T0 + 150, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")],
                  T0 + 160),
            (T0 + 210, bf.depth_update(s, 96, 105, 95, T0 + 200, bids=[("100", "5")])),
            (T0 + 1210, bf.depth_update(s, 106, 110, 105, T0 + 1200, asks=[("101", "0")])),
            (T0 + 2310, bf.depth_update(s, 111, 115, 105, T0 + 2300, asks=[("104", "1")])),
            (T0 + 3510, bf.depth_update(s, 116, 120, 115, T0 + 3500, bids=[("97", "4")])),
            _snap(118, T0 + 3600, [("98", "1")], [("103", "1")], T0 + 3650),
            (T0 + 4710, bf.depth_update(s, 121, 125, 120, T0 + 4700, asks=[("103", "2")])),
            (T0 + 6010, bf.depth_update(s, 126, 130, 125, T0 + 6000)),
        ],
    )  # fmt: skip
    store = LandingStore(tmp_path, depth_cadence_ms=1000, depth_top_n=2)
    frame = store.read_frame("binance", "depth", s, T0, T0 + HOUR_MS)
    assert list(frame.columns) == dataset_schema("depth").column_names
    assert not frame.duplicated(list(dataset_schema("depth").natural_key)).any()
    got = {
        (int(r.snapshot_time.value // 10**6) - T0, r.last_update_id): (
            list(zip(r.bid_price.tolist(), r.bid_quantity.tolist(), strict=True)),
            list(zip(r.ask_price.tolist(), r.ask_quantity.tolist(), strict=True)),
        )
        for r in frame.itertuples(index=False)
    }
    assert got == {
        (1000, 105): ([(100.0, 5.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 3.0)]),
        # 2000, 3000: the sequence broke at 2300 (pu 105 != 110): a diff after 1200 was missed,
        # so no tick after 1200 is a sample of the real book until the next snapshot
        (4000, 120): ([(98.0, 1.0), (97.0, 4.0)], [(103.0, 1.0)]),
        (5000, 125): ([(98.0, 1.0), (97.0, 4.0)], [(103.0, 2.0)]),
    }
    assert store.read_frame("binance", "depth", "ETHUSDT", T0, T0 + HOUR_MS).empty
    # a window that starts mid-stream still finds its book (lookback to the snapshot)
    later = store.read_frame("binance", "depth", s, T0 + 4500, T0 + HOUR_MS)
    assert sorted({int(t.value // 10**6) - T0 for t in later["snapshot_time"]}) == [5000]
    # the demo's line on today's landing counts samples, and gives the last one's best prices
    summary = today_summary(store, "binance-usdm:BTCUSDT", T0, T0 + HOUR_MS)
    assert "3 book samples (top 2 levels)" in summary
    assert "book at 00:00:05: 98.0 / 103.0" in summary


def test_empty_store_gives_conforming_empty_frames(tmp_path):
    store = LandingStore(tmp_path)
    for ds in ("trades", "candles", "depth", "funding"):
        f = store.read_frame("binance", ds, "BTCUSDT", T0, T0 + DAY_MS)
        assert f.empty and list(f.columns) == dataset_schema(ds).column_names
    assert store.symbols_with_data("binance", DAY) == set()
    assert store.gaps("binance", T0, T0 + DAY_MS) == []
    assert store.dead_letters("binance", DAY) == []


def test_symbols_with_data_reads_every_group(tmp_path):
    _land(tmp_path, [(T0 + 5, bf.agg_trade("BTCUSDT", 1, T0))], group="g1")
    _land(
        tmp_path,
        [
            (T0 + 7, bf.mark_price("SOLUSDT", T0, "0.0001", T0 + HOUR_MS)),
            _snap(5, T0, [("1", "1")], [("2", "1")], T0 + 9, symbol="XRPUSDT"),
            (T0 + DAY_MS + 5, bf.agg_trade("ADAUSDT", 1, T0 + DAY_MS)),
        ],
        group="g2",
    )  # fmt: skip
    assert LandingStore(tmp_path).symbols_with_data("binance", DAY) == {
        "BTCUSDT", "SOLUSDT", "XRPUSDT"
    }  # fmt: skip


def test_two_groups_landing_the_same_stream_are_merged_and_deduplicated(tmp_path):
    frames = [(T0 + i * 10, bf.agg_trade("BTCUSDT", i, T0 + i * 10 - 3)) for i in range(1, 50)]
    _land(tmp_path, frames[:30], group="old")
    _land(tmp_path, frames[20:], group="new")
    frame = LandingStore(tmp_path).read_frame("binance", "trades", "BTCUSDT", T0, T0 + DAY_MS)
    assert frame["agg_trade_id"].tolist() == list(range(1, 50))


def test_a_depth_replay_skips_other_streams_unparsed_and_samples_the_same(tmp_path, monkeypatch):
    """Trades, candles and mark prices interleaved with the book: the depth day parses only the
    book's frames, and its samples equal a replay that parses everything."""
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter as BinanceAdapter

    s = "BTCUSDT"
    items = [_snap(100, T0 + 150, [("100", "1")], [("101", "1")], T0 + 160)]
    for i in range(1, 30):
        t = T0 + i * 1000
        items += [
            (t + 5, bf.agg_trade(s, i, t)),
            (t + 6, bf.kline(s, T0, False, t)),
            (t + 7, bf.mark_price(s, t, "0.0001", T0 + 8 * HOUR_MS)),
            (t + 9, bf.depth_update(s, 100 + i, 100 + i, 99 + i, t, bids=[("100", str(i))])),
        ]
    _land(tmp_path, items)
    parsed = _count_parses(monkeypatch, BinanceAdapter)
    monkeypatch.setattr(BinanceAdapter, "fast_path", lambda self: None)  # count every parse
    store = LandingStore(tmp_path, depth_cadence_ms=1000, depth_top_n=2)
    fast = store.read_frame("binance", "depth", s, T0, T0 + HOUR_MS)
    book_frames = len(parsed)
    parsed.clear()
    monkeypatch.setattr(BinanceAdapter, "stream_dataset", lambda self, stream: None)
    slow = store.read_frame("binance", "depth", s, T0, T0 + HOUR_MS)
    assert book_frames == 29 and len(parsed) == 4 * 29
    assert len(fast) == 28  # the sample at tick 29 s needs a later diff to close it
    pd.testing.assert_frame_equal(fast.drop(columns=["bid_price", "bid_quantity"]),
                                  slow.drop(columns=["bid_price", "bid_quantity"]))  # fmt: skip
    assert [b.tolist() for b in fast["bid_quantity"]] == [b.tolist() for b in slow["bid_quantity"]]
    assert fast["bid_quantity"].iloc[-1].tolist() == [28.0]


def test_trades_candles_and_funding_reads_parse_only_their_streams(tmp_path, monkeypatch):
    """A day's trades are read without parsing its book diffs, candles or mark prices (and so
    for candles and funding), and each frame equals a read that parses every landed frame."""
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter as BinanceAdapter

    s = "BTCUSDT"
    items = []
    for i in range(1, 121):
        t = T0 + i * 1000
        items += [
            (t + 5, bf.agg_trade(s, i, t)),
            (t + 6, bf.kline(s, T0 + (i // 60 - 1) * 60_000, i % 60 == 0, t)),
            # the next funding time moves at 60 s: one settled event
            (t + 7, bf.mark_price(s, t, "0.0001", T0 + (60_000 if i < 60 else 8 * HOUR_MS))),
            (t + 9, bf.depth_update(s, 100 + i, 100 + i, 99 + i, t, bids=[("100", str(i))])),
        ]
    _land(tmp_path, items)
    parsed = _count_parses(monkeypatch, BinanceAdapter)
    store = LandingStore(tmp_path)
    kinds = {"trades": b"@aggTrade", "candles": b"@kline_1m", "funding": b"@markPrice"}
    fast = {}
    for dataset, kind in kinds.items():
        parsed.clear()
        fast[dataset] = store.read_frame("binance", dataset, s, T0, T0 + DAY_MS)
        assert parsed and all(kind in p for p in parsed), dataset
    assert len(fast["trades"]) == 120 and len(fast["candles"]) == 2 and len(fast["funding"]) == 1
    monkeypatch.setattr(BinanceAdapter, "stream_dataset", lambda self, stream: None)
    for dataset in kinds:
        parsed.clear()
        slow = store.read_frame("binance", dataset, s, T0, T0 + DAY_MS)
        assert len(parsed) == len(items)  # unknown streams: every frame is parsed
        pd.testing.assert_frame_equal(fast[dataset], slow)


def test_the_depth_replay_takes_diffs_by_the_fast_path_and_rebuilds_the_same_book(
    tmp_path, monkeypatch
):
    """Diffs the ingest's fast path vouches for skip the full parser (no ``Decimal``), across a
    sequence break and a re-sync snapshot, and the day's samples are those of the full parse."""
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter

    s = "BTCUSDT"
    items = [_snap(100, T0 + 150, [("100", "1"), ("99", "2")], [("101", "1")], T0 + 160)]
    for i in range(1, 40):
        prev = 100 + i - 1 if i != 20 else 90  # a break at 20 s: pu does not chain
        bids = [("100.10", str(i)), ("99.5", "0")] if i % 3 else [("98.25", f"{i}.5")]
        items.append((T0 + i * 1000 + 9, bf.depth_update(s, 100 + i, 100 + i, prev,
                                                          T0 + i * 1000, bids=bids)))  # fmt: skip
        if i == 25:
            items.append(_snap(125, T0 + 25_500, [("100", "3")], [("101", "2")], T0 + 25_600))
    _land(tmp_path, items)
    calls: list[bytes] = []
    original = BinanceUsdmAdapter.parse_frame
    monkeypatch.setattr(
        BinanceUsdmAdapter,
        "parse_frame",
        lambda self, payload, received_at=None: (
            calls.append(payload) or original(self, payload, received_at)
        ),
    )
    store = LandingStore(tmp_path, depth_cadence_ms=1000, depth_top_n=3)
    fast = store.read_frame("binance", "depth", s, T0, T0 + HOUR_MS)
    assert calls == []  # every diff came by the fast path
    monkeypatch.setattr(BinanceUsdmAdapter, "fast_path", lambda self: None)
    full = store.read_frame("binance", "depth", s, T0, T0 + HOUR_MS)
    assert len(calls) == 39
    assert 20 < len(fast) < 39  # the break dropped the ticks until the re-sync snapshot
    plain = ["snapshot_time", "last_update_id", "received_at"]
    assert fast[plain].equals(full[plain])
    for col in ("bid_price", "bid_quantity", "ask_price", "ask_quantity"):
        assert [c.tolist() for c in fast[col]] == [c.tolist() for c in full[col]], col
