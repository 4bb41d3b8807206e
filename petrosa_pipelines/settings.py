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


#: a venue symbol as every layer accepts it (Binance USD-M: BTCUSDT, 1000PEPEUSDT)
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,30}")
#: what ``PETROSA_SYMBOLS`` says to follow every trading perpetual (an empty list is an error)
ALL_SYMBOLS_WILDCARD = "*"
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


@dataclass(frozen=True)
class Settings:
    exchange: str = "binance"
    endpoints: ExchangeEndpoints = field(default_factory=ExchangeEndpoints)
    rest: RestSettings = field(default_factory=RestSettings)
    #: where the parquet lake lives (a local directory or s3://bucket/prefix)
    lake_path: str = "data/lake"
    #: where the ingest lands raw messages
    landing_path: str = "data/landing"
    #: first day of the daily partitions
    start_date: str = "2024-01-01"
    #: the symbols to keep (allow-list); empty means every trading perpetual (``PETROSA_SYMBOLS``
    #: says so with ``*``: an empty or all-comma value is an error, not "everything")
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")


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
    "PETROSA_SYMBOLS": ("symbols", tuple),
}


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
        items = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
        if not items:
            raise SettingError(
                name,
                raw,
                f"comma-separated symbols, or {ALL_SYMBOLS_WILDCARD} for every trading perpetual",
            )
        return items
    raise AssertionError(kind)


def validate(settings: Settings) -> Settings:
    """Reject values that would misbehave later; name the setting and what is allowed."""
    from petrosa_pipelines.exchanges import EXCHANGES

    if settings.exchange not in EXCHANGES:
        raise SettingError("PETROSA_EXCHANGE", settings.exchange, f"one of {sorted(EXCHANGES)}")
    for key in ("rest_base_url", "vision_base_url"):
        check_url(f"PETROSA_{key.upper()}", getattr(settings.endpoints, key), ("http", "https"))
    check_url("PETROSA_WS_BASE_URL", settings.endpoints.ws_base_url, ("ws", "wss"))
    _validate_rest(settings.rest)
    import datetime as dt

    try:
        dt.date.fromisoformat(settings.start_date)
    except (TypeError, ValueError):
        raise SettingError("PETROSA_START_DATE", settings.start_date, "a date YYYY-MM-DD") from None
    if isinstance(settings.symbols, str):
        raise SettingError("PETROSA_SYMBOLS", settings.symbols, "a list of symbols, not a string")
    for s in settings.symbols:
        if not isinstance(s, str) or not SYMBOL_PATTERN.fullmatch(s):
            raise SettingError(
                "PETROSA_SYMBOLS", s, "comma-separated alphanumeric symbols (A-Z, 0-9)"
            )
    return settings


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
    return validate(settings)


def env_documentation() -> list[tuple[str, str]]:
    """(variable, setting path) pairs, for the README and ``.env.example``."""
    return [(var, path) for var, (path, _) in _ENV.items()]


__all__ = [
    "ALL_SYMBOLS_WILDCARD",
    "SYMBOL_PATTERN",
    "ExchangeEndpoints",
    "RestSettings",
    "SettingError",
    "Settings",
    "check_database_url",
    "check_url",
    "env_documentation",
    "fields",
    "from_env",
    "mask_secret",
    "mask_url",
    "redact",
    "validate",
]
