"""Vision archives: parsing the real CSV quirks, checksum verification, cache, listing."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import petrosa_pipelines.local_exchange as local_exchange
from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.exchanges.binance.vision import (
    ChecksumMismatchError,
    VisionArchiveClient,
    agg_trades_path,
    daily_funding_path,
    has_header,
    klines_path,
    monthly_funding_path,
    parse_agg_trades_csv,
    parse_checksum,
    parse_funding_csv,
    parse_klines_csv,
    parse_listing,
)
from petrosa_pipelines.lib.timeutil import DAY_MS, MINUTE_MS, day_window_ms
from petrosa_pipelines.settings import RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeClock, FakeServer, Reply

FIXTURES = Path(__file__).parents[1] / "fixtures" / "binance" / "vision"
CSV_FILES = sorted(p.name for p in FIXTURES.glob("*.csv"))
REST = RestSettings(max_retries=2)


def _csv(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _rows(data: bytes) -> list[list[str]]:
    return [line.split(",") for line in data.decode().splitlines() if line[:1].isdigit()]


def _assert_frame(frame: pd.DataFrame, schema: schemas.DatasetSchema) -> None:
    assert list(frame.columns) == schema.column_names
    pd.testing.assert_frame_equal(frame, schemas.conform(frame, schema))


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------


@pytest.mark.playback
def test_fixture_set_is_complete():
    assert len(CSV_FILES) == 6


@pytest.mark.playback
@pytest.mark.parametrize("name", CSV_FILES)
def test_real_daily_klines_parse_to_1440_exact_rows(name):
    symbol, interval, day = name[: -len(".csv")].split("-", 2)
    data = _csv(name)
    frame = parse_klines_csv(data, symbol, interval)
    _assert_frame(frame, schemas.CANDLES)
    start, _ = day_window_ms(dt.date.fromisoformat(day))
    opens = frame["open_time"].astype("int64").to_numpy()
    assert len(frame) == 1440
    assert opens[0] == start and (np.diff(opens) == MINUTE_MS).all()
    closes = frame["close_time"].astype("int64").to_numpy()
    assert (closes == opens + MINUTE_MS - 1).all()
    assert (frame["source"] == "archive").all() and frame["received_at"].isna().all()
    assert (frame["exchange"] == "binance").all() and (frame["symbol"] == symbol).all()
    # every number equals its decimal string exactly (shortest float repr round-trips)
    rows = _rows(data)
    for j, col in (
        (1, "open"),
        (4, "close"),
        (5, "volume"),
        (7, "quote_volume"),
        (10, "taker_buy_quote_volume"),
    ):
        got = [Decimal(repr(float(x))) for x in frame[col]]
        assert got == [Decimal(r[j]) for r in rows], col
    assert frame["trade_count"].tolist() == [int(r[8]) for r in rows]


@pytest.mark.playback
def test_header_detection_on_real_files():
    assert has_header(_csv("BTCUSDT-1m-2022-05-01.csv"))
    assert not has_header(_csv("ETHUSDT-1m-2022-05-01.csv"))


@pytest.mark.playback
def test_headerless_eth_file_first_row():
    frame = parse_klines_csv(_csv("ETHUSDT-1m-2022-05-01.csv"), "ETHUSDT", "1m")
    first = frame.iloc[0]
    assert first["open_time"] == pd.Timestamp("2022-05-01T00:00:00Z")
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        2725.10,
        2727.76,
        2724.16,
        2726.63,
    )
    assert first["volume"] == 2052.652 and first["trade_count"] == 3675
    assert first["taker_buy_quote_volume"] == 2481189.07717


@pytest.mark.playback
def test_float_style_numbers():
    frame = parse_klines_csv(_csv("BTCUSDT-1m-2022-05-01.csv"), "BTCUSDT", "1m")
    first = frame.iloc[0]
    assert (first["open"], first["low"], first["close"]) == (37614.4, 37584.0, 37635.2)
    assert first["quote_volume"] == 16749790.8944


@pytest.mark.playback
def test_mixed_number_formats_within_one_file():
    frame = parse_klines_csv(_csv("BTCUSDT-1m-2023-11-14.csv"), "BTCUSDT", "1m")
    row = frame.set_index("open_time").loc[pd.Timestamp(1699960740000, unit="ms", tz="UTC")]
    # source line: 1699960740000,36363,36381,36350,36357.40,...
    assert (row["open"], row["high"], row["low"], row["close"]) == (36363, 36381, 36350, 36357.4)


@pytest.mark.playback
@pytest.mark.parametrize(
    ("name", "first", "count"),
    [
        ("BTCUSDT-1m-2022-05-01.csv", "2022-05-01T22:26:00Z", 29),
        ("ETHUSDT-1m-2022-05-01.csv", "2022-05-01T22:26:00Z", 29),
        ("BTCUSDT-1m-2023-11-14.csv", "2023-11-14T11:39:00Z", 3),
        ("ETHUSDT-1m-2023-11-14.csv", "2023-11-14T11:39:00Z", 3),
    ],
)
def test_maintenance_shows_as_flat_zero_trade_candles(name, first, count):
    frame = parse_klines_csv(_csv(name), name[:7], "1m")
    flat = frame[frame["trade_count"] == 0]
    assert len(flat) == count
    assert flat["open_time"].iloc[0] == pd.Timestamp(first)
    assert (np.diff(flat["open_time"].astype("int64")) == MINUTE_MS).all()
    assert (flat["volume"] == 0).all()
    assert (
        (flat["open"] == flat["high"])
        & (flat["low"] == flat["close"])
        & (flat["open"] == flat["close"])
    ).all()


# ---------------------------------------------------------------------------------------------
# Synthetic CSV shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_microsecond_timestamps_are_converted():
    ms_line = _csv("ETHUSDT-1m-2022-05-01.csv").splitlines()[0].decode().split(",")
    us_line = list(ms_line)
    us_line[0] = ms_line[0] + "000"
    us_line[6] = str(int(ms_line[6]) * 1000 + 999)
    frame_us = parse_klines_csv((",".join(us_line) + "\n").encode(), "ETHUSDT", "1m")
    frame_ms = parse_klines_csv((",".join(ms_line) + "\n").encode(), "ETHUSDT", "1m")
    pd.testing.assert_frame_equal(frame_us, frame_ms)


@pytest.mark.unit
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("booleans", [("true", "false"), ("True", "False")])
def test_agg_trades_csv(header, booleans):
    lines = [
        f"500,42000.10,0.005,900,901,1704153600000,{booleans[0]}",
        f"501,42000.2,1,902,902,1704153600000,{booleans[1]}",
        f"502,42001,0.100,903,905,1704153600001,{booleans[0]}",
    ]
    if header:
        lines.insert(
            0,
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
        )
    frame = parse_agg_trades_csv(("\n".join(lines) + "\n").encode(), "BTCUSDT")
    _assert_frame(frame, schemas.TRADES)
    assert frame["agg_trade_id"].tolist() == [500, 501, 502]
    assert frame["price"].tolist() == [42000.1, 42000.2, 42001.0]
    assert frame["is_buyer_maker"].tolist() == [True, False, True]
    assert frame["last_trade_id"].tolist() == [901, 902, 905]
    assert frame["received_at"].isna().all()


@pytest.mark.unit
@pytest.mark.parametrize("header", [True, False])
def test_funding_csv_has_null_mark_price(header):
    lines = ["1704067200000,8,0.00037409", "1704096000000,8,-0.00001000"]
    if header:
        lines.insert(0, "calc_time,funding_interval_hours,last_funding_rate")
    frame = parse_funding_csv(("\n".join(lines) + "\n").encode(), "BTCUSDT")
    _assert_frame(frame, schemas.FUNDING)
    assert frame["funding_rate"].tolist() == [0.00037409, -0.00001]
    assert frame["mark_price"].isna().all()
    assert frame["funding_time"].iloc[0] == pd.Timestamp("2024-01-01T00:00:00Z")


@pytest.mark.unit
def test_empty_csv_gives_empty_frame():
    assert parse_klines_csv(b"", "BTCUSDT", "1m").empty
    assert list(parse_funding_csv(b"\n", "X").columns) == schemas.FUNDING.column_names


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "field"),
    [
        (b"1,2,3\n", "<csv>"),
        (b"1651363200000,abc,1,1,1,1,1651363259999,1,1,1,1,0\n", "open"),
        (b"1651363200000,1,1,1,1,1,1651363259999,1,,1,1,0\n", "trade_count"),
    ],
)
def test_malformed_klines_csv_names_field(text, field):
    with pytest.raises(MessageError) as info:
        parse_klines_csv(text, "BTCUSDT", "1m")
    assert info.value.field == field


@pytest.mark.unit
def test_parse_checksum():
    digest = "a" * 64
    assert parse_checksum(f"{digest}  BTCUSDT-1m-2024-01-01.zip\n") == digest
    with pytest.raises(ExchangeError):
        parse_checksum("not a checksum")


# ---------------------------------------------------------------------------------------------
# Client against scripted files: checksum, 404, cache, fallback, listing
# ---------------------------------------------------------------------------------------------


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def _publish(server: FakeServer, path: str, csv: bytes, *, bad: bool = False) -> bytes:
    name = path.rsplit("/", 1)[1]
    blob = _zip(name[:-4] + ".csv", csv)
    digest = hashlib.sha256(blob).hexdigest()
    if bad:
        digest = hashlib.sha256(b"other").hexdigest()
    server.routes["/" + path] = [Reply(200, blob)]
    server.routes["/" + path + ".CHECKSUM"] = [Reply(200, f"{digest}  {name}\n".encode())]
    return blob


def _vision(server: FakeServer, cache_dir=None) -> VisionArchiveClient:
    clock = FakeClock()
    return VisionArchiveClient(server.url, REST, cache_dir, sleep=clock.sleep, rng=lambda: 1.0)


ETH_DAY = dt.date(2022, 5, 1)


@pytest.mark.unit
def test_client_good_checksum_returns_frame():
    csv = _csv("ETHUSDT-1m-2022-05-01.csv")
    with FakeServer() as server:
        _publish(server, klines_path("ETHUSDT", ETH_DAY), csv)
        frame = _vision(server).daily_klines("ETHUSDT", ETH_DAY)
    pd.testing.assert_frame_equal(frame, parse_klines_csv(csv, "ETHUSDT", "1m"))


@pytest.mark.unit
def test_client_bad_checksum_raises():
    with FakeServer() as server:
        _publish(
            server, klines_path("ETHUSDT", ETH_DAY), _csv("ETHUSDT-1m-2022-05-01.csv"), bad=True
        )
        with pytest.raises(ChecksumMismatchError):
            _vision(server).daily_klines("ETHUSDT", ETH_DAY)
    assert issubclass(ChecksumMismatchError, ExchangeError)


@pytest.mark.unit
def test_client_missing_archive_is_none():
    with FakeServer() as server:
        client = _vision(server)
        assert client.daily_klines("BTCUSDT", ETH_DAY) is None
        assert client.daily_agg_trades("BTCUSDT", ETH_DAY) is None
        assert client.monthly_funding("BTCUSDT", 2022, 5) is None
        assert client.daily_funding("BTCUSDT", ETH_DAY) is None


@pytest.mark.unit
def test_client_zip_without_checksum_is_refused():
    with FakeServer() as server:
        path = klines_path("ETHUSDT", ETH_DAY)
        server.routes["/" + path] = [Reply(200, _zip("x.csv", b""))]
        with pytest.raises(ExchangeError, match="CHECKSUM"):
            _vision(server).daily_klines("ETHUSDT", ETH_DAY)


@pytest.mark.unit
def test_client_retries_5xx_then_succeeds():
    csv = _csv("BTCUSDT-1m-2022-01-01.csv")
    day = dt.date(2022, 1, 1)
    with FakeServer() as server:
        path = klines_path("BTCUSDT", day)
        blob = _publish(server, path, csv)
        server.routes["/" + path] = [Reply(503, b""), Reply(200, blob)]
        client = _vision(server)
        assert len(client.daily_klines("BTCUSDT", day)) == 1440
    assert client.sleeps == [REST.backoff_base_seconds]


@pytest.mark.unit
def test_cache_skips_download_and_detects_republished(tmp_path):
    csv = _csv("ETHUSDT-1m-2022-05-01.csv")
    path = klines_path("ETHUSDT", ETH_DAY)
    with FakeServer() as server:
        _publish(server, path, csv)
        first = _vision(server, tmp_path).daily_klines("ETHUSDT", ETH_DAY)
        assert (tmp_path / path).exists()
        server.requests.clear()
        client = _vision(server, tmp_path)
        second = client.daily_klines("ETHUSDT", ETH_DAY)
        assert server.paths() == ["/" + path + ".CHECKSUM"]  # no zip download
        assert client.cache_hits == [path]
        pd.testing.assert_frame_equal(first, second)
        # re-published archive: the cached copy no longer matches -> downloaded again
        republished = csv.replace(b"2725.10,", b"2725.11,", 1)
        _publish(server, path, republished)
        server.requests.clear()
        third = client.daily_klines("ETHUSDT", ETH_DAY)
        assert server.paths() == ["/" + path + ".CHECKSUM", "/" + path]
    assert third["open"].iloc[0] == 2725.11


@pytest.mark.unit
def test_daily_funding_falls_back_to_monthly_filtered():
    day = dt.date(2024, 1, 2)
    start = day_window_ms(dt.date(2024, 1, 1))[0]
    lines = [f"{start + i * 8 * 3_600_000},8,0.000{i:05d}" for i in range(93)]
    with FakeServer() as server:
        _publish(server, monthly_funding_path("BTCUSDT", 2024, 1), "\n".join(lines).encode())
        frame = _vision(server).daily_funding("BTCUSDT", day)
        assert "/" + daily_funding_path("BTCUSDT", day) in server.paths()
    times = frame["funding_time"].astype("int64").tolist()
    assert times == [start + DAY_MS + h * 3_600_000 for h in (0, 8, 16)]


@pytest.mark.unit
def test_daily_agg_trades_path_and_parse():
    day = dt.date(2024, 1, 2)
    csv = b"1,1.5,2,1,1,1704153600000,true\n2,1.6,3,2,3,1704153600005,false\n"
    with FakeServer() as server:
        _publish(server, agg_trades_path("BTCUSDT", day), csv)
        frame = _vision(server).daily_agg_trades("BTCUSDT", day)
    assert frame["agg_trade_id"].tolist() == [1, 2]
    assert agg_trades_path("BTCUSDT", day) == (
        "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-02.zip"
    )


LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>data.binance.vision</Name>
<Prefix>data/futures/um/daily/klines/BTCUSDT/1m/</Prefix><Marker>%s</Marker>
<IsTruncated>%s</IsTruncated>%s
<Contents><Key>%s</Key><Size>1</Size></Contents>
</ListBucketResult>"""


@pytest.mark.unit
def test_list_archives_follows_markers():
    base = "data/futures/um/daily/klines/BTCUSDT/1m/"
    k1, k2 = base + "BTCUSDT-1m-2024-01-01.zip", base + "BTCUSDT-1m-2024-01-01.zip.CHECKSUM"

    def listing(req):
        if req.query.get("marker") == k1:
            return Reply(200, LISTING % (k1.encode(), b"false", b"", k2.encode()))
        return Reply(
            200, LISTING % (b"", b"true", b"<NextMarker>%s</NextMarker>" % k1.encode(), k1.encode())
        )

    with FakeServer() as server:
        server.routes["/"] = listing
        keys = _vision(server).list_archives(base)
        assert server.requests[0].query == {"prefix": base, "delimiter": "/"}
    assert keys == [k1, k2]


@pytest.mark.unit
def test_parse_listing_rejects_entities():
    with pytest.raises(MessageError):
        parse_listing(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')


# ---------------------------------------------------------------------------------------------
# Against the local exchange's archive tree
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["always", "never"])
def exchange(request):
    with local_exchange.LocalExchange(
        market=local_exchange.MarketConfig(
            seed=7,
            symbols=("BTCUSDT", "ETHUSDT"),
            trades_per_day=20_000,
            start_date="2024-01-01",
            vision_headers=request.param,
        ),
        faults=local_exchange.Faults(),
        clock=local_exchange.SimulatedClock("2024-02-03T12:00:00+00:00"),
    ) as ex:
        yield ex


def _local(ex, cache_dir=None) -> VisionArchiveClient:
    return VisionArchiveClient(ex.vision_base_url, REST, cache_dir)


@pytest.mark.integration
def test_local_daily_klines_and_trades_match_market(exchange):
    day = dt.date(2024, 1, 15)
    client = _local(exchange)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        candles = client.daily_klines(symbol, day)
        assert len(candles) == 1440
        start, end = day_window_ms(day)
        truth = exchange.market.klines(symbol, "1m", start, end - 1)
        assert candles["close"].tolist() == [float(x) for x in truth["close"]]
        trades = client.daily_agg_trades(symbol, day)
        _assert_frame(trades, schemas.TRADES)
        market = exchange.market.trades(symbol, day)
        assert trades["agg_trade_id"].tolist() == market["agg_trade_id"].tolist()
        assert trades["price"].tolist() == market["price"].tolist()
        assert trades["is_buyer_maker"].tolist() == market["is_buyer_maker"].tolist()
        assert (np.diff(trades["agg_trade_id"].to_numpy()) == 1).all()


@pytest.mark.integration
def test_local_funding_daily_and_monthly(exchange):
    client = _local(exchange)
    month = client.monthly_funding("BTCUSDT", 2024, 1)
    assert len(month) == 93 and month["mark_price"].isna().all()
    day = client.daily_funding("BTCUSDT", dt.date(2024, 1, 31))
    assert len(day) == 3
    pd.testing.assert_frame_equal(day, month.iloc[-3:].reset_index(drop=True))
    assert client.monthly_funding("BTCUSDT", 2024, 2) is None  # month not over yet


@pytest.mark.integration
def test_local_unpublished_day_is_none(exchange):
    client = _local(exchange)
    assert client.daily_klines("BTCUSDT", dt.date(2024, 2, 3)) is None  # today
    assert client.daily_klines("BTCUSDT", dt.date(2023, 12, 31)) is None  # before listing
    assert client.daily_klines("DOGEUSDT", dt.date(2024, 1, 5)) is None


@pytest.mark.integration
def test_local_bad_checksum_raises(exchange, tmp_path):
    client = _local(exchange, tmp_path)
    assert client.daily_klines("BTCUSDT", dt.date(2024, 1, 3)) is not None
    exchange.faults.bad_checksum = True
    with pytest.raises(ChecksumMismatchError):
        client.daily_klines("BTCUSDT", dt.date(2024, 1, 4))
    with pytest.raises(ChecksumMismatchError):  # the cached copy is not trusted either
        client.daily_klines("BTCUSDT", dt.date(2024, 1, 3))


@pytest.mark.integration
def test_local_list_archives(exchange):
    client = _local(exchange)
    assert client.list_archives("data/futures/um/daily/klines/") == [
        "data/futures/um/daily/klines/BTCUSDT/",
        "data/futures/um/daily/klines/ETHUSDT/",
    ]
    keys = client.list_archives("data/futures/um/daily/klines/BTCUSDT/1m/")
    zips = [k for k in keys if k.endswith(".zip")]
    assert len(zips) == 33  # 2024-01-01 .. 2024-02-02
    assert zips[0] == klines_path("BTCUSDT", dt.date(2024, 1, 1))
    assert len(keys) == 66
