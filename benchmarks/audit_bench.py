"""All trades checks on a synthetic 10 M-trade partition vs a bare numpy pass over the same
columns, in the same run (target: within 2x).

The baseline computes the same verdicts by hand with numpy and builds nothing else: id steps
(gaps, duplicates), time order, price/quantity > 0, the minute-candle lookup for "inside the
candle range", and the per-minute re-aggregation. The audit adds column extraction from the
frame, result objects, examples and counts. GX is timed separately (it is a WARN check with its
own cost, not part of the 2x target).

    .venv/bin/python benchmarks/audit_bench.py [--rows 10000000] [--repeat 3] [--gx]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from timing import median_seconds

from petrosa_pipelines.catalog.schemas import CANDLES, TRADES, conform
from petrosa_pipelines.checks.audit import (
    TradeArrays,
    candles_match_trades,
    trades_duplicates,
    trades_id_continuity,
    trades_time_order,
    trades_values,
    trades_within_candles,
)

DAY_START = 1_714_521_600_000  # 2024-05-01


def synthetic(rows: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A day of ``rows`` aggTrades (a few id gaps) and the 1440 candles they aggregate to."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64) + 5_000_000_000
    ids[rows // 2 :] += 3  # one gap of 3 ids
    times = DAY_START + np.sort(rng.integers(0, 86_400_000, rows))
    price = 60_000 + np.cumsum(rng.normal(0, 0.5, rows)).round(1)
    qty = rng.integers(1, 5_000, rows) / 1000
    first = np.arange(rows, dtype=np.int64) * 2
    maker = rng.random(rows) < 0.5
    trades = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_trade_id": ids,
            "price": price,
            "quantity": qty,
            "first_trade_id": first,
            "last_trade_id": first + 1,
            "trade_time": pd.to_datetime(times, unit="ms", utc=True),
            "is_buyer_maker": maker,
            "source": "archive",
            "received_at": pd.NaT,
        }
    )
    trades = conform(trades, TRADES)
    minute = (times - DAY_START) // 60_000
    taker_q = np.where(maker, 0.0, qty)
    g = pd.DataFrame({"m": minute, "p": price, "q": qty, "tq": taker_q}).groupby("m")
    agg = g["p"].agg(["first", "max", "min", "last"])
    candles = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "interval": "1m",
            "open_time": pd.to_datetime(DAY_START + agg.index * 60_000, unit="ms", utc=True),
            "close_time": pd.to_datetime(
                DAY_START + agg.index * 60_000 + 59_999, unit="ms", utc=True
            ),
            "open": agg["first"],
            "high": agg["max"],
            "low": agg["min"],
            "close": agg["last"],
            "volume": g["q"].sum(),
            "quote_volume": 0.0,
            "trade_count": g.size() * 2,
            "taker_buy_volume": g["tq"].sum(),
            "taker_buy_quote_volume": 0.0,
            "source": "archive",
            "received_at": pd.NaT,
        }
    )
    return trades, conform(candles, CANDLES)


def audit(trades: pd.DataFrame, candles: pd.DataFrame) -> list:
    """Every trades check (the single-dataset ones and the two against candles)."""
    t = TradeArrays.from_frame(trades)
    return [
        trades_id_continuity(t),
        trades_duplicates(trades, t),
        trades_time_order(trades, t),
        trades_values(trades, t),
        trades_within_candles(trades, t, candles, DAY_START, DAY_START + 86_400_000),
        candles_match_trades(candles, t, DAY_START, DAY_START + 86_400_000),
    ]


def bare_numpy(cols: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple:
    """The same facts from raw arrays, no frame, no result objects."""
    ids, times, price, qty = cols["ids"], cols["times"], cols["price"], cols["qty"]
    step = np.diff(ids)
    gaps, dups = int((step > 1).sum()), int((step == 0).sum())
    disorder = int((np.diff(times) < 0).sum())
    bad = int((~(price > 0) | ~(qty > 0) | (cols["first"] > cols["last"])).sum())
    slot = (times - DAY_START) // 60_000
    outside = int(((price < lo[slot]) | (price > hi[slot])).sum())
    starts = np.r_[0, np.flatnonzero(np.diff(slot)) + 1]
    bars = (
        np.maximum.reduceat(price, starts),
        np.minimum.reduceat(price, starts),
        np.add.reduceat(qty, starts),
        np.add.reduceat(cols["last"] - cols["first"] + 1, starts),
        np.add.reduceat(np.where(cols["maker"], 0.0, qty), starts),
    )
    return gaps, dups, disorder, bad, outside, len(bars[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gx", action="store_true", help="also time the GX suite (slow)")
    args = ap.parse_args()
    trades, candles = synthetic(args.rows)
    cols = {
        "ids": trades["agg_trade_id"].to_numpy(),
        "price": trades["price"].to_numpy(),
        "qty": trades["quantity"].to_numpy(),
        "first": trades["first_trade_id"].to_numpy(),
        "last": trades["last_trade_id"].to_numpy(),
        "maker": trades["is_buyer_maker"].to_numpy(),
        "times": trades["trade_time"].to_numpy(dtype="datetime64[ms]").view("int64"),
    }
    lo, hi = np.full(1440, np.nan), np.full(1440, np.nan)
    slot = (
        candles["open_time"].to_numpy(dtype="datetime64[ms]").view("int64") - DAY_START
    ) // 60_000
    lo[slot], hi[slot] = candles["low"].to_numpy(), candles["high"].to_numpy()

    results = audit(trades, candles)
    verdicts = {o.name: (o.passed, o.offending) for o in results}
    base = bare_numpy(cols, lo, hi)
    assert verdicts["trades_id_continuous"] == (False, 3) and base[0] == 1
    assert all(p for n, (p, _) in verdicts.items() if n != "trades_id_continuous"), verdicts

    t_base = median_seconds(lambda: bare_numpy(cols, lo, hi), args.repeat)
    t_audit = median_seconds(lambda: audit(trades, candles), args.repeat)
    print(f"rows                 {args.rows:,}")
    print(
        f"bare numpy pass      {t_base * 1000:8.1f} ms  ({args.rows / t_base / 1e6:6.1f} M rows/s)"
    )
    rate = args.rows / t_audit / 1e6
    print(f"all trades checks    {t_audit * 1000:8.1f} ms  ({rate:6.1f} M rows/s)")
    print(f"ratio audit/numpy    {t_audit / t_base:8.2f}x  (target <= 2.00x)")
    print(f"verdicts             {verdicts}")
    if args.gx:
        from petrosa_pipelines.checks.gx import validate_frame

        validate_frame("trades", trades.iloc[:1000])  # import and context outside the timing
        t_gx = median_seconds(lambda: validate_frame("trades", trades), 1)
        print(f"GX trades suite      {t_gx * 1000:8.1f} ms  (WARN check, outside the target)")


if __name__ == "__main__":
    main()
