"""Layer ⑦ of the code location: the catalog's own checks (a breaking column change of a
market-data asset needs a new schema version)."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """One ``schema_version_compatible`` check per market-data asset."""
    from petrosa_pipelines.catalog.schema_checks import build_schema_version_checks
    from petrosa_pipelines.instruments import DATASETS
    from petrosa_pipelines.market_data.assets import asset_key

    return dg.Definitions(
        asset_checks=build_schema_version_checks({asset_key(d): d for d in DATASETS})
    )


__all__ = ["defs"]
