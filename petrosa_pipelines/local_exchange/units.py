"""Units, time and number formatting shared by the market generator and every venue's wire.

Prices and quantities are integers in units of ``10**-decimals``; :func:`fmt_fixed` turns them into
exact decimal strings, so no wire ever carries float noise. The hashes are stable across processes
(``hash()`` is salted per process), so the same seed gives the same market everywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

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


EPOCH = dt.date(1970, 1, 1)


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash stable across processes (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: a cheap deterministic hash of uint64 arrays."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


_M64_INT = 0xFFFFFFFFFFFFFFFF


def mix_int(x: int) -> int:
    """:func:`mix` of one non-negative integer in plain Python (same result, no array cost)."""
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
    return EPOCH + dt.timedelta(days=int(day) // DAY_MS)


def day_start_ms(day: dt.date) -> int:
    return (day - EPOCH).days * DAY_MS


def fmt_fixed(value: int, decimals: int) -> str:
    """Integer in units of 10**-decimals -> exact decimal string (``123, 2 -> '1.23'``)."""
    if decimals == 0:
        return str(value)
    # the digits of abs(value), at least one before the point: q and r zero-padded, as
    # f"{q}.{r:0{decimals}d}" of divmod(abs(value), 10**decimals) (half the cost; tickers
    # format ~20 numbers each)
    digits = str(abs(int(value))).rjust(decimals + 1, "0")
    text = digits[:-decimals] + "." + digits[-decimals:]
    return "-" + text if value < 0 else text


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


class _FixedMemo(dict[int, str]):
    """``fmt_fixed(value, decimals)`` by value, formatting a value on its first lookup (so a
    batch is one ``map`` of lookups, with no pass looking for misses)."""

    def __init__(self, decimals: int) -> None:
        super().__init__()
        self.decimals = decimals

    def __missing__(self, value: int) -> str:
        text = self[value] = fmt_fixed(value, self.decimals)
        return text


class LevelFormats:
    """Memoised :func:`fmt_fixed` for book levels: the same prices and sizes recur all day, and
    formatting them was most of the cost of a depth diff (bounded: cleared past 100k values)."""

    def __init__(self) -> None:
        self._cache: dict[int, _FixedMemo] = {}

    def memo(self, decimals: int) -> dict[int, str]:
        """The memo of one scale: ``memo[value] == fmt_fixed(value, decimals)`` (a ticker's
        prices and sizes are mostly the book's, already formatted)."""
        cache = self._cache.get(decimals)
        if cache is None:
            cache = self._cache[decimals] = _FixedMemo(decimals)
        if len(cache) > 100_000:
            cache.clear()
        return cache

    def many(self, values: list[int], decimals: int) -> list[str]:
        return list(map(self.memo(decimals).__getitem__, values))

    def levels_of_many(
        self, ticks: list[np.ndarray], qtys: list[np.ndarray], tick_units: int, pd_: int, qd: int
    ) -> list[list[list[str]]]:
        """:meth:`levels` of each (ticks, quantities) pair of arrays, prices ``ticks *
        tick_units``, formatted in one pass (a depth diff per book step is many small ones)."""
        if not ticks:
            return []
        flat = self.levels(np.concatenate(ticks) * tick_units, np.concatenate(qtys), pd_, qd)
        ends = np.cumsum([len(t) for t in ticks]).tolist()
        return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def levels(self, prices: np.ndarray, qtys: np.ndarray, pd_: int, qd: int) -> list[list[str]]:
        """``[[price, qty], ...]`` strings of book levels (the wire form of depth payloads)."""
        return [
            [p, q]
            for p, q in zip(
                self.many(prices.tolist(), pd_), self.many(qtys.tolist(), qd), strict=True
            )
        ]
