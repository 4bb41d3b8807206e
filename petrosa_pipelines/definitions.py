"""The code location: only wiring, read top to bottom in data-flow order.

① exchanges -> ② ingest -> ③ landing -> ④ market_data -> ⑤ checks -> ⑥ analytics -> ⑦ catalog

The exchange feeds and the landing zone are external assets (Dagster does not materialise
them), so the asset graph starts where the data does; ``catalog.lineage.with_lineage`` adds
the edges no asset body declares, column lineage the open-source UI shows, and code links.

Schedule intervals are deployment settings that a cron needs when the definitions load, so
they are read here, once, from the environment. The other setting read at load time is
``PETROSA_START_DATE``, the partitions' first day, in ``market_data/partitions.py``.
"""

from __future__ import annotations

import os

import dagster as dg

import resources
import sensors
from petrosa_pipelines.analytics import (
    ANALYTICS_ASSETS,
    ANALYTICS_JOBS,
    ANALYTICS_SENSORS,
    build_analytics_schedules,
)
from petrosa_pipelines.analytics.schedule import DEFAULT_REFRESH_SECONDS
from petrosa_pipelines.catalog.lineage import with_lineage
from petrosa_pipelines.catalog.schema_checks import build_schema_version_checks
from petrosa_pipelines.checks import CHECK_ASSETS, CHECK_JOBS, CHECK_SENSORS, CHECKS
from petrosa_pipelines.checks.definitions import (
    RECONCILE_CHECK,
    SCHEDULED_CHECKS,
    audit_job,
    build_audit_schedule,
)
from petrosa_pipelines.checks.settings import audit_settings
from petrosa_pipelines.ingest.job import ingest_job, ingest_stream_group
from petrosa_pipelines.landing.assets import source_and_landing_specs
from petrosa_pipelines.maintenance import purge_old_runs_job, purge_old_runs_schedule
from petrosa_pipelines.market_data.assets import (
    CANDLES_KEY,
    DEPTH_KEY,
    FUNDING_KEY,
    MARKET_DATA_ASSETS,
    TRADES_KEY,
)
from petrosa_pipelines.serving.assets import STORAGE_ASSETS
from petrosa_pipelines.settings import SettingError

#: one symbol-day of every market-data asset (the demo's and the window sensor's job)
market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.groups("market_data"),
    description="Materialise one symbol-day of trades, candles, depth and funding.",
)


#: load one symbol-day of every dataset from the lake into the PostgreSQL warehouse
warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.groups("storage"),
    description="Replace one symbol-day of every dataset in the warehouse from the lake.",
)


def _analytics_refresh_seconds() -> int:
    raw = os.environ.get("PETROSA_ANALYTICS_REFRESH_SECONDS", str(DEFAULT_REFRESH_SECONDS))
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(
            "PETROSA_ANALYTICS_REFRESH_SECONDS", raw, "an integer number of seconds"
        ) from None
    if value < 60 or value % 60 or (3600 % value and 86400 % value):
        raise SettingError(
            "PETROSA_ANALYTICS_REFRESH_SECONDS",
            raw,
            "a multiple of 60 s that divides an hour or a day evenly (default 900)",
        )
    return value


def build_definitions() -> dg.Definitions:
    audit_schedule = build_audit_schedule(
        audit_job,
        SCHEDULED_CHECKS,
        audit_settings().audit_interval_s,
        reconcile_checks=[RECONCILE_CHECK],
    )
    schema_checks = build_schema_version_checks(
        {TRADES_KEY: "trades", CANDLES_KEY: "candles", DEPTH_KEY: "depth", FUNDING_KEY: "funding"}
    )
    market_keys = [key for a in MARKET_DATA_ASSETS for key in a.keys]

    def lineage(assets: list) -> list:
        return with_lineage(assets, market_keys)

    return dg.Definitions.merge(
        # ① exchange feeds -> ② ingest (one long-running run per stream group, kept alive by
        # a sensor) -> ③ landing zone, which the ingest reports stream health on
        dg.Definitions(
            assets=lineage(source_and_landing_specs(ingest_stream_group.compute_fn.decorated_fn)),
            jobs=[ingest_job],
        ),
        # ④ market data: in-process steps (a symbol-day's steps are small and process
        # start-up, ~2 s of imports per step, dominates on small machines)
        dg.Definitions(
            assets=lineage([*MARKET_DATA_ASSETS, *STORAGE_ASSETS]),
            jobs=[market_data_job, warehouse_job],
            executor=dg.in_process_executor,
        ),
        # ⑤ checks and health
        dg.Definitions(
            assets=lineage(CHECK_ASSETS),
            asset_checks=[*CHECKS, *schema_checks],
            jobs=CHECK_JOBS,
            schedules=[audit_schedule],
            sensors=CHECK_SENSORS,
        ),
        # ⑥ analytics
        dg.Definitions(
            assets=lineage(ANALYTICS_ASSETS),
            jobs=ANALYTICS_JOBS,
            schedules=build_analytics_schedules(_analytics_refresh_seconds()),
            sensors=ANALYTICS_SENSORS,
        ),
        # housekeeping: runs and their logs do not grow without bound
        dg.Definitions(jobs=[purge_old_runs_job], schedules=[purge_old_runs_schedule]),
        sensors.defs(),
        resources.defs(),
    )


defs = build_definitions()
