"""The local exchange: Binance USD-M futures REST, websocket streams and Vision archives, offline.

The market of the demo and of every test: a deterministic generator (``market.py``) behind a
server speaking Binance's formats, weights, limits and errors (``server.py``), an archive tree
like data.binance.vision (``archives.py``), replay of recordings (``replay.py``) and runtime
fault switches (``faults.py``). Every project endpoint URL is a setting, so the same code talks
to this and to Binance.
"""

from petrosa_pipelines.local_exchange.archives import VisionArchive
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
