"""⑤ Auditing: partition-aware asset checks, health scores, scheduled audits.

Pure check functions live in ``audit`` / ``audit_book`` (no Dagster), what can be judged at all
in ``applicability``, the one-line reasons in ``explain``, scoring in ``health``,
the great-expectations factory in ``gx``; ``definitions`` wraps them for Dagster. The alert
and auto-backfill sensors live in the top-level ``sensors`` package.

The Dagster objects below are loaded on first access, so importing a pure submodule (the
benchmark, a notebook) does not build the definitions.

- ``CHECKS``: every asset check definition (one multi-asset check per dataset, the
  candles/trades agreement, the three-way reconciliation)
- ``CHECK_ASSETS``: the ``checks/health`` asset (group ``checks``), with the day x symbol x
  dataset health grid (``grid``) and its ERROR check ``health_above_threshold``
- ``CHECK_JOBS``: ``audit_job`` (checks only, partition passed as run tags)
- ``CHECK_SCHEDULES``: ``audit_schedule`` (default interval 300 s; see ``build_audit_schedule``)
- ``CHECK_SENSORS``: ``health_refresh_sensor`` (materialises health when results land)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "CHECKS": lambda d: list(d.ALL_CHECKS),
    "CHECK_ASSETS": lambda d: [d.health],
    "CHECK_JOBS": lambda d: [d.audit_job],
    "CHECK_SCHEDULES": lambda d: [d.audit_schedule],
    "CHECK_SENSORS": lambda d: [d.health_refresh_sensor],
    "HEALTH_KEY": lambda d: d.HEALTH_KEY,
    "build_audit_schedule": lambda d: d.build_audit_schedule,
}


def __getattr__(name: str) -> Any:
    if name == "health_for":
        from petrosa_pipelines.checks.health import health_for

        return health_for
    if name in _EXPORTS:
        from petrosa_pipelines.checks import definitions

        value = _EXPORTS[name](definitions)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_EXPORTS, "health_for"]
