"""Retention on a real (temp SQLite) Dagster instance: the asset history survives, the noise goes.

The runs are aged by purging with a cutoff after them (a cutoff in the future is the same as
the runs being older than the retention window), so no test waits on the clock.
"""

import datetime as dt
import logging
import os
import time
import uuid

import dagster as dg
import pytest
from dagster._core.event_api import PartitionKeyFilter  # no public path in 1.13
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS

from petrosa_pipelines.settings import SettingError
from petrosa_pipelines.tooling.maintenance import (
    CURSOR_KEY,
    HISTORY_EVENTS,
    last_cutoff,
    purge_old_runs_job,
    purge_runs_before,
    retention_days,
    run_retention,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
KEY = dg.AssetKey(["market_data", "candles"])
CHECK = dg.AssetCheckKey(KEY, "candles_complete")
HEARTBEATS = 400


@dg.asset(
    key=KEY,
    partitions_def=DAYS,
    check_specs=[dg.AssetCheckSpec(CHECK.name, asset=KEY, partitions_def=DAYS)],
)
def candles(context: dg.AssetExecutionContext):
    for i in range(HEARTBEATS):
        context.log.info(f"heartbeat {i}: processed={i * 100}")
    context.log.warning("source rest answered 429 once")
    yield dg.Output(1, metadata={"rows": 1440, "sources": "archive"})
    yield dg.AssetCheckResult(
        check_name=CHECK.name, passed=True, metadata={"present": 1440, "missing_minutes": 0}
    )


@dg.op
def noop(context: dg.OpExecutionContext) -> None:
    context.log.info("nothing to do")


@dg.job
def tiny() -> None:
    noop()


@pytest.fixture(params=["sqlite", "postgres"])
def any_instance(request, tmp_path):
    """A real instance on each storage the project deploys: run-sharded SQLite, PostgreSQL."""
    home = tmp_path / "home"
    home.mkdir()
    overrides = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db")
        # psycopg2 explicitly: SQLAlchemy 2.x would map a bare postgresql:// to psycopg 3
        pg = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        overrides = {"storage": {"postgres": {"postgres_url": pg}}}
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as inst:
        kind = type(inst.event_log_storage).__name__
        assert (
            kind
            == {"sqlite": "SqliteEventLogStorage", "postgres": "PostgresEventLogStorage"}[
                request.param
            ]
        )
        yield inst


def _after(*run_ids: str, instance: dg.DagsterInstance) -> dt.datetime:
    newest = max(instance.get_run_record_by_id(r).update_timestamp for r in run_ids)
    return newest + dt.timedelta(days=1)


def _materialise(instance: dg.DagsterInstance, day: str) -> str:
    result = dg.materialize([candles], instance=instance, partition_key=day)
    assert result.success
    return result.run_id


def _history(instance: dg.DagsterInstance, day: str) -> dict:
    """Everything the UI, backfills and health read about one partition."""
    mat = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=KEY, asset_partitions=[day]), limit=10
    ).records
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [CHECK], partition_filter=PartitionKeyFilter(key=day)
    )[CHECK]
    evaluation = check.event.asset_check_evaluation
    return {
        "materialised": day in instance.get_materialized_partitions(KEY),
        "materialisations": [
            (r.run_id, {k: v.value for k, v in r.asset_materialization.metadata.items()})
            for r in mat
        ],
        "check": (
            check.run_id,
            check.status.value,
            evaluation.passed,
            {k: v.value for k, v in evaluation.metadata.items()},
        ),
        "history_len": len(
            instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=100)
        ),
    }


def _messages(instance: dg.DagsterInstance, run_id: str) -> list:
    return [
        (r.event_log_entry.dagster_event_type, r.event_log_entry.level)
        for r in instance.get_records_for_run(run_id).records
    ]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_retention_keeps_materialisations_and_check_results(any_instance):
    inst = any_instance
    kept = _materialise(inst, "2024-01-02")
    noise = tiny.execute_in_process(instance=inst).run_id
    before = _history(inst, "2024-01-02")
    assert before["materialised"] and before["materialisations"][0][1]["rows"] == 1440
    n_before = len(_messages(inst, kept))

    report = purge_runs_before(inst, _after(kept, noise, instance=inst))

    assert _history(inst, "2024-01-02") == before
    assert inst.get_latest_materialization_event(KEY).asset_materialization.partition == (
        "2024-01-02"
    )
    # the noise run is gone entirely; the history run stays, its heartbeat lines do not
    assert report.deleted_runs == [noise] and inst.get_run_by_id(noise) is None
    assert report.trimmed_runs == [kept] and inst.get_run_by_id(kept) is not None
    after = _messages(inst, kept)
    assert report.deleted_rows == n_before - len(after) >= HEARTBEATS
    plain = [level for kind, level in after if kind is None]
    assert plain == [logging.WARNING]  # warnings and errors stay
    kinds = {kind for kind, _ in after}
    assert {dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.RUN_SUCCESS} <= kinds
    assert dg.DagsterEventType.ENGINE_EVENT not in kinds


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_trim_shrinks_the_run_file_and_is_idempotent(sqlite_dagster_instance):
    inst = sqlite_dagster_instance
    kept = _materialise(inst, "2024-01-03")
    shard = inst.event_log_storage.path_for_shard(kept)
    size = os.path.getsize(shard)
    cutoff = _after(kept, instance=inst)
    first = purge_runs_before(inst, cutoff)
    assert first.vacuumed_files == 1 and os.path.getsize(shard) < size / 2
    again = purge_runs_before(inst, cutoff)
    assert again.deleted_rows == 0 and again.deleted_runs == [] and again.kept_history_runs == 1
    assert _history(inst, "2024-01-03")["materialised"]


def test_a_run_in_progress_loses_only_old_info_lines(any_instance):
    """A months-long ingest: old heartbeats go, the run and its recent lines stay."""
    inst = any_instance
    run = inst.add_run(
        dg.DagsterRun(
            job_name="ingest", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
        )
    )

    def line(level: int, message: str, at: float) -> None:
        inst.handle_new_event(
            dg.EventLogEntry(
                error_info=None,
                level=level,
                user_message=message,
                run_id=run.run_id,
                timestamp=at,
                job_name="ingest",
            )
        )

    now = time.time()
    for i in range(50):
        line(logging.INFO, f"heartbeat {i}", now - 40 * 86_400 + i)
    line(logging.ERROR, "websocket closed 1006", now - 40 * 86_400 + 60)
    line(logging.INFO, "heartbeat recent", now)
    report = purge_runs_before(inst, dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=30))
    assert report.deleted_rows == 50 and report.deleted_runs == []
    left = [r.event_log_entry.user_message for r in inst.get_records_for_run(run.run_id).records]
    assert left == ["websocket closed 1006", "heartbeat recent"]
    assert inst.get_run_by_id(run.run_id) is not None


def test_recent_runs_and_runs_before_the_cursor_are_left_alone(sqlite_dagster_instance):
    inst = sqlite_dagster_instance
    old = tiny.execute_in_process(instance=inst).run_id
    recent = tiny.execute_in_process(instance=inst).run_id
    t_old = inst.get_run_record_by_id(old).update_timestamp
    t_recent = inst.get_run_record_by_id(recent).update_timestamp
    assert t_recent > t_old
    between = t_old + (t_recent - t_old) / 2
    # a pass that resumes after `old` (the cursor) touches neither
    skipped = purge_runs_before(inst, between, since=between)
    assert skipped.deleted_runs == [] and inst.get_run_by_id(old) is not None
    assert purge_runs_before(inst, between).deleted_runs == [old]
    assert inst.get_run_by_id(old) is None and inst.get_run_by_id(recent) is not None


def test_retention_pass_records_its_cutoff(sqlite_dagster_instance):
    inst = sqlite_dagster_instance
    assert last_cutoff(inst) is None
    noise = tiny.execute_in_process(instance=inst).run_id
    cutoff = _after(noise, instance=inst)
    assert run_retention(inst, cutoff).deleted_runs == [noise]
    assert last_cutoff(inst) == cutoff
    assert inst.run_storage.get_cursor_values({CURSOR_KEY})[CURSOR_KEY] == cutoff.isoformat()


def test_history_events_cover_dagsters_asset_events():
    assert ASSET_EVENTS | ASSET_CHECK_EVENTS <= HISTORY_EVENTS


def test_purge_job_runs_and_reports(sqlite_dagster_instance, monkeypatch):
    monkeypatch.setenv("PETROSA_RUN_RETENTION_DAYS", "7")
    result = purge_old_runs_job.execute_in_process(instance=sqlite_dagster_instance)
    assert result.success
    output = next(
        e for e in result.all_node_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
    )
    reported = output.event_specific_data.metadata
    assert reported["retention_days"].value == 7
    assert reported["deleted_runs"].value == 0


def test_retention_setting_is_validated(monkeypatch):
    monkeypatch.setenv("PETROSA_RUN_RETENTION_DAYS", "0")
    with pytest.raises(SettingError, match="PETROSA_RUN_RETENTION_DAYS"):
        retention_days()
