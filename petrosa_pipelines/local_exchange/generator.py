"""The deterministic market behind the local exchange: venue-neutral, no wire format.

Every number the local exchange serves (trades, klines, funding, books, mark prices) is a pure
function of ``(seed, symbol, day)`` computed in one vectorised pass over one UTC day, so REST,
websocket and archive answers always agree with each other, on every venue, and a test can
recompute what any endpoint should have said. Prices and quantities are integers internally
(units of ``10**-price_decimals`` and ``10**-qty_decimals``); each venue's wire module formats them
into decimal strings from those integers, so there is never float noise on any wire.

Symbols move together, as crypto majors do: each symbol's intraday log price is a one-factor
model, ``loading * market + sqrt(1 - loading**2) * own`` (two independent Brownian motions per
day; the market one is shared by every symbol of the seed), so the 1-minute return correlation
of two symbols is about ``loading_a * loading_b``: 0.86 for BTC/ETH, as measured on the real
Binance USD-M 1m klines of three days in petrosa_pipelines_tests/fixtures/analytics (0.87, 0.89
and 0.86 on 2022-01-01, 2022-05-01 and 2023-11-14). This is the single-index model of Sharpe
(1963), "A Simplified Model for Portfolio Analysis", https://doi.org/10.1287/mnsc.9.2.277.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left, bisect_right
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from petrosa_pipelines.local_exchange.arrays import (
    SMALL_CANDLE,
    BookState,
    DayTrades,
    KlineArrays,
    aggregate_candles,
    candle_columns,
    concat_klines,
    flat_candle_values,
    one_candle,
    small_candle_values,
)
from petrosa_pipelines.local_exchange.config import MarketConfig, SymbolSpec, symbol_spec
from petrosa_pipelines.local_exchange.units import (
    DAY_MS,
    EPOCH,
    FACTOR_GRID_MS,
    FUNDING_INTERVAL_MS,
    INTERVALS_MS,
    LEVEL_PERIOD_MS,
    MINUTE_MS,
    LevelFormats,
    day_start_ms,
    mix,
    mix_int,
    stable_hash,
    to_date,
)

_M64 = 0xFFFFFFFFFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15
_TOP_EPOCH = 1 << 62


#: book step pairs whose changes one array pass finds (bounds memory: pairs x ticks x 8 B)
_PAIRS_PER_PASS = 512


def _row_changes(
    grid: np.ndarray, old: np.ndarray, new: np.ndarray, lo: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pair of grid rows ``(old[i], new[i])``: the ticks (``lo`` + column, ascending) whose
    quantity differs and their quantity in the new row, from one comparison of all pairs (the
    same arrays as ``flatnonzero`` row by row, without its per-row cost)."""
    after = grid[new]
    r, c = np.nonzero(grid[old] != after)
    ticks, qtys = c + lo, after[r, c]
    # the pieces ``np.split`` gives, by plain slicing (its per-piece cost was most of this)
    ends = np.cumsum(np.bincount(r, minlength=len(new))).tolist()
    return [(ticks[a:b], qtys[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]


class _DayView(NamedTuple):
    """One symbol-day of trades with its times and prices as memoryviews: ``bisect`` on them
    finds what ``np.searchsorted`` finds, as Python ints and without numpy's per-call cost (the
    live streams look a price up several times per message)."""

    trades: DayTrades
    time: memoryview
    price: memoryview
    qty: memoryview
    first_id: memoryview
    last_id: memoryview
    maker: memoryview


class BookChange(NamedTuple):
    """The levels that changed from one book step to another (ticks; quantity 0 = removed)."""

    old_step: int
    new_step: int
    bid_ticks: np.ndarray
    bid_qty: np.ndarray
    ask_ticks: np.ndarray
    ask_qty: np.ndarray


class MarketGenerator:
    """Deterministic trades, klines, funding, books and mark prices for the configured symbols."""

    def __init__(self, config: MarketConfig | None = None) -> None:
        self.config = config or MarketConfig()
        self.start = dt.date.fromisoformat(self.config.start_date)
        self.start_ms = day_start_ms(self.start)
        self.specs = {s: symbol_spec(s, self.config.seed) for s in self.config.symbols}
        n = self.config.trades_per_day
        self.underlying_per_day = n + int(n * self.config.extra_trades_ratio)
        # bounded per-instance caches (a few days of trades; many small kline blocks)
        self._trades_cached = lru_cache(maxsize=16)(self._make_day)
        self._view_cached = lru_cache(maxsize=16)(self._make_view)
        self._kline_block_cached = lru_cache(maxsize=512)(self._make_kline_block)
        self._factor_cached = lru_cache(maxsize=8)(self._make_factor)
        self.book_step_ms = self.config.book_step_ms
        self._level_period = max(LEVEL_PERIOD_MS // self.book_step_ms, 1)
        # per-instance hashes the hot paths (1 s mark prices, 100 ms books) would recompute
        self._funding_cached = lru_cache(maxsize=4096)(self._funding_rate_e8)
        self._hash_cached = lru_cache(maxsize=256)(stable_hash)
        # a price before the market's first trade is its day's anchor (tickers look 24 h back)
        self._anchor_cached = lru_cache(maxsize=64)(self.anchor_price)
        self._formats = LevelFormats()
        #: (symbol, open_time, interval ms) -> (trades up to, values) of the live candles
        self._live_candles: dict[tuple[str, int, int], tuple[int, tuple[int, ...]]] = {}

    # -- identity -------------------------------------------------------------------------

    def spec(self, symbol: str) -> SymbolSpec:
        try:
            return self.specs[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    def agg_id_base(self, symbol: str) -> int:
        """First aggTrade id of the start day (per symbol, so ids never mix across symbols)."""
        return 100_000_000 + (stable_hash(self.config.seed, symbol, "agg") % 900) * 1_000_000

    def trade_id_base(self, symbol: str) -> int:
        return 1_000_000_000 + (stable_hash(self.config.seed, symbol, "trd") % 900) * 1_000_000

    def _day_index(self, day: dt.date) -> int:
        return (day - self.start).days

    # -- prices -----------------------------------------------------------------------------

    def anchor_price(self, symbol: str, day: dt.date | str | int) -> int:
        """Price (integer units) at 00:00 UTC of ``day``: a pure function of (seed, symbol, day).

        Slow cycles give trends; a per-day hash term gives day-to-day noise. Each day's path is a
        Brownian bridge between its two anchors, so prices are continuous across midnight.
        """
        spec = self.spec(symbol)
        ordinal = (to_date(day) - EPOCH).days
        h = stable_hash(self.config.seed, symbol, "cycles")
        phases = [(h >> (8 * i) & 0xFF) / 256 * 2 * math.pi for i in range(3)]
        z = np.random.default_rng([self.config.seed, h & 0xFFFFFFFF, ordinal, 1]).standard_normal()
        log_p = (
            math.log(spec.start_price)
            + 0.25 * math.sin(2 * math.pi * ordinal / 180 + phases[0])
            + 0.08 * math.sin(2 * math.pi * ordinal / 23 + phases[1])
            + 0.03 * math.sin(2 * math.pi * ordinal / 7 + phases[2])
            + 0.015 * float(z)
        )
        units = round(math.exp(log_p) * 10**spec.price_decimals / spec.tick_units)
        return max(units, 1) * spec.tick_units

    def _make_factor(self, day: dt.date) -> np.ndarray:
        """The shared market factor of ``day``: a standard Brownian motion on [0, 1] day,
        sampled every ``FACTOR_GRID_MS`` (one seed, one path for every symbol)."""
        n = DAY_MS // FACTOR_GRID_MS
        rng = np.random.default_rng([self.config.seed, 0x6D6B74, (day - EPOCH).days, 3])
        steps = rng.standard_normal(n) * math.sqrt(1.0 / n)
        return np.concatenate(([0.0], np.cumsum(steps)))

    def market_factor(self, day: dt.date | str | int, frac: np.ndarray) -> np.ndarray:
        """The market factor at day fractions ``frac`` (0 = midnight, 1 = next midnight)."""
        path = self._factor_cached(to_date(day))
        return np.interp(frac, np.linspace(0.0, 1.0, len(path)), path)

    def _make_day(self, symbol: str, day: dt.date) -> DayTrades:
        cfg, spec = self.config, self.spec(symbol)
        d = self._day_index(day)
        if d < 0:
            empty = np.empty(0, dtype=np.int64)
            return DayTrades(empty, empty, empty, empty, empty, empty, np.empty(0, dtype=bool))
        n = cfg.trades_per_day
        sym_h = stable_hash(cfg.seed, symbol) & 0xFFFFFFFF
        rng = np.random.default_rng([cfg.seed, sym_h, (day - EPOCH).days, 0])
        t0 = day_start_ms(day)
        offsets = np.sort(rng.integers(0, DAY_MS, n, dtype=np.int64))
        burst = rng.random(n) < cfg.burst_fraction
        burst[0] = False
        # a burst trade shares the previous trade's millisecond; runs of bursts share one
        idx = np.where(burst, 0, np.arange(n))
        offsets = offsets[np.maximum.accumulate(idx)]
        del burst, idx
        # Brownian bridge in log price from today's anchor to tomorrow's; the Brownian motion
        # is the symbol's own one mixed with the shared market factor (module docstring)
        frac = offsets / DAY_MS
        steps = rng.standard_normal(n) * np.sqrt(np.diff(frac, prepend=0.0))
        own = np.cumsum(steps)
        own_end = own[-1] + rng.standard_normal() * math.sqrt(max(1.0 - frac[-1], 0.0))
        beta = spec.market_loading
        idio = math.sqrt(max(1.0 - beta * beta, 0.0))
        walk = beta * self.market_factor(day, frac) + idio * own
        w_end = beta * self._factor_cached(day)[-1] + idio * own_end
        bridge = (walk - frac * w_end) * cfg.intraday_volatility
        del steps, walk, own
        p0 = self.anchor_price(symbol, day)
        p1 = self.anchor_price(symbol, day + dt.timedelta(days=1))
        log_p = math.log(p0) + frac * (math.log(p1) - math.log(p0)) + bridge
        ticks = np.maximum(np.rint(np.exp(log_p) / spec.tick_units).astype(np.int64), 1)
        del log_p, bridge, frac
        price = ticks * spec.tick_units
        mean_steps = max(spec.mean_qty * 10**spec.qty_decimals / spec.step_units, 1.0)
        qty_steps = np.maximum(
            np.rint(rng.lognormal(math.log(mean_steps) - 0.5, 1.0, n)).astype(np.int64), 1
        )
        qty = qty_steps * spec.step_units
        move = np.diff(ticks, prepend=ticks[0])
        maker = np.where(move == 0, rng.random(n) < 0.5, move < 0)
        # underlying trades: every aggTrade has >= 1, the fixed daily surplus is spread randomly
        extra = np.bincount(rng.integers(0, n, self.underlying_per_day - n), minlength=n)
        span = 1 + extra.astype(np.int64)
        first = self.trade_id_base(symbol) + d * self.underlying_per_day + np.cumsum(span) - span
        agg = self.agg_id_base(symbol) + d * n + np.arange(n, dtype=np.int64)
        return DayTrades(
            agg,
            price,
            qty,
            first.astype(np.int64),
            (first + span - 1).astype(np.int64),
            t0 + offsets,
            maker.astype(bool),
        )

    def day_trades(self, symbol: str, day: dt.date | str | int) -> DayTrades:
        """The integer form of one UTC day's aggTrades (cached)."""
        self.spec(symbol)
        return self._trades_cached(symbol, to_date(day))

    def _make_view(self, symbol: str, day_index: int) -> _DayView:
        t = self.day_trades(symbol, EPOCH + dt.timedelta(days=day_index))
        return _DayView(
            t, *map(memoryview, (t.time, t.price, t.qty, t.first_id, t.last_id, t.maker))
        )

    def _day_view(self, symbol: str, ms: int) -> _DayView:
        """The trades of the UTC day containing ``ms`` (``day_trades(symbol, to_date(ms))``)."""
        return self._view_cached(symbol, int(ms) // DAY_MS)

    def trades_between(self, symbol: str, start_ms: int, end_ms: int) -> DayTrades:
        """aggTrades with ``start_ms <= T <= end_ms`` (inclusive, like Binance)."""
        parts = []
        start_ms = max(start_ms, self.start_ms)
        day = to_date(start_ms)
        while day_start_ms(day) <= end_ms:
            t = self.day_trades(symbol, day)
            lo = int(np.searchsorted(t.time, start_ms, "left"))
            hi = int(np.searchsorted(t.time, end_ms, "right"))
            if hi > lo:
                parts.append(t.slice(lo, hi))
            day += dt.timedelta(days=1)
        if not parts:
            return self.day_trades(symbol, self.start - dt.timedelta(days=1))
        return DayTrades(*(np.concatenate(c) for c in zip(*parts, strict=True)))

    def trades_from_id(self, symbol: str, from_id: int, limit: int, until_ms: int) -> DayTrades:
        """Up to ``limit`` aggTrades with id >= ``from_id`` and ``T <= until_ms``."""
        n = self.config.trades_per_day
        d = max((from_id - self.agg_id_base(symbol)) // n, 0)
        day = self.start + dt.timedelta(days=d)
        parts: list[DayTrades] = []
        got = 0
        while got < limit and day_start_ms(day) <= until_ms:
            t = self.day_trades(symbol, day)
            lo = int(np.searchsorted(t.agg_id, from_id, "left"))
            hi = min(int(np.searchsorted(t.time, until_ms, "right")), lo + limit - got)
            if hi > lo:
                parts.append(t.slice(lo, hi))
                got += hi - lo
            day += dt.timedelta(days=1)
        if not parts:
            return self.day_trades(symbol, self.start - dt.timedelta(days=1))
        return DayTrades(*(np.concatenate(c) for c in zip(*parts, strict=True)))

    def last_trade_before(self, symbol: str, ms: int) -> tuple[int, int] | None:
        """(index within its day, price) of the last trade with ``T <= ms``, looking back a day."""
        d = int(max(ms, 0)) // DAY_MS
        for day in (d, d - 1):
            view = self._view_cached(symbol, day)
            i = bisect_right(view.time, ms) - 1
            if i >= 0:
                return i, view.price[i]
        return None

    def price_at(self, symbol: str, ms: int) -> int:
        """Last traded price at ``ms`` (integer units); the day's anchor before any trade."""
        last = self.last_trade_before(symbol, ms)
        return last[1] if last else self._anchor_cached(symbol, to_date(max(ms, 0)))

    # -- klines -----------------------------------------------------------------------------

    def _prev_close(self, symbol: str, day: dt.date) -> int:
        if day < self.start:
            return 0
        prev = self.day_trades(symbol, day - dt.timedelta(days=1))
        return int(prev.price[-1]) if len(prev) else self.anchor_price(symbol, day)

    def _aggregate(
        self, symbol: str, day: dt.date, iv_ms: int, t: DayTrades, n_buckets: int
    ) -> KlineArrays:
        """Bucket one day's trades into ``n_buckets`` candles of ``iv_ms`` from midnight."""
        return aggregate_candles(
            t, day_start_ms(day), iv_ms, n_buckets, lambda: self._prev_close(symbol, day)
        )

    def _make_kline_block(self, symbol: str, day: dt.date, iv_ms: int) -> KlineArrays:
        return self._aggregate(symbol, day, iv_ms, self.day_trades(symbol, day), DAY_MS // iv_ms)

    def kline_arrays(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int | None = None
    ) -> KlineArrays:
        """Candles with ``start_ms <= open_time <= end_ms``; with ``now_ms`` only what existed then.

        A candle still open at ``now_ms`` is aggregated from the trades up to ``now_ms`` (like the
        last row of Binance's REST klines). Days before the market's start have no candles.
        """
        iv = INTERVALS_MS[interval]
        self.spec(symbol)
        if now_ms is not None:
            end_ms = min(end_ms, now_ms)
        start_ms = max(start_ms, self.start_ms)
        parts = []
        day = to_date(max(start_ms, 0))
        while day_start_ms(day) <= end_ms:
            t0 = day_start_ms(day)
            if now_ms is not None and now_ms < t0 + DAY_MS - 1:
                t = self.day_trades(symbol, day)
                t = t.slice(0, int(np.searchsorted(t.time, now_ms, "right")))
                block = self._aggregate(symbol, day, iv, t, (now_ms - t0) // iv + 1)
            else:
                block = self._kline_block_cached(symbol, day, iv)
            keep = (block.open_time >= start_ms) & (block.open_time <= end_ms)
            parts.append(KlineArrays(*(a[keep] for a in block)))
            day += dt.timedelta(days=1)
        return concat_klines(parts)

    def open_candle(self, symbol: str, open_time: int, iv: int, at_ms: int) -> KlineArrays | None:
        """The candle opening at ``open_time`` from its trades up to ``at_ms`` alone (None when
        it has none yet): what :meth:`kline_arrays` gives, without aggregating the day so far
        (that made each 250 ms kline update cost as much as the day's trades)."""
        values = self.open_candle_values(symbol, open_time, iv, at_ms)
        return None if values is None else candle_columns(values)

    def open_candle_values(
        self, symbol: str, open_time: int, iv: int, at_ms: int
    ) -> tuple[int, ...] | None:
        """:meth:`open_candle` as its 12 values in Python ints: a live candle has a few trades,
        read off the day's memoryviews without building arrays, and is asked for again each
        second (tickers and klines) mostly without a new trade: then it is the last answer."""
        view = self._day_view(symbol, open_time)
        lo = bisect_left(view.time, open_time)
        hi = bisect_right(view.time, min(at_ms, open_time + iv - 1))
        if hi <= lo:
            return None
        key = (symbol, open_time, iv)
        last = self._live_candles.get(key)
        if last is not None and last[0] == hi:  # the same trades lo..hi as last time
            return last[1]
        if hi - lo > SMALL_CANDLE:
            values = tuple(int(a[0]) for a in one_candle(view.trades.slice(lo, hi), open_time))
        else:
            values = tuple(
                small_candle_values(
                    view.price[lo:hi].tolist(),
                    view.qty[lo:hi].tolist(),
                    view.first_id[lo:hi].tolist(),
                    view.last_id[lo:hi].tolist(),
                    view.maker[lo:hi].tolist(),
                    open_time,
                )
            )
        if len(self._live_candles) >= 4096:
            self._live_candles.clear()
        self._live_candles[key] = (hi, values)
        return values

    def _empty_close(self, symbol: str, open_time: int) -> int:
        """The close of a candle without trades opening at ``open_time`` (a market day): the
        last trade before it that day, else the day before's close, as :func:`aggregate_candles`
        carries it forward."""
        d = open_time // DAY_MS
        view = self._view_cached(symbol, d)
        i = bisect_left(view.time, open_time) - 1
        if i >= 0:
            return view.price[i]
        return self._prev_close(symbol, EPOCH + dt.timedelta(days=d))

    def live_candle(self, symbol: str, interval: str, open_time: int, at_ms: int) -> KlineArrays:
        """``kline_arrays(symbol, interval, open_time, open_time, at_ms)``: the candle opening at
        ``open_time`` as of ``at_ms``, without aggregating the day so far when it has no trade
        yet (the first seconds of most minutes)."""
        iv = INTERVALS_MS[interval]
        values = self.open_candle_values(symbol, open_time, iv, at_ms)
        if values is None and open_time >= self.start_ms and at_ms >= open_time:
            if open_time % iv == 0:
                values = flat_candle_values(open_time, self._empty_close(symbol, open_time))
        if values is None:
            return self.kline_arrays(symbol, interval, open_time, open_time, at_ms)
        return candle_columns(values)

    def closed_candle(self, symbol: str, interval: str, open_time: int) -> KlineArrays:
        """``kline_arrays(symbol, interval, open_time, open_time)``: the candle's row of its
        day's cached block, without masking the day's candles for it."""
        iv = INTERVALS_MS[interval]
        if open_time < self.start_ms or open_time % iv:
            return self.kline_arrays(symbol, interval, open_time, open_time)
        block = self._kline_block_cached(symbol, to_date(open_time), iv)
        i = open_time % DAY_MS // iv
        return KlineArrays(*(a[i : i + 1] for a in block))

    # -- funding and mark price -------------------------------------------------------------

    def funding_rate_e8(self, symbol: str, funding_time: int) -> int:
        """Settled funding rate in units of 1e-8: typically 0.0001, within +-0.0075."""
        return self._funding_cached(symbol, funding_time)

    def _funding_rate_e8(self, symbol: str, funding_time: int) -> int:
        rng = np.random.default_rng(
            [self.config.seed, stable_hash(symbol) & 0xFFFFFFFF, funding_time // 1000, 2]
        )
        z = rng.standard_normal()
        spike = 20.0 if rng.random() < 0.03 else 1.0
        rate = 10_000 + 4_000 * z * spike
        return int(np.clip(round(rate), -750_000, 750_000))

    def mark_price_e8(self, symbol: str, ms: int) -> int:
        """Mark price in units of 1e-8: the last trade price plus a small deterministic premium."""
        return self.mark_price_e8_from(symbol, ms, self.price_at(symbol, ms))

    def mark_price_e8_from(self, symbol: str, ms: int, price: int) -> int:
        """:meth:`mark_price_e8` given ``price_at(symbol, ms)`` (a ticker has it already)."""
        spec = self.spec(symbol)
        base = price * 10 ** (8 - spec.price_decimals)
        wobble = mix_int(self._hash_cached(self.config.seed, symbol) ^ (ms // 1000))
        premium = (wobble % 2001 - 1000) / 1e7  # within +-0.01 %
        return int(round(base * (1 + premium)))

    def funding_times(self, start_ms: int, end_ms: int) -> list[int]:
        first = max(-(-max(start_ms, self.start_ms) // FUNDING_INTERVAL_MS), 0)
        return list(range(first * FUNDING_INTERVAL_MS, end_ms + 1, FUNDING_INTERVAL_MS))

    def next_funding_time(self, ms: int) -> int:
        return (ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS

    def index_price_e8(self, symbol: str, ms: int) -> int:
        """Index price in units of 1e-8: the last traded price."""
        return self.index_price_e8_from(symbol, self.price_at(symbol, ms))

    def index_price_e8_from(self, symbol: str, price: int) -> int:
        """:meth:`index_price_e8` given ``price_at(symbol, ms)`` (a ticker has it already)."""
        return price * 10 ** (8 - self.spec(symbol).price_decimals)

    def predicted_funding_e8(self, symbol: str, second_ms: int) -> int:
        """The funding rate the next settlement would pay, as seen at ``second_ms`` (1e-8 units):
        it drifts towards the settled one as the settlement approaches."""
        nxt = self.next_funding_time(second_ms)
        target = self.funding_rate_e8(symbol, nxt)
        minute = second_ms // MINUTE_MS
        noise = mix_int(self._hash_cached(symbol, "r") ^ minute) % 401 - 200
        left = (nxt - second_ms) / FUNDING_INTERVAL_MS
        return target + int(noise * left)

    # -- order book ----------------------------------------------------------------------------

    def book_state(self, symbol: str, step: int) -> BookState:
        """Full book (``book_levels`` per side) as of ``step * book_step_ms``."""
        spec = self.spec(symbol)
        levels = self.config.book_levels
        center = self.price_at(symbol, step * self.book_step_ms) // spec.tick_units
        bids = center - np.arange(levels, dtype=np.int64)
        bids = bids[bids > 0]
        asks = center + 1 + np.arange(levels, dtype=np.int64)
        return BookState(
            step,
            bids,
            self._level_qty(symbol, 0, bids, step, center),
            asks,
            self._level_qty(symbol, 1, asks, step, center + 1),
        )

    def _level_qty(
        self,
        symbol: str,
        side: int,
        ticks: np.ndarray,
        step: int | np.ndarray,
        top: int | np.ndarray,
    ) -> np.ndarray:
        """Resting quantity per level: changes every ~10 s per level, every step at the top.

        Elementwise, so ``ticks`` may be one book side or a (steps x levels) grid with ``step``
        and ``top`` as (steps x 1) columns.
        """
        spec = self.spec(symbol)
        key = np.uint64(self._hash_cached(self.config.seed, symbol, side))
        t = ticks.astype(np.uint64)
        period = self._level_period
        step = np.asarray(step, dtype=np.int64)
        phase = (mix(t ^ key) % np.uint64(period)).astype(np.int64)
        epoch = ((step + phase) // period).astype(np.uint64)
        epoch = np.where(ticks == top, step.astype(np.uint64) | np.uint64(1 << 62), epoch)
        h = mix(t * np.uint64(0x9E3779B97F4A7C15) ^ epoch ^ key)
        mean = max(spec.level_qty * 10**spec.qty_decimals / spec.step_units, 2.0)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        steps = np.maximum(np.rint(-np.log1p(-u) * mean), 1).astype(np.int64)
        return steps * spec.step_units

    def prices_at(self, symbol: str, ms: np.ndarray) -> np.ndarray:
        """:meth:`price_at` of many times at once (int64 units), with the same look-back rules."""
        ms = np.asarray(ms, dtype=np.int64)
        out = np.empty(len(ms), dtype=np.int64)
        days = np.maximum(ms, 0) // DAY_MS
        for d in np.unique(days).tolist():
            sel = days == d
            day = EPOCH + dt.timedelta(days=d)
            t = self.day_trades(symbol, day)
            i = np.searchsorted(t.time, ms[sel], "right") - 1
            prev = self.day_trades(symbol, day - dt.timedelta(days=1))
            before = int(prev.price[-1]) if len(prev) else self.anchor_price(symbol, day)
            out[sel] = np.where(i >= 0, t.price[np.maximum(i, 0)] if len(t) else 0, before)
        return out

    def book_levels(
        self, symbol: str, steps: np.ndarray, depth: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bid ticks, bid quantities, ask ticks, ask quantities) of many steps: a row per step,
        best first, the top ``depth`` levels (at most the book's): the numbers every book view
        of the market (the wire's books, the archive's files) is made of."""
        spec = self.spec(symbol)
        levels = np.arange(min(depth or self.config.book_levels, self.config.book_levels))
        center = (self.prices_at(symbol, steps * self.book_step_ms) // spec.tick_units)[:, None]
        col = np.asarray(steps, dtype=np.int64)[:, None]
        bid_t, ask_t = center - levels, center + 1 + levels
        bid_q = np.where(bid_t > 0, self._level_qty(symbol, 0, bid_t, col, center), 0)
        ask_q = self._level_qty(symbol, 1, ask_t, col, center + 1)
        return bid_t, bid_q, ask_t, ask_q

    def _book_grid(
        self, symbol: str, steps: np.ndarray, depth: int | None = None
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """The books of many steps on one tick axis: ``(lo, bids, asks)`` where ``bids[i, k]``
        is the resting quantity at tick ``lo + k`` on ``steps[i]`` (0: no level). The same
        numbers as :meth:`book_state`, computed in a few array operations for all steps."""
        bid_t, bid_q, ask_t, ask_q = self.book_levels(symbol, steps, depth)
        lo = int(bid_t.min())
        rows = np.arange(len(steps))[:, None]
        bids = np.zeros((len(steps), int(ask_t.max()) - lo + 1), dtype=np.int64)
        asks = np.zeros_like(bids)
        bids[rows, bid_t - lo] = bid_q
        asks[rows, ask_t - lo] = ask_q
        return lo, bids, asks

    @staticmethod
    def side_diff(
        old_t: np.ndarray, old_q: np.ndarray, new_t: np.ndarray, new_q: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(old_t) and not len(new_t):
            return old_t, old_q
        lo = int(min(old_t.min(initial=1 << 62), new_t.min(initial=1 << 62)))
        hi = int(max(old_t.max(initial=0), new_t.max(initial=0)))
        a = np.zeros(hi - lo + 1, dtype=np.int64)
        b = np.zeros(hi - lo + 1, dtype=np.int64)
        a[old_t - lo] = old_q
        b[new_t - lo] = new_q
        changed = np.nonzero(a != b)[0]
        return changed + lo, b[changed]

    def book_changes(
        self, symbol: str, pairs: list[tuple[int, int]], levels: int | None = None
    ) -> list[BookChange]:
        """The levels that differ between the books of each ``(from_step, to_step)`` pair (the
        top ``levels`` per side; all by default), from one :meth:`_book_grid`. A level that left
        the window or emptied has quantity 0."""
        wanted = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        steps = np.unique(wanted.ravel())
        lo, bids, asks = self._book_grid(symbol, steps, levels)
        rows = np.searchsorted(steps, wanted)  # each pair's two grid rows
        out = []
        for i in range(0, len(pairs), _PAIRS_PER_PASS):
            old, new = rows[i : i + _PAIRS_PER_PASS, 0], rows[i : i + _PAIRS_PER_PASS, 1]
            out.extend(
                BookChange(s0, s1, bid_t, bid_q, ask_t, ask_q)
                for (s0, s1), (bid_t, bid_q), (ask_t, ask_q) in zip(
                    pairs[i : i + _PAIRS_PER_PASS],
                    _row_changes(bids, old, new, lo),
                    _row_changes(asks, old, new, lo),
                    strict=True,
                )
            )
        return out

    def top_of_book(self, symbol: str, step: int) -> tuple[int, int, int, int]:
        """(best bid tick, its quantity, best ask tick, its quantity) on ``step``: the first
        level of :meth:`book_state` without computing the rest."""
        price = self.price_at(symbol, step * self.book_step_ms)
        return self.top_of_book_at(symbol, step, price)

    def top_of_book_at(self, symbol: str, step: int, price: int) -> tuple[int, int, int, int]:
        """:meth:`top_of_book` given ``price_at(symbol, step * book_step_ms)`` (a ticker on the
        book's grid has already looked it up)."""
        center = price // self.spec(symbol).tick_units
        if type(self)._level_qty is not MarketGenerator._level_qty:  # a subclass's own levels
            one = np.array([center], dtype=np.int64)
            bid_q = int(self._level_qty(symbol, 0, one, step, center)[0])
            ask_q = int(self._level_qty(symbol, 1, one + 1, step, center + 1)[0])
            return center, bid_q, center + 1, ask_q
        bid_q = self._top_level_qty(symbol, 0, center, step)
        ask_q = self._top_level_qty(symbol, 1, center + 1, step)
        return center, bid_q, center + 1, ask_q

    def _top_level_qty(self, symbol: str, side: int, tick: int, step: int) -> int:
        """:meth:`_level_qty` of the top level (``ticks == top``), one level: the same uint64
        hash in Python ints (``mix_int`` is ``mix``), the same float steps on Python floats
        around numpy's own log1p, so the number is the one :meth:`book_state` has, for a few
        microseconds instead of ~20 array operations (a ticker a second needs it)."""
        spec = self.spec(symbol)
        key = self._hash_cached(self.config.seed, symbol, side)
        t = tick & _M64
        epoch = (step & _M64) | _TOP_EPOCH
        h = mix_int(((t * _GOLDEN) & _M64) ^ epoch ^ key)
        mean = max(spec.level_qty * 10**spec.qty_decimals / spec.step_units, 2.0)
        u = float(h >> 11) / float(1 << 53)
        # numpy's log1p of a scalar is its array loop's (math.log1p differs in the last bit on
        # some CPUs); the rest is the same IEEE float steps, round() halves to even as rint
        return max(round(-float(np.log1p(-u)) * mean), 1) * spec.step_units
