"""REST and Vision archives of the local exchange, over real HTTP."""

from __future__ import annotations

import hashlib
import io
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.local_exchange.market import DAY_MS

pytestmark = pytest.mark.integration

NOW = "2024-01-05T12:00:00"
NOW_MS = 1704456000000
DAY_START = 1704412800000  # 2024-01-05
S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture(scope="module")
def ex() -> Iterator[LocalExchange]:
    market = MarketConfig(seed=7, symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=20_000)
    with LocalExchange(market=market, clock=SimulatedClock(NOW)) as exchange:
        yield exchange


def get(ex: LocalExchange, path: str, **params: object) -> requests.Response:
    return requests.get(ex.rest_base_url + path, params=params, timeout=10)


def _not_near_minute_end() -> None:
    """Weight windows are wall-clock minutes: avoid straddling one in limit tests."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_base_urls(ex: LocalExchange) -> None:
    assert ex.rest_base_url.startswith("http://127.0.0.1:") and ex.port > 0
    assert ex.ws_base_url == ex.rest_base_url.replace("http", "ws")
    assert ex.vision_base_url == ex.rest_base_url + "/vision"


def test_ping_time_and_weight_header(ex: LocalExchange) -> None:
    r = get(ex, "/fapi/v1/ping")
    assert r.status_code == 200 and r.json() == {}
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    assert get(ex, "/fapi/v1/time").json() == {"serverTime": NOW_MS}
    assert ex.request_log[-1][:1] == ("/fapi/v1/time",)


def test_exchange_info_shape(ex: LocalExchange) -> None:
    info = get(ex, "/fapi/v1/exchangeInfo").json()
    assert info["timezone"] == "UTC" and info["serverTime"] == NOW_MS
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 2400,
    }
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["contractType"] == "PERPETUAL" and btc["status"] == "TRADING"
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.10"
    assert filters["LOT_SIZE"]["stepSize"] == "0.001"
    assert btc["onboardDate"] == 1704067200000


@pytest.mark.parametrize(("limit", "weight"), [(99, 1), (100, 2), (499, 2), (500, 5), (1000, 5)])
def test_klines_weights(ex: LocalExchange, limit: int, weight: int) -> None:
    r = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=limit)
    assert r.status_code == 200 and len(r.json()) == limit
    assert ex.request_log[-1][2] == weight


def test_klines_rows_and_never_after_now(ex: LocalExchange) -> None:
    rows = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1500).json()
    assert len(rows) == 1500 and ex.request_log[-1][2] == 10
    assert rows[-1][0] == NOW_MS  # the open candle of "now" is the last row
    assert all(len(r) == 12 and isinstance(r[0], int) and isinstance(r[1], str) for r in rows)
    assert [b[0] - a[0] for a, b in zip(rows, rows[1:], strict=False)] == [60_000] * 1499
    day = get(
        ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1h", startTime=DAY_START, limit=100
    ).json()
    assert len(day) == 13 and day[0][0] == DAY_START  # 00:00 .. 12:00, nothing after now
    hour = ex.market.kline_rows("BTCUSDT", "1h", DAY_START, DAY_START)[0]
    assert day[0] == hour
    end = get(
        ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1d", endTime=DAY_START, limit=3
    ).json()
    assert [r[0] for r in end] == [DAY_START - 2 * DAY_MS, DAY_START - DAY_MS, DAY_START]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"interval": "1m"}, -1102),
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1501}, -1130),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 5, "endTime": 4}, -1023),
        ({"symbol": "BTCUSDT", "interval": "1m", "foo": 1}, -1104),
    ],
)
def test_klines_errors(ex: LocalExchange, params: dict, code: int) -> None:
    r = get(ex, "/fapi/v1/klines", **params)
    assert r.status_code == 400
    assert r.json()["code"] == code and r.json()["msg"]


def test_agg_trades_time_window_and_from_id(ex: LocalExchange) -> None:
    r = get(
        ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=NOW_MS - 3_600_001, endTime=NOW_MS
    )
    assert r.status_code == 400
    assert r.json() == {"code": -1127, "msg": "More than 1 hours between startTime and endTime."}
    rows = get(
        ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=NOW_MS - 3_600_000, endTime=NOW_MS
    ).json()
    assert ex.request_log[-1][2] == 20
    assert 0 < len(rows) <= 500 and list(rows[0]) == ["a", "p", "q", "f", "l", "T", "m"]
    assert all(NOW_MS - 3_600_000 <= r["T"] <= NOW_MS for r in rows)
    assert [r["a"] for r in rows] == list(range(rows[0]["a"], rows[0]["a"] + len(rows)))
    # a time query reaches a year back like Binance's (days ago here), and so does fromId
    lo = DAY_START - DAY_MS
    old = get(
        ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=lo, endTime=lo + 3_000_000
    ).json()
    assert old and all(lo <= r["T"] <= lo + 3_000_000 for r in old)
    first = ex.market.trades("BTCUSDT", "2024-01-02").agg_trade_id.iloc[0]
    page = get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=int(first), limit=1000).json()
    assert len(page) == 1000 and page[0]["a"] == first and page[-1]["a"] == first + 999
    latest = get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=5).json()
    assert len(latest) == 5 and latest[-1]["T"] <= NOW_MS
    r = get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=1, startTime=NOW_MS - 1)
    assert r.json()["code"] == -1128
    assert get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=1001).json()["code"] == -1130


def test_agg_trades_from_id_never_after_now(ex: LocalExchange) -> None:
    latest = get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=1).json()[0]
    page = get(ex, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=latest["a"] - 2).json()
    assert [r["a"] for r in page] == [latest["a"] - 2, latest["a"] - 1, latest["a"]]


def test_funding_rate_history(ex: LocalExchange) -> None:
    rows = get(ex, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=0, limit=1000).json()
    assert rows[0]["fundingTime"] == 1704067200000
    assert rows[-1]["fundingTime"] == DAY_START + 8 * 3_600_000 <= NOW_MS
    assert len(rows) == 4 * 3 + 2
    assert set(rows[0]) == {"symbol", "fundingTime", "fundingRate", "markPrice"}
    assert all(abs(Decimal(r["fundingRate"])) <= Decimal("0.0075") for r in rows)
    recent = get(ex, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=2).json()
    assert recent == rows[-2:]
    assert get(ex, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=1001).status_code == 400


@pytest.mark.parametrize(("limit", "weight"), [(5, 2), (50, 2), (100, 5), (500, 10), (1000, 20)])
def test_depth_limits_and_weights(ex: LocalExchange, limit: int, weight: int) -> None:
    body = get(ex, "/fapi/v1/depth", symbol="ETHUSDT", limit=limit).json()
    assert list(body) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(body["bids"]) == len(body["asks"]) == limit
    assert Decimal(body["bids"][0][0]) < Decimal(body["asks"][0][0])
    assert ex.request_log[-1][2] == weight
    assert get(ex, "/fapi/v1/depth", symbol="ETHUSDT", limit=7).json()["code"] == -1130


def test_unknown_path_is_404(ex: LocalExchange) -> None:
    assert get(ex, "/fapi/v1/nothing").status_code == 404


def test_weight_limit_429_then_418_with_retry_after() -> None:
    _not_near_minute_end()
    with LocalExchange(clock=SimulatedClock(NOW), weight_limit_per_minute=12) as ex:
        for _ in range(2):  # weight 5 each -> 10
            assert get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m").status_code == 200
        r = get(ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m")
        assert r.status_code == 429 and r.json()["code"] == -1003
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) == 15
        r = get(ex, "/fapi/v1/ping")  # ignoring Retry-After gets the IP banned
        assert r.status_code == 418 and int(r.headers["Retry-After"]) >= 100
        assert "banned until" in r.json()["msg"]
        assert get(ex, "/fapi/v1/ping").status_code == 418


def test_injected_rate_limit_burst_and_slow_response() -> None:
    faults = Faults(rate_limit_burst=2, retry_after_seconds=3)
    with LocalExchange(clock=SimulatedClock(NOW), faults=faults) as ex:
        statuses = [get(ex, "/fapi/v1/ping") for _ in range(3)]
        assert [r.status_code for r in statuses] == [429, 429, 200]
        assert statuses[0].headers["Retry-After"] == "3"
        ex.faults.slow_response_seconds = 0.3
        t = time.perf_counter()
        assert get(ex, "/fapi/v1/ping").status_code == 200
        assert time.perf_counter() - t >= 0.3


# -- Vision archives -------------------------------------------------------------------------


def _zip(ex: LocalExchange, key: str) -> tuple[bytes, str]:
    r = requests.get(f"{ex.vision_base_url}/{key}", timeout=10)
    assert r.status_code == 200, key
    c = requests.get(f"{ex.vision_base_url}/{key}.CHECKSUM", timeout=10)
    assert c.status_code == 200
    return r.content, c.text


def test_daily_kline_archive_with_checksum(ex: LocalExchange) -> None:
    key = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"
    body, checksum = _zip(ex, key)
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  BTCUSDT-1m-2024-01-02.zip\n"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.namelist() == ["BTCUSDT-1m-2024-01-02.csv"]
        lines = zf.read("BTCUSDT-1m-2024-01-02.csv").decode().splitlines()
    assert lines[0] == (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore"
    )
    assert len(lines) == 1441
    rest = get(
        ex, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=1704153600000, limit=3
    ).json()
    assert lines[1:4] == [",".join(str(v) for v in row) for row in rest]
    assert _zip(ex, key)[0] == body  # deterministic bytes


def test_agg_trades_and_funding_archives(ex: LocalExchange) -> None:
    body, checksum = _zip(
        ex, "data/futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-01-03.zip"
    )
    assert checksum.split()[0] == hashlib.sha256(body).hexdigest()
    csv = zipfile.ZipFile(io.BytesIO(body)).read("ETHUSDT-aggTrades-2024-01-03.csv").decode()
    lines = csv.splitlines()
    assert lines[0] == (
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    )
    assert len(lines) == 20_001 and lines[1].endswith(("true", "false"))
    daily, _ = _zip(
        ex, "data/futures/um/daily/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01-03.zip"
    )
    rows = zipfile.ZipFile(io.BytesIO(daily)).read("BTCUSDT-fundingRate-2024-01-03.csv").decode()
    assert rows.splitlines()[0] == "calc_time,funding_interval_hours,last_funding_rate"
    assert len(rows.splitlines()) == 4 and rows.splitlines()[1].startswith("1704240000000,8,")


def test_only_closed_periods_exist(ex: LocalExchange) -> None:
    base = ex.vision_base_url + "/data/futures/um"
    for key in (
        "/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-05.zip",  # today
        "/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-12-31.zip",  # before the start
        "/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip",  # month not over
        "/daily/klines/NOPEUSDT/1m/NOPEUSDT-1m-2024-01-02.zip",
        "/daily/klines/BTCUSDT/7m/BTCUSDT-7m-2024-01-02.zip",
    ):
        r = requests.get(base + key, timeout=10)
        assert r.status_code == 404 and b"NoSuchKey" in r.content
    with LocalExchange(clock=SimulatedClock("2024-02-01T00:00:01")) as later:
        month = "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip"
        body, _ = _zip(later, month)
        csv = zipfile.ZipFile(io.BytesIO(body)).read("BTCUSDT-fundingRate-2024-01.csv")
        assert len(csv.decode().splitlines()) == 1 + 31 * 3


def test_listing_xml(ex: LocalExchange) -> None:
    prefix = "data/futures/um/daily/klines/BTCUSDT/1m/"
    r = requests.get(
        ex.vision_base_url + "/", params={"prefix": prefix, "delimiter": "/"}, timeout=10
    )
    root = ET.fromstring(r.content)
    assert root.tag == f"{S3}ListBucketResult"
    keys = [c.findtext(f"{S3}Key") for c in root.iter(f"{S3}Contents")]
    assert keys == [
        prefix + f"BTCUSDT-1m-2024-01-0{d}.zip{suffix}"
        for d in range(1, 5)
        for suffix in ("", ".CHECKSUM")
    ]
    r = requests.get(
        ex.vision_base_url + "/",
        params={"prefix": "data/futures/um/daily/klines/BTCUSDT/", "delimiter": "/"},
        timeout=10,
    )
    prefixes = [p.text for p in ET.fromstring(r.content).iter(f"{S3}Prefix")][1:]
    assert "data/futures/um/daily/klines/BTCUSDT/1m/" in prefixes and len(prefixes) == 12
    paged = requests.get(
        ex.vision_base_url + "/", params={"prefix": prefix, "max-keys": 3}, timeout=10
    )
    root = ET.fromstring(paged.content)
    assert root.findtext(f"{S3}IsTruncated") == "true"
    assert root.findtext(f"{S3}NextMarker") == keys[2]


def test_bad_checksum_fault() -> None:
    with LocalExchange(clock=SimulatedClock(NOW), faults=Faults(bad_checksum=True)) as ex:
        body, checksum = _zip(
            ex, "data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-01-02.zip"
        )
        assert checksum.split()[0] != hashlib.sha256(body).hexdigest()
        ex.faults.bad_checksum = False
        _, good = _zip(ex, "data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-01-02.zip")
        assert good.split()[0] == hashlib.sha256(body).hexdigest()


def test_headerless_archives_option() -> None:
    market = MarketConfig(vision_headers="never")
    with LocalExchange(market=market, clock=SimulatedClock(NOW)) as ex:
        body, _ = _zip(ex, "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip")
        lines = zipfile.ZipFile(io.BytesIO(body)).read("BTCUSDT-1m-2024-01-02.csv").splitlines()
        assert len(lines) == 1440 and lines[0].startswith(b"1704153600000,")
