"""BybitRestClient: newest-first paging, closed candles by Bybit's clock, cursor paging,
retCode errors and the IP limit, against a scripted fake v5 server and the v5 doc examples."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    ExchangeError,
    FundingRecord,
    MessageError,
    TradeRecord,
)
from petrosa_pipelines.exchanges.bybit.bodies import (
    parse_funding,
    parse_instruments,
    parse_klines,
    parse_orderbook,
    parse_recent_trades,
)
from petrosa_pipelines.exchanges.bybit.rest import (
    IP_BAN_SECONDS,
    IP_LIMIT_REQUESTS,
    RATE_MODEL,
    BybitRestClient,
)
from petrosa_pipelines.exchanges.ratelimit import RateLimitedError
from petrosa_pipelines.lib.endpoints import RestSettings
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from petrosa_pipelines_tests.test_exchanges.fake_binance import (
    FakeClock,
    FakeServer,
    Reply,
    Request,
)

pytestmark = pytest.mark.unit

REST = Path(__file__).parents[1] / "fixtures" / "bybit" / "rest"
DAY0 = 1_786_233_600_000  # 2026-08-09T00:00:00Z
REST_SETTINGS = RestSettings(max_retries=3)


def _body(result, code: int = 0, msg: str = "OK", now: int = DAY0 + DAY_MS + HOUR_MS) -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}


def _ms(column) -> np.ndarray:
    return column.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _client(url: str, clock: FakeClock | None = None, rest: RestSettings = REST_SETTINGS):
    clock = clock or FakeClock(DAY0 / 1000 + 2 * DAY_MS / 1000)
    return BybitRestClient(url, rest, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0)


class FakeV5:
    """Just enough of Bybit's v5 market REST: klines from ``listed`` to ``now``, funding every
    8 h, instruments in cursor pages of 3; answers newest first as Bybit does."""

    def __init__(self, now_ms: int, listed_ms: int = DAY0 - DAY_MS) -> None:
        self.now_ms, self.listed_ms = now_ms, listed_ms
        self.instrument_body = json.loads((REST / "instruments-info_linear_cut.json").read_bytes())

    def kline(self, req: Request) -> Reply:
        q = req.query
        assert q["category"] == "linear" and q["interval"] == "1"
        start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])
        assert limit <= 1000
        first = max(-(-start // MINUTE_MS) * MINUTE_MS, self.listed_ms)
        last = min(end, self.now_ms) // MINUTE_MS * MINUTE_MS
        opens = list(range(last, first - 1, -MINUTE_MS))[:limit]  # newest first
        rows = [
            [
                str(t),
                "65000.1",
                "65010",
                "64990.5",
                f"65000.{t // MINUTE_MS % 10}",
                "1.5",
                "97500.15",
            ]
            for t in opens
        ]
        return Reply(
            200, _body({"symbol": q["symbol"], "category": "linear", "list": rows}, now=self.now_ms)
        )

    def funding(self, req: Request) -> Reply:
        q = req.query
        if "endTime" not in q:
            return Reply(200, _body({}, 10001, "params error: startTime only"))
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
        times = [t for t in range(self.listed_ms, self.now_ms, 8 * HOUR_MS) if start <= t <= end]
        rows = [
            {
                "symbol": q["symbol"],
                "fundingRate": f"0.000{t // HOUR_MS % 9 + 1}",
                "fundingRateTimestamp": str(t),
            }
            for t in reversed(times)
        ][:limit]
        return Reply(200, _body({"category": "linear", "list": rows}))

    def instruments(self, req: Request) -> Reply:
        rows = self.instrument_body["result"]["list"]
        at = int(req.query.get("cursor") or 0)
        page = rows[at : at + 3]
        cursor = str(at + 3) if at + 3 < len(rows) else ""
        return Reply(200, _body({"category": "linear", "list": page, "nextPageCursor": cursor}))

    def install(self, server: FakeServer) -> None:
        server.routes["/v5/market/kline"] = self.kline
        server.routes["/v5/market/funding/history"] = self.funding
        server.routes["/v5/market/instruments-info"] = self.instruments


# -- doc examples (doc-built fixtures) ----------------------------------------------------------


def _doc(name: str) -> dict:
    return json.loads((REST / f"doc_{name}.json").read_bytes())


def test_doc_kline_example_oldest_first_and_closed_by_server_time():
    body = _doc("kline")
    got = parse_klines(body["result"], "BTCUSD", "1h", server_now=1670608800000 + HOUR_MS - 1)
    assert [c.open_time for c in got] == [1670601600000, 1670605200000, 1670608800000]
    assert [c.is_closed for c in got] == [True, True, False]  # the newest ends after "now"
    first = got[0]
    assert (first.open, first.high, first.low, first.close) == tuple(
        map(Decimal, ("17086.5", "17088", "16978", "17071.5"))
    )
    assert (first.volume, first.quote_volume, first.close_time) == (
        Decimal("6356"), Decimal("0.37288112"), 1670601600000 + HOUR_MS - 1,
    )  # fmt: skip
    assert (first.trade_count, first.taker_buy_volume, first.source) == (0, 0, "rest")


def test_doc_funding_recent_trade_and_orderbook_examples_exact():
    assert parse_funding(_doc("funding-history")["result"], "ETHPERP", 9) == [
        FundingRecord("bybit-linear", "ETHPERP", 1672041600000, Decimal("0.0001"), None, "rest", 9)
    ]
    trade = parse_recent_trades(_doc("recent-trade")["result"], "BTCUSDT")
    assert trade == [
        TradeRecord(
            "bybit-linear", "BTCUSDT", 123456000, Decimal("16618.49"), Decimal("0.00012"),
            123456000, 123456000, 1672052955758, False, None, "rest", None, "2100000000007764263",
        )
    ]  # fmt: skip
    book = parse_orderbook(_doc("orderbook")["result"], "BTCUSDT", 1)
    assert book == DepthSnapshotRecord(
        "bybit-linear", "BTCUSDT", 230704, 1716863719031, 1716863718905,
        ((Decimal("65485.47"), Decimal("47.081829")),),
        ((Decimal("65557.7"), Decimal("16.606555")),), 1,
    )  # fmt: skip


def test_recent_trades_number_fills_of_one_seq_in_ascending_order():
    rows = [  # newest first, as Bybit answers
        {
            "execId": "c",
            "symbol": "X",
            "price": "1",
            "size": "1",
            "side": "Buy",
            "time": "3",
            "seq": "7",
        },
        {
            "execId": "b",
            "symbol": "X",
            "price": "1",
            "size": "1",
            "side": "Buy",
            "time": "2",
            "seq": "7",
        },
        {
            "execId": "a",
            "symbol": "X",
            "price": "1",
            "size": "2",
            "side": "Sell",
            "time": "1",
            "seq": "5",
        },
    ]
    got = parse_recent_trades({"list": rows}, "X")
    assert [(t.trade_id, t.agg_trade_id, t.is_buyer_maker) for t in got] == [
        ("a", 5000, True), ("b", 7000, False), ("c", 7001, False),
    ]  # fmt: skip


def test_instruments_page_to_symbol_info():
    body = json.loads((REST / "instruments-info_linear_cut.json").read_bytes())
    infos, cursor = parse_instruments(body["result"])
    by = {i.symbol: i for i in infos}
    assert cursor == ""
    btc = by["BTCUSDT"]
    assert (btc.contract_type, btc.status, btc.tick_size, btc.funding_interval_ms) == (
        "PERPETUAL", "TRADING", Decimal("0.10"), 8 * HOUR_MS,
    )  # fmt: skip
    assert by["ACEUSDT"].funding_interval_ms == HOUR_MS
    future = by["BTCUSDT-25DEC26"]
    assert (future.contract_type, future.funding_interval_ms) == ("DELIVERY", None)
    assert by["BTCPERP"].quote_asset == "USDC" and by["BTCPERP"].is_trading_perpetual


@pytest.mark.parametrize(
    ("parse", "result", "field"),
    [
        (parse_klines, {"list": [["1", "2"]]}, "result.list[0]"),
        (parse_klines, {"list": [["x", "1", "1", "1", "1", "1", "1"]]}, "result.list[0][0]"),
        (parse_klines, {"list": [["1", "1", "-1", "1", "1", "1", "1"]]}, "result.list[0][2]"),
        (parse_klines, {}, "result.list"),
        (
            parse_funding,
            {"list": [{"fundingRate": "7", "fundingRateTimestamp": "1"}]},
            "result.list[0].fundingRate",
        ),
        (parse_funding, {"list": [{"fundingRate": "0.1"}]}, "result.list[0].fundingRateTimestamp"),
        (parse_orderbook, {"s": "BTCUSDT", "b": [["1"]], "a": [], "u": 1, "ts": 1}, "result.b[0]"),
        (parse_orderbook, {"s": "ETHUSDT", "b": [], "a": [], "u": 1, "ts": 1}, "result.s"),
        (
            parse_recent_trades,
            {"list": [{"execId": "a", "price": "1", "size": "1", "side": "Up", "time": "1"}]},
            "result.list[0].side",
        ),
        (
            parse_instruments,
            {"list": [{"symbol": "X", "contractType": "LinearPerpetual"}]},
            "result.list[0].baseCoin",
        ),
    ],
)
def test_malformed_results_name_their_field(parse, result, field):
    args = (result, "BTCUSDT", "1m", 0) if parse is parse_klines else (result,)
    if parse in (parse_funding, parse_orderbook, parse_recent_trades):
        args = (result, "BTCUSDT")
    with pytest.raises(MessageError) as err:
        parse(*args)
    assert err.value.field == field


# -- paging against the fake server -------------------------------------------------------------


def test_klines_day_pages_backwards_and_returns_1440_closed_candles():
    market = FakeV5(now_ms=DAY0 + DAY_MS + 30 * MINUTE_MS + 5_000)
    with FakeServer() as server:
        market.install(server)
        client = _client(server.url)
        frame = client.klines("BTCUSDT", DAY0, DAY0 + DAY_MS)
    assert list(frame.columns) == schemas.CANDLES.column_names
    opens = _ms(frame["open_time"])
    assert len(frame) == 1440 and np.array_equal(opens, DAY0 + np.arange(1440) * MINUTE_MS)
    ends = [int(r.query["end"]) for r in server.requests]
    assert ends == [DAY0 + DAY_MS - 1, DAY0 + DAY_MS - 1000 * MINUTE_MS - 1]
    assert (frame["source"] == "rest").all() and (frame["trade_count"] == 0).all()


def test_klines_today_keeps_only_candles_closed_on_bybits_clock():
    now = DAY0 + 10 * MINUTE_MS + 30_000  # the 00:10 candle is still open
    market = FakeV5(now_ms=now)
    with FakeServer() as server:
        market.install(server)
        frame = _client(server.url).klines("BTCUSDT", DAY0, DAY0 + DAY_MS)
    assert len(frame) == 10


def test_funding_pages_backwards_by_end_time():
    market = FakeV5(now_ms=DAY0 + DAY_MS, listed_ms=DAY0 - 100 * DAY_MS)
    with FakeServer() as server:
        market.install(server)
        frame = _client(server.url).funding_rates("BTCUSDT", DAY0 - 90 * DAY_MS, DAY0 + DAY_MS)
        ends = [int(r.query["endTime"]) for r in server.requests]
    times = _ms(frame["funding_time"])
    assert len(frame) == 91 * 3 and np.all(np.diff(times) == 8 * HOUR_MS)
    assert times[0] == DAY0 - 90 * DAY_MS
    assert frame["mark_price"].isna().all()
    assert len(ends) == 2 and ends[1] == times[-200] - 1


def test_exchange_info_follows_cursors():
    market = FakeV5(now_ms=DAY0)
    with FakeServer() as server:
        market.install(server)
        info = _client(server.url).exchange_info()
        cursors = [r.query.get("cursor") for r in server.requests]
    assert cursors == [None, "3", "6"]
    assert len(info.symbols) == 8
    assert info.perpetual_symbols() == sorted(
        ["1000PEPEUSDT", "ACEUSDT", "BTCPERP", "BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"]
    )
    assert info.rate_limits[0].limit == IP_LIMIT_REQUESTS


# -- errors and limits --------------------------------------------------------------------------


def _time_ok() -> Reply:
    return Reply(200, _body({"timeSecond": "1786233600", "timeNano": "1786233600123456789"}))


def test_retcode_10006_waits_for_the_reset_then_retries():
    clock = FakeClock(1_786_233_600.0)
    reset = str(int((clock.now + 2.5) * 1000))
    with FakeServer() as server:
        server.routes["/v5/market/time"] = [
            Reply(
                200,
                _body({}, 10006, "Too many visits!"),
                {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": reset},
            ),
            _time_ok(),
        ]
        client = _client(server.url, clock)
        assert client.server_time() == 1786233600123
    assert client.transport.sleeps == [pytest.approx(2.5)]
    assert client.transport.remaining == [0]
    assert client.budget.sleeps == []  # the budget's block ended when the wait did


def test_retcode_server_errors_back_off_then_give_up():
    with FakeServer() as server:
        server.routes["/v5/market/time"] = [Reply(200, _body({}, 10016, "Server error."))]
        client = _client(server.url)
        with pytest.raises(ExchangeError) as err:
            client.server_time()
    assert err.value.code == 10016
    assert len(server.requests) == REST_SETTINGS.max_retries + 1
    assert client.transport.sleeps == [0.5, 1.0, 2.0]  # backoff with rng = 1


def test_parameter_error_is_not_retried():
    with FakeServer() as server:
        server.routes["/v5/market/kline"] = [Reply(200, _body({}, 10001, "params error"))]
        with pytest.raises(ExchangeError) as err:
            _client(server.url).klines("BTCUSDT", DAY0, DAY0 + HOUR_MS)
    assert (err.value.code, len(server.requests)) == (10001, 1)


def test_http_403_is_the_ip_ban_waited_out_or_refused():
    with FakeServer() as server:
        server.routes["/v5/market/time"] = [Reply(403, b"access too frequent"), _time_ok()]
        client = _client(server.url)
        assert client.server_time() == 1786233600123
        assert client.transport.sleeps == [IP_BAN_SECONDS]
    with FakeServer() as server:
        server.routes["/v5/market/time"] = [Reply(403, b"access too frequent")]
        impatient = _client(server.url, rest=RestSettings(max_retries=3, max_wait_seconds=60))
        with pytest.raises(RateLimitedError):
            impatient.server_time()
        with pytest.raises(RateLimitedError):  # the ban is in the budget: no second request
            impatient.server_time()
        assert len(server.requests) == 1


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_budget_never_puts_more_than_600_requests_in_any_5_seconds():
    """Even spending the whole limit (fraction 1.0) and starting mid-window: the budget keeps
    half of 600 per aligned 5 s window, so no rolling 5 s can hold more than 600."""
    clock = FakeClock(1_786_233_602.5)  # 2.5 s into an aligned 5 s window
    seen: list[float] = []

    def answer(req: Request) -> Reply:
        seen.append(clock.time())
        return _time_ok()

    with FakeServer() as server:
        server.routes["/v5/market/time"] = answer
        rest = RestSettings(max_retries=3, weight_budget_fraction=1.0)
        client = _client(server.url, clock, rest)
        assert client.budget.budget_per_window == IP_LIMIT_REQUESTS // 2
        for _ in range(3 * client.budget.budget_per_window):
            client.server_time()
    times = np.array(seen)
    in_window = np.searchsorted(times, times + 5.0, side="left") - np.arange(len(times))
    assert in_window.max() == IP_LIMIT_REQUESTS  # the limit, reached and never passed
    assert times[-1] - times[0] == pytest.approx(7.5)  # 300 at 2.5 s, 300 at 5 s, 300 at 10 s


def test_http_429_is_backed_off_and_retried():
    with FakeServer() as server:
        server.routes["/v5/market/time"] = [Reply(429, b"too many"), _time_ok()]
        client = _client(server.url)
        assert client.server_time() == 1786233600123
    assert client.transport.sleeps == [0.5]


def test_bybit_and_binance_budgets_never_share_a_file(tmp_path):
    """One machine, one budget file per venue limit: Bybit's 600/5 s never counts Binance's
    weight (nor the other way round)."""
    from petrosa_pipelines.exchanges.binance.rest import BinanceRestClient
    from petrosa_pipelines.lib.endpoints import ExchangeEndpoints

    clock = FakeClock(1_786_233_600.0)
    rest = RestSettings(weight_budget_dir=str(tmp_path))
    bybit = BybitRestClient("http://127.0.0.1:9", rest, clock=clock.time, sleep=clock.sleep)
    binance = BinanceRestClient(
        ExchangeEndpoints(rest_base_url="http://127.0.0.1:9"),
        rest,
        clock=clock.time,
        sleep=clock.sleep,
    )
    bybit.budget.reserve(200)
    binance.budget.reserve(7)
    assert (bybit.budget.used, binance.budget.used) == (200, 7)
    assert sorted(p.name for p in tmp_path.glob("*.weight.json")) == [
        "binance.weight.json",
        "bybit.weight.json",
    ]
    other = BybitRestClient("http://127.0.0.1:9", rest, clock=clock.time, sleep=clock.sleep)
    assert other.budget.used == 200  # a second Bybit process on the machine sees the first
    assert RATE_MODEL.name == "bybit"


def test_recent_trades_and_book_snapshot_through_the_client():
    with FakeServer() as server:
        server.routes["/v5/market/recent-trade"] = [Reply(200, _doc("recent-trade"))]
        server.routes["/v5/market/orderbook"] = [Reply(200, _doc("orderbook"))]
        client = _client(server.url)
        trades = client.recent_trades("BTCUSDT")
        book = client.depth_snapshot("BTCUSDT")
        query = server.requests[0].query
    assert query == {"category": "linear", "symbol": "BTCUSDT", "limit": "1000"}
    assert list(trades.columns) == schemas.TRADES.column_names
    assert trades["trade_id"].tolist() == ["2100000000007764263"]
    assert trades["agg_trade_id"].tolist() == [123456000]
    assert book.last_update_id == 230704
    with pytest.raises(ValueError, match="limit"):
        client.recent_trades("BTCUSDT", limit=1001)
