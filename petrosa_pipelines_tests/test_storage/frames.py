"""Small catalog-conforming frames for storage and API tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

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
    rows = []
    for s in range(snapshots):
        t = _ms(day) + s * 1000
        for side, sign in (("bid", -1), ("ask", 1)):
            for level in range(levels):
                rows.append(
                    {
                        "exchange": "binance",
                        "symbol": symbol,
                        "snapshot_time": pd.Timestamp(t, unit="ms", tz="UTC"),
                        "last_update_id": 1000 + s,
                        "side": side,
                        "level": level,
                        "price": 42000.0 + sign * (0.1 + level * 0.1),
                        "quantity": 1.0 + level,
                        "source": "ws",
                        "received_at": pd.Timestamp(t + 3, unit="ms", tz="UTC"),
                    }
                )
    return conform(pd.DataFrame(rows), DEPTH)
