"""Quality in the UI: results that explain themselves, "not applicable" depth days before the
ingest existed, a failing health visible as an ERROR check, the verdict on the partition, and
the day x symbol x dataset grid on ``checks/health``."""

import datetime as dt

import dagster as dg
import pytest

from petrosa_pipelines.checks.definitions import (
    ALL_CHECKS,
    HEALTH_THRESHOLD_CHECK,
    health,
)
from petrosa_pipelines.checks.grid import cell, recent_rows
from petrosa_pipelines.landing import layout
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_window_ms
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines_tests.test_checks.conftest import (
    FakeExchangeResource,
    FakeLandingResource,
    make_market_asset,
)
from petrosa_pipelines_tests.test_checks.test_dagster_checks import (
    DAY,
    _evaluations,
    _materialize,
    _setup,
)
from resources.landing_store import LandingResource

DEPTH_KEY = dg.AssetKey(["market_data", "depth"])
BEFORE_INGEST = "2024-05-01|BTCUSDT"
AFTER_INGEST = "2024-05-04|BTCUSDT"
STARTED = day_window_ms(dt.date(2024, 5, 3))[0] + 10 * HOUR_MS


def _landing_started_at(tmp_path, recv_ms: int) -> LandingResource:
    """A landing zone whose oldest closed segment was received at ``recv_ms``."""
    root = tmp_path / "landing"
    d = layout.data_hour_dir(root, "binance", "default", recv_ms)
    d.mkdir(parents=True)
    (d / layout.SegmentName(recv_ms, "w1", 0).file_name).write_bytes(b"")
    return LandingResource(root=str(root))


def _depth_run(world, lake, instance, landing, pk):
    return dg.materialize(
        [make_market_asset("depth", world), *ALL_CHECKS],
        partition_key=pk,
        instance=instance,
        resources={"io_manager": lake, "landing": landing, "exchange": FakeExchangeResource()},
        raise_on_error=False,
    )


def _observations(instance, pk):
    f = dg.AssetRecordsFilter(asset_key=DEPTH_KEY, asset_partitions=[pk])
    return [r.asset_observation for r in instance.fetch_observations(f, limit=10).records]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_depth_before_the_ingest_is_not_applicable_and_after_it_fails_loudly(
    world, lake, instance, tmp_path
):
    landing = _landing_started_at(tmp_path, STARTED)
    old = _evaluations(_depth_run(world, lake, instance, landing, BEFORE_INGEST))
    reason = "not applicable: no book history exists before the ingest started 2024-05-03"
    for name in ("depth_coverage", "fresh", "health", "gx_suite", "depth_sequence"):
        ev = old[f"depth.{name}"]
        assert ev.passed, name
        assert ev.metadata["status"].value == "not_applicable", name
        assert ev.description == reason, name
    assert "score" not in old["depth.health"].metadata

    new = _evaluations(_depth_run(world, lake, instance, landing, AFTER_INGEST))
    cov = new["depth.depth_coverage"]
    assert not cov.passed and cov.severity == dg.AssetCheckSeverity.WARN
    assert cov.description.startswith("0.0 % of 1 s sample slots covered (min 95.0 %); 24.0 h")
    assert cov.metadata["first_offending_text"].value == "2024-05-04T00:00Z-2024-05-05T00:00Z"
    hl = new["depth.health"]
    assert not hl.passed and hl.metadata["score"].value == 0.0  # was 31.25
    assert hl.description == "health 0 < 90: empty partition: 0 rows where data should exist"
    assert new["depth.fresh"].metadata["status"].value == "not_applicable"  # a closed day
    assert all(e.description for e in [*old.values(), *new.values()])

    # the verdict where partitions are listed: an observation newer than the materialisation
    (seen,) = _observations(instance, AFTER_INGEST)
    assert seen.metadata["quality"].value == (
        "❌ health 0 < 90: empty partition: 0 rows where data should exist"
    )
    assert seen.metadata["failing_checks"].value == "depth_coverage"
    (seen_old,) = _observations(instance, BEFORE_INGEST)
    assert seen_old.metadata["quality"].value == f"➖ {reason}"

    # a scheduled re-audit with the same verdict adds no observation
    dg.materialize(
        [make_market_asset("depth", world), *ALL_CHECKS],
        tags=dict(daily_symbol_partitions.get_tags_for_partition_key(AFTER_INGEST)),
        instance=instance,
        selection=dg.AssetSelection.checks_for_assets(DEPTH_KEY),
        resources={"io_manager": lake, "landing": landing, "exchange": FakeExchangeResource()},
    )
    assert len(_observations(instance, AFTER_INGEST)) == 1

    # the health asset: a failing ERROR check naming the dataset and check, and the grid
    result = dg.materialize(
        [health], partition_key=AFTER_INGEST, instance=instance, resources={"io_manager": lake}
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == HEALTH_THRESHOLD_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description == "below 90: depth 0 (depth_coverage)"
    meta = result.asset_materializations_for_node("checks__health")[0].metadata
    rows = {(r.data["day"], r.data["symbol"]): r.data for r in meta["health_grid"].value.records}
    assert rows[("2024-05-04", "BTCUSDT")]["depth"] == "❌ 0 depth_coverage"
    assert rows[("2024-05-01", "BTCUSDT")]["depth"] == (
        "➖ n/a: no book history exists before the ingest started 2024-05-03"
    )
    assert rows[("2024-05-04", "BTCUSDT")]["candles"] == "—"  # not materialised
    assert list(rows) == [("2024-05-04", "BTCUSDT"), ("2024-05-01", "BTCUSDT")]
    assert meta["health_heatmap"].value.startswith("![health heatmap](data:image/png;base64,")

    ok = dg.materialize(
        [health], partition_key=BEFORE_INGEST, instance=instance, resources={"io_manager": lake}
    )
    (check,) = ok.get_asset_check_evaluations()
    assert check.passed and check.description == (
        "not applicable: depth: no book history exists before the ingest started 2024-05-03"
    )
    meta = ok.asset_materializations_for_node("checks__health")[0].metadata
    assert "score_depth" not in meta and meta["not_applicable"].value.startswith("depth: not")


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_candle_gap_result_and_grid_name_the_failing_check(world, lake, instance):
    _setup(world, gap_symbol="ETHUSDT")
    evals = _evaluations(_materialize(world, lake, instance, f"{DAY}|ETHUSDT"))
    assert evals["candles.candles_complete"].description == (
        "7 minutes missing: 2024-05-01T10:00Z-10:07Z"
    )
    assert evals["candles.candles_unique"].description == "all 1,433 candles pass"
    assert evals["candles.health"].description.startswith("health ")
    assert all(e.description for e in evals.values())
    world.rest_up = True
    _materialize(world, lake, instance, f"{DAY}|BTCUSDT")
    result = dg.materialize(
        [health], partition_key=f"{DAY}|ETHUSDT", instance=instance, resources={"io_manager": lake}
    )
    meta = result.asset_materializations_for_node("checks__health")[0].metadata
    grid = {r.data["symbol"]: r.data for r in meta["health_grid"].value.records}
    assert grid["ETHUSDT"]["candles"].endswith("candles_complete")
    assert grid["ETHUSDT"]["candles"][0] in "❌⚠"
    assert grid["BTCUSDT"]["candles"] == "✅ 100" and grid["BTCUSDT"]["trades"] == "✅ 100"
    assert grid["BTCUSDT"]["depth"] == "—"


def test_grid_cells_and_window():
    assert cell(None, built=True, min_score=90).text == "… not audited"
    rec = {"score": 99.0, "status": "passed", "failed_checks": ["candles_continuous"]}
    assert cell(rec, True, 90).text == "⚠️ 99 candles_continuous"
    rec = {"score": 0.0, "status": "failed", "failed_checks": [], "reason": "empty partition"}
    assert cell(rec, True, 90).text == "❌ 0 health (empty partition)"
    keys = [f"2024-05-{d:02d}|{s}" for d in range(1, 11) for s in ("ETHUSDT", "BTCUSDT")]
    rows = recent_rows(keys, days=2, max_rows=3)
    assert rows == [("2024-05-10", "BTCUSDT"), ("2024-05-10", "ETHUSDT"), ("2024-05-09", "BTCUSDT")]


def test_fake_landing_without_root_keeps_judging(world, lake, instance):
    """No landing root to ask: depth is judged as before (nothing is waved through)."""
    result = dg.materialize(
        [make_market_asset("depth", world), *ALL_CHECKS],
        partition_key=AFTER_INGEST,
        instance=instance,
        resources={
            "io_manager": lake,
            "landing": FakeLandingResource(),
            "exchange": FakeExchangeResource(),
        },
    )
    assert not _evaluations(result)["depth.depth_coverage"].passed
