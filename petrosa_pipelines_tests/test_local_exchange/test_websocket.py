"""Websocket streams of the local exchange: layouts, control frames, book sync, faults, replay."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock

pytestmark = pytest.mark.integration

START = "2024-01-05T11:59:57"
MARKET = MarketConfig(seed=7, symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=200_000)
DATA = Path(__file__).parent / "data"
ALL = "btcusdt@aggTrade/btcusdt@kline_1m/btcusdt@depth@100ms/btcusdt@markPrice@1s"


@pytest.fixture
def ex() -> Iterator[LocalExchange]:
    """At 20x the default 60 s catch-up is 3 s of wall time: a sender stalled that long on a
    loaded machine skipped data, and the depth sync found no diff covering its snapshot (a
    fresh-clone run under a burner). 30 simulated minutes, as in ``test_ingest/conftest.py``."""
    clock = SimulatedClock(START, speed=20)
    with LocalExchange(market=MARKET, clock=clock, max_catchup_ms=30 * 60_000) as exchange:
        yield exchange
        assert exchange.skipped == []


def collect(ws: ClientConnection, seconds: float) -> list[dict | bytes | str]:
    """Frames received for ``seconds`` (parsed when they are JSON)."""
    out: list[dict | bytes | str] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            raw = ws.recv(timeout=left)
        except TimeoutError:
            break
        except ConnectionClosed:
            break
        try:
            out.append(json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            out.append(raw)
    return out


def collect_until(
    ws: ClientConnection, done: Callable[[list], bool], deadline_s: float = 120.0
) -> list[dict | bytes | str]:
    """Frames received until ``done(frames)`` holds; fails after ``deadline_s`` (a loaded
    machine slows the exchange's clock down, never the test's verdict)."""
    out: list[dict | bytes | str] = []
    end = time.monotonic() + deadline_s
    while not done(out):
        assert time.monotonic() < end, f"not done after {deadline_s} s: {len(out)} frames"
        out += collect(ws, 0.5)
    return out


def _past(ms: int) -> Callable[[list], bool]:
    """Whether a ``markPrice@1s`` frame at or after ``ms`` arrived (the stream clock's mark)."""
    return lambda frames: any(
        isinstance(f, dict) and f.get("data", {}).get("e") == "markPriceUpdate"
        and f["data"]["E"] >= ms
        for f in frames
    )  # fmt: skip


def test_combined_stream_layouts(ex: LocalExchange) -> None:
    with connect(f"{ex.ws_base_url}/stream?streams={ALL}") as ws:
        frames = collect_until(ws, _past(1704456005000))  # 12:00:05, past the 12:00 close
    by_stream: dict[str, list[dict]] = {}
    for f in frames:
        assert isinstance(f, dict) and set(f) == {"stream", "data"}
        by_stream.setdefault(f["stream"], []).append(f["data"])
    assert set(by_stream) == set(ALL.split("/"))
    trades = by_stream["btcusdt@aggTrade"]
    assert list(trades[0]) == ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"]
    assert [t["a"] for t in trades] == list(range(trades[0]["a"], trades[0]["a"] + len(trades)))
    assert isinstance(trades[0]["p"], str) and isinstance(trades[0]["a"], int)
    kline = by_stream["btcusdt@kline_1m"][-1]
    assert list(kline) == ["e", "E", "s", "k"] and list(kline["k"]) == list("tTsifLochlvnxqVQB")
    closed = [k for k in by_stream["btcusdt@kline_1m"] if k["k"]["x"]]
    assert closed and closed[0]["k"]["t"] == 1704455940000  # the 11:59 candle closes at 12:00
    depth = by_stream["btcusdt@depth@100ms"]
    assert list(depth[0]) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]
    assert all(b["pu"] == a["u"] for a, b in zip(depth, depth[1:], strict=False))
    mark = by_stream["btcusdt@markPrice@1s"]
    assert list(mark[0]) == ["e", "E", "s", "p", "P", "i", "r", "T"]
    assert [m["E"] // 1000 for m in mark] == list(
        range(mark[0]["E"] // 1000, mark[-1]["E"] // 1000 + 1)
    )


def test_subscribe_unsubscribe_list(ex: LocalExchange) -> None:
    with connect(f"{ex.ws_base_url}/ws") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 1}))
        assert json.loads(ws.recv(timeout=2)) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        listed = {"result": ["ethusdt@aggTrade"], "id": 2}

        def aggtrades(out: list) -> list:
            return [f for f in out if isinstance(f, dict) and f.get("e") == "aggTrade"]

        frames = collect_until(ws, lambda out: listed in out and aggtrades(out))
        data = aggtrades(frames)
        assert data and all(f["s"] == "ETHUSDT" for f in data)  # raw payloads on /ws
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 3}))
        collect_until(ws, lambda out: {"result": None, "id": 3} in out)
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
        collect_until(ws, lambda out: {"result": [], "id": 4} in out)
        ws.send(json.dumps({"method": "NOPE", "id": 5}))
        reply = json.loads(ws.recv(timeout=2))
        assert reply["id"] == 5 and reply["error"]["code"] == 2


def test_raw_stream_path(ex: LocalExchange) -> None:
    with connect(f"{ex.ws_base_url}/ws/btcusdt@markPrice@1s") as ws:
        frames = collect_until(ws, lambda out: len(out) >= 2)
    assert all(f["e"] == "markPriceUpdate" for f in frames)


def test_depth_sync_over_websocket_with_rest_snapshot(ex: LocalExchange) -> None:
    with connect(f"{ex.ws_base_url}/ws/btcusdt@depth@100ms") as ws:
        buffered = collect_until(ws, lambda out: len(out) >= 1)
        snap = requests.get(
            ex.rest_base_url + "/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000}
        ).json()
        # diffs until two past the snapshot, however slow the machine (fixed waits flaked)
        buffered += collect_until(
            ws, lambda out: sum(e["u"] >= snap["lastUpdateId"] for e in buffered + out) >= 2
        )
        ex.clock.set_speed(0)  # type: ignore[attr-defined]
        buffered += collect(ws, 0.3)  # what was in flight
    events = [e for e in buffered if e["u"] >= snap["lastUpdateId"]]
    assert events[0]["U"] <= snap["lastUpdateId"] <= events[0]["u"]
    book = {side: {Decimal(p): Decimal(q) for p, q in snap[side]} for side in ("bids", "asks")}
    prev_u = None
    for ev in events:
        assert prev_u is None or ev["pu"] == prev_u
        prev_u = ev["u"]
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in ev[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = Decimal(q)
    truth = ex.market.book("BTCUSDT", events[-1]["T"], 1000)
    assert truth["lastUpdateId"] == events[-1]["u"]
    for side in ("bids", "asks"):
        assert book[side] == {Decimal(p): Decimal(q) for p, q in truth[side]}


def _trade_ids(frames: list) -> list[int]:
    return [f["data"]["a"] for f in frames if isinstance(f, dict) and "data" in f]


def test_drop_and_duplicate_faults(ex: LocalExchange) -> None:
    ex.faults.drop_probability = 0.3
    with connect(f"{ex.ws_base_url}/stream?streams=btcusdt@aggTrade") as ws:
        ids = _trade_ids(collect_until(ws, lambda out: len(out) >= 40))
    assert ids and any(b - a > 1 for a, b in zip(ids, ids[1:], strict=False))
    ex.faults.drop_probability = 0
    ex.faults.duplicate_probability = 0.5
    with connect(f"{ex.ws_base_url}/stream?streams=btcusdt@aggTrade") as ws:
        ids = _trade_ids(collect_until(ws, lambda out: len(out) >= 40))
    assert len(ids) > len(set(ids)) and sorted(set(ids)) == list(range(min(ids), max(ids) + 1))


def test_malformed_fault(ex: LocalExchange) -> None:
    ex.faults.malformed_probability = 0.5
    with connect(f"{ex.ws_base_url}/stream?streams=btcusdt@aggTrade/btcusdt@markPrice@1s") as ws:
        frames = collect_until(ws, lambda out: len(out) >= 40)
    bad = [
        f
        for f in frames
        if not isinstance(f, dict) or not isinstance(f.get("data", {}).get("E"), int)
    ]
    good = [f for f in frames if f not in bad]
    assert bad and good


def _closed(ws: ClientConnection) -> Callable[[list], bool]:
    """Whether the server has closed ``ws`` (for ``collect_until``)."""
    return lambda _frames: ws.close_code is not None


def test_disconnect_faults_and_connection_lifetime(ex: LocalExchange) -> None:
    """Each close is told apart by its reason, not by how fast a loaded machine got there."""
    ex.faults.disconnect_every_n_messages = 5
    with connect(f"{ex.ws_base_url}/stream?streams=btcusdt@depth@100ms") as ws:
        frames = collect_until(ws, _closed(ws))
        assert len(frames) == 5
        assert (ws.close_code, ws.close_reason) == (1001, "disconnect injected")
    ex.faults.disconnect_every_n_messages = 0
    with connect(f"{ex.ws_base_url}/stream?streams=btcusdt@depth@100ms") as ws:
        assert collect_until(ws, lambda out: len(out) >= 1)  # (a fixed 0.2 s failed in CI)
        ex.faults.disconnect_now()
        collect_until(ws, _closed(ws))
        assert (ws.close_code, ws.close_reason) == (1001, "disconnect injected")
    with LocalExchange(market=MARKET, max_connection_seconds=0.3, ping_interval=0.1) as short:
        t = time.monotonic()  # before the handshake, so the lower bound holds under any load
        with connect(f"{short.ws_base_url}/ws/btcusdt@markPrice@1s") as ws:
            collect_until(ws, _closed(ws))
            assert time.monotonic() - t >= 0.3  # not before its lifetime
            assert (ws.close_code, ws.close_reason) == (1001, "connection lifetime exceeded")


def test_replay_sends_recorded_frames_byte_identical() -> None:
    lines = [
        line
        for line in (DATA / "aggTrade.jsonl").read_text().splitlines()
        if line.startswith('{"stream":"sushiusdt@aggTrade"')
    ]
    with LocalExchange(market=MARKET, replay=DATA, speed=60) as ex:
        with connect(f"{ex.ws_base_url}/stream?streams=sushiusdt@aggTrade") as ws:
            got = []
            end = time.monotonic() + 20  # generous: a loaded CI machine
            while len(got) < len(lines) and time.monotonic() < end:
                got.append(ws.recv(timeout=end - time.monotonic()))
        with connect(f"{ex.ws_base_url}/ws/ctkusdt@kline_1m") as ws:
            kline = json.loads(ws.recv(timeout=3))
    assert got == lines
    assert kline["e"] == "kline" and kline["s"] == "CTKUSDT"


def test_faults_are_seeded() -> None:
    a, b = Faults(seed=3), Faults(seed=3)
    draws = [a.chance(0.5) for _ in range(50)]
    assert draws == [b.chance(0.5) for _ in range(50)]
    assert not Faults().chance(0.0)
