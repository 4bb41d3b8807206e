"""Records as live messages: (subject, message id, JSON payload), pure functions.

The payload is the record's catalog row (``subjects.py`` documents each schema); the message
id is the row's natural key, sent as ``Nats-Msg-Id`` so JetStream drops a re-sent copy within
the stream's duplicate window (https://docs.nats.io/using-nats/developer/develop_jetstream/
model_deep_dive#message-deduplication): a publish retried after a lost ack is not doubled.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    FundingRecord,
    MarkPriceRecord,
    RawTradeRecord,
    TradeRecord,
)
from petrosa_pipelines.exchanges.frames import mark_prices_to_funding
from petrosa_pipelines.live.subjects import DEFAULT_PREFIX, data_subject


class Message(NamedTuple):
    subject: str
    msg_id: str
    payload: bytes


def _num(d: Decimal | float | None) -> float | None:
    return None if d is None else float(d)


def trade_row(venue: str, r: TradeRecord) -> dict[str, Any]:
    return {
        "venue": venue,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "agg_trade_id": r.agg_trade_id,
        "price": float(r.price),
        "quantity": float(r.quantity),
        "first_trade_id": r.first_trade_id,
        "last_trade_id": r.last_trade_id,
        "trade_time": r.trade_time,
        "is_buyer_maker": r.is_buyer_maker,
        "source": str(r.source),
        "received_at": r.received_at,
        "trade_id": r.trade_id if r.trade_id is not None else str(r.agg_trade_id),
    }


def raw_trade_row(venue: str, r: RawTradeRecord) -> dict[str, Any]:
    return {
        "venue": venue,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "trade_id": r.trade_id,
        "price": float(r.price),
        "quantity": float(r.quantity),
        "trade_time": r.trade_time,
        "is_buyer_maker": r.is_buyer_maker,
        "trade_type": str(r.trade_type),
        "source": str(r.source),
        "received_at": r.received_at,
    }


def candle_row(venue: str, r: CandleRecord) -> dict[str, Any]:
    return {
        "venue": venue,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "interval": r.interval,
        "open_time": r.open_time,
        "close_time": r.close_time,
        "open": float(r.open),
        "high": float(r.high),
        "low": float(r.low),
        "close": float(r.close),
        "volume": float(r.volume),
        "quote_volume": float(r.quote_volume),
        "trade_count": r.trade_count,
        "taker_buy_volume": float(r.taker_buy_volume),
        "taker_buy_quote_volume": float(r.taker_buy_quote_volume),
        "source": str(r.source),
        "received_at": r.received_at,
    }


def funding_row(venue: str, r: FundingRecord) -> dict[str, Any]:
    return {
        "venue": venue,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "funding_time": r.funding_time,
        "funding_rate": float(r.funding_rate),
        "mark_price": _num(r.mark_price),
        "source": str(r.source),
        "received_at": r.received_at,
    }


def mark_price_row(venue: str, r: MarkPriceRecord) -> dict[str, Any]:
    return {
        "venue": venue,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "event_time": r.event_time,
        "mark_price": float(r.mark_price),
        "index_price": _num(r.index_price),
        "estimated_settle_price": _num(r.estimated_settle_price),
        "funding_rate": _num(r.funding_rate),
        "next_funding_time": r.next_funding_time,
        "received_at": r.received_at,
    }


def depth_row(venue: str, exchange: str, sample: Any) -> dict[str, Any]:
    """A ``landing.book.BookSample`` (float levels as the book holds them)."""
    return {
        "venue": venue,
        "exchange": exchange,
        "symbol": sample.symbol,
        "snapshot_time": sample.snapshot_time,
        "last_update_id": sample.last_update_id,
        "bids": [[float(p), float(q)] for p, q in sample.bid_floats],
        "asks": [[float(p), float(q)] for p, q in sample.ask_floats],
        "source": "ws",
        "received_at": sample.received_at,
    }


@functools.lru_cache(maxsize=65_536)
def _subject(prefix: str, venue: str, dataset: str, symbol: str) -> str:
    """``data_subject``, checked once per name (a refused one raises again each time)."""
    return data_subject(venue, dataset, symbol, prefix)


def _msg(prefix: str, venue: str, dataset: str, symbol: str, key: Any, row: dict) -> Message:
    subject = _subject(prefix, venue, dataset, symbol)
    return Message(subject, f"{venue}:{symbol}:{dataset}:{key}", orjson.dumps(row))


def record_messages(
    venue: str, rec: Any, prefix: str = DEFAULT_PREFIX, exchange: str | None = None
) -> list[Message]:
    """The messages of one record (none for types that are not published: depth diffs, open
    candles, book tickers); ``exchange`` names the venue's storage name for book samples."""
    t = type(rec)
    if t is TradeRecord:
        key = rec.trade_id if rec.trade_id is not None else rec.agg_trade_id
        return [_msg(prefix, venue, "trades", rec.symbol, key, trade_row(venue, rec))]
    if t is RawTradeRecord:
        row = raw_trade_row(venue, rec)
        return [_msg(prefix, venue, "raw_trades", rec.symbol, rec.trade_id, row)]
    if t is CandleRecord:
        if not rec.is_closed:
            return []
        key = f"{rec.interval}:{rec.open_time}"
        return [_msg(prefix, venue, "candles", rec.symbol, key, candle_row(venue, rec))]
    if t is FundingRecord:
        row = funding_row(venue, rec)
        return [_msg(prefix, venue, "funding", rec.symbol, rec.funding_time, row)]
    if t is MarkPriceRecord:
        row = mark_price_row(venue, rec)
        return [_msg(prefix, venue, "mark_price", rec.symbol, rec.event_time, row)]
    if hasattr(rec, "bid_floats") and hasattr(rec, "snapshot_time"):  # a BookSample
        row = depth_row(venue, exchange or "", rec)
        return [_msg(prefix, venue, "depth", rec.symbol, rec.snapshot_time, row)]
    return []


class FundingTracker:
    """Settled funding events from the live mark prices, one per settlement.

    The rule is ``exchanges.frames.mark_prices_to_funding`` (the one the funding asset uses),
    applied to the last pre-settlement sample and each new one.
    """

    def __init__(self) -> None:
        self._last_pre: dict[tuple[str, str], MarkPriceRecord] = {}

    def on_mark_price(self, rec: MarkPriceRecord) -> list[FundingRecord]:
        key = (rec.exchange, rec.symbol)
        prev = self._last_pre.get(key)
        out = mark_prices_to_funding([prev, rec]) if prev is not None else []
        t = rec.next_funding_time
        if t is not None and rec.funding_rate is not None and rec.event_time < t:
            self._last_pre[key] = rec
        elif out:
            self._last_pre.pop(key, None)
        return out
