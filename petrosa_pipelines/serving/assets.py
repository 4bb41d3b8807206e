"""Assets that load market-data partitions from the lake into the warehouse.

Partitioned exactly like their inputs, so each symbol-day is loaded (replaced) on its own, and
a re-materialisation of the input is followed by a replace of the same warehouse partition.
"""

import dagster as dg
import pandas as pd

from petrosa_pipelines.market_data.assets import DEFAULT_EXCHANGE, OWNER, asset_key
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions, split_partition_key
from resources.warehouse import WarehouseResource

LAYER = "storage"


class WarehouseLoadConfig(dg.Config):
    """Run settings of a warehouse load."""

    #: replace a partition with fewer rows than it holds (off: such a load fails and the
    #: warehouse keeps its rows; a lake partition never shrinks unless rows were proven wrong)
    allow_fewer_rows: bool = False


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
        config: WarehouseLoadConfig,
        frame: pd.DataFrame,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        day, symbol = split_partition_key(context.partition_key)
        exchange = str(frame["exchange"].iloc[0]) if len(frame) else DEFAULT_EXCHANGE
        report = warehouse.warehouse().load_partition(
            dataset,
            frame,
            exchange=exchange,
            symbol=symbol,
            day=day,
            qualifier="1m" if dataset == "candles" else None,
            never_fewer=not config.allow_fewer_rows,
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "replaced_rows": report.replaced_rows,
                "load_seconds": round(report.seconds, 3),
                "table": f"petrosa.{dataset}",
            }
        )

    _load.__name__ = f"warehouse_{dataset}"
    return _load


STORAGE_ASSETS = [build_warehouse_asset(d) for d in ("trades", "candles", "depth", "funding")]
