"""Sensors of the code location. Imported only by ``petrosa_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """Every sensor this package defines (imported here so importing the package stays light)."""
    from sensors.alert_sensor import check_failure_alert_sensor
    from sensors.auto_backfill_sensor import auto_backfill_sensor
    from sensors.history_sensor import history_roll_sensor
    from sensors.ingest_supervisor import ingest_supervisor_sensor
    from sensors.symbols_sensor import symbols_sensor
    from sensors.window_sensor import window_sensor

    return dg.Definitions(
        sensors=[
            # ② keep one ingest run per stream group alive; ④ closed days -> partitions
            ingest_supervisor_sensor,
            symbols_sensor,
            window_sensor,
            history_roll_sensor,
            # ⑤ alerts and repairs
            check_failure_alert_sensor,
            auto_backfill_sensor,
        ]
    )


__all__ = ["defs"]
