"""Layer ⑥ of the code location: the analytics assets, their jobs, refresh schedules and the
automation sensor.

The refresh interval is a deployment setting a cron needs when the definitions load, so it is
read here, once, from ``PETROSA_ANALYTICS_REFRESH_SECONDS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from petrosa_pipelines.analytics.schedule import DEFAULT_REFRESH_SECONDS
from petrosa_pipelines.settings import SettingError

REFRESH_VAR = "PETROSA_ANALYTICS_REFRESH_SECONDS"


def refresh_seconds(env: Mapping[str, str] | None = None) -> int:
    """The refresh interval: a multiple of 60 s that divides an hour or a day (cron-able)."""
    raw = (os.environ if env is None else env).get(REFRESH_VAR, str(DEFAULT_REFRESH_SECONDS))
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(REFRESH_VAR, raw, "an integer number of seconds") from None
    if value < 60 or value % 60 or (3600 % value and 86400 % value):
        raise SettingError(
            REFRESH_VAR,
            raw,
            "a multiple of 60 s that divides an hour or a day evenly (default 900)",
        )
    return value


def defs() -> dg.Definitions:
    """The analytics layer, its column lineage visible in the UI (``catalog.lineage``)."""
    from petrosa_pipelines.analytics import (
        ANALYTICS_ASSETS,
        ANALYTICS_JOBS,
        ANALYTICS_SENSORS,
        build_analytics_schedules,
    )
    from petrosa_pipelines.catalog.lineage import with_lineage

    return dg.Definitions(
        assets=with_lineage(ANALYTICS_ASSETS),
        jobs=ANALYTICS_JOBS,
        schedules=build_analytics_schedules(refresh_seconds()),
        sensors=ANALYTICS_SENSORS,
    )


__all__ = ["REFRESH_VAR", "defs", "refresh_seconds"]
