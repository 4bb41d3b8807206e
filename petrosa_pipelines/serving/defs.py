"""The serving stores of the code location: the warehouse (and MongoDB) loaders and their job."""

from __future__ import annotations

import dagster as dg

from petrosa_pipelines.serving.assets import LAYER
from petrosa_pipelines.serving.history import HISTORY_PREFIX

#: load one symbol-day of every dataset from the lake into the PostgreSQL warehouse (the
#: history loaders, by instrument-month, are launched on their own)
warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.groups(LAYER) - dg.AssetSelection.key_prefixes(HISTORY_PREFIX),
    description="Replace one symbol-day of every dataset in the warehouse from the lake.",
)


def defs() -> dg.Definitions:
    """The loaders (MongoDB's only when ``PETROSA_MONGODB_URL`` is set), day partitions and
    history months, and ``warehouse_job``."""
    from petrosa_pipelines.catalog.lineage import with_lineage
    from petrosa_pipelines.serving.assets import STORAGE_ASSETS
    from petrosa_pipelines.serving.history import HISTORY_STORAGE_ASSETS

    return dg.Definitions(
        assets=with_lineage([*STORAGE_ASSETS, *HISTORY_STORAGE_ASSETS]), jobs=[warehouse_job]
    )


__all__ = ["defs", "warehouse_job"]
