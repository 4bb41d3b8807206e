"""⑤ Auditing: partition-aware asset checks, health scores, the batched audit.

Pure check functions live in ``audit`` / ``audit_book`` (no Dagster), what can be judged at all
in ``applicability``, the one-line reasons in ``explain``, scoring in ``health``,
the great-expectations factory in ``gx``; ``definitions`` wraps them for Dagster and
``batch`` runs them in batches, one run for many instrument-days. The alert
and auto-backfill sensors live in the top-level ``sensors`` package.

The Dagster objects below are loaded on first access, so importing a pure submodule (the
benchmark, a notebook) does not build the definitions.

- ``CHECKS``: every asset check definition (one multi-asset check per dataset, the
  candles/trades agreement, the three-way reconciliation)
- ``CHECK_ASSETS``: the ``checks/health`` asset (group ``checks``), with the day x symbol x
  dataset health grid (``grid``) and its ERROR check ``health_above_threshold``
- ``CHECK_JOBS``: ``audit_job`` (one op fanning out over many instrument-days: today's open
  partitions, a daily re-audit of recent closed days, health; see ``batch``)
- ``CHECK_SCHEDULES``: none (the audit runs from ``audit_sensor``)
- ``CHECK_SENSORS``: ``audit_sensor`` (at most one ``audit_job`` run per
  ``PETROSA_AUDIT_INTERVAL_S``, whatever the number of instruments)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "CHECKS": lambda d, r: list(d.ALL_CHECKS),
    "CHECK_ASSETS": lambda d, r: [d.health],
    "CHECK_JOBS": lambda d, r: [r.audit_job],
    "CHECK_SCHEDULES": lambda d, r: [],
    "CHECK_SENSORS": lambda d, r: [r.audit_sensor],
    "HEALTH_KEY": lambda d, r: d.HEALTH_KEY,
    "build_audit_sensor": lambda d, r: r.build_audit_sensor,
}


def __getattr__(name: str) -> Any:
    if name == "health_for":
        from petrosa_pipelines.checks.health import health_for

        return health_for
    if name in _EXPORTS:
        from petrosa_pipelines.checks import batch, definitions

        value = _EXPORTS[name](definitions, batch)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_EXPORTS, "health_for"]
