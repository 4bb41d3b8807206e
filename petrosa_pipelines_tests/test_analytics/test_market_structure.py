"""Volume, liquidity, seasonality, correlation and funding: real data against independent
Decimal or plain-Python computations, and textbook cases with known answers."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import correlation, funding, liquidity, seasonality, volume
from petrosa_pipelines.catalog.depth_layout import LEVEL_COLUMNS, to_long
from petrosa_pipelines_tests.test_analytics import realdata


def test_vwap_and_imbalance_match_decimal_on_real_trades():
    rows = realdata.hft_trade_rows()
    frame = realdata.trades_frame(rows)
    notional = sum((r["p"] * r["q"] for r in rows), Decimal(0))
    qty = sum((r["q"] for r in rows), Decimal(0))
    assert volume.vwap(frame) == pytest.approx(float(notional / qty), rel=1e-15)
    stats = volume.volume_stats(frame, "1m")
    buy = sum((r["q"] for r in rows if not r["m"]), Decimal(0))
    assert stats["volume"].sum() == pytest.approx(float(qty), rel=1e-12)
    assert stats["taker_buy_volume"].sum() == pytest.approx(float(buy), rel=1e-12)
    minute = 1680652740000  # 23:59 UTC, fully inside the recording
    in_minute = [r for r in rows if r["T"] // 60_000 * 60_000 == minute]
    b = sum((r["q"] for r in in_minute if not r["m"]), Decimal(0))
    s = sum((r["q"] for r in in_minute if r["m"]), Decimal(0))
    row = stats[stats["bucket_start"] == pd.Timestamp(minute, unit="ms", tz="UTC")].iloc[0]
    assert row["taker_buy_volume"] == float(b) and row["taker_sell_volume"] == float(s)
    assert row["taker_imbalance"] == pytest.approx(float((b - s) / (b + s)), rel=1e-12)
    assert row["trade_count"] == len(in_minute)


def test_imbalance_textbook():
    assert volume.taker_imbalance(3.0, 1.0) == 0.5
    assert volume.taker_imbalance(2.0, 0.0) == 1.0
    assert np.isnan(volume.taker_imbalance(0.0, 0.0))


def test_volume_profile_buckets_and_point_of_control():
    frame = realdata.trades_frame(
        [
            {"id": i, "T": i, "p": Decimal(p), "q": Decimal(q), "m": m}
            for i, (p, q, m) in enumerate(
                [
                    ("100.0", "1", False),
                    ("100.9", "2", True),
                    ("101.0", "5", False),
                    ("102.5", "1", True),
                ]
            )
        ]
    )
    prof = volume.volume_profile(frame, bucket_width=1.0)
    assert list(prof["price_low"]) == [100.0, 101.0, 102.0]
    assert list(prof["volume"]) == [3.0, 5.0, 1.0]
    assert list(prof["is_poc"]) == [False, True, False]
    assert list(prof["taker_sell_volume"]) == [2.0, 0.0, 1.0]
    assert prof["volume_share"].sum() == pytest.approx(1.0)


def test_volume_profile_on_real_trades_conserves_volume():
    rows = realdata.hft_trade_rows()
    prof = volume.volume_profile(realdata.trades_frame(rows), target_buckets=20)
    assert prof["volume"].sum() == pytest.approx(float(sum(r["q"] for r in rows)), rel=1e-12)
    assert prof["trade_count"].sum() == len(rows)
    width = prof["price_high"].iloc[0] - prof["price_low"].iloc[0]
    assert width in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # a 1-2-5 width
    assert prof["is_poc"].sum() == 1


def test_trade_size_distribution_textbook_and_real():
    frame = realdata.trades_frame(
        [
            {"id": 1, "T": 1, "p": Decimal("10"), "q": Decimal("0.5"), "m": False},  # 5
            {"id": 2, "T": 2, "p": Decimal("10"), "q": Decimal("1"), "m": False},  # 10 -> [10, 100)
            {"id": 3, "T": 3, "p": Decimal("10"), "q": Decimal("200"), "m": True},  # 2000
        ]
    )
    dist = volume.trade_size_distribution(frame)
    assert list(dist["trade_count"][:4]) == [1, 1, 0, 1]
    assert dist["quote_share"].iloc[3] == pytest.approx(2000 / 2015)
    real = volume.trade_size_distribution(realdata.trades_frame(realdata.hft_trade_rows()))
    assert real["trade_count"].sum() == 2197 and real["count_share"].sum() == pytest.approx(1)


def test_book_metrics_match_decimal_on_the_real_1000_level_snapshot():
    snap = realdata.depth_snapshot()
    frame = realdata.depth_frame([(snap["time"], snap["bids"], snap["asks"])])
    for band in (1.0, 10.0, 50.0):
        got = liquidity.book_metrics(frame, band_bps=band).iloc[0]
        bid, ask = snap["bids"][0][0], snap["asks"][0][0]
        mid = (bid + ask) / 2
        lo, hi = mid * (1 - Decimal(band) / 10_000), mid * (1 + Decimal(band) / 10_000)
        bid_depth = sum(q for p, q in snap["bids"] if p >= lo)
        ask_depth = sum(q for p, q in snap["asks"] if p <= hi)
        assert got["spread_bps"] == pytest.approx(float((ask - bid) / mid * 10_000), rel=1e-9)
        assert got["bid_depth"] == pytest.approx(float(bid_depth), rel=1e-12)
        assert got["ask_depth"] == pytest.approx(float(ask_depth), rel=1e-12)
        assert got["depth_imbalance"] == pytest.approx(
            float((bid_depth - ask_depth) / (bid_depth + ask_depth)), rel=1e-9
        )
        (qb, qa) = (snap["bids"][0][1], snap["asks"][0][1])
        assert got["top_imbalance"] == pytest.approx(float((qb - qa) / (qb + qa)), rel=1e-12)


def test_spread_of_real_book_ticker_stream_per_snapshot_and_per_interval():
    rows = realdata.book_ticker_rows()
    # one snapshot per event time (the stream can repeat a T: keep the last update)
    last = {r["T"]: r for r in rows}
    books = [(t, [(r["b"], r["B"])], [(r["a"], r["A"])]) for t, r in sorted(last.items())]
    metrics = liquidity.book_metrics(realdata.depth_frame(books))
    want = [
        float((r["a"] - r["b"]) / ((r["a"] + r["b"]) / 2) * 10_000) for _, r in sorted(last.items())
    ]
    assert metrics["spread_bps"].to_numpy() == pytest.approx(want, rel=1e-9)
    minutes = liquidity.per_interval(metrics, 10_000)  # the 2,000 messages span ~30 s
    first_minute = metrics[metrics["snapshot_time"] < minutes["bucket_start"].iloc[1]]
    assert minutes["spread_bps"].iloc[0] == pytest.approx(first_minute["spread_bps"].mean())
    assert minutes["snapshots"].sum() == len(metrics)


def test_liquidity_heatmap_is_mean_resting_quantity_per_snapshot():
    books = [
        (0, [(Decimal("99.5"), Decimal("2"))], [(Decimal("100.5"), Decimal("1"))]),
        (
            1_000,
            [(Decimal("99.5"), Decimal("4")), (Decimal("98.2"), Decimal("1"))],
            [(Decimal("100.5"), Decimal("3"))],
        ),
    ]
    heat = liquidity.liquidity_heatmap(realdata.depth_frame(books), 60_000, price_bucket=1.0)
    cell = heat.set_index(["price_low", "side"])["quantity"]
    assert cell[(99.0, "bid")] == 3.0  # (2 + 4) / 2 snapshots
    assert cell[(98.0, "bid")] == 0.5
    assert cell[(100.0, "ask")] == 2.0


def synthetic_book(snapshots: int = 80, seed: int = 7) -> pd.DataFrame:
    """A version 2 book with what the level matrices must get right: ragged sides (1-9
    levels), one-sided books, a snapshot without any level, rows out of time order, and two
    rows at one time (two symbols in one frame: one book, as their long rows were)."""
    rng = np.random.default_rng(seed)
    books = []
    for i in range(snapshots):
        mid = 100.0 + 0.01 * int(rng.integers(-40, 40))
        n_bid, n_ask = (int(k) for k in rng.integers(1, 10, 2))
        bid_gaps = np.cumsum(rng.integers(1, 4, n_bid))
        ask_gaps = np.cumsum(rng.integers(1, 4, n_ask))
        bids = [(round(mid - 0.01 * g, 2), float(rng.integers(1, 5_000)) / 1_000) for g in bid_gaps]
        asks = [(round(mid + 0.01 * g, 2), float(rng.integers(1, 5_000)) / 1_000) for g in ask_gaps]
        books.append((1_704_240_000_000 + 1_000 * i, bids, asks))
    books[3], books[4] = (books[3][0], [], books[3][2]), (books[4][0], books[4][1], [])
    books[5] = (books[5][0], [], [])  # no book at all: no snapshot
    frame = realdata.depth_frame(books)
    extra = realdata.depth_frame([(books[9][0], [(99.9, 1.5), (99.8, 2.0)], [(100.3, 0.5)])])
    frame = pd.concat([frame, extra.assign(symbol="ETHUSDT")], ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def reference_book_metrics(long: pd.DataFrame, band_bps: float) -> pd.DataFrame:
    """Per snapshot time, straight from the version 1 rows (one per level)."""
    rows = []
    for time, snap in long.groupby("snapshot_time", sort=True):
        bids, asks = snap[snap["side"] == "bid"], snap[snap["side"] == "ask"]
        bid, ask = bids["price"].max(), asks["price"].min()
        mid = (bid + ask) / 2
        bid_depth = bids.loc[bids["price"] >= mid * (1 - band_bps / 1e4), "quantity"].sum()
        ask_depth = asks.loc[asks["price"] <= mid * (1 + band_bps / 1e4), "quantity"].sum()
        top_bid = bids.loc[bids["price"] == bid, "quantity"].sum()
        top_ask = asks.loc[asks["price"] == ask, "quantity"].sum()
        both, top = bid_depth + ask_depth, top_bid + top_ask
        rows.append(
            {
                "snapshot_time": time,
                "best_bid": bid,
                "best_ask": ask,
                "mid": mid,
                "spread_bps": (ask - bid) / mid * 1e4,
                "bid_depth": bid_depth,
                "ask_depth": ask_depth,
                "depth_imbalance": (bid_depth - ask_depth) / both if both else np.nan,
                "top_imbalance": (top_bid - top_ask) / top if top else np.nan,
            }
        )
    out = pd.DataFrame(rows).astype({c: "float64" for c in liquidity.BOOK_COLUMNS[1:]})
    return out.astype({"snapshot_time": "datetime64[ms, UTC]"})


@pytest.mark.parametrize("band_bps", [1.0, 10.0, 50.0])
def test_book_metrics_on_the_level_lists_equal_a_reference_on_the_long_rows(band_bps):
    frame = synthetic_book()
    got = liquidity.book_metrics(frame, band_bps)
    want = reference_book_metrics(to_long(frame), band_bps)
    assert len(got) == frame["snapshot_time"].nunique() - 1  # the empty book is no snapshot
    assert got["best_bid"].isna().any() and got["best_ask"].isna().any()  # one-sided books
    assert (got["bid_depth"] > 0).any() and (got["bid_depth"] < got["bid_depth"].max()).any()
    pd.testing.assert_frame_equal(got, want, rtol=1e-12, atol=0)


def reference_heatmap(long: pd.DataFrame, bucket_ms: int, width: float) -> pd.DataFrame:
    """Sum per (time bucket, price bucket, side) / distinct snapshot times of the bucket."""
    f = long.assign(
        bucket_start=long["snapshot_time"].dt.floor(f"{bucket_ms}ms"),
        idx=np.floor(long["price"] / width + 1e-9).astype("int64"),
        side=long["side"].astype("str"),
    )
    snaps = f.groupby("bucket_start")["snapshot_time"].nunique()
    out = f.groupby(["bucket_start", "idx", "side"])["quantity"].sum().reset_index()
    out["quantity"] = out["quantity"] / out["bucket_start"].map(snaps).to_numpy()
    out["price_low"], out["price_high"] = out["idx"] * width, (out["idx"] + 1) * width
    return out[liquidity.HEATMAP_COLUMNS]


@pytest.mark.parametrize(
    ("bucket_ms", "price_bucket"),
    [(10_000, None), (60_000, 0.05), (7_000, 1e-5)],  # 1e-5: too many cells to count densely
)
def test_heatmap_on_the_level_lists_equals_a_reference_on_the_long_rows(bucket_ms, price_bucket):
    frame = synthetic_book()
    long = to_long(frame)
    got = liquidity.liquidity_heatmap(frame, bucket_ms, price_bucket, target_price_buckets=20)
    width = price_bucket or volume.nice_bucket_width(long["price"].min(), long["price"].max(), 20)
    want = reference_heatmap(long, bucket_ms, width)
    assert got["bucket_start"].nunique() > 1 and set(got["side"]) == {"ask", "bid"}
    pd.testing.assert_frame_equal(got, want, rtol=1e-12, atol=0)


def test_a_book_without_levels_gives_no_rows():
    """No row, or rows whose books hold no level (v1: no row at all): nothing, not NaN rows."""
    frame = synthetic_book()
    no_levels = frame.assign(
        **{c: [np.empty(0)] * len(frame) for c in LEVEL_COLUMNS["bid"] + LEVEL_COLUMNS["ask"]}
    )
    for depth in (frame.iloc[0:0], no_levels):
        book = liquidity.book_metrics(depth)
        assert book.empty and list(book.columns) == liquidity.BOOK_COLUMNS
        assert liquidity.per_interval(book).empty
        heat = liquidity.liquidity_heatmap(depth)
        assert heat.empty and list(heat.columns) == liquidity.HEATMAP_COLUMNS


def test_amihud_textbook_and_real():
    c = pd.DataFrame({"close": [100.0, 101.0, 99.99, 99.99], "quote_volume": [5.0, 2e6, 1e6, 0]})
    terms = liquidity.amihud_terms(c)
    assert terms.iloc[1] == pytest.approx(0.01 / 2e6 * 1e6)
    assert terms.iloc[2] == pytest.approx(0.01 / 1e6 * 1e6)
    assert np.isnan(terms.iloc[3])  # nothing traded: excluded, not zero
    rows = realdata.vision_rows("BTCUSDT", "2022-05-01")
    ref = [
        abs(float(b["close"] / a["close"] - 1)) / float(b["quote_volume"]) * 1e6
        for a, b in zip(rows, rows[1:], strict=False)
        if b["quote_volume"] > 0
    ]
    got = liquidity.amihud(realdata.candles_frame(rows, "BTCUSDT"))
    assert got == pytest.approx(statistics.fmean(ref), rel=1e-9)


def test_seasonality_matches_groupby_on_real_klines():
    frame = pd.concat(
        [realdata.vision_candles("BTCUSDT", d) for d in realdata.VISION_DAYS], ignore_index=True
    )
    prof = seasonality.profiles(frame).set_index(["profile", "bucket"])
    rows = [r for d in realdata.VISION_DAYS for r in realdata.vision_rows("BTCUSDT", d)]
    by_hour: dict[int, list[float]] = {}
    for a, b in zip(rows, rows[1:], strict=False):
        hour = (b["open_time"] // 3_600_000) % 24
        by_hour.setdefault(hour, []).append(math.log(float(b["close"]) / float(a["close"])))
    for hour, rets in by_hour.items():
        got = prof.loc[("hour_of_day", hour)]
        assert got["bars"] == len(rets)
        assert got["mean_return_bps"] == pytest.approx(statistics.fmean(rets) * 1e4, abs=1e-9)
        want_vol = math.sqrt(statistics.fmean([r * r for r in rets]) * 525_600)
        assert got["volatility"] == pytest.approx(want_vol, rel=1e-9)
    # 2022-01-01 was a Saturday, 2022-05-01 a Sunday, 2023-11-14 a Tuesday
    days = prof.loc["day_of_week"]
    assert list(days.index[days["bars"] > 0]) == [1, 5, 6]


BTC, ETH = "binance-usdm:BTCUSDT", "binance-usdm:ETHUSDT"  # realdata: Binance Vision candles


def test_daily_and_pooled_correlation_on_real_btc_eth():
    days = []
    for d in realdata.VISION_DAYS:
        both = pd.concat([realdata.vision_candles(s, d) for s in ("BTCUSDT", "ETHUSDT")])
        wide = correlation.returns_wide(both)  # columns are instrument ids
        pairs = correlation.pair_statistics(wide)
        rho = np.corrcoef(wide[BTC], wide[ETH])[0, 1]
        assert pairs["correlation"].iloc[0] == pytest.approx(rho, rel=1e-9)
        assert 0.5 < rho < 1.0
        days.append((wide, pairs))
    pooled = correlation.pool(pd.concat([p for _, p in days]))
    all_returns = pd.concat([w for w, _ in days])
    rho_all = np.corrcoef(all_returns[BTC], all_returns[ETH])[0, 1]
    assert pooled["correlation"].iloc[0] == pytest.approx(rho_all, rel=1e-9)
    assert pooled["n"].iloc[0] == 3 * 1439 and pooled["days"].iloc[0] == 3
    m = correlation.matrix(pooled)
    assert m.loc[ETH, BTC] == m.loc[BTC, ETH] and m.iloc[0, 0] == 1


def test_correlation_textbook_and_constant_series():
    assert correlation.pearson_from_sums(3, 6, -6, 14, 14, -14) == pytest.approx(-1.0)
    assert math.isnan(correlation.pearson_from_sums(3, 3, 6, 3, 14, 6))  # x constant


def test_funding_textbook():
    times = pd.to_datetime(
        ["2024-01-01 00:00:00.000", "2024-01-01 08:00:00.006", "2024-01-01 16:00:00.000"], utc=True
    )
    f = pd.DataFrame({"funding_time": times, "funding_rate": [0.0001, 0.0001, -0.0002]})
    out = funding.funding_analytics(f)
    assert (out["interval_hours"] == 8).all()  # a few ms off the hour still reads as 8 h
    assert out["annualised_rate"].iloc[0] == pytest.approx(0.0001 * 1095)
    assert out["cumulative_rate"].iloc[-1] == pytest.approx(0.0)
    assert out["cumulative_compounded"].iloc[-1] == pytest.approx(1.0001 * 1.0001 * 0.9998 - 1)
    hourly = funding.funding_analytics(
        f.assign(funding_time=pd.date_range("2024-01-01", periods=3, freq="4h", tz="UTC"))
    )
    assert hourly["annualised_rate"].iloc[0] == pytest.approx(0.0001 * 2190)
