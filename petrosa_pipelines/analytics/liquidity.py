"""Spread and liquidity from order-book snapshots, and Amihud illiquidity from candles.

The depth dataset has one row per (snapshot_time, side, level). Per snapshot, with b and a the
best bid and ask and m = (a + b) / 2:

* quoted spread in bps = (a - b) / m x 10^4 (e.g. Harris, *Trading and Exchanges* (2003), ch. 14).
* depth within +-N bps: resting base quantity on bids priced >= m (1 - N/10^4) and on asks
  priced <= m (1 + N/10^4) - the "market depth at N bps" of exchange liquidity reports
  (e.g. Kaiko's 0.1 %/1 %/2 % depth).
* book imbalance = (D_bid - D_ask) / (D_bid + D_ask) on those depths, and the top-of-book variant
  on level-0 sizes (Cartea, Jaimungal & Penalva, *Algorithmic and High-Frequency Trading* (2015),
  sec. 4.3 "volume imbalance").
* heatmap (seed 002): mean resting quantity per (time bucket, price bucket, side), i.e. the sum
  over the snapshots of the time bucket divided by their number.
* Amihud (2002), "Illiquidity and stock returns", J. Financial Markets 5(1): mean of
  |R_t| / quote volume_t over bars that traded, here per million quote units.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics.volume import nice_bucket_width

BOOK_COLUMNS = [
    "snapshot_time",
    "best_bid",
    "best_ask",
    "mid",
    "spread_bps",
    "bid_depth",
    "ask_depth",
    "depth_imbalance",
    "top_imbalance",
]


def _codes(depth: pd.DataFrame) -> tuple[np.ndarray, pd.DatetimeIndex]:
    codes, uniques = pd.factorize(depth["snapshot_time"], sort=True)
    return codes, pd.DatetimeIndex(uniques)


def book_metrics(depth: pd.DataFrame, band_bps: float = 10.0) -> pd.DataFrame:
    """One row per snapshot: best prices, mid, spread (bps), depth within +-band_bps, imbalances."""
    if depth.empty:
        return pd.DataFrame({c: [] for c in BOOK_COLUMNS})
    codes, times = _codes(depth)
    n = len(times)
    price = depth["price"].to_numpy("float64")
    qty = depth["quantity"].to_numpy("float64")
    is_bid = (depth["side"] == "bid").to_numpy("bool")
    best_bid = np.full(n, -np.inf)
    best_ask = np.full(n, np.inf)
    np.maximum.at(best_bid, codes[is_bid], price[is_bid])
    np.minimum.at(best_ask, codes[~is_bid], price[~is_bid])
    best_bid[np.isinf(best_bid)] = np.nan
    best_ask[np.isinf(best_ask)] = np.nan
    mid = (best_bid + best_ask) / 2.0
    row_mid = mid[codes]
    in_band = np.where(
        is_bid, price >= row_mid * (1 - band_bps / 1e4), price <= row_mid * (1 + band_bps / 1e4)
    )
    bid_depth = np.bincount(codes, weights=np.where(is_bid & in_band, qty, 0.0), minlength=n)
    ask_depth = np.bincount(codes, weights=np.where(~is_bid & in_band, qty, 0.0), minlength=n)
    top_bid = np.bincount(
        codes, weights=np.where(is_bid & (price == best_bid[codes]), qty, 0.0), minlength=n
    )
    top_ask = np.bincount(
        codes, weights=np.where(~is_bid & (price == best_ask[codes]), qty, 0.0), minlength=n
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame(
            {
                "snapshot_time": times,
                "best_bid": best_bid,
                "best_ask": best_ask,
                "mid": mid,
                "spread_bps": (best_ask - best_bid) / mid * 1e4,
                "bid_depth": bid_depth,
                "ask_depth": ask_depth,
                "depth_imbalance": (bid_depth - ask_depth) / (bid_depth + ask_depth),
                "top_imbalance": (top_bid - top_ask) / (top_bid + top_ask),
            }
        )
    return out


#: columns of :func:`per_interval`
INTERVAL_COLUMNS = [
    "bucket_start",
    "mid",
    "spread_bps",
    "bid_depth",
    "ask_depth",
    "depth_imbalance",
    "top_imbalance",
    "snapshots",
]


def per_interval(book: pd.DataFrame, interval_ms: int = 60_000) -> pd.DataFrame:
    """Book metrics averaged per interval (mid is the last one): 86,400 snapshots -> 1,440 rows."""
    cols = INTERVAL_COLUMNS
    if book.empty:
        return pd.DataFrame({c: [] for c in cols})
    ms = book["snapshot_time"].astype("datetime64[ms, UTC]").to_numpy("datetime64[ms]")
    bucket = ms.view("int64") // interval_ms * interval_ms
    g = book.assign(bucket_start=bucket).groupby("bucket_start", sort=True)
    out = g[["spread_bps", "bid_depth", "ask_depth", "depth_imbalance", "top_imbalance"]].mean()
    out["mid"] = g["mid"].last()
    out["snapshots"] = g.size().astype("int64")
    out = out.reset_index()
    out["bucket_start"] = pd.to_datetime(out["bucket_start"], unit="ms", utc=True).astype(
        "datetime64[ms, UTC]"
    )
    return out[cols]


def liquidity_heatmap(
    depth: pd.DataFrame,
    time_bucket_ms: int = 300_000,
    price_bucket: float | None = None,
    target_price_buckets: int = 40,
) -> pd.DataFrame:
    """Mean resting quantity per (time bucket, price bucket, side): the seed-002 heatmap."""
    cols = ["bucket_start", "price_low", "price_high", "side", "quantity"]
    if depth.empty:
        return pd.DataFrame({c: [] for c in cols})
    price = depth["price"].to_numpy("float64")
    width = price_bucket or nice_bucket_width(
        float(price.min()), float(price.max()), target_price_buckets
    )
    ms = depth["snapshot_time"].astype("datetime64[ms, UTC]").to_numpy("datetime64[ms]")
    tb = ms.view("int64") // time_bucket_ms * time_bucket_ms
    frame = pd.DataFrame(
        {
            "bucket_start": tb,
            "price_idx": np.floor(price / width + 1e-9).astype("int64"),
            "side": depth["side"].to_numpy(),
            "quantity": depth["quantity"].to_numpy("float64"),
            "snap": ms.view("int64"),
        }
    )
    snaps = frame.groupby("bucket_start")["snap"].nunique()
    out = frame.groupby(["bucket_start", "price_idx", "side"], sort=True)["quantity"].sum()
    out = out.reset_index()
    out["quantity"] = out["quantity"] / out["bucket_start"].map(snaps).to_numpy()
    out["price_low"] = out["price_idx"] * width
    out["price_high"] = (out["price_idx"] + 1) * width
    out["bucket_start"] = pd.to_datetime(out["bucket_start"], unit="ms", utc=True).astype(
        "datetime64[ms, UTC]"
    )
    return out[cols]


def amihud_terms(candles: pd.DataFrame, scale: float = 1e6) -> pd.Series:
    """|simple return| / quote volume x scale per bar; NaN where nothing traded."""
    close = candles["close"].astype("float64")
    ret = (close / close.shift(1) - 1.0).abs()
    qv = candles["quote_volume"].astype("float64")
    return (ret / qv.where(qv > 0)) * scale


def amihud(candles: pd.DataFrame, scale: float = 1e6) -> float:
    """Amihud illiquidity: mean |R| per ``scale`` quote units traded (NaN without trades)."""
    terms = amihud_terms(candles, scale).dropna()
    return float(terms.mean()) if len(terms) else math.nan
