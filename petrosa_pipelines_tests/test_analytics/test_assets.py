"""The analytics assets materialise in-process on a lake in tmp_path from real upstream frames.

Upstream partitions are written straight into the lake the way the market-data assets would
write them; the market-data assets themselves appear as AssetSpecs (external to these runs).
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import ANALYTICS_ASSETS, charts, volatility
from petrosa_pipelines.analytics.assets import (
    CROSS_SYMBOL_KEYS,
    CROSS_VENUE_EXCHANGE,
    SYMBOL_DAY_KEYS,
    analytics_key,
)
from petrosa_pipelines.analytics.specs import ALL_SPECS
from petrosa_pipelines.catalog.depth_layout import ALL_LEVEL_COLUMNS
from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.lake import lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, DEPTH_KEY, FUNDING_KEY, TRADES_KEY
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines_tests.test_analytics import realdata
from resources.lake_io_manager import LakeIOManager

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
UPSTREAM = [
    dg.AssetSpec(k, partitions_def=daily_symbol_partitions, metadata={"exchange": "binance"})
    for k in (TRADES_KEY, CANDLES_KEY, DEPTH_KEY, FUNDING_KEY)
]
BY_KEY = {a.key: a for a in ANALYTICS_ASSETS}


def shift_ms(frame: pd.DataFrame, cols: list[str], delta: dt.timedelta) -> pd.DataFrame:
    out = frame.copy()
    for c in cols:
        out[c] = (out[c] + delta).astype("datetime64[ms, UTC]")
    return out


def write(io: LakeIOManager, key: dg.AssetKey, day: str, symbol: str, frame: pd.DataFrame):
    io.lake().write_frame(lake_path("/".join(key.path), "binance", symbol, day), frame)


def read(io: LakeIOManager, key: dg.AssetKey, day: str, symbol: str = "ALL") -> pd.DataFrame:
    """A partition file: an instrument's (Binance's), or a cross-symbol one (``ALL``, under
    the venue-neutral directory: those span every venue)."""
    exchange = CROSS_VENUE_EXCHANGE if symbol == "ALL" else "binance"
    return io.lake().read_frame(lake_path("/".join(key.path), exchange, symbol, day))


def upstream_day(io: LakeIOManager, day: str, symbol: str, source_day: str) -> None:
    """Real 1m candles of ``source_day`` re-dated to ``day``; real trades and books likewise."""
    for key, frame in upstream_frames(day, symbol, source_day).items():
        write(io, key, day, symbol, frame)


@functools.cache
def upstream_frames(day: str, symbol: str, source_day: str) -> dict[dg.AssetKey, pd.DataFrame]:
    """The upstream frames of one symbol-day, built once per test session."""
    target = dt.date.fromisoformat(day)
    out = {}
    shift = (target - dt.date.fromisoformat(source_day)).days
    out[CANDLES_KEY] = realdata.vision_candles(symbol, source_day, shift)
    trades = realdata.trades_frame(realdata.hft_trade_rows(), symbol)
    start = pd.Timestamp(target, tz="UTC")
    delta = start + pd.Timedelta(hours=12) - trades["trade_time"].min()
    out[TRADES_KEY] = shift_ms(trades, ["trade_time"], delta)
    ticks = realdata.book_ticker_rows()[:300]
    snap = realdata.depth_snapshot()
    books = [
        (r["T"], [(r["b"], r["B"]), *snap["bids"][1:20]], [(r["a"], r["A"]), *snap["asks"][1:20]])
        for r in ticks
    ]
    depth = realdata.depth_frame(books, symbol)
    delta = start + pd.Timedelta(hours=6) - depth["snapshot_time"].min()
    out[DEPTH_KEY] = shift_ms(depth, ["snapshot_time", "received_at"], delta)
    times = pd.date_range(start, periods=3, freq="8h", tz="UTC").astype("datetime64[ms, UTC]")
    out[FUNDING_KEY] = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "funding_time": times,
            "funding_rate": [0.0001, 0.00005, -0.00002],
            "mark_price": 40_000.0,
            "source": "rest",
            "received_at": times,
        }
    )
    return out


@pytest.fixture
def lake(tmp_path, dagster_instance):
    io = LakeIOManager(base_path=str(tmp_path / "lake"))
    for day, source in zip(DAYS, realdata.VISION_DAYS, strict=True):
        for symbol in SYMBOLS:
            upstream_day(io, day, symbol, source)
    dagster_instance.add_dynamic_partitions("symbols", SYMBOLS)
    return io, dagster_instance


def run(io, instance, keys, partition_key):
    result = dg.materialize(
        [*UPSTREAM, *ANALYTICS_ASSETS],
        partition_key=partition_key,
        instance=instance,
        resources={"io_manager": io},
        selection=dg.AssetSelection.assets(*keys),
    )
    assert result.success
    return result


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_every_symbol_day_asset_materialises_with_its_catalog_metadata(lake):
    io, instance = lake
    result = run(io, instance, SYMBOL_DAY_KEYS, "2024-01-03|BTCUSDT")
    events = {e.asset_key: e for e in result.get_asset_materialization_events()}
    for spec in ALL_SPECS:
        if not spec.per_symbol:
            continue
        key = analytics_key(spec.name)
        frame = read(io, key, "2024-01-03", "BTCUSDT")
        assert list(frame.columns) == [c.name for c in spec.columns], spec.name
        assert len(frame) > 0, spec.name
        meta = events[key].step_materialization_data.materialization.metadata
        assert meta["dagster/row_count"].value == len(frame)
        schema = meta["dagster/column_schema"].schema
        assert [c.name for c in schema.columns] == list(frame.columns)
        lineage = meta["dagster/column_lineage"].column_lineage.deps_by_column
        assert set(lineage) <= set(frame.columns) and lineage
        # the chart is a PNG under "chart: <what>"; its summary is short enough to show inline
        (chart,) = [v for k, v in meta.items() if k.startswith("chart: ")]
        # labelled with the instrument id (a legacy bare key is Binance USD-M's)
        assert chart.value.startswith("![binance-usdm:BTCUSDT 2024-01-03: "), spec.name
        assert charts.png_size(chart) == (960, 420), spec.name
        summary = meta["summary"].value
        assert summary.startswith("**binance-usdm:BTCUSDT 2024-01-03: ") and len(summary) < 1000
        if spec.time_column in frame.columns:
            assert meta["first_time"].value <= meta["last_time"].value


def test_rolling_windows_read_earlier_days_through_the_mapping(lake):
    io, instance = lake
    run(
        io,
        instance,
        [analytics_key(n) for n in ("volatility", "trend", "funding")],
        "2024-01-03|BTCUSDT",
    )
    vol = read(io, analytics_key("volatility"), "2024-01-03", "BTCUSDT").set_index("method")
    assert (vol["window_days"] == 3).all() and (vol["bars_window"] == 3 * 1440).all()
    window = pd.concat([read(io, CANDLES_KEY, d, "BTCUSDT") for d in DAYS], ignore_index=True)
    for method in volatility.METHODS:
        assert vol.loc[method, "volatility_window"] == pytest.approx(
            volatility.annualised_volatility(window, method), rel=1e-12
        )
        assert vol.loc[method, "volatility_day"] == pytest.approx(
            volatility.annualised_volatility(window.iloc[2880:], method), rel=1e-12
        )
    trend_frame = read(io, analytics_key("trend"), "2024-01-03", "BTCUSDT")
    assert len(trend_frame) == 1440 and trend_frame["sma_slow"].notna().all()  # warmed up
    fund = read(io, analytics_key("funding"), "2024-01-03", "BTCUSDT")
    assert len(fund) == 3
    assert fund["cumulative_rate"].iloc[0] == pytest.approx(2 * 0.00013 + 0.0001)


def test_a_missing_day_in_the_window_is_skipped(lake):
    io, instance = lake
    io.lake().delete(lake_path("market_data/candles", "binance", "ETHUSDT", "2024-01-02"))
    run(io, instance, [analytics_key("volatility")], "2024-01-03|ETHUSDT")
    vol = read(io, analytics_key("volatility"), "2024-01-03", "ETHUSDT")
    assert (vol["window_days"] == 2).all()


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_cross_symbol_correlation_per_day_and_rolling(lake):
    io, instance = lake
    for day in DAYS:
        run(io, instance, [analytics_key("correlation")], day)
    run(io, instance, [analytics_key("correlation_rolling")], "2024-01-03")
    daily = read(io, analytics_key("correlation"), "2024-01-02")
    assert list(daily[["symbol_a", "symbol_b"]].iloc[0]) == [f"binance-usdm:{s}" for s in SYMBOLS]
    rolling = read(io, analytics_key("correlation_rolling"), "2024-01-03")
    assert rolling["days"].iloc[0] == 3 and rolling["n"].iloc[0] == 3 * 1439
    returns = []
    for day in DAYS:
        both = pd.concat([read(io, CANDLES_KEY, day, s) for s in SYMBOLS])
        wide = both.pivot(index="open_time", columns="symbol", values="close")
        returns.append(np.log(wide).diff().iloc[1:])
    pooled = pd.concat(returns)
    want = np.corrcoef(pooled["BTCUSDT"], pooled["ETHUSDT"])[0, 1]
    assert rolling["correlation"].iloc[0] == pytest.approx(want, rel=1e-9)
    assert set(CROSS_SYMBOL_KEYS) == {
        analytics_key("correlation"),
        analytics_key("correlation_rolling"),
    }


def test_multi_timeframe_assets_only_emit_complete_intervals(lake):
    io, instance = lake
    day_candles = read(io, CANDLES_KEY, "2024-01-02", "ETHUSDT").drop(index=[700])
    write(io, CANDLES_KEY, "2024-01-02", "ETHUSDT", day_candles)
    result = run(io, instance, [analytics_key("candles_from_1m")], "2024-01-02|ETHUSDT")
    out = read(io, analytics_key("candles_from_1m"), "2024-01-02", "ETHUSDT")
    counts = out.groupby("interval").size().to_dict()
    assert counts == {"5m": 287, "15m": 95, "1h": 23, "4h": 5}  # the 1d is incomplete too
    assert out["is_complete"].all()
    # the 2022-05-01 maintenance minutes are flat zero-volume 1m candles: still complete
    assert (out["volume"] == 0).any()
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["partial_intervals"].value == 0
    trades_out = run(io, instance, [analytics_key("candles_from_trades")], "2024-01-02|ETHUSDT")
    assert trades_out.success
    secs = read(io, analytics_key("candles_from_trades"), "2024-01-02", "ETHUSDT")
    one = secs[secs["interval"] == "1s"]
    assert one["is_complete"].all()
    total = sum(r["q"] for r in realdata.hft_trade_rows())
    assert one["volume"].sum() == pytest.approx(float(total), rel=1e-12)
    # closed day: every second up to midnight is complete, filled flat after the last trade
    assert one["close_time"].max() == pd.Timestamp("2024-01-02 23:59:59.999", tz="UTC")
    assert Decimal(str(one["close"].iloc[-1])) == realdata.hft_trade_rows()[-1]["p"]


LIQUIDITY_KEYS = [analytics_key("liquidity"), analytics_key("liquidity_heatmap")]


def test_a_day_without_depth_writes_no_rows_and_says_why(lake):
    """A day from before the ingest ran has no book: 0 rows and a note, never rows of NaN
    (it used to be 1,440 minutes of NaN spread and an empty chart on a 1970 axis)."""
    io, instance = lake
    depth = upstream_frames("2024-01-03", "BTCUSDT", realdata.VISION_DAYS[2])[DEPTH_KEY]
    write(io, DEPTH_KEY, "2024-01-03", "BTCUSDT", depth.iloc[0:0])
    result = run(io, instance, LIQUIDITY_KEYS, "2024-01-03|BTCUSDT")
    events = {e.asset_key: e for e in result.get_asset_materialization_events()}
    for key in LIQUIDITY_KEYS:
        frame = read(io, key, "2024-01-03", "BTCUSDT")
        assert len(frame) == 0 and list(frame.columns) == [c.name for c in BY_SPEC[key].columns]
        meta = events[key].step_materialization_data.materialization.metadata
        assert meta["dagster/row_count"].value == 0
        assert meta["note"].value.startswith("no depth data for this partition"), key
        assert "no depth data" in meta["summary"].value
        assert not [k for k in meta if k.startswith("chart")], "no empty chart"


def test_liquidity_has_a_row_only_for_minutes_with_a_book(lake):
    """The upstream book covers a few minutes of the day: those minutes, all with numbers."""
    io, instance = lake
    run(io, instance, [analytics_key("liquidity")], "2024-01-03|BTCUSDT")
    frame = read(io, analytics_key("liquidity"), "2024-01-03", "BTCUSDT")
    depth = upstream_frames("2024-01-03", "BTCUSDT", realdata.VISION_DAYS[2])[DEPTH_KEY]
    minutes = pd.to_datetime(depth["snapshot_time"], utc=True).dt.floor("min").nunique()
    assert 0 < len(frame) == minutes < 1440
    book = ["mid", "spread_bps", "bid_depth", "ask_depth", "depth_imbalance", "top_imbalance"]
    assert frame[book].notna().all().all() and (frame["snapshots"] >= 1).all()


BY_SPEC = {analytics_key(s.name): s for s in ALL_SPECS}


def test_depth_whose_books_hold_no_level_is_missing_input():
    """Version 1 had one row per level, so a snapshot of an empty book was no row at all: an
    input of such snapshots is as missing as no rows (0 rows and a note, not rows of NaN)."""
    frames = upstream_frames("2024-01-03", "BTCUSDT", realdata.VISION_DAYS[2])
    depth, candles = frames[DEPTH_KEY], frames[CANDLES_KEY]
    no_levels = depth.assign(**{c: [np.empty(0)] * len(depth) for c in ALL_LEVEL_COLUMNS})
    for key in LIQUIDITY_KEYS:
        spec = BY_SPEC[key]
        assert spec.missing_inputs({"depth": depth, "candles": candles}) == []
        assert spec.missing_inputs({"depth": depth.iloc[0:0], "candles": candles}) == ["depth"]
        assert spec.missing_inputs({"depth": no_levels, "candles": candles}) == ["depth"]
    # candles are optional to the liquidity table (its Amihud column is NaN without them)
    liquidity = BY_SPEC[analytics_key("liquidity")]
    assert liquidity.missing_inputs({"depth": depth, "candles": candles.iloc[0:0]}) == []


def test_column_lineage_names_columns_of_the_upstream_schemas():
    """Lineage points at columns the inputs have (depth: its version 2 level lists, not the
    version 1 price, side and level) and from columns the asset writes."""
    upstream = {("market_data", name): set(s.column_names) for name, s in DATASETS.items()}
    upstream |= {("analytics", s.name): {c.name for c in s.columns} for s in ALL_SPECS}
    for spec in ALL_SPECS:
        assert set(spec.lineage) <= {c.name for c in spec.columns}, spec.name
        for column, deps in spec.lineage.items():
            for name, source in deps:
                assert source in upstream[spec.inputs[name].key], (spec.name, column, source)
    depth = {
        s for deps in BY_SPEC[LIQUIDITY_KEYS[0]].lineage.values() for i, s in deps if i == "depth"
    }
    assert {"bid_price", "ask_price", "bid_quantity", "ask_quantity"} <= depth
