"""The checks' run economy (checks/batch.py): runs per day do not grow with instruments, results
a batched run records per partition are each partition's latest (also in the UI's check
partition status), a closed partition that degrades later is caught by the daily batched
re-audit, and today's open partitions are judged from the landing zone in one run for all."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.partitions.context import partition_loading_context

from petrosa_pipelines.catalog.schemas import DATASETS as SCHEMAS
from petrosa_pipelines.checks.batch import (
    AUDIT_JOB_NAME,
    AuditBatchConfig,
    AuditCursor,
    BatchReport,
    audit_job,
    batch_events,
    build_audit_sensor,
    in_turn,
    new_materialised_partitions,
    plan_batch,
)
from petrosa_pipelines.checks.definitions import ALL_CHECKS, HEALTH_KEY, HEALTH_THRESHOLD_CHECK
from petrosa_pipelines.checks.records import FAILED, SUCCEEDED, latest_by_partition, latest_record
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines_tests.test_checks.conftest import (
    FakeExchangeResource,
    FakeLandingResource,
    make_market_asset,
)
from petrosa_pipelines_tests.test_checks.data import real_candles, trades_for_candles

DAY = dt.date(2024, 5, 1)
CANDLES = dg.AssetKey(["market_data", "candles"])
COMPLETE = dg.AssetCheckKey(CANDLES, "candles_complete")
HEALTH_CANDLES = dg.AssetCheckKey(CANDLES, "health")
INTERVAL_S = 300


def _at(day: dt.date, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(
        day.year, day.month, day.day, hour, minute, second, tzinfo=dt.UTC
    ).timestamp()


class _Landing(FakeLandingResource):
    """The fake landing zone with a root path (the depth build asks for it) and schema-shaped
    empty frames for what did not land."""

    def path(self) -> str:
        return "/nonexistent-landing"

    def read_frame(self, exchange, dataset, symbol, start_ms, end_ms):
        frame = self._frames.get((dataset, symbol))
        if frame is None:
            return SCHEMAS[dataset].empty_frame()
        col = SCHEMAS[dataset].time_column
        ms = frame[col].to_numpy(dtype="datetime64[ms]").view("int64")
        return frame[(ms >= start_ms) & (ms < end_ms)].reset_index(drop=True)


def _check_state(instance, key):
    """What the UI's check partition status shows per partition (the GraphQL
    ``partitionStatuses`` resolver loads ``AssetCheckState`` through this storage call)."""
    with partition_loading_context(dynamic_partitions_store=instance):
        state = instance.event_log_storage.get_asset_check_state([(key, daily_symbol_partitions)])
    out = {}
    for status, subset in state[key].subsets.items():
        if subset is not None and not subset.is_empty:
            for pk in subset.subset_value.get_partition_keys():
                out[pk] = status.value
    return out


def _materialize(world, lake, instance, pk):
    assets = [make_market_asset("candles", world), make_market_asset("trades", world)]
    return dg.materialize(
        [*assets, *ALL_CHECKS],
        partition_key=pk,
        instance=instance,
        resources={
            "io_manager": lake,
            "landing": FakeLandingResource(),
            "exchange": FakeExchangeResource(),
        },
        raise_on_error=False,
    )


def _setup(world):
    for sym, name in (
        ("BTCUSDT", "BTCUSDT-1m-2022-05-01.csv"),
        ("ETHUSDT", "ETHUSDT-1m-2022-05-01.csv"),
    ):
        pk = f"{DAY}|{sym}"
        candles = real_candles(name, DAY)
        world.history[("candles", pk)] = candles
        world.landing[("candles", pk)] = candles
        world.landing[("trades", pk)] = trades_for_candles(candles)


def _tick(sensor, instance, cursor):
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    return list(result.run_requests or []), result.cursor or cursor


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_runless_evaluation_is_latest_once_then_the_unique_index_refuses(world, lake, instance):
    """Dagster 1.13.27: ``report_runless_asset_event(AssetCheckEvaluation(partition=...))``
    becomes that partition's latest result; on a materialised partition the UI keeps it only
    when it targets the latest materialisation. A SECOND runless evaluation of the same check
    and partition violates ``idx_asset_check_executions_unique`` (run_id "" for every runless
    row): its event is written, its execution row is not, the partition shows the first one.
    Hence the batch yields its evaluations inside its one run (checks/batch.py)."""
    import pytest
    import sqlalchemy.exc
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    _setup(world)
    btc, eth = f"{DAY}|BTCUSDT", f"{DAY}|ETHUSDT"
    assert _materialize(world, lake, instance, btc).success
    assert _materialize(world, lake, instance, eth).success
    assert _check_state(instance, COMPLETE) == {btc: "SUCCEEDED", eth: "SUCCEEDED"}
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CANDLES, asset_partitions=[btc]), limit=1
    ).records[0]
    target = Target(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)

    def evaluation(pk, passed, tgt):
        return dg.AssetCheckEvaluation(
            asset_key=CANDLES,
            check_name="candles_complete",
            passed=passed,
            partition=pk,
            metadata={"missing_minutes": 0 if passed else 2},
            severity=dg.AssetCheckSeverity.ERROR,
            target_materialization_data=tgt,
        )

    instance.report_runless_asset_event(evaluation(btc, False, target))
    instance.report_runless_asset_event(evaluation(eth, False, None))
    latest = latest_record(instance, COMPLETE, btc)
    assert latest.status == FAILED and latest.run_id == ""
    assert latest.metadata["missing_minutes"] == 2
    assert latest_by_partition(instance, COMPLETE) == {btc: FAILED, eth: FAILED}
    # the UI: the targeted one shows FAILED; the untargeted one is "not current", cleared
    assert _check_state(instance, COMPLETE) == {btc: "FAILED"}
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        instance.report_runless_asset_event(evaluation(btc, True, target))
    assert latest_record(instance, COMPLETE, btc).status == FAILED  # the repair is not shown


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_closed_partition_that_degrades_is_caught_by_the_daily_batched_reaudit(
    world, lake, instance
):
    _setup(world)
    btc, eth = f"{DAY}|BTCUSDT", f"{DAY}|ETHUSDT"
    clock = {"now": _at(DAY + dt.timedelta(days=1), 0, 10)}
    sensor = build_audit_sensor(
        clock=lambda: clock["now"], settings=lambda: AuditSettings(), first_day="2024-01-01"
    )
    requests, cursor = _tick(sensor, instance, None)  # 00:10: no re-audit before 02:00
    assert [r.run_config["ops"]["audit_batch"]["config"]["closed_days"] for r in requests] == [[]]
    # the window sensor's runs: market data and its checks in the same run
    assert _materialize(world, lake, instance, btc).success
    assert _materialize(world, lake, instance, eth).success
    # late corruption of a stored partition (a republished archive with a hole)
    relpath = "market_data/candles/binance/BTCUSDT/2024-05-01.parquet"
    stored = lake.lake().read_frame(relpath)
    lake.lake().write_frame(relpath, stored.drop(index=[5, 6]))
    clock["now"] = _at(DAY + dt.timedelta(days=1), 2, 1)
    requests, cursor = _tick(sensor, instance, cursor)
    assert len(requests) == 1  # one run for every instrument-day
    config = requests[0].run_config["ops"]["audit_batch"]["config"]
    assert config["closed_days"] == ["2024-04-30", "2024-05-01"]
    assert sorted(config["health_partitions"]) == [btc, eth]  # their materialisations
    result = audit_job.execute_in_process(
        run_config=requests[0].run_config,
        instance=instance,
        resources={"io_manager": lake, "landing": _Landing()},
        tags=requests[0].tags,
    )
    assert result.success
    latest = latest_record(instance, COMPLETE, btc)
    audit_run = result.run_id
    assert latest.status == FAILED and latest.run_id == audit_run  # the one batched run
    assert latest.metadata["missing_minutes"] == 2
    assert latest_record(instance, COMPLETE, eth).status == SUCCEEDED
    # every instrument-day's status stays visible in the UI's check partition status
    assert _check_state(instance, COMPLETE) == {btc: "FAILED", eth: "SUCCEEDED"}
    # health folded into the same run: both partitions materialised, no run per partition
    assert instance.get_materialized_partitions(HEALTH_KEY) == {btc, eth}
    health_rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HEALTH_KEY, asset_partitions=[btc]), limit=1
    ).records[0]
    assert health_rec.run_id == audit_run
    assert health_rec.asset_materialization.metadata["score_candles"].value < 100
    assert lake.lake().read_frame("checks/health/binance/BTCUSDT/2024-05-01.parquet") is not None
    threshold = dg.AssetCheckKey(HEALTH_KEY, HEALTH_THRESHOLD_CHECK)
    assert _check_state(instance, threshold)[eth] == "SUCCEEDED"
    runs = instance.get_runs()
    assert [r.job_name for r in runs if r.job_name == AUDIT_JOB_NAME] == [AUDIT_JOB_NAME]
    # the next day's re-audit is a day later, not at the next interval
    clock["now"] = _at(DAY + dt.timedelta(days=1), 2, 6)
    requests, cursor = _tick(sensor, instance, cursor)
    assert requests[0].run_config["ops"]["audit_batch"]["config"]["closed_days"] == []


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_open_day_judged_from_landing_in_one_run_for_all_partitions(instance, lake):
    """Today's partitions are not materialised: one run judges them all from the landing zone
    and records each partition's results; results that did not change are not re-recorded
    between the hourly refreshes."""
    frames = {}
    noon = pd.Timestamp(f"{DAY} 12:00", tz="UTC")
    for sym, name in (
        ("BTCUSDT", "BTCUSDT-1m-2022-05-01.csv"),
        ("ETHUSDT", "ETHUSDT-1m-2022-05-01.csv"),
    ):
        candles = real_candles(name, DAY)
        candles = candles[candles["open_time"] < noon]
        if sym == "ETHUSDT":  # the websocket lost 10:00-10:07 today
            t = candles["open_time"]
            hole = (t >= pd.Timestamp(f"{DAY} 10:00", tz="UTC")) & (
                t < pd.Timestamp(f"{DAY} 10:07", tz="UTC")
            )
            candles = candles[~hole]
        frames[("candles", sym)] = candles.reset_index(drop=True)
        frames[("trades", sym)] = trades_for_candles(candles)
    landing = _Landing(frames=frames)
    now_ms = int(noon.timestamp() * 1000) + 30_000
    config = AuditBatchConfig(open_day=DAY.isoformat(), now_ms=now_ms)
    result = audit_job.execute_in_process(
        run_config=dg.RunConfig(ops={"audit_batch": config}),
        instance=instance,
        resources={"io_manager": lake, "landing": landing},
    )
    assert result.success
    btc, eth = f"{DAY}|BTCUSDT", f"{DAY}|ETHUSDT"
    bad = latest_record(instance, COMPLETE, eth)
    assert bad.status == FAILED and bad.run_id == result.run_id
    assert bad.metadata["missing_minutes"] == 7
    good = latest_record(instance, COMPLETE, btc)
    assert good.status == SUCCEEDED and good.run_id == result.run_id
    assert _check_state(instance, COMPLETE) == {btc: "SUCCEEDED", eth: "FAILED"}
    assert latest_record(instance, HEALTH_CANDLES, eth).metadata["score"] < 100
    assert instance.get_materialized_partitions(HEALTH_KEY) == {btc, eth}
    assert [r.job_name for r in instance.get_runs()] == [AUDIT_JOB_NAME]  # one run for both
    history = instance.event_log_storage.get_asset_check_execution_history(COMPLETE, limit=50)
    assert len(history) == 2
    # the next run, before another minute has closed: nothing changed, nothing recorded
    # until the hourly refresh (a result that flips is recorded at once)
    again = AuditBatchConfig(open_day=DAY.isoformat(), now_ms=now_ms + 20_000)
    report = BatchReport()
    events = list(
        batch_events(instance, again, lake.lake(), landing, report, settings=AuditSettings())
    )
    assert report.errors == [] and events == []
    assert report.audited == {"open": 2} and report.recorded == 0 and report.health == 0
    assert (
        len(instance.event_log_storage.get_asset_check_execution_history(COMPLETE, limit=50)) == 2
    )
    # five minutes on, BTCUSDT's websocket has nothing after 12:00: that flip is recorded now
    later = AuditBatchConfig(open_day=DAY.isoformat(), now_ms=now_ms + 300_000)
    events = list(batch_events(instance, later, lake.lake(), landing, BatchReport()))
    flipped = {
        (e.partition, e.check_name) for e in events if isinstance(e, dg.AssetCheckEvaluation)
    }
    assert (btc, "candles_complete") in flipped
    assert (eth, "candles_complete") not in flipped  # still failing: nothing new to show


def _simulate_day(instance, n: int) -> tuple[int, int, list[str]]:
    """A simulated day of the audit sensor ticking every minute at ``n`` instruments (the
    daemon ticks it every 30 s; the count is the same: one run per 300 s slot at most), the
    window sensor's builds of yesterday arriving one per tick after the first. Returns (runs
    requested, partitions whose health was requested, closed days re-audited)."""
    today = DAY + dt.timedelta(days=1)
    ids = [f"binance-usdm:SYM{i:03d}USDT" for i in range(n)]
    instance.add_dynamic_partitions("symbols", ids)
    clock = {"now": _at(today)}
    sensor = build_audit_sensor(
        clock=lambda: clock["now"], settings=lambda: AuditSettings(), first_day="2024-01-01"
    )
    cursor, runs, health, closed = None, 0, 0, []
    for tick in range(86_400 // 60):
        clock["now"] = _at(today) + tick * 60
        if 1 <= tick <= n:  # one of yesterday's partitions built per tick, checks in its run
            pk = f"{DAY}|{ids[tick - 1]}"
            for ds in DATASETS:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=["market_data", ds], partition=pk)
                )
        requests, cursor = _tick(sensor, instance, cursor)
        runs += len(requests)
        for r in requests:
            config = r.run_config["ops"]["audit_batch"]["config"]
            health += len(config["health_partitions"])
            closed += config["closed_days"]
    return runs, health, closed


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_runs_per_day_do_not_grow_with_instruments():
    figures = {}
    for n in (5, 50):
        # in memory: 2 x 1440 sensor ticks read the same SQL storage as on disk, without a
        # file per connection and an fsync per event (3,000 of them, queued behind the rest of
        # a loaded suite's disk writes: 98 s of the full suite's time, ~6 s now)
        with dg.DagsterInstance.ephemeral() as instance:
            figures[n] = _simulate_day(instance, n)
    runs_5, health_5, closed_5 = figures[5]
    runs_50, health_50, closed_50 = figures[50]
    # one run per audit interval at most, whatever the number of instruments
    assert runs_5 == runs_50 == 86_400 // INTERVAL_S
    # every built partition's health was requested (in those same runs), once
    assert (health_5, health_50) == (5, 50)
    # the closed days were re-audited once, in one of those runs
    assert closed_5 == closed_50 == ["2024-04-30", "2024-05-01"]
    # the old scheme: a run per materialised instrument-day of the last 2 days every 300 s,
    # then about as many health runs (issue 13; research/scale_and_peers.md A2)
    old_50 = 2 * (86_400 // INTERVAL_S) * 2 * 50
    print(
        f"\nruns/day for checks+health: new {runs_50} at N=50 ({runs_5} at N=5); "
        f"old scheme ~{old_50} at N=50 (2 x 288 x 2 days x N), ~{old_50 * 10} at N=500"
    )


def test_open_day_partitions_are_judged_in_turns():
    keys = [f"{DAY}|binance-usdm:S{i}USDT" for i in range(5)]
    assert in_turn(keys, 0, 2) == keys[:2]
    assert in_turn(keys, 4, 2) == [keys[4], keys[0]]  # wraps round
    assert in_turn(keys, 7, None) == keys and in_turn(keys, 3, 10) == keys
    cursor = AuditCursor()
    seen = []
    for slot in range(3):
        batch, cursor = plan_batch(
            _at(DAY, 12) + slot * INTERVAL_S, cursor, INTERVAL_S, 2, DAY, open_per_run=2
        )
        seen += in_turn(keys, batch.open_offset, batch.open_limit)
    assert sorted(set(seen)) == keys  # every instrument within ceil(5 / 2) runs


def test_an_active_audit_run_makes_the_next_one_wait(instance):
    clock = {"now": _at(DAY, 12)}
    sensor = build_audit_sensor(
        clock=lambda: clock["now"], settings=lambda: AuditSettings(), first_day="2024-01-01"
    )
    requests, cursor = _tick(sensor, instance, None)
    assert len(requests) == 1
    run = instance.create_run_for_job(audit_job, run_config=requests[0].run_config)
    instance.report_run_canceling(run)  # a run still going (CANCELING is not finished)
    clock["now"] += INTERVAL_S
    assert _tick(sensor, instance, cursor)[0] == []
    instance.report_run_canceled(run)
    requests, cursor = _tick(sensor, instance, cursor)
    assert len(requests) == 1
    assert _tick(sensor, instance, cursor)[0] == []  # this interval's run is requested


def test_health_waits_for_the_materialisation_run_to_finish(instance):
    mats = new_materialised_partitions(instance, {})[1]  # first look starts from now
    pk = f"{DAY}|BTCUSDT"
    run = instance.create_run_for_job(audit_job)  # stands in for a materialisation run
    instance.report_run_canceling(run)
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=run.job_name,
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=CANDLES, partition=pk)
        ),
    )
    instance.store_event(
        EventLogEntry(
            error_info=None,
            level="debug",
            user_message="",
            run_id=run.run_id,
            timestamp=_at(DAY, 1),
            dagster_event=event,
        )
    )
    assert new_materialised_partitions(instance, mats)[0] == []  # its checks may not be in
    instance.report_run_canceled(run)
    found, mats = new_materialised_partitions(instance, mats)
    assert found == [pk]
    assert new_materialised_partitions(instance, mats)[0] == []
