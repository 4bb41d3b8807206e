"""Layer ⑤ of the code location: the asset checks, the health asset, and the batched audit
(``audit_job`` and the ``audit_sensor`` that requests at most one run of it per interval)."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """The checks layer. The audit interval (``PETROSA_AUDIT_INTERVAL_S``) is read by the
    sensor at each tick, so no cron is fixed when the definitions load."""
    from petrosa_pipelines.catalog.lineage import with_lineage
    from petrosa_pipelines.checks import batch
    from petrosa_pipelines.checks import definitions as checks
    from petrosa_pipelines.instruments import DATASETS

    # checks/health reads check results, not assets: the market-data assets are its deps
    market_keys = [checks.market_key(d) for d in DATASETS]
    return dg.Definitions(
        assets=with_lineage([checks.health], market_keys),
        asset_checks=checks.ALL_CHECKS,
        jobs=[batch.audit_job],
        sensors=[batch.audit_sensor],
    )


__all__ = ["defs"]
