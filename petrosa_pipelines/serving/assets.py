"""Assets that load market-data partitions from the lake into the serving stores.

Partitioned exactly like their inputs, so each symbol-day is loaded (replaced) on its own, and
a re-materialisation of the input is followed by a replace of the same serving partition.

- ``storage/warehouse_<dataset>``: the PostgreSQL warehouse, always defined.
- ``storage/mongo_<dataset>``: the MongoDB time-series store (the seed's serving store for
  time series, ``serving/mongo.py``), defined only when ``PETROSA_MONGODB_URL`` is set. An
  install without MongoDB shows no MongoDB asset at all, rather than one that fails or that
  reports a materialisation of nothing.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd

from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.market_data.assets import OWNER, asset_key
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions, split_partition_key
from petrosa_pipelines.serving.ports import MongoSinkPort, WarehousePort, mongo_configured

LAYER = "storage"
#: a MongoDB loader's code version where it changed what a partition's documents are: depth
#: v2 writes a document per snapshot, and partitions loaded before keep a document per level
#: until they are loaded again (the warehouse converts its table in a migration instead)
MONGO_CODE_VERSIONS = {"depth": 2}


class ServingLoadConfig(dg.Config):
    """Run settings of a load into a serving store (the warehouse or MongoDB)."""

    #: replace a partition with fewer rows than it holds (off: such a load fails and the store
    #: keeps its rows; a lake partition never shrinks unless rows were proven wrong)
    allow_fewer_rows: bool = False


def load_arguments(
    context: dg.AssetExecutionContext, frame: pd.DataFrame, dataset: str, config: ServingLoadConfig
) -> dict[str, Any]:
    """What every store's replace call needs of one symbol-day partition."""
    day, inst = split_partition_key(context.partition_key)
    return {
        "exchange": inst.exchange,
        "symbol": inst.symbol,
        "day": day,
        "qualifier": "1m" if dataset == "candles" else None,
        "never_fewer": not config.allow_fewer_rows,
    }


def load_metadata(rows: int, replaced_rows: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """The materialisation metadata of a load, whatever the store."""
    return {
        "dagster/row_count": rows,
        "replaced_rows": replaced_rows,
        "load_seconds": round(seconds, 3),
        **extra,
    }


def warehouse_asset_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([LAYER, f"warehouse_{dataset}"])


def build_warehouse_asset(dataset: str) -> dg.AssetsDefinition:
    """The asset that replaces one warehouse partition of ``dataset`` from the lake."""

    @dg.asset(
        key=warehouse_asset_key(dataset),
        ins={"frame": dg.AssetIn(key=asset_key(dataset))},
        partitions_def=daily_symbol_partitions,
        group_name=LAYER,
        description=(
            f"{dataset} in the PostgreSQL warehouse (petrosa.{dataset}): each symbol-day "
            "replaced atomically from the lake by binary COPY."
        ),
        kinds={"postgres"},
        owners=[OWNER],
        tags={"dataset": dataset, "layer": LAYER},
        code_version=f"warehouse-{dataset}-v1",
    )
    def _load(
        context: dg.AssetExecutionContext,
        config: ServingLoadConfig,
        frame: pd.DataFrame,
        warehouse: dg.ResourceParam[WarehousePort],
    ) -> dg.MaterializeResult:
        args = load_arguments(context, frame, dataset, config)
        report = warehouse.warehouse().load_partition(dataset, frame, **args)
        return dg.MaterializeResult(
            metadata=load_metadata(
                report.rows, report.replaced_rows, report.seconds, table=f"petrosa.{dataset}"
            )
        )

    _load.__name__ = f"warehouse_{dataset}"
    return _load


def mongo_asset_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([LAYER, f"mongo_{dataset}"])


def build_mongo_asset(dataset: str) -> dg.AssetsDefinition:
    """The asset that replaces one partition of ``dataset`` in the MongoDB time-series store."""

    @dg.asset(
        key=mongo_asset_key(dataset),
        ins={"frame": dg.AssetIn(key=asset_key(dataset))},
        partitions_def=daily_symbol_partitions,
        group_name=LAYER,
        description=(
            f"{dataset} in the MongoDB time-series collection `{dataset}` (series identity "
            "and load id in `meta`): each symbol-day replaced from the lake by inserting a new "
            "load and moving the partition's pointer, so readers see the old day or the new "
            "one. Defined only when PETROSA_MONGODB_URL is set."
        ),
        kinds={"mongodb"},
        owners=[OWNER],
        tags={"dataset": dataset, "layer": LAYER},
        code_version=f"mongo-{dataset}-v{MONGO_CODE_VERSIONS.get(dataset, 1)}",
    )
    def _load(
        context: dg.AssetExecutionContext,
        config: ServingLoadConfig,
        frame: pd.DataFrame,
        mongo_sink: dg.ResourceParam[MongoSinkPort],
    ) -> dg.MaterializeResult:
        args = load_arguments(context, frame, dataset, config)
        load = mongo_sink.sink().replace_partition(dataset, frame, **args)
        return dg.MaterializeResult(
            metadata=load_metadata(
                load.rows,
                load.replaced_rows,
                load.seconds,
                collection=f"{mongo_sink.database}.{dataset}",
                load_id=load.load_id,
            )
        )

    _load.__name__ = f"mongo_{dataset}"
    return _load


SERVED_DATASETS = DATASETS


def build_storage_assets(env: Mapping[str, str] | None = None) -> list[dg.AssetsDefinition]:
    """The warehouse loaders, plus the MongoDB loaders when ``PETROSA_MONGODB_URL`` is set in
    ``env`` (default: the process environment, read when the code location loads)."""
    assets = [build_warehouse_asset(d) for d in SERVED_DATASETS]
    if mongo_configured(env):
        assets += [build_mongo_asset(d) for d in SERVED_DATASETS]
    return assets


STORAGE_ASSETS = build_storage_assets()
