"""Cross-symbol return correlation: per day, and rolling by pooling sufficient statistics.

Pearson correlation of 1m log returns on pairwise-complete minutes (a minute counts for a pair
when both symbols have a return for it). Each day also stores the pair's sufficient statistics
(n, sum x, sum y, sum x^2, sum y^2, sum xy), so a rolling correlation over N days is computed
exactly from N day rows:

    rho = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy - Sy^2))

which equals the Pearson correlation over all pooled minutes (Pearson (1896), Phil. Trans. R.
Soc. A 187; this is the one-pass computational form). Returns are ~1e-3, so the sums stay far
from catastrophic cancellation at float64.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

PAIR_COLUMNS = [
    "symbol_a",
    "symbol_b",
    "correlation",
    "n",
    "sum_x",
    "sum_y",
    "sum_xx",
    "sum_yy",
    "sum_xy",
]


def returns_wide(candles: pd.DataFrame) -> pd.DataFrame:
    """1m log returns, one column per symbol, indexed by open_time (within each symbol)."""
    parts = {}
    for symbol, frame in candles.groupby("symbol", sort=True):
        f = frame.sort_values("open_time").drop_duplicates("open_time")
        close = f["close"].astype("float64").to_numpy()
        r = np.log(close[1:] / close[:-1])
        parts[str(symbol)] = pd.Series(r, index=pd.DatetimeIndex(f["open_time"].iloc[1:]))
    return pd.DataFrame(parts).sort_index()


def pearson_from_sums(n, sx, sy, sxx, syy, sxy) -> float:
    """Pearson correlation from sufficient statistics (NaN when a side is constant)."""
    den = (n * sxx - sx * sx) * (n * syy - sy * sy)
    if n < 2 or not den > 0:
        return math.nan
    return float((n * sxy - sx * sy) / math.sqrt(den))


def pair_statistics(wide: pd.DataFrame) -> pd.DataFrame:
    """Per symbol pair (a < b): correlation and the sums that pool into a rolling one."""
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        x, y = both[a].to_numpy(), both[b].to_numpy()
        sums = (len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
        rows.append((a, b, pearson_from_sums(*sums), *sums))
    out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    return out.astype({"n": "int64"}) if len(out) else out


def pool(pairs: pd.DataFrame) -> pd.DataFrame:
    """Rolling correlation per pair from day rows of ``pair_statistics`` (sums are additive)."""
    if pairs.empty:
        return pd.DataFrame(columns=[*PAIR_COLUMNS, "days"])
    sums = ["n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"]
    g = pairs.groupby(["symbol_a", "symbol_b"], sort=True)
    out = g[sums].sum()
    out["days"] = g.size()
    out["correlation"] = [
        pearson_from_sums(*row) for row in out[sums].itertuples(index=False, name=None)
    ]
    return out.reset_index()[[*PAIR_COLUMNS, "days"]]


def matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Symmetric correlation matrix (1 on the diagonal) from pair rows."""
    symbols = sorted(set(pairs["symbol_a"]) | set(pairs["symbol_b"]))
    m = pd.DataFrame(np.eye(len(symbols)), index=symbols, columns=symbols)
    for a, b, rho in pairs[["symbol_a", "symbol_b", "correlation"]].itertuples(index=False):
        m.loc[a, b] = m.loc[b, a] = rho
    return m
