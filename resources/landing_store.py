"""The landing zone (raw websocket messages landed by the ingest job) as a resource."""

from __future__ import annotations

import os

import dagster as dg


class LandingResource(dg.ConfigurableResource):
    """Root of the landing zone (default: PETROSA_LANDING_PATH, else data/landing); implements
    ``market_data.ports.LandingPort``."""

    root: str | None = None

    def path(self) -> str:
        return self.root or os.environ.get("PETROSA_LANDING_PATH", "data/landing")

    def store(self):  # noqa: ANN201 - LandingStore, imported lazily to keep import light
        from petrosa_pipelines.landing import LandingStore

        return LandingStore(self.path())
