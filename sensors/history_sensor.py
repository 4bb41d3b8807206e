"""The history roll: once a day, record the months of days that left the rolling window.

The window of day partitions (``market_data/partitions.py``) moves when the code location
loads; the days it leaves keep their lake files and are tracked by instrument-month in
``market_data/history/*`` (``market_data/history.py``). This sensor requests at most one
``history_roll_job`` run per UTC day, and none while there is no history month: the run itself
finds what changed (``history.plan_roll``), so an idle day costs one short run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg

from petrosa_pipelines.market_data.history import HISTORY_ROLL_JOB, history_month_keys

#: one tick an hour is enough for a once-a-day run (its run key dedups the rest)
ROLL_INTERVAL_S = 3600


def build_history_sensor(
    clock: Callable[[], float] = time.time,
    months: Callable[[], list[str]] = history_month_keys,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The roll sensor (clock and months injectable for tests)."""

    @dg.sensor(
        name="history_roll_sensor",
        job_name=HISTORY_ROLL_JOB,
        minimum_interval_seconds=ROLL_INTERVAL_S,
        default_status=default_status,
        description="Once a UTC day: record the history months (market_data/history/*) of "
        "days that left the rolling window of day partitions.",
    )
    def _history_roll(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if not months():
            return dg.SensorResult(skip_reason="no history month: every day is a day partition")
        today = dt.datetime.fromtimestamp(clock(), tz=dt.UTC).date().isoformat()
        if context.cursor == today:
            return dg.SensorResult(skip_reason=f"rolled today ({today})")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"history_roll:{today}")], cursor=today
        )

    return _history_roll


history_roll_sensor = build_history_sensor()

__all__ = ["build_history_sensor", "history_roll_sensor"]
