"""Settings, read from ``PETROSA_*`` environment variables when asked (never at import).

A bad value raises ``SettingError`` naming the variable and what is allowed. Secrets never live
here: Dagster resources take them through ``dg.EnvVar``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


class SettingError(ValueError):
    """A configuration value that is missing or not allowed."""

    def __init__(self, name: str, value: object, allowed: str):
        self.name = name
        super().__init__(f"setting {name}={value!r} is not valid: expected {allowed}")


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

    #: fraction of the exchange's weight limit per minute the client allows itself to use
    weight_budget_fraction: float = 0.8
    #: weight limit per minute when exchangeInfo has not been read (Binance USD-M: 2400)
    weight_limit_per_minute: int = 2400
    max_retries: int = 6
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 30.0
    #: directory of a budget file shared by every process on this machine (one IP, one budget);
    #: None keeps the budget per process
    weight_budget_dir: str | None = None


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
    #: the symbols to keep (allow-list); empty means every trading perpetual
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")


_ENV = {
    "PETROSA_EXCHANGE": ("exchange", str),
    "PETROSA_REST_BASE_URL": ("endpoints.rest_base_url", str),
    "PETROSA_WS_BASE_URL": ("endpoints.ws_base_url", str),
    "PETROSA_VISION_BASE_URL": ("endpoints.vision_base_url", str),
    "PETROSA_WEIGHT_BUDGET_FRACTION": ("rest.weight_budget_fraction", float),
    "PETROSA_WEIGHT_LIMIT_PER_MINUTE": ("rest.weight_limit_per_minute", int),
    "PETROSA_REST_MAX_RETRIES": ("rest.max_retries", int),
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
            return float(raw)
        except ValueError:
            raise SettingError(name, raw, "a number") from None
    if kind is tuple:
        return tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    raise AssertionError(kind)


def validate(settings: Settings) -> Settings:
    """Reject values that would misbehave later; name the setting and what is allowed."""
    from petrosa_pipelines.exchanges import EXCHANGES

    if settings.exchange not in EXCHANGES:
        raise SettingError("PETROSA_EXCHANGE", settings.exchange, f"one of {sorted(EXCHANGES)}")
    for key in ("rest_base_url", "vision_base_url"):
        url = getattr(settings.endpoints, key)
        if not url.startswith(("http://", "https://")):
            raise SettingError(f"PETROSA_{key.upper()}", url, "an http:// or https:// URL")
    if not settings.endpoints.ws_base_url.startswith(("ws://", "wss://")):
        raise SettingError(
            "PETROSA_WS_BASE_URL", settings.endpoints.ws_base_url, "a ws:// or wss:// URL"
        )
    if not 0 < settings.rest.weight_budget_fraction <= 1:
        raise SettingError(
            "PETROSA_WEIGHT_BUDGET_FRACTION", settings.rest.weight_budget_fraction, "0 < x <= 1"
        )
    if settings.rest.weight_limit_per_minute <= 0:
        raise SettingError(
            "PETROSA_WEIGHT_LIMIT_PER_MINUTE", settings.rest.weight_limit_per_minute, "> 0"
        )
    import datetime as dt

    try:
        dt.date.fromisoformat(settings.start_date)
    except ValueError:
        raise SettingError("PETROSA_START_DATE", settings.start_date, "a date YYYY-MM-DD") from None
    for s in settings.symbols:
        if not s.isalnum():
            raise SettingError("PETROSA_SYMBOLS", s, "comma-separated alphanumeric symbols")
    return settings


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
    "ExchangeEndpoints",
    "RestSettings",
    "SettingError",
    "Settings",
    "env_documentation",
    "fields",
    "from_env",
    "validate",
]
