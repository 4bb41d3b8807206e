"""Cross-symbol correlation is cross-instrument: the same symbol on two venues is two series.

Before, ``returns_wide`` grouped candles by ``symbol`` alone and dropped duplicate open times,
so Binance and Bybit BTCUSDT merged into one series (4 instruments over 2 venues gave 2
columns, each minute's close from whichever venue sorted first), and the day's files were
written under ``analytics/correlation/binance/ALL`` whatever the venues. Now the columns (and
``symbol_a``/``symbol_b``) are instrument ids, the files live under a venue-neutral directory,
and day rows written before (bare Binance USD-M symbols) still pool with the new ones.

The Binance candles are real (Binance Vision BTCUSDT/ETHUSDT 1m, ``realdata``); the Bybit
series are those closes moved by a deterministic per-minute factor (the lake holds no Bybit
candles of those days), so both venues' BTCUSDT are distinct but highly correlated, as they
are in the market.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import ANALYTICS_ASSETS, charts, correlation
from petrosa_pipelines.analytics.assets import (
    CROSS_VENUE_EXCHANGE,
    LEGACY_CROSS_EXCHANGE,
    analytics_key,
)
from petrosa_pipelines.instruments import Instrument
from petrosa_pipelines.lake import lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, DEPTH_KEY, FUNDING_KEY, TRADES_KEY
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
from petrosa_pipelines_tests.test_analytics import realdata
from resources.lake_io_manager import LakeIOManager

DAYS = ["2024-01-01", "2024-01-02"]
INSTRUMENTS = [
    Instrument("binance-usdm", "BTCUSDT"),
    Instrument("binance-usdm", "ETHUSDT"),
    Instrument("bybit-linear", "BTCUSDT"),
    Instrument("bybit-linear", "ETHUSDT"),
]
IDS = [i.id for i in INSTRUMENTS]


def bybit_from(binance: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Bybit's candles of the same minutes: closes moved by up to +-1 bp per minute."""
    rng = np.random.default_rng(seed)
    out = binance.copy()
    out["exchange"] = pd.Series("bybit-linear", index=out.index, dtype="string")
    out["close"] = out["close"] * (1 + rng.uniform(-1e-4, 1e-4, len(out)))
    return out


def candles(inst: Instrument, day: int = 0) -> pd.DataFrame:
    source = realdata.VISION_DAYS[day]
    frame = realdata.vision_candles(inst.symbol, source, _shift(DAYS[day], source))
    seed = {"BTCUSDT": 1, "ETHUSDT": 2}[inst.symbol] + 10 * day
    return frame if inst.venue == "binance-usdm" else bybit_from(frame, seed)


def _shift(day: str, source: str) -> int:
    return (pd.Timestamp(day) - pd.Timestamp(source)).days


def test_the_probe_four_instruments_over_two_venues_are_four_columns():
    """/tmp/audit12/corr_probe.py: it printed 2 columns (one per symbol)."""
    t = pd.date_range("2024-03-01", periods=5, freq="1min", tz="UTC")
    rows = []
    for ex, base in (("binance", 100.0), ("bybit-linear", 200.0)):
        for sym in ("BTCUSDT", "ETHUSDT"):
            for i, ts in enumerate(t):
                k = i * (2 if sym == "ETHUSDT" else 1) % 3
                rows.append(
                    {"exchange": ex, "symbol": sym, "open_time": ts, "close": base * (1 + 0.01 * k)}
                )
    wide = correlation.returns_wide(pd.DataFrame(rows))
    assert list(wide.columns) == IDS
    pairs = correlation.pair_statistics(wide)
    assert len(pairs) == 6 and (pairs["n"] == 4).all()
    assert ("binance-usdm:BTCUSDT", "bybit-linear:BTCUSDT") in set(
        zip(pairs["symbol_a"], pairs["symbol_b"], strict=True)
    )


def test_same_symbol_on_two_venues_is_two_series_with_their_own_returns():
    frames = [candles(i) for i in INSTRUMENTS]
    wide = correlation.returns_wide(pd.concat(frames, ignore_index=True))
    assert list(wide.columns) == IDS and len(wide) == 1439
    for inst, frame in zip(INSTRUMENTS, frames, strict=True):
        want = np.log(frame["close"].to_numpy()[1:] / frame["close"].to_numpy()[:-1])
        np.testing.assert_allclose(wide[inst.id].to_numpy(), want, rtol=1e-12)
    pairs = correlation.pair_statistics(wide).set_index(["symbol_a", "symbol_b"])
    cross = pairs.loc[("binance-usdm:BTCUSDT", "bybit-linear:BTCUSDT"), "correlation"]
    want = np.corrcoef(wide["binance-usdm:BTCUSDT"], wide["bybit-linear:BTCUSDT"])[0, 1]
    assert cross == pytest.approx(want, rel=1e-9)
    assert 0.95 < cross < 0.9999  # the same asset across venues: correlated, not identical


def test_candles_without_an_exchange_column_are_the_legacy_venue():
    frame = candles(INSTRUMENTS[0]).drop(columns=["exchange"])
    assert list(correlation.returns_wide(frame).columns) == ["binance-usdm:BTCUSDT"]


def test_day_rows_of_bare_symbols_pool_with_instrument_rows():
    """Rows written before instrument ids (``BTCUSDT``/``ETHUSDT``: Binance USD-M's) pool with
    the new rows of the same pair, exactly as if both days had been written with ids."""
    days = []
    for d in range(2):
        wide = correlation.returns_wide(pd.concat([candles(i, d) for i in INSTRUMENTS[:2]]))
        days.append((wide, correlation.pair_statistics(wide)))
    old = days[0][1].assign(symbol_a="BTCUSDT", symbol_b="ETHUSDT")  # as written before
    pooled = correlation.pool(pd.concat([old, days[1][1]], ignore_index=True))
    assert list(pooled[["symbol_a", "symbol_b"]].iloc[0]) == IDS[:2]
    assert pooled["days"].iloc[0] == 2 and len(pooled) == 1
    both = pd.concat([w for w, _ in days])
    want = np.corrcoef(both[IDS[0]], both[IDS[1]])[0, 1]
    assert pooled["correlation"].iloc[0] == pytest.approx(want, rel=1e-9)
    m = correlation.matrix(old)
    assert list(m.columns) == IDS[:2]


def test_a_pair_whose_ids_sort_the_other_way_is_swapped_with_its_sums():
    sums = {"n": 3, "sum_x": 1.0, "sum_y": 2.0, "sum_xx": 3.0, "sum_yy": 4.0, "sum_xy": 5.0}
    row = {"symbol_a": "bybit-linear:BTCUSDT", "symbol_b": "ETHUSDT", "correlation": 0.5, **sums}
    got = correlation.canonical_pairs(pd.DataFrame([row])).iloc[0]
    assert (got["symbol_a"], got["symbol_b"]) == ("binance-usdm:ETHUSDT", "bybit-linear:BTCUSDT")
    assert (got["sum_x"], got["sum_y"], got["sum_xx"], got["sum_yy"], got["sum_xy"]) == (
        2.0, 1.0, 4.0, 3.0, 5.0,
    )  # fmt: skip


def test_the_chart_names_instruments():
    wide = correlation.returns_wide(pd.concat([candles(i) for i in INSTRUMENTS]))
    m = correlation.matrix(correlation.pair_statistics(wide))
    fig = charts.correlation_figure(m, "2024-01-01, all instruments: correlation")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == IDS
    assert [t.get_text() for t in ax.get_yticklabels()] == IDS
    assert ax.get_xlabel() == ax.get_ylabel() == "instrument (venue:symbol)"
    assert charts.ChartContext(pd.Timestamp(DAYS[0]).date()).label == "2024-01-01, all instruments"
    ctx = charts.ChartContext(pd.Timestamp(DAYS[0]).date(), "BTCUSDT", "bybit-linear:BTCUSDT")
    assert (ctx.label, ctx.base, ctx.quote) == ("bybit-linear:BTCUSDT 2024-01-01", "BTC", "USDT")


UPSTREAM = [
    dg.AssetSpec(k, partitions_def=daily_symbol_partitions)
    for k in (TRADES_KEY, CANDLES_KEY, DEPTH_KEY, FUNDING_KEY)
]


@pytest.fixture
def lake(tmp_path, dagster_instance):
    io = LakeIOManager(base_path=str(tmp_path / "lake"))
    for d, day in enumerate(DAYS):
        for inst in INSTRUMENTS:
            path = lake_path("/".join(CANDLES_KEY.path), inst.exchange, inst.symbol, day)
            io.lake().write_frame(path, candles(inst, d))
    dagster_instance.add_dynamic_partitions("symbols", IDS)
    return io, dagster_instance


def run(io, instance, name: str, day: str):
    result = dg.materialize(
        [*UPSTREAM, *ANALYTICS_ASSETS],
        partition_key=day,
        instance=instance,
        resources={"io_manager": io},
        selection=dg.AssetSelection.assets(analytics_key(name)),
    )
    assert result.success
    return result.get_asset_materialization_events()[0].materialization.metadata


def read(io, name: str, day: str, exchange: str) -> pd.DataFrame:
    return io.lake().read_frame(lake_path(f"analytics/{name}", exchange, "ALL", day))


def test_the_assets_write_instrument_pairs_to_a_venue_neutral_directory(lake):
    io, instance = lake
    for day in DAYS:
        meta = run(io, instance, "correlation", day)
    assert CROSS_VENUE_EXCHANGE == "all-venues" and LEGACY_CROSS_EXCHANGE == "binance"
    daily = read(io, "correlation", DAYS[1], CROSS_VENUE_EXCHANGE)
    assert len(daily) == 6 and set(daily["symbol_a"]) | set(daily["symbol_b"]) == set(IDS)
    with pytest.raises(FileNotFoundError):  # nothing pretends to be Binance's any more
        read(io, "correlation", DAYS[1], "binance")
    assert meta["instruments"].value == IDS
    assert "binance-usdm:BTCUSDT/bybit-linear:BTCUSDT" in meta["summary"].value
    assert meta["summary"].value.startswith(f"**{DAYS[1]}, all instruments: ")
    # the rolling asset finds the daily files where they now are
    meta = run(io, instance, "correlation_rolling", DAYS[1])
    rolling = read(io, "correlation_rolling", DAYS[1], CROSS_VENUE_EXCHANGE)
    assert len(rolling) == 6 and (rolling["days"] == 2).all()
    row = rolling.set_index(["symbol_a", "symbol_b"]).loc[(IDS[0], IDS[2])]
    returns = []
    for d in range(2):
        returns.append(correlation.returns_wide(pd.concat([candles(i, d) for i in INSTRUMENTS])))
    pooled = pd.concat(returns)
    want = np.corrcoef(pooled[IDS[0]], pooled[IDS[2]])[0, 1]
    assert row["correlation"] == pytest.approx(want, rel=1e-9) and row["n"] == 2 * 1439
    definition = {a.key: a for a in ANALYTICS_ASSETS}[analytics_key("correlation")]
    spec_meta = definition.specs_by_key[analytics_key("correlation")].metadata
    assert spec_meta["exchange"] == "all-venues" and spec_meta["legacy_exchange"] == "binance"
