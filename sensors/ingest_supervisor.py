"""Keep exactly one ingest run alive per enabled stream group (the seed's leader election).

A group is one venue's: it is keyed by (venue storage name, group name), so two venues may
each have a group of the same name and each gets its own run; its heartbeat is read where the
engine writes it, under the venue's storage name (a group configured as ``binance-usdm`` is
read under ``binance``).

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

from petrosa_pipelines.exchanges import adapter_class
from petrosa_pipelines.ingest.config import NATS_KEYS, parse_ingest_groups
from petrosa_pipelines.ingest.heartbeat import read_heartbeat
from petrosa_pipelines.ingest.job import (
    EXCHANGE_TAG,
    GROUP_TAG,
    INGEST_JOB_NAME,
    ingest_job,
    source_tags,
)
from petrosa_pipelines.instruments import DATASETS
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
    datasets: tuple[str, ...] = DATASETS
    exchange: str = "binance"
    enabled: bool = True
    run_config_overrides: dict[str, Any] = field(default_factory=dict)
    #: ``websocket`` or ``nats``; ``nats``: the group's NATS keys (``ingest.config.NATS_KEYS``,
    #: checked credential-free by ``parse_ingest_groups``), passed on as run config
    source: str = "websocket"
    nats: dict[str, Any] = field(default_factory=dict)
    #: the venue's stream profile (empty: its default), passed on as run config
    stream_profile: str = ""

    @property
    def tags(self) -> dict[str, str]:
        """The run tags: group, venue, source (and NATS subject/stream; never the URL)."""
        return {
            GROUP_TAG: self.name,
            EXCHANGE_TAG: self.storage,
            **source_tags(self.source, self.nats.get("nats_subject"), self.nats.get("nats_stream")),
        }

    @property
    def storage(self) -> str:
        """The venue's landing directory, where the engine writes the heartbeat."""
        return storage_of(self.exchange)

    @property
    def key(self) -> tuple[str, str]:
        """(storage name, group name): what one run is kept alive for."""
        return self.storage, self.name


def storage_of(exchange: str) -> str:
    """The storage name of a venue id or storage name; an unknown one as given."""
    try:
        return adapter_class(exchange).name
    except ValueError:
        return exchange


def _run_key(run: dg.DagsterRun) -> tuple[str, str]:
    """(storage name, group) of an ingest run; runs from before the venue tag are Binance's."""
    return storage_of(run.tags.get(EXCHANGE_TAG, "binance")), run.tags.get(GROUP_TAG, "")


def groups_from_env() -> list[StreamGroup]:
    """Groups from ``PETROSA_INGEST_GROUPS`` (a JSON list), else one default group per venue.

    ``[{"name": "majors", "symbols": ["BTCUSDT"], "datasets": ["trades"], "enabled": true}]``;
    the default groups stream every instrument of the ``PETROSA_SYMBOLS`` allow-list: the
    default venue's group is ``default`` (its historic name), another venue's
    ``default_<venue>`` (``-`` as ``_``). A group's ``exchange`` is its venue's storage name,
    the landing directory it writes to (``binance`` for Binance USD-M).
    """
    from petrosa_pipelines.instruments import storage_name
    from petrosa_pipelines.settings import from_env

    raw = os.environ.get("PETROSA_INGEST_GROUPS")
    if not raw:
        settings = from_env()
        return [
            StreamGroup(
                "default" if venue == settings.venue else f"default_{venue.replace('-', '_')}",
                tuple(settings.allow_list(venue) or ()),
                exchange=storage_name(venue),
                # follow the symbols sensor: allow-list x trading perpetuals, live
                run_config_overrides={"follow_dynamic_symbols": True},
            )
            for venue in settings.venues
        ]
    out = []
    for g in parse_ingest_groups(raw):  # checked: errors name the group and key
        out.append(
            StreamGroup(
                name=g["name"],
                symbols=tuple(s.upper() for s in g["symbols"]),
                datasets=tuple(g.get("datasets", DATASETS)),
                exchange=g.get("exchange", "binance"),
                enabled=bool(g.get("enabled", True)),
                run_config_overrides=dict(g.get("run_config", {})),
                source=g.get("source", "websocket"),
                stream_profile=g.get("stream_profile", ""),
                nats={k: g[k] for k in NATS_KEYS if g.get(k) is not None},
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
    #: (group, datasets, action, run id, venue storage name or None)
    actions: list[tuple[str, tuple[str, ...], str, str | None, str | None]] = field(
        default_factory=list
    )

    def act(self, group: StreamGroup | str, action: str, run_id: str | None = None) -> None:
        name = group.name if isinstance(group, StreamGroup) else group
        datasets = group.datasets if isinstance(group, StreamGroup) else DATASETS
        storage = group.storage if isinstance(group, StreamGroup) else None
        self.notes.append(f"{name}: {action}")
        self.actions.append((name, tuple(datasets), action, run_id, storage))

    def observations(self) -> list[dg.AssetObservation]:
        return [
            obs
            for group, datasets, action, run_id, storage in self.actions
            for obs in supervisor_observations(datasets, group, action, run_id, exchange=storage)
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
        hb = read_heartbeat(root, group.storage, group.name)
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
        configured = {g.key: g for g in groups()}
        wanted = {key: g for key, g in configured.items() if g.enabled}
        requests: list[dg.RunRequest] = []
        report = TickReport()
        active = instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=ACTIVE_STATUSES)
        )
        by_group: dict[tuple[str, str], list[dg.DagsterRun]] = {}
        for run in active:
            by_group.setdefault(_run_key(run), []).append(run)
        # groups that are no longer enabled: stop their runs
        for key, runs in by_group.items():
            if key not in wanted:
                for run in runs:
                    if run.status != dg.DagsterRunStatus.CANCELING:
                        why = f"group {key[1]!r} is not enabled ({key[0]})"
                        action = "cancelled " + _cancel(instance, run, why)
                        report.act(configured.get(key, key[1]), action, run.run_id)
        for group in wanted.values():
            runs = by_group.get(group.key, [])
            if runs:
                _supervise_runs(
                    instance, runs, group, root, now, stale_after_s, startup_grace_s, report
                )
                continue
            # counted over every venue's runs of this name: it only grows, so a run key
            # (which names the venue) is never asked for twice, whatever the tags said before
            generation = instance.get_runs_count(
                dg.RunsFilter(job_name=INGEST_JOB_NAME, tags={GROUP_TAG: group.name})
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"ingest:{group.storage}:{group.name}:{generation}",
                    run_config=_run_config(group),
                    tags=group.tags,
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
        **({"source": "nats", **group.nats} if group.source == "nats" else {}),
        **({"stream_profile": group.stream_profile} if group.stream_profile else {}),
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
