"""Decimal-exact group sums of float columns that hold exchange decimals.

Why: the lake stores prices and quantities as float64 (the shortest repr of each float gives back
the exchange's decimal string, see ``catalog/schemas.py``). Summing those floats accumulates
rounding error, so 60 one-minute volumes would not add up to the exchange's own hourly volume
bit for bit. Scaling every value to an integer number of 10^-d units, summing the integers and
dividing once gives the float nearest to the exact decimal sum - the same float that parsing the
exchange's longer kline would give.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

#: Binance sends at most 8 decimals
MAX_DECIMALS = 8
_SAFE_INT = 2**62
_EXACT_FLOAT_INT = 2**53


def decimal_places(values: np.ndarray) -> int | None:
    """Fewest decimals d (<= 8) such that every value is the float of a d-decimal number.

    ``round(x * 10**d) / 10**d == x`` holds exactly when x is the float nearest to a decimal
    with d places, because IEEE division is correctly rounded. None when no d <= 8 works
    (a computed column, e.g. a product of two prices).
    """
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0
    for d in range(MAX_DECIMALS + 1):
        scale = 10.0**d
        if np.abs(x).max() * scale >= _EXACT_FLOAT_INT:
            return None
        if np.array_equal(np.round(x * scale) / scale, x):
            return d
    return None


def to_scaled_int(values: np.ndarray, d: int) -> np.ndarray:
    """Values as int64 counts of 10^-d units (exact when ``decimal_places`` returned d)."""
    return np.round(np.asarray(values, dtype="float64") * 10.0**d).astype("int64")


def scaled_to_float(ints: np.ndarray, d: int) -> np.ndarray:
    """Nearest float to ``ints / 10**d``; falls back to ``Fraction`` above 2**53."""
    ints = np.asarray(ints, dtype="int64")
    out = ints.astype("float64") / 10.0**d
    big = np.abs(ints) >= _EXACT_FLOAT_INT
    for i in np.flatnonzero(big):
        out[i] = float(Fraction(int(ints[i]), 10**d))
    return out


def group_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of each run ``values[starts[i]:starts[i+1]]``, decimal-exact when possible."""
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return np.zeros(len(starts))
    d = decimal_places(values)
    if d is not None:
        ints = to_scaled_int(values, d)
        if np.abs(ints).astype("float64").sum() < _SAFE_INT:
            return scaled_to_float(np.add.reduceat(ints, starts), d)
    return np.add.reduceat(values, starts)


def blocked_group_sum(values: np.ndarray, starts: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``group_sum`` within each block of rows on its own (its decimals detected on it alone).

    ``blocks`` are the sorted row positions where a block begins (the first is 0), each also a
    run start. Why: a multi-day frame summed per UTC day gives, bit for bit, what the per-day
    partition computes; one odd day (more decimals, a computed value) cannot change the others.
    """
    values = np.asarray(values, dtype="float64")
    starts = np.asarray(starts, dtype="int64")
    edges = np.append(np.asarray(blocks, dtype="int64"), values.size)
    first_run = np.searchsorted(starts, edges)
    out = np.zeros(starts.size)
    for a, b, ra, rb in zip(edges[:-1], edges[1:], first_run[:-1], first_run[1:], strict=True):
        if rb > ra:
            out[ra:rb] = group_sum(values[a:b], starts[ra:rb] - a)
    return out


def group_sum_product(a: np.ndarray, b: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of ``a * b`` per run, exact as decimals when both factors are short decimals.

    Quote volume is price x quantity per trade: with 2-decimal prices and 3-decimal quantities
    each product has 5 decimals, which an integer product keeps exactly.
    """
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    if a.size == 0:
        return np.zeros(len(starts))
    da, db = decimal_places(a), decimal_places(b)
    if da is not None and db is not None:
        ia, ib = to_scaled_int(a, da), to_scaled_int(b, db)
        bound = float(np.abs(ia).max()) * float(np.abs(ib).max()) * a.size
        if bound < _SAFE_INT:
            return scaled_to_float(np.add.reduceat(ia * ib, starts), da + db)
    return np.add.reduceat(a * b, starts)


class ExactColumn:
    """A column scaled to integers once, then summed over many groupings (e.g. 4 intervals).

    Detecting the decimals and scaling costs a few passes over the data; doing it once per
    column instead of once per interval is what keeps 1M trades -> 4 timeframes fast.
    """

    def __init__(self, floats: np.ndarray, ints: np.ndarray | None, d: int):
        self.floats, self.ints, self.d = floats, ints, d

    @classmethod
    def of(cls, values: np.ndarray) -> ExactColumn:
        x = np.asarray(values, dtype="float64")
        d = decimal_places(x) if x.size else 0
        if d is not None:
            ints = to_scaled_int(x, d)
            if np.abs(ints).astype("float64").sum() < _SAFE_INT:
                return cls(x, ints, d)
        return cls(x, None, 0)

    @classmethod
    def product(cls, a: ExactColumn, b: ExactColumn) -> ExactColumn:
        floats = a.floats * b.floats
        if a.ints is not None and b.ints is not None and a.ints.size:
            bound = float(np.abs(a.ints).max()) * float(np.abs(b.ints).max()) * a.ints.size
            if bound < _SAFE_INT:
                return cls(floats, a.ints * b.ints, a.d + b.d)
        return cls(floats, None, 0)

    def where(self, mask: np.ndarray) -> ExactColumn:
        """The column with zeros outside ``mask`` (e.g. taker-buy volume only)."""
        ints = None if self.ints is None else np.where(mask, self.ints, 0)
        return ExactColumn(np.where(mask, self.floats, 0.0), ints, self.d)

    def group_sum(self, starts: np.ndarray) -> np.ndarray:
        if self.floats.size == 0:
            return np.zeros(len(starts))
        if self.ints is None:
            return np.add.reduceat(self.floats, starts)
        return scaled_to_float(np.add.reduceat(self.ints, starts), self.d)
