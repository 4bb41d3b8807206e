"""The schedule that refreshes rolling and cross-symbol analytics of the latest closed window.

Why a schedule on top of declarative automation: automation reacts to upstream updates, but the
current day's partition is re-materialised as its windows close, and a rolling or cross-symbol
view should also be refreshed on a steady cadence so dashboards never trail by more than one
interval. The interval is a setting (the seed's default: 900 s). A tick at T refreshes the date
partition holding the last closed window [T - interval, T): at 00:00 that is still yesterday,
which gives yesterday its final refresh once its last window closed. Otherwise it is today's
partition, the open day (``market_data.partitions``): these schedules refresh the day so far on
purpose, unlike the window sensor, which builds only closed days.

Only symbol-days whose 1m candles exist are requested, and none whose candles carry a failed
blocking check, so the schedule never pushes data the auditors stopped.

Both schedules start RUNNING, as the README describes the refresh: a tick with nothing ready
is a cheap skip (one query of materialisations), and a deployment that wants no refresh
turns them off in the UI (the toggle persists in the instance).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from petrosa_pipelines.analytics.assets import (
    analytics_cross_symbol_job,
    analytics_rolling_job,
)
from petrosa_pipelines.instruments import partition_key_str
from petrosa_pipelines.market_data.assets import CANDLES_KEY
from petrosa_pipelines.market_data.partitions import (
    PARTITIONS_START,
    SYMBOLS_PARTITIONS_NAME,
    partition_key,
)

DEFAULT_REFRESH_SECONDS = 900


def cron_for_interval(seconds: int) -> str:
    """Cron expression firing every ``seconds``; it must divide an hour or a day evenly."""
    if seconds <= 0 or seconds % 60:
        raise ValueError(f"refresh interval {seconds}s must be a positive multiple of 60 s")
    minutes = seconds // 60
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        hours = minutes // 60
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    raise ValueError(f"refresh interval {seconds}s must divide an hour or a day evenly")


def latest_closed_window(tick: dt.datetime, seconds: int) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the last window of ``seconds`` that closed at or before ``tick``."""
    tick = tick.astimezone(dt.UTC)
    epoch = int(tick.timestamp())
    end = epoch - epoch % seconds
    return (
        dt.datetime.fromtimestamp(end - seconds, tz=dt.UTC),
        dt.datetime.fromtimestamp(end, tz=dt.UTC),
    )


def _failed_blocking_check(instance: dg.DagsterInstance, graph, key: str) -> str | None:
    """Name of a blocking check on candles whose latest result for ``key`` failed, if any."""
    from dagster._core.event_api import PartitionKeyFilter  # no public path in 1.13
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    check_keys = [
        ck
        for ck in graph.asset_check_keys
        if ck.asset_key == CANDLES_KEY and graph.get_check_spec(ck).blocking
    ]
    if not check_keys:
        return None
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        check_keys, partition_filter=PartitionKeyFilter(key=key)
    )
    for ck, record in latest.items():
        if record is not None and record.status == Status.FAILED:
            return ck.name
    return None


def ready_symbols(context: dg.ScheduleEvaluationContext, day: str) -> list[str]:
    """Symbols whose candles for ``day`` are materialised and not stopped by a blocking check."""
    instance = context.instance
    symbols = instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME)
    keys = {s: str(partition_key(day, s)) for s in symbols}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CANDLES_KEY, asset_partitions=list(keys.values())),
        limit=max(1, len(keys)) * 4,
    ).records
    present = {r.partition_key for r in records}
    graph = context.repository_def.asset_graph if context.repository_def else None
    ready = []
    for symbol, key in keys.items():
        if key not in present:
            continue
        failed = _failed_blocking_check(instance, graph, key) if graph else None
        if failed:
            context.log.info(f"skip {key}: blocking check {failed} failed")
            continue
        ready.append(symbol)
    return sorted(ready)


def build_analytics_schedules(
    refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
) -> list[dg.ScheduleDefinition]:
    """Refresh schedules of the rolling and the cross-symbol analytics every ``refresh_seconds``."""
    cron = cron_for_interval(refresh_seconds)

    def _day(context: dg.ScheduleEvaluationContext) -> str | None:
        start, end = latest_closed_window(context.scheduled_execution_time, refresh_seconds)
        day = start.date().isoformat()
        return day if day >= PARTITIONS_START else None

    @dg.schedule(
        name="analytics_rolling_refresh",
        cron_schedule=cron,
        job=analytics_rolling_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every {refresh_seconds}s: rolling analytics of the latest closed window.",
    )
    def rolling_refresh(context: dg.ScheduleEvaluationContext):
        day = _day(context)
        symbols = ready_symbols(context, day) if day else []
        if not symbols:
            return dg.SkipReason(f"no symbol has checked candles for {day}")
        stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        return [
            dg.RunRequest(
                run_key=f"analytics-rolling:{partition_key_str(day, s)}:{stamp}",
                partition_key=str(partition_key(day, s)),
            )
            for s in symbols
        ]

    @dg.schedule(
        name="analytics_cross_symbol_refresh",
        cron_schedule=cron,
        job=analytics_cross_symbol_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every {refresh_seconds}s: cross-symbol correlation of the latest window.",
    )
    def cross_symbol_refresh(context: dg.ScheduleEvaluationContext):
        day = _day(context)
        symbols = ready_symbols(context, day) if day else []
        if len(symbols) < 2:
            return dg.SkipReason(f"fewer than two symbols have checked candles for {day}")
        stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        return dg.RunRequest(run_key=f"analytics-cross:{day}:{stamp}", partition_key=day)

    return [rolling_refresh, cross_symbol_refresh]
