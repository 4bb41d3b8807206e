"""msgspec schemas of the Bybit v5 public linear websocket messages, and their converters.

One frozen Struct per message kind with Bybit's own field names, their meaning in a comment
(https://bybit-exchange.github.io/docs/v5/websocket/public/trade, ``.../orderbook``,
``.../kline``, ``.../ticker``). Prices and sizes decode straight to ``Decimal`` in C. A frame
is one of four kinds told apart by the first part of its ``topic`` (``publicTrade``,
``orderbook``, ``kline``, ``tickers``); each kind has its own decoder, so the hot path decodes
every frame once.

What the recorded data showed (the shared data's PROVENANCE quirks 21-30) and what follows:

* a ``publicTrade`` frame carries every fill of one taker order (up to 46 seen) with one
  ``seq``; linear trade ids ``i`` are UUIDs. Each fill becomes its own ``TradeRecord`` with
  ``trade_id = i`` and ``agg_trade_id = seq * 1000 + index`` (the shared contract: unique,
  ordered with the book's ``u``/``seq``, but not consecutive);
* a ``kline`` frame may carry two candles (the one that closed and the new one, quirk 27);
* ``orderbook`` ``u`` rises by exactly 1 per message (quirk 21), so a delta is
  ``DepthUpdateRecord(first = final = u, prev = u - 1)`` and a snapshot replaces the book;
* ``tickers`` deltas carry only changed fields (quirk 28): the adapter merges them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

import msgspec

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MessageError,
    Source,
    TradeRecord,
)

EXCHANGE = "bybit-linear"
#: the largest id we accept: no JSON reader built on doubles holds more
MAX_ID = 2**53 - 1
#: 2100-01-01T00:00:00Z in ms: a later time is corrupt
MAX_TIME_MS = 4_102_444_800_000
#: ``agg_trade_id = seq * TRADES_PER_SEQ + index``: a frame with more fills would collide
TRADES_PER_SEQ = 1000

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_MS)]
Level = tuple[Decimal, Decimal]

#: Bybit kline interval -> ours (https://bybit-exchange.github.io/docs/v5/enum#interval)
INTERVALS: dict[str, str] = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
    "M": "1M",
}
#: ours -> Bybit's
BYBIT_INTERVALS: dict[str, str] = {v: k for k, v in INTERVALS.items()}
#: candle fields Bybit does not publish (ws or REST); the records carry 0 for them
UNSUPPLIED_CANDLE_FIELDS = frozenset({"trade_count", "taker_buy_volume", "taker_buy_quote_volume"})


class BybitTrade(msgspec.Struct, frozen=True, gc=False):
    """One fill of a ``publicTrade.{symbol}`` frame."""

    T: Ms  # trade time (ms)
    s: str  # symbol
    S: Literal["Buy", "Sell"]  # taker side
    v: Decimal  # size (base coin)
    p: Decimal  # price
    i: str  # trade id (a UUID on linear)
    seq: Id | None = None  # cross sequence, shared with the book's seq (quirk 21)
    L: str = ""  # tick direction
    BT: bool = False  # block trade
    RPI: bool = False  # a fill of a Retail Price Improvement order


class BybitTradeMsg(msgspec.Struct, frozen=True, gc=False):
    topic: str  # publicTrade.{symbol}
    ts: Ms  # send time (ms)
    data: tuple[BybitTrade, ...]


class BybitKline(msgspec.Struct, frozen=True, gc=False):
    """One candle of a ``kline.{interval}.{symbol}`` frame."""

    start: Ms  # open time (ms)
    end: Ms  # close time (ms), start + interval - 1
    interval: str  # "1", "60", "D", ...
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal  # base coin
    turnover: Decimal  # quote coin
    confirm: bool  # the candle is closed
    timestamp: Ms = 0  # time of the last trade in the candle


class BybitKlineMsg(msgspec.Struct, frozen=True, gc=False):
    topic: str
    ts: Ms
    data: tuple[BybitKline, ...]


class BybitBook(msgspec.Struct, frozen=True, gc=False):
    """The ``data`` of an ``orderbook.{depth}.{symbol}`` frame."""

    s: str  # symbol
    b: tuple[Level, ...]  # bids, best first in snapshots; size "0" deletes in deltas
    a: tuple[Level, ...]  # asks
    u: Id  # update id: +1 per message; 1 after a service restart (a snapshot)
    seq: Id | None = None  # cross sequence


class BybitBookMsg(msgspec.Struct, frozen=True, gc=False):
    topic: str
    type: Literal["snapshot", "delta"]
    ts: Ms  # time the book last changed (snapshots) or send time (quirk 24)
    data: BybitBook
    cts: Ms | None = None  # matching-engine time


class BybitTicker(msgspec.Struct, frozen=True, gc=False):
    """The fields of a linear ``tickers.{symbol}`` frame we use; a delta sends changed ones."""

    symbol: str
    markPrice: str | None = None
    indexPrice: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None  # ms, as a string


class BybitTickerMsg(msgspec.Struct, frozen=True, gc=False):
    topic: str
    type: Literal["snapshot", "delta"]
    ts: Ms
    data: BybitTicker
    cs: Id | None = None  # cross sequence


class BybitProbe(msgspec.Struct, frozen=True, gc=False):
    """Slow-path view of any frame: topics, control replies (``op``) and error replies."""

    topic: object = None
    op: object = None
    success: object = None
    ret_msg: object = None


DECODERS: dict[str, msgspec.json.Decoder] = {
    "publicTrade": msgspec.json.Decoder(BybitTradeMsg),
    "orderbook": msgspec.json.Decoder(BybitBookMsg),
    "kline": msgspec.json.Decoder(BybitKlineMsg),
    "tickers": msgspec.json.Decoder(BybitTickerMsg),
}
PROBE_DECODER = msgspec.json.Decoder(BybitProbe)

_WS = str(Source.WS)
_ZERO = Decimal(0)
_MAX = Decimal(10) ** 18
_MIN = Decimal("1e-12")
_MAX_RATE = Decimal(1)


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def validation_error(exc: msgspec.ValidationError, raw: bytes) -> MessageError:
    """msgspec's "Expected `str`, got `int` - at `$.data[0].p`" -> field ``data[0].p``."""
    m = _AT.match(str(exc))
    reason = m.group("reason") if m else str(exc)
    path = ((m and m.group("path")) or "").lstrip(".")
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return MessageError(reason, field=path or "<message>", raw=raw)


# ---------------------------------------------------------------------------------------------
# Value checks (a few comparisons; the slow explanation only when one fails)
# ---------------------------------------------------------------------------------------------


def _positive_ok(value: Decimal) -> bool:
    try:
        return _MIN <= value < _MAX
    except InvalidOperation:  # NaN
        return False


def check_positive(field: str, value: Decimal) -> None:
    if not _positive_ok(value):
        raise MessageError(f"not a plausible positive decimal: {str(value)[:48]}", field=field)


def check_non_negative(field: str, value: Decimal) -> None:
    try:
        ok = _ZERO <= value < _MAX
    except InvalidOperation:
        ok = False
    if not ok:
        raise MessageError(f"not a plausible non-negative decimal: {str(value)[:48]}", field=field)


def optional_decimal(field: str, text: str | None, *, rate: bool = False) -> Decimal | None:
    """A decimal string Bybit may send as ``""`` (-> None); rates lie in (-1, 1)."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise MessageError(f"invalid decimal string {text[:48]!r}", field=field) from None
    if rate:
        if not (value.is_finite() and -_MAX_RATE < value < _MAX_RATE):
            raise MessageError(f"not a plausible rate: {text[:48]!r}", field=field)
    else:
        check_positive(field, value)
    return value


def optional_ms(field: str, text: str | None) -> int | None:
    """An epoch-ms time sent as a decimal string (``"1786320000000"``); ``""``/``"0"`` -> None."""
    if not text or text == "0":
        return None
    if not text.isdigit() or len(text) > 13 or int(text) > MAX_TIME_MS:
        raise MessageError(f"not an epoch-ms time: {text[:48]!r}", field=field)
    return int(text)


def _levels_ok(levels: tuple[Level, ...]) -> bool:
    try:
        for p, q in levels:
            if not (_MIN <= p < _MAX and _ZERO <= q < _MAX):
                return False
    except InvalidOperation:
        return False
    return True


def _check_levels(side: str, levels: tuple[Level, ...]) -> None:
    for n, (p, q) in enumerate(levels):
        check_positive(f"data.{side}[{n}][0]", p)
        check_non_negative(f"data.{side}[{n}][1]", q)


def topic_symbol(topic: str, kind: str) -> str:
    """``"orderbook.200.BTCUSDT"`` -> ``"BTCUSDT"`` (the symbol is the last dotted part)."""
    symbol = topic.rpartition(".")[2]
    if not symbol or not topic.startswith(kind + "."):
        raise MessageError(f"not a {kind} topic: {topic[:64]!r}", field="topic")
    return symbol


def _same_symbol(topic_sym: str, data_sym: str, field: str) -> None:
    if topic_sym != data_sym:
        raise MessageError(
            f"topic symbol {topic_sym!r} but data is about {data_sym!r}", field=field
        )


# ---------------------------------------------------------------------------------------------
# Message -> records
# ---------------------------------------------------------------------------------------------


def to_trades(m: BybitTradeMsg, received_at: int | None) -> list[TradeRecord]:
    """A ``publicTrade`` frame -> one ``TradeRecord`` per fill (see the module docstring).

    ``is_buyer_maker`` is True for a ``Sell`` taker (the buyer's order rested).
    """
    symbol = topic_symbol(m.topic, "publicTrade")
    data = m.data
    if len(data) > TRADES_PER_SEQ:
        raise MessageError(f"{len(data)} fills in one frame > {TRADES_PER_SEQ}", field="data")
    out: list[TradeRecord] = []
    ts = m.ts
    for n, t in enumerate(data):
        p, v = t.p, t.v
        try:
            ok = _MIN <= p < _MAX and _MIN <= v < _MAX
        except InvalidOperation:
            ok = False
        if not ok:
            check_positive(f"data[{n}].p", p)
            check_positive(f"data[{n}].v", v)
        if t.s != symbol:
            _same_symbol(symbol, t.s, f"data[{n}].s")
        if not t.i:
            raise MessageError("empty trade id", field=f"data[{n}].i")
        seq = t.seq
        agg = 0 if seq is None else seq * TRADES_PER_SEQ + n
        if agg > MAX_ID:
            raise MessageError(f"seq {seq} too large for an id", field=f"data[{n}].seq")
        # field order of TradeRecord: exchange, symbol, agg_trade_id, price, quantity,
        # first_trade_id, last_trade_id, trade_time, is_buyer_maker, event_time, source,
        # received_at, trade_id
        out.append(
            TradeRecord(
                EXCHANGE, symbol, agg, p, v, agg, agg, t.T, t.S == "Sell", ts, _WS, received_at, t.i
            )
        )
    return out


def to_candles(m: BybitKlineMsg, received_at: int | None) -> list[CandleRecord]:
    """A ``kline`` frame -> its candles; ``confirm`` is ``is_closed``.

    Bybit publishes neither a trade count nor taker-buy volumes: those fields are 0
    (``UNSUPPLIED_CANDLE_FIELDS``; the lake schema has no null for them).
    """
    symbol = topic_symbol(m.topic, "kline")
    out: list[CandleRecord] = []
    for n, k in enumerate(m.data):
        f = f"data[{n}]."
        for name in ("open", "high", "low", "close"):
            check_positive(f + name, getattr(k, name))
        check_non_negative(f + "volume", k.volume)
        check_non_negative(f + "turnover", k.turnover)
        interval = INTERVALS.get(k.interval)
        if interval is None:
            raise MessageError(f"unknown interval {k.interval[:16]!r}", field=f + "interval")
        if k.end < k.start:
            raise MessageError(f"end {k.end} before start {k.start}", field=f + "end")
        out.append(
            CandleRecord(
                exchange=EXCHANGE,
                symbol=symbol,
                interval=interval,
                open_time=k.start,
                close_time=k.end,
                open=k.open,
                high=k.high,
                low=k.low,
                close=k.close,
                volume=k.volume,
                quote_volume=k.turnover,
                trade_count=0,
                taker_buy_volume=_ZERO,
                taker_buy_quote_volume=_ZERO,
                is_closed=k.confirm,
                event_time=m.ts,
                source=_WS,
                received_at=received_at,
            )
        )
    return out


def to_book(m: BybitBookMsg, received_at: int | None) -> DepthSnapshotRecord | DepthUpdateRecord:
    """An ``orderbook`` frame -> a snapshot (replaces the book) or a delta (``u - 1`` before it).

    ``ts`` is the event time, ``cts`` (matching engine) the transaction time.
    """
    symbol = topic_symbol(m.topic, "orderbook")
    d = m.data
    if d.s != symbol:
        _same_symbol(symbol, d.s, "data.s")
    if not (_levels_ok(d.b) and _levels_ok(d.a)):
        _check_levels("b", d.b)
        _check_levels("a", d.a)
    if m.type == "snapshot":
        return DepthSnapshotRecord(EXCHANGE, symbol, d.u, m.ts, m.cts, d.b, d.a, received_at)
    if d.u < 1:
        raise MessageError("a delta needs u >= 1", field="data.u")
    return DepthUpdateRecord(
        EXCHANGE, symbol, m.ts, m.cts, d.u, d.u, d.u - 1, d.b, d.a, received_at
    )
