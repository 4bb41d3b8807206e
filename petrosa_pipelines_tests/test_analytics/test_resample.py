"""Multi-timeframe candles against exact decimal references built from real Binance data."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import resample
from petrosa_pipelines.analytics._exact import decimal_places, group_sum, group_sum_product
from petrosa_pipelines_tests.test_analytics import realdata

SUM_FIELDS = ["volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"]


def reference_klines(rows: list[dict], step_ms: int) -> list[dict]:
    """Binance's rule for a longer kline, in Decimal: first open, max, min, last close, sums."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["open_time"] // step_ms * step_ms, []).append(r)
    out = []
    for start, g in sorted(groups.items()):
        out.append(
            {
                "open_time": start,
                "close_time": start + step_ms - 1,
                "open": g[0]["open"],
                "high": max(r["high"] for r in g),
                "low": min(r["low"] for r in g),
                "close": g[-1]["close"],
                **{k: sum((r[k] for r in g), Decimal(0)) for k in SUM_FIELDS},
                "count": sum(r["count"] for r in g),
                "n": len(g),
            }
        )
    return out


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize("day", realdata.VISION_DAYS)
def test_1m_klines_aggregate_exactly_to_the_exchange_rule(symbol, day):
    rows = realdata.vision_rows(symbol, day)
    frame = realdata.candles_frame(rows, symbol)
    for interval in resample.CANDLE_INTERVALS:
        step = resample.INTERVAL_MS[interval]
        ours = resample.resample_candles(frame, interval)
        ref = reference_klines(rows, step)
        assert len(ours) == 86_400_000 // step == len(ref)
        assert ours["is_complete"].all()
        for got, want in zip(ours.itertuples(index=False), ref, strict=True):
            assert got.open_time.value // 1_000_000 == want["open_time"]
            assert got.close_time.value // 1_000_000 == want["close_time"]
            for k in ("open", "high", "low", "close", *SUM_FIELDS):
                # float(Decimal) is the float nearest to the exact decimal: no tolerance
                assert getattr(got, k) == float(want[k]), (interval, k, got.open_time)
            assert got.trade_count == want["count"]
            assert got.source_rows == want["n"]


def test_a_range_of_days_resamples_each_day_as_that_day_alone():
    """Sums are exact per UTC day: one day holding a computed (non-decimal) volume falls back to
    float sums for itself only, and a range gives every day's bars bit for bit (the API
    resamples ranges, the candles_from_1m asset single days)."""
    clean = realdata.vision_candles("BTCUSDT", "2022-01-01")
    odd = realdata.vision_candles("BTCUSDT", "2022-05-01")
    odd.loc[100, "quote_volume"] = 0.1 + 0.2  # 0.30000000000000004: no decimal has this float
    whole = resample.resample_candles(pd.concat([clean, odd], ignore_index=True), "1h")
    alone = pd.concat([resample.resample_candles(d, "1h") for d in (clean, odd)], ignore_index=True)
    bits = whole[SUM_FIELDS].to_numpy().view("int64")
    assert (bits == alone[SUM_FIELDS].to_numpy().view("int64")).all()
    ref = reference_klines(realdata.vision_rows("BTCUSDT", "2022-01-01"), 3_600_000)
    assert list(whole["quote_volume"].iloc[:24]) == [float(r["quote_volume"]) for r in ref]


def test_naive_float_sum_would_not_be_exact():
    """The reason for _exact: plain float sums of real volumes miss the decimal sum."""
    rows = realdata.vision_rows("BTCUSDT", "2022-01-01")
    misses = 0
    for start in range(0, 1440, 60):
        hour = rows[start : start + 60]
        exact = float(sum((r["quote_volume"] for r in hour), Decimal(0)))
        naive = float(np.sum([float(r["quote_volume"]) for r in hour]))
        misses += naive != exact
    assert misses > 0


def test_missing_minute_makes_its_hour_and_day_partial():
    frame = realdata.vision_candles("BTCUSDT", "2022-01-01").drop(index=[90]).reset_index(drop=True)
    complete = resample.resample_candles(frame, "1h")
    assert len(complete) == 23
    assert pd.Timestamp("2022-01-01 01:00", tz="UTC") not in set(complete["open_time"])
    both = resample.resample_candles(frame, "1h", include_partial=True)
    partial = both[~both["is_complete"]]
    assert list(partial["source_rows"]) == [59]
    assert resample.resample_candles(frame, "1d").empty


def test_as_of_flags_intervals_that_have_not_ended():
    frame = realdata.vision_candles("BTCUSDT", "2022-01-01")
    as_of = pd.Timestamp("2022-01-01 05:30", tz="UTC")
    out = resample.resample_candles(
        frame[frame["open_time"] < as_of], "1h", as_of=as_of, include_partial=True
    )
    assert list(out["is_complete"]) == [True] * 5 + [False]
    assert len(resample.resample_candles(frame[frame["open_time"] < as_of], "4h", as_of=as_of)) == 1


def reference_trade_candles(rows: list[dict], step_ms: int) -> dict[int, dict]:
    groups: dict[int, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["T"], r["id"])):
        groups.setdefault(r["T"] // step_ms * step_ms, []).append(r)
    return {
        start: {
            "open": g[0]["p"],
            "high": max(r["p"] for r in g),
            "low": min(r["p"] for r in g),
            "close": g[-1]["p"],
            "volume": sum((r["q"] for r in g), Decimal(0)),
            "quote_volume": sum((r["p"] * r["q"] for r in g), Decimal(0)),
            "taker_buy_volume": sum((r["q"] for r in g if not r["m"]), Decimal(0)),
            "taker_buy_quote_volume": sum((r["p"] * r["q"] for r in g if not r["m"]), Decimal(0)),
            "trade_count": sum(r.get("l", r["id"]) - r.get("f", r["id"]) + 1 for r in g),
        }
        for start, g in groups.items()
    }


@pytest.mark.parametrize("interval", resample.TRADE_INTERVALS)
def test_trade_candles_match_decimal_reference_on_real_trades(interval):
    rows = realdata.hft_trade_rows()
    step = resample.INTERVAL_MS[interval]
    ours = resample.candles_from_trades(realdata.trades_frame(rows), interval)
    ref = reference_trade_candles(rows, step)
    last_trade = max(r["T"] for r in rows)
    starts = ours["open_time"].map(lambda t: t.value // 1_000_000)
    # complete means a later trade was seen: the last interval with trades is never in
    assert starts.max() + step <= last_trade
    assert ours["is_complete"].all()
    prev_close = None
    for start, got in zip(starts, ours.itertuples(index=False), strict=True):
        want = ref.get(start)
        if want is None:  # a quiet interval: flat at the previous close, nothing traded
            assert got.open == got.high == got.low == got.close == prev_close
            assert got.volume == 0 and got.trade_count == 0 and got.source_rows == 0
        else:
            for k in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "taker_buy_volume",
                "taker_buy_quote_volume",
            ):
                assert getattr(got, k) == float(want[k]), (interval, start, k)
            assert got.trade_count == want["trade_count"]
        prev_close = got.close
    # a grid with no holes
    assert (np.diff(starts.to_numpy()) == step).all()


def test_aggregate_trades_count_underlying_trades():
    rows = realdata.agg_trade_rows("SUSHIUSDT")
    assert any(r["l"] > r["f"] for r in rows)
    frame = realdata.trades_frame(rows, "SUSHIUSDT")
    as_of = pd.Timestamp(max(r["T"] for r in rows) // 1000 * 1000 + 1000, unit="ms", tz="UTC")
    ours = resample.candles_from_trades(frame, "30s", as_of=as_of, include_partial=True)
    ref = reference_trade_candles(rows, 30_000)
    traded = ours[ours["source_rows"] > 0]
    assert list(traded["trade_count"]) == [ref[k]["trade_count"] for k in sorted(ref)]
    assert ours["trade_count"].sum() == sum(r["l"] - r["f"] + 1 for r in rows)


def test_trade_candle_textbook_case_and_as_of():
    frame = realdata.trades_frame(
        [
            {"id": 1, "T": 1_000, "p": Decimal("10"), "q": Decimal("1"), "m": False},
            {"id": 2, "T": 1_500, "p": Decimal("12"), "q": Decimal("2"), "m": True},
            {"id": 3, "T": 1_900, "p": Decimal("9"), "q": Decimal("1"), "m": False},
            {"id": 4, "T": 4_100, "p": Decimal("11"), "q": Decimal("3"), "m": True},
        ]
    )
    out = resample.candles_from_trades(frame, "1s")  # complete up to the last trade seen
    assert list(out["open_time"].map(lambda t: t.value // 1_000_000)) == [1_000, 2_000, 3_000]
    first = out.iloc[0]
    assert (first.open, first.high, first.low, first.close) == (10, 12, 9, 9)
    assert (first.volume, first.quote_volume, first.taker_buy_volume) == (4, 43, 2)
    assert list(out["close"]) == [9, 9, 9] and list(out["volume"]) == [4, 0, 0]
    closed = resample.candles_from_trades(
        frame, "1s", as_of=pd.Timestamp(5_000, unit="ms", tz="UTC")
    )
    assert len(closed) == 4 and closed.iloc[-1].close == 11
    assert closed["close_time"].iloc[0] == pd.Timestamp(1_999, unit="ms", tz="UTC")


def test_exact_sums_detect_decimals_and_fall_back():
    assert decimal_places(np.array([46210.57, 1.5, 3.0])) == 2
    assert decimal_places(np.array([0.1 + 0.2])) is None  # 0.30000000000000004
    x = np.array([0.1] * 10)
    assert group_sum(x, np.array([0]))[0] == 1.0
    assert sum(x.tolist()) != 1.0  # sequential float sum: 0.9999999999999999
    assert group_sum_product(np.array([0.1]), np.array([0.3]), np.array([0]))[0] == 0.03
    computed = np.array([1 / 3, 2 / 3])
    assert group_sum(computed, np.array([0]))[0] == pytest.approx(1.0)


def test_unknown_interval_is_rejected():
    with pytest.raises(ValueError, match="unknown interval"):
        resample.interval_ms("2m")
