"""1-minute candles from trades for a group without klines (``live/candles.py``): the bar of
real recorded ``@trade`` prints (an insurance-fund print among them) equals the sums computed
here from the raw lines, a later event closes it, and the worker publishes it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import orjson
import pytest

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.exchanges.base import TickerRecord
from petrosa_pipelines.live.candles import MINUTE_MS, TradeCandles, builds_candles
from petrosa_pipelines.settings import LiveSettings

pytestmark = pytest.mark.unit

VENUE = "binance-usdm"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "binance_socket"
LINES = (FIXTURES / "trade_2023-04-05_insurance_fund.jsonl").read_bytes().splitlines()


def _socket_client():
    return type(get_adapter(VENUE))(stream_profile="socket-client")


def _closing_trade(after_ms: int, trade_id: int) -> bytes:
    """A market print in the next minute, in the socket-client's stream layout."""
    data = {"e": "trade", "E": after_ms, "T": after_ms, "s": "BTCUSDT", "t": trade_id,
            "p": "28150.00", "q": "0.001", "X": "MARKET", "m": False}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@trade", "data": data})


def _expected(lines: list[bytes]) -> dict:
    """The bar by hand from the raw lines: market prints only, in arrival order."""
    rows = [orjson.loads(line)["data"] for line in lines]
    market = [r for r in rows if r["X"] == "MARKET"]
    prices = [Decimal(r["p"]) for r in market]
    qty = [Decimal(r["q"]) for r in market]
    taker = [not r["m"] for r in market]
    return {
        "open_time": market[0]["T"] - market[0]["T"] % MINUTE_MS,
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "close": prices[-1],
        "volume": sum(qty),
        "quote_volume": sum(p * q for p, q in zip(prices, qty, strict=True)),
        "trade_count": len(market),
        "taker_buy_volume": sum(q for q, t in zip(qty, taker, strict=True) if t),
        "taker_buy_quote_volume": sum(
            p * q for p, q, t in zip(prices, qty, taker, strict=True) if t
        ),
    }


def test_only_groups_without_klines_build_candles():
    assert builds_candles(_socket_client())
    assert not builds_candles(get_adapter(VENUE))  # aggTrade + kline streams
    assert not builds_candles(get_adapter("bybit-linear"))
    assert not builds_candles(object())


def test_the_bar_of_real_prints_leaves_the_insurance_fund_print_out():
    parser = _socket_client()
    recs = [r for line in LINES for r in parser.parse_frame(line)]
    assert any(not r.is_market for r in recs), "the fixture's insurance-fund print"
    want = _expected(LINES)
    assert len({r.trade_time // MINUTE_MS for r in recs}) == 1, "one minute of prints"
    candles = TradeCandles()
    opened = [c for r in recs for c in candles.on_record(r)]
    assert opened and not any(c.is_closed for c in opened)  # open bars only, one per print
    last_time = max(r.trade_time for r in recs)
    (closing,) = parser.parse_frame(_closing_trade(want["open_time"] + MINUTE_MS + 5, 1))
    closed, reopened = candles.on_record(closing)
    assert closed.is_closed and not reopened.is_closed
    got = {k: getattr(closed, k) for k in want}
    assert got == want  # exact: Decimal sums, the 28,722.5 print is not the high
    assert (closed.interval, closed.source, closed.event_time) == ("1m", "trades", last_time)
    assert closed.close_time == want["open_time"] + MINUTE_MS - 1
    assert reopened.open_time == want["open_time"] + MINUTE_MS and reopened.trade_count == 1


def test_a_later_event_closes_the_minute_and_a_late_print_never_reopens_it():
    parser = _socket_client()
    recs = [r for line in LINES for r in parser.parse_frame(line)]
    candles = TradeCandles()
    for r in recs:
        candles.on_record(r)
    minute_end = recs[0].trade_time - recs[0].trade_time % MINUTE_MS + MINUTE_MS
    ticker = TickerRecord(exchange=recs[0].exchange, symbol="BTCUSDT", event_time=minute_end - 1,
                          last_price=Decimal(1), last_quantity=Decimal(1), open_price=Decimal(1),
                          high_price=Decimal(1), low_price=Decimal(1), volume=Decimal(1),
                          quote_volume=Decimal(1), trade_count=1, open_time=0, close_time=0,
                          first_trade_id=0, last_trade_id=0)  # fmt: skip
    assert candles.on_record(ticker) == []  # still inside the minute
    late = candles.on_record(msgspec.structs.replace(ticker, event_time=minute_end))
    assert len(late) == 1 and late[0].is_closed
    assert candles.on_record(recs[-1]) == []  # a print of the closed minute: no bar again


def test_the_worker_publishes_the_closed_bar_and_keeps_the_open_one_unpublished():
    from petrosa_pipelines.live.worker import Worker

    s = LiveSettings(nats_url="nats://127.0.0.1:1", subject_prefix="ptest", stream="PTEST")
    w = Worker(s, VENUE, "binance", _socket_client())
    start = orjson.loads(LINES[0])["data"]["T"]
    closing = _closing_trade(start - start % MINUTE_MS + MINUTE_MS + 5, 1)
    w.take([(f, i) for i, f in enumerate([*LINES, closing])])
    assert w.drain(1_000) == len(LINES) + 1
    candles = [m for m in w._pending if m.subject == "ptest.binance-usdm.candles.BTCUSDT"]
    assert len(candles) == 1, [m.subject for m in w._pending]
    row = orjson.loads(candles[0].payload)
    want = _expected(LINES)
    assert row["open_time"] == want["open_time"] and row["source"] == "trades"
    assert row["volume"] == float(want["volume"]) and row["trade_count"] == want["trade_count"]
    assert "CandleRecord" not in w.report()["unpublished"]  # open bars are not counted as lost
