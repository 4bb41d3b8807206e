"""Housekeeping of the Dagster instance: shrink old run logs, never the asset history.

Dagster's ``retention`` setting covers schedule and sensor ticks only; run event logs grow
without bound (a long-running ingest logs a heartbeat line every ``log_every_s``, every step
writes engine and IO bookkeeping). ``DagsterInstance.delete_run`` is not a retention tool: it
deletes the run's whole event log, materialisations and check evaluations included, after which
``get_materialized_partitions`` no longer lists the partition and a "missing only" backfill
rebuilds it. So this job, for runs older than ``PETROSA_RUN_RETENTION_DAYS`` (default 30):

* keeps every run that recorded asset history (materialisation, planned or failed
  materialisation, observation, check evaluation) with those events and their metadata, its
  run and step lifecycle events, its op outputs and every WARNING/ERROR line, and deletes the
  rest of its log: INFO/DEBUG log lines (the heartbeats) and engine/IO bookkeeping events;
* deletes finished runs that recorded no asset history at all (per-tick noise: ingest runs,
  sensor-launched no-ops, this job's own runs);
* trims the old INFO/DEBUG lines of runs still in progress (an ingest running for months).

Dagster 1.13 has no API to delete single event-log rows (``EventLogStorage.delete_events``
drops a run's whole log), so the trim deletes rows of the SQL event-log table directly, the
same table and connections Dagster's own ``delete_events`` uses
(``dagster/_core/storage/event_log/sql_event_log.py``); it works on the run-sharded SQLite
storage and on PostgreSQL (on another storage runs without history are still deleted, nothing
is trimmed). The run-sharded SQLite file of a trimmed finished run is vacuumed, so
the disk actually shrinks; a run in progress reuses its freed pages for its next lines.
"""

import datetime as dt
import json
import logging
import os
import sqlite3
from dataclasses import dataclass

import dagster as dg

from petrosa_pipelines.settings import SettingError

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
IN_PROGRESS = [dg.DagsterRunStatus.STARTED]
ET = dg.DagsterEventType
#: events that make up the asset history: a run holding one is never deleted, and they are
#: never trimmed (Dagster's ASSET_EVENTS and ASSET_CHECK_EVENTS plus health/wipe records)
HISTORY_EVENTS = frozenset(
    {
        ET.ASSET_MATERIALIZATION,
        ET.ASSET_MATERIALIZATION_PLANNED,
        ET.ASSET_FAILED_TO_MATERIALIZE,
        ET.ASSET_OBSERVATION,
        ET.ASSET_CHECK_EVALUATION,
        ET.ASSET_CHECK_EVALUATION_PLANNED,
        ET.FRESHNESS_STATE_CHANGE,
        ET.FRESHNESS_STATE_EVALUATION,
        ET.ASSET_HEALTH_CHANGED,
        ET.ASSET_WIPED,
    }
)
#: bookkeeping events of a run that nobody reads back once it is old (deleted when below WARNING;
#: step and run lifecycle, STEP_OUTPUT with its metadata and failures are kept)
NOISE_EVENTS = frozenset(
    {
        ET.ENGINE_EVENT,
        ET.LOGS_CAPTURED,
        ET.STEP_WORKER_STARTING,
        ET.STEP_WORKER_STARTED,
        ET.RESOURCE_INIT_STARTED,
        ET.RESOURCE_INIT_SUCCESS,
        ET.STEP_INPUT,
        ET.LOADED_INPUT,
        ET.HANDLED_OUTPUT,
        ET.OBJECT_STORE_OPERATION,
        ET.ASSET_STORE_OPERATION,
        ET.HOOK_COMPLETED,
        ET.HOOK_SKIPPED,
    }
)
#: where the job remembers up to when finished runs were handled (run storage key-value table)
CURSOR_KEY = "petrosa/retention/finished_before"
#: finished runs are re-examined this far before the last cutoff (the filter's edges, clock skew)
CURSOR_OVERLAP = dt.timedelta(hours=1)
_DELETE_CHUNK = 500


def retention_days() -> int:
    raw = os.environ.get("PETROSA_RUN_RETENTION_DAYS", "30")
    try:
        days = int(raw)
    except ValueError:
        raise SettingError("PETROSA_RUN_RETENTION_DAYS", raw, "a whole number of days") from None
    if days < 1:
        raise SettingError("PETROSA_RUN_RETENTION_DAYS", raw, "at least 1 day")
    return days


@dataclass
class RetentionReport:
    """What one retention pass did."""

    deleted_runs: list[str]
    trimmed_runs: list[str]
    kept_history_runs: int
    deleted_rows: int
    vacuumed_files: int

    def metadata(self) -> dict[str, int]:
        return {
            "deleted_runs": len(self.deleted_runs),
            "trimmed_runs": len(self.trimmed_runs),
            "kept_history_runs": self.kept_history_runs,
            "deleted_log_rows": self.deleted_rows,
            "vacuumed_files": self.vacuumed_files,
        }


def has_asset_history(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run recorded any materialisation, observation or check evaluation."""
    records = instance.get_records_for_run(run_id, of_type=set(HISTORY_EVENTS), limit=1)
    return bool(records.records)


def is_noise_row(event_type: str | None, event_json: str) -> bool:
    """A log line or bookkeeping event below WARNING (what the trim deletes)."""
    if event_type is not None and event_type not in {e.value for e in NOISE_EVENTS}:
        return False
    try:
        level = int(json.loads(event_json).get("level", logging.INFO))
    except (ValueError, TypeError, AttributeError):
        return False  # unreadable: keep it
    return level < logging.WARNING


def _naive_utc(when: dt.datetime) -> dt.datetime:
    """The event-log table stores naive UTC datetimes."""
    if when.tzinfo is None:
        return when
    return when.astimezone(dt.UTC).replace(tzinfo=None)


def trim_run_log(instance: dg.DagsterInstance, run_id: str, before: dt.datetime) -> int:
    """Delete the run's noise rows written before ``before``; returns how many went."""
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable  # no public path
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return 0
    import sqlalchemy as db

    table = SqlEventLogStorageTable
    noise_types = sorted(e.value for e in NOISE_EVENTS)
    candidates = db.select(table.c.id, table.c.dagster_event_type, table.c.event).where(
        table.c.run_id == run_id,
        table.c.timestamp < _naive_utc(before),
        db.or_(table.c.dagster_event_type.is_(None), table.c.dagster_event_type.in_(noise_types)),
    )
    with storage.run_connection(run_id) as conn:
        # streamed: only the ids of a month of heartbeat lines are held, not their text
        ids = [r[0] for r in conn.execute(candidates) if is_noise_row(r[1], r[2])]
        for i in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[i : i + _DELETE_CHUNK]
            conn.execute(table.delete().where(table.c.id.in_(chunk)))
    return len(ids)


def vacuum_run_shard(instance: dg.DagsterInstance, run_id: str) -> bool:
    """VACUUM the run's own SQLite file (run-sharded storage only); True when done."""
    storage = instance.event_log_storage
    path_for_shard = getattr(storage, "path_for_shard", None)
    if path_for_shard is None:
        return False
    path = path_for_shard(run_id)
    if not os.path.exists(path):
        return False
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("VACUUM")
    finally:
        conn.close()
    return True


def _run_ids(instance: dg.DagsterInstance, filters: dg.RunsFilter, batch: int) -> list[str]:
    """Ids of every run matching ``filters``, paged (collected before any is deleted)."""
    ids: list[str] = []
    cursor = None
    while True:
        page = instance.get_run_records(filters=filters, limit=batch, cursor=cursor)
        ids.extend(r.dagster_run.run_id for r in page)
        if len(page) < batch:
            return ids
        cursor = page[-1].dagster_run.run_id


def purge_runs_before(
    instance: dg.DagsterInstance,
    cutoff: dt.datetime,
    batch: int = 500,
    since: dt.datetime | None = None,
) -> RetentionReport:
    """One retention pass: runs last updated before ``cutoff`` (and after ``since``, when given).

    Finished runs without asset history are deleted; finished runs with it, and runs still in
    progress, lose their INFO/DEBUG log lines and bookkeeping events older than ``cutoff``.
    """
    report = RetentionReport([], [], 0, 0, 0)
    finished = dg.RunsFilter(statuses=FINISHED, updated_before=cutoff, updated_after=since)
    for run_id in _run_ids(instance, finished, batch):
        if not has_asset_history(instance, run_id):
            instance.delete_run(run_id)
            report.deleted_runs.append(run_id)
            continue
        report.kept_history_runs += 1
        _trim(instance, run_id, cutoff, report, vacuum=True)
    for run_id in _run_ids(instance, dg.RunsFilter(statuses=IN_PROGRESS), batch):
        # no VACUUM under a live writer: the run's next lines reuse the freed pages
        _trim(instance, run_id, cutoff, report, vacuum=False)
    return report


def _trim(
    instance: dg.DagsterInstance,
    run_id: str,
    cutoff: dt.datetime,
    report: RetentionReport,
    vacuum: bool,
) -> None:
    n = trim_run_log(instance, run_id, cutoff)
    if n:
        report.trimmed_runs.append(run_id)
        report.deleted_rows += n
        if vacuum:
            report.vacuumed_files += vacuum_run_shard(instance, run_id)


def last_cutoff(instance: dg.DagsterInstance) -> dt.datetime | None:
    """The cutoff of the previous pass (finished runs before it were handled already)."""
    raw = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    return dt.datetime.fromisoformat(raw) if raw else None


def run_retention(instance: dg.DagsterInstance, cutoff: dt.datetime) -> RetentionReport:
    """A retention pass that resumes where the previous one stopped, then records ``cutoff``.

    Without the cursor every pass would re-read every run ever kept for its history.
    """
    previous = last_cutoff(instance)
    since = previous - CURSOR_OVERLAP if previous is not None else None
    report = purge_runs_before(instance, cutoff, since=since)
    instance.run_storage.set_cursor_values({CURSOR_KEY: cutoff.isoformat()})
    return report


@dg.op(description="Shrink run logs older than the retention setting; keep all asset history.")
def purge_finished_runs(context: dg.OpExecutionContext) -> None:
    days = retention_days()
    cutoff = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=days)
    report = run_retention(context.instance, cutoff)
    context.log.info(f"retention before {cutoff.isoformat()}: {report.metadata()}")
    context.add_output_metadata({**report.metadata(), "retention_days": days})


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
