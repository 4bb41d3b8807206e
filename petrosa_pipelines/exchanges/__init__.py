"""Exchange adapters: one package per venue, one line per venue in ``EXCHANGES``.

Keys are venue ids (``<exchange>-<market>``), the first part of every instrument id
(``petrosa_pipelines.instruments``). ``get_adapter`` also accepts an adapter's storage ``name``
(Binance USD-M's historic ``binance``, the ``PETROSA_EXCHANGE`` default before venues had ids).
"""

from __future__ import annotations

from petrosa_pipelines.exchanges.base import ExchangeAdapter
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter

EXCHANGES: dict[str, type[ExchangeAdapter]] = {
    "binance-usdm": BinanceUsdmAdapter,
    "bybit-linear": BybitLinearAdapter,
}


def adapter_class(name: str) -> type[ExchangeAdapter]:
    """The adapter class for a venue id or storage name; a clear error for unknown names."""
    cls = EXCHANGES.get(name) or next((c for c in EXCHANGES.values() if c.name == name), None)
    if cls is None:
        known = sorted({*EXCHANGES, *(c.name for c in EXCHANGES.values())})
        raise ValueError(f"unknown exchange {name!r}; registered: {known}")
    return cls


def get_adapter(name: str) -> ExchangeAdapter:
    """A fresh adapter for a venue id (``binance-usdm``) or storage name (``binance``)."""
    return adapter_class(name)()


def venue_of(name: str) -> str:
    """The venue id for a venue id or storage name."""
    return adapter_class(name).venue
