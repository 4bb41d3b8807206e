"""The local exchange speaks Bybit v5 linear: websocket ops and topics, REST envelopes and
errors, the trade archive, the book-service restart and the shared fault switches.

Field sets and order are checked against the real recordings in
petrosa_pipelines_tests/fixtures/bybit/ws/cryptofeed_2026-08-09 (PROVENANCE.md there)."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.local_exchange.units import fmt_fixed
from petrosa_pipelines.local_exchange.venues.bybit import rest as bybit_rest
from petrosa_pipelines.local_exchange.venues.bybit.stream import MALFORMED

REC = Path(__file__).parents[1] / "fixtures" / "bybit" / "ws" / "cryptofeed_2026-08-09"
NOW = "2024-01-03T00:00:55+00:00"
NOW_MS = 1704240055000
WS = "/v5/public/linear"


def _recorded(name: str, kind: str | None = None) -> dict[str, Any]:
    for line in (REC / name).read_text().splitlines():
        doc = json.loads(line)
        if kind is None or doc.get("type") == kind:
            return doc
    raise AssertionError(f"no {kind} in {name}")


@pytest.fixture
def ex() -> Iterator[LocalExchange]:
    clock = SimulatedClock(NOW, speed=0.0)
    cfg = MarketConfig(
        seed=7, symbols=("BTCUSDT", "ETHUSDT"), start_date="2024-01-01", trades_per_day=300_000
    )
    with LocalExchange(market=cfg, clock=clock, faults=Faults(), tick_seconds=0.01) as exchange:
        yield exchange


def _get(ex: LocalExchange, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(ex.rest_base_url + path, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _rest(ex: LocalExchange, path: str) -> dict[str, Any]:
    status, _, body = _get(ex, path)
    assert status == 200
    return json.loads(body)


def _recv_until(ws: ClientConnection, done: Any, deadline_s: float = 30.0) -> list[dict]:
    out: list[dict] = []
    end = time.monotonic() + deadline_s
    while not done(out):
        assert time.monotonic() < end, f"timed out after {len(out)} frames"
        out.append(json.loads(ws.recv(timeout=deadline_s)))
    return out


def _subscribe(ws: ClientConnection, *topics: str, req_id: str = "7") -> dict:
    ws.send(json.dumps({"op": "subscribe", "args": list(topics), "req_id": req_id}))
    return json.loads(ws.recv(timeout=30))


def test_subscribe_ping_and_unknown_topic_like_bybit(ex: LocalExchange) -> None:
    real_ack = json.loads((REC / "linear_control.jsonl").read_text().splitlines()[0])
    with connect(ex.ws_base_url + WS) as ws:
        ack = _subscribe(ws, "publicTrade.BTCUSDT")
        assert list(ack) == list(real_ack)
        assert (ack["success"], ack["ret_msg"], ack["req_id"], ack["op"]) == (
            True,
            "",
            "7",
            "subscribe",
        )
        ws.send('{"op":"ping","req_id":"p1"}')
        pong = json.loads(ws.recv(timeout=30))
        assert pong == {**pong, "success": True, "ret_msg": "pong", "req_id": "p1", "op": "ping"}
        bad = _subscribe(ws, "tickers.BTCUSDT", "orderbook.7.BTCUSDT")  # one bad topic: none
        assert bad["success"] is False
        assert bad["ret_msg"] == "error:handler not found,topic:orderbook.7.BTCUSDT"
        ex.clock.advance(5_000)  # type: ignore[attr-defined]
        frames = _recv_until(ws, lambda f: len(f) >= 3, 30)
        assert {f["topic"] for f in frames} <= {"publicTrade.BTCUSDT"}  # no ticker subscribed


def _apply(book: dict[str, dict[Decimal, Decimal]], data: dict) -> None:
    for side in ("b", "a"):
        for p, q in data[side]:
            if Decimal(q) == 0:
                book[side].pop(Decimal(p), None)
            else:
                book[side][Decimal(p)] = Decimal(q)


def test_book_snapshot_then_continuous_deltas_and_restart_snapshot(ex: LocalExchange) -> None:
    real = _recorded("linear_orderbook.jsonl", "delta")
    with connect(ex.ws_base_url + WS) as ws:
        _subscribe(ws, "orderbook.50.BTCUSDT")
        snap = json.loads(ws.recv(timeout=30))
        assert snap["type"] == "snapshot" and list(snap) == list(real)
        assert list(snap["data"]) == list(real["data"])
        assert len(snap["data"]["b"]) == len(snap["data"]["a"]) == 50
        book = {"b": {}, "a": {}}
        _apply(book, snap["data"])
        ex.clock.advance(3_000)  # type: ignore[attr-defined]
        deltas = _recv_until(ws, lambda f: len(f) >= 30)
        us = [snap["data"]["u"]] + [d["data"]["u"] for d in deltas]
        assert us == list(range(us[0], us[0] + len(us)))  # +1 per message
        seqs = [d["data"]["seq"] for d in deltas]
        assert seqs == sorted(set(seqs))
        for d in deltas:
            assert d["type"] == "delta" and (d["data"]["b"] or d["data"]["a"])
            _apply(book, d["data"])
        step = deltas[-1]["cts"] // ex.market.book_step_ms
        truth = ex.market.book_state("BTCUSDT", step)
        spec = ex.market.spec("BTCUSDT")

        def side(ticks: Any, qty: Any) -> dict[Decimal, Decimal]:
            return {
                Decimal(fmt_fixed(int(t) * spec.tick_units, spec.price_decimals)): Decimal(
                    fmt_fixed(int(q), spec.qty_decimals)
                )
                for t, q in zip(ticks[:50], qty[:50], strict=True)
            }

        assert book["b"] == side(truth.bid_ticks, truth.bid_qty)
        assert book["a"] == side(truth.ask_ticks, truth.ask_qty)
        ex.faults.restart_book_service()
        ex.clock.advance(1_000)  # type: ignore[attr-defined]
        after = _recv_until(ws, lambda f: any(x["data"]["u"] == 3 for x in f))
        restart = next(f for f in after if f["type"] == "snapshot")
        assert restart["data"]["u"] == 1
        rest = after[after.index(restart) + 1 :]
        assert [f["data"]["u"] for f in rest][:2] == [2, 3]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_trades_klines_tickers_fields_and_values(ex: LocalExchange) -> None:
    real_trade = _recorded("linear_publicTrade.jsonl")["data"][0]
    real_kline = _recorded("linear_kline.jsonl")
    real_ticker = _recorded("linear_tickers.jsonl", "snapshot")
    with connect(ex.ws_base_url + WS) as ws:
        _subscribe(ws, "publicTrade.BTCUSDT", "kline.1.BTCUSDT", "tickers.BTCUSDT")
        snap = json.loads(ws.recv(timeout=30))
        assert list(snap) == list(real_ticker) and list(snap["data"]) == list(real_ticker["data"])
        ex.clock.advance(10_000)  # crosses the 00:01:00 close
        frames = _recv_until(
            ws, lambda f: any(len(x.get("data", [])) == 2 for x in f if "kline" in x["topic"])
        )
    trades = [t for f in frames if f["topic"].startswith("publicTrade") for t in f["data"]]
    assert trades and all(list(t) == list(real_trade) for t in trades)
    truth = ex.market.trades_between("BTCUSDT", NOW_MS + 1, trades[-1]["T"])
    assert [t["p"] for t in trades] == [fmt_fixed(p, 2) for p in truth.price.tolist()]
    assert len({t["i"] for t in trades}) == len(trades)
    klines = [f for f in frames if f["topic"].startswith("kline")]
    assert all(list(k) == list(real_kline) for k in klines)
    closed, new = klines[-1]["data"]
    assert (closed["confirm"], new["confirm"]) == (True, False)
    assert all(k["data"][0]["confirm"] is False for k in klines[:-1])
    row = _rest(ex, "/v5/market/kline?category=linear&symbol=BTCUSDT&interval=1&limit=2")
    assert row["result"]["list"][1][:5] == [
        str(closed["start"]), closed["open"], closed["high"], closed["low"], closed["close"]
    ]  # fmt: skip
    deltas = [f for f in frames if f["topic"].startswith("tickers")]
    assert deltas and all(
        f["type"] == "delta" and set(f["data"]) <= set(snap["data"]) for f in deltas
    )
    assert all(len(f["data"]) > 1 for f in deltas)  # changed fields only, never empty


def test_rest_envelopes_paging_and_errors(
    ex: LocalExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    page1 = _rest(ex, "/v5/market/kline?category=linear&symbol=BTCUSDT&interval=1&limit=3")
    assert list(page1) == ["retCode", "retMsg", "result", "retExtInfo", "time"]
    opens = [int(r[0]) for r in page1["result"]["list"]]
    assert opens == sorted(opens, reverse=True) and opens[0] == NOW_MS // 60_000 * 60_000
    page2 = _rest(
        ex,
        f"/v5/market/kline?category=linear&symbol=BTCUSDT&interval=1&limit=3&end={opens[-1] - 1}",
    )
    assert [int(r[0]) for r in page2["result"]["list"]] == [
        opens[-1] - 60_000 * i for i in (1, 2, 3)
    ]
    trades = _rest(ex, "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=5")
    assert len(trades["result"]["list"]) == 5
    book = _rest(ex, "/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=5")["result"]
    assert list(book) == ["s", "b", "a", "ts", "u", "seq", "cts"] and len(book["b"]) == 5
    info = _rest(ex, "/v5/market/instruments-info?category=linear&limit=1")["result"]
    info2 = _rest(
        ex, f"/v5/market/instruments-info?category=linear&cursor={info['nextPageCursor']}"
    )
    assert [i["symbol"] for i in info["list"] + info2["result"]["list"]] == ["BTCUSDT", "ETHUSDT"]
    assert info2["result"]["nextPageCursor"] == ""
    fund = _rest(ex, "/v5/market/funding/history?category=linear&symbol=BTCUSDT&limit=3")
    times = [int(r["fundingRateTimestamp"]) for r in fund["result"]["list"]]
    assert times == [NOW_MS // 28_800_000 * 28_800_000 - 28_800_000 * i for i in range(3)]
    for bad in (
        "/v5/market/funding/history?category=linear&symbol=BTCUSDT&startTime=1",
        "/v5/market/kline?category=spot&symbol=BTCUSDT&interval=1",
        "/v5/market/kline?category=linear&symbol=NOPE&interval=1",
        "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=5000",
    ):
        assert _rest(ex, bad)["retCode"] == 10001, bad
    ex.faults.rate_limit_burst = 1
    status, headers, body = _get(ex, "/v5/market/time")
    assert status == 200 and json.loads(body)["retCode"] == 10006
    assert headers["X-Bapi-Limit-Status"] == "0"
    assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000
    monkeypatch.setattr(bybit_rest, "IP_LIMIT", 2)
    ex.wires["bybit-linear"].rest._calls.clear()  # type: ignore[attr-defined]
    assert [_get(ex, "/v5/market/time")[0] for _ in range(3)] == [200, 200, 403]


def test_archive_listing_and_daily_file_match_the_stream() -> None:
    cfg = MarketConfig(seed=7, symbols=("BTCUSDT",), start_date="2024-01-01")
    with LocalExchange(market=cfg, clock=SimulatedClock(NOW)) as ex:
        _check_archive(ex)


def _check_archive(ex: LocalExchange) -> None:
    status, _, listing = _get(ex, "/trading/BTCUSDT/")
    assert status == 200
    assert b'href="BTCUSDT2024-01-01.csv.gz"' in listing and b"2024-01-03" not in listing
    assert _get(ex, "/trading/BTCUSDT/BTCUSDT2024-01-03.csv.gz")[0] == 404  # not closed yet
    status, _, gz = _get(ex, "/trading/BTCUSDT/BTCUSDT2024-01-02.csv.gz")
    lines = gzip.decompress(gz).decode().splitlines()
    assert status == 200 and lines[0] == bybit_rest.ARCHIVE_HEADER
    day = ex.market.day_trades("BTCUSDT", "2024-01-02")
    assert len(lines) - 1 == len(day)
    first = lines[1].split(",")
    assert first[0] == f"{day.time[0] // 1000}.{day.time[0] % 1000:03d}0"
    assert first[4] == fmt_fixed(int(day.price[0]), 2)
    ws_id = ex.wires["bybit-linear"].formats.trade_uuid("BTCUSDT", int(day.agg_id[0]))  # type: ignore[attr-defined]
    assert first[6] == ws_id


def test_fault_switches_apply_to_bybit(ex: LocalExchange) -> None:
    ex.faults.duplicate_probability = 1.0
    with connect(ex.ws_base_url + WS) as ws:
        _subscribe(ws, "orderbook.50.BTCUSDT")
        first, second = json.loads(ws.recv(timeout=30)), json.loads(ws.recv(timeout=30))
        assert first == second and first["type"] == "snapshot"  # sent twice
    ex.faults.clear()
    ex.faults.malformed_probability = 1.0
    with connect(ex.ws_base_url + WS) as ws:
        _subscribe(ws, "orderbook.50.BTCUSDT")
        frames = []
        ex.clock.advance(500)  # type: ignore[attr-defined]
        while len(frames) < 3:
            raw = ws.recv(timeout=30)
            frames.append(raw.encode() if isinstance(raw, str) else raw)
        assert all(f in MALFORMED for f in frames)
    ex.faults.clear()
    ex.faults.disconnect_every_n_messages = 3
    with connect(ex.ws_base_url + WS) as ws:
        _subscribe(ws, "orderbook.50.BTCUSDT")
        ex.clock.advance(2_000)  # type: ignore[attr-defined]
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                ws.recv(timeout=30)


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_our_bybit_adapter_parses_every_local_bybit_frame(ex: LocalExchange) -> None:
    """The project's Bybit parsers (exchanges/bybit) read what the local exchange sends: every
    websocket frame, the REST bodies and the archive file, without a single error."""
    from petrosa_pipelines.exchanges.bybit import bodies
    from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
    from petrosa_pipelines.exchanges.bybit.archive import parse_trades_csv

    topics = ("publicTrade.BTCUSDT", "orderbook.200.BTCUSDT", "kline.1.BTCUSDT", "tickers.BTCUSDT")
    with connect(ex.ws_base_url + WS) as ws:
        raw: list[str] = []
        ws.send(json.dumps({"op": "subscribe", "args": list(topics), "req_id": "1"}))
        ws.send('{"op":"ping"}')
        raw += [ws.recv(timeout=30) for _ in range(4)]  # ack, book and ticker snapshots, pong
        ex.clock.advance(10_000)  # type: ignore[attr-defined]
        end = time.monotonic() + 30
        while not {t.split(".")[0] for t in topics} <= {
            json.loads(r).get("topic", ".").split(".")[0] for r in raw
        } or not any('"confirm":true' in r for r in raw):
            assert time.monotonic() < end
            raw.append(ws.recv(timeout=30))
    records, errors = BybitLinearAdapter().parse_many(r.encode() for r in raw)
    assert errors == [] and records
    q = "category=linear&symbol=BTCUSDT"
    _, _, result = bodies.result_of(_rest(ex, f"/v5/market/kline?{q}&interval=1&limit=5"))
    assert len(bodies.parse_klines(result, "BTCUSDT", "1m", NOW_MS)) == 5
    _, _, result = bodies.result_of(_rest(ex, f"/v5/market/recent-trade?{q}&limit=20"))
    assert len(bodies.parse_recent_trades(result, "BTCUSDT")) == 20
    _, _, result = bodies.result_of(_rest(ex, f"/v5/market/funding/history?{q}&limit=3"))
    assert len(bodies.parse_funding(result, "BTCUSDT")) == 3
    _, _, result = bodies.result_of(_rest(ex, f"/v5/market/orderbook?{q}&limit=50"))
    assert len(bodies.parse_orderbook(result, "BTCUSDT").bids) == 50
    _, _, result = bodies.result_of(_rest(ex, "/v5/market/instruments-info?category=linear"))
    assert [s.symbol for s in bodies.parse_instruments(result)[0]] == ["BTCUSDT", "ETHUSDT"]
    rest = ex.wires["bybit-linear"].rest  # type: ignore[attr-defined]
    csv = rest.archive_csv("BTCUSDT", ex.market.start)
    assert len(parse_trades_csv(csv, "BTCUSDT")) == len(
        ex.market.day_trades("BTCUSDT", ex.market.start)
    )
