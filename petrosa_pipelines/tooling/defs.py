"""Housekeeping of the code location: runs and their logs do not grow without bound."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """The run-purge job and its schedule (``tooling/maintenance.py``)."""
    from petrosa_pipelines.tooling.maintenance import purge_old_runs_job, purge_old_runs_schedule

    return dg.Definitions(jobs=[purge_old_runs_job], schedules=[purge_old_runs_schedule])


__all__ = ["defs"]
