"""The venues the local exchange speaks: one wire module per venue, one line per venue here.

Keys are venue ids as in ``petrosa_pipelines.exchanges.EXCHANGES``. The server routes every HTTP
request and websocket connection to the first wire that claims its path.
"""

from __future__ import annotations

from petrosa_pipelines.local_exchange.venues.base import VenueWire
from petrosa_pipelines.local_exchange.venues.binance.wire import BinanceWire
from petrosa_pipelines.local_exchange.venues.bybit.wire import BybitWire

WIRES: dict[str, type[VenueWire]] = {
    "binance-usdm": BinanceWire,
    "bybit-linear": BybitWire,
}
