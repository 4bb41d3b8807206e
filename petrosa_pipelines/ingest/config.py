"""Settings of one ingest stream group (an exchange, a set of symbols and datasets).

Every duration is a field so tests can rotate connections in seconds and production can stay
under Binance's limits (24 h connection lifetime, 3 min server pings, 10 incoming msgs/s).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from petrosa_pipelines.landing.store import (
    DEFAULT_DEPTH_CADENCE_MS,
    DEFAULT_DEPTH_LOOKBACK_MS,
    DEFAULT_DEPTH_TOP_N,
)
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.settings import (
    LIVE_BINANCE_REST,
    LIVE_BINANCE_WS,
    SYMBOL_PATTERN,
    SettingError,
)

ALL_DATASETS = ("trades", "candles", "depth", "funding")
#: a group name becomes a landing directory and a run tag
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
INGEST_GROUPS_VAR = "PETROSA_INGEST_GROUPS"
_GROUP_KEYS = {"name", "symbols", "datasets", "exchange", "enabled", "run_config"}


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
        if not isinstance(self.group, str) or not GROUP_NAME.fullmatch(self.group):
            raise ValueError(f"group {self.group!r} must match {GROUP_NAME.pattern}")
        check_symbols("symbols", self.symbols, allow_empty=True)
        if isinstance(self.datasets, str):
            raise ValueError(f"datasets must be a list of names, not the string {self.datasets!r}")
        unknown = set(self.datasets) - set(ALL_DATASETS)
        if unknown:
            raise ValueError(f"unknown datasets {sorted(unknown)}; known {list(ALL_DATASETS)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s") and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{f.name}={value!r} must be a finite number of seconds > 0")
        for name in ("depth_cadence_ms", "depth_top_n", "depth_snapshot_limit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port!r} must be 0..65535 or None")
        if self.book_checkpoint_s * 1000 >= DEFAULT_DEPTH_LOOKBACK_MS:
            raise ValueError("book_checkpoint_s must stay below the readers' depth lookback (1 h)")
        if self.rotation_overlap_s <= 0 or self.max_connection_age_s <= 0:
            raise ValueError("connection age and overlap must be positive")


def check_symbols(name: str, symbols: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    """``symbols`` as upper-case venue symbols; a bare string is refused (``tuple("BTCUSDT")``
    would silently stream seven one-letter symbols)."""
    if isinstance(symbols, str | bytes) or not isinstance(symbols, list | tuple):
        raise ValueError(f"{name} must be a list of symbols, got {symbols!r}")
    if not symbols and not allow_empty:
        raise ValueError(f"{name} is empty; list at least one symbol")
    out = []
    for s in symbols:
        sym = s.strip().upper() if isinstance(s, str) else s
        if not isinstance(sym, str) or not SYMBOL_PATTERN.fullmatch(sym):
            raise ValueError(f"{name}: {s!r} is not a symbol (A-Z and 0-9, e.g. BTCUSDT)")
        out.append(sym)
    return tuple(out)


def parse_ingest_groups(raw: str, var: str = INGEST_GROUPS_VAR) -> list[dict[str, Any]]:
    """The stream groups of ``PETROSA_INGEST_GROUPS``, checked; every problem is a
    ``SettingError`` naming the variable, the group and the key.

    ``[{"name": "majors", "symbols": ["BTCUSDT"], "datasets": ["trades"], "enabled": true,
    "exchange": "binance", "run_config": {...}}]``; returns normalised dicts (symbols
    upper-case tuples, datasets tuples, defaults filled in).
    """
    example = '[{"name": "majors", "symbols": ["BTCUSDT", "ETHUSDT"]}]'
    try:
        groups = json.loads(raw)
    except ValueError as exc:
        raise SettingError(var, raw, f"a JSON list of groups like {example} ({exc})") from None
    if not isinstance(groups, list) or not groups:
        raise SettingError(var, raw, f"a non-empty JSON list of groups like {example}")
    out = [_parse_group(f"{var}[{i}]", g, example) for i, g in enumerate(groups)]
    names = [g["name"] for g in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SettingError(var, dupes, "unique group names")
    return out


def _parse_group(where: str, g: Any, example: str) -> dict[str, Any]:
    if not isinstance(g, dict):
        raise SettingError(where, g, f"an object like {example[1:-1]}")
    extra = set(g) - _GROUP_KEYS
    if extra:
        raise SettingError(where, sorted(extra), f"keys among {sorted(_GROUP_KEYS)}")
    name = g.get("name")
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise SettingError(f"{where}.name", name, f"a name matching {GROUP_NAME.pattern}")
    try:
        symbols = check_symbols(f"{where}.symbols", g.get("symbols"))
    except ValueError as exc:
        raise SettingError(f"{where}.symbols", g.get("symbols"), str(exc)) from None
    datasets = g.get("datasets", list(ALL_DATASETS))
    if not isinstance(datasets, list) or not datasets or not set(datasets) <= set(ALL_DATASETS):
        raise SettingError(f"{where}.datasets", datasets, f"a list among {list(ALL_DATASETS)}")
    exchange = g.get("exchange", "binance")
    if not isinstance(exchange, str) or not exchange:
        raise SettingError(f"{where}.exchange", exchange, "an exchange name")
    enabled = g.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingError(f"{where}.enabled", enabled, "true or false")
    run_config = g.get("run_config", {})
    if not isinstance(run_config, dict):
        raise SettingError(f"{where}.run_config", run_config, "an object")
    return {
        "name": name,
        "symbols": symbols,
        "datasets": tuple(datasets),
        "exchange": exchange,
        "enabled": enabled,
        "run_config": run_config,
    }
