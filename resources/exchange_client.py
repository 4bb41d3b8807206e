"""The exchange as a Dagster resource: adapter, REST history client and archive client.

Fields left unset fall back to the ``PETROSA_*`` settings, read when a run starts (never at
import), so the same definitions talk to live Binance or to the local exchange.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from petrosa_pipelines import settings as settings_mod
from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.exchanges.base import ExchangeAdapter

#: the concurrency pool every asset that calls the exchange's REST API runs in; its limit in
#: dagster.yaml keeps parallel runs inside one request-weight budget
EXCHANGE_POOL = "exchange_rest"


class ExchangeResource(dg.ConfigurableResource):
    """Which exchange and where it lives (live Binance USD-M futures by default)."""

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
        base = settings_mod.from_env()
        endpoints = dataclasses.replace(
            base.endpoints,
            **{
                k: v
                for k, v in {
                    "rest_base_url": self.rest_base_url,
                    "ws_base_url": self.ws_base_url,
                    "vision_base_url": self.vision_base_url,
                }.items()
                if v
            },
        )
        rest = base.rest
        if self.weight_budget_fraction is not None:
            rest = dataclasses.replace(rest, weight_budget_fraction=self.weight_budget_fraction)
        if self.budget_dir:
            rest = dataclasses.replace(rest, weight_budget_dir=self.budget_dir)
        out = dataclasses.replace(
            base, exchange=self.exchange or base.exchange, endpoints=endpoints, rest=rest
        )
        return settings_mod.validate(out)

    def adapter(self) -> ExchangeAdapter:
        return get_adapter(self.settings().exchange)

    def rest(self) -> Any:
        return self.adapter().rest_client(self.settings())

    def archive(self) -> Any:
        client = self.adapter().archive_client(self.settings())
        if self.archive_cache_dir and hasattr(client, "cache_dir"):
            client.cache_dir = self.archive_cache_dir
        return client
