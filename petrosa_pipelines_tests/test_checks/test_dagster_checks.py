"""The checks in Dagster: partition-aware results, blocking, health read back. The batched audit
(open day, daily re-audit of closed days, health) is in test_run_economy.py."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.checks.batch import new_materialised_partitions
from petrosa_pipelines.checks.definitions import ALL_CHECKS, HEALTH_KEY, health
from petrosa_pipelines.checks.health import health_for
from petrosa_pipelines.checks.records import FAILED, SUCCEEDED, latest_by_partition, latest_record
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


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
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
    # Binance ids are consecutive: they are the proof, the candle evidence says it does not apply
    assert "not applicable" in evals["trades.trades_cover_candles"].description
    assert instance.get_latest_materialization_event(dg.AssetKey("candle_features"))


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
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


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_health_read_back_and_health_asset(world, lake, instance):
    _setup(world, gap_symbol="ETHUSDT")
    mats = new_materialised_partitions(instance, {})[1]  # the audit sensor's first look
    _materialize(world, lake, instance, f"{DAY.isoformat()}|ETHUSDT")
    world.rest_up = True
    _materialize(world, lake, instance, f"{DAY.isoformat()}|BTCUSDT")
    frame = health_for("ETHUSDT", "candles", "2024-04-30", "2024-05-02", instance=instance)
    assert list(frame["date"]) == [DAY]
    row = frame.iloc[0]
    assert row["score"] < 100 and row["completeness"] == pytest.approx(1 - 7 / 1440)
    assert "candles_complete" in row["failed_checks"]
    assert health_for("BTCUSDT", "candles", DAY, DAY, instance=instance)["score"].iat[0] == 100

    # both partitions' checks re-ran: the next batched audit refreshes their health
    changed, mats = new_materialised_partitions(instance, mats)
    assert sorted(changed) == [f"{DAY}|BTCUSDT", f"{DAY}|ETHUSDT"]
    assert new_materialised_partitions(instance, mats)[0] == []  # nothing new
    # one click: materialising one partition of checks/health recomputes it at once
    result = dg.materialize(
        [health], partition_key=f"{DAY}|ETHUSDT", instance=instance, resources={"io_manager": lake}
    )
    meta = result.asset_materializations_for_node("checks__health")[0].metadata
    assert meta["score_candles"].value < 100 and meta["score_trades"].value == 100
    assert HEALTH_KEY.path == ["checks", "health"]
