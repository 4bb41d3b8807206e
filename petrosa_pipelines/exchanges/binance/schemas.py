"""msgspec schemas of the Binance USD-M futures websocket messages we consume.

One frozen Struct per message, raw Binance field names with their meaning in a comment
(nautilus style). Prices and quantities are typed ``Decimal`` so msgspec turns Binance's decimal
strings into ``Decimal`` in C, without a float in between and faster than a bare
``orjson.loads`` plus Python-side conversion. Ids and times are int64: update ids exceed 2**32
and an unbounded JSON integer must not slip through as a Python bigint.

The fast path is one decoder for the combined-stream envelope whose ``data`` is a union tagged
on ``"e"``; raw ``/ws`` payloads use the bare union, and everything else (subscription acks,
errors, oddly formatted frames) goes through ``BinanceFrameProbe``. Decoders are built once here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec

INT64_MAX = 2**63 - 1

#: non-negative int64 (ids, epoch-millisecond times)
Id64 = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
#: signed int64 (kline first/last trade id may be -1 when the candle has no trade)
SignedInt64 = Annotated[int, msgspec.Meta(ge=-INT64_MAX - 1, le=INT64_MAX)]

#: one book level as sent: [price, quantity]
Level = tuple[Decimal, Decimal]


class BinanceAggTradeData(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="aggTrade"):
    """``<symbol>@aggTrade`` payload."""

    E: Id64  # event time (ms)
    a: Id64  # aggregate trade id
    s: str  # symbol
    p: Decimal  # price
    q: Decimal  # quantity
    f: Id64  # first trade id
    l: Id64  # last trade id  # noqa: E741 (Binance's field name)
    T: Id64  # trade time (ms)
    m: bool  # is the buyer the market maker?


class BinanceKline(msgspec.Struct, frozen=True, gc=False):
    """The ``k`` object of a kline event (``f``, ``L``, ``B`` are not used and not decoded)."""

    t: Id64  # kline open time (ms)
    T: Id64  # kline close time (ms), open + interval - 1
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

    E: Id64  # event time (ms)
    s: str  # symbol
    k: BinanceKline  # the candle


class BinanceDepthUpdateData(
    msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="depthUpdate"
):
    """``<symbol>@depth@<speed>`` diff payload. Quantities are absolute; 0 deletes the level."""

    E: Id64  # event time (ms)
    s: str  # symbol
    U: Id64  # first update id in this event
    u: Id64  # final update id in this event
    b: tuple[Level, ...]  # bids to update
    a: tuple[Level, ...]  # asks to update
    T: Id64 | None = None  # transaction time (ms); futures only
    pu: Id64 | None = None  # final update id of the previous event; futures only


class BinanceMarkPriceData(
    msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="markPriceUpdate"
):
    """``<symbol>@markPrice[@1s]`` payload.

    ``P``, ``i`` and ``r`` stay strings: Binance sends ``""`` where a value does not apply
    (``r`` on delivery contracts), which the adapter maps to None.
    """

    E: Id64  # event time (ms)
    s: str  # symbol
    p: Decimal  # mark price
    i: str = ""  # index price
    P: str = ""  # estimated settle price (only meaningful in the last hour before settlement)
    r: str = ""  # predicted funding rate for the next settlement
    T: Id64 = 0  # next funding time (ms); 0 where the contract has no funding


BinanceFuturesEvent = (
    BinanceAggTradeData | BinanceKlineData | BinanceDepthUpdateData | BinanceMarkPriceData
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


COMBINED_DECODER = msgspec.json.Decoder(BinanceCombinedMsg)
EVENT_DECODER = msgspec.json.Decoder(BinanceFuturesEvent)
PROBE_DECODER = msgspec.json.Decoder(BinanceFrameProbe)
