"""Auto-backfill: limits, unrecoverable gaps, and an injected gap closed end to end."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.checks.definitions import ALL_CHECKS
from petrosa_pipelines.checks.records import FAILED, SUCCEEDED, latest_by_partition
from petrosa_pipelines.checks.settings import BackfillSettings
from petrosa_pipelines.landing.records import GapRecord
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines_tests.test_checks.conftest import (
    FakeExchangeResource,
    FakeLandingResource,
    make_market_asset,
)
from petrosa_pipelines_tests.test_checks.data import real_candles, trades_for_candles
from sensors.auto_backfill_sensor import (
    GapTarget,
    build_auto_backfill_sensor,
    ledger_targets,
    plan_backfill,
    registered_targets,
)

DAY = dt.date(2024, 5, 1)
START, END = day_window_ms(DAY)
#: 2024-05-02 01:00: 2024-05-02 is the open day (its targets wait until it closes)
NOW = END / 1000 + 3600
COMPLETE = dg.AssetCheckKey(dg.AssetKey(["market_data", "candles"]), "candles_complete")


def _t(dataset="candles", pk="2024-05-01|BTCUSDT", gap_ms=600_000, seen=NOW - 10):
    return GapTarget(dataset, pk, "check:x", gap_ms, seen)


def test_limits_min_gap_concurrency_cooldown_attempts():
    cfg = BackfillSettings(min_gap_s=60, max_concurrent_runs=2, cooldown_s=900, max_attempts=2)
    state: dict = {}
    targets = [
        _t(gap_ms=5_000),
        _t(pk="2024-05-01|ETHUSDT"),
        _t(pk="2024-05-01|SOLUSDT"),
        _t(pk="2024-05-01|XRPUSDT"),
    ]
    plan = plan_backfill(targets, state, active_runs=1, now=NOW, settings=cfg)
    assert [t.partition for t in plan.requests] == ["2024-05-01|ETHUSDT"]
    assert plan.skipped == {"below minimum gap": 1, "max concurrent runs": 2}
    again = [_t(pk="2024-05-01|ETHUSDT", seen=NOW + 5)]  # the check failed again after the run
    assert plan_backfill(again, state, 0, NOW + 10, cfg).skipped == {"cooling down": 1}
    assert plan_backfill(again, state, 0, NOW + 1000, cfg).requests
    last = plan_backfill([_t(pk="2024-05-01|ETHUSDT", seen=NOW + 2000)], state, 0, NOW + 3000, cfg)
    assert not last.requests and "after 2 attempts" in last.unrecoverable[0][1]
    never = plan_backfill([_t(pk="2024-05-01|ETHUSDT", seen=NOW + 9000)], state, 0, NOW + 9999, cfg)
    assert never.skipped == {"unrecoverable": 1}


def test_the_open_day_waits_without_spending_an_attempt():
    """Today's partition is still landing: its gaps are repaired once it closes, not before."""
    cfg = BackfillSettings(min_gap_s=60, max_concurrent_runs=5)
    state: dict = {}
    today = [_t(pk="2024-05-02|BTCUSDT"), _t(pk="2024-05-01|BTCUSDT")]
    plan = plan_backfill(today, state, 0, NOW, cfg)
    assert [t.partition for t in plan.requests] == ["2024-05-01|BTCUSDT"]
    assert plan.skipped == {"open day (repaired once it closes)": 1}
    assert "candles|2024-05-02|BTCUSDT" not in state
    later = plan_backfill(today[:1], state, 0, NOW + 86_400, cfg)  # 2024-05-03: it closed
    assert [t.partition for t in later.requests] == ["2024-05-02|BTCUSDT"]


def test_depth_gaps_are_unrecoverable_and_ledger_is_split_by_day():
    gap = GapRecord("*", "BTCUSDT", END - 120_000, END + 60_000, "disconnect", END)
    targets = ledger_targets([gap], ["BTCUSDT", "ETHUSDT"], START)
    got = sorted((t.dataset, t.partition, t.gap_ms) for t in targets)
    assert ("candles", "2024-05-01|BTCUSDT", 120_000) in got
    assert ("candles", "2024-05-02|BTCUSDT", 60_000) in got and len(got) == 8
    # a day later, when 2024-05-02 has closed too
    plan = plan_backfill(targets, {}, 0, NOW + 86_400, BackfillSettings(max_concurrent_runs=10))
    assert {t.dataset for t, _ in plan.unrecoverable} == {"depth"}
    assert {t.partition for t in plan.requests} == {"2024-05-01|BTCUSDT", "2024-05-02|BTCUSDT"}


def test_a_poisoned_ledger_entry_gives_bounded_targets():
    """Issue 11 item 9: an entry ending at 2**63-1 (or any far future) made ``ledger_targets``
    walk ~10**14 days (> 60 s, 850 MB) and the sensor fail every tick. Targets stay within
    the lookback and the sensor's now, whatever the entry says."""
    far = END + 1000 * 86_400_000
    gaps = [
        GapRecord("trades", "BTCUSDT", END - 60_000, 2**63 - 1, "disconnect", END),
        GapRecord("trades", "ETHUSDT", END - 60_000, far, "disconnect", far),  # recorded_at too
    ]
    targets = ledger_targets(gaps, ["BTCUSDT", "ETHUSDT"], START, int(NOW * 1000))
    assert sorted((t.partition, t.gap_ms) for t in targets) == [
        ("2024-05-01|BTCUSDT", 60_000),
        ("2024-05-01|ETHUSDT", 60_000),
        ("2024-05-02|BTCUSDT", 3_600_000),
        ("2024-05-02|ETHUSDT", int(NOW * 1000) - END),
    ]


def test_ledger_targets_name_each_venue_s_instruments_as_registered():
    """A venue's ledger names bare symbols; its targets are that venue's instruments, under
    the key registered for each (an id; a legacy bare symbol only while not migrated)."""
    registered = ["binance-usdm:BTCUSDT", "ETHUSDT", "bybit-linear:BTCUSDT"]
    binance = [GapRecord("trades", "*", END - 60_000, END, "disconnect", END)]
    got = {t.partition for t in ledger_targets(binance, registered, START, END)}
    assert got == {"2024-05-01|binance-usdm:BTCUSDT", "2024-05-01|ETHUSDT"}
    bybit = [GapRecord("trades", "BTCUSDT", END - 60_000, END, "disconnect", END)]
    (t,) = ledger_targets(bybit, registered, START, END, venue="bybit-linear")
    assert t.partition == "2024-05-01|bybit-linear:BTCUSDT"
    # a check that failed on a legacy key before the migration is repaired under the id
    migrated = ["binance-usdm:BTCUSDT"]
    remapped = registered_targets([_t(), _t(pk="2024-05-01|SOLUSDT")], migrated)
    assert [t.partition for t in remapped] == ["2024-05-01|binance-usdm:BTCUSDT"]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_injected_gap_is_backfilled_and_the_check_then_passes(world, lake, instance):
    pk = f"{DAY}|ETHUSDT"
    candles = real_candles("ETHUSDT-1m-2022-05-01.csv", DAY)
    hole = (candles["open_time"] >= pd.Timestamp("2024-05-01 03:00", tz="UTC")) & (
        candles["open_time"] < pd.Timestamp("2024-05-01 03:30", tz="UTC")
    )
    world.landing[("candles", pk)] = candles[~hole]  # the websocket missed 30 minutes
    world.history[("candles", pk)] = candles
    world.landing[("trades", pk)] = trades_for_candles(candles)
    world.rest_up = False  # ... and REST was down when the window closed
    assets = [make_market_asset("candles", world), make_market_asset("trades", world)]
    resources = {
        "io_manager": lake,
        "landing": FakeLandingResource(),
        "exchange": FakeExchangeResource(),
    }
    dg.materialize(
        [*assets, *ALL_CHECKS],
        partition_key=pk,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert latest_by_partition(instance, COMPLETE) == {pk: FAILED}

    ledger = [GapRecord("trades", "ETHUSDT", START + 10_000, START + 12_000, "disconnect", START)]
    sensor = build_auto_backfill_sensor(
        settings=lambda: BackfillSettings(min_gap_s=60, dedup_keep="last"),
        landing=lambda: ("/unused", "binance"),
        gap_reader=lambda root, exchange, a, b: ledger,
        clock=lambda: NOW,
    )
    defs = dg.Definitions(
        assets=assets, asset_checks=ALL_CHECKS, sensors=[sensor], resources=resources
    )
    ctx = dg.build_sensor_context(instance=instance, definitions=defs)
    result = sensor(ctx)
    assert [r.partition_key for r in result.run_requests] == [pk]  # 2 s trades gap: below min
    req = result.run_requests[0]
    assert req.asset_selection == [dg.AssetKey(["market_data", "candles"])]
    assert COMPLETE in req.asset_check_keys
    assert req.run_config["ops"]["market_data__candles"]["config"]["dedup_keep"] == "last"

    world.rest_up = True  # REST is back: the re-materialisation refills the hole
    run = dg.materialize(
        [*assets, *ALL_CHECKS],
        partition_key=req.partition_key,
        instance=instance,
        selection=dg.AssetSelection.assets(*req.asset_selection)
        | dg.AssetSelection.checks(*req.asset_check_keys),
        run_config=req.run_config,
        tags=req.tags,
        resources=resources,
    )
    assert run.success
    assert latest_by_partition(instance, COMPLETE) == {pk: SUCCEEDED}
    stored = lake.lake().read_frame("market_data/candles/binance/ETHUSDT/2024-05-01.parquet")
    assert len(stored) == 1440  # the 30 missing minutes came back from REST
    ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
    assert not sensor(ctx2).run_requests  # closed: nothing more to do
