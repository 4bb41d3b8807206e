"""msgspec schemas of the Binance USD-M futures websocket messages we consume.

One frozen Struct per message, raw Binance field names with their meaning in a comment
(nautilus style). Prices and quantities are typed ``Decimal`` so msgspec turns Binance's decimal
strings into ``Decimal`` in C, without a float in between and faster than a bare
``orjson.loads`` plus Python-side conversion. Ids and times are int64: update ids exceed 2**32
and an unbounded JSON integer must not slip through as a Python bigint.

The fast path is one decoder for the combined-stream envelope whose ``data`` is a union tagged
on ``"e"``; raw ``/ws`` payloads use the bare union, and everything else (subscription acks,
errors, oddly formatted frames) goes through ``BinanceFrameProbe``. Decoders are built once here.
The ``to_*`` converters below turn a decoded event into a normalised record after a few cheap
comparisons that reject what msgspec cannot (NaN, infinity, non-positive prices).

Plausibility, all of it a few integer or Decimal comparisons per value, so the hot path stays
fast:

* ids are at most ``MAX_ID`` (2**53 - 1: no JSON reader built on doubles can hold more, and
  Binance's busiest sequence, the USD-M depth update id, was ~5e12 in 2024) and times are epoch
  milliseconds before ``MAX_TIME_MS`` (2100-01-01), both checked by msgspec in C. A legal int64
  like ``9223372036854775807`` is corrupt, not a trade id. Whether an id or time is plausible
  *for its stream right now* needs the stream's state and the receipt time: the ingest engine
  checks that (``ingest.engine``).
* prices (and trade quantities) lie in ``[1e-12, 1e18)``: ``"1e-999999999"`` is positive but
  becomes 0.0 in the lake, a 40-digit integer is no price. The number of significant digits is
  not checked (that needs the decimal's text or digit tuple, ~15% of an aggTrade's parse time):
  a 40-digit fraction is accepted, landed exactly and rounded in the lake's float64.
* the symbol of a combined-stream frame's stream name must be the symbol in its data
  (``stream_symbol``): a frame saying ``btcusdt@aggTrade`` about ETHUSDT could never be read
  back under either symbol.

``@trade`` (individual trades with their print type ``X``), ``@bookTicker`` (best bid/ask) and
``@ticker`` (24-hour statistics) are parsed into ``RawTradeRecord``, ``BookTickerRecord`` and
``TickerRecord`` (see ``exchanges.base``). Partial book depth (``@depth5``/``@depth10``/
``@depth20``, optionally ``@100ms``/``@500ms``) sends the same ``depthUpdate`` payload as the diff
stream, but each message is the top of the book, not a diff: only the stream name tells them
apart, so a combined-stream frame of such a stream becomes an in-stream ``DepthSnapshotRecord``
(``to_partial_depth``; a bare ``/ws`` payload has no stream name and reads as a diff).

The Petrosa socket-client republishes each combined-stream frame on NATS inside an envelope,
``{"stream", "data", "timestamp", "message_id", "source", "version", ...trace keys}``
(https://github.com/PetroSa2/petrosa-socket-client, ``socket_client/models/message.py``).
msgspec ignores keys a Struct does not declare, in any order, so the combined-stream decoders
read an envelope as they read a frame; ``SocketClientEnvelope`` reads its ``timestamp``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec

from petrosa_pipelines.exchanges.base import (
    BookTickerRecord,
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    MessageError,
    RawTradeRecord,
    Record,
    Source,
    TickerRecord,
    TradeRecord,
    TradeType,
)

INT64_MAX = 2**63 - 1
#: the largest id we accept (see the module docstring)
MAX_ID = 2**53 - 1
#: 2100-01-01T00:00:00Z in ms: a later time is corrupt
MAX_TIME_MS = 4_102_444_800_000
EXCHANGE = "binance"

#: a non-negative id (trade, aggregate trade, update id) or count
Id64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
#: an epoch-millisecond time (0 only where Binance uses it for "none")
Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_MS)]

#: one book level as sent: [price, quantity]
Level = tuple[Decimal, Decimal]


class BinanceAggTradeData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="aggTrade"):
    """``<symbol>@aggTrade`` payload."""

    E: Ms  # event time (ms)
    a: Id64  # aggregate trade id
    s: str  # symbol
    p: Decimal  # price
    q: Decimal  # quantity
    f: Id64  # first trade id
    l: Id64  # last trade id  # noqa: E741 (Binance's field name)
    T: Ms  # trade time (ms)
    m: bool  # is the buyer the market maker?


class BinanceTradeData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="trade"):
    """``<symbol>@trade`` payload: one individual trade (futures carry its print type ``X``)."""

    E: Ms  # event time (ms)
    T: Ms  # trade time (ms)
    s: str  # symbol
    t: Id64  # trade id
    p: Decimal  # price
    q: Decimal  # quantity
    X: str  # print type: MARKET, INSURANCE_FUND, ADL, ...
    m: bool  # is the buyer the market maker?


class BinanceBookTickerData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="bookTicker"):
    """``<symbol>@bookTicker`` payload: best bid and ask with their quantities."""

    u: Id64  # order book update id
    s: str  # symbol
    b: Decimal  # best bid price
    B: Decimal  # best bid quantity
    a: Decimal  # best ask price
    A: Decimal  # best ask quantity
    T: Ms | None = None  # transaction time (ms); futures only
    E: Ms | None = None  # event time (ms); futures only


class BinanceKline(msgspec.Struct, frozen=True, gc=False):
    """The ``k`` object of a kline event (``f``, ``L``, ``B`` are not used and not decoded)."""

    t: Ms  # kline open time (ms)
    T: Ms  # kline close time (ms), open + interval - 1
    i: str  # interval, e.g. "1m"
    o: Decimal  # open price
    c: Decimal  # close price
    h: Decimal  # high price
    l: Decimal  # low price  # noqa: E741 (Binance's field name)
    v: Decimal  # base asset volume
    n: Id64  # number of trades
    x: bool  # is this kline closed?
    q: Decimal  # quote asset volume
    V: Decimal  # taker buy base asset volume
    Q: Decimal  # taker buy quote asset volume


class BinanceKlineData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="kline"):
    """``<symbol>@kline_<interval>`` payload."""

    E: Ms  # event time (ms)
    s: str  # symbol
    k: BinanceKline  # the candle


class BinanceDepthUpdateData(
    msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="depthUpdate"
):
    """``<symbol>@depth@<speed>`` diff payload. Quantities are absolute; 0 deletes the level."""

    E: Ms  # event time (ms)
    s: str  # symbol
    U: Id64  # first update id in this event
    u: Id64  # final update id in this event
    b: tuple[Level, ...]  # bids to update
    a: tuple[Level, ...]  # asks to update
    T: Ms | None = None  # transaction time (ms); futures only
    pu: Id64 | None = None  # final update id of the previous event; futures only


class BinanceMarkPriceData(
    msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="markPriceUpdate"
):
    """``<symbol>@markPrice[@1s]`` payload.

    ``P``, ``i`` and ``r`` stay strings: Binance sends ``""`` where a value does not apply
    (``r`` on delivery contracts), which the adapter maps to None.
    """

    E: Ms  # event time (ms)
    s: str  # symbol
    p: Decimal  # mark price
    i: str = ""  # index price
    P: str = ""  # estimated settle price (only meaningful in the last hour before settlement)
    r: str = ""  # predicted funding rate for the next settlement
    T: Ms = 0  # next funding time (ms); 0 where the contract has no funding


#: a trade id or -1 (Binance's "no trade" in 24-hour statistics)
TradeIdOrNone = Annotated[int, msgspec.Meta(ge=-1, le=MAX_ID)]


class BinanceTickerData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="24hrTicker"):
    """``<symbol>@ticker`` payload: rolling 24-hour statistics, pushed every 2000 ms
    (https://developers.binance.com/docs/derivatives/usds-margined-futures/
    websocket-market-streams/Individual-Symbol-Ticker-Streams). ``p`` (price change), ``P``
    (its percentage) and ``w`` (weighted average price) are derived and not decoded."""

    E: Ms  # event time (ms)
    s: str  # symbol
    c: Decimal  # last price
    Q: Decimal  # last quantity
    o: Decimal  # open price (24 h ago)
    h: Decimal  # high price
    l: Decimal  # low price  # noqa: E741 (Binance's field name)
    v: Decimal  # total traded base asset volume
    q: Decimal  # total traded quote asset volume
    O: Ms  # statistics open time (ms)  # noqa: E741
    C: Ms  # statistics close time (ms)
    F: TradeIdOrNone  # first trade id
    L: TradeIdOrNone  # last trade id
    n: Id64  # number of trades


BinanceFuturesEvent = (
    BinanceAggTradeData
    | BinanceKlineData
    | BinanceDepthUpdateData
    | BinanceMarkPriceData
    | BinanceTradeData
    | BinanceBookTickerData
    | BinanceTickerData
)


class BinanceCombinedMsg(msgspec.Struct, frozen=True, gc=False):
    """Combined-stream envelope (``/stream?streams=a/b``): ``{"stream": ..., "data": ...}``."""

    stream: str  # stream name, e.g. "btcusdt@aggTrade"
    data: BinanceFuturesEvent  # the event


class BinanceFrameProbe(msgspec.Struct, frozen=True, gc=False):
    """Slow-path view of any frame: tells envelopes, raw events, acks and errors apart."""

    stream: Any = None  # present on combined-stream frames
    data: msgspec.Raw = msgspec.Raw()  # combined-stream payload, decoded later
    e: Any = None  # event type of a raw /ws payload
    result: Any = msgspec.UNSET  # subscription ack: {"result": null, "id": 1}
    id: Any = None  # request id echoed by acks and errors
    error: Any = None  # {"error": {"code": 2, "msg": "..."}, "id": 1}


class SocketClientEnvelope(msgspec.Struct, frozen=True, gc=False):
    """The Petrosa socket-client's NATS envelope around one combined-stream frame; other keys
    (``message_id``, ``source``, ``version``, OpenTelemetry trace context) are ignored."""

    stream: str  # the combined stream's name, e.g. "btcusdt@trade"
    data: msgspec.Raw  # the Binance payload as received
    timestamp: str | None = None  # the socket-client's receipt time, ISO-8601 UTC ("...Z")


class StreamOnly(msgspec.Struct, frozen=True, gc=False):
    """Just the top-level ``stream`` of a frame or envelope, wherever it is among the keys."""

    stream: str


COMBINED_DECODER = msgspec.json.Decoder(BinanceCombinedMsg)
ENVELOPE_DECODER = msgspec.json.Decoder(SocketClientEnvelope)
STREAM_ONLY_DECODER = msgspec.json.Decoder(StreamOnly)
EVENT_DECODER = msgspec.json.Decoder(BinanceFuturesEvent)
PROBE_DECODER = msgspec.json.Decoder(BinanceFrameProbe)


_WS = str(Source.WS)
_ZERO = Decimal(0)
#: no Binance price, quantity or volume comes near this: bigger values are corrupt, so they are
#: rejected instead of stored
_MAX = Decimal(10) ** 18
#: the smallest price (or trade quantity) we accept; Binance's finest tick is 1e-8
_MIN = Decimal("1e-12")
_MAX_RATE = Decimal(1)


# ---------------------------------------------------------------------------------------------
# Event -> record (nautilus keeps these next to the structs too). Each takes the decoded event
# and returns a record; a bad value raises MessageError with the field relative to the event
# (the adapter makes it absolute, e.g. "data.p").
# ---------------------------------------------------------------------------------------------


def _bad_decimal(field: str, value: Decimal, *, zero_ok: bool) -> MessageError:
    """Explain why ``value`` failed the fast range check (slow path, errors only)."""
    text = str(value)[:48]  # a reason names the value, it does not carry a megabyte of it
    if not value.is_finite():
        return MessageError(f"not a finite decimal: {text}", field=field)
    if value >= _MAX:
        return MessageError(f"implausibly large: {text}", field=field)
    if value > _ZERO and not zero_ok:
        return MessageError(f"implausibly small (< {_MIN}): {text}", field=field)
    return MessageError(f"must be {'>= 0' if zero_ok else '> 0'}, got {text}", field=field)


def _check_positive(*pairs: tuple[str, Decimal]) -> None:
    for field, value in pairs:
        try:
            ok = _MIN <= value < _MAX
        except InvalidOperation:  # NaN / sNaN
            ok = False
        if not ok:
            raise _bad_decimal(field, value, zero_ok=False)


def _check_non_negative(*pairs: tuple[str, Decimal]) -> None:
    for field, value in pairs:
        try:
            ok = _ZERO <= value < _MAX
        except InvalidOperation:
            ok = False
        if not ok:
            raise _bad_decimal(field, value, zero_ok=True)


#: exchange symbol -> normalised symbol; also interns it, so a million records share one str
_SYMBOLS: dict[str, str] = {}
_SYMBOLS_MAX = 10_000  # a stream of garbage symbols must not grow the cache without bound
#: perpetuals like BTCUSDT, delivery contracts like BTCUSDT_230630
_SYMBOL_RE = re.compile(r"[A-Za-z0-9_]{1,40}")


def _symbol(s: str) -> str:
    sym = _SYMBOLS.get(s)
    if sym is None:
        if not _SYMBOL_RE.fullmatch(s):
            raise MessageError(f"not an exchange symbol: {s!r}", field="s")
        sym = s.upper()
        if len(_SYMBOLS) < _SYMBOLS_MAX:
            _SYMBOLS[s] = sym
    return sym


#: stream name -> the normalised symbol it is about (bounded like ``_SYMBOLS``)
STREAM_SYMBOLS: dict[str, str] = {}
#: stream name -> (``s`` as sent, normalised symbol) of frames checked to agree with it: the
#: parser's hot path looks the stream up instead of ``s`` (one lookup either way), so checking
#: that a stream and its data agree costs one string comparison
STREAM_KEYS: dict[str, tuple[str, str]] = {}


def stream_symbol(stream: str) -> str:
    """``"btcusdt@aggTrade"`` -> ``"BTCUSDT"``: whom a combined-stream frame is about."""
    sym = STREAM_SYMBOLS.get(stream)
    if sym is None:
        sym = stream.partition("@")[0].upper()
        if len(STREAM_SYMBOLS) < _SYMBOLS_MAX:
            STREAM_SYMBOLS[stream] = sym
    return sym


def check_stream(stream: str, s: str | None, symbol: str) -> None:
    """Slow path of the stream check: raise if ``stream`` is not about ``symbol`` (the record's
    normalised symbol, from ``s`` as sent), else remember the pair for the hot path."""
    if stream_symbol(stream) != symbol:
        raise stream_mismatch(stream[:64], symbol)
    if s is not None and len(STREAM_KEYS) < _SYMBOLS_MAX:
        STREAM_KEYS[stream] = (s, symbol)


def stream_mismatch(stream: str, symbol: str) -> MessageError:
    """The error for a frame whose stream name and data symbol disagree (a stream that says
    ``btcusdt@...`` about ETHUSDT would be landed under one symbol and read under the other)."""
    return MessageError(f"stream {stream!r} is not about symbol {symbol!r}", field="stream")


def to_trade(
    d: BinanceAggTradeData, received_at: int | None, symbol: str | None = None
) -> TradeRecord:
    """aggTrade -> TradeRecord (the hot path: positional fields, no helper calls when valid).

    ``symbol`` is the normalised ``d.s`` when the caller knows it already (the parser's
    ``STREAM_KEYS``).

    ``{"e":"aggTrade","E":1618677448238,"a":52599685,"s":"YFIUSDT","p":"49966.7","q":"0.001",
    "f":64902163,"l":64902163,"T":1618677448084,"m":false}``
    """
    p, q = d.p, d.q
    try:
        ok = _MIN <= p < _MAX and _MIN <= q < _MAX
    except InvalidOperation:  # NaN
        ok = False
    if not ok:
        _check_positive(("p", p), ("q", q))
    if d.f > d.l:
        raise MessageError(f"last trade id {d.l} < first trade id {d.f}", field="l")
    if symbol is None:
        symbol = _SYMBOLS.get(d.s) or _symbol(d.s)
    # field order of TradeRecord: exchange, symbol, agg_trade_id, price, quantity,
    # first_trade_id, last_trade_id, trade_time, is_buyer_maker, event_time, source, received_at
    return TradeRecord(EXCHANGE, symbol, d.a, p, q, d.f, d.l, d.T, d.m, d.E, _WS, received_at)


#: Binance print types (``X``) -> one interned str; other well-formed types are kept as sent
_TRADE_TYPES: dict[str, str] = {t.value: t.value for t in TradeType}
_TRADE_TYPE_RE = re.compile(r"[A-Z][A-Z_]{0,31}")


def _trade_type(x: str) -> str:
    t = _TRADE_TYPES.get(x)
    if t is None:
        if not _TRADE_TYPE_RE.fullmatch(x):
            raise MessageError(f"not a print type: {x[:40]!r}", field="X")
        t = x
        if len(_TRADE_TYPES) < 64:
            _TRADE_TYPES[x] = x
    return t


def to_raw_trade(d: BinanceTradeData, received_at: int | None) -> RawTradeRecord:
    """trade -> RawTradeRecord, the print type ``X`` kept (non-market prints stay visible).

    ``{"e":"trade","E":1680652874406,"T":1680652874400,"s":"BTCUSDT","t":3535191080,
    "p":"28722.50","q":"0.001","X":"INSURANCE_FUND","m":true}``
    """
    p, q = d.p, d.q
    try:
        ok = _MIN <= p < _MAX and _MIN <= q < _MAX
    except InvalidOperation:  # NaN
        ok = False
    if not ok:
        _check_positive(("p", p), ("q", q))
    symbol = _SYMBOLS.get(d.s) or _symbol(d.s)
    return RawTradeRecord(
        EXCHANGE, symbol, d.t, p, q, d.T, d.m, _trade_type(d.X), d.E, _WS, received_at
    )


def to_book_ticker(d: BinanceBookTickerData, received_at: int | None) -> BookTickerRecord:
    """bookTicker -> BookTickerRecord (prices > 0, quantities >= 0).

    ``{"e":"bookTicker","u":2710246762461,"s":"BTCUSDT","b":"28145.10","B":"3.868",
    "a":"28145.20","A":"6.887","T":1680652700430,"E":1680652700435}``
    """
    _check_positive(("b", d.b), ("a", d.a))
    _check_non_negative(("B", d.B), ("A", d.A))
    return BookTickerRecord(
        EXCHANGE,
        _SYMBOLS.get(d.s) or _symbol(d.s),
        d.u,
        d.b,
        d.B,
        d.a,
        d.A,
        d.T,
        d.E,
        received_at,
    )


def to_candle(d: BinanceKlineData, received_at: int | None) -> CandleRecord:
    """kline -> CandleRecord; ``is_closed`` from ``k.x`` (in-progress updates have x=false).

    ``{"e":"kline","E":1618677448088,"s":"YFIUSDT","k":{"t":1618677420000,"T":1618677479999,
    "s":"YFIUSDT","i":"1m","f":64902095,"L":64902163,"o":"50010.8","c":"49966.7","h":"50044.2",
    "l":"49950.6","v":"0.842","n":69,"x":false,"q":"42099.6830","V":"0.538","Q":"26900.2291",
    "B":"0"}}``
    """
    k = d.k
    _check_positive(("k.o", k.o), ("k.h", k.h), ("k.l", k.l), ("k.c", k.c))
    _check_non_negative(("k.v", k.v), ("k.q", k.q), ("k.V", k.V), ("k.Q", k.Q))
    if k.T < k.t:
        raise MessageError(f"close time {k.T} before open time {k.t}", field="k.T")
    return CandleRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        interval=k.i,
        open_time=k.t,
        close_time=k.T,
        open=k.o,
        high=k.h,
        low=k.l,
        close=k.c,
        volume=k.v,
        quote_volume=k.q,
        trade_count=k.n,
        taker_buy_volume=k.V,
        taker_buy_quote_volume=k.Q,
        is_closed=k.x,
        event_time=d.E,
        source=_WS,
        received_at=received_at,
    )


def _levels_ok(levels: tuple[Level, ...]) -> bool:
    """Fast check: every price > 0, every quantity >= 0, all finite and plausible."""
    try:
        for p, q in levels:
            if not (_MIN <= p < _MAX and _ZERO <= q < _MAX):
                return False
    except InvalidOperation:  # NaN
        return False
    return True


def _check_levels(side: str, levels: tuple[Level, ...]) -> None:
    """Slow path of ``_levels_ok``: raise for the first bad level, naming it."""
    for n, (p, q) in enumerate(levels):
        _check_positive((f"{side}[{n}][0]", p))
        _check_non_negative((f"{side}[{n}][1]", q))


def to_depth_update(d: BinanceDepthUpdateData, received_at: int | None) -> DepthUpdateRecord:
    """depthUpdate -> DepthUpdateRecord; levels stay (price, qty) Decimal tuples, qty 0 = delete.

    ``{"e":"depthUpdate","E":1626992741077,"T":1626992740974,"s":"AKROUSDT","U":600859599831,
    "u":600859599831,"pu":600859598737,"b":[],"a":[["0.01737","437848"]]}``
    """
    if not (_levels_ok(d.b) and _levels_ok(d.a)):
        _check_levels("b", d.b)
        _check_levels("a", d.a)
    if d.U > d.u:
        raise MessageError(f"final update id {d.u} < first update id {d.U}", field="u")
    return DepthUpdateRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        event_time=d.E,
        transaction_time=d.T,
        first_update_id=d.U,
        final_update_id=d.u,
        prev_final_update_id=d.pu,
        bids=d.b,
        asks=d.a,
        received_at=received_at,
    )


def _optional_decimal(field: str, text: str, *, signed: bool = False) -> Decimal | None:
    """A decimal string that Binance may send as ``""`` (-> None)."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except ArithmeticError:  # InvalidOperation, or an exponent beyond what Decimal holds
        raise MessageError(f"invalid decimal string {text[:48]!r}", field=field) from None
    if signed:
        # no abs(): it rounds to the context and raises decimal.Overflow on "1e999999999"
        if not (value.is_finite() and -_MAX_RATE < value < _MAX_RATE):
            raise MessageError(f"not a plausible rate: {text[:48]!r}", field=field)
    else:
        _check_non_negative((field, value))
    return value


def to_mark_price(d: BinanceMarkPriceData, received_at: int | None) -> MarkPriceRecord:
    """markPriceUpdate -> MarkPriceRecord; ``r``/``P``/``i`` of ``""`` and ``T`` of 0 -> None.

    ``{"e":"markPriceUpdate","E":1680652701000,"s":"BTCUSDT","p":"28147.27373413",
    "P":"28142.15563565","i":"28159.75642857","r":"0.00002754","T":1680652800000}``
    """
    _check_positive(("p", d.p))
    return MarkPriceRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        event_time=d.E,
        mark_price=d.p,
        index_price=_optional_decimal("i", d.i),
        estimated_settle_price=_optional_decimal("P", d.P),
        funding_rate=_optional_decimal("r", d.r, signed=True),
        next_funding_time=d.T or None,
        received_at=received_at,
    )


def to_ticker(d: BinanceTickerData, received_at: int | None) -> TickerRecord:
    """24hrTicker -> TickerRecord (prices and volumes >= 0; a quiet market may show zeros).

    ``{"e":"24hrTicker","E":123456789,"s":"BNBUSDT","p":"0.0015","P":"250.00","w":"0.0018",
    "c":"0.0025","Q":"10","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,
    "C":86400000,"F":0,"L":18150,"n":18151}`` (Binance's documented example)
    """
    _check_non_negative(
        ("c", d.c), ("Q", d.Q), ("o", d.o), ("h", d.h), ("l", d.l), ("v", d.v), ("q", d.q)
    )
    if d.C < d.O:
        raise MessageError(f"close time {d.C} before open time {d.O}", field="C")
    return TickerRecord(
        EXCHANGE,
        _SYMBOLS.get(d.s) or _symbol(d.s),
        d.E,
        d.c,
        d.Q,
        d.o,
        d.h,
        d.l,
        d.v,
        d.q,
        d.O,
        d.C,
        d.F,
        d.L,
        d.n,
        received_at,
    )


#: ``<symbol>@depth<levels>[@<speed>]``: a partial book depth stream (top levels, not diffs)
_PARTIAL_DEPTH_RE = re.compile(r"[^@]+@depth(?:5|10|20)(?:@\d+ms)?")
#: stream name -> whether it is a partial depth stream (bounded like ``_SYMBOLS``)
_PARTIAL_STREAMS: dict[str, bool] = {}


def is_partial_depth(stream: str) -> bool:
    """Whether ``stream`` is a partial book depth stream (``btcusdt@depth20@100ms``)."""
    partial = _PARTIAL_STREAMS.get(stream)
    if partial is None:
        partial = _PARTIAL_DEPTH_RE.fullmatch(stream) is not None
        if len(_PARTIAL_STREAMS) < _SYMBOLS_MAX:
            _PARTIAL_STREAMS[stream] = partial
    return partial


def to_partial_depth(d: BinanceDepthUpdateData, received_at: int | None) -> DepthSnapshotRecord:
    """A partial book depth message -> an in-stream ``DepthSnapshotRecord`` (``in_stream``).

    Each message holds the top levels of the book at its event time, so it replaces the book;
    ``u`` is the update id the book reflects and ``pu`` the previous message's ``u`` (continuity
    is checked by the book, ``landing.book.BookSync``). Levels best first as sent.
    https://developers.binance.com/docs/derivatives/usds-margined-futures/
    websocket-market-streams/Partial-Book-Depth-Streams:

    ``{"e":"depthUpdate","E":1571889248277,"T":1571889248276,"s":"BTCUSDT","U":390497796,
    "u":390497878,"pu":390497794,"b":[["7403.89","0.002"],...],"a":[["7405.96","3.340"],...]}``
    """
    if not (_levels_ok(d.b) and _levels_ok(d.a)):
        _check_levels("b", d.b)
        _check_levels("a", d.a)
    if d.U > d.u:
        raise MessageError(f"final update id {d.u} < first update id {d.U}", field="u")
    return DepthSnapshotRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        last_update_id=d.u,
        event_time=d.E,
        transaction_time=d.T,
        bids=d.b,
        asks=d.a,
        received_at=received_at,
        prev_update_id=d.pu,
        in_stream=True,
    )


def convert_on(stream: str, event: Any, received_at: int | None) -> Record:
    """The record of ``event`` received on ``stream``: a ``depthUpdate`` on a partial depth
    stream is a snapshot, every other event its type's converter."""
    if type(event) is BinanceDepthUpdateData and is_partial_depth(stream):
        return to_partial_depth(event, received_at)
    return CONVERTERS[type(event)](event, received_at)


def iso_to_ms(text: str) -> int | None:
    """``"2024-01-03T00:00:01.234567Z"`` -> epoch ms (None when it is not an ISO-8601 time;
    a time without an offset is UTC, as the socket-client writes ``datetime.utcnow()``)."""
    try:
        t = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    ms = (t - _EPOCH) // _ONE_MS
    return ms if 0 <= ms <= MAX_TIME_MS else None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


CONVERTERS: dict[type, Callable[[Any, int | None], Record]] = {
    BinanceAggTradeData: to_trade,
    BinanceDepthUpdateData: to_depth_update,
    BinanceKlineData: to_candle,
    BinanceMarkPriceData: to_mark_price,
    BinanceTradeData: to_raw_trade,
    BinanceBookTickerData: to_book_ticker,
    BinanceTickerData: to_ticker,
}
