"""The supervisor keeps exactly one ingest run per enabled group, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from petrosa_pipelines.ingest.heartbeat import write_heartbeat
from petrosa_pipelines.ingest.job import EXCHANGE_TAG, GROUP_TAG, ingest_job
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


def _started(instance, group, run_id=None, exchange=None):
    tags = {GROUP_TAG: group} if exchange is None else {GROUP_TAG: group, EXCHANGE_TAG: exchange}
    run = DagsterRun(
        job_name="ingest", run_id=run_id or str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED, tags=tags,
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


TWO_VENUES = [
    StreamGroup("majors", ("BTCUSDT", "ETHUSDT"), exchange="binance-usdm"),
    StreamGroup("majors", ("BTCUSDT", "SOLUSDT"), exchange="bybit-linear"),
]


def test_two_venues_each_get_one_run_of_a_group_of_the_same_name(instance, tmp_path):
    sensor = _sensor(tmp_path, groups=TWO_VENUES)
    res = _tick(sensor, instance)
    by_venue = {r.tags[EXCHANGE_TAG]: r for r in res.run_requests}
    assert sorted(by_venue) == ["binance", "bybit-linear"]  # tagged with storage names
    assert len({r.run_key for r in res.run_requests}) == 2
    bybit_cfg = by_venue["bybit-linear"].run_config["ops"]["ingest_stream_group"]["config"]
    assert (bybit_cfg["exchange"], bybit_cfg["symbols"]) == ("bybit-linear", ["BTCUSDT", "SOLUSDT"])
    for req in res.run_requests:
        _launch(instance, req)
    assert len(_active(instance, "majors")) == 2
    again = _tick(sensor, instance)
    assert not again.run_requests  # one run per venue's group, no third
    # one venue's run ends: only that venue's group is relaunched
    binance_run = next(r for r in _active(instance, "majors") if r.tags[EXCHANGE_TAG] == "binance")
    instance.report_run_canceled(binance_run)
    (req,) = _tick(sensor, instance).run_requests
    assert req.tags[EXCHANGE_TAG] == "binance"
    assert req.run_key not in {r.run_key for r in res.run_requests}


def test_heartbeats_are_read_under_each_venues_storage_name(instance, tmp_path):
    """A group configured as ``binance-usdm`` writes its heartbeat under ``binance`` (the
    engine's ``adapter.name``): read there it is fresh; the Bybit run's is stale."""
    now = [time.time()]
    sensor = _sensor(tmp_path, groups=TWO_VENUES, clock=lambda: now[0])
    binance = _started(instance, "majors", exchange="binance")
    bybit = _started(instance, "majors", exchange="bybit-linear")
    now[0] += 3600  # far past the start-up grace
    landing = tmp_path / "landing"
    fresh = int(now[0] * 1000)
    for storage, run, written in (
        ("binance", binance, fresh),
        ("bybit-linear", bybit, fresh - 600_000),
    ):
        beat = {"run_id": run.run_id, "written_at": written, "liveness": "alive"}
        write_heartbeat(landing, storage, "majors", beat)
    res = _tick(sensor, instance)
    assert not res.run_requests
    assert instance.get_run_by_id(binance.run_id).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(bybit.run_id).status != dg.DagsterRunStatus.STARTED
    assert "stale" in _skip(res) and binance.run_id[:8] in _skip(res)


def test_a_run_without_a_venue_tag_is_binances(instance, tmp_path):
    """Runs launched before groups named their venue carry no exchange tag: Binance's."""
    run = _started(instance, "majors")
    res = _tick(_sensor(tmp_path, groups=TWO_VENUES), instance)
    assert [r.tags[EXCHANGE_TAG] for r in res.run_requests] == ["bybit-linear"]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_group_names_are_unique_per_venue(monkeypatch):
    import pytest

    from petrosa_pipelines.settings import SettingError
    from sensors.ingest_supervisor import groups_from_env

    monkeypatch.setenv(
        "PETROSA_INGEST_GROUPS",
        '[{"name": "majors", "symbols": ["BTCUSDT"]},'
        ' {"name": "majors", "symbols": ["BTCUSDT"], "exchange": "bybit-linear"}]',
    )
    assert [(g.storage, g.name) for g in groups_from_env()] == [
        ("binance", "majors"),
        ("bybit-linear", "majors"),
    ]
    # a venue id and its storage name are the same venue
    monkeypatch.setenv(
        "PETROSA_INGEST_GROUPS",
        '[{"name": "majors", "symbols": ["BTCUSDT"]},'
        ' {"name": "majors", "symbols": ["ETHUSDT"], "exchange": "binance-usdm"}]',
    )
    with pytest.raises(SettingError, match="binance:majors"):
        groups_from_env()


def test_supervisor_observations_name_the_venue_of_the_group():
    from sensors.ingest_supervisor import TickReport

    report = TickReport()
    report.act(StreamGroup("majors", ("BTCUSDT",), ("trades",), exchange="bybit-linear"), "started")
    report.act(StreamGroup("majors", ("BTCUSDT",), ("trades",), exchange="binance-usdm"), "alive")
    venues = [o.metadata["exchange"].value for o in report.observations()]
    assert venues == ["bybit-linear", "binance"]
