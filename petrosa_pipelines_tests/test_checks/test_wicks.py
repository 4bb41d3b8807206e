"""The implausible-wick check: a lone bad high or low is caught, real volatile days stay clean.

A high multiplied by 1.3 with open and close untouched passes every other candle check, yet
multiplies the day's Parkinson/Garman-Klass/Rogers-Satchell/Yang-Zhang volatility ~10x. The
real days are Binance Vision USD-M klines (fixtures/checks/PROVENANCE.md), the most volatile
of 2022-2023 included: the FTX collapse (2022-11-08/09, robust z 48 on the anomaly check), the
largest real 1m excess wick (BTCUSDT 2022-05-05, 3.2 %) and the largest local z of a 1 %+
wick among BTCUSDT days (2023-10-16, z 16.8).
"""

import dataclasses
import datetime as dt

import dagster as dg
import pytest

from petrosa_pipelines.checks.audit import WICK_CHECK, candles_wicks
from petrosa_pipelines.checks.audit_book import audit_dataset
from petrosa_pipelines.checks.definitions import DATASET_AUDITS, DATASET_CHECKS
from petrosa_pipelines.checks.health import health_metadata
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines.settings import SettingError
from petrosa_pipelines_tests.test_checks.data import REAL_DAYS, real_candles

DAY = dt.date(2024, 5, 1)
START, END = day_window_ms(DAY)
AFTER = END + 3_600_000
S = AuditSettings()
VOLATILE = [
    "BTCUSDT-1m-2022-11-08.csv",
    "BTCUSDT-1m-2022-11-09.csv",
    "ETHUSDT-1m-2022-11-08.csv",
    "BTCUSDT-1m-2022-05-05.csv",
    "BTCUSDT-1m-2023-10-16.csv",
]


def _check(frame):
    return candles_wicks(frame, S.wick_z, S.wick_min)


def test_the_volatile_days_are_among_the_real_days():
    assert set(VOLATILE) <= set(REAL_DAYS)


@pytest.mark.parametrize("name", REAL_DAYS)
def test_real_days_have_no_implausible_wick(name):
    o = _check(real_candles(name, DAY))
    assert o.passed and o.offending == 0 and o.checked == 1440
    # the margins the defaults keep on real data
    assert o.counts["max_excess"] < 0.033 < S.wick_min


@pytest.mark.parametrize("name", VOLATILE)
@pytest.mark.parametrize(("side", "factor"), [("high", 1.3), ("low", 1 / 1.3)])
def test_a_wick_spike_fails_and_names_the_candle(name, side, factor):
    candles = real_candles(name, DAY)
    spiked = candles.copy()
    spiked.loc[700, side] *= factor  # 11:40, open and close untouched
    o = _check(spiked)
    assert not o.passed and o.severity == "ERROR" and o.component == "validity"
    assert o.offending == 1 and o.counts[f"implausible_{side}s"] == 1
    example = o.examples[0]
    assert example["open_time"] == "2024-05-01T11:40:00Z" and example["side"] == side
    assert example[side] == spiked.loc[700, side]
    assert example["excess"] > 0.2 and example["z"] > S.wick_z


def test_nothing_else_catches_the_spike_but_health_drops():
    candles = real_candles("BTCUSDT-1m-2022-11-09.csv", DAY)
    spiked = candles.copy()
    spiked.loc[700, "high"] *= 1.3
    clean = audit_dataset("candles", candles, START, END, AFTER, S)
    bad = audit_dataset("candles", spiked, START, END, AFTER, S)
    assert [o.name for o in bad if not o.passed] == [WICK_CHECK]
    assert health_metadata(clean, S.health_weights)["score"] == 100.0
    meta = health_metadata(bad, S.health_weights)
    assert meta["score"] < 100.0 and meta["failed_checks"] == [WICK_CHECK]
    assert meta["validity"] == pytest.approx(1 - 1 / 1440)


def test_both_thresholds_are_needed():
    """A quiet day's tiny tick scores a huge z; a volatile day's real 1.7 % wick a z above the
    threshold: the size floor keeps both clean, and lowering it flags them."""
    day = real_candles("BTCUSDT-1m-2023-10-16.csv", DAY)
    assert _check(day).counts["max_z"] > S.wick_z
    assert not candles_wicks(day, S.wick_z, 0.01).passed


def test_maintenance_and_missing_minutes_are_not_wicks():
    day = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)  # 29 flat maintenance candles
    assert _check(day).passed
    holed = day.drop(index=range(600, 660)).reset_index(drop=True)
    assert _check(holed).passed
    assert _check(day.iloc[:0]).passed


def test_wick_settings_are_read_and_validated():
    cfg = audit_settings({"PETROSA_WICK_Z": "20", "PETROSA_WICK_MIN": "0.1"})
    assert (cfg.wick_z, cfg.wick_min) == (20.0, 0.1)
    for var, raw in (
        ("PETROSA_WICK_Z", "nan"),
        ("PETROSA_WICK_Z", "0"),
        ("PETROSA_WICK_MIN", "-1"),
    ):
        with pytest.raises(SettingError, match=var):
            audit_settings({var: raw})
    assert dataclasses.replace(S, wick_z=1.0).wick_z == 1.0


def test_wick_check_is_registered_blocking_and_partition_aware():
    candles_audit = next(c for c in DATASET_AUDITS if c.node_def.name == "candles_audit")
    specs = {s.name: s for s in candles_audit.check_specs}
    spec = specs[WICK_CHECK]
    assert spec.blocking and spec.asset_key == dg.AssetKey(["market_data", "candles"])
    assert spec.partitions_def == daily_symbol_partitions
    # the candle check keys, as the audit job and the alert sensor see them
    assert [n for n, _, _ in DATASET_CHECKS["candles"]] == [
        "candles_complete",
        "candles_unique",
        "candles_ohlc_consistent",
        "candles_volumes_valid",
        "candles_continuous",
        "candles_no_anomalies",
        WICK_CHECK,
    ]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_in_dagster_the_spike_fails_blocking_and_stops_downstream(world, lake, instance):
    from petrosa_pipelines_tests.test_checks.data import trades_for_candles
    from petrosa_pipelines_tests.test_checks.test_dagster_checks import (
        _evaluations,
        _materialize,
        candle_features,
    )

    pk = f"{DAY.isoformat()}|BTCUSDT"
    candles = real_candles("BTCUSDT-1m-2022-11-09.csv", DAY)
    spiked = candles.copy()
    spiked.loc[700, "high"] *= 1.3
    world.history[("candles", pk)] = spiked
    world.landing[("candles", pk)] = spiked
    world.landing[("trades", pk)] = trades_for_candles(candles)
    result = _materialize(world, lake, instance, pk, [candle_features])
    assert not result.success
    evals = _evaluations(result)
    ev = evals[f"candles.{WICK_CHECK}"]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert ev.partition == pk
    assert [e["open_time"] for e in ev.metadata["first_offending"].value] == [
        "2024-05-01T11:40:00Z"
    ]
    assert evals["candles.health"].metadata["score"].value < 100
    assert instance.get_latest_materialization_event(dg.AssetKey("candle_features")) is None
