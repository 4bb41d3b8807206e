"""Checks where the data cannot exist say "not applicable" (and why) instead of failing; an empty
partition that should hold data scores 0; every result explains itself in one line."""

import datetime as dt

import pandas as pd
import pytest

from petrosa_pipelines.checks.applicability import (
    NOTHING_LANDED,
    history_applicability,
    ingest_started_ms,
)
from petrosa_pipelines.checks.audit import candles_completeness
from petrosa_pipelines.checks.audit_book import audit_dataset, freshness
from petrosa_pipelines.checks.explain import describe, key_figures
from petrosa_pipelines.checks.health import describe_health, health_metadata
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.landing import layout
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS, day_window_ms
from petrosa_pipelines_tests.test_checks.data import depth_frame, real_candles

DAY = dt.date(2024, 5, 1)
START, END = day_window_ms(DAY)
AFTER = END + HOUR_MS
S = AuditSettings()
#: the ingest first landed a frame two days after DAY
INGEST_STARTED = day_window_ms(dt.date(2024, 5, 3))[0] + 10 * HOUR_MS


def _empty_depth() -> pd.DataFrame:
    return depth_frame(DAY, 1).iloc[:0]


def test_depth_before_the_ingest_existed_is_not_applicable_with_the_reason():
    outs = audit_dataset("depth", _empty_depth(), START, END, AFTER, S, [], INGEST_STARTED)
    assert {o.name for o in outs} == {
        "depth_sequence",
        "depth_not_crossed",
        "depth_levels_ordered",
        "depth_coverage",
        "fresh",
    }
    reason = "not applicable: no book history exists before the ingest started 2024-05-03"
    for o in outs:
        assert o.passed and o.status == "not_applicable"
        meta = o.metadata()
        assert meta["status"] == "not_applicable" and meta["reason"] == reason
        assert describe(o) == reason
    meta = health_metadata(outs, S.health_weights, rows=0, data_expected=True, min_score=90)
    assert meta["status"] == "not_applicable" and "score" not in meta
    assert describe_health(meta, 90) == reason


def test_depth_with_nothing_ever_landed_is_not_applicable():
    outs = audit_dataset("depth", _empty_depth(), START, END, AFTER, S, [], NOTHING_LANDED)
    assert all(o.passed and o.status == "not_applicable" for o in outs)
    assert "the ingest has landed nothing yet" in describe(outs[0])


def test_empty_depth_after_the_ingest_started_fails_and_scores_zero():
    before = START - HOUR_MS
    outs = audit_dataset("depth", _empty_depth(), START, END, AFTER, S, [], before)
    cov = {o.name: o for o in outs}["depth_coverage"]
    assert not cov.passed and cov.status == "failed" and cov.severity == "WARN"
    assert describe(cov) == (
        "0.0 % of 1 s sample slots covered (min 95.0 %); 24.0 h uncovered: "
        "2024-05-01T00:00Z-2024-05-02T00:00Z"
    )
    meta = health_metadata(outs, S.health_weights, rows=0, data_expected=True, min_score=90)
    # before: validity of zero rows counted as perfect, 31.25 (0.25 / 0.8 of the weights)
    assert meta["score"] == 0.0 and meta["status"] == "failed"
    assert meta["reason"] == "empty partition: 0 rows where data should exist"
    assert describe_health(meta, 90) == (
        "health 0 < 90: empty partition: 0 rows where data should exist"
    )


def test_empty_trades_of_a_closed_day_score_zero_not_a_pass():
    from petrosa_pipelines.catalog.schemas import TRADES

    outs = audit_dataset("trades", TRADES.empty_frame(), START, END, AFTER, S)
    meta = health_metadata(outs, S.health_weights, rows=0, data_expected=True, min_score=90)
    assert meta["score"] == 0.0 and meta["status"] == "failed"
    full = health_metadata(outs, S.health_weights)  # the old call: no row count known
    assert full["score"] == 100.0


def test_a_day_the_ingest_started_in_is_judged_from_then():
    started = START + 12 * HOUR_MS
    half = depth_frame(DAY, 12 * 3600, top_n=1)
    half["snapshot_time"] += pd.Timedelta(hours=12)
    outs = {o.name: o for o in audit_dataset("depth", half, START, END, AFTER, S, [], started)}
    cov = outs["depth_coverage"]
    assert cov.passed and cov.counts["coverage"] == 1.0 and cov.checked == 12 * 3600
    assert "judged from 2024-05-01 12:00Z" in describe(cov)
    # without the ingest's start the morning counts as missing
    old = {o.name: o for o in audit_dataset("depth", half, START, END, AFTER, S)}
    assert not old["depth_coverage"].passed and old["depth_coverage"].counts["coverage"] == 0.5


def test_rows_are_always_judged_even_when_landed_after_their_day():
    """A replayed day lands after its own end: its rows are judged, not waved through."""
    app = history_applicability("depth", START, END, rows=10, ingest_started_ms=AFTER)
    assert app.applicable and app.from_ms is None
    assert history_applicability("candles", START, END, 0, NOTHING_LANDED).applicable
    assert history_applicability("depth", START, END, 0, None).applicable  # unknown: judged


def test_fresh_on_a_closed_day_is_not_applicable_and_judges_the_open_one():
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    lag = S.freshness_max_lag_s * 1000
    closed = freshness(candles.iloc[:100], "open_time", START, END, AFTER, lag)
    assert closed.passed and closed.status == "not_applicable"
    assert describe(closed) == (
        "not applicable: the day closed at 2024-05-02 00:00Z; freshness judges only the open "
        "partition (completeness checks judge closed days)"
    )
    stale = freshness(candles.iloc[:100], "open_time", START, END, START + 120 * MINUTE_MS, lag)
    assert not stale.passed and stale.status == "failed"
    assert describe(stale) == "newest row 20 min behind the newest possible (max 10 min)"


def test_candle_gap_is_described_in_words_with_its_range():
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    t = candles["open_time"]
    hole = (t >= pd.Timestamp("2024-05-01 10:03", tz="UTC")) & (
        t < pd.Timestamp("2024-05-01 10:10", tz="UTC")
    )
    o = candles_completeness(candles[~hole], START, END, AFTER)
    assert describe(o) == "7 minutes missing: 2024-05-01T10:03Z-10:10Z"
    assert key_figures(o) == {"first_offending_text": "2024-05-01T10:03Z-10:10Z"}
    assert describe(candles_completeness(candles, START, END, AFTER)) == (
        "all 1,440 closed minutes present"
    )


@pytest.mark.parametrize("groups", [[], ["default", "demo"]])
def test_ingest_start_is_the_oldest_landed_segment(tmp_path, groups):
    root = tmp_path / "landing"
    assert ingest_started_ms(None, "binance") is None
    assert ingest_started_ms(root, "binance") == NOTHING_LANDED
    first = INGEST_STARTED
    for i, group in enumerate(groups):
        for recv in (first + i * HOUR_MS, first + 30 * HOUR_MS):
            d = layout.data_hour_dir(root, "binance", group, recv)
            d.mkdir(parents=True, exist_ok=True)
            (d / layout.SegmentName(recv, "w1", 0).file_name).write_bytes(b"")
            (d / layout.SegmentName(recv - 1, "w1", 1).temp_name).write_bytes(b"")  # open
    want = first if groups else NOTHING_LANDED
    assert ingest_started_ms(root, "binance") == want


def test_api_quality_reports_an_empty_closed_day_except_depth():
    from petrosa_pipelines.catalog.schemas import CANDLES, DEPTH, TRADES
    from petrosa_pipelines.serving.quality import check_partition

    pk = "2024-05-01|BTCUSDT"
    (found,) = check_partition("trades", TRADES.empty_frame(), partition=pk, day_closed=True)
    assert (found.check, found.detail) == ("empty", "0 trades rows for a closed day")
    assert check_partition("candles", CANDLES.empty_frame(), partition=pk, day_closed=False) == []
    assert check_partition("depth", DEPTH.empty_frame(), partition=pk, day_closed=True) == []


def test_the_health_grid_shows_today_as_open_and_judged_so_far():
    """Today's row is the open day: labelled "(open)", its built cells "(so far)"."""
    import datetime as dt

    from petrosa_pipelines.checks.grid import NOT_BUILT, grid_frame, health_grid

    today = dt.date(2024, 3, 3)
    rows = [("2024-03-03", "binance-usdm:BTCUSDT"), ("2024-03-02", "binance-usdm:BTCUSDT")]
    ok = {"score": 100.0, "status": "passed", "failed_checks": []}
    records = {(d, s, "candles"): ok for d, s in rows}
    built = {(d, s, "candles") for d, s in rows}
    grid = health_grid(records, built, rows, ["candles", "depth"], 90.0, today=today)
    assert grid[rows[0]]["candles"].text.endswith("(so far)")
    assert grid[rows[0]]["depth"].text == NOT_BUILT  # nothing built: nothing "so far"
    assert not grid[rows[1]]["candles"].text.endswith("(so far)")
    assert list(grid_frame(grid, today)["day"]) == ["2024-03-03 (open)", "2024-03-02"]
