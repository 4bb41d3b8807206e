"""The socket-client's own streams through core NATS: raw ``@trade``, partial depth
``@depth20@100ms`` and ``@ticker`` in its envelope (``socket_client_envelope``), landed as
received; a hole in raw trade ids is an ``id_gap`` and a partial-depth ``pu`` jump a
``sequence_break`` in the ledger (issue 14, items 1 and 2, over NATS)."""

from __future__ import annotations

import json

from petrosa_pipelines.exchanges.base import DepthUpdateRecord, RawTradeRecord
from petrosa_pipelines.ingest import IngestEngine
from petrosa_pipelines.ingest.streams import ID_GAP_GRACE_MS
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope
from petrosa_pipelines_tests.servers import nats_subject as _nats_subject  # noqa: F401
from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401
from petrosa_pipelines_tests.test_ingest.nats_frames import now_ms
from petrosa_pipelines_tests.test_ingest.test_nats_source import (
    landed_payloads,
    nats_config,
    run_with_publisher,
    wait_for,
)

BTC, ETH, SOL = "BTCUSDT", "ETHUSDT", "SOLUSDT"


def _frame(stream: str, data: dict, t: int) -> bytes:
    frame = json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()
    return socket_client_envelope(frame, t + 3, extra={"traceparent": "00-ab-cd-01"})


def trade(symbol: str, tid: int, t: int) -> bytes:
    data = {"e": "trade", "E": t + 2, "T": t, "s": symbol, "t": tid, "p": "100.5",
            "q": "0.002", "X": "MARKET", "m": True}  # fmt: skip
    return _frame(f"{symbol.lower()}@trade", data, t)


def depth20(symbol: str, u: int, pu: int, t: int) -> bytes:
    bids = [[f"{100 - i * 0.1:.1f}", "1.000"] for i in range(20)]
    asks = [[f"{100.1 + i * 0.1:.1f}", "1.000"] for i in range(20)]
    data = {"e": "depthUpdate", "E": t, "T": t - 1, "s": symbol, "U": pu + 1, "u": u, "pu": pu,
            "b": bids, "a": asks}  # fmt: skip
    return _frame(f"{symbol.lower()}@depth20@100ms", data, t)


def ticker(symbol: str, t: int) -> bytes:
    data = {"e": "24hrTicker", "E": t, "s": symbol, "p": "1.0", "P": "1.00", "w": "100.0",
            "c": "100.5", "Q": "0.002", "o": "99.5", "h": "101", "l": "99", "v": "1000",
            "q": "100000", "O": t - 86_400_000, "C": t, "F": 1, "L": 1000, "n": 1000}  # fmt: skip
    return _frame(f"{symbol.lower()}@ticker", data, t)


def test_socket_client_streams_over_core_nats(tmp_path, nats_url, nats_subject):
    cfg = nats_config(
        tmp_path,
        nats_url,
        nats_subject,
        datasets=("trades", "depth"),
        stream_profile="socket-client",
    )
    engine = IngestEngine(cfg)
    t0 = now_ms() - 10_000
    ids = [i for i in range(1000, 1100) if not 1050 <= i <= 1052]
    frames: list[bytes] = []
    for k, i in enumerate(range(1000, 1100)):  # BTC misses 1050..1052, ETH misses nothing
        t = t0 + 10 * k
        frames += [trade(BTC, i, t), trade(ETH, i, t)] if i in ids else [trade(ETH, i, t)]
        if k % 10 == 0:
            frames += [ticker(BTC, t), ticker(ETH, t)]
    # partial depth: u chains through pu, except one message missed (a pu jump)
    us = [5000 + 10 * k for k in range(30)]
    for k in range(1, 30):
        if k != 15:
            frames.append(depth20(BTC, us[k], us[k - 1], t0 + 100 * k))
    others = [trade(SOL, i, t0 + i) for i in range(1, 21)]
    tail = trade(BTC, 1100, t0 + 1000)
    landed_here = len(frames) + 1

    async def scenario(engine, nc) -> None:
        for f in [*frames, *others]:
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: engine._nats.stats.messages == len(frames) + len(others), "all")
        await wait_for(lambda: engine.writer.queued_mark >= len(frames), "handed to the writer")
        received = engine.now_ms()
        await wait_for(lambda: engine.now_ms() > received + ID_GAP_GRACE_MS, "the id grace")
        await nc.publish(nats_subject, tail)  # the trade after the grace ledgers the hole
        await wait_for(lambda: engine.stats.streams["btcusdt@trade"].gaps >= 1, "the id gap")

    run_with_publisher(engine, nats_url, scenario)
    landed = landed_payloads(tmp_path)
    assert len(landed) == landed_here and sorted(landed) == sorted([*frames, tail])
    assert engine._nats.stats.filtered_symbol == len(others)
    assert engine.stats.dead_letters == 0
    window = (t0 - 60_000, t0 + 60_000)
    store = LandingStore(tmp_path)
    trades = store.gaps("binance", *window, "trades", BTC)
    assert [g.cause for g in trades] == ["id_gap"] and "1050..1052" in trades[0].detail
    assert store.gaps("binance", *window, "trades", ETH) == []
    depth = store.gaps("binance", *window, "depth", BTC)
    assert [g.cause for g in depth] == ["sequence_break"]
    assert depth[0].start_ms <= t0 + 1400 and depth[0].end_ms >= t0 + 1600
    assert engine._streams[(RawTradeRecord, BTC)].stats.processed == len(ids) + 1
    assert engine._streams[(DepthUpdateRecord, BTC)].stats.processed == 28
    assert engine.snapshot()["liveness"] in ("alive", "stopped")
