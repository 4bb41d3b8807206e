"""Analytics on top of the market data: multi-timeframe candles, volatility, volume, liquidity,
trend, deviation, seasonality, correlation and funding (layer 6).

The pure modules (``resample``, ``volatility``, ...) import no Dagster; ``assets`` and
``schedule`` wire them. For ``definitions.py``: ``ANALYTICS_ASSETS``, ``ANALYTICS_JOBS``,
``ANALYTICS_SCHEDULES`` (default 900 s; ``build_analytics_schedules(seconds)`` for another
interval) and ``ANALYTICS_SENSORS`` (the automation sensor of the analytics group).
"""

from petrosa_pipelines.analytics.assets import (
    ANALYTICS_ASSETS,
    ANALYTICS_JOBS,
    analytics_automation_sensor,
    analytics_key,
)
from petrosa_pipelines.analytics.schedule import (
    DEFAULT_REFRESH_SECONDS,
    build_analytics_schedules,
)

ANALYTICS_SCHEDULES = build_analytics_schedules(DEFAULT_REFRESH_SECONDS)
ANALYTICS_SENSORS = [analytics_automation_sensor]

__all__ = [
    "ANALYTICS_ASSETS",
    "ANALYTICS_JOBS",
    "ANALYTICS_SCHEDULES",
    "ANALYTICS_SENSORS",
    "DEFAULT_REFRESH_SECONDS",
    "analytics_key",
    "build_analytics_schedules",
]
