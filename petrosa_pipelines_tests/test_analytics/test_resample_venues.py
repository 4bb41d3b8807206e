"""Candles from Bybit-shaped trades (issue 12): each fill is its own trade (first = last id),
rows from two sources of one millisecond order the same way, and 1m volumes equal the venue's
kline volume (the decimal sum of its fills)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics import resample
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines_tests.bybit_shaped import as_archive, bybit_candles, bybit_trades

START = day_window_ms(pd.Timestamp("2026-08-09").date())[0]


def test_bybit_fills_resample_to_the_venues_minute_volumes():
    trades = bybit_trades(START, 30, per_minute=12, seed=11)
    half = len(trades) // 2
    mixed = pd.concat([as_archive(trades.iloc[:half]), trades.iloc[half:]], ignore_index=True)
    end = pd.Timestamp(START + 30 * 60_000, unit="ms", tz="UTC")
    out = resample.candles_from_trades(mixed.sample(frac=1, random_state=1), "30s", as_of=end)
    assert int(out["trade_count"].sum()) == len(trades)  # one trade per fill, archive ids 0
    minute = out.assign(m=out["open_time"].dt.floor("min")).groupby("m")["volume"].sum()
    venue = bybit_candles(trades).set_index("open_time")["volume"]
    assert np.allclose(minute.loc[venue.index].to_numpy(), venue.to_numpy(), rtol=1e-12, atol=0)


def test_order_within_a_millisecond_does_not_depend_on_input_order():
    trades = as_archive(bybit_trades(START, 5, per_minute=10, seed=12))  # every id 0
    trades["trade_time"] = trades["trade_time"].dt.floor("10s")  # many fills share a time
    trades["price"] += np.arange(len(trades))  # so the first and last fill of a time differ
    a = resample.candles_from_trades(trades, "5s")
    b = resample.candles_from_trades(trades.iloc[::-1], "5s")
    pd.testing.assert_frame_equal(a, b)
