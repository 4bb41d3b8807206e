"""The engine asks the venue, not Binance: a fake venue with in-stream book snapshots.

``InStreamVenue`` is a tiny adapter shaped like Bybit's (https://bybit-exchange.github.io/docs/
v5/ws/connect): one URL, topics subscribed in-band after connecting, an application ping on a
cadence, the book as an in-stream snapshot then deltas with one ``u`` per message, several
trades per frame and trade ids that are not consecutive. Frames are fed straight into the
engine's message path, and once through a real websocket server that records what the engine
sends.
"""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal

import orjson
import pytest
from websockets.asyncio.server import serve

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    Capabilities,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    ExchangeAdapter,
    MarkPriceRecord,
    Record,
    TradeRecord,
)
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines_tests.test_ingest.bybit_capture import BYBIT_SYMBOLS, bybit_frames, receipts

S = "BTCUSDT"
PING = b'{"op":"ping"}'
PING_S = 0.05


class InStreamVenue(ExchangeAdapter):
    """A venue that sends its book in the stream, wants pings and subscribes in-band."""

    venue = "test-instream"
    name = "test-instream"
    capabilities = Capabilities(
        datasets=frozenset({"trades", "depth", "funding"}),
        rest_reach_ms={},
        trade_ids_consecutive=False,
        book_snapshot_in_stream=True,
        ping_interval_s=PING_S,
    )
    symbol_pattern = re.compile(r"[A-Z0-9]{2,30}")
    channels = {"trades": "trade.{symbol}", "depth": "book.{symbol}", "funding": "ticker.{symbol}"}

    def stream_names(self, symbols, datasets):
        return [self.channels[d].format(symbol=s) for s in symbols for d in datasets]

    def combined_stream_url(self, ws_base_url, streams):
        return ws_base_url.rstrip("/") + "/public"

    def initial_messages(self, streams, request_id):
        return [self.subscribe_message(streams, request_id)]

    def ping_message(self):
        return PING

    def subscribe_message(self, streams, request_id):
        return orjson.dumps({"op": "subscribe", "args": list(streams), "req_id": request_id})

    def unsubscribe_message(self, streams, request_id):
        return orjson.dumps({"op": "unsubscribe", "args": list(streams), "req_id": request_id})

    def parse_frame(self, raw, received_at=None) -> list[Record]:
        m = orjson.loads(raw)
        topic = m.get("topic")
        if topic is None:
            return []  # acks, pongs
        kind, _, sym = topic.partition(".")
        if kind == "book":
            levels = {k: tuple((Decimal(p), Decimal(q)) for p, q in m[k]) for k in ("b", "a")}
            u = m["u"]
            if m["type"] == "snapshot":
                return [DepthSnapshotRecord(self.name, sym, u, m["ts"], None, levels["b"],
                                            levels["a"], received_at)]  # fmt: skip
            return [DepthUpdateRecord(self.name, sym, m["ts"], None, u, u, u - 1, levels["b"],
                                      levels["a"], received_at)]  # fmt: skip
        if kind == "trade":
            return [
                TradeRecord(
                    self.name,
                    sym,
                    t["seq"] * 1000 + i,
                    Decimal(t["p"]),
                    Decimal(t["v"]),
                    t["seq"] * 1000 + i,
                    t["seq"] * 1000 + i,
                    t["T"],
                    False,
                    m["ts"],
                    received_at=received_at,
                    trade_id=t["i"],
                )  # fmt: skip
                for i, t in enumerate(m["data"])
            ]
        return [MarkPriceRecord(self.name, sym, m["ts"], Decimal(m["mark"]), None, None, None,
                                None, received_at)]  # fmt: skip

    def parse(self, raw, received_at=None):
        recs = self.parse_frame(raw, received_at)
        return recs[0] if recs else None

    def rest_client(self, settings):
        raise AssertionError("an in-stream venue needs no REST client in the ingest")

    def archive_client(self, settings):
        return None


class RecordingRest:
    """Stands in for a REST client: remembers every depth snapshot asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def depth_snapshot(self, *args):
        self.calls.append(args)
        raise AssertionError("no REST snapshot for an in-stream venue")


def book(kind: str, u: int, ts: int, bids, asks) -> bytes:
    return orjson.dumps({"topic": f"book.{S}", "type": kind, "u": u, "ts": ts, "b": bids,
                         "a": asks})  # fmt: skip


def trades(ts: int, *fills: tuple[int, str]) -> bytes:
    data = [{"seq": seq, "i": tid, "p": "100.5", "v": "0.01", "T": ts} for seq, tid in fills]
    return orjson.dumps({"topic": f"trade.{S}", "ts": ts, "data": data})


def _levels(engine: IngestEngine) -> tuple[list, list]:
    return engine._books[S].book.top(10)


@pytest.fixture
def engine(tmp_path):
    cfg = IngestConfig(group="iv", symbols=(S,), landing_path=str(tmp_path),
                       datasets=("trades", "depth"))  # fmt: skip
    eng = IngestEngine(cfg, adapter=InStreamVenue(), rest_client=RecordingRest())
    eng._primary = Conn(1, "t")
    for st in eng._streams.values():
        st.source = 1
    eng.writer.start()
    yield eng
    if eng.writer.alive:
        eng.writer.close()


def _landed(engine: IngestEngine, tmp_path, t0: int) -> list[bytes]:
    engine.flush_landing()
    engine.writer.close()
    return [p for _, p in LandingStore(tmp_path).iter_lines("test-instream", t0 - 1, t0 + 60_000)]


def test_an_in_stream_snapshot_replaces_the_book_and_lands_as_its_frame(engine, tmp_path):
    t0 = time.time_ns() // 1_000_000
    conn = engine._primary
    frames = [
        book("snapshot", 100, t0, [["100", "1"], ["99", "2"]], [["101", "1"]]),
        book("delta", 101, t0 + 10, [["99", "0"]], [["102", "3"]]),
        # a snapshot in sync replaces the book too (a REST one would be ignored while in sync)
        book("snapshot", 150, t0 + 20, [["98", "5"]], [["103", "4"]]),
    ]
    engine._on_frame(conn, frames[0], t0 + 1)
    engine._on_frame(conn, frames[1], t0 + 11)
    assert _levels(engine) == ([(100.0, 1.0)], [(101.0, 1.0), (102.0, 3.0)])
    engine._on_frame(conn, frames[2], t0 + 21)
    assert _levels(engine) == ([(98.0, 5.0)], [(103.0, 4.0)])
    assert engine._books[S].book.last_update_id == 150 and engine.stats.dead_letters == 0
    assert _landed(engine, tmp_path, t0) == frames


def test_a_snapshot_whose_id_goes_back_after_a_restart_replaces_the_book(engine, tmp_path):
    t0 = time.time_ns() // 1_000_000
    conn = engine._primary
    engine._on_frame(conn, book("snapshot", 5_000_000, t0, [["100", "1"]], [["101", "1"]]), t0)
    for i in range(1, 4):
        engine._on_frame(conn, book("delta", 5_000_000 + i, t0 + i, [["100", str(i)]], []), t0 + i)
    # the venue restarted: its book numbers start again at 1
    restart = book("snapshot", 1, t0 + 50, [["90", "7"]], [["91", "8"]])
    engine._on_frame(conn, restart, t0 + 50)
    engine._on_frame(conn, book("delta", 2, t0 + 60, [["89", "1"]], []), t0 + 60)
    sync = engine._books[S]
    assert sync.book.last_update_id == 2
    assert _levels(engine) == ([(90.0, 7.0), (89.0, 1.0)], [(91.0, 8.0)])
    depth = next(st for st in engine._streams.values() if st.stats.dataset == "depth")
    assert depth.stats.duplicates == 0 and engine.stats.dead_letters == 0
    assert sync.breaks == 0
    assert restart in _landed(engine, tmp_path, t0)


def test_a_break_resubscribes_the_depth_stream_and_never_asks_rest(engine):
    t0 = time.time_ns() // 1_000_000
    sent: list[bytes] = []

    class FakeWs:
        async def send(self, frame: bytes) -> None:
            sent.append(frame)

    async def scenario() -> None:
        conn = engine._primary
        conn.ws = FakeWs()
        engine._on_frame(conn, book("snapshot", 10, t0, [["100", "1"]], [["101", "1"]]), t0)
        engine._on_frame(conn, book("delta", 12, t0 + 5, [["100", "2"]], []), t0 + 5)  # 11 lost
        assert not engine._books[S].book.synced
        engine._request_snapshots()
        await asyncio.wait_for(asyncio.gather(*engine._snapshot_tasks.values()), 10)
        engine._request_snapshots()  # at most one resubscription per symbol and interval
        assert not engine._snapshot_tasks
        engine._on_frame(conn, book("snapshot", 20, t0 + 30, [["95", "1"]], []), t0 + 30)

    asyncio.run(scenario())
    assert [orjson.loads(f)["op"] for f in sent] == ["unsubscribe", "subscribe"]
    assert all(orjson.loads(f)["args"] == [f"book.{S}"] for f in sent)
    assert engine._books[S].book.last_update_id == 20
    assert engine._rest.calls == []
    assert not engine._book_break_from  # the break became a gap entry when the book was back
    assert engine.stats.gaps_recorded == 1


def test_trade_ids_that_are_not_consecutive_record_no_id_gap(engine, tmp_path):
    t0 = time.time_ns() // 1_000_000
    conn = engine._primary
    frames = [
        trades(t0, (753843954913, "a9188a0a"), (753843954913, "4d4ad26c")),  # one taker order
        trades(t0 + 900, (753843988380, "19d7df56")),  # seq jumps by 33,467 between messages
        trades(t0 + 13_000, (753844300000, "5c2e07aa")),  # 13 s later: ~25 seq per ms
    ]
    for i, f in enumerate(frames):
        engine._on_frame(conn, f, t0 + (0, 900, 13_000)[i] + 5)
    st = next(st for st in engine._streams.values() if st.stats.dataset == "trades")
    assert st.stats.processed == 4 and st.stats.duplicates == 0
    assert engine.stats.dead_letters == 0
    assert st.missing == [] and engine.stats.gaps_recorded == 0
    engine._on_frame(conn, frames[0], t0 + 13_010)  # the same frame again: both fills dropped
    assert st.stats.duplicates == 2
    assert _landed(engine, tmp_path, t0) == frames  # a frame of two fills lands once


def test_connect_sends_subscribe_then_pings_on_the_cadence_and_no_rest(tmp_path):
    """A real websocket: the engine subscribes in-band, pings every ``ping_interval_s`` and
    syncs its book from the in-stream snapshot the server sends."""
    received: list[tuple[float, bytes]] = []
    rest = RecordingRest()

    async def handler(ws) -> None:
        async for msg in ws:
            received.append((time.monotonic(), msg if isinstance(msg, bytes) else msg.encode()))
            if orjson.loads(msg).get("op") == "subscribe":
                t = time.time_ns() // 1_000_000
                await ws.send(book("snapshot", 7, t, [["100", "1"]], [["101", "2"]]))
                await ws.send(book("delta", 8, t + 1, [["100", "3"]], []))

    def pings() -> list[float]:
        return [t for t, m in received if m == PING]

    async def main() -> IngestEngine:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            cfg = IngestConfig(
                group="ws", symbols=(S,), landing_path=str(tmp_path), datasets=("depth",),
                ws_base_url=f"ws://127.0.0.1:{port}", rest_base_url="http://127.0.0.1:9",
                heartbeat_interval_s=0.2,
            )  # fmt: skip
            engine = IngestEngine(cfg, adapter=InStreamVenue(), rest_client=rest)
            started = time.monotonic()
            task = asyncio.create_task(engine.run())
            deadline = started + 60
            while len(pings()) < 4 or not engine._books[S].book.synced:
                assert time.monotonic() < deadline, (received, engine.snapshot())
                await asyncio.sleep(0.02)
            window["s"] = time.monotonic() - started
            window["pings"] = len(pings())
            engine.stop()
            await asyncio.wait_for(task, 30)
            return engine

    window: dict[str, float] = {}
    engine = asyncio.run(main())
    first = orjson.loads(received[0][1])
    assert first == {"op": "subscribe", "args": [f"book.{S}", f"ticker.{S}"], "req_id": 1}
    # on the venue's cadence, not faster: no more pings than the time allows. (Not the gaps
    # between receive times: on a loaded machine one ping arrives late and the next on time,
    # 69 ms then 37 ms apart in CI, although each was sent a full interval after the last.)
    assert window["pings"] <= window["s"] / PING_S + 1, window
    assert engine._books[S].book.last_update_id == 8
    assert rest.calls == []


@pytest.mark.parametrize("exchange", ["binance", "binance-usdm"])
def test_the_exchange_is_a_venue_id_or_its_storage_name(tmp_path, exchange):
    cfg = IngestConfig(group="n", symbols=(S,), landing_path=str(tmp_path), exchange=exchange)
    engine = IngestEngine(cfg)
    assert (engine.adapter.venue, engine.exchange) == ("binance-usdm", "binance")
    assert cfg.ws_base_url == "wss://fstream.binance.com"


def test_an_unknown_venue_or_a_symbol_it_does_not_spell_is_refused():
    with pytest.raises(ValueError, match="registered"):
        IngestConfig(group="n", symbols=(S,), exchange="no-such-venue")
    with pytest.raises(ValueError, match="not a symbol of this venue"):
        IngestConfig(group="n", symbols=("BTC-USDT",), exchange="binance-usdm")


def test_the_recorded_bybit_capture_ingests_without_a_loss_a_gap_or_a_dead_letter(tmp_path):
    """The real adapter on real frames: in-stream book snapshots then deltas, several trades
    (UUID ids, not consecutive) and two candles per frame, tickers merged from deltas."""
    frames = bybit_frames()
    expected: dict[type, int] = {}
    parse = get_adapter("bybit-linear").parse_frame
    with_records = 0
    for f in frames:
        recs = parse(f, 0)
        with_records += bool(recs)
        for r in recs:
            expected[type(r)] = expected.get(type(r), 0) + 1
    cfg = IngestConfig(group="by", symbols=BYBIT_SYMBOLS, landing_path=str(tmp_path),
                       exchange="bybit-linear", rest_base_url="http://127.0.0.1:9")  # fmt: skip
    engine = IngestEngine(cfg, rest_client=RecordingRest())
    engine._primary = conn = Conn(1, "t")
    for st in engine._streams.values():
        st.source = 1
    engine.writer.start()
    recv = 0
    for recv, f in receipts(frames):
        engine._on_frame(conn, f, recv)
    engine.flush_landing()
    engine.writer.close()
    processed = {ds: 0 for ds in ("trades", "candles", "depth", "funding")}
    for st in engine._streams.values():
        assert st.stats.duplicates == 0 and st.stats.failed == 0, st.stats
        processed[st.stats.dataset] += st.stats.processed
    assert engine.stats.dead_letters == 0 and engine.stats.gaps_recorded == 0
    assert processed == {
        "trades": expected[TradeRecord],
        "candles": expected[CandleRecord],
        "depth": expected[DepthUpdateRecord] + expected[DepthSnapshotRecord],
        "funding": expected[MarkPriceRecord],
    }
    assert expected[TradeRecord] > len(BYBIT_SYMBOLS) and expected[DepthSnapshotRecord] == 4
    assert all(b.book.synced and b.breaks == 0 for b in engine._books.values())
    assert engine._rest.calls == []
    landed = list(LandingStore(tmp_path).iter_lines("bybit-linear", 0, recv + 1, slack_ms=10**13))
    assert len(landed) == with_records  # a frame of several records lands once
