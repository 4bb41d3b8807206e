"""Resources of the code location. Imported only by ``petrosa_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg

from resources.exchange_client import ExchangeResource
from resources.lake_io_manager import LakeIOManager
from resources.landing_store import LandingResource
from resources.mongo_sink import MongoSinkResource
from resources.warehouse import WarehouseResource


def defs() -> dg.Definitions:
    """Default resources: everything read from ``PETROSA_*`` settings when a run starts."""
    return dg.Definitions(
        resources={
            "exchange": ExchangeResource(),
            "landing": LandingResource(),
            "io_manager": LakeIOManager(),
            # secrets only through the environment, resolved when a run starts
            "warehouse": WarehouseResource(url=dg.EnvVar("PETROSA_WAREHOUSE_URL")),
            "mongo_sink": MongoSinkResource(url=dg.EnvVar("PETROSA_MONGODB_URL")),
        }
    )


__all__ = [
    "ExchangeResource",
    "LakeIOManager",
    "LandingResource",
    "MongoSinkResource",
    "WarehouseResource",
    "defs",
]
