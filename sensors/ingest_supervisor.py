"""Keep exactly one ingest run alive per enabled stream group (the seed's leader election).

Every tick, per group: if no run of the group is active (queued, starting, started or being
canceled), request one; if the active run's heartbeat went stale (or a started run never wrote
one), cancel it so the next tick relaunches; cancel runs of groups that are no longer enabled.
Mutual exclusion comes from the status query; two overlapping ticks (or a daemon restart between
evaluation and launch) cannot both launch, because the ``run_key`` names the group's next
generation (its count of runs so far) and the daemon never launches a run key twice. A second
writer that still slipped through would fail on the group's landing lock.

What a tick did is visible without reading logs. Dagster 1.13 records every tick that requests
no run as SKIPPED (Dagster's ``dagster/_daemon/sensor.py``, ``_evaluate_sensor``), so the skip
reason says what the supervisor saw or did: each group's run, its heartbeat's age and liveness,
or the run it cancelled and why. Launches and cancellations are also reported as observations
of the group's ``landing/<dataset>`` assets, so they show on those assets' timelines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from petrosa_pipelines.ingest.config import ALL_DATASETS, parse_ingest_groups
from petrosa_pipelines.ingest.heartbeat import read_heartbeat
from petrosa_pipelines.ingest.job import EXCHANGE_TAG, GROUP_TAG, INGEST_JOB_NAME, ingest_job
from petrosa_pipelines.landing.assets import supervisor_observations

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: a heartbeat older than this (seconds) means the run is hung or its process is gone
DEFAULT_STALE_AFTER_S = 120.0
#: a started run gets this long to write its first heartbeat
DEFAULT_STARTUP_GRACE_S = 180.0


@dataclass(frozen=True)
class StreamGroup:
    """One ingest run's worth of streams."""

    name: str
    symbols: tuple[str, ...]
    datasets: tuple[str, ...] = ALL_DATASETS
    exchange: str = "binance"
    enabled: bool = True
    run_config_overrides: dict[str, Any] = field(default_factory=dict)


def groups_from_env() -> list[StreamGroup]:
    """Groups from ``PETROSA_INGEST_GROUPS`` (a JSON list), else one ``default`` group.

    ``[{"name": "majors", "symbols": ["BTCUSDT"], "datasets": ["trades"], "enabled": true}]``;
    the default group streams every symbol of the ``PETROSA_SYMBOLS`` allow-list.
    """
    from petrosa_pipelines.settings import from_env

    raw = os.environ.get("PETROSA_INGEST_GROUPS")
    if not raw:
        settings = from_env()
        return [
            StreamGroup(
                "default",
                tuple(settings.symbols),
                exchange=settings.exchange,
                # follow the symbols sensor: allow-list x trading perpetuals, live
                run_config_overrides={"follow_dynamic_symbols": True},
            )
        ]
    out = []
    for g in parse_ingest_groups(raw):  # checked: errors name the group and key
        out.append(
            StreamGroup(
                name=g["name"],
                symbols=tuple(s.upper() for s in g["symbols"]),
                datasets=tuple(g.get("datasets", ALL_DATASETS)),
                exchange=g.get("exchange", "binance"),
                enabled=bool(g.get("enabled", True)),
                run_config_overrides=dict(g.get("run_config", {})),
            )
        )
    return out


def _landing_root() -> str:
    from petrosa_pipelines.settings import from_env

    return from_env().landing_path


def _cancel(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str) -> str:
    """Terminate like the UI does; a run with no live process is marked so it frees the group."""
    ok = False
    try:
        ok = instance.run_coordinator.cancel_run(run.run_id)
    except Exception:  # noqa: BLE001 - a launcher that cannot reach the run
        ok = False
    if not ok:
        fresh = instance.get_run_by_id(run.run_id) or run
        if fresh.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            instance.report_run_canceled(fresh, message=why)
        elif fresh.status in ACTIVE_STATUSES:
            instance.report_run_failed(fresh, message=f"ingest supervisor: {why}")
    return f"{run.run_id[:8]} {why}"


def _is_stale(
    run: dg.DagsterRun,
    record_start: float | None,
    heartbeat: dict[str, Any] | None,
    now: float,
    stale_after_s: float,
    grace_s: float,
) -> str | None:
    """Why a STARTED run is considered dead, or None while it looks alive."""
    if run.status != dg.DagsterRunStatus.STARTED:
        return None
    if heartbeat is not None and heartbeat.get("run_id") == run.run_id:
        age = now - heartbeat["written_at"] / 1000
        if age > stale_after_s:
            return f"heartbeat stale for {age:.0f}s"
        if heartbeat.get("liveness") == "stopped":
            return "engine stopped but the run did not end"
        return None
    started = record_start or now
    if now - started > grace_s:
        return f"no heartbeat {now - started:.0f}s after start"
    return None


def _state(run: dg.DagsterRun, heartbeat: dict[str, Any] | None, now: float) -> str:
    """``abc12345 STARTED, heartbeat 4s old, alive``: a live run as a tick reports it."""
    text = f"{run.run_id[:8]} {run.status.value}"
    if heartbeat is not None and heartbeat.get("run_id") == run.run_id:
        age = max(0.0, now - heartbeat["written_at"] / 1000)
        text += f", heartbeat {age:.0f}s old, {heartbeat.get('liveness', 'unknown')}"
    elif run.status == dg.DagsterRunStatus.STARTED:
        text += ", no heartbeat yet"
    return text


@dataclass
class TickReport:
    """What one tick saw (``notes``) and did (``actions``: group, datasets, action, run id)."""

    notes: list[str] = field(default_factory=list)
    actions: list[tuple[str, tuple[str, ...], str, str | None]] = field(default_factory=list)

    def act(self, group: StreamGroup | str, action: str, run_id: str | None = None) -> None:
        name = group.name if isinstance(group, StreamGroup) else group
        datasets = group.datasets if isinstance(group, StreamGroup) else ALL_DATASETS
        self.notes.append(f"{name}: {action}")
        self.actions.append((name, tuple(datasets), action, run_id))

    def observations(self) -> list[dg.AssetObservation]:
        return [
            obs
            for group, datasets, action, run_id in self.actions
            for obs in supervisor_observations(datasets, group, action, run_id)
        ]


def _supervise_runs(
    instance: dg.DagsterInstance,
    runs: list[dg.DagsterRun],
    group: StreamGroup,
    root: str,
    now: float,
    stale_after_s: float,
    startup_grace_s: float,
    report: TickReport,
) -> None:
    """Leave live runs alone; cancel (so the next tick relaunches) the ones that went stale."""
    for run in runs:
        rec = instance.get_run_record_by_id(run.run_id)
        started = None
        if rec is not None:
            started = rec.start_time or rec.create_timestamp.timestamp()
        hb = read_heartbeat(root, group.exchange, group.name)
        why = _is_stale(run, started, hb, now, stale_after_s, startup_grace_s)
        if why:
            action = "cancelled " + _cancel(instance, run, why) + "; relaunch on the next tick"
            report.act(group, action, run.run_id)
        else:
            report.notes.append(f"{group.name}: {_state(run, hb, now)}")


def build_ingest_supervisor(
    groups: Callable[[], Sequence[StreamGroup]] = groups_from_env,
    landing_root: Callable[[], str] = _landing_root,
    *,
    name: str = "ingest_supervisor",
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    startup_grace_s: float = DEFAULT_STARTUP_GRACE_S,
    minimum_interval_seconds: int = 30,
    clock: Callable[[], float] = time.time,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The supervisor sensor over ``groups`` (injectable for tests and other deployments)."""

    @dg.sensor(
        name=name,
        job=ingest_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Exactly one ingest run per enabled stream group; relaunch dead ones.",
    )
    def _supervisor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        now = clock()
        root = landing_root()
        configured = {g.name: g for g in groups()}
        wanted = {name: g for name, g in configured.items() if g.enabled}
        requests: list[dg.RunRequest] = []
        report = TickReport()
        active = instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=ACTIVE_STATUSES)
        )
        by_group: dict[str, list[dg.DagsterRun]] = {}
        for run in active:
            by_group.setdefault(run.tags.get(GROUP_TAG, ""), []).append(run)
        # groups that are no longer enabled: stop their runs
        for group, runs in by_group.items():
            if group not in wanted:
                for run in runs:
                    if run.status != dg.DagsterRunStatus.CANCELING:
                        why = f"group {group!r} is not enabled"
                        action = "cancelled " + _cancel(instance, run, why)
                        report.act(configured.get(group, group), action, run.run_id)
        for group in wanted.values():
            runs = by_group.get(group.name, [])
            if runs:
                _supervise_runs(
                    instance, runs, group, root, now, stale_after_s, startup_grace_s, report
                )
                continue
            generation = instance.get_runs_count(
                dg.RunsFilter(job_name=INGEST_JOB_NAME, tags={GROUP_TAG: group.name})
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"ingest:{group.exchange}:{group.name}:{generation}",
                    run_config=_run_config(group),
                    tags={GROUP_TAG: group.name, EXCHANGE_TAG: group.exchange},
                )
            )
            report.act(group, f"requested run generation {generation} (no active run)")
        summary = "; ".join(report.notes) or "no stream group is enabled"
        context.log.info(summary)
        if requests:
            return dg.SensorResult(run_requests=requests, asset_events=report.observations())
        if not report.actions:
            return dg.SensorResult(skip_reason=f"nothing to do: {summary}")
        return dg.SensorResult(skip_reason=summary, asset_events=report.observations())

    return _supervisor


def _run_config(group: StreamGroup) -> dict[str, Any]:
    from petrosa_pipelines.ingest.job import run_config_for

    return run_config_for(
        group.name,
        list(group.symbols),
        list(group.datasets),
        exchange=group.exchange,
        **group.run_config_overrides,
    )


ingest_supervisor_sensor = build_ingest_supervisor()

__all__ = [
    "ACTIVE_STATUSES",
    "StreamGroup",
    "build_ingest_supervisor",
    "groups_from_env",
    "ingest_supervisor_sensor",
]
