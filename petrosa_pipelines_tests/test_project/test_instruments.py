"""Instrument ids everywhere: settings, partition keys, the lake, the landing zone, the API.

A bare symbol (every key written before venues had ids) reads as ``binance-usdm``; a venue
with its own symbol form (a fake OKX swap venue, registered here by monkeypatching the
registry) is accepted by the same code paths without a Binance regex in the way.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import ClassVar

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines import api, exchanges
from petrosa_pipelines.exchanges.base import TradeRecord
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.instruments import Instrument, partition_value
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.landing import LandingStore, LandingWriter
from petrosa_pipelines.lib.timeutil import day_start_ms
from petrosa_pipelines.market_data.partitions import (
    instrument_problem,
    partition_key,
    split_partition_key,
)
from petrosa_pipelines.settings import SettingError, from_env
from petrosa_pipelines_tests.test_landing import binance_frames as bf
from resources import ExchangeResource, LakeIOManager

DAY = dt.date(2024, 1, 2)


class FakeOkxSwap(BinanceUsdmAdapter):
    """A venue whose symbols have dashes and whose frames name the instrument inside."""

    venue: ClassVar[str] = "okx-swap"
    name: ClassVar[str] = "okx-swap"
    symbol_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Z0-9]+-[A-Z0-9]+-SWAP")

    def parse(self, raw, received_at=None):
        msg = json.loads(raw)
        return TradeRecord(
            exchange=self.name,
            symbol=msg["instId"],
            agg_trade_id=int(msg["tradeId"]),
            price=Decimal(msg["px"]),
            quantity=Decimal(msg["sz"]),
            first_trade_id=int(msg["tradeId"]),
            last_trade_id=int(msg["tradeId"]),
            trade_time=int(msg["ts"]),
            is_buyer_maker=False,
            received_at=received_at,
        )


@pytest.fixture
def okx(monkeypatch):
    monkeypatch.setitem(exchanges.EXCHANGES, "okx-swap", FakeOkxSwap)
    return FakeOkxSwap


# -- settings ------------------------------------------------------------------------------------
def test_symbols_accept_ids_bare_symbols_and_venue_wildcards():
    s = from_env({"PETROSA_SYMBOLS": "btcusdt, binance:ethusdt, Bybit-Linear:*"})
    assert s.symbols == ("BTCUSDT", "binance-usdm:ETHUSDT", "bybit-linear:*")
    assert s.venues == ("binance-usdm", "bybit-linear")
    assert s.instruments == (Instrument("binance-usdm", "BTCUSDT"),
                             Instrument("binance-usdm", "ETHUSDT"))  # fmt: skip
    assert s.allow_list("binance") == ("BTCUSDT", "ETHUSDT")
    assert s.allow_list("bybit-linear") == ()  # every trading perpetual
    assert s.qualified_symbols == (
        "binance-usdm:BTCUSDT", "binance-usdm:ETHUSDT", "bybit-linear:*"
    )  # fmt: skip
    # the default: a bare list on Binance USD-M, exactly as before instrument ids
    default = from_env({})
    assert default.symbols == ("BTCUSDT", "ETHUSDT") and default.venues == ("binance-usdm",)
    assert from_env({"PETROSA_SYMBOLS": "*"}).allow_list("binance-usdm") == ()
    assert from_env({"PETROSA_SYMBOLS": "*"}).allow_list("bybit-linear") is None


def test_bare_symbols_trade_on_the_configured_default_venue():
    s = from_env({"PETROSA_EXCHANGE": "bybit-linear", "PETROSA_SYMBOLS": "SOLUSDT"})
    assert s.venue == "bybit-linear"
    assert s.instruments == (Instrument("bybit-linear", "SOLUSDT"),)
    assert s.qualified_symbols == ("bybit-linear:SOLUSDT",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("kraken:BTCUSD", "unknown venue 'kraken'"),
        ("bybit-linear:BTC/USDT", "not a bybit-linear symbol"),
        ("BTC-USDT-SWAP", "not a binance-usdm symbol"),
    ],
)
def test_symbols_are_checked_by_their_venue(value, message):
    with pytest.raises(SettingError, match=message) as info:
        from_env({"PETROSA_SYMBOLS": value})
    assert "PETROSA_SYMBOLS" in str(info.value)


def test_a_registered_venue_s_symbol_form_is_valid_in_settings(okx):
    s = from_env({"PETROSA_SYMBOLS": "okx-swap:BTC-USDT-SWAP"})
    assert s.instruments == (Instrument("okx-swap", "BTC-USDT-SWAP"),)


def test_per_venue_endpoints_have_live_defaults_and_overrides():
    s = from_env({})
    bybit = s.endpoints_for("bybit-linear")
    assert (bybit.rest_base_url, bybit.ws_base_url, bybit.vision_base_url) == (
        "https://api.bybit.com", "wss://stream.bybit.com", "https://public.bybit.com"
    )  # fmt: skip
    assert s.endpoints_for("binance") == s.endpoints  # Binance USD-M: the legacy variables
    s = from_env(
        {
            "PETROSA_BYBIT_LINEAR_WS_BASE_URL": "ws://127.0.0.1:9/",
            "PETROSA_BINANCE_USDM_REST_BASE_URL": "http://127.0.0.1:8",
        }
    )
    assert s.endpoints_for("bybit-linear").ws_base_url == "ws://127.0.0.1:9/"
    assert s.endpoints_for("bybit-linear").rest_base_url == "https://api.bybit.com"
    assert s.endpoints.rest_base_url == "http://127.0.0.1:8"
    view = s.for_venue("bybit-linear")  # what a venue's clients are given
    assert view.exchange == "bybit-linear" and view.endpoints.ws_base_url == "ws://127.0.0.1:9/"
    with pytest.raises(SettingError, match="PETROSA_BYBIT_LINEAR_WS_BASE_URL"):
        from_env({"PETROSA_BYBIT_LINEAR_WS_BASE_URL": "http://x"})


def test_a_venue_without_defaults_names_its_variables(okx):
    with pytest.raises(SettingError, match="PETROSA_OKX_SWAP_REST_BASE_URL"):
        from_env({}).endpoints_for("okx-swap")
    s = from_env(
        {
            "PETROSA_OKX_SWAP_REST_BASE_URL": "http://127.0.0.1:1",
            "PETROSA_OKX_SWAP_WS_BASE_URL": "ws://127.0.0.1:1",
            "PETROSA_OKX_SWAP_ARCHIVE_BASE_URL": "http://127.0.0.1:1/a",
        }
    )
    assert s.endpoints_for("okx-swap").vision_base_url == "http://127.0.0.1:1/a"
    with pytest.raises(SettingError, match="PETROSA_OKX_SWAP_WS_BASE_URL"):
        from_env({"PETROSA_OKX_SWAP_REST_BASE_URL": "http://127.0.0.1:1"})


def test_the_exchange_resource_overrides_its_own_venue_only():
    r = ExchangeResource(exchange="bybit-linear", rest_base_url="http://127.0.0.1:7")
    assert r.venue_settings().endpoints.rest_base_url == "http://127.0.0.1:7"
    assert r.venue_settings("binance-usdm").endpoints.rest_base_url == "https://fapi.binance.com"


# -- partition keys ------------------------------------------------------------------------------
def test_partition_keys_hold_ids_and_legacy_keys_read_as_binance_usdm():
    inst = Instrument("bybit-linear", "BTCUSDT")
    assert str(partition_key(DAY, inst)) == "2024-01-02|bybit-linear:BTCUSDT"
    assert str(partition_key(DAY, "binance:BTCUSDT")) == "2024-01-02|binance-usdm:BTCUSDT"
    assert str(partition_key(DAY, "BTCUSDT")) == "2024-01-02|BTCUSDT"  # a legacy value as is
    legacy = split_partition_key("2024-01-02|BTCUSDT")
    assert legacy == split_partition_key("2024-01-02|binance-usdm:BTCUSDT")
    assert legacy == (DAY, Instrument("binance-usdm", "BTCUSDT"))
    assert split_partition_key(partition_key(DAY, inst)) == (DAY, inst)
    # the registered form wins until the install is migrated
    btc = Instrument("binance-usdm", "BTCUSDT")
    assert partition_value(btc, {"BTCUSDT"}) == "BTCUSDT"
    assert partition_value(btc, {"BTCUSDT", "binance-usdm:BTCUSDT"}) == "binance-usdm:BTCUSDT"
    assert partition_value(inst, {"BTCUSDT"}) == "bybit-linear:BTCUSDT"


def test_instruments_are_judged_in_canonical_form(okx):
    allow = ("BTCUSDT", "bybit-linear:*", "okx-swap:BTC-USDT-SWAP")
    assert instrument_problem("BTCUSDT", allow) is None  # a legacy partition stays accepted
    assert instrument_problem("binance-usdm:BTCUSDT", ("binance-usdm:BTCUSDT",)) is None
    assert instrument_problem("BTCUSDT", ("binance-usdm:BTCUSDT",)) is None
    assert instrument_problem("bybit-linear:XRPUSDT", allow) is None
    assert instrument_problem("okx-swap:BTC-USDT-SWAP", allow) is None
    assert "not in the PETROSA_SYMBOLS allow-list" in instrument_problem("ETHUSDT", allow)
    assert "not in the PETROSA_SYMBOLS" in instrument_problem("okx-swap:ETH-USDT-SWAP", allow)
    assert "not a okx-swap symbol" in instrument_problem("okx-swap:BTCUSDT", allow)
    assert "did you mean binance-usdm:BTCUSDT" in instrument_problem("btcusdt", allow)
    assert "unknown venue" in instrument_problem("kraken:BTCUSD", allow)
    # an empty list is every perpetual of the default venue, and only of it
    assert instrument_problem("BTCUSDT", ()) is None
    assert instrument_problem("bybit-linear:BTCUSDT", ()) is not None


# -- lake, landing, API --------------------------------------------------------------------------
def test_the_lake_path_comes_from_the_partition_s_instrument(tmp_path):
    io = LakeIOManager(base_path=str(tmp_path), exchange="somewhere-else")
    key = dg.AssetKey(["market_data", "candles"])
    frame = pd.DataFrame({"open_time": [pd.Timestamp("2024-01-02", tz="UTC")], "close": [1.0]})
    lake = LocalLake(tmp_path)
    lake.write_frame(
        lake_path("market_data/candles", "bybit-linear", "BTCUSDT", "2024-01-02"), frame
    )
    binance = frame.assign(close=3.0)
    lake.write_frame(lake_path("market_data/candles", "binance", "BTCUSDT", "2024-01-02"), binance)
    pd.testing.assert_frame_equal(io.read_partition(key, "2024-01-02|bybit-linear:BTCUSDT"), frame)
    # the legacy key and its id read the same (existing) file under "binance"
    legacy = io.read_partition(key, "2024-01-02|BTCUSDT")
    pd.testing.assert_frame_equal(legacy, binance)
    pd.testing.assert_frame_equal(legacy, io.read_partition(key, "2024-01-02|binance-usdm:BTCUSDT"))
    assert io.read_partition(key, "2024-01-02|bybit-linear:ETHUSDT") is None


def _okx_line(symbol: str, trade_id: int, ts: int) -> bytes:
    return json.dumps(
        {"instId": symbol, "tradeId": str(trade_id), "px": "1.5", "sz": "2", "ts": str(ts)}
    ).encode()


def test_the_landing_store_reads_any_registered_venue_s_symbols(okx, tmp_path):
    t = day_start_ms(DAY) + 3_600_000
    with LandingWriter(tmp_path, "okx-swap", "g1") as w:
        w.put(t + 5, _okx_line("BTC-USDT-SWAP", 1, t))
        w.put(t + 6, _okx_line("ETH-USDT-SWAP", 2, t + 1))
    with LandingWriter(tmp_path, "binance", "g1") as w:
        w.put(t + 5, bf.agg_trade("BTCUSDT", 1, t))
    store = LandingStore(tmp_path)
    assert store.symbols_with_data("okx-swap", DAY) == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    assert store.symbols_with_data("binance", DAY) == {"BTCUSDT"}
    start, end = day_start_ms(DAY), day_start_ms(DAY) + 86_400_000
    recs = list(store.read_records("okx-swap", start, end, ["BTC-USDT-SWAP"]))
    assert [(r.symbol, r.agg_trade_id) for r in recs] == [("BTC-USDT-SWAP", 1)]


def test_the_api_reads_each_instrument_from_its_venue(tmp_path):
    lake = LocalLake(tmp_path)
    for exchange, close in (("binance", 1.0), ("bybit-linear", 2.0)):
        frame = pd.DataFrame(
            {
                "open_time": [pd.Timestamp("2024-01-02", tz="UTC")],
                "exchange": [exchange],
                "symbol": ["BTCUSDT"],
                "value": [close],
            }
        )
        lake.write_frame(lake_path("analytics/x", exchange, "BTCUSDT", "2024-01-02"), frame)
    src = api.DataSources(lake=lake, now=lambda: dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
    assert src.known_symbols("analytics/x") == {"binance-usdm:BTCUSDT", "bybit-linear:BTCUSDT"}
    both = api.load_analytics("x", ["BTCUSDT", "bybit-linear:BTCUSDT"], DAY, DAY + dt.timedelta(1),
                              sources=src)  # fmt: skip
    assert sorted(both.frame["value"]) == [1.0, 2.0]
    assert [p.partition for p in both.partitions] == [
        "2024-01-02|binance-usdm:BTCUSDT", "2024-01-02|bybit-linear:BTCUSDT"
    ]  # fmt: skip
    with pytest.raises(api.UnknownSymbolError, match="unknown venue"):
        api.load_analytics("x", "kraken:BTCUSD", DAY, DAY + dt.timedelta(1), sources=src)
