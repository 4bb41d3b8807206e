"""Issue 15 item 10: nothing in the ingest grows with the run, and nothing on its event loop
waits for the Dagster instance.

* The reported receipt -> durable p99 came from a histogram kept since the run started: a
  ratchet that one slow minute raises for the rest of the run. The heartbeat now reports the
  last ``LATENCY_SLOTS`` minutes, from a ring of per-minute histograms that stays bounded.
* The per-stream de-duplication windows, the trade-id gap list, the back-pressure queue and
  the open files stay bounded however many frames and segments go through.
* The symbols provider (in a Dagster run: a query of the instance's storage, which the
  scheduled audit and health runs write to) is asked off the event loop.

Clocks are simulated; nothing here depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import threading

import orjson

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn as _Conn
from petrosa_pipelines.ingest.streams import DEDUP_WINDOW, ID_GAP_GRACE_MS
from petrosa_pipelines.landing.writer import (
    LATENCY_SLOT_MS,
    LATENCY_SLOTS,
    LandingWriter,
    WriterStats,
)

T0 = 1_704_240_000_000
S = "BTCUSDT"


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def _land_at(w: LandingWriter, clock: Clock, latency_ms: int, n: int) -> None:
    """``n`` lines received ``latency_ms`` before the (frozen) clock, then made durable."""
    before = w.stats.lines_durable
    for i in range(n):
        assert w.put(clock.t - latency_ms, b'{"i":%d}' % i)
    w.rotate()
    assert w.stats.lines_durable == before + n


def test_the_reported_p99_forgets_a_slow_minute_and_its_ring_stays_bounded(tmp_path):
    clock = Clock(T0)
    with LandingWriter(tmp_path, "binance", "ss", clock_ms=clock) as w:
        _land_at(w, clock, 400, 50)  # one slow minute at the start (a contention episode)
        for minute in range(1, 30):
            clock.t = T0 + minute * LATENCY_SLOT_MS
            _land_at(w, clock, 4, 50)
        stats = w.stats
        assert len(stats.latency_slots) <= LATENCY_SLOTS
        assert stats.recent_latency_quantile(0.99, clock.t) == 4
        # since the start, the slow minute is 1/30 of the lines: above the 99th percentile
        assert stats.latency_quantile(0.99) == 400


def test_recent_quantile_covers_exactly_the_last_slots():
    st = WriterStats()
    for minute, latency in enumerate([100, 1, 1, 1, 1, 1, 50]):
        st.slot_hist(T0 + minute * LATENCY_SLOT_MS)[latency] += 10
    now = T0 + 6 * LATENCY_SLOT_MS + 5
    assert len(st.latency_slots) == LATENCY_SLOTS
    assert st.recent_latency_quantile(0.99, now) == 50  # minutes 2-6
    assert st.recent_latency_quantile(0.5, now) == 1
    assert st.recent_latency_quantile(0.99, now + LATENCY_SLOTS * LATENCY_SLOT_MS) is None


def _trade_frame(a: int, t: int) -> bytes:
    data = {"e": "aggTrade", "E": t + 5, "s": S, "a": a, "p": "42000.1", "q": "0.010",
            "f": a * 2, "l": a * 2 + 1, "T": t, "m": False}  # fmt: skip
    return orjson.dumps({"stream": f"{S.lower()}@aggTrade", "data": data})


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_per_stream_structures_and_open_files_stay_bounded(tmp_path):
    clock = Clock(T0)
    cfg = IngestConfig(group="ss", symbols=(S,), landing_path=str(tmp_path), datasets=("trades",))
    engine = IngestEngine(cfg, clock_ms=clock)
    engine.writer.start()
    conn = _Conn(1, "test")
    for st in engine._streams.values():
        st.source = 1
    trades = next(st for st in engine._streams.values() if st.stats.dataset == "trades")
    fds = None
    a = 1_000
    for rnd in range(12):
        for _ in range(DEDUP_WINDOW // 2):
            a += 1 if a % 997 else 3  # an id gap now and then
            clock.t += 7
            engine._on_frame(conn, _trade_frame(a, clock.t - 20), clock.t)
            engine._on_frame(conn, _trade_frame(a, clock.t - 20), clock.t)  # a duplicate
        engine.flush_landing()
        engine.writer.rotate()  # publish a segment per round: 12 rotations
        if rnd == 1:
            fds = _open_fds()  # after the first segments and the ledger directory exist
        assert len(trades.seen) <= DEDUP_WINDOW and len(trades.seen_order) <= DEDUP_WINDOW
        assert len(trades.missing) <= 1 + ID_GAP_GRACE_MS // 7 // 997
        assert not engine._blocked
        assert len(engine.writer.stats.latency_slots) <= LATENCY_SLOTS
    assert _open_fds() <= fds
    assert trades.stats.duplicates == 12 * (DEDUP_WINDOW // 2)
    assert engine.stats.gaps_recorded > 0  # the id gaps were ledgered, not kept
    engine.writer.close()


def test_the_symbols_provider_is_asked_off_the_event_loop(tmp_path):
    """The provider waits until the loop has turned 100 times: that can only happen if it
    is not called on the loop (on the loop it would time out, and the loop stand still)."""
    released = threading.Event()
    ticks_while_asked: list[int] = []

    def provider() -> list[str]:
        if not released.wait(timeout=30):  # a deadlock guard, not a speed threshold
            ticks_while_asked.append(-1)
        return [S, "ETHUSDT"]

    cfg = IngestConfig(group="ss", symbols=(S,), landing_path=str(tmp_path), datasets=("trades",))
    engine = IngestEngine(cfg, symbols_provider=provider)

    async def main() -> None:
        engine._maybe_poll_symbols(1e9)
        ticks = 0
        while not released.is_set():
            await asyncio.sleep(0)
            ticks += 1
            if ticks == 100:
                ticks_while_asked.append(ticks)
                released.set()
        await engine._symbols_poll

    asyncio.run(main())
    assert ticks_while_asked == [100]
    assert engine.symbols == ["BTCUSDT", "ETHUSDT"]
