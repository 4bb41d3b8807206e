"""The exchange as a Dagster resource: adapter, REST history client and archive client.

Fields left unset fall back to the ``PETROSA_*`` settings, read when a run starts (never at
import), so the same definitions talk to live Binance or to the local exchange.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from petrosa_pipelines import settings as settings_mod
from petrosa_pipelines.exchanges import get_adapter, venue_of
from petrosa_pipelines.exchanges.base import ExchangeAdapter
from petrosa_pipelines.market_data.ports import EXCHANGE_POOL

__all__ = ["EXCHANGE_POOL", "ExchangeResource"]


class ExchangeResource(dg.ConfigurableResource):
    """Which exchange and where it lives (live Binance USD-M futures by default); implements
    ``market_data.ports.ExchangePort``, what the market-data assets ask of it.

    One resource serves every venue: assets ask ``rest(venue)``/``archive(venue)`` with their
    partition's venue; each adapter gets the settings as that venue sees them
    (``Settings.for_venue``: its endpoints in ``endpoints``).
    """

    exchange: str | None = None
    rest_base_url: str | None = None
    ws_base_url: str | None = None
    vision_base_url: str | None = None
    weight_budget_fraction: float | None = None
    #: directory for a budget file shared by concurrent runs (None: per-process budget)
    budget_dir: str | None = None
    #: where verified archive zips are cached (None: no cache)
    archive_cache_dir: str | None = None

    def settings(self) -> settings_mod.Settings:
        """The ``PETROSA_*`` settings with this resource's fields over them; the URL fields
        override the endpoints of the resource's venue (``exchange``, else the default one)."""
        base = settings_mod.from_env()
        base = dataclasses.replace(base, exchange=self.exchange or base.exchange)
        overrides = {
            k: v
            for k, v in {
                "rest_base_url": self.rest_base_url,
                "ws_base_url": self.ws_base_url,
                "vision_base_url": self.vision_base_url,
            }.items()
            if v
        }
        out = base
        if overrides:
            venue = venue_of(base.exchange)
            endpoints = dataclasses.replace(base.endpoints_for(venue), **overrides)
            if venue == settings_mod.LEGACY_ENDPOINTS_VENUE:
                out = dataclasses.replace(out, endpoints=endpoints)
            else:
                per_venue = {**base.venue_endpoints, venue: endpoints}
                out = dataclasses.replace(out, venue_endpoints=per_venue)
        rest = base.rest
        if self.weight_budget_fraction is not None:
            rest = dataclasses.replace(rest, weight_budget_fraction=self.weight_budget_fraction)
        if self.budget_dir:
            rest = dataclasses.replace(rest, weight_budget_dir=self.budget_dir)
        return settings_mod.validate(dataclasses.replace(out, rest=rest))

    def adapter(self, venue: str | None = None) -> ExchangeAdapter:
        """The adapter of ``venue`` (an instrument's venue id; None: the default venue)."""
        return get_adapter(venue or self.settings().exchange)

    def venue_settings(self, venue: str | None = None) -> settings_mod.Settings:
        """The settings as ``venue``'s clients see them (its endpoints in ``endpoints``)."""
        settings = self.settings()
        return settings.for_venue(venue or settings.exchange)

    def rest(self, venue: str | None = None) -> Any:
        """The REST history client of ``venue`` (None: the default venue)."""
        return self.adapter(venue).rest_client(self.venue_settings(venue))

    def archive(self, venue: str | None = None) -> Any:
        """The archive client of ``venue`` (None: the default venue; None when it has none)."""
        client = self.adapter(venue).archive_client(self.venue_settings(venue))
        if client is not None and self.archive_cache_dir and hasattr(client, "cache_dir"):
            client.cache_dir = self.archive_cache_dir
        return client
