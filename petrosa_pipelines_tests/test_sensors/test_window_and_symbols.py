"""The window sensor requests each closed symbol-day once; the symbols sensor syncs partitions."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from petrosa_pipelines.landing import LandingWriter
from petrosa_pipelines.lib.timeutil import DAY_MS, day_start_ms
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.settings import ExchangeEndpoints, Settings
from petrosa_pipelines_tests.test_landing import binance_frames as bf
from sensors.symbols_sensor import build_symbols_sensor
from sensors.window_sensor import ASSET_KEYS, build_window_sensor

D1, D2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def _land(root):
    with LandingWriter(root, "binance", "g1") as w:
        for day, sym in ((D1, "BTCUSDT"), (D1, "ETHUSDT"), (D2, "BTCUSDT")):
            t = day_start_ms(day) + 3_600_000
            w.put(t + 5, bf.agg_trade(sym, 1, t))


def _apply(instance, result):
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_window_sensor_requests_each_closed_symbol_day_once(instance, tmp_path):
    _land(tmp_path)
    now = [day_start_ms(D2 + dt.timedelta(days=1)) / 1000 + 10]  # D2 closed 10 s ago
    sensor = build_window_sensor(lambda: str(tmp_path), grace_s=30, clock=lambda: now[0])

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = sensor(ctx)
        _apply(instance, result)
        return result

    early = tick("2024-01-01")  # within the grace period only D1 counts as closed
    assert [r.partition_key for r in early.run_requests] == [
        "2024-01-02|binance-usdm:BTCUSDT", "2024-01-02|binance-usdm:ETHUSDT"
    ]  # fmt: skip
    assert early.cursor == "2024-01-02"
    assert set(instance.get_dynamic_partitions("symbols")) == {
        "binance-usdm:BTCUSDT", "binance-usdm:ETHUSDT"
    }  # fmt: skip
    req = early.run_requests[0]
    # the run key of a Binance day is what it was before instrument ids: no run is repeated
    assert req.run_key == "window:binance:2024-01-02:BTCUSDT"
    assert req.tags["petrosa/instrument"] == "binance-usdm:BTCUSDT"
    assert list(req.asset_selection) == ASSET_KEYS
    now[0] += 30
    later = tick(early.cursor)
    assert [r.partition_key for r in later.run_requests] == ["2024-01-03|binance-usdm:BTCUSDT"]
    # ticking on (any number of times, also replayed from an old cursor) requests nothing new
    seen = {r.run_key for r in [*early.run_requests, *later.run_requests]}
    assert len(seen) == 3
    again = tick(later.cursor)
    assert not again.run_requests and again.cursor is None  # nothing new: cursor kept
    replay = tick("2024-01-01")
    assert {r.run_key for r in replay.run_requests} <= seen  # same keys: the daemon skips them


def test_window_sensor_first_tick_takes_only_the_newest_closed_day(instance, tmp_path):
    _land(tmp_path)
    now = day_start_ms(D2) / 1000 + DAY_MS / 1000 + 60
    sensor = build_window_sensor(lambda: str(tmp_path), clock=lambda: now)
    result = sensor(dg.build_sensor_context(instance=instance))
    assert [r.partition_key for r in result.run_requests] == ["2024-01-03|binance-usdm:BTCUSDT"]


def test_window_sensor_never_requests_the_open_day(instance, tmp_path):
    """D2 is today (its partition exists, the ingest is landing it): only D1 is requested,
    and no later tick of the same day requests D2."""
    _land(tmp_path)
    now = day_start_ms(D2) / 1000 + 23 * 3600
    sensor = build_window_sensor(lambda: str(tmp_path), clock=lambda: now)
    result = sensor(dg.build_sensor_context(instance=instance, cursor="2024-01-01"))
    assert {r.partition_key[:10] for r in result.run_requests} == {"2024-01-02"}
    assert result.cursor == "2024-01-02"
    again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert not again.run_requests


def test_window_sensor_requests_a_legacy_partition_under_its_registered_key(instance, tmp_path):
    """An install not yet migrated holds bare partitions: the sensor requests those (no
    duplicate id partition appears) until ``petrosa migrate-instruments`` renames them."""
    _land(tmp_path)
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    now = day_start_ms(D2) / 1000 + DAY_MS / 1000 + 60
    sensor = build_window_sensor(lambda: str(tmp_path), clock=lambda: now)
    result = sensor(dg.build_sensor_context(instance=instance, cursor="2024-01-01"))
    assert [r.partition_key for r in result.run_requests] == [
        "2024-01-02|BTCUSDT", "2024-01-02|binance-usdm:ETHUSDT", "2024-01-03|BTCUSDT"
    ]  # fmt: skip
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["binance-usdm:ETHUSDT"]


def test_symbols_sensor_follows_allow_list_and_exchange_info(instance):
    market = MarketConfig(symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), trades_per_day=1_000)
    with LocalExchange(market=market, clock=SimulatedClock("2024-01-03T00:00:00Z")) as ex:
        endpoints = ExchangeEndpoints(rest_base_url=ex.rest_base_url, ws_base_url=ex.ws_base_url)
        allow = [("BTCUSDT", "ETHUSDT", "XRPUSDT")]  # XRP is not listed by the exchange
        sensor = build_symbols_sensor(lambda: Settings(endpoints=endpoints, symbols=allow[0]))
        instance.add_dynamic_partitions("symbols", ["ETHUSDT", "DELISTEDUSDT"])

        def tick():
            result = sensor(dg.build_sensor_context(instance=instance))
            for req in result.dynamic_partitions_requests:
                if isinstance(req, dg.AddDynamicPartitionsRequest):
                    instance.add_dynamic_partitions("symbols", list(req.partition_keys))
                else:
                    for key in req.partition_keys:
                        instance.delete_dynamic_partition("symbols", key)
            return result

        tick()
        # the legacy bare ETHUSDT stands for binance-usdm:ETHUSDT: kept, not duplicated
        assert sorted(instance.get_dynamic_partitions("symbols")) == [
            "ETHUSDT", "binance-usdm:BTCUSDT"
        ]  # fmt: skip
        assert tick().skip_reason is not None  # in step
        allow[0] = ()  # empty allow-list: every trading perpetual
        tick()
        assert sorted(instance.get_dynamic_partitions("symbols")) == [
            "ETHUSDT", "binance-usdm:BTCUSDT", "binance-usdm:SOLUSDT"
        ]  # fmt: skip
        allow[0] = ("binance-usdm:SOLUSDT",)  # an id in the allow-list
        tick()
        assert instance.get_dynamic_partitions("symbols") == ["binance-usdm:SOLUSDT"]
