"""Bybit archives: the public trading CSV (doc-built fixture of real trades), exact
second -> millisecond conversion, Bybit's own order-book history file (real), and the client's
404/retry behaviour against a fake host."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord, MessageError
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.exchanges.bybit.archive import (
    BybitArchiveClient,
    parse_book_history,
    parse_trades_csv,
    seconds_to_ms,
    trades_columns,
)
from petrosa_pipelines.lib.endpoints import RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeServer, Reply

pytestmark = pytest.mark.playback

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit"
CSV_GZ = (FIXTURES / "archive" / "BTCUSDT2026-08-09.csv.gz").read_bytes()
BOOK = (FIXTURES / "historical_orderbook" / "2024-12-01_XRPUSDT_ob500.data").read_bytes()
HEADER = (
    "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
    "foreignNotional"
)


def _ws_btc_trades():
    adapter = BybitLinearAdapter()
    lines = (FIXTURES / "ws" / "cryptofeed_2026-08-09" / "linear_publicTrade.jsonl").read_bytes()
    return [
        t
        for line in lines.splitlines()
        if b"publicTrade.BTCUSDT" in line
        for t in adapter.parse_frame(line)
    ]


def test_archive_rows_equal_the_websocket_trades():
    cols = trades_columns(gzip.decompress(CSV_GZ), "BTCUSDT")
    ws = _ws_btc_trades()
    assert list(cols["trade_id"]) == [t.trade_id for t in ws]
    assert list(cols["trade_time"]) == [t.trade_time for t in ws]
    assert list(cols["is_buyer_maker"]) == [t.is_buyer_maker for t in ws]
    assert list(cols["price"]) == [float(t.price) for t in ws]
    assert list(cols["quantity"]) == [float(t.quantity) for t in ws]


def test_archive_frame_conforms_with_zero_ids_and_archive_source():
    frame = parse_trades_csv(gzip.decompress(CSV_GZ), "BTCUSDT")
    assert list(frame.columns) == schemas.TRADES.column_names
    assert len(frame) == 56
    assert (frame["agg_trade_id"] == 0).all() and (frame["source"] == "archive").all()
    assert frame["received_at"].isna().all() and frame["trade_time"].is_monotonic_increasing
    assert frame["trade_id"].tolist() == [t.trade_id for t in _ws_btc_trades()]


def test_seconds_with_four_decimals_become_exact_floored_ms():
    base = 1_787_356_800
    texts = [f"{base}.{f:04d}" for f in range(10_000)]
    ms = seconds_to_ms(np.array([float(t) for t in texts]))
    assert np.array_equal(ms, base * 1000 + np.arange(10_000) // 10)
    data = (
        HEADER + "\n1585180700,BTCUSDT,Buy,0.002,6680.5,PlusTick,x1,1336100,0.002,13.361\n"
    ).encode()
    assert trades_columns(data, "BTCUSDT")["trade_time"].tolist() == [1_585_180_700_000]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("1.5,ETHUSDT,Buy,1,1,PlusTick,x,1,1,1", "symbol"),
        ("1.5,BTCUSDT,Long,1,1,PlusTick,x,1,1,1", "side"),
        ("1.5,BTCUSDT,Buy,1,0,PlusTick,x,1,1,1", "price"),
        ("1.5,BTCUSDT,Buy,-1,1,PlusTick,x,1,1,1", "size"),
        ("1.5,BTCUSDT,Buy,1,abc,PlusTick,x,1,1,1", "price"),
        ("1.5,BTCUSDT,Buy,1,1,PlusTick,,1,1,1", "trdMatchID"),
    ],
)
def test_bad_rows_name_their_column(row, field):
    with pytest.raises(MessageError) as err:
        trades_columns(f"{HEADER}\n{row}\n".encode(), "BTCUSDT")
    assert err.value.field == field


def test_missing_column_and_corrupt_gzip():
    with pytest.raises(MessageError) as err:
        trades_columns(b"timestamp,symbol,side,size\n1,BTCUSDT,Buy,1\n", "BTCUSDT")
    assert err.value.field == "<csv>"
    with FakeServer() as server:
        server.routes["/trading/BTCUSDT/BTCUSDT2026-08-09.csv.gz"] = [Reply(200, CSV_GZ[:40])]
        with pytest.raises(MessageError) as err:
            BybitArchiveClient(server.url, RestSettings()).daily_agg_trades(
                "BTCUSDT", dt.date(2026, 8, 9)
            )
    assert err.value.field == "<gzip>"


def test_book_history_file_replays_like_the_live_stream():
    records = parse_book_history(BOOK)
    assert len(records) == 50
    snap, deltas = records[0], records[1:]
    assert isinstance(snap, DepthSnapshotRecord) and len(snap.bids) == len(snap.asks) == 500
    first = json.loads(BOOK.splitlines()[0])
    assert snap.bids[0] == tuple(map(Decimal, first["data"]["b"][0]))
    assert (snap.last_update_id, snap.event_time) == (first["data"]["u"], first["ts"])
    bids, asks = dict(snap.bids), dict(snap.asks)
    last = snap.last_update_id
    for d in deltas:
        assert isinstance(d, DepthUpdateRecord) and d.prev_final_update_id == last
        last = d.final_update_id
        for side, levels in ((bids, d.bids), (asks, d.asks)):
            for p, q in levels:
                if q == 0:
                    del side[p]
                else:
                    side[p] = q
        assert len(bids) == len(asks) == 500 and max(bids) < min(asks)


def test_book_history_bad_line_names_line_and_field():
    bad = (
        BOOK.splitlines()[0]
        + b"\r\n"
        + b'{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1,'
        + b'"data":{"s":"XRPUSDT","b":[["x","1"]],"a":[],"u":2}}\r\n'
    )
    with pytest.raises(MessageError) as err:
        parse_book_history(bad)
    assert err.value.field == "data.b[0][0]" and err.value.reason.startswith("line 2:")


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def test_client_paths_404_retry_and_book_depth_fallback():
    day = dt.date(2026, 8, 9)
    with FakeServer() as server:
        server.routes["/trading/BTCUSDT/BTCUSDT2026-08-09.csv.gz"] = [
            Reply(503, b""),
            Reply(200, CSV_GZ),
        ]
        server.routes["/orderbook/linear/XRPUSDT/2024-12-01_XRPUSDT_ob500.data.zip"] = [
            Reply(200, _zip("2024-12-01_XRPUSDT_ob500.data", BOOK))
        ]
        client = BybitArchiveClient(
            server.url, RestSettings(max_retries=2), rng=lambda: 1.0, sleep=lambda s: None
        )
        assert len(client.daily_agg_trades("BTCUSDT", day)) == 56
        assert client.sleeps == [0.5]
        assert client.daily_agg_trades("BTCUSDT", day + dt.timedelta(days=1)) is None
        records = client.daily_book_records("XRPUSDT", dt.date(2024, 12, 1))
        assert records is not None and len(records) == 50
        assert client.daily_book_records("XRPUSDT", dt.date(2024, 12, 2)) is None
        assert (
            client.daily_klines("BTCUSDT", day) is None
            and client.daily_funding("BTCUSDT", day) is None
        )
        paths = server.paths()
    book = "/orderbook/linear/XRPUSDT/2024-12-0{}_XRPUSDT_ob{}.data.zip"
    assert paths[-4:] == [
        book.format(1, 200),
        book.format(1, 500),
        book.format(2, 200),
        book.format(2, 500),
    ]


def test_live_book_history_has_its_own_host():
    client = BybitArchiveClient()
    assert client.base_url == "https://public.bybit.com"
    assert client.book_base_url == "https://quote-saver.bycsi.com"
    assert BybitArchiveClient("http://127.0.0.1:1").book_base_url == "http://127.0.0.1:1"
