"""``load_candles(interval=...)`` is the exact resampler: bit for bit ``candles_from_1m``.

Real Binance Vision 1m klines (fixtures/analytics, see its PROVENANCE.md) go into a lake; every
longer interval read through the API must equal, bitwise, what the ``analytics/candles_from_1m``
asset computes from the same minutes, and the float nearest to the exact decimal sum of the
exchange's own numbers (Binance's kline rule, computed in ``Decimal``).
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines import api
from petrosa_pipelines.analytics import compute, resample
from petrosa_pipelines.catalog.schemas import DATASETS, conform
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines_tests.test_analytics import realdata
from petrosa_pipelines_tests.test_analytics.test_resample import SUM_FIELDS, reference_klines

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAYS = [dt.date.fromisoformat(d) for d in realdata.VISION_DAYS]
FLOATS = ["open", "high", "low", "close", *SUM_FIELDS]
#: the API's intervals that the analytics asset does not build
API_ONLY = [i for i in api.INTERVAL_MINUTES if i != "1m" and i not in resample.CANDLE_INTERVALS]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = LocalLake(tmp_path_factory.mktemp("lake"))
    for symbol in SYMBOLS:
        for day in DAYS:
            frame = conform(realdata.vision_candles(symbol, day.isoformat()), DATASETS["candles"])
            lake.write_frame(
                lake_path("market_data/candles", "binance", symbol, day.isoformat()), frame
            )
    return lake


def _load(lake, day: dt.date, interval: str) -> pd.DataFrame:
    src = api.DataSources(
        lake=lake, symbols=SYMBOLS, now=lambda: dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    )
    r = api.load_candles(list(SYMBOLS), day, day + dt.timedelta(days=1), interval, sources=src)
    assert r.complete and r.failed_checks == []
    return r.frame


def _bits(frame: pd.DataFrame) -> np.ndarray:
    """The float columns as raw 64-bit patterns (equality here is bitwise, not ==)."""
    return frame[FLOATS].to_numpy("float64").view("int64")


def _times(frame: pd.DataFrame) -> np.ndarray:
    ms = [
        frame[c].astype("datetime64[ms, UTC]").to_numpy("datetime64[ms]")
        for c in ("open_time", "close_time")
    ]
    return np.stack(ms).view("int64")


@pytest.mark.parametrize("day", DAYS, ids=str)
def test_load_candles_equals_candles_from_1m_bitwise(lake, day):
    compared = 0
    for symbol in SYMBOLS:
        part = compute.Part(day, symbol, pd.Timestamp("2024-06-01", tz="UTC"))
        one_m = realdata.vision_candles(symbol, day.isoformat())
        asset = compute.candles_from_1m({"candles": one_m}, part, compute.AnalyticsConfig())
        for interval in resample.CANDLE_INTERVALS:
            want = asset[asset["interval"] == interval].reset_index(drop=True)
            loaded = _load(lake, day, interval)
            got = loaded[loaded["symbol"] == symbol].reset_index(drop=True)
            assert len(got) == len(want) == 1440 * 60_000 // resample.INTERVAL_MS[interval]
            assert np.array_equal(_times(got), _times(want)), (symbol, interval)
            assert np.array_equal(_bits(got), _bits(want)), (symbol, interval)
            assert got["trade_count"].tolist() == want["trade_count"].tolist()
            assert set(got["interval"]) == {interval} and set(got["source"]) == {"archive"}
            compared += got[FLOATS].size
    assert compared == 2 * 415 * len(FLOATS)


@pytest.mark.parametrize("interval", API_ONLY)
def test_intervals_beyond_the_asset_are_the_exchange_rule_exactly(lake, interval):
    """3m, 30m, 2h, 6h, 8h, 12h: the float nearest to the exact decimal sum, no tolerance."""
    step = api.INTERVAL_MINUTES[interval] * 60_000
    for day in DAYS:
        loaded = _load(lake, day, interval)
        for symbol in SYMBOLS:
            got = loaded[loaded["symbol"] == symbol].reset_index(drop=True)
            ref = reference_klines(realdata.vision_rows(symbol, day.isoformat()), step)
            assert len(got) == len(ref) == 86_400_000 // step
            for row, want in zip(got.itertuples(index=False), ref, strict=True):
                assert row.open_time.value // 1_000_000 == want["open_time"]
                assert row.close_time.value // 1_000_000 == want["close_time"]
                for k in FLOATS:
                    assert getattr(row, k) == float(want[k]), (symbol, interval, k)
                assert row.trade_count == want["count"]


def test_resample_candles_counts_minutes_and_keeps_partial_bars():
    one_m = realdata.vision_candles("BTCUSDT", "2022-01-01").drop(index=[90, 91])
    frame = conform(one_m, DATASETS["candles"])
    bars, counts = api.resample_candles(frame, "1h")
    assert len(bars) == 24 and counts.tolist() == [60, 58, *[60] * 22]
    assert list(bars.columns) == DATASETS["candles"].column_names
    exact = resample.resample_candles(one_m, "1h", include_partial=True)
    assert np.array_equal(_bits(bars), _bits(exact))
