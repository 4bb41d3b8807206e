"""Settings of one ingest stream group (an exchange, a set of symbols and datasets).

Every duration is a field so tests can rotate connections in seconds and production can stay
under Binance's limits (24 h connection lifetime, 3 min server pings, 10 incoming msgs/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from petrosa_pipelines.landing.store import (
    DEFAULT_DEPTH_CADENCE_MS,
    DEFAULT_DEPTH_LOOKBACK_MS,
    DEFAULT_DEPTH_TOP_N,
)
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.settings import LIVE_BINANCE_REST, LIVE_BINANCE_WS

ALL_DATASETS = ("trades", "candles", "depth", "funding")


@dataclass(frozen=True)
class IngestConfig:
    """One stream group. ``group`` names the landing directory and the supervisor's tag."""

    group: str
    symbols: tuple[str, ...]
    datasets: tuple[str, ...] = ALL_DATASETS
    exchange: str = "binance"
    landing_path: str = "data/landing"
    ws_base_url: str = LIVE_BINANCE_WS
    rest_base_url: str = LIVE_BINANCE_REST
    #: open a replacement connection when the current one is this old (Binance cuts at 24 h)
    max_connection_age_s: float = 23 * 3600.0
    #: the old connection stays until every stream overlapped, at most this long
    rotation_overlap_s: float = 10.0
    #: client keepalive pings (the library answers the server's pings by itself)
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    open_timeout_s: float = 10.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 30.0
    #: no mark-price tick (1 s stream) for this long means the feed is dead, not a quiet market
    stale_after_s: float = 10.0
    depth_cadence_ms: int = DEFAULT_DEPTH_CADENCE_MS
    depth_top_n: int = DEFAULT_DEPTH_TOP_N
    depth_snapshot_limit: int = 1000
    #: a full book checkpoint is landed this often (must stay below the readers' lookback)
    book_checkpoint_s: float = 600.0
    heartbeat_interval_s: float = 5.0
    #: serve Prometheus text metrics on this port (None: off; 0: any free port)
    metrics_port: int | None = None
    #: re-read the wanted symbols (``symbols_provider``) this often
    symbols_poll_s: float = 15.0
    writer: WriterConfig = field(default_factory=WriterConfig)

    def __post_init__(self) -> None:
        unknown = set(self.datasets) - set(ALL_DATASETS)
        if unknown:
            raise ValueError(f"unknown datasets {sorted(unknown)}; known {list(ALL_DATASETS)}")
        if self.book_checkpoint_s * 1000 >= DEFAULT_DEPTH_LOOKBACK_MS:
            raise ValueError("book_checkpoint_s must stay below the readers' depth lookback (1 h)")
        if self.rotation_overlap_s <= 0 or self.max_connection_age_s <= 0:
            raise ValueError("connection age and overlap must be positive")
