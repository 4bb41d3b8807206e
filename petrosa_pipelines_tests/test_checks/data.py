"""Partitions for the auditing tests, built from the real recordings in ``fixtures/checks``.

Real days are relabelled to 2024 dates (partitions start 2024-01-01) by a constant ms shift.
Trades for a candle day are derived so that they re-aggregate exactly to the real candles (no
real day of aggTrades is recorded): per minute the open, the extremes and the close, with the
taker/maker volume split and the trade-id spans of the candle.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import LEVEL_COLUMNS
from petrosa_pipelines.catalog.schemas import DEPTH, FUNDING, TRADES, conform
from petrosa_pipelines.exchanges.binance.vision import parse_klines_csv
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_window_ms

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "checks"
REAL_DAYS = sorted(p.name for p in FIXTURES.glob("*-1m-*.csv"))


#: aggTrade fields as the trades dataset names them, in the order the archive and ws carry them
AGG_TRADE_COLUMNS = [
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "trade_time",
    "is_buyer_maker",
]


def real_candles(name: str, day: dt.date) -> pd.DataFrame:
    """A real Vision kline file relabelled to ``day``."""
    symbol, _, rest = name.partition("-1m-")
    src_day = dt.date.fromisoformat(rest.removesuffix(".csv"))
    frame = parse_klines_csv((FIXTURES / name).read_bytes(), symbol, "1m")
    shift = pd.Timedelta(milliseconds=day_window_ms(day)[0] - day_window_ms(src_day)[0])
    frame["open_time"] += shift
    frame["close_time"] += shift
    return frame


def trades_for_candles(candles: pd.DataFrame, first_agg_id: int = 1_000_000) -> pd.DataFrame:
    """aggTrades that re-aggregate exactly to ``candles`` (flat zero-trade minutes get none)."""
    rows = []
    agg_id, trade_id = first_agg_id, 50_000_000
    for c in candles.sort_values("open_time").itertuples():
        n = int(c.trade_count)
        if n == 0:
            continue
        t0 = int(c.open_time.value // 1_000_000)
        if n == 1 or c.high == c.low:
            prices = [c.open]
        else:
            path = [c.open, c.high, c.low, c.close]
            prices = (
                path
                if n >= 4
                else [c.open, c.high if c.low in (c.open, c.close) else c.low, c.close][:n]
            )
        taker, maker = c.taker_buy_volume, c.volume - c.taker_buy_volume
        if taker > 0 and maker > 0 and len(prices) == 1:
            prices = prices * 2  # a taker-buy and a taker-sell print at the same price
        k = len(prices)
        if maker <= 0:
            sides = [False] * k
        elif taker <= 0:
            sides = [True] * k
        else:
            sides = [i % 2 == 1 for i in range(k)]
        n_taker, n_maker = sides.count(False), sides.count(True)
        spans = [n // k + (1 if i < n % k else 0) for i in range(k)]
        for i, (p, maker_side) in enumerate(zip(prices, sides, strict=True)):
            qty = (maker / n_maker) if maker_side else (taker / n_taker)
            rows.append(
                (
                    agg_id,
                    p,
                    qty,
                    trade_id,
                    trade_id + spans[i] - 1,
                    t0 + 1 + i * (59_000 // k),
                    maker_side,
                )
            )
            agg_id += 1
            trade_id += spans[i]
    frame = pd.DataFrame(
        rows,
        columns=AGG_TRADE_COLUMNS,
    )
    frame["trade_time"] = pd.to_datetime(frame["trade_time"], unit="ms", utc=True)
    frame.insert(0, "symbol", candles["symbol"].iat[0])
    frame.insert(0, "exchange", "binance")
    frame["source"] = "archive"
    frame["received_at"] = pd.NaT
    return conform(frame, TRADES)


def real_ws_trades(symbol: str) -> pd.DataFrame:
    """One symbol's real aggTrade messages (cryptofeed 2021-07-22, ~30 s) as a trades frame."""
    rows = []
    for line in (FIXTURES / "aggTrade_cryptofeed_2021-07-22.jsonl").read_bytes().splitlines():
        d = orjson.loads(line)["data"]
        if d["s"] == symbol:
            rows.append(
                (d["a"], float(d["p"]), float(d["q"]), d["f"], d["l"], d["T"], d["m"], d["E"])
            )
    frame = pd.DataFrame(
        rows,
        columns=[*AGG_TRADE_COLUMNS, "received_at"],
    )
    for col in ("trade_time", "received_at"):
        frame[col] = pd.to_datetime(frame[col], unit="ms", utc=True)
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "exchange", "binance")
    frame["source"] = "ws"
    return conform(frame, TRADES)


def depth_frame(day: dt.date, seconds: int, top_n: int = 10) -> pd.DataFrame:
    """``seconds`` one-second samples of the real BTCUSDT book snapshot's top ``top_n`` levels,
    as depth version 2 (one row per snapshot; built as version 1 rows, then conformed)."""
    snap = json.loads((FIXTURES / "depth_BTCUSDT_reserialized.json").read_text())
    bids = [(float(p), float(q)) for p, q in snap["bids"][:top_n]]
    asks = [(float(p), float(q)) for p, q in snap["asks"][:top_n]]
    start = day_window_ms(day)[0]
    t = np.repeat(start + np.arange(seconds) * 1000, 2 * top_n)
    side = np.tile(np.repeat(["bid", "ask"], top_n), seconds)
    level = np.tile(np.r_[np.arange(top_n), np.arange(top_n)], seconds)
    price = np.tile([p for p, _ in bids] + [p for p, _ in asks], seconds)
    qty = np.tile([q for _, q in bids] + [q for _, q in asks], seconds)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "snapshot_time": pd.to_datetime(t, unit="ms", utc=True),
            "last_update_id": np.repeat(snap["lastUpdateId"] + np.arange(seconds) * 7, 2 * top_n),
            "side": side,
            "level": level,
            "price": price,
            "quantity": qty,
            "source": "ws",
            "received_at": pd.NaT,
        }
    )
    out = conform(frame, DEPTH)
    assert len(out) == seconds
    return out


def with_level(
    frame: pd.DataFrame,
    snapshot: int,
    side: str,
    level: int,
    *,
    price: float | None = None,
    quantity: float | None = None,
) -> pd.DataFrame:
    """A copy of a depth frame with one level of row ``snapshot`` changed (None: kept)."""
    out = frame.copy()
    for column, value in zip(LEVEL_COLUMNS[side], (price, quantity), strict=True):
        if value is not None:
            cells = out[column].to_numpy(dtype=object).copy()
            cells[snapshot] = cells[snapshot].copy()
            cells[snapshot][level] = value
            out[column] = cells
    return out


def funding_frame(day: dt.date, symbol: str = "BTCUSDT", hours: int = 8) -> pd.DataFrame:
    """A day of settlements, stamped a few ms late as Binance does (1640995200006)."""
    start = day_window_ms(day)[0]
    times = [start + i * hours * HOUR_MS + 6 for i in range(24 // hours)]
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "funding_time": pd.to_datetime(times, unit="ms", utc=True),
            "funding_rate": [0.0001, -0.00005, 0.000125][: len(times)]
            + [0.0001] * (len(times) - 3),
            "mark_price": [46210.5, 46300.1, 46150.0][: len(times)] + [46000.0] * (len(times) - 3),
            "source": "rest",
            "received_at": pd.NaT,
        }
    )
    return conform(frame, FUNDING)
