"""Bybit's ingest fast path: order-book deltas decoded straight to float levels.

The ingest engine asks the adapter for a fast path (``BybitLinearAdapter.fast_path``) and calls
:meth:`BybitFastPath.decode` on every frame before the full parser (the protocol is described
in ``petrosa_pipelines/ingest/hotpath.py``); the depth rebuild from the landing zone does the
same (``landing/store.py``). The full parser (``BybitLinearAdapter.parse_frame``) decodes every
level of a delta into ``Decimal``, checks it, and the book then turns each back into a float:
most of the cost of a Bybit depth day. This module decodes a delta once into what the engine
needs, under the rule of every fast path:

    **it accepts a frame only if the full parser would accept it, with the same values**.

Anything else returns None and the full parser decides (records, or the ``MessageError`` that
lands in the dead-letter store with its own reason and field). What is vouched for:

* ``orderbook`` **deltas** in Bybit's linear serialisation (``topic,type,ts,data{s,b,a,u,seq},
  cts``, the key order of every recorded linear frame, live and in the history download). The
  envelope decodes strictly with the full parser's own types (``Ms``, ``Id``, the ``type``
  literal), the two level arrays as ``Raw``. The frame must then be byte for byte the
  canonical serialisation of what was decoded (:meth:`BybitFastPath.decode`): that leaves no
  room for a duplicated key (a strict decoder validates a duplicate's first value, ``Raw``
  skips it), an extra key, whitespace or an escape outside the levels, or ids and times
  spelled other than as JSON integers. The levels must hold nothing but digits, dots, quotes,
  commas and brackets (:data:`LEVEL_BYTES`): no sign, exponent, escape or letter, so every
  number is a non-negative plain decimal (a lax float would turn ``"-1e-400"`` into ``-0.0``,
  which passes ``>= 0`` where ``Decimal`` does not). They are then decoded with
  ``strict=False`` into floats constrained to the full parser's ranges (price in (1e-12, 1e18),
  strictly above its ``>= 1e-12`` so a float rounded up to the bound cannot pass; quantity in
  [0, 1e18)). msgspec's lax float takes only JSON numbers and strings in JSON-number form,
  which the full parser's ``Decimal`` takes too, and rounds them correctly, so each level is
  ``float(Decimal)`` of the full parser's. The topic must name a symbol after its last dot
  (``orderbook.<depth>.<symbol>``), ``data.s`` must be that symbol and ``u >= 1``
  (``schemas.to_book``). The tuple carries what ``to_book`` puts in the
  ``DepthUpdateRecord``: event time ``ts``, ``first = final = u``, ``prev = u - 1``.
* not vouched for: ``snapshot`` frames (they replace the book; the full parser builds their
  record), frames in another key order (spot's ``topic,ts,type,...``), deltas without ``seq``
  or ``cts``, and every other topic. A ``publicTrade`` frame often carries several fills,
  which the protocol's one-trade tuple cannot express, and for a one-fill frame the full
  parser's decode is most of its ~3.5 us: too little left to save to be worth a second decoder.

The adapter's ``book_seq`` (a delta's ``seq`` by symbol, set by the full parser) is kept up to
date here too, so the adapter ends in the same state whichever path a delta took.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from petrosa_pipelines.exchanges.base import DepthUpdateRecord
from petrosa_pipelines.exchanges.bybit.schemas import Id, Ms

#: the full parser's level bounds as floats (``schemas._MIN``/``_MAX``, see the docstring)
Price = Annotated[float, msgspec.Meta(gt=1e-12, lt=1e18)]
Quantity = Annotated[float, msgspec.Meta(ge=0.0, lt=1e18)]
FloatLevels = tuple[tuple[Price, Quantity], ...]


class FastBook(msgspec.Struct, frozen=True, gc=False):
    """The ``data`` of an ``orderbook`` frame with the level arrays undecoded."""

    s: str  # symbol
    b: msgspec.Raw  # bids, decoded by LEVELS_DECODER after the canonical-form check
    a: msgspec.Raw  # asks
    u: Id  # update id
    seq: Id | None = None  # cross sequence (a delta without it takes the full parser)


class FastBookMsg(msgspec.Struct, frozen=True, gc=False):
    """An ``orderbook`` frame as the fast path reads it (types as ``schemas.BybitBookMsg``)."""

    topic: str
    type: Literal["snapshot", "delta"]
    ts: Ms  # send time (deltas): the record's event time
    data: FastBook
    cts: Ms | None = None  # matching-engine time (a delta without it takes the full parser)


FAST_DECODER = msgspec.json.Decoder(FastBookMsg)
LEVELS_DECODER = msgspec.json.Decoder(FloatLevels, strict=False)
#: every byte a level array may hold to be vouched for (see the module docstring)
LEVEL_BYTES = b'[]",.0123456789'

#: the errors that send a frame to the full parser (which turns every one into a dead letter
#: with its reason): invalid UTF-8 inside a string and deep nesting included
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeError, RecursionError)

#: what the Bybit wire calls the record fields the engine checks (dead-letter field names);
#: the symbol of every record is the topic's, the event time of every frame its ``ts``
WIRE_FIELDS = {
    "symbol": "topic",
    "event_time": "ts",
    "final_update_id": "data.u",
    "last_update_id": "data.u",  # in-stream snapshots
    "agg_trade_id": "data[].seq",  # seq * 1000 + the fill's index (schemas.to_trades)
    "trade_time": "data[].T",
    "open_time": "data[].start",
}

_BOOK_HEAD = b'{"topic":"orderbook.'
#: a delta as Bybit's linear stream serialises it: (head, ts, symbol, b, a, u, seq, cts)
_CANONICAL = b'%b%d,"data":{"s":"%b","b":%b,"a":%b,"u":%d,"seq":%d},"cts":%d}'
_TOPIC_KEY = b'"topic":"'
_TOPIC_MAX = 96  # as ``BybitLinearAdapter.frame_stream``
#: topics whose canonical head is kept (frames naming others are checked all the same)
_ROUTES_MAX = 10_000
_decode = FAST_DECODER.decode
_decode_levels = LEVELS_DECODER.decode


class BookRoute:
    """One ``orderbook`` topic, prepared once: its symbol and canonical head (None when the
    full parser rejects the topic: no symbol after its last dot). A topic JSON would escape
    never matches its canonical head, so such frames take the full parser."""

    __slots__ = ("topic", "symbol", "symbol_bytes", "head")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        symbol = topic.rpartition(".")[2]
        self.symbol = symbol
        self.symbol_bytes = symbol.encode()
        ok = topic.startswith("orderbook.") and bool(symbol)
        self.head = b'{"topic":"%b","type":"delta","ts":' % topic.encode() if ok else None


class BybitFastPath:
    """The engine's per-frame shortcut for Bybit (see the module docstring for the rule).

    ``decode`` answers None (take the full parser) or a delta ``(DepthUpdateRecord, topic,
    event_time, first, final, prev, bids, asks)`` with float levels.
    """

    wire_fields = WIRE_FIELDS

    def __init__(
        self, symbol_pattern: re.Pattern[str], book_seq: dict[str, int | None] | None = None
    ) -> None:
        """``symbol_pattern``: the adapter's; ``book_seq``: the adapter's ``seq`` by symbol,
        updated as its full parser does."""
        self._symbol_pattern = symbol_pattern
        self._book_seq = book_seq if book_seq is not None else {}
        #: topic -> its route, prepared once per topic
        self._routes: dict[str, BookRoute] = {}

    def routable(self, symbol: str) -> bool:
        """Whether frames about ``symbol`` may route fast: a Bybit linear symbol as the
        adapter subscribes it (the full parser takes the symbol from the topic unchanged)."""
        return bool(self._symbol_pattern.fullmatch(symbol))

    def decode(self, raw: bytes, received_at: int) -> Any:
        """One frame -> None or a depth tuple (class docstring)."""
        if type(raw) is not bytes or not raw.startswith(_BOOK_HEAD):
            return None
        try:
            m = _decode(raw)
        except DECODE_ERRORS:
            return None
        if m.type != "delta":
            return None  # a snapshot replaces the book: the full parser builds its record
        d = m.data
        u, seq, cts = d.u, d.seq, m.cts
        if u < 1 or seq is None or cts is None:
            return None
        topic = m.topic
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        head = route.head
        if head is None:
            return None
        b, a = d.b, d.a
        # the canonical form holds the topic's symbol as ``data.s`` (the full parser rejects
        # any other) and nothing but what was decoded
        if raw != _CANONICAL % (head, m.ts, route.symbol_bytes, b, a, u, seq, cts):
            return None
        bb, ab = bytes(b), bytes(a)
        if bb.translate(None, LEVEL_BYTES) or ab.translate(None, LEVEL_BYTES):
            return None  # a sign, exponent, escape, letter or space among the levels
        try:
            bids = _decode_levels(bb)
            asks = _decode_levels(ab)
        except DECODE_ERRORS:
            return None
        self._book_seq[route.symbol] = seq
        return DepthUpdateRecord, route.topic, m.ts, u, u, u - 1, bids, asks

    def _route(self, topic: str) -> BookRoute:
        route = BookRoute(topic)
        if len(self._routes) < _ROUTES_MAX:
            self._routes[topic] = route
        return route

    @staticmethod
    def stream_of(raw: bytes) -> str | None:
        """The topic a (possibly malformed) frame names, for its stream's statistics (as
        ``BybitLinearAdapter.frame_stream`` reads it); None for control frames."""
        i = raw.find(_TOPIC_KEY)
        if i < 0:
            return None
        j = i + len(_TOPIC_KEY)
        end = raw.find(b'"', j, j + _TOPIC_MAX)
        return raw[j:end].decode(errors="replace") if end > j else None


__all__ = [
    "DECODE_ERRORS",
    "FAST_DECODER",
    "LEVELS_DECODER",
    "LEVEL_BYTES",
    "WIRE_FIELDS",
    "BookRoute",
    "BybitFastPath",
    "FastBook",
    "FastBookMsg",
]
