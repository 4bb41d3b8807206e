"""The latest state per instrument, kept in Redis for dashboards: layout, coalescing, reading.

One Redis hash per instrument and field, ``<prefix>:<venue>:<SYMBOL>:<field>`` (prefix
``petrosa:latest``): ``trade``, ``book`` (best bid/ask with sizes), ``candle`` (the open 1m
candle), ``funding`` (live rate and mark price, and the last settled rate) and ``health``.
Every hash has ``as_of`` (the value's own time, ms UTC: trade time, book sample time, venue
event time, health computation time) and ``written_at`` (when we wrote it), and expires
``PETROSA_LIVE_REDIS_TTL_S`` after its last write (health: ``..._HEALTH_TTL_S``), so a value
that stops being refreshed disappears instead of looking current.

``LatestState`` is pure: the publisher's worker feeds it records and takes the changed keys at
most once per interval (latest value wins), so a key is written at most once per interval
whatever the message rate. Values are text: decimals exactly as the venue sent them, ``""``
for none; ``read_latest`` gives numbers back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from petrosa_pipelines.exchanges.base import (
    BookTickerRecord,
    CandleRecord,
    FundingRecord,
    MarkPriceRecord,
    RawTradeRecord,
    TradeRecord,
)

FIELDS = ("trade", "book", "candle", "funding", "health")
#: the fields kept with the health TTL; the others with the market TTL
LONG_LIVED = frozenset({"health"})
CANDLE_MS = 60_000
_INTS = frozenset({"as_of", "written_at", "trade_time", "open_time", "close_time", "trade_count",
                   "last_update_id", "next_funding_time", "settled_funding_time"})  # fmt: skip
_BOOLS = frozenset({"is_buyer_maker", "closed"})
_TEXT = frozenset({"trade_id", "interval", "source", "status", "partition", "trade_type",
                   "failed_checks", "scores"})  # fmt: skip


def key(prefix: str, venue: str, symbol: str, fld: str) -> str:
    return f"{prefix}:{venue}:{symbol}:{fld}"


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, Decimal):
        return str(v)
    return repr(v) if isinstance(v, float) else str(v)


def _value(name: str, text: str) -> Any:
    if text == "":
        return None
    if name in _INTS:
        return int(text)
    if name in _BOOLS:
        return text == "1"
    if name in _TEXT:
        return text
    try:
        return float(text)
    except ValueError:
        return text


@dataclass
class _Candle:
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    as_of: int = 0


@dataclass
class LatestState:
    """Changed hashes waiting to be written (see the module docstring).

    Values are kept as they come and turned into text only when taken (once per key per
    interval, not once per message: the worker's cost per trade stays a dict update)."""

    prefix: str = "petrosa:latest"
    #: key -> field values (raw), or the open candle built from trades (rendered when taken)
    dirty: dict[str, Any] = field(default_factory=dict)
    #: per (venue, symbol): the 1m candle built from trades, when no kline stream feeds it
    _candles: dict[tuple[str, str], _Candle] = field(default_factory=dict)
    _klines: set[tuple[str, str]] = field(default_factory=set)
    _keys: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def _key(self, venue: str, symbol: str, fld: str) -> str:
        k = self._keys.get((venue, symbol, fld))
        if k is None:
            k = self._keys[(venue, symbol, fld)] = key(self.prefix, venue, symbol, fld)
        return k

    def _set(self, venue: str, symbol: str, fld: str, as_of: int | None, **values: Any) -> None:
        values["as_of"] = as_of
        k = self._key(venue, symbol, fld)
        current = self.dirty.get(k)
        if type(current) is dict:
            current.update(values)
        else:
            self.dirty[k] = values

    def on_record(self, venue: str, rec: Any) -> None:
        t = type(rec)
        if t is TradeRecord or (t is RawTradeRecord and rec.trade_type == "MARKET"):
            self._trade(venue, rec)
        elif t is CandleRecord:
            self._klines.add((venue, rec.symbol))
            self._set(venue, rec.symbol, "candle", rec.event_time or rec.received_at,
                      interval=rec.interval, open_time=rec.open_time, open=rec.open,
                      high=rec.high, low=rec.low, close=rec.close, volume=rec.volume,
                      trade_count=rec.trade_count, closed=rec.is_closed,
                      source="kline")  # fmt: skip
        elif t is MarkPriceRecord:
            self._set(venue, rec.symbol, "funding", rec.event_time, funding_rate=rec.funding_rate,
                      mark_price=rec.mark_price, index_price=rec.index_price,
                      next_funding_time=rec.next_funding_time)  # fmt: skip
        elif t is FundingRecord:
            mapping = {"settled_funding_rate": rec.funding_rate,
                       "settled_funding_time": rec.funding_time}  # fmt: skip
            k = self._key(venue, rec.symbol, "funding")
            current = self.dirty.get(k)
            if type(current) is dict:
                current.update(mapping)
            else:
                self.dirty[k] = mapping
        elif t is BookTickerRecord:
            as_of = rec.event_time or rec.transaction_time or rec.received_at
            self._set(venue, rec.symbol, "book", as_of, bid_price=rec.bid_price,
                      bid_quantity=rec.bid_quantity, ask_price=rec.ask_price,
                      ask_quantity=rec.ask_quantity, last_update_id=rec.update_id)  # fmt: skip

    def _trade(self, venue: str, rec: Any) -> None:
        sym = rec.symbol
        trade_id = getattr(rec, "trade_id", None)
        if trade_id is None:
            trade_id = rec.agg_trade_id
        self._set(venue, sym, "trade", rec.trade_time, price=rec.price, quantity=rec.quantity,
                  trade_time=rec.trade_time, is_buyer_maker=rec.is_buyer_maker,
                  trade_id=trade_id)  # fmt: skip
        if (venue, sym) in self._klines:
            return
        minute = rec.trade_time - rec.trade_time % CANDLE_MS
        c = self._candles.get((venue, sym))
        if c is None or minute > c.open_time:
            p = rec.price
            c = self._candles[(venue, sym)] = _Candle(minute, p, p, p, p, Decimal(0), 0)
        elif minute < c.open_time:
            return  # a late trade of a minute already past: the open candle is this minute's
        c.high, c.low, c.close = max(c.high, rec.price), min(c.low, rec.price), rec.price
        c.volume += rec.quantity
        c.trade_count += 1
        c.as_of = rec.trade_time
        self.dirty[self._key(venue, sym, "candle")] = c

    def on_sample(self, venue: str, sample: Any) -> None:
        """A book sample (``landing.book.BookSample``): its level 0 is the best bid/ask."""
        bid = sample.bid_floats[0] if sample.bid_floats else (None, None)
        ask = sample.ask_floats[0] if sample.ask_floats else (None, None)
        self._set(venue, sample.symbol, "book", sample.snapshot_time, bid_price=bid[0],
                  bid_quantity=bid[1], ask_price=ask[0], ask_quantity=ask[1],
                  last_update_id=sample.last_update_id)  # fmt: skip

    def on_health(self, venue: str, symbol: str, as_of: int, **values: Any) -> None:
        self._set(venue, symbol, "health", as_of, **values)

    def take(self) -> dict[str, dict[str, str]]:
        """The changed hashes as text, handed over (the state starts collecting anew)."""
        out, self.dirty = self.dirty, {}
        return {k: _render(v) for k, v in out.items()}

    def restore(self, batch: dict[str, dict[str, str]]) -> None:
        """A batch that could not be written comes back under what changed since (newer wins;
        a candle replaces a candle whole)."""
        for k, mapping in batch.items():
            newer = self.dirty.get(k)
            if newer is None:
                self.dirty[k] = mapping
            elif type(newer) is dict:
                self.dirty[k] = {**mapping, **newer}


def _render(v: Any) -> dict[str, str]:
    if type(v) is _Candle:
        v = {"interval": "1m", "open_time": v.open_time, "open": v.open, "high": v.high,
             "low": v.low, "close": v.close, "volume": v.volume, "trade_count": v.trade_count,
             "closed": False, "source": "trades", "as_of": v.as_of}  # fmt: skip
    return {name: _text(x) for name, x in v.items()}


def ttl_ms(k: str, ttl_s: int, health_ttl_s: int) -> int:
    return (health_ttl_s if k.rsplit(":", 1)[-1] in LONG_LIVED else ttl_s) * 1000


def write_commands(pipe: Any, batch: dict[str, dict[str, str]], now_ms: int, ttl_s: int,
                   health_ttl_s: int) -> None:  # fmt: skip
    """HSET + PEXPIRE of each hash on a redis pipeline (sync or asyncio client)."""
    for k, mapping in batch.items():
        pipe.hset(k, mapping={**mapping, "written_at": str(now_ms)})
        pipe.pexpire(k, ttl_ms(k, ttl_s, health_ttl_s))


def read_latest(
    client: Any, prefix: str, venue: str, symbol: str, fields: tuple[str, ...] = FIELDS,
    now_ms: int | None = None,
) -> tuple[dict[str, dict[str, Any] | None], dict[str, float | None], int]:  # fmt: skip
    """(values per field or None, age in seconds per field or None, read time ms) from a sync
    redis client; a field that expired or was never written is None in both."""
    pipe = client.pipeline(transaction=False)
    for f in fields:
        pipe.hgetall(key(prefix, venue, symbol, f))
    raw = pipe.execute()
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    values: dict[str, dict[str, Any] | None] = {}
    ages: dict[str, float | None] = {}
    for f, h in zip(fields, raw, strict=True):
        if not h:
            values[f], ages[f] = None, None
            continue
        decoded = {}
        for k, v in h.items():
            name = k.decode() if isinstance(k, bytes) else k
            decoded[name] = _value(name, v.decode() if isinstance(v, bytes) else v)
        values[f] = decoded
        as_of = decoded.get("as_of")
        ages[f] = None if as_of is None else max(0.0, (now - as_of) / 1000)
    return values, ages, now
