"""Settings of one ingest stream group (a venue, a set of symbols and datasets).

Every duration is a field so tests can rotate connections in seconds and production can stay
under a venue's limits (Binance: 24 h connection lifetime, 3 min server pings, 10 incoming
msgs/s). ``exchange`` is a venue id (``binance-usdm``) or a storage name (``binance``), both
resolved by ``petrosa_pipelines.exchanges``; symbols are checked against that venue's pattern.

``source`` says where frames come from: ``websocket`` (the venue's, the default) or ``nats``:
a NATS subject carrying the venue's frames, such as the Petrosa socket-client's envelopes on
``binance.futures.websocket.data`` (``ingest/nats_source.py``). With ``nats_stream`` set (a
JetStream stream capturing the subject) a durable consumer acknowledges each message only after
it landed durably; without, core NATS, missed messages are detected and ledgered. The server
URL may hold credentials, so it only ever comes from an environment variable (``nats_url_env``,
``PETROSA_NATS_URL`` by default); a group or run config may name a credential-free URL.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from petrosa_pipelines.exchanges import adapter_class
from petrosa_pipelines.exchanges.base import declared_endpoints
from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.landing.store import (
    DEFAULT_DEPTH_CADENCE_MS,
    DEFAULT_DEPTH_LOOKBACK_MS,
    DEFAULT_DEPTH_TOP_N,
)
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.settings import (
    NATS_URL_VAR,
    SOCKET_CLIENT_SUBJECT,
    SYMBOL_PATTERN,
    SettingError,
    check_nats_url,
    endpoint_variables,
    mask_nats_url,
    nats_url_from_env,
    nats_url_has_credentials,
)

#: every dataset a group may stream (``instruments.DATASETS``, the one owner of the list)
ALL_DATASETS = DATASETS
#: a group name becomes a landing directory and a run tag
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
INGEST_GROUPS_VAR = "PETROSA_INGEST_GROUPS"
SOURCES = ("websocket", "nats")
#: the NATS keys of a group (and of ``IngestConfig``); ``nats_url`` must carry no credentials
NATS_KEYS = (
    "nats_url",
    "nats_url_env",
    "nats_subject",
    "nats_stream",
    "nats_durable",
    "nats_deliver_policy",
)
_GROUP_KEYS = {"name", "symbols", "datasets", "exchange", "enabled", "run_config", "source"}
_GROUP_KEYS |= {"stream_profile"}
_GROUP_KEYS |= set(NATS_KEYS)
#: a NATS subject: dot-separated tokens, ``*`` and a final ``>`` as wildcards, no whitespace
NATS_SUBJECT = re.compile(r"[^\s.*>]+|\*")
#: JetStream stream and consumer names: no whitespace, ``.``, ``*``, ``>``, path separators
JS_NAME = re.compile(r"[^\s.*>/\\]{1,255}")
#: an environment variable name
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: JetStream deliver policies a new durable consumer may start with (``all``: every message
#: the stream holds; ``new``: from its creation; ``last_per_subject``)
DELIVER_POLICIES = ("all", "new", "last_per_subject")


@dataclass(frozen=True)
class IngestConfig:
    """One stream group. ``group`` names the landing directory and the supervisor's tag."""

    group: str
    symbols: tuple[str, ...]
    datasets: tuple[str, ...] = ALL_DATASETS
    exchange: str = "binance"
    landing_path: str = "data/landing"
    #: empty: the venue's live endpoints (its adapter's ``default_endpoints``)
    ws_base_url: str = ""
    rest_base_url: str = ""
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
    #: which of the venue's streams carry the datasets (empty: the venue's default; Binance:
    #: ``socket-client`` for the Petrosa socket-client's ``@trade``/``@depth20``/``@ticker``,
    #: ``exchanges/binance/adapter.py`` ``STREAM_PROFILES``)
    stream_profile: str = ""
    #: ``websocket`` (the venue's) or ``nats`` (see the module docstring)
    source: str = "websocket"
    #: the NATS URL (may hold a token: never shown by ``repr``, never logged); empty: read from
    #: the environment variable ``nats_url_env`` (else ``settings.DEFAULT_NATS_URL``)
    nats_url: str = field(default="", repr=False)
    nats_url_env: str = NATS_URL_VAR
    nats_subject: str = SOCKET_CLIENT_SUBJECT
    #: a JetStream stream capturing ``nats_subject``: durable consumer, ack after landing
    nats_stream: str | None = None
    #: the durable consumer's name (empty: ``petrosa-<group>``, ``.`` as ``_``)
    nats_durable: str = ""
    nats_deliver_policy: str = "all"
    #: JetStream redelivers what is not acknowledged this long after delivery
    nats_ack_wait_s: float = 60.0
    #: at most this many delivered and unacknowledged messages (what a restart may redeliver;
    #: the restarted engine reads back at least this many landed lines to drop those again)
    nats_max_ack_pending: int = 20_000
    #: core NATS: messages buffered for a slow reader before the client drops (and we ledger)
    nats_pending_msgs_limit: int = 1_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not GROUP_NAME.fullmatch(self.group):
            raise ValueError(f"group {self.group!r} must match {GROUP_NAME.pattern}")
        self._check_venue()
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
        self._check_source()

    def _check_source(self) -> None:
        """The source is known; a NATS source has a URL (from the environment if not given),
        a subject, and valid JetStream names."""
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} must be one of {list(SOURCES)}")
        if self.source != "nats":
            return
        for name in ("nats_max_ack_pending", "nats_pending_msgs_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be an integer > 0")
        if not isinstance(self.nats_url_env, str) or not ENV_NAME.fullmatch(self.nats_url_env):
            raise ValueError(f"nats_url_env={self.nats_url_env!r} must be a variable name")
        url = self.nats_url or nats_url_from_env(self.nats_url_env)  # SettingError names it
        object.__setattr__(self, "nats_url", check_nats_url("nats_url", url))
        check_nats_subject("nats_subject", self.nats_subject)
        if self.nats_stream is not None:
            check_js_name("nats_stream", self.nats_stream)
        if not self.nats_durable:
            object.__setattr__(self, "nats_durable", default_durable(self.group))
        check_js_name("nats_durable", self.nats_durable)
        if self.nats_deliver_policy not in DELIVER_POLICIES:
            raise ValueError(
                f"nats_deliver_policy={self.nats_deliver_policy!r} must be one of "
                f"{list(DELIVER_POLICIES)}"
            )

    def _check_venue(self) -> None:
        """The venue exists, the symbols are its own, unset URLs are its live ones."""
        if not isinstance(self.exchange, str):
            raise ValueError(f"exchange must be a venue id or name, got {self.exchange!r}")
        venue = adapter_class(self.exchange)  # ValueError naming the registered ones
        if self.stream_profile:
            make_adapter(self.exchange, self.stream_profile)  # ValueError naming the key
        check_symbols("symbols", self.symbols, allow_empty=True, pattern=venue.symbol_pattern)
        live = declared_endpoints(venue)
        for url in ("ws_base_url", "rest_base_url"):
            if not getattr(self, url):
                if live is None:
                    raise ValueError(
                        f"{url} is needed: {venue.venue} has no live default (its adapter "
                        f"declares no default_endpoints; the settings read it from "
                        f"{endpoint_variables(venue.venue)[url]})"
                    )
                object.__setattr__(self, url, getattr(live, url))


def make_adapter(exchange: str, stream_profile: str = "") -> Any:
    """A fresh adapter of ``exchange`` with ``stream_profile`` (empty: the venue's default);
    ``ValueError`` naming ``stream_profile`` when the venue has no such profile."""
    cls = adapter_class(exchange)
    if not stream_profile:
        return cls()
    try:
        return cls(stream_profile=stream_profile)
    except TypeError:
        raise ValueError(f"stream_profile={stream_profile!r}: {cls.venue} has none") from None
    except ValueError as exc:
        raise ValueError(f"stream_profile={stream_profile!r}: {exc}") from None


def default_durable(group: str) -> str:
    """The durable consumer of a group: ``petrosa-<group>`` (``.`` is not allowed in it)."""
    return "petrosa-" + group.replace(".", "_")


def check_nats_subject(name: str, subject: Any) -> str:
    """A subject to subscribe to (wildcards allowed), or ``ValueError`` naming ``name``."""
    tokens = subject.split(".") if isinstance(subject, str) else [""]
    ok = all(NATS_SUBJECT.fullmatch(t) or (t == ">" and i == len(tokens) - 1)
             for i, t in enumerate(tokens))  # fmt: skip
    if not ok:
        raise ValueError(
            f"{name}={subject!r} must be a NATS subject: dot-separated tokens without "
            "whitespace, '*' or a final '>' as wildcards"
        )
    return subject


def check_js_name(name: str, value: Any) -> str:
    """A JetStream stream or consumer name, or ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or not JS_NAME.fullmatch(value):
        raise ValueError(f"{name}={value!r} must be a JetStream name: no whitespace, . * > / \\")
    return value


def check_symbols(
    name: str,
    symbols: Any,
    *,
    allow_empty: bool = False,
    pattern: re.Pattern[str] = SYMBOL_PATTERN,
) -> tuple[str, ...]:
    """``symbols`` as upper-case venue symbols matching the venue's ``pattern``; a bare string
    is refused (``tuple("BTCUSDT")`` would silently stream seven one-letter symbols)."""
    if isinstance(symbols, str | bytes) or not isinstance(symbols, list | tuple):
        raise ValueError(f"{name} must be a list of symbols, got {symbols!r}")
    if not symbols and not allow_empty:
        raise ValueError(f"{name} is empty; list at least one symbol")
    out = []
    for s in symbols:
        sym = s.strip().upper() if isinstance(s, str) else s
        if not isinstance(sym, str) or not pattern.fullmatch(sym):
            raise ValueError(f"{name}: {s!r} is not a symbol of this venue ({pattern.pattern})")
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
    # a group is one venue's (its landing directory): names are unique per venue
    keys = [(adapter_class(g["exchange"]).name, g["name"]) for g in out]
    dupes = sorted({f"{v}:{n}" for v, n in keys if keys.count((v, n)) > 1})
    if dupes:
        raise SettingError(var, dupes, "group names unique per venue")
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
    exchange = g.get("exchange", "binance")
    if not isinstance(exchange, str) or not exchange:
        raise SettingError(f"{where}.exchange", exchange, "an exchange name")
    try:
        pattern = adapter_class(exchange).symbol_pattern
    except ValueError as exc:
        raise SettingError(f"{where}.exchange", exchange, str(exc)) from None
    try:
        symbols = check_symbols(f"{where}.symbols", g.get("symbols"), pattern=pattern)
    except ValueError as exc:
        raise SettingError(f"{where}.symbols", g.get("symbols"), str(exc)) from None
    datasets = g.get("datasets", list(ALL_DATASETS))
    if not isinstance(datasets, list) or not datasets or not set(datasets) <= set(ALL_DATASETS):
        raise SettingError(f"{where}.datasets", datasets, f"a list among {list(ALL_DATASETS)}")
    enabled = g.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingError(f"{where}.enabled", enabled, "true or false")
    run_config = g.get("run_config", {})
    if not isinstance(run_config, dict):
        raise SettingError(f"{where}.run_config", run_config, "an object")
    profile = _parse_profile(where, g, exchange)
    return {
        "name": name,
        "symbols": symbols,
        "datasets": tuple(datasets),
        "exchange": exchange,
        "enabled": enabled,
        "run_config": run_config,
        **({"stream_profile": profile} if profile else {}),
        **_parse_source(where, g, name),
    }


def _parse_profile(where: str, g: dict[str, Any], exchange: str) -> str:
    """The group's ``stream_profile`` ("" for the venue's default), checked against the venue."""
    profile = g.get("stream_profile", "")
    if not isinstance(profile, str):
        raise SettingError(f"{where}.stream_profile", profile, "a stream profile name")
    if profile:
        try:
            make_adapter(exchange, profile)
        except ValueError as exc:
            raise SettingError(f"{where}.stream_profile", profile, str(exc)) from None
    return profile


def _parse_source(where: str, g: dict[str, Any], name: str) -> dict[str, Any]:
    """``source`` and, for ``nats``, its keys (checked; a URL with credentials is refused:
    those belong in the environment variable ``nats_url_env`` names)."""
    source = g.get("source", "websocket")
    if source not in SOURCES:
        raise SettingError(f"{where}.source", source, f"one of {list(SOURCES)}")
    given = [k for k in NATS_KEYS if k in g]
    if source != "nats":
        if given:
            raise SettingError(f"{where}.{given[0]}", g[given[0]], 'only with "source": "nats"')
        return {"source": source}
    out: dict[str, Any] = {"source": "nats"}
    url = g.get("nats_url")
    if url is not None:
        if not isinstance(url, str):
            raise SettingError(f"{where}.nats_url", type(url).__name__, "a nats:// URL")
        url = check_nats_url(f"{where}.nats_url", url)
        if nats_url_has_credentials(url):
            raise SettingError(
                f"{where}.nats_url",
                mask_nats_url(url),
                "a URL without credentials (put a token or user:password in the environment "
                f"variable named by nats_url_env, {NATS_URL_VAR} by default)",
            )
        out["nats_url"] = url
    env = g.get("nats_url_env", NATS_URL_VAR)
    if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
        raise SettingError(f"{where}.nats_url_env", env, "an environment variable name")
    out["nats_url_env"] = env
    checks = {
        "nats_subject": (SOCKET_CLIENT_SUBJECT, check_nats_subject),
        "nats_stream": (None, check_js_name),
        "nats_durable": (default_durable(name), check_js_name),
    }
    for key, (default, check) in checks.items():
        value = g.get(key, default)
        if value is not None:
            try:
                check(key, value)
            except ValueError as exc:
                raise SettingError(f"{where}.{key}", value, str(exc)) from None
        out[key] = value
    policy = g.get("nats_deliver_policy", "all")
    if policy not in DELIVER_POLICIES:
        raise SettingError(f"{where}.nats_deliver_policy", policy, f"one of {DELIVER_POLICIES}")
    out["nats_deliver_policy"] = policy
    return out
