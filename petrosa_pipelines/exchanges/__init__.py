"""Exchange adapters: one module per exchange, one line per exchange in ``EXCHANGES``."""

from __future__ import annotations

from petrosa_pipelines.exchanges.base import ExchangeAdapter
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter

EXCHANGES: dict[str, type[ExchangeAdapter]] = {
    "binance": BinanceUsdmAdapter,
}


def get_adapter(name: str) -> ExchangeAdapter:
    """The adapter registered under ``name``; a clear error for unknown names."""
    try:
        return EXCHANGES[name]()
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; registered: {sorted(EXCHANGES)}") from None
