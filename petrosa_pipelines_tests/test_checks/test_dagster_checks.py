"""The checks in Dagster: partition-aware results, blocking, health read back, scheduled audit."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.checks.definitions import (
    ALL_CHECKS,
    HEALTH_KEY,
    SCHEDULED_CHECKS,
    audit_run_requests,
    build_health_sensor,
    cron_for_interval,
    health,
)
from petrosa_pipelines.checks.health import health_for
from petrosa_pipelines.checks.records import FAILED, SUCCEEDED, latest_by_partition, latest_record
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines_tests.test_checks.conftest import (
    FakeExchangeResource,
    FakeLandingResource,
    make_market_asset,
)
from petrosa_pipelines_tests.test_checks.data import real_candles, trades_for_candles

DAY = dt.date(2024, 5, 1)
CANDLES_KEY = dg.AssetKey(["market_data", "candles"])
COMPLETE = dg.AssetCheckKey(CANDLES_KEY, "candles_complete")


@dg.asset(partitions_def=daily_symbol_partitions, deps=[CANDLES_KEY])
def candle_features() -> None:
    """Stands in for an analytics asset downstream of candles."""


def _setup(world, gap_symbol=None):
    for sym, name in (
        ("BTCUSDT", "BTCUSDT-1m-2022-05-01.csv"),
        ("ETHUSDT", "ETHUSDT-1m-2022-05-01.csv"),
    ):
        pk = f"{DAY.isoformat()}|{sym}"
        candles = real_candles(name, DAY)
        world.history[("candles", pk)] = candles
        trades = trades_for_candles(candles)
        world.landing[("trades", pk)] = trades
        if sym == gap_symbol:
            t = candles["open_time"]
            hole = (t >= pd.Timestamp("2024-05-01 10:00", tz="UTC")) & (
                t < pd.Timestamp("2024-05-01 10:07", tz="UTC")
            )
            world.landing[("candles", pk)] = candles[~hole]
            world.rest_up = False
        else:
            world.landing[("candles", pk)] = candles


def _materialize(world, lake, instance, pk, extra=(), selection=None, archive=None):
    assets = [make_market_asset("candles", world), make_market_asset("trades", world), *extra]
    return dg.materialize(
        [*assets, *ALL_CHECKS],
        partition_key=pk,
        instance=instance,
        selection=selection,
        resources={
            "io_manager": lake,
            "landing": FakeLandingResource(),
            "exchange": FakeExchangeResource(archive),
        },
        raise_on_error=False,
    )


def _evaluations(result):
    """Evaluations of a run keyed ``<dataset>.<check>``."""
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION":
            data = e.asset_check_evaluation_data
            key = data.asset_check_key
            out[f"{key.asset_key.path[-1]}.{key.name}"] = data
    return out


def test_clean_real_partition_passes_every_check(world, lake, instance):
    _setup(world)
    pk = f"{DAY.isoformat()}|BTCUSDT"
    archive = {("candles", "BTCUSDT", DAY): world.history[("candles", pk)]}
    result = _materialize(world, lake, instance, pk, [candle_features], archive=archive)
    assert result.success
    evals = _evaluations(result)
    assert {n for n, e in evals.items() if not e.passed} == set()
    assert {
        "candles.candles_complete",
        "trades.trades_id_continuous",
        "candles.gx_suite",
        "candles.candles_match_trades",
        "trades.health",
        "candles.health",
        "candles.candles_sources_agree",
    } <= set(evals)
    assert evals["candles.health"].metadata["score"].value == 100.0
    assert evals["candles.candles_complete"].metadata["checked"].value == 1440
    assert instance.get_latest_materialization_event(dg.AssetKey("candle_features"))


def test_gap_fails_blocking_check_per_partition_and_stops_downstream(world, lake, instance):
    _setup(world, gap_symbol="ETHUSDT")
    bad, good = f"{DAY.isoformat()}|ETHUSDT", f"{DAY.isoformat()}|BTCUSDT"
    result = _materialize(world, lake, instance, bad, [candle_features])
    assert not result.success
    evals = _evaluations(result)
    ev = evals["candles.candles_complete"]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert ev.metadata["missing_minutes"].value == 7
    ranges = ev.metadata["first_offending"].value
    assert [(r["start"], r["end"]) for r in ranges] == [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:07:00Z")
    ]
    assert evals["candles.health"].metadata["score"].value < 100
    assert instance.get_latest_materialization_event(dg.AssetKey("candle_features")) is None
    world.rest_up = True
    assert _materialize(world, lake, instance, good, [candle_features]).success
    statuses = latest_by_partition(instance, COMPLETE)
    assert statuses == {bad: FAILED, good: SUCCEEDED}
    rec = latest_record(instance, COMPLETE, bad)
    assert rec.metadata["missing_ranges"] == 1


def test_health_read_back_and_health_asset(world, lake, instance):
    _setup(world, gap_symbol="ETHUSDT")
    _materialize(world, lake, instance, f"{DAY.isoformat()}|ETHUSDT")
    world.rest_up = True
    _materialize(world, lake, instance, f"{DAY.isoformat()}|BTCUSDT")
    frame = health_for("ethusdt", "candles", "2024-04-30", "2024-05-02", instance=instance)
    assert list(frame["date"]) == [DAY]
    row = frame.iloc[0]
    assert row["score"] < 100 and row["completeness"] == pytest.approx(1 - 7 / 1440)
    assert "candles_complete" in row["failed_checks"]
    assert health_for("BTCUSDT", "candles", DAY, DAY, instance=instance)["score"].iat[0] == 100

    sensor = build_health_sensor(ALL_CHECKS)
    defs = dg.Definitions(assets=[health], sensors=[sensor])
    ctx = dg.build_sensor_context(instance=instance, definitions=defs)
    requests = list(sensor(ctx))
    assert sorted(r.partition_key for r in requests) == [f"{DAY}|BTCUSDT", f"{DAY}|ETHUSDT"]
    ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
    assert list(sensor(ctx2)) == []  # nothing new
    result = dg.materialize(
        [health], partition_key=f"{DAY}|ETHUSDT", instance=instance, resources={"io_manager": lake}
    )
    meta = result.asset_materializations_for_node("checks__health")[0].metadata
    assert meta["score_candles"].value < 100 and meta["score_trades"].value == 100
    assert HEALTH_KEY.path == ["checks", "health"]


def test_scheduled_audit_catches_a_partition_that_degrades_later(world, lake, instance):
    _setup(world)
    pk = f"{DAY.isoformat()}|BTCUSDT"
    assert _materialize(world, lake, instance, pk).success
    now = dt.datetime(2024, 5, 2, 0, 5, tzinfo=dt.UTC)
    requests = audit_run_requests(instance, now, 2, SCHEDULED_CHECKS, "t1")
    assert [r.tags["dagster/partition"] for r in requests] == [pk]
    req = requests[0]
    assert COMPLETE in req.asset_check_keys and req.partition_key is None
    # late corruption of the stored partition (e.g. a republished archive with a hole)
    relpath = "market_data/candles/binance/BTCUSDT/2024-05-01.parquet"
    stored = lake.lake().read_frame(relpath)
    lake.lake().write_frame(relpath, stored.drop(index=[5, 6]))
    assets = [make_market_asset("candles", world), make_market_asset("trades", world)]
    result = dg.materialize(
        [*assets, *ALL_CHECKS],
        instance=instance,
        tags=req.tags,
        selection=dg.AssetSelection.checks(*req.asset_check_keys),
        resources={
            "io_manager": lake,
            "landing": FakeLandingResource(),
            "exchange": FakeExchangeResource(),
        },
        raise_on_error=False,
    )
    assert _evaluations(result)["candles.candles_complete"].passed is False
    assert latest_by_partition(instance, COMPLETE) == {pk: FAILED}
    assert cron_for_interval(300) == "*/5 * * * *"
    assert cron_for_interval(7200) == "0 */2 * * *"
    assert day_window_ms(DAY)[0] < day_window_ms(now.date())[0]
