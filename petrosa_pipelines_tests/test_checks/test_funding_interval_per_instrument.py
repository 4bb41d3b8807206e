"""Funding is judged and filled on each instrument's own interval, not one global 8 h.

Bybit's instruments-info gives every linear symbol its ``fundingInterval`` (minutes); in the
recorded answer (``fixtures/bybit/rest/instruments-info_linear_cut.json``, PROVENANCE.md)
ACEUSDT settles every 60 minutes and BTCUSDT every 480. A day of ACEUSDT has 24 settlements:
on the old global 8 h grid 21 of them were "off grid" and the check failed on good data, and
the asset filled to 3 expected times. The interval comes from the venue's instrument info
through the run's REST client (cached), falls back to the setting with a note when that fetch
fails, and the check judges the partition on the interval its build recorded.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from petrosa_pipelines.checks.audit_book import (
    INTERVAL_FROM_SETTING,
    INTERVAL_FROM_VENUE,
    FundingInterval,
    FundingIntervals,
    audit_dataset,
    funding_schedule,
    intervals_from_info,
)
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.exchanges.base import ExchangeInfo
from petrosa_pipelines.exchanges.bybit.bodies import parse_instruments
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_window_ms
from petrosa_pipelines.market_data import assets as md_assets
from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition
from petrosa_pipelines_tests.test_checks.data import funding_frame

FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "bybit"
    / "rest"
    / "instruments-info_linear_cut.json"
)
DAY = dt.date(2026, 8, 9)  # the day the instruments-info answer was recorded
START, END = day_window_ms(DAY)
AFTER = END + HOUR_MS
S = AuditSettings()  # funding_interval_hours=8: the setting


def bybit_info() -> ExchangeInfo:
    body = json.loads(FIXTURE.read_bytes())
    symbols, cursor = parse_instruments(body["result"])
    assert cursor == ""
    return ExchangeInfo(server_time=body["time"], symbols=tuple(symbols), rate_limits=())


def ace_interval_hours() -> int:
    """ACEUSDT's interval as the recorded answer gives it (60 minutes)."""
    row = next(
        r for r in json.loads(FIXTURE.read_bytes())["result"]["list"] if r["symbol"] == "ACEUSDT"
    )
    assert row["fundingInterval"] % 60 == 0
    return row["fundingInterval"] // 60


def bybit_funding(symbol: str, hours: int) -> pd.DataFrame:
    return funding_frame(DAY, symbol, hours).assign(exchange="bybit-linear", source="ws")


def by_name(outs):
    return {o.name: o for o in outs}


def test_the_fixture_holds_a_one_hour_symbol():
    assert ace_interval_hours() == 1
    table = intervals_from_info(bybit_info())
    assert table["ACEUSDT"] == HOUR_MS and table["BTCUSDT"] == 8 * HOUR_MS


def test_a_one_hour_symbol_passes_on_its_own_interval_and_failed_on_the_global_one():
    frame = bybit_funding("ACEUSDT", ace_interval_hours())
    assert len(frame) == 24
    cache = FundingIntervals()
    interval = cache.interval(
        "k", "bybit-linear", "ACEUSDT", 8, lambda: intervals_from_info(bybit_info())
    )
    assert interval == FundingInterval(1, INTERVAL_FROM_VENUE)
    outs = by_name(
        audit_dataset(
            "funding",
            frame,
            START,
            END,
            AFTER,
            S,
            exchange="bybit-linear",
            funding_interval=interval,
        )
    )
    o = outs["funding_interval_respected"]
    assert o.passed, o.examples
    assert (o.counts["interval_hours"], o.counts["expected_settlements"]) == (1, 24)
    assert o.metadata()["interval_source"] == "venue" and "note" not in o.metadata()
    assert outs["fresh"].passed
    # what the global 8 h setting made of the same good day
    old = funding_schedule(frame, START, END, AFTER, S.funding_interval_hours)
    assert not old.passed and old.counts["off_grid"] == 21
    # and a genuinely missing hour is now seen (on 8 h it was invisible: 05:00 is off that grid)
    holed = frame.drop(index=5)
    o = funding_schedule(holed, START, END, AFTER, interval)
    assert o.examples == [{"missing_settlement": "2026-08-09T05:00:00Z"}]


def test_an_eight_hour_symbol_of_the_same_venue_keeps_eight_hours():
    cache = FundingIntervals()
    got = cache.interval(
        "k", "bybit-linear", "BTCUSDT", 4, lambda: intervals_from_info(bybit_info())
    )
    assert got == FundingInterval(8, INTERVAL_FROM_VENUE)
    frame = bybit_funding("BTCUSDT", 8)
    outs = by_name(audit_dataset("funding", frame, START, END, AFTER, S, funding_interval=got))
    assert outs["funding_interval_respected"].passed


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_instrument_info_is_fetched_once_per_ttl_and_a_failure_falls_back_with_a_note():
    clock = Clock()
    cache = FundingIntervals(ttl_s=3600, retry_s=300, clock=clock)
    calls = []

    def down():
        calls.append("down")
        raise ConnectionError("bybit unreachable")

    got = cache.interval("k", "bybit-linear", "ACEUSDT", 8, down)
    assert (got.hours, got.source) == (8, INTERVAL_FROM_SETTING)
    assert "bybit-linear instrument info unavailable" in got.note and "ConnectionError" in got.note
    # the check says so: never a silent pass on the setting
    frame = bybit_funding("ACEUSDT", 1)
    o = by_name(audit_dataset("funding", frame, START, END, AFTER, S, funding_interval=got))[
        "funding_interval_respected"
    ]
    meta = o.metadata()
    assert meta["interval_source"] == "setting" and "unavailable" in meta["note"]
    assert not o.passed  # the hourly day on the 8 h fallback: failed, with the reason beside it
    # within the retry window the failure is not retried (one request per outage, not per check)
    cache.interval("k", "bybit-linear", "BTCUSDT", 8, down)
    assert calls == ["down"]
    clock.t += 301
    ok = cache.interval(
        "k", "bybit-linear", "ACEUSDT", 8, lambda: intervals_from_info(bybit_info())
    )
    assert ok == FundingInterval(1, INTERVAL_FROM_VENUE) and cache.fetches == 2
    clock.t += 3599  # fresh for an hour: no fetch, even with a fetcher that would now fail
    assert cache.interval("k", "bybit-linear", "ACEUSDT", 8, down).hours == 1
    assert calls == ["down"] and cache.fetches == 2


def test_a_venue_without_intervals_takes_the_setting_silently_and_odd_answers_say_why():
    binance_like = {"BTCUSDT": None, "ETHUSDT": None}  # Binance USD-M's exchangeInfo: no interval
    cache = FundingIntervals()
    assert cache.interval("b", "binance-usdm", "BTCUSDT", 8, lambda: binance_like) == (
        FundingInterval(8, INTERVAL_FROM_SETTING)
    )
    odd = {"ACEUSDT": 90 * 60_000, "BTCUSDT-25DEC26": None, "ETHUSDT": 8 * HOUR_MS}
    c2 = FundingIntervals()
    assert "90 min" in c2.interval("o", "bybit-linear", "ACEUSDT", 8, lambda: odd).note
    assert (
        "no funding interval"
        in c2.interval("o", "bybit-linear", "BTCUSDT-25DEC26", 8, lambda: odd).note
    )
    assert "not in bybit-linear" in c2.interval("o", "bybit-linear", "XYZUSDT", 8, lambda: odd).note


def test_the_check_uses_the_interval_its_build_recorded():
    venue = FundingInterval(1, INTERVAL_FROM_VENUE)
    assert FundingInterval.from_metadata(venue.metadata(), 8) == venue
    # Dagster metadata values read the same as plain ones
    wrapped = {k: type("V", (), {"value": v})() for k, v in venue.metadata().items()}
    assert FundingInterval.from_metadata(wrapped, 8) == venue
    # a build that fell back judges on this check's own setting, keeping the build's note
    fell = FundingInterval(8, INTERVAL_FROM_SETTING, "bybit-linear instrument info unavailable")
    got = FundingInterval.from_metadata(fell.metadata(), 4)
    assert (got.hours, got.source, got.note) == (4, "setting", fell.note)
    old = FundingInterval.from_metadata({"dagster/row_count": 3}, 8)
    assert (old.hours, old.source) == (8, "setting") and "recorded no funding interval" in old.note


class BybitRest:
    """Bybit's REST as the funding asset sees it: instrument info and the day's settlements."""

    def __init__(self, frame: pd.DataFrame, info_error: Exception | None = None):
        self.frame, self.info_error, self.info_calls, self.closed = frame, info_error, 0, 0

    def exchange_info(self):
        self.info_calls += 1
        if self.info_error is not None:
            raise self.info_error
        return bybit_info()

    def funding_rates(self, symbol, start_ms, end_ms):
        t = self.frame["funding_time"].astype("datetime64[ms, UTC]").astype("int64")
        return self.frame[(t >= start_ms) & (t < end_ms)].reset_index(drop=True)

    def close(self):
        self.closed += 1


class BybitPort:
    def __init__(self, rest: BybitRest):
        self._rest = rest

    def settings(self):
        from petrosa_pipelines.settings import Settings

        return Settings(symbols=("bybit-linear:*",))

    def rest(self, venue=None):
        assert venue == "bybit-linear", venue
        return self._rest

    def archive(self, venue=None):
        return None


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(md_assets, "FUNDING_INTERVALS", FundingIntervals())
    monkeypatch.delenv("PETROSA_FUNDING_INTERVAL_HOURS", raising=False)


def test_the_funding_asset_fills_a_one_hour_symbol_to_its_own_grid(fresh_cache):
    rest = BybitRest(bybit_funding("ACEUSDT", 1).assign(source="rest"))
    frame, meta = materialise_partition(
        "funding", f"{DAY}|bybit-linear:ACEUSDT", MarketDataConfig(), BybitPort(rest), None,
        now_ms=AFTER,
    )  # fmt: skip
    # all 24 settlements (on the global 8 h grid the fill asked REST for only 3 of them)
    assert len(frame) == 24 and meta["missing_range_count"] == 0
    assert (meta["funding_interval_hours"], meta["funding_interval_source"]) == (1, "venue")
    assert "funding_interval_note" not in meta
    # a second partition of the venue reuses the instrument info (one request per process/hour)
    materialise_partition(
        "funding", f"{DAY}|bybit-linear:ACEUSDT", MarketDataConfig(), BybitPort(rest), None,
        now_ms=AFTER,
    )  # fmt: skip
    assert rest.info_calls == 1
    # the check reads the interval back from the build and passes the day
    o = by_name(
        audit_dataset(
            "funding", frame, START, END, AFTER, S, exchange="bybit-linear",
            funding_interval=FundingInterval.from_metadata(meta, S.funding_interval_hours),
        )
    )["funding_interval_respected"]  # fmt: skip
    assert o.passed and o.counts["expected_settlements"] == 24


def test_the_funding_asset_survives_an_instrument_info_outage_and_says_so(fresh_cache):
    rest = BybitRest(bybit_funding("ACEUSDT", 1).assign(source="rest"), ConnectionError("503"))
    frame, meta = materialise_partition(
        "funding", f"{DAY}|bybit-linear:ACEUSDT", MarketDataConfig(), BybitPort(rest), None,
        now_ms=AFTER,
    )  # fmt: skip
    # the run succeeds on the 8 h setting (what every run did before): it asks REST for the 3
    # settlements that grid expects, and says why in the metadata the check reads back
    assert len(frame) == 3
    assert (meta["funding_interval_hours"], meta["funding_interval_source"]) == (8, "setting")
    assert "unavailable" in meta["funding_interval_note"]


def test_a_run_config_interval_overrides_the_venue(fresh_cache):
    rest = BybitRest(bybit_funding("ACEUSDT", 1).assign(source="rest"))
    _, meta = materialise_partition(
        "funding", f"{DAY}|bybit-linear:ACEUSDT", MarketDataConfig(funding_interval_hours=4),
        BybitPort(rest), None, now_ms=AFTER,
    )  # fmt: skip
    assert (meta["funding_interval_hours"], meta["funding_interval_source"]) == (4, "run config")
    assert rest.info_calls == 0
