"""Cross-symbol return correlation: per day, and rolling by pooling sufficient statistics.

Pearson correlation of 1m log returns on pairwise-complete minutes (a minute counts for a pair
when both symbols have a return for it). Each day also stores the pair's sufficient statistics
(n, sum x, sum y, sum x^2, sum y^2, sum xy), so a rolling correlation over N days is computed
exactly from N day rows:

    rho = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy - Sy^2))

which equals the Pearson correlation over all pooled minutes (Pearson (1896), Phil. Trans. R.
Soc. A 187; this is the one-pass computational form). Returns are ~1e-3, so the sums stay far
from catastrophic cancellation at float64.

Series are instruments, not symbols: Binance ``BTCUSDT`` and Bybit ``BTCUSDT`` are two columns
(``binance-usdm:BTCUSDT``, ``bybit-linear:BTCUSDT``), so ``symbol_a``/``symbol_b`` hold
instrument ids. Day rows written before that hold bare symbols, which were Binance USD-M's
(``instruments.LEGACY_VENUE``); ``pool`` and ``matrix`` read them as such.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from petrosa_pipelines.exchanges import venue_of
from petrosa_pipelines.instruments import Instrument, instrument_id, is_legacy_key

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


def series_id(exchange: object, symbol: object) -> str:
    """The instrument id of candles' ``exchange`` (storage name or venue id) and ``symbol``;
    rows without an exchange are the legacy venue's."""
    if exchange is None or pd.isna(exchange):
        return instrument_id(str(symbol))
    return Instrument(venue_of(str(exchange)), str(symbol)).id


def returns_wide(candles: pd.DataFrame) -> pd.DataFrame:
    """1m log returns, one column per instrument id (``venue:SYMBOL``), indexed by open_time
    (within each instrument: the same symbol on two venues is two series)."""
    by_id: dict[str, list[pd.DataFrame]] = {}
    if "exchange" in candles.columns:
        groups = candles.groupby(["exchange", "symbol"], sort=False, dropna=False, observed=True)
        named = ((series_id(ex, sym), one) for (ex, sym), one in groups)
    else:
        groups = candles.groupby("symbol", sort=False, observed=True)
        named = ((series_id(None, sym), one) for sym, one in groups)
    for name, one in named:  # a venue under its id and its storage name is one instrument
        by_id.setdefault(name, []).append(one)
    parts = {}
    for name in sorted(by_id):
        one = pd.concat(by_id[name]) if len(by_id[name]) > 1 else by_id[name][0]
        f = one.sort_values("open_time", kind="stable").drop_duplicates("open_time")
        close = f["close"].astype("float64").to_numpy()
        r = np.log(close[1:] / close[:-1])
        parts[name] = pd.Series(r, index=pd.DatetimeIndex(f["open_time"].iloc[1:]))
    return pd.DataFrame(parts).sort_index()


def canonical_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pair rows with instrument ids: a bare symbol of an older row reads as the legacy venue's
    (``binance-usdm``), and a pair whose ids now sort the other way is swapped (x <-> y)."""
    if pairs.empty:
        return pairs
    a = pairs["symbol_a"].map(_canonical)
    b = pairs["symbol_b"].map(_canonical)
    out = pairs.assign(symbol_a=a, symbol_b=b)
    swap = (a > b).to_numpy()
    if swap.any():
        for left, right in (("symbol_a", "symbol_b"), ("sum_x", "sum_y"), ("sum_xx", "sum_yy")):
            if left in out.columns and right in out.columns:
                lv, rv = out[left].copy(), out[right].copy()
                out.loc[swap, left] = rv[swap]
                out.loc[swap, right] = lv[swap]
    return out


def _canonical(name: object) -> str:
    text = str(name)
    return instrument_id(text) if is_legacy_key(text) else text


def pearson_from_sums(n, sx, sy, sxx, syy, sxy) -> float:
    """Pearson correlation from sufficient statistics (NaN when a side is constant)."""
    den = (n * sxx - sx * sx) * (n * syy - sy * sy)
    if n < 2 or not den > 0:
        return math.nan
    return float((n * sxy - sx * sy) / math.sqrt(den))


def pair_statistics(wide: pd.DataFrame) -> pd.DataFrame:
    """Per instrument pair (a < b): correlation and the sums that pool into a rolling one."""
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        x, y = both[a].to_numpy(), both[b].to_numpy()
        sums = (len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
        rows.append((a, b, pearson_from_sums(*sums), *sums))
    out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    return out.astype({"n": "int64"}) if len(out) else out


def pool(pairs: pd.DataFrame) -> pd.DataFrame:
    """Rolling correlation per pair from day rows of ``pair_statistics`` (sums are additive;
    rows of bare symbols pool with their legacy venue's instrument, ``canonical_pairs``)."""
    if pairs.empty:
        return pd.DataFrame(columns=[*PAIR_COLUMNS, "days"])
    sums = ["n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"]
    g = canonical_pairs(pairs).groupby(["symbol_a", "symbol_b"], sort=True)
    out = g[sums].sum()
    out["days"] = g.size()
    out["correlation"] = [
        pearson_from_sums(*row) for row in out[sums].itertuples(index=False, name=None)
    ]
    return out.reset_index()[[*PAIR_COLUMNS, "days"]]


def matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Symmetric correlation matrix (1 on the diagonal) from pair rows, labelled by instrument
    id (bare symbols of older rows as the legacy venue's)."""
    pairs = canonical_pairs(pairs)
    symbols = sorted(set(pairs["symbol_a"]) | set(pairs["symbol_b"]))
    m = pd.DataFrame(np.eye(len(symbols)), index=symbols, columns=symbols)
    for a, b, rho in pairs[["symbol_a", "symbol_b", "correlation"]].itertuples(index=False):
        m.loc[a, b] = m.loc[b, a] = rho
    return m
