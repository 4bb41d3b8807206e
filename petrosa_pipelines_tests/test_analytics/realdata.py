"""Loaders of the real fixtures in fixtures/analytics/: Decimal references and frames.

The reference side parses every number with ``Decimal`` (never float) so it is independent of
the float code under test; the frame side gives the canonical dataset columns.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd

from petrosa_pipelines.catalog.depth_layout import LEVEL_COLUMNS, as_float_lists

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "analytics"
VISION_FIELDS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
DECIMAL_FIELDS = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
]
VISION_DAYS = ["2022-01-01", "2022-05-01", "2023-11-14"]


def vision_rows(symbol: str, day: str) -> list[dict]:
    """Rows of a Vision 1m kline CSV (header or not) with Decimal prices and int times."""
    with open(FIXTURES / f"{symbol}-1m-{day}.csv", newline="") as f:
        rows = list(csv.reader(f))
    if rows[0][0] == "open_time":
        rows = rows[1:]
    out = []
    for r in rows:
        rec = dict(zip(VISION_FIELDS, r, strict=True))
        out.append(
            {
                **{k: Decimal(rec[k]) for k in DECIMAL_FIELDS},
                "open_time": int(rec["open_time"]),
                "close_time": int(rec["close_time"]),
                "count": int(rec["count"]),
            }
        )
    return out


def candles_frame(rows: list[dict], symbol: str, shift_days: int = 0) -> pd.DataFrame:
    """Canonical 1m candle frame (floats from the exact decimal strings), optionally re-dated."""
    shift = shift_days * 86_400_000
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "interval": "1m",
            "open_time": pd.to_datetime(
                [r["open_time"] + shift for r in rows], unit="ms", utc=True
            ),
            "close_time": pd.to_datetime(
                [r["close_time"] + shift for r in rows], unit="ms", utc=True
            ),
            **{k: [float(r[k]) for r in rows] for k in DECIMAL_FIELDS},
            "trade_count": [r["count"] for r in rows],
            "source": "archive",
            "received_at": pd.NaT,
        }
    )
    for col in ("open_time", "close_time", "received_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ms, UTC]")
    for col in ("exchange", "symbol", "interval", "source"):
        frame[col] = frame[col].astype("string")
    return frame


def vision_candles(symbol: str, day: str, shift_days: int = 0) -> pd.DataFrame:
    return candles_frame(vision_rows(symbol, day), symbol, shift_days)


def hft_trade_rows() -> list[dict]:
    """hftbacktest BTCUSDT ``trade`` messages (one trade each) as Decimal rows."""
    out = []
    with open(FIXTURES / "hftbacktest_2023-04-04_BTCUSDT_trade.jsonl") as f:
        for line in f:
            d = json.loads(line)["data"]
            out.append(
                {"id": d["t"], "T": d["T"], "p": Decimal(d["p"]), "q": Decimal(d["q"]), "m": d["m"]}
            )
    return out


def trades_frame(rows: list[dict], symbol: str = "BTCUSDT") -> pd.DataFrame:
    """Canonical trades frame; a plain trade maps to first_trade_id = last_trade_id = its id."""
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "agg_trade_id": [r["id"] for r in rows],
            "price": [float(r["p"]) for r in rows],
            "quantity": [float(r["q"]) for r in rows],
            "first_trade_id": [r.get("f", r["id"]) for r in rows],
            "last_trade_id": [r.get("l", r["id"]) for r in rows],
            "trade_time": pd.to_datetime([r["T"] for r in rows], unit="ms", utc=True),
            "is_buyer_maker": [r["m"] for r in rows],
            "source": "ws",
            "received_at": pd.NaT,
        }
    )
    frame["trade_time"] = frame["trade_time"].astype("datetime64[ms, UTC]")
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True).astype(
        "datetime64[ms, UTC]"
    )
    return frame


def agg_trade_rows(symbol: str) -> list[dict]:
    """cryptofeed 2021-07-22 ``aggTrade`` messages of one symbol as Decimal rows."""
    out = []
    with open(FIXTURES / "cryptofeed_2021-07-22_aggTrade.jsonl") as f:
        for line in f:
            d = json.loads(line)["data"]
            if d["s"] == symbol:
                out.append(
                    {
                        "id": d["a"],
                        "f": d["f"],
                        "l": d["l"],
                        "T": d["T"],
                        "p": Decimal(d["p"]),
                        "q": Decimal(d["q"]),
                        "m": d["m"],
                    }
                )
    return out


def depth_snapshot() -> dict:
    """The real 1000-level BTCUSDT REST snapshot: {'bids': [(Decimal, Decimal)], 'asks': ...}."""
    data = json.loads(
        (FIXTURES / "hftbacktest_2023-04-04_depth_BTCUSDT_reserialized.json").read_text()
    )
    return {
        "time": data["E"],
        "bids": [(Decimal(p), Decimal(q)) for p, q in data["bids"]],
        "asks": [(Decimal(p), Decimal(q)) for p, q in data["asks"]],
    }


def depth_frame(books: list[tuple[int, list, list]], symbol: str = "BTCUSDT") -> pd.DataFrame:
    """Depth (version 2: one row per snapshot, each side's levels as lists in the order given,
    best first) from (ms, bids, asks) books of (price, quantity) pairs."""
    times = pd.to_datetime([ms for ms, _, _ in books], unit="ms", utc=True)
    times = times.astype("datetime64[ms, UTC]")
    side = {"bid": [bids for _, bids, _ in books], "ask": [asks for _, _, asks in books]}
    frame = pd.DataFrame(
        {"exchange": "binance", "symbol": symbol, "snapshot_time": times, "last_update_id": 1}
    )
    for name, levels in side.items():
        for i, column in enumerate(LEVEL_COLUMNS[name]):
            frame[column] = as_float_lists([[float(lv[i]) for lv in book] for book in levels])
    frame["source"] = "ws"
    frame["received_at"] = frame["snapshot_time"]
    return frame


def book_ticker_rows() -> list[dict]:
    """First 2,000 real bookTicker messages: best bid/ask with sizes, Decimal."""
    out = []
    with open(FIXTURES / "hftbacktest_2023-04-04_BTCUSDT_bookTicker_first2000.jsonl") as f:
        for line in f:
            d = json.loads(line)["data"]
            out.append(
                {
                    "T": d["T"],
                    "u": d["u"],
                    "b": Decimal(d["b"]),
                    "B": Decimal(d["B"]),
                    "a": Decimal(d["a"]),
                    "A": Decimal(d["A"]),
                }
            )
    return out
