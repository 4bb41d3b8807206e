"""The pure audit functions: real clean days raise nothing; each injected fault is caught by its
check, with the right ranges or rows in what the check reports."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.catalog.depth_layout import to_long
from petrosa_pipelines.checks.audit import (
    TradeArrays,
    audit_trades,
    candles_anomalies,
    candles_completeness,
    candles_continuity,
    candles_duplicates,
    candles_match_trades,
    candles_ohlc,
    candles_volumes,
    trades_within_candles,
)
from petrosa_pipelines.checks.audit_book import (
    audit_dataset,
    depth_coverage,
    depth_crossed,
    depth_levels,
    depth_sequence,
    freshness,
    funding_mark_price,
    funding_rates,
    funding_schedule,
    reconcile,
    snapshots,
)
from petrosa_pipelines.checks.explain import describe
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.lib.timeutil import MINUTE_MS, day_window_ms
from petrosa_pipelines_tests.test_checks.data import (
    REAL_DAYS,
    depth_frame,
    funding_frame,
    real_candles,
    real_ws_trades,
    trades_for_candles,
    with_level,
)

DAY = dt.date(2024, 5, 1)
START, END = day_window_ms(DAY)
AFTER = END + 3_600_000
S = AuditSettings()


def _by_name(outcomes):
    return {o.name: o for o in outcomes}


@pytest.fixture(scope="module")
def maintenance_day():
    """BTCUSDT 2022-05-01: 29 flat zero-trade maintenance candles 22:26-22:54Z."""
    return real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)


@pytest.mark.parametrize("name", REAL_DAYS)
def test_real_clean_day_passes_every_check(name):
    candles = real_candles(name, DAY)
    trades = trades_for_candles(candles)
    t = TradeArrays.from_frame(trades)
    outcomes = [
        *audit_dataset("candles", candles, START, END, AFTER, S),
        *audit_dataset("trades", trades, START, END, AFTER, S),
        candles_match_trades(candles, t, START, END),
        trades_within_candles(trades, t, candles, START, END),
    ]
    failed = [(o.name, o.counts, o.examples[:2]) for o in outcomes if not o.passed]
    assert failed == []
    assert _by_name(outcomes)["candles_complete"].counts["present"] == 1440
    assert _by_name(outcomes)["candles_match_trades"].counts["compared_minutes"] > 1400


def test_maintenance_flat_candles_are_not_anomalies_nor_gaps(maintenance_day):
    flat = maintenance_day[maintenance_day["volume"] == 0]
    assert len(flat) == 29  # PROVENANCE quirk 17
    outs = _by_name(audit_dataset("candles", maintenance_day, START, END, AFTER, S))
    assert all(o.passed for o in outs.values())


def test_real_websocket_trades_pass():
    for symbol in ("SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"):
        frame = real_ws_trades(symbol)
        assert len(frame) > 3
        assert all(o.passed for o in audit_trades(frame, S)[1]), symbol


# ----------------------------------------------------------------------- injected candle faults
def test_missing_minutes_reported_as_ranges(maintenance_day):
    t = maintenance_day["open_time"]
    cut = maintenance_day[
        ~(
            (t >= pd.Timestamp("2024-05-01 10:00", tz="UTC"))
            & (t < pd.Timestamp("2024-05-01 10:05", tz="UTC"))
        )
        & (t != pd.Timestamp("2024-05-01 23:59", tz="UTC"))
    ]
    o = candles_completeness(cut, START, END, AFTER)
    assert not o.passed and o.severity == "ERROR"
    assert o.counts["missing_minutes"] == 6 and o.counts["missing_ranges"] == 2
    assert [(e["start"], e["end"]) for e in o.examples] == [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z"),
        ("2024-05-01T23:59:00Z", "2024-05-02T00:00:00Z"),
    ]


def test_open_partition_expects_only_closed_minutes(maintenance_day):
    now = START + 90 * MINUTE_MS + 30_000  # 01:30:30: minutes 00:00..01:29 are closed
    partial = maintenance_day.iloc[:90]
    assert candles_completeness(partial, START, END, now).passed
    assert not candles_completeness(partial.iloc[:89], START, END, now).passed


def test_duplicate_candle_caught(maintenance_day):
    dup = pd.concat([maintenance_day, maintenance_day.iloc[[100]]], ignore_index=True)
    o = candles_duplicates(dup)
    assert not o.passed and o.offending == 1
    assert o.examples[0]["open_time"] == "2024-05-01T01:40:00Z"


def test_ohlc_inconsistency_and_nonpositive_price_caught(maintenance_day):
    bad = maintenance_day.copy()
    bad.loc[10, "low"] = bad.loc[10, "high"] + 1
    bad.loc[20, "close"] = 0.0
    bad.loc[30, "open"] = np.nan
    o = candles_ohlc(bad)
    assert not o.passed and o.offending == 3
    assert [e["open_time"] for e in o.examples] == [
        "2024-05-01T00:10:00Z",
        "2024-05-01T00:20:00Z",
        "2024-05-01T00:30:00Z",
    ]
    assert o.counts == {"nonpositive": 2, "inverted": 1}


def test_volume_faults_caught(maintenance_day):
    bad = maintenance_day.copy()
    bad.loc[5, "taker_buy_volume"] = bad.loc[5, "volume"] * 2
    bad.loc[6, "volume"] = -1.0
    o = candles_volumes(bad)
    assert not o.passed and o.offending == 2
    assert o.counts["taker_buy_over_total"] == 1 and o.counts["negative"] == 1


def test_continuity_break_caught(maintenance_day):
    bad = maintenance_day.copy()
    bad.loc[700, "open"] = bad.loc[699, "close"] * 1.02
    bad.loc[700, "high"] = max(bad.loc[700, "high"], bad.loc[700, "open"])
    o = candles_continuity(bad, S.continuity_tolerance)
    assert not o.passed and o.severity == "WARN" and o.offending == 1
    assert o.examples[0]["open_time"] == "2024-05-01T11:40:00Z"


def test_bad_tick_is_an_anomaly(maintenance_day):
    bad = maintenance_day.copy()
    bad.loc[600, ["close", "high"]] = bad.loc[600, "close"] * 1.15
    o = candles_anomalies(bad, S.anomaly_z, S.anomaly_min_return)
    assert not o.passed
    times = [e["open_time"] for e in o.examples]
    assert "2024-05-01T10:00:00Z" in times  # the spike (and its reversion next minute)
    assert o.offending <= 2


def test_candles_disagreeing_with_trades_caught(maintenance_day):
    trades = trades_for_candles(maintenance_day)
    bad = maintenance_day.copy()
    bad.loc[50, "high"] += 5.0
    bad.loc[51, "trade_count"] += 1
    o = candles_match_trades(bad, TradeArrays.from_frame(trades), START, END)
    assert not o.passed and o.offending == 2
    assert o.examples[0] == {"open_time": "2024-05-01T00:50:00Z", "fields": ["high"]}
    assert o.examples[1]["fields"] == ["trade_count"]


def test_trade_outside_its_candle_caught(maintenance_day):
    trades = trades_for_candles(maintenance_day)
    trades.loc[40, "price"] = trades.loc[40, "price"] * 1.5
    o = trades_within_candles(trades, TradeArrays.from_frame(trades), maintenance_day, START, END)
    assert not o.passed and o.offending == 1
    assert o.examples[0]["agg_trade_id"] == int(trades.loc[40, "agg_trade_id"])


# ----------------------------------------------------------------------- injected trades faults
def test_trade_id_gaps_reported_as_id_ranges(maintenance_day):
    trades = trades_for_candles(maintenance_day)
    ids = trades["agg_trade_id"]
    gapped = trades[~ids.isin([1_000_010, 1_000_011, 1_000_012, 1_000_500])]
    o = _by_name(audit_trades(gapped, S)[1])["trades_id_continuous"]
    assert not o.passed and o.severity == "ERROR"
    assert o.counts["missing_ids"] == 4 and o.counts["gap_ranges"] == 2
    assert [(e["first_missing_id"], e["last_missing_id"]) for e in o.examples] == [
        (1_000_010, 1_000_012),
        (1_000_500, 1_000_500),
    ]


def test_duplicate_disorder_and_bad_values_caught():
    frame = real_ws_trades("SUSHIUSDT")
    dup = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    assert _by_name(audit_trades(dup, S)[1])["trades_unique"].offending == 1
    late = frame.copy()
    late.loc[5, "trade_time"] = late.loc[5, "trade_time"] - pd.Timedelta(seconds=10)
    o = _by_name(audit_trades(late, S)[1])["trades_time_ordered"]
    assert not o.passed and o.examples[0]["agg_trade_id"] == int(frame.loc[5, "agg_trade_id"])
    bad = frame.copy()
    bad.loc[1, "price"] = 0.0
    bad.loc[2, "quantity"] = -1.0
    o = _by_name(audit_trades(bad, S)[1])["trades_values_valid"]
    assert o.counts["bad_price"] == 1 and o.counts["bad_quantity"] == 1


def test_unsorted_trades_are_audited_in_id_order():
    frame = real_ws_trades("SUSHIUSDT").sample(frac=1.0, random_state=3)
    assert all(o.passed for o in audit_trades(frame, S)[1])


# ----------------------------------------------------------------------------- depth and funding
def test_depth_clean_and_faults():
    now = START + 600_000
    clean = depth_frame(DAY, 600)
    assert len(clean) == 600  # one row per snapshot, its levels as lists
    assert all(o.passed for o in audit_dataset("depth", clean, START, END, now, S))
    assert depth_levels(clean).checked == 600 * 2 * 10  # every level of both sides
    crossed = with_level(clean, 7, "ask", 0, price=1.0)
    o = depth_crossed(crossed)
    assert o.offending == 1 and o.checked == 600
    assert o.examples[0] == {
        "snapshot_time": "2024-05-01T00:00:07Z",
        "best_bid": float(clean["bid_price"].iat[7][0]),
        "best_ask": 1.0,
    }
    assert depth_levels(crossed).passed  # 1.0 is still below the next ask: only crossed
    misordered = with_level(clean, 9, "bid", 3, price=clean["bid_price"].iat[9][0] + 10)
    o = depth_levels(misordered)
    assert not o.passed and o.counts["misordered"] == 1 and o.offending == 1
    assert {k: o.examples[0][k] for k in ("snapshot_time", "side", "level")} == {
        "snapshot_time": "2024-05-01T00:00:09Z",
        "side": "bid",
        "level": 3,
    }
    back = clean.copy()
    back.loc[
        back["snapshot_time"] == back["snapshot_time"].iloc[0] + pd.Timedelta(seconds=100),
        "last_update_id",
    ] = 1
    o = depth_sequence(back, [{"cause": "resync"}])
    assert o.offending == 1 and o.counts["resyncs_recorded"] == 1
    assert o.examples[0]["snapshot_time"] == "2024-05-01T00:01:40Z"
    holed = clean[
        (clean["snapshot_time"] < clean["snapshot_time"].iloc[0] + pd.Timedelta(seconds=60))
        | (clean["snapshot_time"] >= clean["snapshot_time"].iloc[0] + pd.Timedelta(seconds=120))
    ]
    o = depth_coverage(holed, START, END, now, 1000, 0.95)
    assert not o.passed and o.counts["coverage"] == pytest.approx(0.9)
    assert (o.examples[0]["start"], o.examples[0]["end"]) == (
        "2024-05-01T00:01:00Z",
        "2024-05-01T00:02:00Z",
    )


def test_depth_levels_name_each_bad_level():
    """Non-positive or missing values inside a list and lists of unequal length offend at
    their level; the examples run in time order, ask before bid, as the long rows did."""
    clean = depth_frame(DAY, 60)
    bad = with_level(clean, 20, "bid", 2, quantity=0.0)
    bad = with_level(bad, 11, "ask", 5, price=np.nan)
    bad = with_level(bad, 11, "bid", 0, quantity=-1.0)
    cells = bad["ask_quantity"].to_numpy(dtype=object).copy()
    cells[30] = cells[30][:-1]  # the last ask price has no quantity
    bad["ask_quantity"] = cells
    o = depth_levels(bad)
    assert not o.passed and o.offending == 4 and o.checked == 60 * 20
    assert (o.counts["nonpositive"], o.counts["unpaired"], o.counts["misordered"]) == (3, 1, 0)
    where = [(e["snapshot_time"][11:19], e["side"], e["level"]) for e in o.examples]
    assert where == [
        ("00:00:11", "ask", 5),
        ("00:00:11", "bid", 0),
        ("00:00:20", "bid", 2),
        ("00:00:30", "ask", 9),
    ]
    assert o.examples[2]["quantity"] == 0.0 and np.isnan(o.examples[3]["quantity"])
    assert "book levels offend; first: snapshot_time=2024-05-01T00:00:11Z, side=ask" in (
        describe(o)
    )
    unsorted = depth_levels(bad.iloc[::-1])  # rows out of time order: the same order
    assert [(e["snapshot_time"][11:19], e["side"], e["level"]) for e in unsorted.examples] == where
    assert not depth_crossed(bad).offending  # NaN inside the asks is not at the best level


def test_depth_checks_read_long_rows_as_the_same_book():
    """A version 1 frame (one row per level, an old reader's) is judged as its snapshots."""
    clean = depth_frame(DAY, 120)
    faulty = with_level(clean, 9, "bid", 3, price=clean["bid_price"].iat[9][0] + 10)
    faulty = with_level(faulty, 40, "ask", 0, price=1.0)
    now = START + 120_000
    wide = audit_dataset("depth", faulty, START, END, now, S)
    long = audit_dataset("depth", to_long(faulty), START, END, now, S)
    assert [(o.name, o.checked, o.offending, o.examples) for o in long] == [
        (o.name, o.checked, o.offending, o.examples) for o in wide
    ]
    assert {o.name for o in wide if not o.passed} == {"depth_not_crossed", "depth_levels_ordered"}


def test_depth_snapshots_of_one_time_are_one_sample():
    """Two rows stamped alike (a duplicate) are one sample, as the long layout grouped them:
    highest update id and bid, lowest ask."""
    clean = depth_frame(DAY, 3)
    twin = clean.iloc[[1]].assign(last_update_id=clean["last_update_id"].iat[1] + 3)
    twin = with_level(twin.reset_index(drop=True), 0, "ask", 0, price=1.0)
    frame = pd.concat([clean, twin], ignore_index=True)
    snaps = snapshots(frame)
    assert snaps.times.size == 3 and snaps.ids[1] == clean["last_update_id"].iat[1] + 3
    assert snaps.ask[1] == 1.0 and snaps.bid[1] == clean["bid_price"].iat[1][0]
    assert depth_crossed(frame).offending == 1 and depth_sequence(frame).passed


def test_funding_clean_and_faults():
    clean = funding_frame(DAY)
    assert all(o.passed for o in audit_dataset("funding", clean, START, END, AFTER, S))
    o = funding_schedule(clean.iloc[[0, 2]], START, END, AFTER, 8)
    assert o.counts["missing_settlements"] == 1
    assert o.examples == [{"missing_settlement": "2024-05-01T08:00:00Z"}]
    assert not funding_schedule(clean, START, END, AFTER, 4).passed  # a 4 h symbol misses 3
    bad = clean.copy()
    bad.loc[1, "funding_rate"] = 0.5
    assert funding_rates(bad, -0.03, 0.03).counts["above_cap"] == 1
    bad.loc[2, "mark_price"] = np.nan
    assert funding_mark_price(bad).offending == 1
    archive = bad.assign(source="archive", mark_price=np.nan)
    o = funding_mark_price(archive)
    assert o.passed and o.counts["archive_rows_without_mark"] == 3


def test_freshness_of_open_and_closed_partitions(maintenance_day):
    lag = S.freshness_max_lag_s * 1000
    assert freshness(maintenance_day, "open_time", START, END, AFTER, lag).passed
    now = START + 120 * MINUTE_MS
    stale = maintenance_day.iloc[:100]  # 20 minutes behind at 02:00
    o = freshness(stale, "open_time", START, END, now, lag)
    assert not o.passed and o.counts["lag_s"] == 20 * 60 and 0 < o.quality < 1
    assert freshness(maintenance_day.iloc[:0], "open_time", START, END, now, lag).quality == 0


def test_reconciliation_of_three_sources(maintenance_day):
    ws = maintenance_day.iloc[600:700].assign(source="ws")
    rest = maintenance_day.assign(source="rest")
    archive = maintenance_day.assign(source="archive")
    agree = reconcile("candles", {"ws": ws, "rest": rest, "archive": archive}, "open_time")
    assert agree.passed and agree.counts["pairs_overlapping"] == 3
    ws_bad = ws.copy()
    ws_bad.loc[ws_bad.index[5], "close"] += 1.0
    o = reconcile(
        "candles", {"ws": ws_bad.iloc[:-1], "rest": rest, "archive": archive}, "open_time"
    )
    assert not o.passed
    assert o.extra["pairs"]["archive~ws"]["value_mismatches"] == 1
    assert o.extra["pairs"]["rest~ws"]["only_one_side"] == 0  # overlap ends where ws ends
    trades = trades_for_candles(maintenance_day)
    t_ws = trades.iloc[100:200].drop(index=150).assign(source="ws")
    o = reconcile("trades", {"ws": t_ws, "archive": trades}, "trade_time")
    assert o.extra["pairs"]["archive~ws"]["only_one_side"] == 1
    assert o.extra["pairs"]["archive~ws"]["id_gaps"] == 1
    assert reconcile("trades", {"ws": t_ws}, "trade_time").note


def test_depth_suite_judges_snapshots_and_sees_list_lengths():
    """The v2 suite: a clean day passes; a duplicated snapshot time and a side whose price and
    quantity lists differ in length fail their expectations (GX sees the lists' lengths)."""
    from petrosa_pipelines.checks.gx import suite_frame, validate_frame

    clean = depth_frame(DAY, 60)
    seen = suite_frame("depth", clean)
    assert seen["bid_price"].tolist() == [10] * 60 and list(seen.columns) == list(clean.columns)
    ok = validate_frame("depth", clean)
    assert ok.success and ok.version == 2 and ok.evaluated == 6
    bad = pd.concat([clean, clean.iloc[[5]]], ignore_index=True)
    cells = bad["bid_quantity"].to_numpy(dtype=object).copy()
    cells[7] = cells[7][:-1]
    bad["bid_quantity"] = cells
    failed = {
        (r["expectation"], r["column"], r["unexpected_count"])
        for r in validate_frame("depth", bad).results
        if not r["success"]
    }
    assert failed == {
        ("expect_column_values_to_be_unique", "snapshot_time", 2),
        ("expect_column_pair_values_to_be_equal", "bid_price", 1),
    }
