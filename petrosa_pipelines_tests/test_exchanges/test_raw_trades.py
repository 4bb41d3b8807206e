"""Raw ``@trade`` and ``@bookTicker`` frames parse; non-market prints stay out of candles.

Real data (fixtures/binance/PROVENANCE.md): the hftbacktest USD-M capture of 2023-04-05, whose
minute 00:01 holds an ``"X":"INSURANCE_FUND"`` print at 28722.50 while the market traded
28141.40-28154.20, and Binance's own 1m kline of that minute (data.binance.vision, quoted below).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest

from petrosa_pipelines.analytics.resample import candles_from_trades
from petrosa_pipelines.exchanges.base import (
    BookTickerRecord,
    MessageError,
    RawTradeRecord,
    TradeType,
)
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.frames import market_trades_frame, raw_trades_to_frame

WS = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "ws"
ADAPTER = BinanceUsdmAdapter()
#: BTCUSDT-1m-2023-04-05.csv, row of 00:01 (pip-izony/Binance_Backtester @ e8688cf9, a
#: data.binance.vision USD-M daily kline file): open_time, open, high, low, close, volume,
#: close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore
BINANCE_KLINE_0001 = (
    "1680652860000,28150.80,28154.20,28141.40,28144.10,186.965,1680652919999,5262318.60500,1823,"
    "68.378,1924579.16530,0"
)
#: the minute is complete: every trade id of it is in the fixture
END = pd.Timestamp(1680652920000, unit="ms", tz="UTC")


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


@pytest.fixture(scope="module")
def minute_0001() -> list[RawTradeRecord]:
    path = WS / "hftbacktest_2023-04-05" / "BTCUSDT_trade_0001.jsonl"
    return [ADAPTER.parse(f, received_at=1) for f in _lines(path)]


@pytest.mark.parametrize(
    "path",
    [
        "hftbacktest_2023-04-04/BTCUSDT_trade_first20.jsonl",
        "hftbacktest_2023-04-05/BTCUSDT_trade_0001.jsonl",
    ],
)
def test_real_trade_frames_parse_exactly(path):
    for raw in _lines(WS / path):
        d = orjson.loads(raw)["data"]
        r = ADAPTER.parse(raw, received_at=7)
        assert type(r) is RawTradeRecord
        assert (r.symbol, r.trade_id, r.trade_time, r.event_time) == (
            d["s"],
            d["t"],
            d["T"],
            d["E"],
        )
        assert (str(r.price), str(r.quantity)) == (d["p"], d["q"])  # exact, trailing zeros kept
        assert (r.is_buyer_maker, r.trade_type, r.received_at) == (d["m"], d["X"], 7)


def test_real_book_ticker_frames_parse_exactly():
    for raw in _lines(WS / "hftbacktest_2023-04-04" / "BTCUSDT_bookTicker_first20.jsonl"):
        d = orjson.loads(raw)["data"]
        r = ADAPTER.parse(raw)
        assert type(r) is BookTickerRecord
        assert (r.symbol, r.update_id, r.transaction_time, r.event_time) == (
            d["s"], d["u"], d["T"], d["E"],
        )  # fmt: skip
        assert [str(v) for v in (r.bid_price, r.bid_quantity, r.ask_price, r.ask_quantity)] == [
            d["b"], d["B"], d["a"], d["A"],
        ]  # fmt: skip


def test_the_insurance_fund_print_stays_visible_as_its_own_row(minute_0001):
    frame = raw_trades_to_frame(minute_0001)
    assert len(frame) == 1824
    other = frame[frame["trade_type"] != "MARKET"]
    assert other[["trade_id", "price", "quantity", "trade_type"]].to_dict("records") == [
        {"trade_id": 3535191080, "price": 28722.5, "quantity": 0.001,
         "trade_type": "INSURANCE_FUND"}
    ]  # fmt: skip


def test_candles_from_raw_trades_equal_binance_kline_without_the_non_market_print(minute_0001):
    k = BINANCE_KLINE_0001.split(",")
    market = market_trades_frame(minute_0001)
    assert len(market) == 1823 and market["agg_trade_id"].is_unique
    (c,) = candles_from_trades(market, "1m", as_of=END).to_dict("records")
    assert c["open_time"].value // 1_000_000 == int(k[0])
    assert [c["open"], c["high"], c["low"], c["close"]] == [float(x) for x in k[1:5]]
    assert c["volume"] == pytest.approx(float(k[5]), abs=1e-9)
    assert c["quote_volume"] == pytest.approx(float(k[7]), abs=1e-6)
    assert c["trade_count"] == int(k[8])
    assert c["taker_buy_volume"] == pytest.approx(float(k[9]), abs=1e-9)
    # every print, the insurance fund's included, would give a different (wrong) candle
    everything = market_trades_frame(
        [RawTradeRecord(**{**_fields(r), "trade_type": TradeType.MARKET}) for r in minute_0001]
    )
    (wrong,) = candles_from_trades(everything, "1m", as_of=END).to_dict("records")
    assert (wrong["high"], wrong["trade_count"]) == (28722.5, 1824)


def _fields(r: RawTradeRecord) -> dict:
    return {f: getattr(r, f) for f in r.__struct_fields__}


@pytest.mark.parametrize(
    ("x", "kept"),
    [("MARKET", "MARKET"), ("ADL", "ADL"), ("NA", "NA"), ("LIQUIDATION", "LIQUIDATION")],
)
def test_print_types_are_kept_as_sent(x, kept):
    raw = _lines(WS / "hftbacktest_2023-04-04" / "BTCUSDT_trade_first20.jsonl")[0]
    r = ADAPTER.parse(raw.replace(b'"X":"MARKET"', b'"X":"%b"' % x.encode()))
    assert r.trade_type == kept and r.is_market == (kept == "MARKET")


@pytest.mark.parametrize("x", ['""', '"market"', '"X Y"', "1", "null"])
def test_a_malformed_print_type_is_rejected(x):
    raw = _lines(WS / "hftbacktest_2023-04-04" / "BTCUSDT_trade_first20.jsonl")[0]
    with pytest.raises(MessageError) as err:
        ADAPTER.parse(raw.replace(b'"X":"MARKET"', b'"X":%b' % x.encode()))
    assert err.value.field == "data.X"


def test_book_ticker_rejects_a_non_positive_price():
    raw = _lines(WS / "hftbacktest_2023-04-04" / "BTCUSDT_bookTicker_first20.jsonl")[0]
    with pytest.raises(MessageError) as err:
        ADAPTER.parse(raw.replace(b'"b":"28145.10"', b'"b":"0"'))
    assert err.value.field == "data.b"
