"""Bybit's book across a break and a disconnect, on a simulated clock.

Bybit sends the book in the stream (https://bybit-exchange.github.io/docs/v5/websocket/public/
orderbook): a snapshot at subscribe, then deltas whose ``u`` rises by one per message. After a
lost delta the engine subscribes the depth stream afresh; the snapshot that answers carries the
``u`` of the last delta already received, and it must resync the book at once. After a
disconnect the book is dropped until the new connection's snapshot, so no sample is taken
inside the ledgered window, live or rebuilt from landing.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.books import RESUBSCRIBE_EVERY_MS
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.landing.book import BookSample

S = "BTCUSDT"
TOPIC = f"orderbook.50.{S}"
T0 = 1_709_423_700_000


def book(kind: str, u: int, ts: int, bids, asks) -> bytes:
    """A Bybit v5 linear ``orderbook.50`` frame as the venue sends it."""
    data = {"s": S, "b": bids, "a": asks, "u": u, "seq": 1_000 + u}
    return orjson.dumps({"topic": TOPIC, "type": kind, "ts": ts, "data": data, "cts": ts - 1})


class FakeWs:
    """Records what the engine sends on its connection."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send(self, frame: bytes) -> None:
        self.sent.append(orjson.loads(frame))


class Clock:
    """The engine's receipt clock, moved by the test (no wall time needs to pass)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def engine(tmp_path):
    cfg = IngestConfig(group="rs", exchange="bybit-linear", symbols=(S,), datasets=("depth",),
                       landing_path=str(tmp_path), rest_base_url="http://127.0.0.1:9")  # fmt: skip
    clock = Clock(T0)
    eng = IngestEngine(cfg, clock_ms=clock)
    eng.clock = clock  # type: ignore[attr-defined]
    eng._primary = Conn(1, "t", ws=FakeWs())  # type: ignore[arg-type]
    for st in eng._streams.values():
        st.source = 1
    eng.writer.start()
    samples: list[BookSample] = []
    keep = eng._samples
    eng._samples = lambda xs: (samples.extend(xs), keep(xs))  # type: ignore[method-assign]
    eng.emitted = samples  # type: ignore[attr-defined]
    yield eng
    if eng.writer.alive:
        eng.writer.close()


def feed(engine: IngestEngine, frame: bytes, recv: int) -> None:
    engine.clock.t = recv
    engine._on_frame(engine._primary, frame, recv)


def resubscribe(engine: IngestEngine) -> None:
    """One manage tick's snapshot requests, run to completion."""

    async def go() -> None:
        engine._request_snapshots()
        await asyncio.gather(*engine._snapshot_tasks.values())

    asyncio.run(go())


def ops(engine: IngestEngine) -> list[tuple[str, list[str]]]:
    return [(m["op"], m["args"]) for m in engine._primary.ws.sent]


def gaps(engine: IngestEngine, tmp_path) -> list[tuple[int, int, str]]:
    engine.flush_landing()
    engine.writer.close()
    found = LandingStore(tmp_path).gaps("bybit-linear", T0 - 60_000, T0 + 60_000, "depth", S)
    return sorted((g.start_ms - T0, g.end_ms - T0, g.cause) for g in found)


def test_one_lost_delta_resyncs_on_the_snapshot_that_answers_the_resubscription(engine, tmp_path):
    """The answer's ``u`` is the last delta's, already received: it is the snapshot the book
    waits for, not a duplicate (the e2e run stayed unsynced 155 s while it was dropped)."""
    feed(engine, book("snapshot", 10, T0, [["100", "1"]], [["101", "1"]]), T0 + 5)
    feed(engine, book("delta", 11, T0 + 1_000, [["100", "2"]], []), T0 + 1_005)
    # 12 is lost; 13 and 14 still come on the old subscription
    feed(engine, book("delta", 13, T0 + 3_000, [["100", "3"]], []), T0 + 3_005)
    feed(engine, book("delta", 14, T0 + 4_000, [["99", "4"]], []), T0 + 4_005)
    sync = engine._books[S]
    assert not sync.book.synced and sync.breaks == 1
    resubscribe(engine)
    assert ops(engine) == [("unsubscribe", [TOPIC]), ("subscribe", [TOPIC])]
    feed(engine, book("snapshot", 14, T0 + 4_010, [["100", "3"], ["99", "4"]], [["101", "1"]]),
         T0 + 4_020)  # fmt: skip
    assert sync.book.synced and sync.book.last_update_id == 14
    feed(engine, book("delta", 15, T0 + 5_000, [["98", "5"]], []), T0 + 5_005)
    assert sync.book.last_update_id == 15 and sync.breaks == 1
    depth = engine._streams[next(iter(engine._streams))]
    assert depth.stats.duplicates == 0 and engine.stats.dead_letters == 0
    assert not engine._book_break_from and not engine._snapshot_tasks
    # the window ends at the snapshot: the book is known again from there
    assert gaps(engine, tmp_path) == [(1_000, 4_010, "sequence_break")]


def test_a_resubscription_is_repeated_after_five_seconds_of_the_engines_clock(engine):
    """The rate limit is measured on the receipt clock, not the wall: on a clock running 30x
    faster than the wall, a wall-clock limit stretched one lost snapshot to 150 s of data."""
    feed(engine, book("snapshot", 10, T0, [["100", "1"]], [["101", "1"]]), T0 + 5)
    feed(engine, book("delta", 12, T0 + 1_000, [["100", "2"]], []), T0 + 1_005)  # 11 lost
    resubscribe(engine)
    assert len(ops(engine)) == 2
    # the answer is lost too: nothing again before the interval, on the engine's clock
    engine.clock.t = T0 + 1_005 + RESUBSCRIBE_EVERY_MS - 1
    resubscribe(engine)
    assert len(ops(engine)) == 2
    engine.clock.t = T0 + 1_005 + RESUBSCRIBE_EVERY_MS
    resubscribe(engine)
    assert ops(engine)[2:] == [("unsubscribe", [TOPIC]), ("subscribe", [TOPIC])]
    feed(engine, book("snapshot", 20, T0 + 6_100, [["97", "1"]], [["101", "1"]]), T0 + 6_110)
    assert engine._books[S].book.last_update_id == 20


def test_a_snapshot_seen_while_the_book_is_synced_is_still_a_duplicate(engine):
    feed(engine, book("snapshot", 10, T0, [["100", "1"]], [["101", "1"]]), T0 + 5)
    feed(engine, book("delta", 11, T0 + 1_000, [["100", "2"]], []), T0 + 1_005)
    feed(engine, book("snapshot", 11, T0 + 1_000, [["100", "2"]], [["101", "1"]]), T0 + 1_010)
    depth = engine._streams[next(iter(engine._streams))]
    assert depth.stats.duplicates == 1 and engine._books[S].syncs == 1


def test_after_a_disconnect_no_sample_until_the_new_snapshot_and_the_rebuild_agrees(
    engine, tmp_path
):
    """The cut comes after the delta at +2.1 s; the new connection's snapshot at +4.3 s shows
    another book. The pre-cut book must not be sampled at +3 s or +4 s, live or rebuilt."""
    feed(engine, book("snapshot", 100, T0 + 50, [["100", "1"]], [["101", "1"]]), T0 + 55)
    for i, t in enumerate(range(300, 2_101, 300), 1):
        feed(engine, book("delta", 100 + i, T0 + t, [["100", str(i + 1)]], []), T0 + t + 5)
    conn = engine._primary
    engine.clock.t = T0 + 2_500
    engine._drop_primary(conn, engine.now_ms())
    assert not engine._books[S].book.synced
    engine.stats.connections_opened += 1
    new = Conn(2, "t", ws=FakeWs())  # type: ignore[arg-type]
    engine._on_open(new)
    feed(engine, book("snapshot", 500, T0 + 4_300, [["90", "9"]], [["91", "9"]]), T0 + 4_310)
    for i, t in enumerate(range(4_600, 7_001, 300), 1):
        feed(engine, book("delta", 500 + i, T0 + t, [["90", str(i)]], []), T0 + t + 5)
    live = [(s.snapshot_time - T0, s.last_update_id, s.bid_floats) for s in engine.emitted]
    assert [t for t, _, _ in live] == [1_000, 2_000, 5_000, 6_000]
    assert live[1] == (2_000, 106, [(100.0, 7.0)]) and live[2][1:] == (502, [(90.0, 2.0)])
    ledger = gaps(engine, tmp_path)
    assert ledger == [(2_100, 4_300, "disconnect"), (2_100, 4_300, "sequence_break")]
    cfg = engine.config
    store = LandingStore(tmp_path, depth_cadence_ms=cfg.depth_cadence_ms,
                         depth_top_n=cfg.depth_top_n)  # fmt: skip
    rebuilt = store.depth_samples("bybit-linear", S, T0, T0 + 7_000)
    assert [(s.snapshot_time - T0, s.last_update_id, s.bid_floats) for s in rebuilt] == live
    assert not any(a < t < b for t, _, _ in live for a, b, _ in ledger)
