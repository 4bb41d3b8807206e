"""Spread and liquidity from order-book snapshots, and Amihud illiquidity from candles.

The depth dataset has one row per snapshot, each side's levels as lists (best price first);
the book metrics take each side as a (snapshot x level) matrix (``depth_layout.side_matrix``),
so a day of 86,400 snapshots x 20 levels is a few vector operations, not 3.5 M rows. Per
snapshot, with b and a the best bid and ask and m = (a + b) / 2:

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

A snapshot is a distinct ``snapshot_time`` holding at least one level, as when the dataset had
one row per level (version 1): rows sharing a time are one book, a row without levels is none.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics.volume import nice_bucket_width
from petrosa_pipelines.catalog.depth_layout import SIDES, level_counts, side_matrix

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
HEATMAP_COLUMNS = ["bucket_start", "price_low", "price_high", "side", "quantity"]

#: side -> (prices, quantities), one row per snapshot and one column per level
Book = dict[str, tuple[np.ndarray, np.ndarray]]


def _has_levels(depth: pd.DataFrame) -> np.ndarray:
    """Rows holding at least one level on either side (a row without any is no book)."""
    return (level_counts(depth, "bid") + level_counts(depth, "ask")) > 0


def _rank_within(codes: np.ndarray) -> np.ndarray:
    """Each row's position among the rows sharing its code, in frame order (0 = first)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(codes)), 0))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts
    return rank


def _snapshots(depth: pd.DataFrame) -> tuple[pd.DatetimeIndex, Book]:
    """The distinct snapshot times holding a level, ascending, and the matrices of their books.

    Rows sharing a time (two sources, or symbols, in one frame) are laid side by side, one
    block of levels per row in frame order, so they make one book as their long rows did."""
    held = _has_levels(depth)
    codes, uniques = pd.factorize(depth["snapshot_time"][held], sort=True)
    matrices = {side: side_matrix(depth, side) for side in SIDES}
    if held.all() and (codes == np.arange(len(codes))).all():
        return pd.DatetimeIndex(uniques), matrices  # already one row per time, ascending
    rank = _rank_within(codes)
    blocks = int(rank.max(initial=0)) + 1
    book: Book = {}
    for side, (prices, qtys) in matrices.items():
        cols = rank[:, None] * prices.shape[1] + np.arange(prices.shape[1])
        p = np.full((len(uniques), blocks * prices.shape[1]), np.nan)
        q = p.copy()
        p[codes[:, None], cols] = prices[held]
        q[codes[:, None], cols] = qtys[held]
        book[side] = (p, q)
    return pd.DatetimeIndex(uniques), book


def _best(prices: np.ndarray, side: str) -> np.ndarray:
    """Highest bid or lowest ask of each snapshot; NaN where the side holds no level."""
    reduce, none = (np.max, -np.inf) if side == "bid" else (np.min, np.inf)
    best = reduce(prices, axis=1, initial=none, where=~np.isnan(prices))
    best[np.isinf(best)] = np.nan
    return best


def _sum_where(qtys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row sums of ``qtys`` where ``mask``, level by level: the order the long rows were
    summed in, so the sums are the same to the last bit."""
    total = np.zeros(qtys.shape[0])
    for j in range(qtys.shape[1]):
        total += np.where(mask[:, j], qtys[:, j], 0.0)
    return total


def book_metrics(depth: pd.DataFrame, band_bps: float = 10.0) -> pd.DataFrame:
    """One row per snapshot: best prices, mid, spread (bps), depth within +-band_bps, imbalances."""
    times, book = _snapshots(depth)
    if times.empty:
        return pd.DataFrame({c: [] for c in BOOK_COLUMNS})
    (bid_p, bid_q), (ask_p, ask_q) = book["bid"], book["ask"]
    best_bid, best_ask = _best(bid_p, "bid"), _best(ask_p, "ask")
    mid = (best_bid + best_ask) / 2.0
    # NaN prices (padding) and NaN mids compare False: no quantity
    with np.errstate(invalid="ignore"):
        bid_depth = _sum_where(bid_q, bid_p >= mid[:, None] * (1 - band_bps / 1e4))
        ask_depth = _sum_where(ask_q, ask_p <= mid[:, None] * (1 + band_bps / 1e4))
    top_bid = _sum_where(bid_q, bid_p == best_bid[:, None])
    top_ask = _sum_where(ask_q, ask_p == best_ask[:, None])
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


#: the heatmap's sides in its row order (ask before bid, as the names sort)
_HEAT_SIDES = ("ask", "bid")


def _levels(depth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every level as flat arrays (row, side code: index in ``_HEAT_SIDES``, price, quantity),
    read off the side matrices: what a per-level aggregation needs, without long rows."""
    parts = []
    for code, side in enumerate(_HEAT_SIDES):
        prices, qtys = side_matrix(depth, side)
        held = ~np.isnan(prices)
        row = np.nonzero(held)[0]
        parts.append((row, np.full(len(row), code), prices[held], qtys[held]))
    row, code, price, qty = (np.concatenate(a) for a in zip(*parts, strict=True))
    return row, code, price, qty


def _group_sums(
    tb: np.ndarray, pidx: np.ndarray, side: np.ndarray, qty: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(time bucket code, price index, side code, sum of ``qty``) per occurring key, ordered
    by the key.

    Counted densely over the key range when it is small (a day: 288 x ~40 x 2 cells), else
    over the keys that occur (a tiny ``price_bucket`` spans too many cells)."""
    low = int(pidx.min())
    span = int(pidx.max()) - low + 1
    size = (int(tb.max()) + 1) * span * 2
    if size <= max(4 * len(qty), 1 << 16):
        prices = np.arange(low, low + span, dtype=np.int64)
        key = (tb * span + (pidx - low)) * 2 + side
        keys = np.flatnonzero(np.bincount(key, minlength=size))
        sums = np.bincount(key, weights=qty, minlength=size)[keys]
    else:
        prices, pcode = np.unique(pidx, return_inverse=True)
        keys, inverse = np.unique((tb * len(prices) + pcode) * 2 + side, return_inverse=True)
        sums = np.bincount(inverse, weights=qty)
    cell, s = np.divmod(keys, 2)
    t, p = np.divmod(cell, len(prices))
    return t, prices[p], s, sums


def liquidity_heatmap(
    depth: pd.DataFrame,
    time_bucket_ms: int = 300_000,
    price_bucket: float | None = None,
    target_price_buckets: int = 40,
) -> pd.DataFrame:
    """Mean resting quantity per (time bucket, price bucket, side): the seed-002 heatmap."""
    row, side, price, qty = _levels(depth)
    if not len(price):
        return pd.DataFrame({c: [] for c in HEATMAP_COLUMNS})
    width = price_bucket or nice_bucket_width(
        float(price.min()), float(price.max()), target_price_buckets
    )
    ms = depth["snapshot_time"].astype("datetime64[ms, UTC]").to_numpy("datetime64[ms]")
    ms = ms.view("int64")
    # a bucket's snapshots: the distinct times holding a level
    held = np.zeros(len(depth), dtype=bool)
    held[row] = True
    snaps = np.unique(ms[held])
    buckets, n_snaps = np.unique(snaps // time_bucket_ms * time_bucket_ms, return_counts=True)
    bucket_of_row = np.searchsorted(buckets, ms // time_bucket_ms * time_bucket_ms)
    pidx = np.floor(price / width + 1e-9).astype("int64")
    t, p, s, sums = _group_sums(bucket_of_row[row], pidx, side, qty)
    return pd.DataFrame(
        {
            "bucket_start": pd.to_datetime(buckets[t], unit="ms", utc=True).astype(
                "datetime64[ms, UTC]"
            ),
            "price_low": p * width,
            "price_high": (p + 1) * width,
            "side": np.asarray(_HEAT_SIDES, dtype=object)[s],
            "quantity": sums / n_snaps[t],
        }
    )


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
