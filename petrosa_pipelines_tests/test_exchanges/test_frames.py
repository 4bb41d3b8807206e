"""Records -> lake frames, and settled funding derived from real markPriceUpdate samples."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from petrosa_pipelines.catalog.depth_layout import ALL_LEVEL_COLUMNS, to_long
from petrosa_pipelines.catalog.schemas import CANDLES, DEPTH, FUNDING, TRADES
from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    FundingRecord,
    MarkPriceRecord,
    TradeRecord,
)
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.frames import (
    depth_snapshots_to_frame,
    mark_prices_to_funding,
    records_to_frame,
)

pytestmark = pytest.mark.unit

WS = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "ws"
ADAPTER = BinanceUsdmAdapter()
MARK_FILE = WS / "hftbacktest_2023-04-04" / "BTCUSDT_markPriceUpdate.jsonl"

# The first two post-settlement messages of 2023-04-05 00:00Z are NOT in the recordings we hold;
# they are rebuilt from PROVENANCE quirk 8 (E, r and T as documented there; p/P/i copied from
# the last real sample). The first still carries the old T but already the next predicted rate.
POST_SETTLEMENT = [
    b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1680652800010,'
    b'"s":"BTCUSDT","p":"28157.10000000","P":"28141.48203158","i":"28165.04309524",'
    b'"r":"0.00002760","T":1680652800000}}',
    b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1680652801000,'
    b'"s":"BTCUSDT","p":"28157.10000000","P":"28141.48203158","i":"28165.04309524",'
    b'"r":"0.00002760","T":1680681600000}}',
]


def parse_file(*parts: str) -> list:
    return [ADAPTER.parse(line) for line in (WS.joinpath(*parts)).read_bytes().splitlines()]


def real_marks() -> list[MarkPriceRecord]:
    return [
        ADAPTER.parse(line, received_at=i)
        for i, line in enumerate(MARK_FILE.read_bytes().splitlines())
    ]


def assert_schema(frame: pd.DataFrame, schema) -> None:
    assert list(frame.columns) == schema.column_names
    assert frame.dtypes.to_dict() == schema.empty_frame().dtypes.to_dict()


# --- trades / candles / funding --------------------------------------------------------------


def test_trades_frame_from_real_messages():
    lines = (WS / "cryptofeed_2021-04-17" / "aggTrade.jsonl").read_bytes().splitlines()
    records = [ADAPTER.parse(line, received_at=1618677450000 + i) for i, line in enumerate(lines)]
    frame = records_to_frame("trades", records)
    assert_schema(frame, TRADES)
    assert len(frame) == len(lines)
    for row, line in zip(frame.itertuples(index=False), lines, strict=True):
        d = orjson.loads(line)["data"]
        assert row.price == float(d["p"]) and row.quantity == float(d["q"])
        assert Decimal(repr(row.price)) == Decimal(d["p"])  # float64 gives the decimal back
        assert row.trade_time == pd.Timestamp(d["T"], unit="ms", tz="UTC")
        assert (row.agg_trade_id, row.is_buyer_maker, row.symbol) == (d["a"], d["m"], d["s"])
    assert frame["received_at"].iloc[0] == pd.Timestamp(1618677450000, unit="ms", tz="UTC")
    assert (frame["source"] == "ws").all() and (frame["exchange"] == "binance").all()


def test_candles_frame_keeps_only_closed_candles():
    records = parse_file("cryptofeed_2021-07-22", "kline.jsonl")
    frame = records_to_frame("candles", records)
    assert_schema(frame, CANDLES)
    closed = [r for r in records if r.is_closed]
    assert len(frame) == len(closed) == 4
    for row, rec in zip(frame.itertuples(index=False), closed, strict=True):
        assert row.open_time == pd.Timestamp(rec.open_time, unit="ms", tz="UTC")
        assert row.close_time - row.open_time == pd.Timedelta(milliseconds=59_999)
        assert (row.open, row.close, row.volume) == (
            float(rec.open),
            float(rec.close),
            float(rec.volume),
        )
        assert row.trade_count == rec.trade_count and row.interval == "1m"
    assert records_to_frame("candles", parse_file("cryptofeed_2021-04-17", "kline.jsonl")).empty


def test_funding_frame_with_unknown_mark_price():
    records = [
        FundingRecord("binance", "BTCUSDT", 1640995200006, Decimal("0.0001"), None),
        FundingRecord(
            "binance", "BTCUSDT", 1641024000000, Decimal("-0.00002754"), Decimal("47000.1")
        ),
    ]
    frame = records_to_frame("funding", records)
    assert_schema(frame, FUNDING)
    assert frame["mark_price"].isna().tolist() == [True, False]
    assert frame["funding_rate"].tolist() == [0.0001, -0.00002754]
    assert frame["funding_time"].iloc[0] == pd.Timestamp("2022-01-01 00:00:00.006", tz="UTC")
    assert frame["source"].tolist() == ["rest", "rest"] and frame["received_at"].isna().all()


def test_empty_and_wrong_inputs():
    for name, schema in (("trades", TRADES), ("candles", CANDLES), ("funding", FUNDING)):
        assert_schema(records_to_frame(name, []), schema)
    trade = parse_file("cryptofeed_2021-04-17", "aggTrade.jsonl")[0]
    with pytest.raises(TypeError):
        records_to_frame("funding", [trade])
    with pytest.raises(ValueError):
        records_to_frame("depth", [trade])
    with pytest.raises(ValueError):
        records_to_frame("orders", [trade])


def test_trades_frame_is_built_column_wise_fast():
    base = parse_file("cryptofeed_2021-04-17", "aggTrade.jsonl")
    records = (base * 1100)[:200_000]
    frame = records_to_frame("trades", records)
    assert len(frame) == 200_000 and isinstance(records[0], TradeRecord)


# --- depth -----------------------------------------------------------------------------------


def _snapshot(update_id: int, received_at: int | None) -> DepthSnapshotRecord:
    d = lambda s: Decimal(s)  # noqa: E731
    return DepthSnapshotRecord(
        exchange="binance",
        symbol="BTCUSDT",
        last_update_id=update_id,
        event_time=None,
        transaction_time=None,
        bids=((d("28145.10"), d("3.868")), (d("28145.00"), d("0.010")), (d("28144.90"), d("1"))),
        asks=((d("28145.20"), d("6.887")), (d("28145.30"), d("0.001"))),
        received_at=received_at,
    )


def _cells(frame: pd.DataFrame, col: str) -> list[list[float]]:
    return [c.tolist() for c in frame[col]]


def test_depth_frame_one_row_per_snapshot_levels_best_first():
    snaps = [
        (1680652700000, _snapshot(2710246765483, 1680652700003)),
        (1680652701000, _snapshot(2710246765999, None)),
    ]
    frame = depth_snapshots_to_frame(snaps, top_n=2)
    assert_schema(frame, DEPTH)
    assert len(frame) == 2
    assert frame["snapshot_time"].tolist() == [
        pd.Timestamp(1680652700000, unit="ms", tz="UTC"),
        pd.Timestamp(1680652701000, unit="ms", tz="UTC"),
    ]
    assert _cells(frame, "bid_price") == [[28145.10, 28145.00]] * 2
    assert _cells(frame, "bid_quantity") == [[3.868, 0.010]] * 2
    assert _cells(frame, "ask_price") == [[28145.20, 28145.30]] * 2
    assert _cells(frame, "ask_quantity") == [[6.887, 0.001]] * 2
    assert all(c.dtype == np.float64 for col in ALL_LEVEL_COLUMNS for c in frame[col])
    assert frame["last_update_id"].tolist() == [2710246765483, 2710246765999]
    assert frame["received_at"].isna().tolist() == [False, True]
    assert (frame["source"] == "ws").all()
    assert not frame.duplicated(list(DEPTH.natural_key)).any()
    # thin books give fewer levels: each side keeps what it has
    deep = depth_snapshots_to_frame(snaps, top_n=10)
    assert [len(c) for c in deep["bid_price"]] == [3, 3]
    assert [len(c) for c in deep["ask_price"]] == [2, 2]
    assert_schema(depth_snapshots_to_frame([], top_n=5), DEPTH)
    with pytest.raises(ValueError):
        depth_snapshots_to_frame(snaps, top_n=0)


def test_depth_frame_is_the_long_layout_regrouped():
    """The same book as v1 rows and as v2 rows: ``to_long`` of the frame gives the levels
    v1 gave (time, side, level -> price, quantity), exact to the venue decimal."""
    snaps = [(1680652700000 + 1000 * i, _snapshot(100 + i, 1680652700003)) for i in range(3)]
    long = to_long(depth_snapshots_to_frame(snaps, top_n=3))
    assert len(long) == 3 * 5
    first = long[long["last_update_id"] == 100]
    assert first["side"].tolist() == ["ask", "ask", "bid", "bid", "bid"]
    assert first["level"].tolist() == [0, 1, 0, 1, 2]
    assert first["price"].tolist() == [28145.20, 28145.30, 28145.10, 28145.00, 28144.90]
    assert [Decimal(repr(q)) for q in first["quantity"]] == [
        Decimal("6.887"),
        Decimal("0.001"),
        Decimal("3.868"),
        Decimal("0.010"),
        Decimal("1"),
    ]


def _book(last_update_id: int, asks: tuple = ()) -> DepthSnapshotRecord:
    return DepthSnapshotRecord(
        exchange="binance",
        symbol="BTCUSDT",
        last_update_id=last_update_id,
        event_time=None,
        transaction_time=None,
        bids=(),
        asks=asks,
    )


def test_depth_frame_keeps_a_one_sided_book_and_drops_an_empty_one():
    one_sided = _book(7, ((Decimal("10.5"), Decimal("2")),))
    empty = _book(8)
    frame = depth_snapshots_to_frame([(1000, one_sided), (2000, empty)], top_n=5)
    assert frame["last_update_id"].tolist() == [7]
    assert _cells(frame, "bid_price") == [[]] and _cells(frame, "bid_quantity") == [[]]
    assert _cells(frame, "ask_price") == [[10.5]] and _cells(frame, "ask_quantity") == [[2.0]]
    assert_schema(depth_snapshots_to_frame([(2000, empty)], top_n=5), DEPTH)


# --- funding from mark prices ----------------------------------------------------------------


def test_real_samples_before_settlement_give_no_event_yet():
    marks = real_marks()
    assert marks[-1].event_time < marks[-1].next_funding_time
    assert mark_prices_to_funding(marks) == []


def test_settled_rate_is_the_last_one_before_settlement_not_the_next_prediction():
    marks = real_marks() + [
        ADAPTER.parse(raw, received_at=1000 + i) for i, raw in enumerate(POST_SETTLEMENT)
    ]
    random.Random(7).shuffle(marks)  # arrival order on a combined connection is not E order
    events = mark_prices_to_funding(marks)
    assert events == [
        FundingRecord(
            exchange="binance",
            symbol="BTCUSDT",
            funding_time=1680652800000,
            funding_rate=Decimal("0.00002754"),  # not the 0.00002760 already in the next message
            mark_price=Decimal("28157.10000000"),
            source="ws",
            received_at=1000,
        )
    ]
    frame = records_to_frame("funding", events)
    assert frame["funding_time"].iloc[0] == pd.Timestamp("2023-04-05", tz="UTC")


def test_settlement_seen_only_through_the_new_t():
    """Without the quirk-8 message, the T change alone proves the settlement."""
    marks = real_marks() + [ADAPTER.parse(POST_SETTLEMENT[1])]
    assert [e.funding_rate for e in mark_prices_to_funding(marks)] == [Decimal("0.00002754")]


def test_no_rate_invented_across_a_recording_gap():
    marks = real_marks()[:30] + [ADAPTER.parse(raw) for raw in POST_SETTLEMENT]
    assert marks[29].event_time < 1680652800000 - 10_000
    assert mark_prices_to_funding(marks) == []
    assert len(mark_prices_to_funding(marks, max_gap_ms=120_000)) == 1


def test_each_symbol_settles_separately_and_once():
    marks = real_marks() + [ADAPTER.parse(raw) for raw in POST_SETTLEMENT]
    eth = [
        MarkPriceRecord(
            "binance",
            "ETHUSDT",
            m.event_time,
            Decimal("1800.5"),
            None,
            None,
            Decimal("0.0001"),
            m.next_funding_time,
        )
        for m in marks
    ]
    events = mark_prices_to_funding(marks + marks + eth)  # duplicates too
    assert [(e.symbol, e.funding_time) for e in events] == [
        ("BTCUSDT", 1680652800000),
        ("ETHUSDT", 1680652800000),
    ]


def test_mark_prices_without_funding_are_ignored():
    no_funding = MarkPriceRecord(
        "binance", "BTCUSDT_230630", 1, Decimal("1"), None, None, None, None
    )
    assert mark_prices_to_funding([no_funding]) == []
