"""Bybit-shaped trades and candles for the venue-aware fill and checks, and a stand-in venue.

Bybit linear trades carry a UUID id (``i``) with no order, and one taker order's fills share one
``seq`` (shared data PROVENANCE quirk 26; petrosa_pipelines_tests/fixtures/bybit/PROVENANCE.md).
The adapter's contract (``exchanges/base.py``): ``trade_id`` = the UUID, ``agg_trade_id`` =
seq * 1000 + index within the message where the source has ``seq`` (ws, REST), else 0 (the
archive); ``first_trade_id`` = ``last_trade_id`` = ``agg_trade_id``. Its klines carry no trade
count and no taker-buy volume (the parser writes 0), so candles here do the same.

``STANDIN`` is a registered venue with Bybit's declared guarantees under a name of its own, so
these tests hold whether or not the real Bybit adapter is registered yet.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines import exchanges
from petrosa_pipelines.catalog.schemas import CANDLES, TRADES, conform
from petrosa_pipelines.exchanges.base import ArchiveSpec, Capabilities, Dataset
from petrosa_pipelines.lib.timeutil import MINUTE_MS

STANDIN = "bybitlike"
SYMBOL = "BTCUSDT"
#: what Bybit linear declares for trades, candles and depth
STANDIN_CAPABILITIES = Capabilities(
    datasets=frozenset(Dataset),
    rest_reach_ms={Dataset.CANDLES: None, Dataset.FUNDING: None},
    archives=(ArchiveSpec(Dataset.TRADES, "daily", False, "https://public.bybit.com/trading/"),),
    trade_ids_consecutive=False,
    depth_history=True,
    book_snapshot_in_stream=True,
)


class StandinAdapter:
    """Only what the registry lookup reads (``adapter_class``): names and capabilities."""

    venue: ClassVar[str] = f"{STANDIN}-linear"
    name: ClassVar[str] = STANDIN
    capabilities: ClassVar[Capabilities] = STANDIN_CAPABILITIES
    symbol_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Z0-9]{2,30}")


def register_standin(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the stand-in venue for one test (call from a fixture); its storage name."""
    monkeypatch.setitem(exchanges.EXCHANGES, StandinAdapter.venue, StandinAdapter)
    return STANDIN


def bybit_trades(start_ms: int, minutes: int, per_minute: int = 8, seed: int = 0) -> pd.DataFrame:
    """A TRADES frame of ``minutes`` active minutes from ``start_ms``: UUID ids, seq-based
    aggregate ids (several fills per message), quantities of Bybit's 0.001 lot."""
    rng = np.random.default_rng(seed)
    n = minutes * per_minute
    minute = np.repeat(np.arange(minutes, dtype=np.int64), per_minute)
    times = np.sort(start_ms + minute * MINUTE_MS + rng.integers(0, MINUTE_MS, n))
    # one message (one seq) per run of 1-3 fills; seq jumps by other topics' messages
    msg = np.cumsum(rng.random(n) < 0.5)
    seq = 753_843_900_000 + msg * 17
    index = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        index[i] = index[i - 1] + 1 if msg[i] == msg[i - 1] else 0
    agg = seq * 1000 + index
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=5)) for _ in range(n)]  # as Bybit's
    frame = pd.DataFrame(
        {
            "exchange": STANDIN,
            "symbol": SYMBOL,
            "agg_trade_id": agg,
            "price": np.round(65_000 + rng.normal(0, 20, n), 1),
            "quantity": rng.integers(1, 3_000, n) / 1000,
            "first_trade_id": agg,
            "last_trade_id": agg,
            "trade_time": pd.to_datetime(times, unit="ms", utc=True),
            "is_buyer_maker": rng.random(n) < 0.5,
            "source": "ws",
            "received_at": pd.to_datetime(times + 5, unit="ms", utc=True),
            "trade_id": ids,
        }
    )
    return conform(frame, TRADES)


def as_archive(trades: pd.DataFrame) -> pd.DataFrame:
    """The same trades as the day archive gives them: no seq (id 0), no receipt time."""
    out = trades.copy()
    out["agg_trade_id"] = out["first_trade_id"] = out["last_trade_id"] = 0
    out["source"] = "archive"
    out["received_at"] = pd.NaT
    return conform(out, TRADES)


def bybit_candles(trades: pd.DataFrame) -> pd.DataFrame:
    """The venue's 1m candles of ``trades``: volume is the decimal sum of the fills' sizes (as
    Bybit's kline.1 is, measured on the real capture), no trade count, no taker-buy volume."""
    ms = trades["trade_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    t = trades.assign(_m=ms // MINUTE_MS * MINUTE_MS).sort_values(["_m", "trade_time"])
    rows = []
    for m, g in t.groupby("_m", sort=True):
        vol = sum((Decimal(repr(q)) for q in g["quantity"]), Decimal(0))
        quote = sum(
            (
                Decimal(repr(p)) * Decimal(repr(q))
                for p, q in zip(g["price"], g["quantity"], strict=True)
            ),
            Decimal(0),
        )
        rows.append(
            {
                "exchange": STANDIN,
                "symbol": SYMBOL,
                "interval": "1m",
                "open_time": pd.Timestamp(int(m), unit="ms", tz="UTC"),
                "close_time": pd.Timestamp(int(m) + MINUTE_MS - 1, unit="ms", tz="UTC"),
                "open": g["price"].iloc[0],
                "high": g["price"].max(),
                "low": g["price"].min(),
                "close": g["price"].iloc[-1],
                "volume": float(vol),
                "quote_volume": float(quote),
                "trade_count": 0,
                "taker_buy_volume": 0.0,
                "taker_buy_quote_volume": 0.0,
                "source": "ws",
                "received_at": pd.NaT,
            }
        )
    return conform(pd.DataFrame(rows), CANDLES)
