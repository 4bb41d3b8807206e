"""Where an exchange is and how its REST clients behave: plain values, no imports of ours.

They live below ``settings`` (which reads them from the environment) so that the exchange
clients can take them without importing ``settings``, which validates names against the
exchange registry: the flow stays one way (settings -> exchanges -> lib).
"""

from __future__ import annotations

from dataclasses import dataclass

LIVE_BINANCE_REST = "https://fapi.binance.com"
LIVE_BINANCE_WS = "wss://fstream.binance.com"
LIVE_BINANCE_VISION = "https://data.binance.vision"


@dataclass(frozen=True)
class ExchangeEndpoints:
    """Base URLs of one exchange; live Binance USD-M futures by default."""

    rest_base_url: str = LIVE_BINANCE_REST
    ws_base_url: str = LIVE_BINANCE_WS
    vision_base_url: str = LIVE_BINANCE_VISION


@dataclass(frozen=True)
class RestSettings:
    """How the REST history client behaves towards the exchange's limits."""

    #: fraction of the venue's rate limit the client allows itself to use (every venue)
    weight_budget_fraction: float = 0.8
    #: Binance USD-M's weight limit per minute when exchangeInfo has not been read (2400);
    #: other venues declare theirs in their ``RateModel`` (Bybit: 600 requests per 5 s)
    weight_limit_per_minute: int = 2400
    max_retries: int = 6
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    #: per socket read (and connect)
    timeout_seconds: float = 30.0
    #: a whole request (headers and body) must finish within this; a server that drips bytes
    #: never trips the per-read timeout
    deadline_seconds: float = 300.0
    #: a rate-limit wait (Retry-After, a ban, a venue's reset time, a shared-budget block)
    #: longer than this fails the run instead of sleeping (Binance bans last 2 min to 3 days)
    max_wait_seconds: float = 900.0
    #: directory of a budget file shared by every process on this machine (one IP, one budget);
    #: None keeps the budget per process
    weight_budget_dir: str | None = None
