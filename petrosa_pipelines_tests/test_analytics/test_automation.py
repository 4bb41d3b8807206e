"""Analytics follow their inputs only past blocking checks; the schedule refreshes the latest
closed window."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.analytics import ANALYTICS_ASSETS, ANALYTICS_SCHEDULES
from petrosa_pipelines.analytics.assets import analytics_key
from petrosa_pipelines.analytics.schedule import cron_for_interval, latest_closed_window
from petrosa_pipelines.market_data.assets import CANDLES_KEY, DEPTH_KEY, FUNDING_KEY, TRADES_KEY
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions

SELECTED = {analytics_key("candles_from_1m"), analytics_key("volatility")}


def stub_candles(fail_symbol: str):
    """A candles stand-in with a blocking check that fails for one symbol."""

    @dg.asset(
        key=CANDLES_KEY,
        partitions_def=daily_symbol_partitions,
        check_specs=[
            dg.AssetCheckSpec(
                "no_gaps", asset=CANDLES_KEY, blocking=True, partitions_def=daily_symbol_partitions
            )
        ],
    )
    def candles(context: dg.AssetExecutionContext):
        symbol = context.partition_key.keys_by_dimension["symbol"]
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_gaps",
                    passed=symbol != fail_symbol,
                    severity=dg.AssetCheckSeverity.ERROR,
                )
            ]
        )

    return candles


def test_automation_requests_only_partitions_whose_blocking_checks_passed(dagster_instance):
    inst = dagster_instance
    inst.add_dynamic_partitions("symbols", ["BTCUSDT", "ETHUSDT"])
    candles = stub_candles("ETHUSDT")
    analytics = [a for a in ANALYTICS_ASSETS if a.key in SELECTED]
    defs = dg.Definitions(assets=[candles, *analytics])
    now = dt.datetime(2024, 1, 10, 12, tzinfo=dt.UTC)
    first = dg.evaluate_automation_conditions(defs=defs, instance=inst, evaluation_time=now)
    assert first.total_requested == 0
    for key in ("2024-01-03|BTCUSDT", "2024-01-09|BTCUSDT", "2024-01-09|ETHUSDT"):
        dg.materialize([candles], partition_key=key, instance=inst, raise_on_error=False)
    second = dg.evaluate_automation_conditions(
        defs=defs, instance=inst, evaluation_time=now, cursor=first.cursor
    )
    anchor = analytics_key("candles_from_1m")
    requested = {str(k) for k in second.get_requested_partitions(anchor)}
    assert requested == {"2024-01-03|BTCUSDT", "2024-01-09|BTCUSDT"}  # ETH gated, any date
    # the rolling asset waits for its own day's anchor, so it does not fan out over the window
    assert not second.get_requested_partitions(analytics_key("volatility"))
    for key in requested:  # what the requested runs would land
        inst.report_runless_asset_event(dg.AssetMaterialization(anchor, partition=key))
    third = dg.evaluate_automation_conditions(
        defs=defs, instance=inst, evaluation_time=now, cursor=second.cursor
    )
    rolled = {str(k) for k in third.get_requested_partitions(analytics_key("volatility"))}
    # 2024-01-04..08 lie in the 7-day window of the updated 01-03 but have no data of their own
    assert rolled == {"2024-01-03|BTCUSDT", "2024-01-09|BTCUSDT"}


def test_cron_for_interval():
    assert cron_for_interval(900) == "*/15 * * * *"
    assert cron_for_interval(60) == "* * * * *"
    assert cron_for_interval(3600) == "0 * * * *"
    assert cron_for_interval(4 * 3600) == "0 */4 * * *"
    for bad in (0, 90, 7 * 60, 5 * 3600):
        with pytest.raises(ValueError):
            cron_for_interval(bad)


def test_latest_closed_window_hands_yesterday_its_final_refresh():
    midnight = dt.datetime(2024, 1, 3, 0, 0, 5, tzinfo=dt.UTC)
    start, end = latest_closed_window(midnight, 900)
    assert (start, end) == (
        dt.datetime(2024, 1, 2, 23, 45, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 3, tzinfo=dt.UTC),
    )
    assert latest_closed_window(midnight.replace(minute=15), 900)[0].date() == dt.date(2024, 1, 3)


def test_schedule_requests_checked_symbol_days_of_the_latest_window(sqlite_dagster_instance):
    inst = sqlite_dagster_instance
    inst.add_dynamic_partitions("symbols", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    candles = stub_candles("ETHUSDT")
    for key in ("2024-01-02|BTCUSDT", "2024-01-02|ETHUSDT", "2024-01-03|SOLUSDT"):
        dg.materialize([candles], partition_key=key, instance=inst, raise_on_error=False)
    rolling, cross = ANALYTICS_SCHEDULES
    others = [
        dg.AssetSpec(k, partitions_def=daily_symbol_partitions)
        for k in (TRADES_KEY, DEPTH_KEY, FUNDING_KEY)
    ]
    defs = dg.Definitions(
        assets=[candles, *others, *ANALYTICS_ASSETS], schedules=ANALYTICS_SCHEDULES
    )
    tick = pd.Timestamp("2024-01-03 00:00", tz="UTC").to_pydatetime()
    with dg.build_schedule_context(
        instance=inst, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        requests = rolling.evaluate_tick(context).run_requests
        assert [r.partition_key for r in requests] == ["2024-01-02|BTCUSDT"]  # ETH gated
        assert requests[0].run_key.startswith("analytics-rolling:2024-01-02|BTCUSDT:")
        skipped = cross.evaluate_tick(context)
        assert not skipped.run_requests and "fewer than two" in skipped.skip_message


def _keys_enumerated(monkeypatch, condition: dg.AutomationCondition | None) -> list[int]:
    """Partition keys the evaluation lists per tick over 40 instruments x 61 days, for the
    anchor asset (with ``condition`` instead of its own, if given) and a rolling asset after
    one input update."""
    from dagster._core.definitions.partitions.definition.multi import MultiPartitionsDefinition

    listed: list[int] = []
    original = MultiPartitionsDefinition.get_partition_keys

    def spy(self, *args, **kwargs):
        keys = original(self, *args, **kwargs)
        listed.append(len(keys))
        return keys

    monkeypatch.setattr(MultiPartitionsDefinition, "get_partition_keys", spy)
    anchor = next(a for a in ANALYTICS_ASSETS if a.key == analytics_key("candles_from_1m"))
    if condition is not None:
        anchor = anchor.map_asset_specs(
            lambda s: s.replace_attributes(automation_condition=condition)
        )
    candles = stub_candles("none")
    rolling = [a for a in ANALYTICS_ASSETS if a.key == analytics_key("volatility")]
    defs = dg.Definitions(assets=[candles, anchor, *rolling])
    now = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    per_tick = []
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("symbols", [f"S{i:03d}USDT" for i in range(40)])
        dg.materialize([candles], partition_key="2024-02-27|S001USDT", instance=inst)
        cursor = None
        for _ in range(4):
            listed.clear()
            cursor = dg.evaluate_automation_conditions(
                defs=defs, instance=inst, evaluation_time=now, cursor=cursor
            ).cursor
            per_tick.append(sum(listed))
    return per_tick


def test_quiet_ticks_do_not_list_the_partition_space(monkeypatch):
    """The daemon's CPU followed the partition space: eager() over any date lists every
    date x instrument key on every tick (newly_missing), and since_last_handled() once, on the
    tick after the first; our conditions list none (docs/scale.md, the daemon's CPU)."""
    ours = _keys_enumerated(monkeypatch, None)
    assert ours == [0, 0, 0, 0], ours
    stock = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    theirs = _keys_enumerated(monkeypatch, stock)
    assert theirs[2:] == [40 * 61, 40 * 61], theirs  # the spy sees the difference
