"""The code location: only wiring, read top to bottom in data-flow order.

① exchanges -> ② ingest -> ③ landing -> ④ market_data -> ⑤ checks -> ⑥ analytics -> ⑦ catalog
"""

from __future__ import annotations

import dagster as dg

import resources
import sensors
from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS
from petrosa_pipelines.storage.assets import STORAGE_ASSETS

#: one symbol-day of every market-data asset (the demo's and the window sensor's job)
market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.groups("market_data"),
    description="Materialise one symbol-day of trades, candles, depth and funding.",
)

defs = dg.Definitions.merge(
    # in-process steps: a symbol-day's steps are small and process start-up (~2 s of imports
    # per step) dominates on small machines; runs stay isolated from each other
    dg.Definitions(
        assets=[*MARKET_DATA_ASSETS, *STORAGE_ASSETS],
        jobs=[market_data_job],
        executor=dg.in_process_executor,
    ),
    sensors.defs(),
    resources.defs(),
)
