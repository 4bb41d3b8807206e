"""Which venue a partition belongs to and what that venue guarantees, for the pure checks.

The checks judge a partition by what its venue declares (``exchanges/base.py``:
``Capabilities``): a trade-id gap is a lost trade only where ids are consecutive (Binance
aggTrades, not Bybit's UUIDs), and an empty depth day before the ingest started can be judged
only where book history exists. The venue is the caller's (the partition's instrument) or,
failing that, the rows' ``exchange``; a name no adapter has keeps Binance's rules, the only
ones that existed before venues declared anything.
"""

from __future__ import annotations

import pandas as pd

from petrosa_pipelines.exchanges.base import Capabilities
from petrosa_pipelines.market_data.sources import venue_capabilities


def frame_exchange(frame: pd.DataFrame | None) -> str | None:
    """The ``exchange`` of a partition's first row (None when it has none)."""
    if frame is None or not len(frame) or "exchange" not in frame.columns:
        return None
    return str(frame["exchange"].iat[0])


def capabilities_of(
    frame: pd.DataFrame | None,
    exchange: str | None = None,
    capabilities: Capabilities | None = None,
) -> Capabilities | None:
    """``capabilities`` if given, else those of ``exchange`` or of the rows' exchange."""
    if capabilities is not None:
        return capabilities
    name = exchange or frame_exchange(frame)
    return venue_capabilities(name) if name else None


def ids_consecutive(caps: Capabilities | None) -> bool:
    """Whether a missing trade id is a lost trade (unknown venue: Binance's rules, yes)."""
    return caps is None or caps.trade_ids_consecutive


def venue_label(frame: pd.DataFrame | None, exchange: str | None = None) -> str:
    """A name for messages: the venue's exchange name, or "this venue"."""
    return exchange or frame_exchange(frame) or "this venue"
