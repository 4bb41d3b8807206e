"""Volume analytics from aggregate trades: VWAP, taker imbalance, volume profile, trade sizes.

* VWAP = sum(p q) / sum(q) over the interval (Berkowitz, Logue & Noser (1988), "The Total Cost
  of Transactions on the NYSE", J. Finance 43(1)). Sums are decimal-exact (``_exact``).
* Taker imbalance = (B - S) / (B + S) with B the base volume bought by takers
  (``is_buyer_maker`` false) and S the volume sold by takers; it lies in [-1, 1]. This is the
  order-flow imbalance of trade-sign studies (e.g. Chordia & Subrahmanyam (2004), J. Fin. Econ.
  72(3)) measured in volume.
* Volume profile: volume per fixed-width price bucket ``[k w, (k+1) w)`` with the point of
  control (the bucket of the largest volume), as in Steidlmayer's Market Profile (CBOT, 1984).
* Trade-size distribution: count and volume of trades per notional bucket with decade edges
  (1, 10, 100, ... quote units), the retail/institutional split of trade-size studies.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics._exact import group_sum, group_sum_product
from petrosa_pipelines.analytics.resample import interval_ms

#: decade edges of trade notional in quote units (USDT)
SIZE_EDGES = (0.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, math.inf)


def vwap(trades: pd.DataFrame) -> float:
    """Volume-weighted average price of all trades (NaN when there is no volume)."""
    if trades.empty:
        return math.nan
    starts = np.array([0])
    p, q = trades["price"].to_numpy("float64"), trades["quantity"].to_numpy("float64")
    volume = group_sum(q, starts)[0]
    return float(group_sum_product(p, q, starts)[0] / volume) if volume > 0 else math.nan


def taker_imbalance(buy_volume: np.ndarray | float, sell_volume: np.ndarray | float):
    """(B - S) / (B + S); NaN where nothing traded."""
    b, s = np.asarray(buy_volume, "float64"), np.asarray(sell_volume, "float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b + s > 0, (b - s) / (b + s), np.nan)


def volume_stats(trades: pd.DataFrame, interval: str = "1h") -> pd.DataFrame:
    """Per interval: volume, quote volume, VWAP, taker buy/sell volume and imbalance, trades."""
    cols = [
        "interval",
        "bucket_start",
        "volume",
        "quote_volume",
        "vwap",
        "taker_buy_volume",
        "taker_sell_volume",
        "taker_imbalance",
        "trade_count",
    ]
    if trades.empty:
        return pd.DataFrame({c: [] for c in cols})
    step = interval_ms(interval)
    t = trades.sort_values("trade_time", kind="stable")
    ms = t["trade_time"].astype("datetime64[ms, UTC]").to_numpy("datetime64[ms]").view("int64")
    buckets = ms // step * step
    starts = np.concatenate([[0], np.flatnonzero(np.diff(buckets)) + 1])
    p, q = t["price"].to_numpy("float64"), t["quantity"].to_numpy("float64")
    buy = ~t["is_buyer_maker"].to_numpy("bool")
    volume = group_sum(q, starts)
    quote = group_sum_product(p, q, starts)
    buy_vol = group_sum(np.where(buy, q, 0.0), starts)
    sell_vol = group_sum(np.where(buy, 0.0, q), starts)
    out = pd.DataFrame(
        {
            "interval": interval,
            "bucket_start": pd.to_datetime(buckets[starts], unit="ms", utc=True),
            "volume": volume,
            "quote_volume": quote,
            "vwap": np.where(volume > 0, quote / np.where(volume > 0, volume, 1.0), np.nan),
            "taker_buy_volume": buy_vol,
            "taker_sell_volume": sell_vol,
            "taker_imbalance": taker_imbalance(buy_vol, sell_vol),
            "trade_count": np.diff(np.append(starts, len(t))).astype("int64"),
        }
    )
    out["bucket_start"] = out["bucket_start"].astype("datetime64[ms, UTC]")
    return out[cols]


def nice_bucket_width(low: float, high: float, target_buckets: int = 50) -> float:
    """A 1-2-5 x 10^k width giving about ``target_buckets`` buckets over [low, high]."""
    span = high - low
    # a single traded price still needs a width: one basis point of it
    raw = span / target_buckets if span > 0 else (abs(high) * 1e-4 or 1.0)
    exp = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def volume_profile(
    trades: pd.DataFrame, bucket_width: float | None = None, target_buckets: int = 50
) -> pd.DataFrame:
    """Volume per price bucket with buy/sell split, share of total and point of control."""
    cols = [
        "price_low",
        "price_high",
        "volume",
        "taker_buy_volume",
        "taker_sell_volume",
        "trade_count",
        "volume_share",
        "is_poc",
    ]
    if trades.empty:
        return pd.DataFrame({c: [] for c in cols})
    p, q = trades["price"].to_numpy("float64"), trades["quantity"].to_numpy("float64")
    width = bucket_width or nice_bucket_width(float(p.min()), float(p.max()), target_buckets)
    # the small epsilon keeps a price that sits exactly on an edge in the bucket above it
    idx = np.floor(p / width + 1e-9).astype("int64")
    order = np.argsort(idx, kind="stable")
    idx, p, q = idx[order], p[order], q[order]
    buy = ~trades["is_buyer_maker"].to_numpy("bool")[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(idx)) + 1])
    volume = group_sum(q, starts)
    total = volume.sum()
    out = pd.DataFrame(
        {
            "price_low": idx[starts] * width,
            "price_high": (idx[starts] + 1) * width,
            "volume": volume,
            "taker_buy_volume": group_sum(np.where(buy, q, 0.0), starts),
            "taker_sell_volume": group_sum(np.where(buy, 0.0, q), starts),
            "trade_count": np.diff(np.append(starts, len(q))).astype("int64"),
            "volume_share": volume / total if total > 0 else np.nan,
        }
    )
    out["is_poc"] = np.arange(len(out)) == int(np.argmax(volume))
    return out[cols]


def trade_size_distribution(
    trades: pd.DataFrame, edges: tuple[float, ...] = SIZE_EDGES
) -> pd.DataFrame:
    """Trades per notional bucket [edge_i, edge_i+1): count, volume and their shares."""
    notional = (trades["price"] * trades["quantity"]).to_numpy("float64")
    qty = trades["quantity"].to_numpy("float64")
    idx = np.searchsorted(np.asarray(edges), notional, side="right") - 1
    n = len(edges) - 1
    count = np.bincount(idx, minlength=n)[:n].astype("int64")
    volume = np.bincount(idx, weights=qty, minlength=n)[:n]
    quote = np.bincount(idx, weights=notional, minlength=n)[:n]
    return pd.DataFrame(
        {
            "notional_low": np.asarray(edges[:-1], "float64"),
            "notional_high": np.asarray(edges[1:], "float64"),
            "trade_count": count,
            "volume": volume,
            "quote_volume": quote,
            "count_share": count / count.sum() if count.sum() else np.nan,
            "quote_share": quote / quote.sum() if quote.sum() else np.nan,
        }
    )
