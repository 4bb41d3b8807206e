"""What the market-data assets need of their resources, as protocols this package owns.

The assets depend on these, not on the top-level ``resources`` package (which implements them:
``resources/exchange_client.py``, ``resources/landing_store.py``), so the data flow never
imports the code location's wiring. An asset parameter annotated ``dg.ResourceParam[Port]``
is injected by its name like a resource class annotation; Dagster passes the bound
``ConfigurableResource`` itself (``dagster/_core/definitions/resource_annotation.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from petrosa_pipelines.landing.store import LandingStore
    from petrosa_pipelines.settings import Settings

#: the concurrency pool every asset that calls an exchange's REST API runs in; its limit in
#: dagster.yaml keeps parallel runs inside one request-weight budget
EXCHANGE_POOL = "exchange_rest"


@runtime_checkable
class ExchangePort(Protocol):
    """The exchanges as a run sees them: settings and each venue's history clients."""

    def settings(self) -> Settings:
        """The ``PETROSA_*`` settings the run uses."""
        ...

    def rest(self, venue: str | None = None) -> Any:
        """The REST history client of ``venue`` (None: the default venue)."""
        ...

    def archive(self, venue: str | None = None) -> Any:
        """The archive client of ``venue`` (None when the venue publishes none)."""
        ...


@runtime_checkable
class LandingPort(Protocol):
    """The landing zone the ingest writes."""

    def path(self) -> str:
        """The landing zone's root directory."""
        ...

    def store(self) -> LandingStore:
        """A reader of the landing zone."""
        ...


__all__ = ["EXCHANGE_POOL", "ExchangePort", "LandingPort"]
