"""Bad arguments to the public API are clear errors naming the argument (issue 11 item 18)."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines import api
from petrosa_pipelines.lake import LocalLake
from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME
from petrosa_pipelines.serving.launch import partition_keys

UTC = dt.UTC


@pytest.fixture
def src(tmp_path):
    return api.DataSources(
        lake=LocalLake(tmp_path / "lake"),
        symbols=("BTCUSDT",),
        now=lambda: dt.datetime(2024, 1, 10, tzinfo=UTC),
    )


@pytest.mark.parametrize("symbols", [None, 42, b"BTCUSDT", {"BTCUSDT": 1}, [None], [b"BTC"]])
def test_symbols_that_are_not_symbols_name_the_argument(src, symbols):
    """``symbols=None`` was ``TypeError: 'NoneType' object is not iterable``."""
    with pytest.raises(api.UnknownSymbolError, match="symbols"):
        api.load_trades(symbols, "2024-01-02", "2024-01-03", sources=src)


@pytest.mark.parametrize(
    ("start", "end", "name"),
    [
        ("2024-13-45", "2024-01-03", "start"),
        ("2024-01-02", "2024-02-30", "end"),
        ("", "2024-01-03", "start"),
        (pd.NaT, "2024-01-03", "start"),
        (float("nan"), "2024-01-03", "start"),
    ],
)
def test_impossible_dates_name_the_argument(src, start, end, name):
    """``"2024-13-45"`` was a bare ``ValueError: month must be in 1..12``."""
    with pytest.raises(api.InvalidRangeError, match=f"^{name}="):
        api.load_candles("BTCUSDT", start, end, sources=src)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("start", "end"),
    [("0001-01-01", "9999-12-31"), (dt.date(1, 1, 1), dt.date(9999, 12, 31))],
)
def test_an_unbounded_range_is_refused_at_once(src, start, end):
    """0001..9999 walked 3.6 million days (it never returned)."""
    with pytest.raises(api.InvalidRangeError, match="split the range"):
        api.load_trades("BTCUSDT", start, end, sources=src)
    with pytest.raises(api.InvalidRangeError, match="split the range"):
        partition_keys("BTCUSDT", start, end)


def test_the_range_cap_still_allows_years():
    keys = partition_keys("BTCUSDT", "2019-09-01", "2026-09-01")
    assert len(keys) == (dt.date(2026, 9, 1) - dt.date(2019, 9, 1)).days


@pytest.mark.parametrize("interval", [None, ["1h"], "7m"])
def test_bad_interval_is_a_data_error(src, interval):
    with pytest.raises(api.DataError, match="interval"):
        api.load_candles("BTCUSDT", "2024-01-02", "2024-01-03", interval=interval, sources=src)


@pytest.mark.parametrize(
    "symbols", [["BTCUSDT", "../x"], ["BTCUSDT", "btc usdt"], ["BTCUSDT", ""], [], None]
)
def test_materialize_partitions_never_registers_junk_symbols(symbols):
    """Junk used to be registered as a dynamic partition (permanent until deleted by hand)
    before any run failed, or the call crashed with a TypeError."""
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(api.UnknownSymbolError):
        api.materialize_partitions(
            "trades", symbols, "2024-01-02", "2024-01-03", instance=instance, defs=dg.Definitions()
        )
    with pytest.raises(api.UnknownSymbolError):
        api.launch_backfill(
            "trades", symbols, "2024-01-02", "2024-01-03", instance=instance, defs=dg.Definitions()
        )
    assert instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME) == []


def test_an_unbounded_materialisation_registers_nothing():
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(api.InvalidRangeError):
        api.materialize_partitions(
            "trades", "BTCUSDT", "0001-01-01", "9999-12-31", instance=instance
        )
    assert instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME) == []
