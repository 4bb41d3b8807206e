"""What the serving assets need of their resources, as protocols this package owns.

The assets depend on these, not on the top-level ``resources`` package (which implements them:
``resources/warehouse.py``, ``resources/mongo_sink.py``); see ``market_data/ports.py`` for how
Dagster injects a resource into a ``dg.ResourceParam[Port]`` parameter. Whether MongoDB is
configured is decided here too: the serving assets exist only when it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from petrosa_pipelines.serving.mongo import MongoSink
    from petrosa_pipelines.serving.warehouse import Warehouse

#: the secret that holds the MongoDB URL
MONGODB_URL_VAR = "PETROSA_MONGODB_URL"


def mongo_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when ``PETROSA_MONGODB_URL`` is set to something (checked when a run connects)."""
    return bool((os.environ if env is None else env).get(MONGODB_URL_VAR, "").strip())


@runtime_checkable
class WarehousePort(Protocol):
    """The PostgreSQL warehouse."""

    def warehouse(self) -> Warehouse:
        """The connected, migrated warehouse."""
        ...


@runtime_checkable
class MongoSinkPort(Protocol):
    """The MongoDB time-series sink."""

    #: the database the collections live in (named in the load's metadata)
    database: str

    def sink(self) -> MongoSink:
        """The connected sink, its collections and indexes ensured."""
        ...


__all__ = ["MONGODB_URL_VAR", "MongoSinkPort", "WarehousePort", "mongo_configured"]
