"""The failover fill: landing, archive, REST; confirmed ranges; dedup; errors recorded."""

import datetime as dt

import pandas as pd
import pytest

from petrosa_pipelines.catalog.schemas import CANDLES, TRADES
from petrosa_pipelines.lib.timeutil import DAY_MS, MINUTE_MS, day_start_ms
from petrosa_pipelines.market_data.datasets import CandlesSpec, FundingSpec, TradesSpec
from petrosa_pipelines.market_data.fill import (
    HistorySource,
    PartitionWindow,
    SourceAnswer,
    dedup,
    fill_partition,
    subtract_ranges,
)

DAY = dt.date(2024, 1, 2)
START = day_start_ms(DAY)
CLOSED = PartitionWindow(day=DAY, symbol="BTCUSDT", now_ms=START + 2 * DAY_MS)


def candles(minutes, source="ws"):
    rows = []
    for m in minutes:
        t = START + m * MINUTE_MS
        rows.append(
            dict(
                exchange="binance",
                symbol="BTCUSDT",
                interval="1m",
                open_time=t,
                close_time=t + MINUTE_MS - 1,
                open=1.0,
                high=2.0,
                low=0.5,
                close=1.5,
                volume=3.0,
                quote_volume=4.0,
                trade_count=5,
                taker_buy_volume=1.0,
                taker_buy_quote_volume=1.0,
                source=source,
                received_at=None,
            )
        )
    frame = pd.DataFrame(rows, columns=CANDLES.column_names)
    frame["open_time"] = pd.to_datetime(frame["open_time"], unit="ms", utc=True)
    frame["close_time"] = pd.to_datetime(frame["close_time"], unit="ms", utc=True)
    return frame


class FakeSource(HistorySource):
    def __init__(self, name, frame, confirms=True, closed_only=False, error=None):
        self.name, self.frame, self.confirms = name, frame, confirms
        self.closed_only, self.error, self.calls = closed_only, error, []

    def available(self, window):
        return window.closed or not self.closed_only

    def fetch(self, window, missing):
        self.calls.append(list(missing))
        if self.error:
            raise self.error
        return SourceAnswer(self.frame, list(missing) if self.confirms else [])


def test_subtract_ranges():
    assert subtract_ranges([(0, 10)], [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert subtract_ranges([(0, 10)], [(0, 10)]) == []
    assert subtract_ranges([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]


def test_landing_complete_day_asks_nobody_else():
    landing = FakeSource("ws", candles(range(1440)), confirms=False)
    archive = FakeSource("archive", candles(range(1440), "archive"))
    result = fill_partition(CandlesSpec(), CLOSED, [landing, archive])
    assert len(result.frame) == 1440
    assert archive.calls == []
    assert result.missing == []
    assert result.source_mix() == {"ws": 1440}


def test_gap_in_landing_filled_by_next_source_for_exactly_the_missing_minutes():
    have = [m for m in range(1440) if not 100 <= m < 110]
    landing = FakeSource("ws", candles(have), confirms=False)
    rest = FakeSource("rest", candles(range(100, 110), "rest"))
    result = fill_partition(CandlesSpec(), CLOSED, [landing, rest])
    assert rest.calls == [[(START + 100 * MINUTE_MS, START + 110 * MINUTE_MS)]]
    assert len(result.frame) == 1440
    assert result.source_mix() == {"rest": 10, "ws": 1430}
    assert result.frame["open_time"].is_monotonic_increasing


def test_archive_skipped_for_open_day_and_errors_recorded():
    open_window = PartitionWindow(day=DAY, symbol="BTCUSDT", now_ms=START + 60 * MINUTE_MS + 5)
    archive = FakeSource("archive", candles(range(1440), "archive"), closed_only=True)
    broken = FakeSource("rest", None, error=ConnectionError("down"))
    result = fill_partition(CandlesSpec(), open_window, [archive, broken])
    assert archive.calls == []
    assert result.attempts[0]["skipped"]
    assert "ConnectionError" in result.attempts[1]["error"]
    assert result.missing == [(START, START + 60 * MINUTE_MS)]
    assert result.frame.empty


def test_dedup_keeps_first_source_and_is_deterministic():
    a = candles(range(5), "ws")
    b = candles(range(3, 8), "archive")
    both = pd.concat([b, a], ignore_index=True)
    first = dedup(pd.concat([a, b], ignore_index=True), CANDLES, "first")
    assert list(first["source"]) == ["ws"] * 5 + ["archive"] * 3
    last = dedup(pd.concat([a, b], ignore_index=True), CANDLES, "last")
    assert list(last["source"]) == ["ws"] * 3 + ["archive"] * 5
    shuffled = a.sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(dedup(shuffled, CANDLES), dedup(a, CANDLES))
    assert len(dedup(both, CANDLES)) == 8


def trades(ids, times):
    frame = pd.DataFrame(
        dict(
            exchange="binance",
            symbol="BTCUSDT",
            agg_trade_id=ids,
            price=1.0,
            quantity=1.0,
            first_trade_id=ids,
            last_trade_id=ids,
            trade_time=pd.to_datetime([START + t for t in times], unit="ms", utc=True),
            is_buyer_maker=False,
            source="ws",
            received_at=pd.NaT,
        ),
        columns=TRADES.column_names,
    )
    return frame


def test_trade_id_gap_is_missing_even_where_time_looks_covered():
    frame = trades([1, 2, 5, 6], [0, 1000, 5000, DAY_MS - 1])
    gaps = TradesSpec().intrinsic_gaps(frame, CLOSED)
    assert gaps == [(START + 1000, START + 5001)]
    assert TradesSpec().missing(frame, CLOSED, confirmed=[(START, START + DAY_MS)]) == gaps


def test_known_gap_from_ledger_is_refetched():
    frame = trades(list(range(1, 101)), [i * 1000 for i in range(100)])
    landing = FakeSource("ws", frame, confirms=False)
    rest = FakeSource("rest", trades([], []))
    ledger_gap = (START + 10_000, START + 20_000)
    fill_partition(TradesSpec(), CLOSED, [landing, rest], known_gaps=[ledger_gap])
    assert ledger_gap in rest.calls[0]


def test_funding_needs_each_settlement_with_tolerance():
    spec = FundingSpec(8)
    assert spec.expected_times(CLOSED) == [START, START + 8 * 3_600_000, START + 16 * 3_600_000]
    with pytest.raises(ValueError, match="interval_hours"):
        FundingSpec(3)


def test_rest_beyond_its_reach_confirms_nothing():
    """aggTrades REST answers [] for old windows: that must stay a gap, not a quiet market."""
    from petrosa_pipelines.market_data.sources import RestSource

    class EmptyRest:
        def __init__(self):
            self.calls = []

        def agg_trades(self, symbol, start, end):
            self.calls.append((start, end))
            return trades([], [])

    now = START + DAY_MS + 6 * 3_600_000  # 06:00 the next day: reach covers from 06:00 today
    window = PartitionWindow(day=DAY, symbol="BTCUSDT", now_ms=now)
    client = EmptyRest()
    result = fill_partition(TradesSpec(), window, [RestSource(client, "trades", 24 * 3_600_000)])
    assert client.calls == [(START + 6 * 3_600_000, START + DAY_MS)]
    # an empty answer inside the reach proves nothing either (issue 11 item 2)
    assert result.missing == [(START, START + DAY_MS)]
    old = PartitionWindow(day=DAY, symbol="BTCUSDT", now_ms=START + 5 * DAY_MS)
    client = EmptyRest()
    result = fill_partition(TradesSpec(), old, [RestSource(client, "trades", 24 * 3_600_000)])
    assert client.calls == [] and result.missing == [(START, START + DAY_MS)]


def test_dedup_rule_from_run_config_else_setting(monkeypatch):
    from petrosa_pipelines.market_data.assets import MarketDataConfig, dedup_keep
    from petrosa_pipelines.settings import SettingError

    monkeypatch.delenv("PETROSA_DEDUP_KEEP", raising=False)
    assert dedup_keep(MarketDataConfig()) == "first"
    monkeypatch.setenv("PETROSA_DEDUP_KEEP", "last")
    assert dedup_keep(MarketDataConfig()) == "last"
    assert dedup_keep(MarketDataConfig(dedup_keep="first")) == "first"
    monkeypatch.setenv("PETROSA_DEDUP_KEEP", "newest")
    with pytest.raises(SettingError, match="PETROSA_DEDUP_KEEP"):
        dedup_keep(MarketDataConfig())
