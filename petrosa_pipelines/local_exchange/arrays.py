"""The integer array forms of one symbol's trades, candles and book (no wire format).

Every venue formats these: a candle is the exact aggregation of the trades it spans, and a book
step is the resting quantity per tick. Prices are in units of ``10**-price_decimals``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np


class DayTrades(NamedTuple):
    """One symbol-day of aggTrades as integer arrays (the canonical form)."""

    agg_id: np.ndarray
    price: np.ndarray  # int64, units of 10**-price_decimals
    qty: np.ndarray  # int64, units of 10**-qty_decimals
    first_id: np.ndarray
    last_id: np.ndarray
    time: np.ndarray  # int64 ms
    maker: np.ndarray  # bool: is_buyer_maker

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.agg_id)

    def slice(self, lo: int, hi: int) -> DayTrades:
        return DayTrades(*(a[lo:hi] for a in self))

    def rows(self) -> Iterator[tuple[int, int, int, int, int, int, bool]]:
        """(agg_id, price, qty, first_id, last_id, time, maker) per trade, as Python scalars."""
        return zip(*(a.tolist() for a in self), strict=True)


class KlineArrays(NamedTuple):
    """Candles as integer arrays; the aggregation of trades, exact."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote: np.ndarray  # units of 10**-(price_decimals + qty_decimals)
    count: np.ndarray
    taker_volume: np.ndarray
    taker_quote: np.ndarray
    first_id: np.ndarray  # first underlying trade id, -1 when empty
    last_id: np.ndarray


def concat_klines(parts: list[KlineArrays]) -> KlineArrays:
    if not parts:
        return KlineArrays(*(np.empty(0, dtype=np.int64) for _ in KlineArrays._fields))
    return KlineArrays(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


class BookState(NamedTuple):
    """The book on one 100 ms step: bid/ask prices in ticks (best first) and quantities."""

    step: int
    bid_ticks: np.ndarray
    bid_qty: np.ndarray
    ask_ticks: np.ndarray
    ask_qty: np.ndarray


def aggregate_candles(
    t: DayTrades, t0: int, iv_ms: int, n_buckets: int, prev_close: Callable[[], int]
) -> KlineArrays:
    """Bucket trades into ``n_buckets`` candles of ``iv_ms`` from ``t0``; an empty candle is flat
    at the previous close (``prev_close()``, asked only when the first candles are empty)."""
    bucket = (t.time - t0) // iv_ms
    counts = np.bincount(bucket, minlength=n_buckets)[:n_buckets]
    nonempty = counts > 0
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nonempty]
    ends = (starts + counts[nonempty]) - 1
    full = np.zeros(n_buckets, dtype=np.int64)

    def fill(values: np.ndarray, default: int = 0) -> np.ndarray:
        out = np.full(n_buckets, default, dtype=np.int64)
        out[nonempty] = values
        return out

    taker = ~t.maker
    quote = t.price * t.qty
    if len(starts):
        close_ne = t.price[ends]
        opens, highs = t.price[starts], np.maximum.reduceat(t.price, starts)
        lows = np.minimum.reduceat(t.price, starts)
        vol, q = np.add.reduceat(t.qty, starts), np.add.reduceat(quote, starts)
        cnt = np.add.reduceat(t.last_id - t.first_id + 1, starts)
        tv = np.add.reduceat(np.where(taker, t.qty, 0), starts)
        tq = np.add.reduceat(np.where(taker, quote, 0), starts)
        fid, lid = t.first_id[starts], t.last_id[ends]
    else:
        close_ne = opens = highs = lows = vol = q = cnt = tv = tq = fid = lid = full[:0]
    # empty candles are flat at the previous close (Binance does the same)
    close = fill(close_ne)
    idx = np.where(nonempty, np.arange(n_buckets), -1)
    idx = np.maximum.accumulate(idx)
    if (idx < 0).any():
        close = np.where(idx >= 0, close[np.maximum(idx, 0)], prev_close())
    else:
        close = close[idx]
    flat = np.where(nonempty, 0, close)
    return KlineArrays(
        t0 + np.arange(n_buckets, dtype=np.int64) * iv_ms,
        fill(opens) + flat,
        fill(highs) + flat,
        fill(lows) + flat,
        close,
        fill(vol),
        fill(q),
        fill(cnt),
        fill(tv),
        fill(tq),
        fill(fid, -1),
        fill(lid, -1),
    )


#: up to this many trades :func:`one_candle` adds them up in Python (numpy's per-call cost
#: dominates a live candle's few trades; past it the arrays are cheaper)
SMALL_CANDLE = 64
_I64 = 1 << 64
_I64_MIN = 1 << 63


def _wrap(value: int) -> int:
    """``value`` as int64 arithmetic gives it (modulo 2**64, signed): numpy's sums and
    products wrap, and modular arithmetic does not depend on the order of the additions."""
    return (value + _I64_MIN) % _I64 - _I64_MIN


def one_candle(t: DayTrades, open_time: int) -> KlineArrays:
    """The single candle opening at ``open_time`` made of all of ``t`` (non-empty)."""
    if len(t) <= SMALL_CANDLE:
        return _one_small_candle(t, open_time)
    quote = t.price * t.qty
    taker = ~t.maker
    one = [
        open_time,
        t.price[0],
        t.price.max(),
        t.price.min(),
        t.price[-1],
        t.qty.sum(),
        quote.sum(),
        (t.last_id - t.first_id + 1).sum(),
        t.qty[taker].sum(),
        quote[taker].sum(),
        t.first_id[0],
        t.last_id[-1],
    ]
    return candle_columns(one)


def _one_small_candle(t: DayTrades, open_time: int) -> KlineArrays:
    """:func:`one_candle` of a few trades in Python ints, wrapped as int64 sums wrap."""
    return candle_columns(
        small_candle_values(
            t.price.tolist(),
            t.qty.tolist(),
            t.first_id.tolist(),
            t.last_id.tolist(),
            t.maker.tolist(),
            open_time,
        )
    )


def small_candle_values(
    price: list[int],
    qty: list[int],
    first: list[int],
    last: list[int],
    maker: list[bool],
    open_time: int,
) -> list[int]:
    """The 12 :class:`KlineArrays` values of the candle of a few trades (non-empty) given as
    Python lists, wrapped as int64 sums wrap: the live streams' candles without any array."""
    quote = [p * q for p, q in zip(price, qty, strict=True)]  # exact; wrapped once summed
    taker_qty = [q for q, m in zip(qty, maker, strict=True) if not m]
    taker_quote = [v for v, m in zip(quote, maker, strict=True) if not m]
    return [
        open_time,
        price[0],
        max(price),
        min(price),
        price[-1],
        _wrap(sum(qty)),
        _wrap(sum(quote)),
        _wrap(sum(last) - sum(first) + len(first)),
        _wrap(sum(taker_qty)),
        _wrap(sum(taker_quote)),
        first[0],
        last[-1],
    ]


def flat_candle_values(open_time: int, close: int) -> tuple[int, ...]:
    """The 12 :class:`KlineArrays` values of a candle without trades: flat at ``close`` (the
    previous close), no volume, ids -1 (what :func:`aggregate_candles` gives an empty bucket)."""
    return (open_time, close, close, close, close, 0, 0, 0, 0, 0, -1, -1)


def candle_columns(values: Sequence[int]) -> KlineArrays:
    """One candle's values as the one-element int64 columns of a :class:`KlineArrays` (rows
    of one array: a numpy call, not one per column)."""
    return KlineArrays(*np.array(values, dtype=np.int64)[:, None])
