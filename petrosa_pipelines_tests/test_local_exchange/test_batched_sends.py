"""A tick's frames go out in one socket write when no per-frame fault is on, and the client
receives exactly what the frame-by-frame path sends: the same frames, in the same order, each
text or binary as before.

Batching exists for speed (the demo runs the exchange and the ingest in one process, where each
write handed the GIL to the other thread); these tests hold it to being invisible on the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import ClientConnection, connect

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.local_exchange.responses import CoalescingConnection, send_frames

pytestmark = pytest.mark.integration

START_MS = 1_704_456_000_000  # 2024-01-05 12:00:00 UTC
MARKET = MarketConfig(seed=7, symbols=("BTCUSDT",), trades_per_day=50_000)
BINANCE = (
    "/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m/btcusdt@depth@100ms/btcusdt@markPrice@1s"
)
BYBIT_TOPICS = ["publicTrade.BTCUSDT", "kline.1.BTCUSDT", "orderbook.50.BTCUSDT", "tickers.BTCUSDT"]
#: clock moves (ms): a second, then longer ticks of many frames each (under max_catchup_ms)
STEPS = (1_000, 2_000, 5_000, 10_000, 30_000, 1_000)


def _binance_at(t_ms: int) -> Callable[[dict], bool]:
    """The tick up to ``t_ms`` was sent: its ``markPrice@1s`` sample of ``t_ms`` arrived."""
    return lambda f: f.get("data", {}).get("e") == "markPriceUpdate" and f["data"]["E"] >= t_ms


def _bybit_at(t_ms: int) -> Callable[[dict], bool]:
    """The tick up to ``t_ms`` was sent: its book message of the step at ``t_ms`` arrived (every
    step has one: an unchanged step restates the best bid)."""
    return lambda f: f.get("topic", "").startswith("orderbook.") and f["cts"] >= t_ms


def _read_until(ws: ClientConnection, frames: list, mark: Callable[[dict], bool]) -> None:
    """Append raw frames (``str`` text, ``bytes`` binary) until one satisfies ``mark``."""
    while True:
        raw = ws.recv(timeout=60)  # generous: a loaded machine slows the sender, not the verdict
        frames.append(raw)
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if isinstance(parsed, dict) and mark(parsed):
            return


@contextmanager
def _streams(faults: Faults) -> Iterator[tuple[SimulatedClock, ClientConnection, ClientConnection]]:
    """A stepped exchange with a Binance combined stream and a Bybit connection subscribed to
    every topic kind, both opened at ``START_MS``."""
    clock = SimulatedClock(START_MS, speed=0.0)
    with ExitStack() as stack:
        ex = stack.enter_context(LocalExchange(market=MARKET, faults=faults, clock=clock))
        binance = stack.enter_context(connect(ex.ws_base_url + BINANCE))
        bybit = stack.enter_context(connect(ex.ws_base_url + "/v5/public/linear"))
        bybit.send(json.dumps({"op": "subscribe", "args": BYBIT_TOPICS, "req_id": "1"}))
        # the ack (its conn_id differs per connection) before the clock moves: the snapshots
        # that follow it are then of START_MS on both paths
        assert json.loads(bybit.recv(timeout=60))["success"] is True
        yield clock, binance, bybit


def _record(faults: Faults) -> tuple[list, list]:
    """Every frame both connections receive while the clock moves through ``STEPS``; each step
    only once the previous one's frames arrived, so both paths send the same ticks."""
    got_binance: list = []
    got_bybit: list = []
    with _streams(faults) as (clock, binance, bybit):
        t = START_MS
        for step in STEPS:
            t += step
            clock.set(t)
            _read_until(binance, got_binance, _binance_at(t))
            _read_until(bybit, got_bybit, _bybit_at(t))
    return got_binance, got_bybit


def test_a_batched_tick_sends_what_the_per_frame_path_sends(monkeypatch) -> None:
    batches: list[int] = []
    real = LocalExchange._send_all

    async def counting(self, session, payloads):  # noqa: ANN001, ANN202
        batches.append(len(payloads))
        return await real(self, session, payloads)

    monkeypatch.setattr(LocalExchange, "_send_all", counting)
    batched = _record(Faults())
    assert batches and max(batches) > 100  # the long ticks really went out batched
    batches.clear()
    # a fault switch that is on (so every frame takes the per-frame path) but never fires
    per_frame = _record(Faults(disconnect_every_n_messages=10**9))
    assert batches == []
    for venue, got in zip(("binance", "bybit"), batched, strict=True):
        assert len(got) > 200, venue
        assert all(isinstance(f, str) for f in got), venue
    assert batched == per_frame


def test_send_frames_is_one_write_of_the_frames_send_frame_sends() -> None:
    """Text and binary frames (non-UTF-8 payloads go out binary) in order, one write."""
    payloads = [b'{"a":1}', b"\xff\xfe\x00garbage", "caf\u00e9".encode(), b"", b"[2]"]

    writes: list[int] = []

    async def main() -> tuple[list, int]:

        async def handler(conn: ServerConnection) -> None:
            real_write = conn.transport.write

            def write(data: bytes) -> None:
                writes.append(len(data))
                real_write(data)

            conn.transport.write = write  # type: ignore[method-assign]
            await send_frames(conn, payloads)
            await conn.wait_closed()

        async with serve(
            handler, "127.0.0.1", 0, create_connection=CoalescingConnection, compression=None
        ) as srv:
            port = srv.sockets[0].getsockname()[1]
            async with async_connect(f"ws://127.0.0.1:{port}") as ws:
                got = [await asyncio.wait_for(ws.recv(), 10) for _ in payloads]
                return got, len(writes)  # before the closing handshake writes its frame

    got, n_writes = asyncio.run(main())
    assert got == ['{"a":1}', b"\xff\xfe\x00garbage", "caf\u00e9", "", "[2]"]
    assert n_writes == 1
    assert writes[0] == sum(2 + len(p) for p in payloads)  # unmasked frame headers + payloads
