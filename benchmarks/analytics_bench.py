"""Analytics of one symbol-day: wall time and peak memory, against a bare pandas pass.

Data (synthetic, deterministic): 1,440 1m candles, a day of aggregate trades (default
1,000,000 rows, BTC-like 0.1 ticks and 0.001 lots) and 86,400 one-second book snapshots of
10 levels per side (1,728,000 depth rows). Each section runs our analytics and a baseline doing
the nearest bare pandas work on the same frames (``resample().ohlc()``, ``groupby().sum()``...),
each measured for wall time (best of ``--repeat``) and tracemalloc peak (numpy and pandas
buffers are traced). Usage: ``python benchmarks/analytics_bench.py [--trades N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from petrosa_pipelines.analytics import (  # noqa: E402
    deviation,
    liquidity,
    resample,
    seasonality,
    trend,
    volatility,
    volume,
)

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def make_trades(n: int, rng: np.random.Generator) -> pd.DataFrame:
    ms = np.sort(rng.integers(0, 86_400_000, n))
    price = np.round(42_000 + np.cumsum(rng.normal(0, 0.5, n)), 1)
    qty = np.round(rng.exponential(0.05, n) + 0.001, 3)
    ids = np.arange(n, dtype="int64")
    return pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_trade_id": ids,
            "price": price,
            "quantity": qty,
            "first_trade_id": ids * 2,
            "last_trade_id": ids * 2 + 1,
            "trade_time": (DAY + pd.to_timedelta(ms, unit="ms")).astype("datetime64[ms, UTC]"),
            "is_buyer_maker": rng.random(n) < 0.5,
        }
    )


def make_depth(rng: np.random.Generator, levels: int = 10) -> pd.DataFrame:
    snaps = 86_400
    mid = np.round(42_000 + np.cumsum(rng.normal(0, 2, snaps)), 1)
    t = np.repeat(
        (DAY + pd.to_timedelta(np.arange(snaps), unit="s")).astype("datetime64[ms, UTC]"),
        2 * levels,
    )
    lvl = np.tile(np.concatenate([np.arange(levels), np.arange(levels)]), snaps)
    side = np.tile(np.array(["bid"] * levels + ["ask"] * levels), snaps)
    base = np.repeat(mid, 2 * levels)
    price = np.where(side == "bid", base - 0.05 - 0.1 * lvl, base + 0.05 + 0.1 * lvl)
    return pd.DataFrame(
        {
            "snapshot_time": t,
            "side": pd.array(side, dtype="string"),
            "level": lvl,
            "price": np.round(price, 2),
            "quantity": np.round(rng.exponential(1.0, len(lvl)), 3),
        }
    )


def candles_of(trades: pd.DataFrame) -> pd.DataFrame:
    c = resample.candles_from_trades(trades, "30s", as_of=DAY + pd.Timedelta(days=1))
    c["interval"] = "1m"
    g = c.groupby(c["open_time"].dt.floor("min"))
    out = g.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        quote_volume=("quote_volume", "sum"),
        trade_count=("trade_count", "sum"),
        taker_buy_volume=("taker_buy_volume", "sum"),
        taker_buy_quote_volume=("taker_buy_quote_volume", "sum"),
    ).reset_index()
    out["close_time"] = out["open_time"] + pd.Timedelta(milliseconds=59_999)
    out["exchange"], out["symbol"], out["interval"] = "binance", "BTCUSDT", "1m"
    return out


def measure(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 2**20


def sections(trades, candles, depth):
    ts = trades.set_index("trade_time")
    cs = candles.set_index("open_time")
    close = candles["close"]
    return {
        "trades -> 1s/5s/15s/30s candles": (
            lambda: resample.multi_timeframe(
                trades, resample.TRADE_INTERVALS, from_trades=True, as_of=DAY + pd.Timedelta(days=1)
            ),
            lambda: [
                (ts["price"].resample(i).ohlc(), ts["quantity"].resample(i).sum())
                for i in ("1s", "5s", "15s", "30s")
            ],
        ),
        "1m -> 5m/15m/1h/4h/1d candles": (
            lambda: resample.multi_timeframe(candles, resample.CANDLE_INTERVALS, from_trades=False),
            lambda: [
                (cs["close"].resample(i).ohlc(), cs["volume"].resample(i).sum())
                for i in ("5min", "15min", "1h", "4h", "1D")
            ],
        ),
        "volume: hourly stats + profile + sizes": (
            lambda: (
                volume.volume_stats(trades, "1h"),
                volume.volume_profile(trades),
                volume.trade_size_distribution(trades),
            ),
            lambda: (
                ts["quantity"].resample("1h").sum(),
                trades.groupby(trades["price"].round(-1))["quantity"].sum(),
            ),
        ),
        "volatility x6 + trend + deviation + seasonality": (
            lambda: (
                [volatility.annualised_volatility(candles, m) for m in volatility.METHODS],
                trend.adx(candles),
                trend.regression_slope(close, 60),
                trend.sma(close, 240),
                deviation.bollinger(close),
                deviation.zscore(close, 60),
                seasonality.profiles(candles),
            ),
            lambda: (
                np.log(close).diff().std(),
                close.rolling(240).mean(),
                close.rolling(20).std(),
                np.log(close).diff().groupby(candles["open_time"].dt.hour).std(),
            ),
        ),
        "liquidity: book metrics/1m + heatmap (86,400 snapshots)": (
            lambda: (
                liquidity.per_interval(liquidity.book_metrics(depth, 10.0)),
                liquidity.liquidity_heatmap(depth),
            ),
            lambda: depth.groupby(["snapshot_time", "side"])["price"].agg(["max", "min"]),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    trades = make_trades(args.trades, rng)
    candles = candles_of(trades)
    depth = make_depth(rng)
    print(
        f"symbol-day: {len(candles)} candles, {len(trades):,} trades, "
        f"{depth['snapshot_time'].nunique():,} book snapshots ({len(depth):,} depth rows)"
    )
    header = (
        f"{'section':55} {'ours s':>8} {'base s':>8} {'ratio':>6} {'ours MB':>8} {'base MB':>8}"
    )
    print(header)
    print("-" * len(header))
    total = [0.0, 0.0]
    for name, (ours, base) in sections(trades, candles, depth).items():
        (t_o, m_o), (t_b, m_b) = measure(ours, args.repeat), measure(base, args.repeat)
        total[0] += t_o
        total[1] += t_b
        print(f"{name:55} {t_o:8.3f} {t_b:8.3f} {t_o / t_b:6.2f} {m_o:8.1f} {m_b:8.1f}")
    print(f"{'total':55} {total[0]:8.3f} {total[1]:8.3f} {total[0] / total[1]:6.2f}")


if __name__ == "__main__":
    main()
