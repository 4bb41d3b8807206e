"""Sensors of the code location. Imported only by ``petrosa_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """Every sensor this package defines (imported here so importing the package stays light)."""
    from sensors.alert_sensor import check_failure_alert_sensor
    from sensors.auto_backfill_sensor import auto_backfill_sensor

    return dg.Definitions(sensors=[check_failure_alert_sensor, auto_backfill_sensor])


__all__ = ["defs"]
