"""Small catalog-conforming frames for storage and API tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import (
    ALL_LEVEL_COLUMNS,
    SIDES,
    level_counts,
    side_matrix,
)
from petrosa_pipelines.catalog.schemas import CANDLES, DEPTH, FUNDING, TRADES, conform


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def trades(symbol="BTCUSDT", day=dt.date(2024, 1, 2), n=1000, first_id=1, seed=0, step_ms=None):
    rng = np.random.default_rng(seed)
    step = step_ms or max(1, 86_400_000 // max(n, 1) - 1)
    t = _ms(day) + np.arange(n, dtype=np.int64) * step
    received = pd.to_datetime(t + 7, unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "agg_trade_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "price": np.round(rng.uniform(40_000, 45_000, n), 1),
            "quantity": np.round(rng.uniform(0.001, 3, n), 3),
            "first_trade_id": np.arange(n, dtype=np.int64) * 3,
            "last_trade_id": np.arange(n, dtype=np.int64) * 3 + 2,
            "trade_time": pd.to_datetime(t, unit="ms", utc=True),
            "is_buyer_maker": rng.random(n) < 0.5,
            "source": np.where(rng.random(n) < 0.8, "ws", "rest"),
            "received_at": received,
        }
    )
    frame.loc[frame["source"] == "rest", "received_at"] = pd.NaT
    return conform(frame, TRADES)


def candles(symbol="BTCUSDT", day=dt.date(2024, 1, 2), n=1440, skip=(), seed=0):
    rng = np.random.default_rng(seed)
    minutes = np.array([m for m in range(n) if m not in set(skip)], dtype=np.int64)
    k = len(minutes)
    open_ = np.round(rng.uniform(40_000, 45_000, k), 1)
    close = np.round(open_ + rng.normal(0, 5, k), 1)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "interval": "1m",
            "open_time": pd.to_datetime(_ms(day) + minutes * 60_000, unit="ms", utc=True),
            "close_time": pd.to_datetime(_ms(day) + minutes * 60_000 + 59_999, unit="ms", utc=True),
            "open": open_,
            "high": np.maximum(open_, close) + 1.5,
            "low": np.minimum(open_, close) - 1.5,
            "close": close,
            "volume": np.round(rng.uniform(1, 100, k), 3),
            "quote_volume": np.round(rng.uniform(1e4, 1e6, k), 2),
            "trade_count": rng.integers(10, 1000, k),
            "taker_buy_volume": np.round(rng.uniform(0, 1, k), 3),
            "taker_buy_quote_volume": np.round(rng.uniform(0, 1e4, k), 2),
            "source": "archive",
            "received_at": pd.NaT,
        }
    )
    return conform(frame, CANDLES)


def funding(symbol="BTCUSDT", day=dt.date(2024, 1, 2)):
    times = [_ms(day) + h * 3_600_000 for h in (0, 8, 16)]
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "funding_time": pd.to_datetime(times, unit="ms", utc=True),
            "funding_rate": [0.0001, -0.00005, 0.00012],
            "mark_price": [42000.1, np.nan, 42100.0],
            "source": "rest",
            "received_at": pd.to_datetime([times[0] + 5, pd.NA, times[2] + 5], unit="ms", utc=True),
        }
    )
    return conform(frame, FUNDING)


def depth(symbol="BTCUSDT", day=dt.date(2024, 1, 2), snapshots=3, levels=2):
    """Depth v2: a snapshot a second, ``levels`` a side 0.1 apart around 42000."""
    t = _ms(day) + np.arange(snapshots, dtype=np.int64) * 1000
    step = 0.1 + np.arange(levels) * 0.1
    qty = 1.0 + np.arange(levels, dtype=np.float64)

    def cells(values):
        out = np.empty(snapshots, dtype=object)
        out[:] = [values.copy() for _ in range(snapshots)]
        return out

    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "snapshot_time": pd.to_datetime(t, unit="ms", utc=True),
            "last_update_id": 1000 + np.arange(snapshots, dtype=np.int64),
            "bid_price": cells(42000.0 - step),
            "bid_quantity": cells(qty),
            "ask_price": cells(42000.0 + step),
            "ask_quantity": cells(qty),
            "source": "ws",
            "received_at": pd.to_datetime(t + 3, unit="ms", utc=True),
        }
    )
    return conform(frame, DEPTH)


def assert_depth_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Depth v2 frames equal, levels bit for bit. ``assert_frame_equal`` alone is not enough:
    by default it passes object columns whose ndarray cells differ."""
    for col in ALL_LEVEL_COLUMNS:
        kinds = {(type(c).__name__, getattr(c, "dtype", None)) for c in got[col]}
        assert kinds <= {("ndarray", np.dtype("float64"))}, (col, kinds)
    for side in SIDES:
        np.testing.assert_array_equal(level_counts(got, side), level_counts(want, side))
        for g, w in zip(side_matrix(got, side), side_matrix(want, side), strict=True):
            np.testing.assert_array_equal(g.view(np.int64), w.view(np.int64))
    rest = [c for c in want.columns if c not in ALL_LEVEL_COLUMNS]
    pd.testing.assert_frame_equal(got.drop(columns=list(ALL_LEVEL_COLUMNS)), want[rest])
