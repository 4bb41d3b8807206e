"""NATS as an ingest source (issue 14, item 1): core NATS through a real server.

Frames are Binance payloads in the socket-client's envelope (``nats_frames``) published on a
subject of their own; the engine lands the envelope bytes as received, filters other symbols
out (counted, not landed, not dead letters), and ledgers what core NATS made it miss: a hole
in the trade ids, a stream that went silent while the others ticked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.streams import ID_GAP_GRACE_MS
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.landing.store import iter_segment_lines
from petrosa_pipelines_tests.servers import free_port, start_nats_server
from petrosa_pipelines_tests.servers import nats_subject as _nats_subject  # noqa: F401
from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401
from petrosa_pipelines_tests.test_ingest.nats_frames import agg_trade, mark_price, now_ms

DEADLINE_S = 60.0
BTC, ETH, SOL = "BTCUSDT", "ETHUSDT", "SOLUSDT"


def nats_config(root: Path, url: str, subject: str, **kw) -> IngestConfig:
    defaults = dict(
        group="natsg",
        symbols=(BTC, ETH),
        datasets=("trades",),
        landing_path=str(root),
        source="nats",
        nats_url=url,
        nats_subject=subject,
        heartbeat_interval_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        stale_after_s=60.0,
    )
    defaults.update(kw)
    return IngestConfig(**defaults)


async def wait_for(cond: Callable[[], object], what: str, limit_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {limit_s} s")
        await asyncio.sleep(0.02)


def processed(engine: IngestEngine) -> int:
    return sum(s.processed for s in engine.stats.streams.values())


def run_with_publisher(
    engine: IngestEngine, url: str, scenario: Callable[[IngestEngine, object], Awaitable[None]]
) -> None:
    """Run ``engine`` until ``scenario(engine, nc)`` (a connected publisher) is done."""

    async def main() -> None:
        task = asyncio.create_task(engine.run())
        nc = await nats.connect(url)
        try:
            await wait_for(lambda: engine._nats.ready.is_set() or task.done(), "subscription")
            if task.done():
                await task
            await scenario(engine, nc)
        finally:
            await nc.close()
            engine.stop()
            await asyncio.wait_for(task, 60)

    asyncio.run(main())


def landed_payloads(root: Path, group: str = "natsg") -> list[bytes]:
    return [
        payload
        for seg in sorted((root / "binance" / group).glob("*/*/seg-*.jsonl"))
        for _, payload in iter_segment_lines(seg)
        if payload[:1] != b"!"
    ]


def test_envelopes_land_as_sent_and_other_symbols_are_counted_not_landed(
    tmp_path, nats_url, nats_subject
):
    t0 = now_ms() - 5_000
    btc = [agg_trade(BTC, i, t0 + i) for i in range(1, 201)]
    eth = [agg_trade(ETH, i, t0 + i) for i in range(1, 101)]
    sol = [agg_trade(SOL, i, t0 + i) for i in range(1, 51)]
    engine = IngestEngine(nats_config(tmp_path, nats_url, nats_subject))

    async def scenario(engine, nc) -> None:
        for frames in zip(btc[:50], eth[:50], sol, strict=True):
            for f in frames:
                await nc.publish(nats_subject, f)
        for f in btc[50:] + eth[50:] + btc[:10]:  # the repeats are duplicates
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: processed(engine) == 300, "300 trades processed")
        await wait_for(lambda: engine._nats.stats.messages == 360, "every message read")

    run_with_publisher(engine, nats_url, scenario)
    landed = landed_payloads(tmp_path)
    assert sorted(landed) == sorted(btc + eth)  # the envelope bytes, each once
    src = engine.snapshot()["source"]
    assert src["kind"] == "nats" and src["subject"] == nats_subject
    assert src["filtered_symbol"] == 50 and src["messages"] == 360
    assert engine.stats.dead_letters == 0 and engine.stats.unknown_stream_failures == 0
    assert engine.stats.streams["btcusdt@aggTrade"].duplicates == 10
    assert engine.stats.gaps_recorded == 0
    assert engine.last_snapshot["liveness"] == "stopped"
    day = (t0 - 3_600_000, t0 + 3_600_000)
    assert LandingStore(tmp_path).gaps("binance", *day) == []
    # the receipt time of each line is ours; the envelope keeps the sender's timestamp
    assert all(b'"timestamp": "' in p for p in landed)


def test_a_hole_in_trade_ids_over_core_nats_is_a_gap_entry(tmp_path, nats_url, nats_subject):
    t0 = now_ms() - 5_000
    ids = [i for i in range(1, 101) if not 41 <= i <= 47]
    published = len(ids) + 1
    frames = [agg_trade(BTC, i, t0 + 10 * i) for i in ids]
    engine = IngestEngine(nats_config(tmp_path, nats_url, nats_subject))

    async def scenario(engine, nc) -> None:
        for f in frames:
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: processed(engine) == len(ids), "trades processed")
        # once the id grace (3 s of receipt time) is over, the next trade ledgers the hole
        received = engine.stats.streams["btcusdt@aggTrade"].last_message_ms
        await wait_for(lambda: now_ms() > received + ID_GAP_GRACE_MS, "the id grace over")
        await nc.publish(nats_subject, agg_trade(BTC, 101, t0 + 1010))
        await wait_for(lambda: engine.stats.gaps_recorded >= 1, "the id gap recorded")

    run_with_publisher(engine, nats_url, scenario)
    gaps = LandingStore(tmp_path).gaps("binance", t0 - 60_000, t0 + 60_000, "trades", BTC)
    assert [(g.cause, g.detail) for g in gaps] == [("id_gap", "agg_trade_id 41..47")]
    (gap,) = gaps
    assert processed(engine) == published and engine.stats.dead_letters == 0
    # bounded by the trade times on either side of the hole, so it covers the lost trades
    assert gap.start_ms <= t0 + 410 and gap.end_ms >= t0 + 470
    assert gap.group == "natsg"


def test_a_stream_silent_while_the_others_tick_is_an_outage(tmp_path, nats_url, nats_subject):
    stale_s = 1.0
    cfg = nats_config(
        tmp_path, nats_url, nats_subject, datasets=("trades", "funding"), stale_after_s=stale_s
    )
    engine = IngestEngine(cfg)
    marks: dict[str, int] = {}

    async def tick(nc, symbols: tuple[str, ...], seconds: float, ids: dict[str, int]) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = now_ms()
            for s in symbols:
                ids[s] += 1
                await nc.publish(nats_subject, agg_trade(s, ids[s], t))
                await nc.publish(nats_subject, mark_price(s, t))
            await nc.flush()
            await asyncio.sleep(0.05)

    async def scenario(engine, nc) -> None:
        ids = {BTC: 0, ETH: 0}
        await tick(nc, (BTC, ETH), 1.0, ids)
        await wait_for(lambda: engine.stats.streams["ethusdt@aggTrade"].processed == ids[ETH],
                       "ETH trades before the silence")  # fmt: skip
        marks["eth_last"] = engine.stats.streams["ethusdt@aggTrade"].last_data_ms
        # ETH stops for 3 x stale_after_s while BTC keeps ticking
        await tick(nc, (BTC,), 3 * stale_s, ids)
        assert engine._streams[_key(engine, ETH)].outage_from == marks["eth_last"]
        marks["eth_back"] = now_ms()
        await tick(nc, (BTC, ETH), 0.5, ids)
        await wait_for(lambda: engine.stats.streams["ethusdt@aggTrade"].gaps >= 1, "ETH outage")

    run_with_publisher(engine, nats_url, scenario)
    store = LandingStore(tmp_path)
    window = (marks["eth_last"] - 60_000, marks["eth_back"] + 60_000)
    eth = [g for g in store.gaps("binance", *window, "trades", ETH) if g.cause == "nats_silence"]
    assert len(eth) == 1
    assert eth[0].start_ms == marks["eth_last"] and eth[0].end_ms >= marks["eth_back"]
    assert store.gaps("binance", *window, "trades", BTC) == []
    assert engine._nats.stats.silences >= 2  # ETH's trades and its mark prices
    assert engine.stats.dead_letters == 0


def _key(engine: IngestEngine, symbol: str):
    return next(k for k, st in engine._streams.items()
                if st.stats.symbol == symbol and st.stats.dataset == "trades")  # fmt: skip


@pytest.mark.slow  # starts, kills and restarts its own nats-server
def test_a_disconnect_from_core_nats_opens_an_outage_on_every_stream(tmp_path):
    """A throwaway server (it is killed mid-test): the outage is ledgered once data is back."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    subject = "test.disconnect"
    engine = IngestEngine(nats_config(tmp_path, url, subject, datasets=("trades", "funding")))
    marks: dict[str, int] = {}

    async def main() -> None:
        server = await asyncio.to_thread(start_nats_server, port, tmp_path / "ns1")
        task = asyncio.create_task(engine.run())
        try:
            await wait_for(lambda: engine._nats.ready.is_set(), "subscription")
            nc = await nats.connect(url)
            t0 = now_ms()
            for i in range(1, 21):
                await nc.publish(subject, agg_trade(BTC, i, t0 + i))
                await nc.publish(subject, agg_trade(ETH, i, t0 + i))
            await nc.flush()
            await wait_for(lambda: processed(engine) == 40, "40 trades")
            await nc.close()
            marks["last"] = t0 + 20
            server.kill()
            await asyncio.to_thread(server.wait)
            await wait_for(lambda: not engine.connected, "the engine sees the disconnect")
            assert engine.stats.disconnects == 1
            server = await asyncio.to_thread(start_nats_server, port, tmp_path / "ns2")
            await wait_for(lambda: engine.connected, "the engine reconnects", 30)
            nc = await nats.connect(url)
            await asyncio.sleep(0.5)  # nats-py resubscribes on reconnect; let it reach the server
            t1 = now_ms()
            for i in range(31, 41):  # 21..30 were published while we were away
                await nc.publish(subject, agg_trade(BTC, i, t1 + i))
                await nc.publish(subject, agg_trade(ETH, i, t1 + i))
            await nc.flush()
            marks["back"] = t1 + 31
            await wait_for(lambda: processed(engine) == 60, "60 trades")
            await nc.close()
        finally:
            engine.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 60)
            server.kill()
            server.wait()

    asyncio.run(main())
    store = LandingStore(tmp_path)
    window = (marks["last"] - 60_000, marks["back"] + 60_000)
    for sym in (BTC, ETH):
        trades = store.gaps("binance", *window, "trades", sym)
        assert [g.cause for g in trades] == ["nats_disconnect"]
        assert trades[0].start_ms == marks["last"] and trades[0].end_ms == marks["back"]
        # the mark prices never came back in this run: ledgered at shutdown
        funding = store.gaps("binance", *window, "funding", sym)
        assert [g.cause for g in funding] == ["nats_disconnect"]
    assert engine.stats.reconnects >= 1


def test_nothing_is_landed_or_ledgered_for_a_group_that_never_connected(tmp_path):
    """No server: the engine retries (backoff) and stops cleanly without inventing data."""
    url = f"nats://127.0.0.1:{free_port()}"
    engine = IngestEngine(nats_config(tmp_path, url, "test.none"))

    async def main() -> None:
        task = asyncio.create_task(engine.run())
        await wait_for(lambda: engine._nats.stats.connect_failures >= 2, "retries")
        engine.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert not engine.connected and landed_payloads(tmp_path) == []
    assert engine.last_snapshot["source"]["hosts"] == url.removeprefix("nats://")
