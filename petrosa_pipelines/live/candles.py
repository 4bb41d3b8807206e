"""1-minute candles built from trades, for a stream group that carries no klines.

The Petrosa socket-client sends raw ``@trade``, ``@depth20@100ms`` and ``@ticker`` only
(``exchanges/binance/adapter.py``, profile ``socket-client``): without this, its subscribers
would get no candle on ``petrosa.<venue>.candles.<SYMBOL>`` and no open candle in Redis. A bar
is built the way the venue builds its klines from its trades: open/close the first and last
market trade of the minute, high/low their extremes, volumes summed exactly (``Decimal``),
``trade_count`` the venue's trade count (a raw trade is one, an aggregate trade
``last - first + 1``), taker-buy sums over the trades whose buyer took (``is_buyer_maker``
false). Non-market prints (``X`` insurance fund, ADL) are left out, as Binance leaves them out
of its klines (https://developers.binance.com/docs/derivatives/usds-margined-futures/
websocket-market-streams/Trade-Streams).

A minute closes when a later event of the symbol (trade, book, ticker) shows the clock past
it; a minute without a trade has no bar (as a kline stream, it would carry the previous
close with zero volume: left to the lake's candles, which come from REST and archives).
Bars carry ``source`` ``trades``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from petrosa_pipelines.exchanges.base import CandleRecord, RawTradeRecord, TradeRecord

MINUTE_MS = 60_000
INTERVAL = "1m"
SOURCE = "trades"


def builds_candles(parser: Any) -> bool:
    """Whether a group parsed by ``parser`` needs candles built from its trades: its streams
    carry trades but no klines (``channels`` of its stream profile)."""
    channels = getattr(parser, "channels", None)
    return channels is not None and "trades" in channels and "candles" not in channels


@dataclass
class _Bar:
    """One minute in the making."""

    exchange: str
    symbol: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    last_time: int
    received_at: int | None

    def add(self, price: Decimal, qty: Decimal, count: int, taker_buy: bool, t: int) -> None:
        self.high, self.low, self.close = max(self.high, price), min(self.low, price), price
        self.volume += qty
        self.quote_volume += price * qty
        self.trade_count += count
        if taker_buy:
            self.taker_buy_volume += qty
            self.taker_buy_quote_volume += price * qty
        self.last_time = t

    def record(self, closed: bool) -> CandleRecord:
        return CandleRecord(
            exchange=self.exchange,
            symbol=self.symbol,
            interval=INTERVAL,
            open_time=self.open_time,
            close_time=self.open_time + MINUTE_MS - 1,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            quote_volume=self.quote_volume,
            trade_count=self.trade_count,
            taker_buy_volume=self.taker_buy_volume,
            taker_buy_quote_volume=self.taker_buy_quote_volume,
            is_closed=closed,
            event_time=self.last_time,
            source=SOURCE,
            received_at=self.received_at,
        )


def _trade_fields(rec: Any) -> tuple[Decimal, Decimal, int, bool, int] | None:
    """(price, quantity, venue trade count, taker bought, time) of a market trade, else None."""
    t = type(rec)
    if t is RawTradeRecord:
        if not rec.is_market:
            return None
        count = 1
    elif t is TradeRecord:
        first, last = rec.first_trade_id, rec.last_trade_id
        count = last - first + 1 if first is not None and last is not None else 1
    else:
        return None
    return rec.price, rec.quantity, count, not rec.is_buyer_maker, rec.trade_time


class TradeCandles:
    """Per-symbol 1-minute bars from trades: ``on_record`` returns the candles it produced (the
    closed bar a later minute ended, then the open bar the record updated)."""

    def __init__(self) -> None:
        self._bars: dict[str, _Bar] = {}
        #: per symbol, the end of its last closed minute: a print before it is late, never a bar
        self._closed_until: dict[str, int] = {}

    def on_record(self, rec: Any) -> list[CandleRecord]:
        key = getattr(rec, "symbol", None)  # one worker is one venue's group: the symbol names it
        if key is None:
            return []
        bar = self._bars.get(key)
        fields = _trade_fields(rec)
        now = fields[4] if fields else _event_ms(rec)
        out: list[CandleRecord] = []
        if bar is not None and now is not None and now >= bar.open_time + MINUTE_MS:
            out.append(bar.record(closed=True))
            self._closed_until[key] = bar.open_time + MINUTE_MS
            del self._bars[key]
            bar = None
        if fields is None:
            return out
        price, qty, count, taker_buy, t = fields
        if t < self._closed_until.get(key, 0) or (bar is not None and t < bar.open_time):
            return out  # a late print of a minute already closed (or never opened here)
        if bar is None:
            minute = t - t % MINUTE_MS
            zero = Decimal(0)
            bar = _Bar(rec.exchange, key, minute, price, price, price, price, zero, zero, 0,
                       zero, zero, t, getattr(rec, "received_at", None))  # fmt: skip
            self._bars[key] = bar
        bar.add(price, qty, count, taker_buy, t)
        out.append(bar.record(closed=False))
        return out


def _event_ms(rec: Any) -> int | None:
    """The venue time a non-trade record shows the clock at (book sample, ticker, mark)."""
    for name in ("snapshot_time", "event_time"):
        value = getattr(rec, name, None)
        if isinstance(value, int):
            return value
    return None
