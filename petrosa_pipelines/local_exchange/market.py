"""The market the local exchange serves, under the names its callers import.

:class:`Market` is the venue-neutral generator (``generator.py``: prices, the correlated factor,
trades, candles, funding, book evolution) with Binance USD-M's payloads of it attached
(``venues/binance/frames.py``), as callers and tests have always used it. Other venues format the
same generator in their own wire modules (``venues/``), so every venue sees one market.
"""

from __future__ import annotations

from petrosa_pipelines.local_exchange.arrays import BookState, DayTrades, KlineArrays
from petrosa_pipelines.local_exchange.config import (
    KNOWN_SYMBOLS,
    MarketConfig,
    SymbolSpec,
    symbol_spec,
)
from petrosa_pipelines.local_exchange.units import (
    BOOK_STEP_MS,
    DAY_MS,
    FUNDING_INTERVAL_MS,
    INTERVALS_MS,
    MINUTE_MS,
    day_start_ms,
    fmt_fixed,
    fmt_many,
    stable_hash,
    to_date,
)
from petrosa_pipelines.local_exchange.venues.binance.frames import KLINE_COLUMNS, BinanceMarket


class Market(BinanceMarket):
    """Deterministic trades, klines, funding, books and mark prices for the configured symbols,
    with Binance's payloads (the local exchange's historic default venue)."""


__all__ = [
    "BOOK_STEP_MS",
    "DAY_MS",
    "FUNDING_INTERVAL_MS",
    "INTERVALS_MS",
    "KLINE_COLUMNS",
    "KNOWN_SYMBOLS",
    "MINUTE_MS",
    "BookState",
    "DayTrades",
    "KlineArrays",
    "Market",
    "MarketConfig",
    "SymbolSpec",
    "day_start_ms",
    "fmt_fixed",
    "fmt_many",
    "stable_hash",
    "symbol_spec",
    "to_date",
]
