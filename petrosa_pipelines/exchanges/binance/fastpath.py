"""Binance's ingest fast path: cheap validation of combined-stream frames.

The ingest engine asks the adapter for a fast path (``BinanceUsdmAdapter.fast_path``) and, if
one is offered, calls :meth:`BinanceFastPath.decode` on every frame before the full parser (the
protocol is described in ``petrosa_pipelines/ingest/hotpath.py``).

The full parser (``BinanceUsdmAdapter.parse``) builds a normalised record with ``Decimal``
fields for every frame. The ingest lands the raw frame and needs only ids and times from it
(dedup, gap detection) plus, for depth diffs, the levels as numbers for the book, so building
~40 ``Decimal`` per diff was most of its cost. This module decodes a frame once into what the
engine needs, under one rule:

    **the fast path accepts a frame only if the full parser would accept it** (a subset).

Everything the fast path is unsure about goes to the full parser, which either returns a record
(the engine's general path) or raises the ``MessageError`` that lands in the dead-letter store,
so the reasons and fields of dead letters are exactly the full parser's. Per message type:

* ``aggTrade``: decoded with the full parser's own struct (``Decimal`` price and quantity, the
  same msgspec types, so the same frames decode), then the converter's checks inline; only the
  ``TradeRecord`` is not built. The engine also checks that the frame's stream is the trade
  stream of the symbol in its data (the full parser rejects a mismatch).
* ``depthUpdate``: the envelope and ids decode strictly, the two level arrays as ``Raw``; the
  levels are then decoded with ``strict=False`` into floats constrained to the full parser's
  ranges (price in (1e-12, 1e18), strictly above the full parser's ``>= 1e-12`` so a float
  rounded up to the bound cannot pass; quantity in [0, 1e18)). msgspec's lax float only takes
  strings in JSON-number form, a subset of what ``Decimal`` takes. Because a lax field would skip a
  *duplicate* key's earlier value that the full parser rejects, a diff is accepted only if the
  frame is byte-for-byte the canonical Binance serialisation of what was decoded (key order, no
  whitespace, no escapes, no duplicate or extra keys): :func:`depth_levels` checks the exact
  prefix and the total length (see there why that suffices).
* ``kline`` and ``markPriceUpdate``: the full parser's structs and converters (they are rare).
* not vouched for (the full parser decides): ``depthUpdate`` on a partial depth stream
  (``@depth20@100ms``: a snapshot, ten a second per symbol), raw ``trade`` and ``24hrTicker``.

A socket-client envelope (``exchanges/binance/adapter.py``) decodes like the frame it wraps
(msgspec skips undeclared keys in any order): its aggTrades, klines and mark prices take the
fast path; its depth diffs fail the canonical-form check and take the full parser.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec

from petrosa_pipelines.exchanges.base import DepthUpdateRecord, Record, TradeRecord
from petrosa_pipelines.exchanges.binance.schemas import (
    _SYMBOL_RE,
    CONVERTERS,
    BinanceAggTradeData,
    BinanceKlineData,
    BinanceMarkPriceData,
    Id64,
    Ms,
    is_partial_depth,
    stream_symbol,
)

_LIMIT = 1e18  # the full parser's _MAX: bigger prices and quantities are corrupt
#: the full parser's checks on a trade, as ``Decimal`` bounds
DEC_ZERO = Decimal(0)
DEC_MIN = Decimal("1e-12")
DEC_MAX = Decimal(10) ** 18

Price = Annotated[float, msgspec.Meta(gt=1e-12, lt=_LIMIT)]
Quantity = Annotated[float, msgspec.Meta(ge=0.0, lt=_LIMIT)]


class FastDepth(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="depthUpdate"):
    """``depthUpdate`` with the level arrays undecoded. ``T`` and ``pu`` are required here
    (futures always send them); a diff without them takes the full parser."""

    E: Ms  # event time (ms)
    T: Ms  # transaction time (ms)
    s: str  # symbol
    U: Id64  # first update id in this event
    u: Id64  # final update id in this event
    pu: Id64  # final update id of the previous event
    b: msgspec.Raw  # bids, decoded by LEVELS_DECODER after the canonical-form check
    a: msgspec.Raw  # asks


class FastFrame(msgspec.Struct, frozen=True, gc=False):
    """Combined-stream envelope of the fast path."""

    stream: str
    data: BinanceAggTradeData | FastDepth | BinanceKlineData | BinanceMarkPriceData


FAST_DECODER = msgspec.json.Decoder(FastFrame)
LEVELS_DECODER = msgspec.json.Decoder(tuple[tuple[Price, Quantity], ...], strict=False)
_decode_levels = LEVELS_DECODER.decode

#: the errors that send a frame to the full parser (which turns every one into a dead letter
#: with its reason): invalid UTF-8 inside a string and deep nesting included
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeError, RecursionError)


class DepthRoute:
    """What the engine knows about one subscribed depth stream, prepared once: the canonical
    frame head (``{"stream":"<stream>","data":{"e":"depthUpdate","E":``) and the symbol."""

    __slots__ = ("head", "symbol", "symbol_bytes", "partial")

    def __init__(self, stream: str, symbol: str) -> None:
        self.head = b'{"stream":"%b","data":{"e":"depthUpdate","E":' % stream.encode()
        self.symbol = symbol
        self.symbol_bytes = symbol.encode()
        #: a partial depth stream (``@depth20@100ms``): its messages are snapshots, not diffs
        self.partial = is_partial_depth(stream)


def depth_levels(
    raw: bytes, route: DepthRoute, d: FastDepth
) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]] | None:
    """(bids, asks) as floats if ``raw`` is the canonical form of ``d``; None otherwise.

    Why prefix + length is enough: the prefix ``P`` (everything up to and including ``"b":``)
    is rebuilt from the decoded values, so it holds each of its keys exactly once. The rest of
    the frame must hold the value of that first ``"b"`` key, at least one ``"a"`` key with a
    value, and the two closing braces: at least ``len(b) + 5 + len(a) + 2`` bytes for the values
    msgspec kept (the last of each key). Equality therefore leaves no room for a second ``b`` or
    ``a``, an extra key, whitespace between tokens or an envelope key after ``data``. Escapes in
    ``stream`` or ``s`` make the prefix differ. Levels that are not arrays of two JSON-number
    strings (or numbers) in range raise ``msgspec.ValidationError`` (full parser decides).
    """
    if d.s != route.symbol:
        return None
    b, a = d.b, d.a
    prefix = b'%b%d,"T":%d,"s":"%b","U":%d,"u":%d,"pu":%d,"b":' % (
        route.head,
        d.E,
        d.T,
        route.symbol_bytes,
        d.U,
        d.u,
        d.pu,
    )
    if len(raw) != len(prefix) + len(b) + len(a) + 7 or not raw.startswith(prefix):
        return None
    if bytes(b).translate(None, _PLAIN_LEVEL_BYTES) or bytes(a).translate(None, _PLAIN_LEVEL_BYTES):
        return None  # a sign, exponent or escape: "-1e-400" floats to -0.0, Decimal refuses it
    return _decode_levels(b), _decode_levels(a)


#: the only bytes of level arrays the fast path takes: plain decimal strings, as Binance sends
_PLAIN_LEVEL_BYTES = b'[]",.0123456789'


#: what the Binance wire calls the record fields the engine checks (dead-letter field names)
WIRE_FIELDS = {
    "symbol": "data.s",
    "event_time": "data.E",
    "trade_time": "data.T",
    "open_time": "data.k.t",
    "agg_trade_id": "data.a",
    "final_update_id": "data.u",
    "trade_id": "data.t",  # raw trades (``@trade``)
    "last_update_id": "data.u",  # partial depth snapshots (``@depth20@100ms``)
}
_STREAM_HEAD = b'{"stream":"'
#: depth streams whose frame head is kept (frames naming others are checked all the same)
_ROUTES_MAX = 10_000
_fast_decode = FAST_DECODER.decode


class BinanceFastPath:
    """The engine's per-frame shortcut for Binance (see the module docstring for the rule).

    ``decode`` answers one of: None (take the full parser), a ``Record`` (kline, mark price:
    built by the full parser's converter from the already decoded struct), a trade
    ``(TradeRecord, symbol, stream, agg_trade_id, trade_time, event_time)`` (no record built)
    or a depth diff ``(DepthUpdateRecord, stream, event_time, first, final, prev, bids, asks)``
    with float levels. Only what the full parser accepts is vouched for.
    """

    wire_fields = WIRE_FIELDS

    def __init__(self) -> None:
        #: stream name -> its canonical frame head, prepared once per depth stream
        self._routes: dict[str, DepthRoute] = {}

    @staticmethod
    def routable(symbol: str) -> bool:
        """Whether frames about ``symbol`` (as the engine subscribed it) may route fast: the
        full parser rejects other spellings, or accepts them only after upper-casing."""
        return bool(_SYMBOL_RE.fullmatch(symbol)) and symbol == symbol.upper()

    def decode(self, raw: bytes, received_at: int) -> Any:
        """One frame -> None, a record, a trade tuple or a depth tuple (class docstring)."""
        try:
            msg = _fast_decode(raw)
        except DECODE_ERRORS:
            return None
        d = msg.data
        t = type(d)
        if t is BinanceAggTradeData:
            p = d.p
            q = d.q
            try:  # to_trade's checks, without building the TradeRecord
                ok = DEC_MIN <= p < DEC_MAX and DEC_MIN <= q < DEC_MAX and d.f <= d.l
            except InvalidOperation:  # NaN
                return None
            return (TradeRecord, d.s, msg.stream, d.a, d.T, d.E) if ok else None
        if t is FastDepth:
            if d.U > d.u:
                return None
            stream = msg.stream
            route = self._routes.get(stream)
            if route is None:
                route = self._route(stream)
            if route.partial:  # a snapshot: the full parser builds its record
                return None
            try:
                levels = depth_levels(raw, route, d)
            except DECODE_ERRORS:
                return None
            if levels is None:
                return None
            return DepthUpdateRecord, stream, d.E, d.U, d.u, d.pu, levels[0], levels[1]
        return _other(msg.stream, d, received_at)

    def _route(self, stream: str) -> DepthRoute:
        route = DepthRoute(stream, stream_symbol(stream))
        if len(self._routes) < _ROUTES_MAX:
            self._routes[stream] = route
        return route

    @staticmethod
    def stream_of(raw: bytes) -> str | None:
        """The stream a (possibly malformed) combined-stream frame names, for its statistics."""
        if raw[:11] != _STREAM_HEAD:
            return None
        end = raw.find(b'"', 11)
        return raw[11:end].decode(errors="replace") if end > 0 else None


def _other(stream: str, d: Any, received_at: int) -> Record | None:
    """kline, markPriceUpdate: the full parser's converter on the already decoded struct."""
    try:
        rec = CONVERTERS[type(d)](d, received_at)
    except Exception:  # noqa: BLE001 - MessageError or worse: the full parser says why
        return None
    return rec if rec.symbol == stream_symbol(stream) else None


__all__ = [
    "BinanceFastPath",
    "DECODE_ERRORS",
    "DEC_MAX",
    "DEC_MIN",
    "DEC_ZERO",
    "FAST_DECODER",
    "LEVELS_DECODER",
    "DepthRoute",
    "FastDepth",
    "FastFrame",
    "depth_levels",
]
