"""The code location: each layer's definitions, merged in data-flow order.

① exchanges -> ② ingest -> ③ landing -> ④ market_data -> ⑤ checks -> ⑥ analytics -> ⑦ catalog

Every layer exposes its own ``defs()`` (Dagster Open Platform's per-folder definitions:
https://github.com/dagster-io/dagster-open-platform); this module only merges them with the
sensors, the resources and the executor, the settings of the whole location. The exchange
feeds and the landing zone are external assets (Dagster does not materialise them), so the
asset graph starts where the data does; ``catalog.lineage.with_lineage`` adds, in each layer,
the edges no asset body declares, column lineage the open-source UI shows, and code links.

Deployment settings a cron needs are read when the definitions load, each by its layer:
``PETROSA_AUDIT_INTERVAL_S`` (checks), ``PETROSA_ANALYTICS_REFRESH_SECONDS`` (analytics) and
``PETROSA_START_DATE``, the partitions' first day (``market_data/partitions.py``).
"""

from __future__ import annotations

import dagster as dg

import resources
import sensors
from petrosa_pipelines.analytics import defs as analytics
from petrosa_pipelines.catalog import defs as catalog
from petrosa_pipelines.checks import defs as checks
from petrosa_pipelines.landing import defs as landing
from petrosa_pipelines.market_data import defs as market_data
from petrosa_pipelines.serving import defs as serving
from petrosa_pipelines.tooling import defs as tooling


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        # ① exchange feeds -> ② ingest -> ③ landing zone
        landing.defs(),
        # ④ market data, and the serving stores loaded from it
        market_data.defs(),
        serving.defs(),
        # ⑤ checks and health, ⑥ analytics, ⑦ the catalog's schema checks
        checks.defs(),
        analytics.defs(),
        catalog.defs(),
        # housekeeping: runs and their logs do not grow without bound
        tooling.defs(),
        sensors.defs(),
        resources.defs(),
        # in-process steps: a symbol-day's steps are small and process start-up (~2 s of
        # imports per step) dominates on small machines
        dg.Definitions(executor=dg.in_process_executor),
    )


defs = build_definitions()
