"""Settings, read from ``PETROSA_*`` environment variables when asked (never at import).

A bad value raises ``SettingError`` naming the variable and what is allowed. Secrets never live
here: Dagster resources take them through ``dg.EnvVar``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from petrosa_pipelines.lib.endpoints import (  # noqa: F401 - re-exported: the settings' parts
    LIVE_BINANCE_REST,
    LIVE_BINANCE_VISION,
    LIVE_BINANCE_WS,
    ExchangeEndpoints,
    RestSettings,
)


class SettingError(ValueError):
    """A configuration value that is missing or not allowed.

    ``secret=True`` masks the value (passwords in URLs, webhook tokens) in the message.
    """

    def __init__(self, name: str, value: object, allowed: str, *, secret: bool = False):
        self.name = name
        shown = mask_secret(str(value)) if secret else value
        super().__init__(f"setting {name}={shown!r} is not valid: expected {allowed}")


#: Binance USD-M's symbol form (BTCUSDT, 1000PEPEUSDT), kept for callers that only know Binance;
#: symbols are validated by their venue's ``ExchangeAdapter.symbol_pattern``
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,30}")
#: what ``PETROSA_SYMBOLS`` says to follow every trading perpetual (an empty list is an error);
#: ``<venue>:*`` says it for one venue
ALL_SYMBOLS_WILDCARD = "*"
#: the venue whose endpoints are ``PETROSA_REST_BASE_URL``, ``_WS_BASE_URL``, ``_VISION_BASE_URL``
#: (the only venue before venues had ids)
LEGACY_ENDPOINTS_VENUE = "binance-usdm"
#: ``LIVE_ENDPOINTS`` (venue id -> live endpoints) is derived from the registry on access (the
#: module's ``__getattr__``): each adapter declares its own (``ExchangeAdapter.default_endpoints``),
#: so a new venue needs no edit here; read one venue's with ``live_endpoints``
#: per-venue variable suffix -> ``ExchangeEndpoints`` field (the archive is ``vision_base_url``)
VENUE_URL_VARS = {
    "REST_BASE_URL": "rest_base_url",
    "WS_BASE_URL": "ws_base_url",
    "ARCHIVE_BASE_URL": "vision_base_url",
}
_SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key|sig|auth", re.IGNORECASE)
MASK = "***"


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """``url`` with its password (and secret-looking query values) replaced by ``***``.

    ``hide_path=True`` also hides path and query, for webhook URLs whose path is the token
    (Slack: ``https://hooks.slack.com/services/T…/B…/<token>``). Tolerates URLs that do not
    parse (no scheme, unescaped ``@``): it masks rather than fails, as it runs in error paths.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    # the authority ends at the first / ? # after the last @ (RFC 3986 3.2; a password may
    # hold an unescaped / or @, so look for the userinfo's @ first)
    at = rest.rfind("@")
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    cut = min((i for i in (hostpart.find(c) for c in "/?#") if i >= 0), default=len(hostpart))
    host, tail = hostpart[:cut], hostpart[cut:]
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{MASK}@" if colon else f"{user}@"
    if hide_path:
        tail = "/" + MASK if tail else ""
    elif "?" in tail:
        path, _, query = tail.partition("?")
        query, hash_, frag = query.partition("#")
        pairs = [
            f"{k}={MASK if _SECRET_QUERY_KEYS.search(k) else v}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        tail = f"{path}?{'&'.join(pairs)}{hash_}{frag}"
    return f"{scheme}{sep}{userinfo}{host}{tail}"


def mask_secret(value: str) -> str:
    """A secret-bearing setting as it may appear in an error: a URL keeps its scheme, user and
    host (``postgresql://u:***@db:5432/***``); a value without a scheme keeps only a leading
    host name (``hooks.slack.com/***``), anything else is hidden whole."""
    text = str(value).strip()
    if "://" in text:
        return mask_url(text, hide_path=True)
    head, slash, _ = text.partition("/")
    if slash and re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", head):
        return f"{head}/{MASK}"
    return f"{MASK} ({len(text)} characters, hidden)"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` without any of ``secrets`` (URLs or tokens) or their secret parts.

    For error paths: a library's message may echo a whole URL, its path, or its password, so
    each secret is replaced whole, and so are its password and every path segment or query
    value of 6+ characters.
    """
    out = str(text)
    for secret in secrets:
        if not secret:
            continue
        out = out.replace(secret, mask_url(secret, hide_path=True))
        for part in _secret_parts(secret):
            out = out.replace(part, MASK)
    return out


def _secret_parts(secret: str) -> list[str]:
    _, sep, rest = secret.partition("://")
    rest = rest if sep else secret
    at = rest.rfind("@")
    parts = []
    if at >= 0:
        parts.append(rest[:at].partition(":")[2])
        rest = rest[at + 1 :]
    path = rest.partition("/")[2] if "/" in rest else ""
    parts += re.split(r"[/?&=#]", path)
    return sorted((p for p in parts if len(p) >= 6), key=len, reverse=True)


def check_url(
    name: str, url: str, schemes: Iterable[str], *, secret: bool = False, need_host: bool = True
) -> str:
    """``url`` stripped, or a ``SettingError`` naming ``name`` when it is not a URL of one of
    ``schemes`` with a host and a valid port (secrets masked in the message)."""
    allowed = sorted(schemes)
    want = " or ".join(f"{s}://" for s in allowed) + " URL with a host"
    text = str(url).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SettingError(name, text, f"{want} ({exc})", secret=secret) from None
    if parts.scheme not in allowed:
        raise SettingError(name, text, want, secret=secret)
    if need_host and not parts.hostname:
        raise SettingError(name, text, want, secret=secret)
    if "@" in parts.netloc.rpartition("@")[0]:
        raise SettingError(
            name, text, f"{want}, user and password escaped (urllib.parse.quote)", secret=secret
        )
    if any(c.isspace() for c in text):
        raise SettingError(name, text, f"{want} without spaces", secret=secret)
    return text


def check_database_url(name: str, url: str | None, kind: str) -> str:
    """A PostgreSQL (``kind="postgresql"``) or MongoDB (``kind="mongodb"``) URL, checked before
    the driver sees it: drivers raise errors that echo the URL, password included."""
    if url is None or not str(url).strip():
        raise SettingError(name, url or "", f"a {kind} URL (the variable is empty or unset)")
    text = str(url).strip()
    if kind == "postgresql":
        scheme = text.partition("://")[0]
        if scheme.partition("+")[0] != "postgresql":
            raise SettingError(
                name, text, "a postgresql:// (or postgresql+driver://) URL", secret=True
            )
        return check_url(name, text, [scheme], secret=True)
    if kind == "mongodb":
        scheme, sep, rest = text.partition("://")
        if scheme not in ("mongodb", "mongodb+srv") or not sep:
            raise SettingError(name, text, "a mongodb:// or mongodb+srv:// URL", secret=True)
        at = rest.rfind("@")
        hosts = rest[at + 1 :].split("/", 1)[0].split("?", 1)[0]
        userinfo = rest[:at] if at >= 0 else ""
        for host in hosts.split(","):
            prefix = f"{scheme}://{userinfo + '@' if userinfo else ''}"
            check_url(name, prefix + host, [scheme], secret=True)
        return text
    raise AssertionError(kind)


def venue_env_prefix(venue: str) -> str:
    """The prefix of a venue's variables: ``PETROSA_`` + the venue id upper-cased with ``-`` as
    ``_`` + ``_`` (``bybit-linear``: ``..._BYBIT_LINEAR_WS_BASE_URL``)."""
    return "PETROSA_" + venue.upper().replace("-", "_") + "_"


def endpoint_variables(venue: str) -> dict[str, str]:
    """``ExchangeEndpoints`` field -> the variable that sets it for ``venue`` (id): Binance
    USD-M's legacy ``PETROSA_REST_BASE_URL``..., any other venue's ``PETROSA_<VENUE>_*``."""
    if venue == LEGACY_ENDPOINTS_VENUE:
        return {
            path.partition(".")[2]: var
            for var, (path, _) in _ENV.items()
            if path.startswith("endpoints.")
        }
    prefix = venue_env_prefix(venue)
    return {attr: prefix + suffix for suffix, attr in VENUE_URL_VARS.items()}


def endpoint_env(venue: str, endpoints: ExchangeEndpoints) -> dict[str, str]:
    """The variables that point ``venue`` (id) at ``endpoints`` (the demo and the local stack
    point every venue at the local exchange with them)."""
    return {var: getattr(endpoints, attr) for attr, var in endpoint_variables(venue).items()}


def live_endpoints(venue: str) -> ExchangeEndpoints:
    """The live endpoints of ``venue`` (id or storage name) as its adapter declares them
    (``ExchangeAdapter.default_endpoints``, read by ``exchanges.base.declared_endpoints``); a
    ``SettingError`` naming the variables to set when it declares none."""
    from petrosa_pipelines.exchanges import adapter_class
    from petrosa_pipelines.exchanges.base import declared_endpoints

    cls = adapter_class(venue)
    default = declared_endpoints(cls)
    if default is None:
        names = ", ".join(endpoint_variables(cls.venue).values())
        raise SettingError(
            endpoint_variables(cls.venue)["rest_base_url"],
            "",
            f"the {cls.venue} endpoints: set {names} (its adapter declares no default_endpoints)",
        )
    return default


def __getattr__(name: str) -> Any:
    """``LIVE_ENDPOINTS``: venue id -> live endpoints of every registered venue that declares
    them, built from the registry when read (kept for callers of the old mapping)."""
    if name == "LIVE_ENDPOINTS":
        from petrosa_pipelines.exchanges import EXCHANGES
        from petrosa_pipelines.exchanges.base import declared_endpoints

        return {
            venue: endpoints
            for venue, cls in EXCHANGES.items()
            if (endpoints := declared_endpoints(cls)) is not None
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- NATS (the ingest's NATS source) ----------------------------------------------------------
#: the NATS server(s) a NATS-sourced stream group reads; may hold a token or user:password, so
#: it is read from the environment only (never from run config or group config) and logged as
#: its hosts (``nats_hosts``)
NATS_URL_VAR = "PETROSA_NATS_URL"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
#: nats-py's URL schemes (https://nats-io.github.io/nats.py/modules.html#connection)
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
#: where the Petrosa socket-client publishes raw Binance futures frames (its ``constants.py``:
#: https://github.com/PetroSa2/petrosa-socket-client)
SOCKET_CLIENT_SUBJECT = "binance.futures.websocket.data"


def check_nats_url(name: str, url: str) -> str:
    """A NATS server URL, or several separated by commas (a cluster's seed list), each checked
    like ``check_url``; a bad one raises ``SettingError`` naming ``name``, credentials masked."""
    text = str(url).strip()
    servers = [s.strip() for s in text.split(",")]
    want = "a nats:// URL (or a comma-separated list)"
    if not text or not all(servers):
        raise SettingError(name, mask_nats_url(text), want)
    for server in servers:
        try:
            check_url(name, server, NATS_SCHEMES, secret=True)
        except SettingError as exc:
            allowed = str(exc).partition("expected ")[2] or want
            raise SettingError(name, mask_nats_url(text), allowed) from None
    return ",".join(servers)


def mask_nats_url(url: str) -> str:
    """A NATS URL as an error may show it: every server's user part hidden whole (a NATS URL's
    user part alone is a token, which ``mask_url`` would keep)."""
    out = []
    for server in str(url).split(","):
        scheme, sep, rest = server.strip().partition("://")
        at = rest.rfind("@")
        if at >= 0:
            rest = f"{MASK}@{rest[at + 1 :]}"
        out.append(f"{scheme}{sep}{rest}" if sep else (MASK if at >= 0 else server.strip()))
    return ",".join(out)


def nats_url_from_env(var: str = NATS_URL_VAR, environ: Mapping[str, str] | None = None) -> str:
    """The NATS URL in ``var`` (checked), else the local server's ``DEFAULT_NATS_URL``."""
    env = os.environ if environ is None else environ
    raw = env.get(var)
    if raw is None or not raw.strip():
        return DEFAULT_NATS_URL
    return check_nats_url(var, raw)


def nats_hosts(url: str) -> str:
    """``host:port`` of each server in a NATS URL: what may be logged or tagged (a NATS URL's
    user part alone is a token, which ``mask_url`` would keep)."""
    out = []
    for server in str(url).split(","):
        try:
            parts = urlsplit(server.strip())
            out.append(f"{parts.hostname or '?'}:{parts.port or 4222}")
        except ValueError:
            out.append("?")
    return ",".join(out)


def nats_url_has_credentials(url: str) -> bool:
    """True when any server of a NATS URL carries a user, password or token."""
    return any("@" in urlsplit(s.strip()).netloc for s in str(url).split(",") if s.strip())


@dataclass(frozen=True)
class Settings:
    #: the default venue (id or storage name): where bare ``PETROSA_SYMBOLS`` entries trade,
    #: what the ingest supervisor follows
    exchange: str = "binance"
    #: Binance USD-M's endpoints (``PETROSA_REST_BASE_URL`` ...); other venues: ``endpoints_for``
    endpoints: ExchangeEndpoints = field(default_factory=ExchangeEndpoints)
    rest: RestSettings = field(default_factory=RestSettings)
    #: where the parquet lake lives (a local directory or s3://bucket/prefix)
    lake_path: str = "data/lake"
    #: where the ingest lands raw messages
    landing_path: str = "data/landing"
    #: first day the deployment keeps (its history: ``market_data/partitions.py``)
    start_date: str = "2024-01-01"
    #: days of day x instrument partitions, ending today; older days are month x instrument
    #: history partitions (0: every day since ``start_date`` is a day partition)
    daily_window_days: int = 56
    #: a closed history month of an instrument-dataset whose day files total at most this many
    #: MB is compacted into one month file (``market_data/compaction.py``; 0: never)
    lake_compact_max_mb: float = 64.0
    #: the allow-list as configured: instrument ids (``bybit-linear:BTCUSDT``), bare symbols of
    #: the default venue (``BTCUSDT``) and ``<venue>:*``; empty means every trading perpetual of
    #: the default venue (``PETROSA_SYMBOLS`` says so with ``*``: an empty or all-comma value is
    #: an error, not "everything"). Read it through ``instruments``/``allow_list``.
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    #: per-venue endpoint overrides (venue id -> endpoints), from ``PETROSA_<VENUE>_*_BASE_URL``
    venue_endpoints: Mapping[str, ExchangeEndpoints] = field(default_factory=dict, hash=False)

    @property
    def venue(self) -> str:
        """The default venue's id (``PETROSA_EXCHANGE`` may name its storage name)."""
        from petrosa_pipelines.exchanges import venue_of

        return venue_of(self.exchange)

    def _entries(self) -> list[tuple[str, str | None]]:
        from petrosa_pipelines.instruments import parse_entry

        if not self.symbols:
            return [(self.venue, None)]
        return [parse_entry(e, self.venue) for e in self.symbols if e != ALL_SYMBOLS_WILDCARD] + (
            [(self.venue, None)] if ALL_SYMBOLS_WILDCARD in self.symbols else []
        )

    @property
    def venues(self) -> tuple[str, ...]:
        """Every venue the allow-list follows, sorted."""
        return tuple(sorted({v for v, _ in self._entries()}))

    @property
    def instruments(self) -> tuple[Any, ...]:
        """The instruments named explicitly (``Instrument``s, sorted; wildcards not expanded)."""
        from petrosa_pipelines.instruments import Instrument

        return tuple(sorted({Instrument(v, s) for v, s in self._entries() if s is not None}))

    @property
    def qualified_symbols(self) -> tuple[str, ...]:
        """The allow-list with every entry qualified (``binance-usdm:BTCUSDT``,
        ``bybit-linear:*``), never empty: the form that means the same whatever the default
        venue (``partitions.instrument_problem`` takes it)."""
        return tuple(
            f"{v}:{s if s is not None else ALL_SYMBOLS_WILDCARD}" for v, s in self._entries()
        )

    def allow_list(self, venue: str) -> tuple[str, ...] | None:
        """Bare symbols allowed on ``venue`` (id or storage name): () means every trading
        perpetual (a wildcard), None that the venue is not followed at all."""
        from petrosa_pipelines.exchanges import venue_of

        venue = venue_of(venue)
        entries = [s for v, s in self._entries() if v == venue]
        if not entries:
            return None
        return () if None in entries else tuple(sorted(set(entries)))  # type: ignore[arg-type]

    def for_venue(self, venue: str) -> Settings:
        """These settings as one venue's clients see them: ``exchange`` is the venue and
        ``endpoints`` its endpoints (``endpoints_for``), so every adapter reads
        ``settings.endpoints`` whatever its venue (``ExchangeResource.rest(venue)`` passes
        this view)."""
        from petrosa_pipelines.exchanges import venue_of

        return replace(self, exchange=venue_of(venue), endpoints=self.endpoints_for(venue))

    def endpoints_for(self, venue: str) -> ExchangeEndpoints:
        """The base URLs of ``venue`` (id or storage name): its ``PETROSA_<VENUE>_*`` overrides
        over its adapter's live defaults (``live_endpoints``); Binance USD-M's are ``endpoints``
        (``PETROSA_REST_BASE_URL``...)."""
        from petrosa_pipelines.exchanges import venue_of

        venue = venue_of(venue)
        if venue == LEGACY_ENDPOINTS_VENUE:
            return self.endpoints
        if venue in self.venue_endpoints:
            return self.venue_endpoints[venue]
        return live_endpoints(venue)  # the adapter's defaults, or an error naming the variables


_ENV = {
    "PETROSA_EXCHANGE": ("exchange", str),
    "PETROSA_REST_BASE_URL": ("endpoints.rest_base_url", str),
    "PETROSA_WS_BASE_URL": ("endpoints.ws_base_url", str),
    "PETROSA_VISION_BASE_URL": ("endpoints.vision_base_url", str),
    "PETROSA_WEIGHT_BUDGET_FRACTION": ("rest.weight_budget_fraction", float),
    "PETROSA_WEIGHT_LIMIT_PER_MINUTE": ("rest.weight_limit_per_minute", int),
    "PETROSA_REST_MAX_RETRIES": ("rest.max_retries", int),
    "PETROSA_REST_TIMEOUT_SECONDS": ("rest.timeout_seconds", float),
    "PETROSA_REST_DEADLINE_SECONDS": ("rest.deadline_seconds", float),
    "PETROSA_REST_MAX_WAIT_SECONDS": ("rest.max_wait_seconds", float),
    "PETROSA_WEIGHT_BUDGET_DIR": ("rest.weight_budget_dir", str),
    "PETROSA_LAKE_PATH": ("lake_path", str),
    "PETROSA_LANDING_PATH": ("landing_path", str),
    "PETROSA_START_DATE": ("start_date", str),
    "PETROSA_DAILY_WINDOW_DAYS": ("daily_window_days", int),
    "PETROSA_LAKE_COMPACT_MAX_MB": ("lake_compact_max_mb", float),
    "PETROSA_SYMBOLS": ("symbols", tuple),
}


#: the shortest daily window: the days the auto-backfill, the re-audit and the analytics'
#: rolling windows look back over must still be day partitions
MIN_DAILY_WINDOW_DAYS = 14


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is str:
        if not raw.strip():
            raise SettingError(name, raw, "a non-empty string")
        return raw.strip()
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingError(name, raw, "an integer") from None
    if kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(name, raw, "a number") from None
        if not math.isfinite(value):
            raise SettingError(name, raw, "a finite number") from None
        return value
    if kind is tuple:
        if raw.strip() == ALL_SYMBOLS_WILDCARD:
            return ()
        items = tuple(s.strip() for s in raw.split(",") if s.strip())
        if not items:
            raise SettingError(
                name,
                raw,
                "comma-separated instruments (binance-usdm:BTCUSDT) or symbols, or "
                f"{ALL_SYMBOLS_WILDCARD} for every trading perpetual",
            )
        return items
    raise AssertionError(kind)


def validate(settings: Settings) -> Settings:
    """Reject values that would misbehave later; name the setting and what is allowed."""
    from petrosa_pipelines.exchanges import EXCHANGES, adapter_class

    try:
        adapter_class(settings.exchange)
    except ValueError:
        names = sorted({*EXCHANGES, *(c.name for c in EXCHANGES.values())})
        raise SettingError("PETROSA_EXCHANGE", settings.exchange, f"one of {names}") from None
    for key in ("rest_base_url", "vision_base_url"):
        check_url(f"PETROSA_{key.upper()}", getattr(settings.endpoints, key), ("http", "https"))
    check_url("PETROSA_WS_BASE_URL", settings.endpoints.ws_base_url, ("ws", "wss"))
    for venue, endpoints in settings.venue_endpoints.items():
        _validate_venue_endpoints(venue, endpoints)
    _validate_rest(settings.rest)
    import datetime as dt

    try:
        dt.date.fromisoformat(settings.start_date)
    except (TypeError, ValueError):
        raise SettingError("PETROSA_START_DATE", settings.start_date, "a date YYYY-MM-DD") from None
    window = settings.daily_window_days
    if window != 0 and window < MIN_DAILY_WINDOW_DAYS:
        raise SettingError(
            "PETROSA_DAILY_WINDOW_DAYS",
            str(window),
            f"0 (every day a day partition) or at least {MIN_DAILY_WINDOW_DAYS} days",
        )
    if settings.lake_compact_max_mb < 0:
        raise SettingError(
            "PETROSA_LAKE_COMPACT_MAX_MB",
            str(settings.lake_compact_max_mb),
            "0 (never compact) or a positive number of MB",
        )
    if isinstance(settings.symbols, str):
        raise SettingError("PETROSA_SYMBOLS", settings.symbols, "a list of symbols, not a string")
    return replace(settings, symbols=_canonical_symbols(settings))


def _canonical_symbols(settings: Settings) -> tuple[str, ...]:
    """The allow-list with each entry checked by its venue's symbol pattern and spelled the
    venue's way (``btcusdt`` -> ``BTCUSDT``, ``Bybit-Linear:*`` -> ``bybit-linear:*``); bare
    entries stay bare, so callers that read ``symbols`` as the default venue's symbols keep
    working."""
    from petrosa_pipelines.instruments import InstrumentError, parse_entry

    default = settings.venue
    out = []
    for entry in settings.symbols:
        if not isinstance(entry, str):
            raise SettingError("PETROSA_SYMBOLS", entry, "instrument ids or symbols (strings)")
        if entry.strip() == ALL_SYMBOLS_WILDCARD:
            out.append(ALL_SYMBOLS_WILDCARD)
            continue
        try:
            venue, symbol = parse_entry(entry, default)
        except InstrumentError as exc:
            raise SettingError(
                "PETROSA_SYMBOLS",
                entry,
                f"comma-separated instrument ids (<venue>:<SYMBOL>, <venue>:*) or symbols of "
                f"{default}, each in its venue's symbol form ({exc})",
            ) from None
        qualified = ":" in entry
        text = symbol if symbol is not None else ALL_SYMBOLS_WILDCARD
        out.append(f"{venue}:{text}" if qualified else text)
    return tuple(out)


def _validate_venue_endpoints(venue: str, endpoints: ExchangeEndpoints) -> None:
    prefix = venue_env_prefix(venue)
    check_url(f"{prefix}REST_BASE_URL", endpoints.rest_base_url, ("http", "https"))
    check_url(f"{prefix}WS_BASE_URL", endpoints.ws_base_url, ("ws", "wss"))
    check_url(f"{prefix}ARCHIVE_BASE_URL", endpoints.vision_base_url, ("http", "https"))


def _validate_rest(rest: RestSettings) -> None:
    """Every REST number finite and in range: a NaN or negative here silently disables a
    limit (``x > nan`` is always False) or makes a loop never end."""

    def number(var: str, value: Any, ok: bool, allowed: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingError(var, value, allowed)
        if not math.isfinite(value) or not ok:
            raise SettingError(var, value, allowed)

    fraction = rest.weight_budget_fraction
    number("PETROSA_WEIGHT_BUDGET_FRACTION", fraction, 0 < fraction <= 1, "0 < x <= 1")
    limit = rest.weight_limit_per_minute
    number("PETROSA_WEIGHT_LIMIT_PER_MINUTE", limit, limit > 0, "an integer > 0")
    number("PETROSA_REST_MAX_RETRIES", rest.max_retries, rest.max_retries >= 0, "an integer >= 0")
    for var, value in (
        ("rest.backoff_base_seconds", rest.backoff_base_seconds),
        ("rest.backoff_max_seconds", rest.backoff_max_seconds),
        ("PETROSA_REST_TIMEOUT_SECONDS", rest.timeout_seconds),
        ("PETROSA_REST_DEADLINE_SECONDS", rest.deadline_seconds),
        ("PETROSA_REST_MAX_WAIT_SECONDS", rest.max_wait_seconds),
    ):
        number(var, value, value > 0, "a finite number of seconds > 0")


def from_env(environ: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Settings from ``PETROSA_*`` variables over ``base`` (defaults when None)."""
    env = os.environ if environ is None else environ
    settings = base or Settings()
    for var, (path, kind) in _ENV.items():
        if var not in env:
            continue
        value = _convert(var, env[var], kind)
        head, _, leaf = path.rpartition(".")
        if head:
            sub = getattr(settings, head)
            settings = replace(settings, **{head: replace(sub, **{leaf: value})})
        else:
            settings = replace(settings, **{leaf: value})
    return validate(_with_venue_endpoints(settings, env))


def _with_venue_endpoints(settings: Settings, env: Mapping[str, str]) -> Settings:
    """``PETROSA_<VENUE>_{REST,WS,ARCHIVE}_BASE_URL`` over each registered venue's endpoints
    (Binance USD-M's land in ``endpoints``, after the legacy ``PETROSA_REST_BASE_URL``...)."""
    from petrosa_pipelines.exchanges import EXCHANGES

    per_venue = dict(settings.venue_endpoints)
    for venue in EXCHANGES:
        prefix = venue_env_prefix(venue)
        given = {
            attr: _convert(prefix + suffix, env[prefix + suffix], str)
            for suffix, attr in VENUE_URL_VARS.items()
            if prefix + suffix in env
        }
        if not given:
            continue
        if venue == LEGACY_ENDPOINTS_VENUE:
            settings = replace(settings, endpoints=replace(settings.endpoints, **given))
            continue
        try:
            base = per_venue.get(venue) or settings.endpoints_for(venue)
        except SettingError:
            base = ExchangeEndpoints("", "", "")
        per_venue[venue] = replace(base, **given)
    return replace(settings, venue_endpoints=per_venue)


def env_documentation() -> list[tuple[str, str]]:
    """(variable, setting path) pairs, for the README and ``.env.example`` (per-venue endpoint
    variables for every registered venue but Binance USD-M, whose are the legacy ones)."""
    from petrosa_pipelines.exchanges import EXCHANGES

    out = [(var, path) for var, (path, _) in _ENV.items()]
    for venue in sorted(EXCHANGES):
        if venue != LEGACY_ENDPOINTS_VENUE:
            prefix = venue_env_prefix(venue)
            out += [
                (prefix + suffix, f"venue_endpoints[{venue}].{attr}")
                for suffix, attr in VENUE_URL_VARS.items()
            ]
    return out


__all__ = [
    "ALL_SYMBOLS_WILDCARD",
    "LIVE_ENDPOINTS",  # noqa: F822 - built on access by the module's __getattr__
    "SYMBOL_PATTERN",
    "ExchangeEndpoints",
    "RestSettings",
    "SettingError",
    "Settings",
    "check_database_url",
    "check_url",
    "endpoint_env",
    "endpoint_variables",
    "env_documentation",
    "fields",
    "from_env",
    "live_endpoints",
    "mask_secret",
    "mask_url",
    "redact",
    "validate",
    "venue_env_prefix",
]


# ============================================================================================
# Live outputs (issue 14 items 3-4: clean data on NATS, latest state in Redis; docs/live.md).
# Read by ``petrosa_pipelines.live`` only; URLs are secrets (passwords, tokens): masked in errors.
# ============================================================================================

#: variable -> (LiveSettings field, type); ``PETROSA_NATS_URL`` is the ingest's NATS too
LIVE_ENV: dict[str, tuple[str, type]] = {
    "PETROSA_NATS_URL": ("nats_url", str),
    "PETROSA_REDIS_URL": ("redis_url", str),
    "PETROSA_LIVE_PUBLISH": ("publish", bool),
    "PETROSA_LIVE_LATEST": ("latest", bool),
    "PETROSA_LIVE_SUBJECT_PREFIX": ("subject_prefix", str),
    "PETROSA_LIVE_STREAM": ("stream", str),
    "PETROSA_LIVE_STREAM_MAX_AGE_S": ("max_age_s", float),
    "PETROSA_LIVE_STREAM_MAX_BYTES": ("max_bytes", int),
    "PETROSA_LIVE_BUFFER_MESSAGES": ("buffer_messages", int),
    "PETROSA_LIVE_BUFFER_BYTES": ("buffer_bytes", int),
    "PETROSA_LIVE_PUBLISH_TIMEOUT_S": ("publish_timeout_s", float),
    "PETROSA_LIVE_REDIS_PREFIX": ("redis_prefix", str),
    "PETROSA_LIVE_REDIS_TTL_S": ("redis_ttl_s", int),
    "PETROSA_LIVE_REDIS_HEALTH_TTL_S": ("redis_health_ttl_s", int),
    "PETROSA_LIVE_REDIS_INTERVAL_S": ("redis_interval_s", float),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class LiveSettings:
    """What the live outputs publish where; a URL left unset turns its output off."""

    #: NATS server(s), comma-separated (``nats://user:pass@host:4222``); None: no publishing
    nats_url: str | None = None
    #: Redis (``redis://:pass@host:6379/0``, ``rediss://``); None: no latest state
    redis_url: str | None = None
    publish: bool = True
    latest: bool = True
    #: first token(s) of every subject (``<prefix>.<venue>.<dataset>.<SYMBOL>``)
    subject_prefix: str = "petrosa"
    #: the JetStream stream capturing ``<prefix>.>``, created or updated on connect
    stream: str = "PETROSA_LIVE"
    #: stream retention: messages older than this or beyond this size are discarded (oldest first)
    max_age_s: float = 24 * 3600.0
    max_bytes: int = 1 << 30
    #: the publisher's buffer while NATS is slow or down; beyond it the oldest are dropped
    #: (counted per subject)
    buffer_messages: int = 100_000
    buffer_bytes: int = 64 << 20
    #: a batch not acknowledged by JetStream in this time is re-sent (de-duplicated by id)
    publish_timeout_s: float = 5.0
    redis_prefix: str = "petrosa:latest"
    #: market fields (trade, book, candle, funding) expire this long after their last write
    redis_ttl_s: int = 300
    redis_health_ttl_s: int = 2 * 24 * 3600
    #: at most one write per key per interval (latest value wins)
    redis_interval_s: float = 0.25

    @property
    def publishing(self) -> bool:
        return self.publish and bool(self.nats_url)

    @property
    def keeping_latest(self) -> bool:
        return self.latest and bool(self.redis_url)


def _live_value(var: str, raw: str, kind: type) -> Any:
    if kind is bool:
        text = raw.strip().lower()
        if text not in _TRUE | _FALSE:
            raise SettingError(var, raw, "true or false (1/0, yes/no, on/off)")
        return text in _TRUE
    return _convert(var, raw, kind)


def validate_live(s: LiveSettings) -> LiveSettings:
    """Every live setting in range; URLs checked with their secrets masked."""
    from petrosa_pipelines.live.subjects import PREFIX, TOKEN

    if s.nats_url:  # the ingest's own check: a token-only user part is masked too
        s = replace(s, nats_url=check_nats_url("PETROSA_NATS_URL", s.nats_url))
    if s.redis_url:
        check_url("PETROSA_REDIS_URL", s.redis_url, ("redis", "rediss", "unix"), secret=True,
                  need_host=not s.redis_url.startswith("unix"))  # fmt: skip
    if not PREFIX.fullmatch(s.subject_prefix):
        raise SettingError("PETROSA_LIVE_SUBJECT_PREFIX", s.subject_prefix,
                           "1-4 dot-separated tokens of [A-Za-z0-9_-]")  # fmt: skip
    if not TOKEN.fullmatch(s.stream):
        raise SettingError("PETROSA_LIVE_STREAM", s.stream, "a stream name of [A-Za-z0-9_-]")
    for var, value, floor in (
        ("PETROSA_LIVE_STREAM_MAX_AGE_S", s.max_age_s, 1),
        ("PETROSA_LIVE_STREAM_MAX_BYTES", s.max_bytes, 1024),
        ("PETROSA_LIVE_BUFFER_MESSAGES", s.buffer_messages, 1),
        ("PETROSA_LIVE_BUFFER_BYTES", s.buffer_bytes, 1024),
        ("PETROSA_LIVE_PUBLISH_TIMEOUT_S", s.publish_timeout_s, 0.1),
        ("PETROSA_LIVE_REDIS_TTL_S", s.redis_ttl_s, 1),
        ("PETROSA_LIVE_REDIS_HEALTH_TTL_S", s.redis_health_ttl_s, 1),
        ("PETROSA_LIVE_REDIS_INTERVAL_S", s.redis_interval_s, 0.01),
    ):
        if isinstance(value, bool) or not math.isfinite(value) or value < floor:
            raise SettingError(var, value, f"a finite number >= {floor}")
    if not s.redis_prefix.strip() or any(c.isspace() for c in s.redis_prefix):
        raise SettingError("PETROSA_LIVE_REDIS_PREFIX", s.redis_prefix, "a key prefix, no spaces")
    return s


def live_settings_from_env(
    environ: Mapping[str, str] | None = None, base: LiveSettings | None = None
) -> LiveSettings:
    """Live settings from ``PETROSA_NATS_URL``, ``PETROSA_REDIS_URL`` and ``PETROSA_LIVE_*``."""
    env = os.environ if environ is None else environ
    settings = base or LiveSettings()
    for var, (name, kind) in LIVE_ENV.items():
        if var in env and env[var].strip():
            settings = replace(settings, **{name: _live_value(var, env[var], kind)})
    return validate_live(settings)


def redact_live(text: str, s: LiveSettings) -> str:
    """``text`` (an error of nats-py or redis-py) without the live outputs' secrets: the Redis
    URL's as ``redact`` does, and each NATS server's whole user part (a NATS URL's user alone
    may be a token, which ``redact`` would keep)."""
    out = redact(text, [s.redis_url])
    for server in (s.nats_url or "").split(","):
        server = server.strip()
        rest = server.partition("://")[2]
        at = rest.rfind("@")
        if not server or at < 0:
            continue
        out = out.replace(server, mask_nats_url(server))
        userinfo = rest[:at]
        for part in sorted({userinfo, *userinfo.split(":")}, key=len, reverse=True):
            if len(part) >= 3:
                out = out.replace(part, MASK)
    return out
