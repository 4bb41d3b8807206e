"""Checks adapt to what the venue guarantees (issue 12).

Where trade ids are not consecutive (Bybit's UUIDs) the id-gap check does not apply and
completeness is judged against the venue's own 1m candles (minute coverage and per-minute
volume); where they are (Binance) nothing changes. Depth before the ingest started is judged
only where the venue keeps book history.
"""

import datetime as dt
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from petrosa_pipelines.catalog.schemas import CANDLES, DEPTH, TRADES, conform
from petrosa_pipelines.checks.audit import (
    CANDLE_EVIDENCE_CHECK,
    TradeArrays,
    audit_trades,
    candles_match_trades,
    trades_candle_evidence,
)
from petrosa_pipelines.checks.audit_book import audit_dataset, reconcile
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.lib.timeutil import MINUTE_MS, day_window_ms
from petrosa_pipelines_tests.bybit_shaped import (
    STANDIN,
    as_archive,
    bybit_candles,
    bybit_trades,
    register_standin,
)
from petrosa_pipelines_tests.test_checks.data import real_candles, trades_for_candles

DAY = dt.date(2026, 8, 9)
START, END = day_window_ms(DAY)
AFTER = END + 3_600_000
S = AuditSettings()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit" / "ws" / "cryptofeed_2026-08-09"


@pytest.fixture(autouse=True)
def _standin(monkeypatch):
    """The Bybit-shaped venue (``bybitlike``: ids not consecutive, book history) is registered."""
    register_standin(monkeypatch)


def _by_name(outcomes):
    return {o.name: o for o in outcomes}


@pytest.fixture(scope="module")
def day():
    """A whole Bybit-shaped day: 1440 active minutes, and the venue's candles of them."""
    trades = bybit_trades(START, 1440, per_minute=6, seed=7)
    return trades, bybit_candles(trades)


def _trades_audit(trades, candles, **kw):
    return _by_name(audit_dataset("trades", trades, START, END, AFTER, S, candles=candles, **kw))


def test_clean_day_passes_on_candle_evidence_and_no_id_gap_check(day):
    trades, candles = day
    assert (np.diff(np.sort(trades["agg_trade_id"].to_numpy())) > 1).any()  # ids skip by nature
    outs = _trades_audit(trades, candles)
    gap = outs["trades_id_continuous"]
    assert gap.status == "not_applicable" and "not consecutive" in gap.not_applicable
    ev = outs[CANDLE_EVIDENCE_CHECK]
    assert ev.status == "passed", ev.examples
    assert ev.extra["evidence"] == ["candle_coverage", "candle_volume"]
    assert ev.counts["candle_minutes"] == ev.counts["traded_minutes"] == 1440
    assert ev.checked == 1440 and ev.offending == 0
    assert all(o.passed for o in outs.values()), {n: o.examples for n, o in outs.items()}


def test_a_removed_minute_is_missing_and_named(day):
    trades, candles = day
    gone = START + 600 * MINUTE_MS
    ms = trades["trade_time"].astype("datetime64[ms, UTC]").astype("int64")
    cut = trades[(ms < gone) | (ms >= gone + MINUTE_MS)].reset_index(drop=True)
    ev = _trades_audit(cut, candles)[CANDLE_EVIDENCE_CHECK]
    assert ev.status == "failed" and ev.severity == "ERROR"
    assert ev.counts["missing_minutes"] == 1 and ev.counts["short_minutes"] == 0
    assert ev.examples[0]["start_ms"] == gone and ev.examples[0]["end_ms"] == gone + MINUTE_MS
    assert ev.counts["volume_missing"] > 0


def test_one_lost_trade_and_one_foreign_trade_show_in_volume(day):
    trades, candles = day
    lost = trades.drop(index=1234).reset_index(drop=True)
    ev = _trades_audit(lost, candles)[CANDLE_EVIDENCE_CHECK]
    assert ev.counts["short_minutes"] == 1 and ev.counts["missing_minutes"] == 0
    assert ev.examples[0]["issue"] == "volume short"
    extra = trades.iloc[[99]].assign(trade_id="00000000-0000-0000-0000-000000000001")
    doubled = pd.concat([trades, extra], ignore_index=True)
    outs = _trades_audit(doubled, candles)
    assert outs[CANDLE_EVIDENCE_CHECK].counts["excess_minutes"] == 1
    assert outs["trades_unique"].passed  # another id: only the candle's volume can tell


def test_archive_and_ws_rows_of_one_day_order_and_dedup_by_trade_id(day):
    trades, candles = day
    half = len(trades) // 2
    mixed = pd.concat([as_archive(trades.iloc[:half]), trades.iloc[half:]], ignore_index=True)
    outs = _trades_audit(mixed, candles)
    assert all(o.passed for o in outs.values()), {n: o.examples for n, o in outs.items()}
    twice = pd.concat([mixed, as_archive(trades.iloc[[half + 3]])], ignore_index=True)
    unique = _trades_audit(twice, candles)["trades_unique"]
    assert unique.offending == 1
    assert unique.examples[0]["trade_id"] == trades["trade_id"].iloc[half + 3]


def test_seq_going_back_in_time_is_out_of_order(day):
    trades, _ = day
    bad = trades.copy()
    bad.loc[500, "agg_trade_id"] = bad.loc[10, "agg_trade_id"]
    o = _by_name(audit_trades(bad, S)[1])["trades_time_ordered"]
    assert o.offending == 1


def test_without_candles_the_evidence_is_not_applicable_and_says_so(day):
    trades, _ = day
    ev = _trades_audit(trades, CANDLES.empty_frame())[CANDLE_EVIDENCE_CHECK]
    assert ev.status == "not_applicable" and "no closed 1m candle" in ev.not_applicable


def test_binance_trades_are_judged_by_ids_as_before():
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    trades = trades_for_candles(candles)
    outs = _trades_audit(trades, candles)
    assert outs["trades_id_continuous"].status == "passed"
    assert outs["trades_id_continuous"].extra["evidence"] == ["consecutive_trade_ids"]
    assert outs[CANDLE_EVIDENCE_CHECK].status == "not_applicable"
    gapped = trades.drop(index=[10, 11]).reset_index(drop=True)
    assert _trades_audit(gapped, candles)["trades_id_continuous"].counts["missing_ids"] == 2


def test_candles_without_trade_counts_compare_prices_and_volume_only(day):
    trades, candles = day
    o = candles_match_trades(candles, TradeArrays.from_frame(trades), START, END)
    assert o.passed and o.offending == 0, o.examples
    assert "trade_count" in o.note and "mismatch_trade_count" not in o.counts
    assert o.counts["mismatch_volume"] == 0
    shifted = candles.copy()
    shifted.loc[5, "volume"] += 0.001
    assert candles_match_trades(shifted, TradeArrays.from_frame(trades), START, END).offending == 1


def test_reconcile_matches_bybit_sources_by_trade_id(day):
    trades, _ = day
    ws, archive = trades.iloc[:3000], as_archive(trades.iloc[1000:4000])
    o = reconcile("trades", {"ws": ws, "archive": archive}, "trade_time")
    pair = o.extra["pairs"]["archive~ws"]
    assert o.offending == 0 and pair["id_gaps"] == 0 and pair["value_mismatches"] == 0
    moved = archive.copy()
    moved.loc[moved.index[5], "price"] += 1.0
    assert reconcile("trades", {"ws": ws, "archive": moved}, "trade_time").offending == 1


def _empty_depth():
    return DEPTH.empty_frame()


def test_depth_before_the_ingest_is_judged_only_where_book_history_exists():
    started = END + 5 * 86_400_000
    binance = audit_dataset("depth", _empty_depth(), START, END, AFTER, S, [], started)
    assert all(o.status == "not_applicable" for o in binance)
    bybit = _by_name(
        audit_dataset("depth", _empty_depth(), START, END, AFTER, S, [], started, exchange=STANDIN)
    )
    assert bybit["depth_coverage"].status == "failed"
    assert bybit["depth_coverage"].counts["coverage"] == 0.0


def test_the_volume_tolerance_is_a_setting():
    assert audit_settings({}).trades_volume_rtol == 1e-9
    assert audit_settings({"PETROSA_TRADES_VOLUME_RTOL": "1e-6"}).trades_volume_rtol == 1e-6


def _real_minute():
    """The real capture's 21:27 minute: its trades up to the last kline.1 update of BTCUSDT,
    and that update as the minute's candle (Bybit sends the candle so far, ``confirm`` false)."""
    trades, kline = [], None
    for line in (FIXTURES / "linear_publicTrade.jsonl").read_bytes().splitlines():
        m = orjson.loads(line)
        for i, t in enumerate(m["data"]):
            if t["s"] == "BTCUSDT":
                trades.append((t["i"], t["seq"] * 1000 + i, float(t["p"]), float(t["v"]), t["T"]))
    for line in (FIXTURES / "linear_kline.jsonl").read_bytes().splitlines():
        m = orjson.loads(line)
        for k in m["data"]:
            if m["topic"] == "kline.1.BTCUSDT" and k["start"] == 1786310820000:
                kline = k  # the last update of the minute in the capture
    frame = pd.DataFrame(trades, columns=["trade_id", "agg_trade_id", "price", "quantity", "T"])
    frame = frame[(frame["T"] >= kline["start"]) & (frame["T"] <= kline["timestamp"])]
    frame = frame.assign(
        exchange=STANDIN,
        symbol="BTCUSDT",
        first_trade_id=frame["agg_trade_id"],
        last_trade_id=frame["agg_trade_id"],
        trade_time=pd.to_datetime(frame["T"], unit="ms", utc=True),
        is_buyer_maker=False,
        source="ws",
        received_at=pd.NaT,
    )
    candle = pd.DataFrame(
        [
            {
                "exchange": "bybitlike",
                "symbol": "BTCUSDT",
                "interval": "1m",
                "open_time": pd.Timestamp(kline["start"], unit="ms", tz="UTC"),
                "close_time": pd.Timestamp(kline["end"], unit="ms", tz="UTC"),
                **{k: float(kline[k]) for k in ("open", "high", "low", "close", "volume")},
                "quote_volume": float(kline["turnover"]),
                "trade_count": 0,
                "taker_buy_volume": 0.0,
                "taker_buy_quote_volume": 0.0,
                "source": "ws",
                "received_at": pd.NaT,
            }
        ]
    )
    return conform(frame, TRADES), conform(candle, CANDLES), kline["start"]


def test_real_bybit_minute_volume_equals_its_kline_within_the_tolerance():
    trades, candle, start = _real_minute()
    assert len(trades) > 20 and trades["trade_id"].str.len().eq(36).all()  # UUIDs
    t = TradeArrays.from_frame(trades)
    ok = trades_candle_evidence(t, candle, start, start + MINUTE_MS, start + MINUTE_MS, 1e-9)
    assert ok.passed and ok.checked == 1, ok.examples
    smallest = trades["quantity"].idxmin()  # one lost 0.001 BTC fill is seen
    lost = TradeArrays.from_frame(trades.drop(index=smallest))
    bad = trades_candle_evidence(lost, candle, start, start + MINUTE_MS, start + MINUTE_MS, 1e-9)
    assert bad.counts["short_minutes"] == 1
