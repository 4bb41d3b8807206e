"""The supervisor keeps exactly one ingest run per enabled group, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from petrosa_pipelines.ingest.heartbeat import write_heartbeat
from petrosa_pipelines.ingest.job import GROUP_TAG, ingest_job
from sensors.ingest_supervisor import StreamGroup, build_ingest_supervisor

GROUPS = [StreamGroup("majors", ("BTCUSDT", "ETHUSDT")), StreamGroup("alts", ("SOLUSDT",))]


def _sensor(tmp_path, groups=GROUPS, clock=time.time):
    return build_ingest_supervisor(lambda: groups, lambda: str(tmp_path / "landing"), clock=clock)


def _tick(sensor, instance):
    return sensor(dg.build_sensor_context(instance=instance))


def _skip(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def _launch(instance, request):
    """What the sensor daemon does with a request: skip a run key it has seen, else create."""
    key = request.run_key
    seen = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}))
    if seen:
        return None
    tags = {**request.tags, "dagster/run_key": key}
    return instance.create_run_for_job(job_def=ingest_job, run_config=request.run_config, tags=tags)


def _started(instance, group, run_id=None):
    run = DagsterRun(
        job_name="ingest", run_id=run_id or str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED, tags={GROUP_TAG: group},
    )  # fmt: skip
    return instance.add_run(run)


def _active(instance, group):
    from sensors.ingest_supervisor import ACTIVE_STATUSES

    return instance.get_runs(
        filters=dg.RunsFilter(job_name="ingest", tags={GROUP_TAG: group}, statuses=ACTIVE_STATUSES)
    )


def test_one_run_per_group_under_concurrent_ticks(instance, tmp_path):
    sensor = _sensor(tmp_path)
    # four ticks evaluated at the same time, before any run exists (overlap, daemon restart)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _tick(sensor, instance), range(4)))
    keys = {tuple(sorted(r.run_key for r in res.run_requests)) for res in results}
    assert len(keys) == 1  # every tick asks for the same generation of each group
    for res in results:
        for req in res.run_requests:
            _launch(instance, req)
    assert len(_active(instance, "majors")) == 1 and len(_active(instance, "alts")) == 1
    # the runs sit in NOT_STARTED/QUEUED: no second request while they do
    again = _tick(sensor, instance)
    assert not again.run_requests and "majors" in _skip(again)
    req = results[0].run_requests[0]
    assert req.run_config["ops"]["ingest_stream_group"]["config"]["group"] in ("majors", "alts")


def test_failed_run_is_relaunched_with_a_new_key(instance, tmp_path):
    sensor = _sensor(tmp_path, groups=GROUPS[:1])
    (req,) = _tick(sensor, instance).run_requests
    run = _launch(instance, req)
    instance.report_run_failed(run)
    (req2,) = _tick(sensor, instance).run_requests
    assert req2.run_key != req.run_key
    assert _launch(instance, req2) is not None


def test_stale_heartbeat_leads_to_relaunch(instance, tmp_path):
    now = [time.time()]
    sensor = _sensor(tmp_path, groups=GROUPS[:1], clock=lambda: now[0])
    run = _started(instance, "majors")
    beat = {"run_id": run.run_id, "written_at": int(now[0] * 1000), "liveness": "alive"}
    write_heartbeat(tmp_path / "landing", "binance", "majors", beat)
    res = _tick(sensor, instance)
    assert not res.run_requests  # fresh heartbeat: leave it alone
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    now[0] += 600  # ten minutes without a heartbeat
    res = _tick(sensor, instance)
    assert "stale" in _skip(res)
    assert instance.get_run_by_id(run.run_id).status not in (
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED,
    )  # fmt: skip
    # once it is no longer active, the next tick launches the replacement
    if _active(instance, "majors"):
        instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    (req,) = _tick(sensor, instance).run_requests
    assert req.tags[GROUP_TAG] == "majors"


def test_started_run_without_any_heartbeat_is_replaced_after_grace(instance, tmp_path):
    now = [time.time()]
    sensor = _sensor(tmp_path, groups=GROUPS[:1], clock=lambda: now[0])
    run = _started(instance, "majors")
    assert not _tick(sensor, instance).run_requests
    now[0] += 3600
    assert "no heartbeat" in _skip(_tick(sensor, instance))
    assert instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED


def test_disabled_group_runs_are_canceled(instance, tmp_path):
    run = _started(instance, "alts")
    disabled = [GROUPS[0], StreamGroup("alts", ("SOLUSDT",), enabled=False)]
    res = _tick(_sensor(tmp_path, groups=disabled), instance)
    assert instance.get_run_by_id(run.run_id).status not in (
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED,
    )  # fmt: skip
    assert [r.tags[GROUP_TAG] for r in res.run_requests] == ["majors"]
