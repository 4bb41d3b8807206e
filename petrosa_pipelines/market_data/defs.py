"""Layer ④ of the code location: the partitioned market-data assets and their job."""

from __future__ import annotations

import warnings

import dagster as dg

from petrosa_pipelines.instruments import MARKET_DATA

#: one instrument-day of every market-data asset (the demo's and the window sensor's job)
market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.groups(MARKET_DATA),
    description="Materialise one symbol-day of trades, candles, depth and funding.",
)


def defs() -> dg.Definitions:
    """The four market-data assets, their edges to the sources they are filled from
    (``catalog.lineage``), ``market_data_job``, and their month-grain history before the
    rolling window (``history``) with the roll that records it."""
    from petrosa_pipelines.catalog.lineage import with_lineage
    from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS
    from petrosa_pipelines.market_data.history import HISTORY_ASSETS, history_roll_job

    with warnings.catch_warnings():
        # code references are a Dagster beta feature, used on purpose (as in catalog.lineage)
        warnings.simplefilter("ignore", dg.BetaWarning)
        history = list(dg.with_source_code_references(HISTORY_ASSETS))
    return dg.Definitions(
        assets=[*with_lineage(MARKET_DATA_ASSETS), *history],
        jobs=[market_data_job, history_roll_job],
    )


__all__ = ["defs", "market_data_job"]
