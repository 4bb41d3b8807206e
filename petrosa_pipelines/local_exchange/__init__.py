"""The local exchange: each venue's REST, websocket streams and archives, offline, on one port.

The market of the demo and of every test: one venue-neutral deterministic generator
(``generator.py``; ``market.py`` keeps the names callers import) behind a server (``exchange.py``)
that routes each path to a venue's wire module (``venues/``: formats, weights, limits, errors,
archives, subscribe protocols), replay of recordings (``replay.py``) and runtime fault switches
(``faults.py``) that apply to every venue. Every project endpoint URL is a setting, so the same
code talks to this and to the real venues.
"""

from petrosa_pipelines.local_exchange.faults import Faults
from petrosa_pipelines.local_exchange.market import Market, MarketConfig, SymbolSpec
from petrosa_pipelines.local_exchange.replay import Recording
from petrosa_pipelines.local_exchange.server import (
    LocalExchange,
    SimulatedClock,
    WallClock,
    exchange_info,
    main,
)
from petrosa_pipelines.local_exchange.venues.binance.vision import VisionArchive

__all__ = [
    "Faults",
    "LocalExchange",
    "Market",
    "MarketConfig",
    "Recording",
    "SimulatedClock",
    "SymbolSpec",
    "VisionArchive",
    "WallClock",
    "exchange_info",
    "main",
]
