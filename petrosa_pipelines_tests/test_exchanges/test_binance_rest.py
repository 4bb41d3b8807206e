"""BinanceRestClient: paging, weights, closed candles, parsing, errors.

Two layers: a scripted fake (exact shapes and malformed bodies) and the project's local exchange
(realistic paging, weights, 429 bursts and the used-weight header over real HTTP).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import petrosa_pipelines.local_exchange as local_exchange
import petrosa_pipelines.local_exchange.venues.binance.rest as binance_wire
from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, ExchangeError, MessageError
from petrosa_pipelines.exchanges.binance.bodies import parse_depth, parse_exchange_info
from petrosa_pipelines.exchanges.binance.rest import (
    USED_WEIGHT_HEADER,
    BinanceRestClient,
    budget_from_settings,
    depth_weight,
    kline_weight,
    plan_kline_limit,
)
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, day_window_ms
from petrosa_pipelines.settings import ExchangeEndpoints, RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import (
    FakeClock,
    FakeServer,
    Reply,
    Request,
)

REST_FIXTURES = Path(__file__).parents[1] / "fixtures" / "binance" / "rest"
DAY = dt.date(2024, 1, 2)
REST = RestSettings(max_retries=3)


def _client(url: str, clock: FakeClock | None = None, **kw) -> BinanceRestClient:
    clock = clock or FakeClock()
    return BinanceRestClient(
        ExchangeEndpoints(rest_base_url=url),
        kw.pop("rest", REST),
        clock=clock.time,
        sleep=clock.sleep,
        rng=lambda: 1.0,
        **kw,
    )


def _assert_frame(frame: pd.DataFrame, schema: schemas.DatasetSchema) -> None:
    assert list(frame.columns) == schema.column_names
    pd.testing.assert_frame_equal(frame, schemas.conform(frame, schema))


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("limit", "weight"), [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10)]
)
def test_kline_weight_tiers(limit, weight):
    assert kline_weight(limit) == weight


@pytest.mark.unit
def test_plan_kline_limit_picks_cheapest_weight_per_row():
    assert plan_kline_limit(1440) == (499, 2)  # 3 x 2 = 6 beats 1500@10 and 2 x 1000@5
    assert plan_kline_limit(442) == (442, 2)
    assert plan_kline_limit(60) == (60, 1)
    assert plan_kline_limit(1) == (1, 1)
    assert plan_kline_limit(150) == (150, 2)  # one request @2 beats two @1


@pytest.mark.unit
def test_depth_weight_by_limit():
    assert [depth_weight(n) for n in (5, 50, 100, 500, 1000)] == [2, 2, 5, 10, 20]
    with pytest.raises(ValueError):
        depth_weight(7)


@pytest.mark.playback
def test_parse_real_exchange_info():
    body = json.loads((REST_FIXTURES / "exchangeInfo_2021-04-17.json").read_bytes())
    info = parse_exchange_info(body)
    assert len(info.symbols) == 113
    assert len(info.perpetual_symbols()) == 110  # 2 quarterlies and 1 pending excluded
    btc = next(s for s in info.symbols if s.symbol == "BTCUSDT")
    assert (btc.tick_size, btc.step_size) == (Decimal("0.01"), Decimal("0.001"))
    assert btc.base_asset == "BTC" and btc.onboard_time == 1569398400000
    assert info.weight_limit_per_minute() == 2400
    assert info.server_time == 1618677447220


@pytest.mark.playback
def test_parse_real_depth_snapshot_exact_decimals():
    raw = (REST_FIXTURES / "depth_DENTUSDT_2021-04-17.json").read_bytes()
    snap = parse_depth(json.loads(raw), "DENTUSDT", received_at=5)
    assert isinstance(snap, DepthSnapshotRecord)
    assert snap.last_update_id == 335340606638
    assert (snap.event_time, snap.transaction_time) == (1618677448737, 1618677448733)
    assert len(snap.bids) == len(snap.asks) == 1000
    assert snap.bids[0] == (Decimal("0.012341"), Decimal("45277"))
    assert snap.asks[0][0] == Decimal("0.012354")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"bids": [], "asks": []}, "lastUpdateId"),
        ({"lastUpdateId": 1, "bids": [["1.0"]], "asks": []}, "bids"),
        ({"lastUpdateId": 1, "bids": [["x", "1"]], "asks": []}, "bids[0].price"),
        ({"lastUpdateId": 1, "bids": [], "asks": [["1", 2]]}, "asks[0].qty"),
        ({"lastUpdateId": "1", "bids": [], "asks": []}, "lastUpdateId"),
    ],
)
def test_malformed_depth_names_field(body, field):
    with pytest.raises(MessageError) as info:
        parse_depth(body, "BTCUSDT")
    assert info.value.field == field


# ---------------------------------------------------------------------------------------------
# Scripted fake exchange
# ---------------------------------------------------------------------------------------------


class FakeMarket:
    """Just enough of fapi for paging tests; counts weight per fake-clock minute."""

    def __init__(self, clock: FakeClock, now_ms: int):
        self.clock = clock
        self.now_ms = now_ms
        self.used: dict[int, int] = {}
        self.trades = self._make_trades()

    def _make_trades(self) -> list[dict]:
        # trades only from 02:00 on 2024-01-02: the first two hourly windows are empty
        start = day_window_ms(DAY)[0] + 2 * HOUR_MS
        times = start + np.arange(2500) * 5_000  # one trade every 5 s, ~3.5 h
        return [
            {
                "a": 100 + i,
                "p": f"{40000 + i % 7}.10",
                "q": "0.001",
                "f": 10 + 2 * i,
                "l": 11 + 2 * i,
                "T": int(t),
                "m": bool(i % 2),
            }
            for i, t in enumerate(times)
        ]

    def _reply(self, body, weight: int) -> Reply:
        minute = int(self.clock.time() // 60)
        self.used[minute] = self.used.get(minute, 0) + weight
        return Reply(200, body, {USED_WEIGHT_HEADER: str(self.used[minute])})

    def time(self, req: Request) -> Reply:
        return self._reply({"serverTime": self.now_ms}, 1)

    def klines(self, req: Request) -> Reply:
        q = req.query
        limit = int(q["limit"])
        start, end = int(q["startTime"]), int(q["endTime"])
        first = -(-start // MINUTE_MS) * MINUTE_MS
        rows = []
        t = first
        while t <= min(end, self.now_ms) and len(rows) < limit:
            rows.append(
                [
                    t,
                    "1.10",
                    "1.20",
                    "1.00",
                    "1.15",
                    "10.5",
                    t + MINUTE_MS - 1,
                    "11.5",
                    3,
                    "5.0",
                    "5.5",
                    "0",
                ]
            )
            t += MINUTE_MS
        return self._reply(rows, kline_weight(limit))

    def agg_trades(self, req: Request) -> Reply:
        q = req.query
        limit = int(q["limit"])
        if "fromId" in q:
            rows = [t for t in self.trades if t["a"] >= int(q["fromId"])]
        else:
            s, e = int(q["startTime"]), int(q["endTime"])
            assert e - s < HOUR_MS
            rows = [t for t in self.trades if s <= t["T"] <= e]
        return self._reply(rows[:limit], 20)

    def install(self, server: FakeServer) -> None:
        server.routes["/fapi/v1/time"] = self.time
        server.routes["/fapi/v1/klines"] = self.klines
        server.routes["/fapi/v1/aggTrades"] = self.agg_trades


@pytest.mark.unit
def test_fake_klines_day_paging_and_weights():
    clock = FakeClock()
    start, end = day_window_ms(DAY)
    market = FakeMarket(clock, now_ms=end + 10 * DAY_MS)
    with FakeServer() as server:
        market.install(server)
        client = _client(server.url, clock)
        frame = client.klines("BTCUSDT", start, end)
    _assert_frame(frame, schemas.CANDLES)
    assert len(frame) == 1440
    kline_reqs = [r for r in server.requests if r.path == "/fapi/v1/klines"]
    assert [r.query["limit"] for r in kline_reqs] == ["499", "499", "442"]
    assert client.transport.used_weights[-1] == 1 + 6  # time + 3 pages @2
    assert (frame["source"] == "rest").all() and frame["received_at"].notna().all()
    assert frame["open"].iloc[0] == 1.10 and frame["trade_count"].iloc[0] == 3


@pytest.mark.unit
def test_fake_klines_exclude_in_progress_candle():
    clock = FakeClock()
    start, end = day_window_ms(DAY)
    now = start + 10 * MINUTE_MS + 30_000  # 00:10:30: the 00:10 candle is still open
    market = FakeMarket(clock, now_ms=now)
    with FakeServer() as server:
        market.install(server)
        frame = _client(server.url, clock).klines("BTCUSDT", start, end)
    assert len(frame) == 10
    assert frame["close_time"].max() < pd.Timestamp(now, unit="ms", tz="UTC")


@pytest.mark.unit
def test_fake_agg_trades_skip_empty_hours_then_page_by_id():
    clock = FakeClock()
    start, end = day_window_ms(DAY)
    market = FakeMarket(clock, now_ms=end)
    with FakeServer() as server:
        market.install(server)
        frame = _client(server.url, clock).agg_trades("BTCUSDT", start, start + 4 * HOUR_MS)
    _assert_frame(frame, schemas.TRADES)
    agg = [r for r in server.requests if r.path == "/fapi/v1/aggTrades"]
    assert [("fromId" in r.query) for r in agg[:3]] == [False, False, False]
    assert all("fromId" in r.query for r in agg[3:])
    assert int(agg[1].query["startTime"]) == start + HOUR_MS
    ids = frame["agg_trade_id"].to_numpy()
    expected = [t["a"] for t in market.trades if t["T"] < start + 4 * HOUR_MS]
    assert ids.tolist() == expected
    assert (np.diff(ids) == 1).all()


@pytest.mark.unit
def test_fake_agg_trades_empty_range():
    clock = FakeClock()
    start, _ = day_window_ms(DAY)
    market = FakeMarket(clock, now_ms=start + DAY_MS)
    with FakeServer() as server:
        market.install(server)
        frame = _client(server.url, clock).agg_trades("BTCUSDT", start, start + 2 * HOUR_MS)
    assert frame.empty and list(frame.columns) == schemas.TRADES.column_names
    assert len(server.requests) == 2  # two empty hourly windows


@pytest.mark.unit
def test_fake_funding_empty_mark_price_is_null_and_pages():
    clock = FakeClock()
    start = day_window_ms(DAY)[0]
    rows = [
        {
            "symbol": "BTCUSDT",
            "fundingTime": start + i * 8 * HOUR_MS + (6 if i == 0 else 0),
            "fundingRate": "0.00010000",
            "markPrice": "" if i % 2 else "42000.12345678",
        }
        for i in range(1500)
    ]

    def funding(req: Request) -> Reply:
        s, e, lim = (int(req.query[k]) for k in ("startTime", "endTime", "limit"))
        return Reply(200, [r for r in rows if s <= r["fundingTime"] <= e][:lim])

    with FakeServer() as server:
        server.routes["/fapi/v1/fundingRate"] = funding
        frame = _client(server.url, clock).funding_rates(
            "BTCUSDT", start, start + 1500 * 8 * HOUR_MS
        )
    _assert_frame(frame, schemas.FUNDING)
    assert len(frame) == 1500 and len(server.requests) == 2
    assert frame["mark_price"].isna().sum() == 750
    assert frame["mark_price"].iloc[0] == 42000.12345678
    assert frame["funding_time"].iloc[0] == pd.Timestamp(start + 6, unit="ms", tz="UTC")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/fapi/v1/klines", [[1, "x", "1", "1", "1", "1", 2, "1", 1, "1", "1", "0"]], "open"),
        (
            "/fapi/v1/klines",
            [[1, "1", "1", "1", "1", "1", "2", "1", 1, "1", "1", "0"]],
            "close_time",
        ),
        ("/fapi/v1/klines", [[1, "1"]], "klines"),
        ("/fapi/v1/klines", {"code": 0}, "klines"),
    ],
)
def test_malformed_klines_body_names_field(route, body, field):
    clock = FakeClock()
    with FakeServer() as server:
        server.routes["/fapi/v1/time"] = [Reply(200, {"serverTime": 10**13})]
        server.routes[route] = [Reply(200, body)]
        with pytest.raises(MessageError) as info:
            _client(server.url, clock).klines("BTCUSDT", 0, MINUTE_MS)
    assert info.value.field == field


@pytest.mark.unit
@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"a": 1, "p": "1", "q": "1", "f": 1, "l": 1, "T": 5, "m": True}, None),
        ({"a": 1, "q": "1", "f": 1, "l": 1, "T": 5, "m": True}, "p"),
        ({"a": 1, "p": "abc", "q": "1", "f": 1, "l": 1, "T": 5, "m": True}, "price"),
        ({"a": 1, "p": "1", "q": "1", "f": 1, "l": 1, "T": "5", "m": True}, "T"),
        ({"a": 1, "p": "1", "q": "1", "f": 1, "l": 1, "T": 5, "m": "yes"}, "m"),
    ],
)
def test_malformed_agg_trades_names_field(row, field):
    clock = FakeClock()
    with FakeServer() as server:
        server.routes["/fapi/v1/aggTrades"] = lambda req: Reply(
            200, [] if "fromId" in req.query else [row]
        )
        client = _client(server.url, clock)
        if field is None:
            assert len(client.agg_trades("BTCUSDT", 0, 10)) == 1
            return
        with pytest.raises(MessageError) as info:
            client.agg_trades("BTCUSDT", 0, 10)
    assert info.value.field == field


@pytest.mark.unit
def test_agg_trades_page_going_backwards_is_refused():
    """A server repeating a page would otherwise make fromId paging loop forever."""
    clock = FakeClock()
    row = {"a": 7, "p": "1", "q": "1", "f": 1, "l": 1, "T": 5, "m": True}
    with FakeServer() as server:
        server.routes["/fapi/v1/aggTrades"] = [Reply(200, [row])]
        with pytest.raises(MessageError) as info:
            _client(server.url, clock).agg_trades("BTCUSDT", 0, 10)
    assert info.value.field == "a"


@pytest.mark.unit
def test_funding_malformed_rate_names_field():
    clock = FakeClock()
    with FakeServer() as server:
        server.routes["/fapi/v1/fundingRate"] = [
            Reply(200, [{"symbol": "X", "fundingTime": 1, "fundingRate": None, "markPrice": ""}])
        ]
        with pytest.raises(MessageError) as info:
            _client(server.url, clock).funding_rates("X", 0, 10)
    assert info.value.field == "funding_rate"


# ---------------------------------------------------------------------------------------------
# Against the local exchange
# ---------------------------------------------------------------------------------------------

LocalExchange = local_exchange.LocalExchange
MarketConfig = local_exchange.MarketConfig
Faults = local_exchange.Faults
SimulatedClock = local_exchange.SimulatedClock

NOW = "2024-01-03T12:00:30+00:00"
NOW_MS = int(dt.datetime.fromisoformat(NOW).timestamp() * 1000)


@pytest.fixture
def exchange():
    with LocalExchange(
        market=MarketConfig(
            seed=7, symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=20_000, start_date="2024-01-01"
        ),
        faults=Faults(),
        host="127.0.0.1",
        port=0,
        clock=SimulatedClock(NOW_MS),
    ) as ex:
        yield ex


def _local_client(ex, clock: FakeClock | None = None, **kw) -> BinanceRestClient:
    endpoints = ExchangeEndpoints(rest_base_url=ex.rest_base_url)
    if clock is None:
        return BinanceRestClient(endpoints, kw.pop("rest", REST), **kw)
    return BinanceRestClient(
        endpoints, kw.pop("rest", REST), clock=clock.time, sleep=clock.sleep, **kw
    )


def _log(ex, path: str) -> list[tuple]:
    return [entry for entry in ex.request_log if entry[0] == path]


@pytest.mark.integration
def test_local_day_of_1m_klines_is_1440_rows(exchange):
    start, end = day_window_ms(DAY)
    client = _local_client(exchange)
    frame = client.klines("BTCUSDT", start, end)
    _assert_frame(frame, schemas.CANDLES)
    assert len(frame) == 1440
    opens = frame["open_time"].astype("int64").to_numpy()
    assert opens[0] == start and (np.diff(opens) == MINUTE_MS).all()
    expected = exchange.market.klines("BTCUSDT", "1m", start, end - 1)
    assert frame["close"].tolist() == [float(x) for x in expected["close"]]
    assert frame["trade_count"].tolist() == expected["count"].astype(int).tolist()
    kl = _log(exchange, "/fapi/v1/klines")
    assert [e[1]["limit"] for e in kl] == ["499", "499", "442"]
    assert sum(e[2] for e in kl) == 6
    assert all(e[3] == 200 for e in exchange.request_log)
    assert max(client.transport.used_weights) <= client.budget.budget_per_window


@pytest.mark.integration
def test_local_klines_today_only_closed(exchange):
    start, end = day_window_ms(dt.date(2024, 1, 3))
    frame = _local_client(exchange).klines("ETHUSDT", start, end)
    assert len(frame) == 720  # 00:00 .. 11:59; the 12:00 candle is still open at 12:00:30
    assert frame["close_time"].max() < pd.Timestamp(NOW_MS, unit="ms", tz="UTC")


@pytest.mark.integration
def test_local_klines_hourly_interval(exchange):
    start, end = day_window_ms(DAY)
    frame = _local_client(exchange).klines("BTCUSDT", start, end, interval="1h")
    assert len(frame) == 24 and (frame["interval"] == "1h").all()
    assert _log(exchange, "/fapi/v1/klines")[0][1]["limit"] == "24"


@pytest.mark.integration
def test_local_agg_trades_across_hours_consecutive(exchange):
    start = NOW_MS - 6 * HOUR_MS - 123_456
    end = NOW_MS - HOUR_MS
    client = _local_client(exchange)
    frame = client.agg_trades("BTCUSDT", start, end)
    _assert_frame(frame, schemas.TRADES)
    ids = frame["agg_trade_id"].to_numpy()
    assert len(ids) > 3000
    assert (np.diff(ids) == 1).all(), "gap or duplicate in aggTrade ids"
    times = frame["trade_time"].astype("int64").to_numpy()
    assert times.min() >= start and times.max() < end
    truth = exchange.market.trades_between("BTCUSDT", start, end - 1)
    assert ids.tolist() == truth.agg_id.tolist()
    agg = _log(exchange, "/fapi/v1/aggTrades")
    assert "startTime" in agg[0][1] and all("fromId" in e[1] for e in agg[1:])
    assert all(e[2] == 20 for e in agg)
    assert max(client.transport.used_weights) <= client.budget.budget_per_window


@pytest.mark.integration
def test_local_agg_trades_before_listing_moves_hour_by_hour():
    with LocalExchange(
        market=MarketConfig(
            seed=7, symbols=("BTCUSDT",), trades_per_day=2_000, start_date="2024-01-01"
        ),
        clock=SimulatedClock("2024-01-01T12:00:00+00:00"),
    ) as ex:
        start = int(dt.datetime(2023, 12, 31, 22, tzinfo=dt.UTC).timestamp() * 1000)
        frame = _local_client(ex).agg_trades("BTCUSDT", start, start + 4 * HOUR_MS)
        truth = ex.market.trades_between("BTCUSDT", start, start + 4 * HOUR_MS - 1)
        agg = _log(ex, "/fapi/v1/aggTrades")
    assert frame["agg_trade_id"].tolist() == truth.agg_id.tolist()
    assert [int(e[1]["startTime"]) for e in agg[:3]] == [
        start,
        start + HOUR_MS,
        start + 2 * HOUR_MS,
    ]


@pytest.mark.integration
def test_local_funding_rates_match_market_and_page():
    with LocalExchange(
        market=MarketConfig(
            seed=7, symbols=("BTCUSDT",), trades_per_day=50, start_date="2024-01-01"
        ),
        clock=SimulatedClock("2025-03-01T00:00:00+00:00"),
    ) as ex:
        start = ex.market.start_ms
        end = start + 400 * DAY_MS
        frame = _local_client(ex).funding_rates("BTCUSDT", start, end)
        truth = ex.market.funding("BTCUSDT", start, end - 1)
        requests = _log(ex, "/fapi/v1/fundingRate")
    _assert_frame(frame, schemas.FUNDING)
    assert len(frame) == 1200 and len(requests) == 2
    assert frame["funding_rate"].tolist() == [float(x) for x in truth["funding_rate"]]
    assert frame["mark_price"].tolist() == [float(x) for x in truth["mark_price"]]


@pytest.mark.integration
def test_local_depth_snapshot_and_weight(exchange):
    snap = _local_client(exchange).depth_snapshot("BTCUSDT", limit=100)
    assert len(snap.bids) == len(snap.asks) == 100
    assert snap.bids[0][0] < snap.asks[0][0]
    assert all(isinstance(p, Decimal) for p, _ in snap.bids)
    assert _log(exchange, "/fapi/v1/depth")[0][2] == 5


@pytest.mark.integration
def test_local_exchange_info_sets_budget_limit():
    with LocalExchange(clock=SimulatedClock(NOW_MS), weight_limit_per_minute=1200) as ex:
        client = _local_client(ex)
        info = client.exchange_info()
        assert client.server_time() == NOW_MS
    assert info.perpetual_symbols() == ["BTCUSDT", "ETHUSDT"]
    assert client.budget.limit == 1200
    assert client.budget.budget_per_window == 960


@pytest.mark.integration
def test_local_429_burst_honours_retry_after(exchange):
    exchange.faults.rate_limit_burst = 3
    exchange.faults.retry_after_seconds = 2
    clock = FakeClock()
    client = _local_client(exchange, clock)
    assert client.server_time() == NOW_MS
    assert client.transport.sleeps == [2.0, 2.0, 2.0]
    assert [e[3] for e in exchange.request_log] == [429, 429, 429, 200]


@pytest.mark.integration
def test_local_invalid_symbol_raises_without_retry(exchange):
    client = _local_client(exchange)
    with pytest.raises(ExchangeError) as info:
        client.depth_snapshot("NOPEUSDT", limit=5)
    assert (info.value.status, info.value.code) == (400, -1121)
    assert len(exchange.request_log) == 1


@pytest.mark.integration
def test_local_budget_never_exceeds_limit_over_a_minute_boundary(tmp_path, monkeypatch):
    """A workload heavier than one minute's budget: the client waits for the next window
    instead of drawing a 429; every used-weight header stays within the budget.

    The budget and the local exchange's weight windows read one fake wall clock whose
    ``sleep`` jumps to the boundary, so crossing a minute costs no real minute."""
    start = 1_700_000_000.0  # 20 s into a minute
    wall = FakeClock(start)
    monkeypatch.setattr(binance_wire, "time", wall)  # the server's minute windows
    with LocalExchange(
        market=MarketConfig(
            seed=7, symbols=("BTCUSDT",), trades_per_day=20_000, start_date="2024-01-01"
        ),
        clock=SimulatedClock(NOW_MS),
        weight_limit_per_minute=150,
    ) as ex:
        rest = RestSettings(weight_budget_fraction=0.8, weight_limit_per_minute=2400)
        budget = budget_from_settings(rest, shared_dir=tmp_path, clock=wall.time, sleep=wall.sleep)
        endpoints = ExchangeEndpoints(rest_base_url=ex.rest_base_url)
        client = BinanceRestClient(endpoints, rest, budget, clock=wall.time, sleep=wall.sleep)
        client.exchange_info()  # adopts the exchange's 150/min -> budget 120
        assert budget.budget_per_window == 120
        frame = client.agg_trades("BTCUSDT", NOW_MS - 9 * HOUR_MS, NOW_MS - HOUR_MS)
        statuses = [e[3] for e in ex.request_log]
    used = client.transport.used_weights
    assert (np.diff(frame["agg_trade_id"].to_numpy()) == 1).all()
    assert statuses.count(200) == len(statuses), "a request was refused (429/418)"
    assert len(used) >= 8
    assert max(used) <= 120
    assert budget.sleeps, "the workload needed more than one minute window"
    assert wall.now // 60 > start // 60, "the workload stayed inside one minute"
    assert (np.diff(used) < 0).any(), "the server's minute window never reset"
