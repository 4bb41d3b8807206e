"""Housekeeping of the Dagster instance: purge old finished runs and their event logs.

Dagster's ``retention`` setting covers schedule and sensor ticks only; runs and their event
logs grow without bound (an ingest run logs a heartbeat every few seconds). This job deletes
finished runs older than ``PETROSA_RUN_RETENTION_DAYS`` (default 30). Materialisation and check
history lives in the asset tables and stays; only the run records and their logs go.
"""

import datetime as dt
import os

import dagster as dg

from petrosa_pipelines.settings import SettingError

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def retention_days() -> int:
    raw = os.environ.get("PETROSA_RUN_RETENTION_DAYS", "30")
    try:
        days = int(raw)
    except ValueError:
        raise SettingError("PETROSA_RUN_RETENTION_DAYS", raw, "a whole number of days") from None
    if days < 1:
        raise SettingError("PETROSA_RUN_RETENTION_DAYS", raw, "at least 1 day")
    return days


def purge_runs_before(
    instance: dg.DagsterInstance, cutoff: dt.datetime, batch: int = 500
) -> list[str]:
    """Delete finished runs that ended before ``cutoff``; returns their ids."""
    deleted: list[str] = []
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, updated_before=cutoff), limit=batch
        )
        if not records:
            return deleted
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
            deleted.append(record.dagster_run.run_id)


@dg.op(description="Delete finished runs (and their logs) older than the retention setting.")
def purge_finished_runs(context: dg.OpExecutionContext) -> None:
    days = retention_days()
    cutoff = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=days)
    deleted = purge_runs_before(context.instance, cutoff)
    context.log.info(f"purged {len(deleted)} runs that finished before {cutoff.isoformat()}")
    context.add_output_metadata({"purged_runs": len(deleted), "retention_days": days})


@dg.job(name="purge_old_runs", description=__doc__.splitlines()[0])
def purge_old_runs_job() -> None:
    purge_finished_runs()


purge_old_runs_schedule = dg.ScheduleDefinition(
    name="purge_old_runs_daily",
    job=purge_old_runs_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
