"""Serving storage: the PostgreSQL warehouse, the MongoDB time-series sink, and their loaders.

See README.md in this folder for what is tested where. ``STORAGE_ASSETS`` lives in
``petrosa_pipelines.serving.assets`` (import it from there: it needs Dagster and the
``resources`` package, which plain warehouse users do not).
"""

from petrosa_pipelines.serving.mongo import MongoSink
from petrosa_pipelines.serving.warehouse import (
    LoadReport,
    Partition,
    PartitionMismatchError,
    Warehouse,
    WarehouseError,
)

__all__ = [
    "LoadReport",
    "MongoSink",
    "Partition",
    "PartitionMismatchError",
    "Warehouse",
    "WarehouseError",
]
