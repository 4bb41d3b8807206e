"""The deterministic market behind the local exchange.

Every number the local exchange serves (trades, klines, funding, books, mark prices) is a pure
function of ``(seed, symbol, day)`` computed in one vectorised pass over one UTC day, so REST,
websocket and archive answers always agree with each other, and a test can recompute what any
endpoint should have said. Prices and quantities are integers internally (units of
``10**-price_decimals`` and ``10**-qty_decimals``) and are formatted into decimal strings from
those integers, so there is never float noise on the wire.

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
import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
MINUTE_MS = 60_000
FUNDING_INTERVAL_MS = 8 * 3_600_000
#: by default the book changes on a 100 ms grid (Binance's fastest diff cadence)
BOOK_STEP_MS = 100
#: a resting level (other than the top) changes about this often
LEVEL_PERIOD_MS = 10_000
#: book steps per array pass when building depth diffs (bounds memory: steps x levels x 8 B)
DEPTH_CHUNK_STEPS = 600
#: the shared market factor is drawn on a 1 s grid and interpolated linearly between points
FACTOR_GRID_MS = 1_000

INTERVALS_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": DAY_MS,
}

_EPOCH = dt.date(1970, 1, 1)
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class SymbolSpec:
    """Exchange filters and the character of one instrument's synthetic market."""

    price_decimals: int  # decimals on the wire (Binance ``pricePrecision``)
    tick_units: int  # tick size in units of 10**-price_decimals
    qty_decimals: int
    step_units: int  # step size in units of 10**-qty_decimals
    start_price: float
    mean_qty: float  # typical aggTrade size in base asset
    level_qty: float  # typical resting size of one book level
    #: correlation of the symbol's intraday returns with the shared market factor (0..1)
    market_loading: float = 0.75

    @property
    def tick_size(self) -> Decimal:
        return Decimal(self.tick_units).scaleb(-self.price_decimals)

    @property
    def step_size(self) -> Decimal:
        return Decimal(self.step_units).scaleb(-self.qty_decimals)


KNOWN_SYMBOLS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec(2, 10, 3, 1, 42_000.0, 0.05, 2.0, 0.93),
    "ETHUSDT": SymbolSpec(2, 1, 3, 1, 2_300.0, 0.8, 30.0, 0.92),
    "BNBUSDT": SymbolSpec(3, 10, 2, 1, 310.0, 2.0, 50.0, 0.8),
    "SOLUSDT": SymbolSpec(4, 100, 0, 1, 100.0, 20.0, 400.0, 0.82),
    "XRPUSDT": SymbolSpec(4, 1, 1, 1, 0.6, 2_000.0, 40_000.0, 0.75),
}


def symbol_spec(symbol: str, seed: int = 0) -> SymbolSpec:
    """Filters for ``symbol``: real-looking ones for majors, a sane default for the rest."""
    if symbol in KNOWN_SYMBOLS:
        return KNOWN_SYMBOLS[symbol]
    # default: 4 price decimals, whole-unit quantities, a price between 0.5 and 50
    price = 0.5 * 100 ** ((stable_hash(seed, symbol, "price") % 1000) / 1000)
    loading = 0.6 + 0.25 * (stable_hash(seed, symbol, "loading") % 1000) / 1000
    return SymbolSpec(4, 1, 0, 1, price, 200.0 / price, 5_000.0 / price, loading)


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash stable across processes (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: a cheap deterministic hash of uint64 arrays."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


_M64_INT = 0xFFFFFFFFFFFFFFFF


def _mix_int(x: int) -> int:
    """:func:`_mix` of one non-negative integer in plain Python (same result, no array cost)."""
    x &= _M64_INT
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64_INT
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64_INT
    return x ^ (x >> 31)


def to_date(day: dt.date | str | int) -> dt.date:
    """Accept a date, ``YYYY-MM-DD`` or epoch milliseconds (the UTC day containing it)."""
    if isinstance(day, dt.datetime):
        return day.astimezone(dt.UTC).date() if day.tzinfo else day.date()
    if isinstance(day, dt.date):
        return day
    if isinstance(day, str):
        return dt.date.fromisoformat(day)
    return _EPOCH + dt.timedelta(days=int(day) // DAY_MS)


def day_start_ms(day: dt.date) -> int:
    return (day - _EPOCH).days * DAY_MS


def fmt_fixed(value: int, decimals: int) -> str:
    """Integer in units of 10**-decimals -> exact decimal string (``123, 2 -> '1.23'``)."""
    if decimals == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    q, r = divmod(abs(int(value)), 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"


def fmt_many(values: Iterable[int], decimals: int) -> list[str]:
    """:func:`fmt_fixed` of many integers (one format string, no call per value)."""
    vals = [int(v) for v in values]
    if decimals == 0:
        return [str(v) for v in vals]
    if any(v < 0 for v in vals):
        return [fmt_fixed(v, decimals) for v in vals]
    scale = 10**decimals
    pattern = f"{{}}.{{:0{decimals}d}}".format
    return [pattern(v // scale, v % scale) for v in vals]


class _Formats:
    """Memoised :func:`fmt_fixed` for book levels: the same prices and sizes recur all day, and
    formatting them was most of the cost of a depth diff (bounded: cleared past 100k values)."""

    def __init__(self) -> None:
        self._cache: dict[int, dict[int, str]] = {}

    def many(self, values: list[int], decimals: int) -> list[str]:
        cache = self._cache.setdefault(decimals, {})
        if len(cache) > 100_000:
            cache.clear()
        get = cache.get
        out = [get(v) for v in values]
        if None in out:
            for i, v in enumerate(values):
                if out[i] is None:
                    out[i] = cache[v] = fmt_fixed(v, decimals)
        return out  # type: ignore[return-value]

    def levels(self, prices: np.ndarray, qtys: np.ndarray, pd_: int, qd: int) -> list[list[str]]:
        """``[[price, qty], ...]`` strings of book levels (the wire form of depth payloads)."""
        return [
            [p, q]
            for p, q in zip(
                self.many(prices.tolist(), pd_), self.many(qtys.tolist(), qd), strict=True
            )
        ]


@dataclass(frozen=True)
class MarketConfig:
    """What the synthetic market looks like; everything is derived from these fields."""

    seed: int = 7
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    trades_per_day: int = 20_000
    start_date: str = "2024-01-01"
    #: underlying trades per day = trades_per_day * (1 + extra_trades_ratio): some aggTrades
    #: span several trades, and the fixed daily total keeps trade ids continuous across days
    extra_trades_ratio: float = 0.5
    #: fraction of aggTrades sharing the previous one's millisecond (bursts)
    burst_fraction: float = 0.15
    #: intraday volatility of the log price over one day
    intraday_volatility: float = 0.02
    #: book levels per side (REST depth limit=1000 needs 1000)
    book_levels: int = 1000
    #: the book changes on this grid (a multiple of 100 ms); depth streams send a diff only when
    #: it changed, so 1000 makes a whole day of depth ten times cheaper to stream (the demo)
    book_step_ms: int = BOOK_STEP_MS
    #: Vision CSV header rows: "always", "never" or "mixed" (some days without, like real ETH files)
    vision_headers: str = "always"

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(s.upper() for s in self.symbols))
        dt.date.fromisoformat(self.start_date)
        if self.trades_per_day < 1:
            raise ValueError("trades_per_day must be >= 1")
        if self.vision_headers not in ("always", "never", "mixed"):
            raise ValueError("vision_headers must be 'always', 'never' or 'mixed'")
        step = self.book_step_ms
        if not (isinstance(step, int) and step > 0 and step % 100 == 0 and DAY_MS % step == 0):
            raise ValueError(
                f"book_step_ms={step!r} must be a positive multiple of 100 that divides a day"
            )


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


def _concat_klines(parts: list[KlineArrays]) -> KlineArrays:
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


class Market:
    """Deterministic trades, klines, funding, books and mark prices for the configured symbols."""

    def __init__(self, config: MarketConfig | None = None):
        self.config = config or MarketConfig()
        self.start = dt.date.fromisoformat(self.config.start_date)
        self.start_ms = day_start_ms(self.start)
        self.specs = {s: symbol_spec(s, self.config.seed) for s in self.config.symbols}
        n = self.config.trades_per_day
        self.underlying_per_day = n + int(n * self.config.extra_trades_ratio)
        self._sub = 256  # update-id slot per symbol per book step
        self._stride = self._sub * max(len(self.config.symbols), 1)
        # bounded per-instance caches (a few days of trades; many small kline blocks)
        self._trades_cached = lru_cache(maxsize=16)(self._make_day)
        self._kline_block_cached = lru_cache(maxsize=512)(self._make_kline_block)
        self._factor_cached = lru_cache(maxsize=8)(self._make_factor)
        self.book_step_ms = self.config.book_step_ms
        self._level_period = max(LEVEL_PERIOD_MS // self.book_step_ms, 1)
        # per-instance hashes the hot paths (1 s mark prices, 100 ms books) would recompute
        self._funding_cached = lru_cache(maxsize=4096)(self._funding_rate_e8)
        self._hash_cached = lru_cache(maxsize=256)(stable_hash)
        self._formats = _Formats()

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
        ordinal = (to_date(day) - _EPOCH).days
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
        rng = np.random.default_rng([self.config.seed, 0x6D6B74, (day - _EPOCH).days, 3])
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
        rng = np.random.default_rng([cfg.seed, sym_h, (day - _EPOCH).days, 0])
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

    def trades(self, symbol: str, day: dt.date | str | int) -> pd.DataFrame:
        """One UTC day of aggTrades as a DataFrame.

        ``price`` and ``quantity`` are float64 values whose ``str()`` is the exact decimal on the
        wire (``Decimal(str(x))`` is exact); ids and ``trade_time`` are int64 ms.
        """
        spec = self.spec(symbol)
        t = self.day_trades(symbol, day)
        return pd.DataFrame(
            {
                "agg_trade_id": t.agg_id,
                "price": t.price / 10**spec.price_decimals,
                "quantity": t.qty / 10**spec.qty_decimals,
                "first_trade_id": t.first_id,
                "last_trade_id": t.last_id,
                "trade_time": t.time,
                "is_buyer_maker": t.maker,
            }
        )

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
        day = to_date(max(ms, 0))
        for d in (day, day - dt.timedelta(days=1)):
            t = self.day_trades(symbol, d)
            i = int(np.searchsorted(t.time, ms, "right")) - 1
            if i >= 0:
                return i, int(t.price[i])
        return None

    def price_at(self, symbol: str, ms: int) -> int:
        """Last traded price at ``ms`` (integer units); the day's anchor before any trade."""
        last = self.last_trade_before(symbol, ms)
        return last[1] if last else self.anchor_price(symbol, to_date(max(ms, 0)))

    # -- klines -----------------------------------------------------------------------------

    def _prev_close(self, symbol: str, day: dt.date) -> int:
        prev = self.day_trades(symbol, day - dt.timedelta(days=1))
        return int(prev.price[-1]) if len(prev) else self.anchor_price(symbol, day)

    def _aggregate(
        self, symbol: str, day: dt.date, iv_ms: int, t: DayTrades, n_buckets: int
    ) -> KlineArrays:
        """Bucket one day's trades into ``n_buckets`` candles of ``iv_ms`` from midnight."""
        t0 = day_start_ms(day)
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
            prev = self._prev_close(symbol, day) if day >= self.start else 0
            close = np.where(idx >= 0, close[np.maximum(idx, 0)], prev)
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
        return _concat_klines(parts)

    def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int | None = None
    ) -> pd.DataFrame:
        """Candles as a DataFrame with Binance's column names; prices/volumes as exact strings."""
        return pd.DataFrame(
            self.kline_rows(symbol, interval, start_ms, end_ms, now_ms),
            columns=list(KLINE_COLUMNS),
        ).drop(columns="ignore")

    def kline_rows(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int | None = None
    ) -> list[list[Any]]:
        """The 12-field rows of ``/fapi/v1/klines`` (and of Vision CSVs)."""
        return self.format_klines(
            symbol, interval, self.kline_arrays(symbol, interval, start_ms, end_ms, now_ms)
        )

    def format_klines(self, symbol: str, interval: str, k: KlineArrays) -> list[list[Any]]:
        spec = self.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        iv = INTERVALS_MS[interval]
        return [
            [
                int(k.open_time[i]),
                fmt_fixed(k.open[i], pd_),
                fmt_fixed(k.high[i], pd_),
                fmt_fixed(k.low[i], pd_),
                fmt_fixed(k.close[i], pd_),
                fmt_fixed(k.volume[i], qd),
                int(k.open_time[i]) + iv - 1,
                fmt_fixed(k.quote[i], pd_ + qd),
                int(k.count[i]),
                fmt_fixed(k.taker_volume[i], qd),
                fmt_fixed(k.taker_quote[i], pd_ + qd),
                "0",
            ]
            for i in range(len(k.open_time))
        ]

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
        spec = self.spec(symbol)
        base = self.price_at(symbol, ms) * 10 ** (8 - spec.price_decimals)
        wobble = _mix_int(self._hash_cached(self.config.seed, symbol) ^ (ms // 1000))
        premium = (wobble % 2001 - 1000) / 1e7  # within +-0.01 %
        return int(round(base * (1 + premium)))

    def funding_times(self, start_ms: int, end_ms: int) -> list[int]:
        first = max(-(-max(start_ms, self.start_ms) // FUNDING_INTERVAL_MS), 0)
        return list(range(first * FUNDING_INTERVAL_MS, end_ms + 1, FUNDING_INTERVAL_MS))

    def funding(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Funding events (00, 08, 16 UTC) in ``[start_ms, end_ms]``; rates/marks exact strings."""
        return pd.DataFrame(
            self.funding_rows(symbol, start_ms, end_ms),
            columns=["symbol", "fundingTime", "fundingRate", "markPrice"],
        ).rename(
            columns={
                "fundingTime": "funding_time",
                "fundingRate": "funding_rate",
                "markPrice": "mark_price",
            }
        )

    def funding_rows(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """The objects of ``/fapi/v1/fundingRate``, ascending."""
        self.spec(symbol)
        return [
            {
                "symbol": symbol,
                "fundingTime": ft,
                "fundingRate": fmt_fixed(self.funding_rate_e8(symbol, ft), 8),
                "markPrice": fmt_fixed(self.mark_price_e8(symbol, ft), 8),
            }
            for ft in self.funding_times(start_ms, end_ms)
        ]

    def next_funding_time(self, ms: int) -> int:
        return (ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS

    def mark_price_event(self, symbol: str, second_ms: int) -> dict[str, Any]:
        """One ``markPriceUpdate`` at a whole second (``@markPrice@1s``)."""
        mark = self.mark_price_e8(symbol, second_ms)
        index = self.price_at(symbol, second_ms) * 10 ** (8 - self.spec(symbol).price_decimals)
        nxt = self.next_funding_time(second_ms)
        # the predicted rate drifts towards the settled one as the settlement approaches
        target = self.funding_rate_e8(symbol, nxt)
        minute = second_ms // MINUTE_MS
        noise = _mix_int(self._hash_cached(symbol, "r") ^ minute) % 401 - 200
        left = (nxt - second_ms) / FUNDING_INTERVAL_MS
        jitter = _mix_int(second_ms) % 9
        return {
            "e": "markPriceUpdate",
            "E": second_ms + jitter,
            "s": symbol,
            "p": fmt_fixed(mark, 8),
            "P": fmt_fixed((mark + index) // 2, 8),
            "i": fmt_fixed(index, 8),
            "r": fmt_fixed(target + int(noise * left), 8),
            "T": nxt,
        }

    # -- order book ----------------------------------------------------------------------------

    def _symbol_slot(self, symbol: str) -> int:
        return self.config.symbols.index(symbol)

    def update_ids(self, symbol: str, step: int) -> tuple[int, int]:
        """(U, u) of the book changes on one book step: one global sequence over symbols.

        Each step owns a block of ids, each symbol a slot in the block, so per symbol ``U`` is
        never ``prev u + 1`` (exactly like Binance USD-M) while ``pu == prev u`` always holds.
        """
        base = step * self._stride + self._symbol_slot(symbol) * self._sub
        j = _mix_int(step * 64 + self._symbol_slot(symbol))
        lo = j % (self._sub // 4)
        hi = (j >> 20) % (self._sub // 4)
        return base + lo, base + self._sub - 1 - hi

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
        phase = (_mix(t ^ key) % np.uint64(period)).astype(np.int64)
        epoch = ((step + phase) // period).astype(np.uint64)
        epoch = np.where(ticks == top, step.astype(np.uint64) | np.uint64(1 << 62), epoch)
        h = _mix(t * np.uint64(0x9E3779B97F4A7C15) ^ epoch ^ key)
        mean = max(spec.level_qty * 10**spec.qty_decimals / spec.step_units, 2.0)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        steps = np.maximum(np.rint(-np.log1p(-u) * mean), 1).astype(np.int64)
        return steps * spec.step_units

    def book(self, symbol: str, at_ms: int, limit: int = 1000) -> dict[str, Any]:
        """The ``/fapi/v1/depth`` body at ``at_ms``: the book of the step containing it."""
        spec = self.spec(symbol)
        step = at_ms // self.book_step_ms
        st = self.book_state(symbol, step)
        pd_, qd, fmt = spec.price_decimals, spec.qty_decimals, self._formats.levels
        return {
            "lastUpdateId": self.update_ids(symbol, step)[1],
            "E": at_ms,
            "T": max(at_ms - 3, step * self.book_step_ms),
            "bids": fmt(st.bid_ticks[:limit] * spec.tick_units, st.bid_qty[:limit], pd_, qd),
            "asks": fmt(st.ask_ticks[:limit] * spec.tick_units, st.ask_qty[:limit], pd_, qd),
        }

    def prices_at(self, symbol: str, ms: np.ndarray) -> np.ndarray:
        """:meth:`price_at` of many times at once (int64 units), with the same look-back rules."""
        ms = np.asarray(ms, dtype=np.int64)
        out = np.empty(len(ms), dtype=np.int64)
        days = np.maximum(ms, 0) // DAY_MS
        for d in np.unique(days).tolist():
            sel = days == d
            day = _EPOCH + dt.timedelta(days=d)
            t = self.day_trades(symbol, day)
            i = np.searchsorted(t.time, ms[sel], "right") - 1
            prev = self.day_trades(symbol, day - dt.timedelta(days=1))
            before = int(prev.price[-1]) if len(prev) else self.anchor_price(symbol, day)
            out[sel] = np.where(i >= 0, t.price[np.maximum(i, 0)] if len(t) else 0, before)
        return out

    def _book_grid(self, symbol: str, steps: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """The books of many steps on one tick axis: ``(lo, bids, asks)`` where ``bids[i, k]``
        is the resting quantity at tick ``lo + k`` on ``steps[i]`` (0: no level). The same
        numbers as :meth:`book_state`, computed in a few array operations for all steps."""
        spec = self.spec(symbol)
        levels = np.arange(self.config.book_levels, dtype=np.int64)
        center = (self.prices_at(symbol, steps * self.book_step_ms) // spec.tick_units)[:, None]
        col = np.asarray(steps, dtype=np.int64)[:, None]
        bid_t, ask_t = center - levels, center + 1 + levels
        bid_q = np.where(bid_t > 0, self._level_qty(symbol, 0, bid_t, col, center), 0)
        ask_q = self._level_qty(symbol, 1, ask_t, col, center + 1)
        lo = int(bid_t.min())
        rows = np.arange(len(col))[:, None]
        bids = np.zeros((len(col), int(ask_t.max()) - lo + 1), dtype=np.int64)
        asks = np.zeros_like(bids)
        bids[rows, bid_t - lo] = bid_q
        asks[rows, ask_t - lo] = ask_q
        return lo, bids, asks

    def _side_diff(
        self, old_t: np.ndarray, old_q: np.ndarray, new_t: np.ndarray, new_q: np.ndarray
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

    def depth_event(self, symbol: str, from_step: int, to_step: int) -> dict[str, Any]:
        """The ``depthUpdate`` carrying the changes of steps ``from_step+1 .. to_step``."""
        spec = self.spec(symbol)
        old, new = self.book_state(symbol, from_step), self.book_state(symbol, to_step)
        return self._depth_event_from(symbol, spec, old, new)

    def _depth_event_from(
        self, symbol: str, spec: SymbolSpec, old: BookState, new: BookState
    ) -> dict[str, Any]:
        bt, bq = self._side_diff(old.bid_ticks, old.bid_qty, new.bid_ticks, new.bid_qty)
        at, aq = self._side_diff(old.ask_ticks, old.ask_qty, new.ask_ticks, new.ask_qty)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        t = new.step * self.book_step_ms
        return {
            "e": "depthUpdate",
            "E": t + 1 + int(new.step % 7),
            "T": t,
            "s": symbol,
            "U": self.update_ids(symbol, old.step + 1)[0],
            "u": self.update_ids(symbol, new.step)[1],
            "pu": self.update_ids(symbol, old.step)[1],
            "b": self._formats.levels(bt * spec.tick_units, bq, pd_, qd),
            "a": self._formats.levels(at * spec.tick_units, aq, pd_, qd),
        }

    def depth_events(
        self, symbol: str, start_ms: int, end_ms: int, every_ms: int = 100
    ) -> list[dict[str, Any]]:
        """``depthUpdate`` diffs for the update boundaries in ``(start_ms, end_ms]``.

        A boundary every ``every_ms`` (100/250/500); each diff covers the book steps since the
        previous boundary, so ``pu`` always equals the previous event's ``u``. A boundary where
        the book did not step sends nothing (Binance pushes a diff only when the book changed).
        """
        spec = self.spec(symbol)
        bounds = np.arange(start_ms // every_ms + 1, end_ms // every_ms + 1, dtype=np.int64)
        to_steps = bounds * every_ms // self.book_step_ms
        from_steps = (bounds - 1) * every_ms // self.book_step_ms
        moved = to_steps != from_steps
        pairs = list(zip(from_steps[moved].tolist(), to_steps[moved].tolist(), strict=True))
        out: list[dict[str, Any]] = []
        for lo in range(0, len(pairs), DEPTH_CHUNK_STEPS):  # bounded memory for long ranges
            out.extend(self._depth_chunk(symbol, spec, pairs[lo : lo + DEPTH_CHUNK_STEPS]))
        return out

    def _depth_chunk(
        self, symbol: str, spec: SymbolSpec, pairs: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """The diffs of ``(from_step, to_step)`` pairs, from one :meth:`_book_grid`."""
        steps = np.unique(np.array(pairs, dtype=np.int64).ravel())
        lo, bids, asks = self._book_grid(symbol, steps)
        row = {s: i for i, s in enumerate(steps.tolist())}
        pd_, qd, tick = spec.price_decimals, spec.qty_decimals, spec.tick_units
        out = []
        for old, new in pairs:
            a, b = row[old], row[new]
            bk = np.flatnonzero(bids[a] != bids[b])
            ak = np.flatnonzero(asks[a] != asks[b])
            t = new * self.book_step_ms
            out.append(
                {
                    "e": "depthUpdate",
                    "E": t + 1 + int(new % 7),
                    "T": t,
                    "s": symbol,
                    "U": self.update_ids(symbol, old + 1)[0],
                    "u": self.update_ids(symbol, new)[1],
                    "pu": self.update_ids(symbol, old)[1],
                    "b": self._formats.levels((bk + lo) * tick, bids[b, bk], pd_, qd),
                    "a": self._formats.levels((ak + lo) * tick, asks[b, ak], pd_, qd),
                }
            )
        return out

    # -- websocket event helpers ----------------------------------------------------------------

    def agg_trade_events(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """``aggTrade`` payloads for trades with ``start_ms < T <= end_ms``."""
        spec = self.spec(symbol)
        t = self.trades_between(symbol, start_ms + 1, end_ms)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return [
            {
                "e": "aggTrade",
                "E": tt + 1 + a % 37,
                "a": a,
                "s": symbol,
                "p": fmt_fixed(p, pd_),
                "q": fmt_fixed(q, qd),
                "f": f,
                "l": last,
                "T": tt,
                "m": m,
            }
            for a, p, q, f, last, tt, m in t.rows()
        ]

    def _open_candle(self, symbol: str, open_time: int, iv: int, at_ms: int) -> KlineArrays | None:
        """The candle opening at ``open_time`` from its trades up to ``at_ms`` alone (None when
        it has none yet): what :meth:`kline_arrays` gives, without aggregating the day so far
        (that made each 250 ms kline update cost as much as the day's trades)."""
        t = self.day_trades(symbol, to_date(open_time))
        lo = int(np.searchsorted(t.time, open_time, "left"))
        hi = int(np.searchsorted(t.time, min(at_ms, open_time + iv - 1), "right"))
        if hi <= lo:
            return None
        t = t.slice(lo, hi)
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
        return KlineArrays(*(np.array([v], dtype=np.int64) for v in one))

    def kline_payload(
        self, symbol: str, interval: str, open_time: int, at_ms: int, closed: bool
    ) -> dict[str, Any]:
        """A ``kline`` event for the candle opening at ``open_time`` as of ``at_ms``."""
        iv = INTERVALS_MS[interval]
        k = None if closed else self._open_candle(symbol, open_time, iv, at_ms)
        if k is None:
            k = self.kline_arrays(symbol, interval, open_time, open_time, None if closed else at_ms)
        spec = self.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return {
            "e": "kline",
            "E": at_ms,
            "s": symbol,
            "k": {
                "t": open_time,
                "T": open_time + iv - 1,
                "s": symbol,
                "i": interval,
                "f": int(k.first_id[0]),
                "L": int(k.last_id[0]),
                "o": fmt_fixed(k.open[0], pd_),
                "c": fmt_fixed(k.close[0], pd_),
                "h": fmt_fixed(k.high[0], pd_),
                "l": fmt_fixed(k.low[0], pd_),
                "v": fmt_fixed(k.volume[0], qd),
                "n": int(k.count[0]),
                "x": closed,
                "q": fmt_fixed(k.quote[0], pd_ + qd),
                "V": fmt_fixed(k.taker_volume[0], qd),
                "Q": fmt_fixed(k.taker_quote[0], pd_ + qd),
                "B": "0",
            },
        }

    def kline_events(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, every_ms: int = 250
    ) -> list[dict[str, Any]]:
        """``kline`` updates in ``(start_ms, end_ms]``: every 250 ms while trades arrive, plus
        the final ``x: true`` candle at each close (also for a candle without trades)."""
        iv = INTERVALS_MS[interval]
        if end_ms < self.start_ms:
            return []
        t = self.trades_between(symbol, start_ms - every_ms, end_ms)
        marks = np.arange(start_ms // every_ms + 1, end_ms // every_ms + 1, dtype=np.int64)
        marks *= every_ms
        marks = marks[marks > self.start_ms]
        traded = np.searchsorted(t.time, marks, "left") > np.searchsorted(
            t.time, marks - every_ms, "left"
        )
        closes = marks % iv == 0
        sent = closes | traded
        out = []
        for m, close in zip(marks[sent].tolist(), closes[sent].tolist(), strict=True):
            if close:
                out.append(self.kline_payload(symbol, interval, m - iv, m, True))
            else:
                out.append(self.kline_payload(symbol, interval, (m // iv) * iv, m - 1, False))
        return out


KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
