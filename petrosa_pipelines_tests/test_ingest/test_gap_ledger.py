"""Gap-ledger bounds: each entry is in the time its dataset is partitioned by, and none is lost.

Regression for a bug the fault test found one run in three: an outage's trade gap opened at the
last trade's *event* time, which Binance stamps after the trade, so a lost trade whose own time
lay between the two fell outside every entry (and a refill by the ledger would not ask for it).
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn as _Conn
from petrosa_pipelines.ingest.streams import ID_GAP_GRACE_MS
from petrosa_pipelines.landing import GapRecord, LandingStore, LandingWriter
from petrosa_pipelines.landing.records import LEDGER_MAX_AHEAD_MS
from petrosa_pipelines_tests.test_landing import binance_frames as bf

T0 = 1_704_240_000_000
S = "BTCUSDT"
PUSH_LAG = 40  # ms between a trade and its push (event time), as on the live exchange


def _trade(agg_id: int, trade_time: int, symbol: str = S) -> bytes:
    data = {
        "e": "aggTrade", "E": trade_time + PUSH_LAG, "a": agg_id, "s": symbol, "p": "100.5",
        "q": "0.01", "f": agg_id * 2, "l": agg_id * 2 + 1, "T": trade_time, "m": False,
    }  # fmt: skip
    return bf._frame(f"{S.lower()}@aggTrade", data)


@pytest.fixture
def engine(tmp_path):
    cfg = IngestConfig(
        group="gl", symbols=(S,), landing_path=str(tmp_path), datasets=("trades", "candles")
    )
    eng = IngestEngine(cfg)
    conn = _Conn(1, "t")
    eng._primary = conn
    for st in eng._streams.values():
        st.source = conn.id
    eng.writer.start()
    yield eng
    if eng.writer.alive:
        eng.writer.close()


def _rotating(engine: IngestEngine) -> tuple[_Conn, _Conn]:
    """The engine mid-rotation: its open primary and an open candidate beside it."""
    old = engine._primary
    old.ws = object()
    cand = _Conn(2, "t", candidate=True)
    cand.ws = object()
    engine._candidate = cand
    return old, cand


def _gaps(engine: IngestEngine, tmp_path, dataset: str):
    engine.flush_landing()
    engine.writer.close()
    return LandingStore(tmp_path).gaps("binance", T0 - 600_000, T0 + 600_000, dataset, S)


@pytest.mark.parametrize("symbol", [S, S.lower()], ids=["fast path", "full parser"])
def test_a_disconnect_gap_on_trades_is_bounded_by_trade_times(engine, tmp_path, symbol):
    conn = engine._primary
    engine._on_frame(conn, _trade(100, T0, symbol), T0 + PUSH_LAG)
    # trade 101 (time T0 + 10, pushed at T0 + 50) is lost with the connection
    engine._drop_primary(conn, T0 + 60)
    conn2 = _Conn(2, "t")
    engine._primary = conn2
    for st in engine._streams.values():
        st.source = conn2.id
    engine._on_frame(conn2, _trade(102, T0 + 900, symbol), T0 + 900 + PUSH_LAG)
    (gap,) = _gaps(engine, tmp_path, "trades")
    assert gap.cause == "disconnect"
    assert (gap.start_ms, gap.end_ms) == (T0, T0 + 900)
    assert gap.start_ms <= T0 + 10 <= gap.end_ms


def test_a_disconnect_gap_on_candles_is_bounded_by_open_times(engine, tmp_path):
    conn = engine._primary
    minute = 60_000
    # the 12:00 candle is in progress when the connection drops; its final kline is lost
    engine._on_frame(conn, bf.kline(S, T0, False, T0 + 30_000), T0 + 30_000)
    engine._drop_primary(conn, T0 + 31_000)
    conn2 = _Conn(2, "t")
    engine._primary = conn2
    for st in engine._streams.values():
        st.source = conn2.id
    engine._on_frame(conn2, bf.kline(S, T0 + 2 * minute, False, T0 + 2 * minute + 5), T0 + 125_000)
    (gap,) = _gaps(engine, tmp_path, "candles")
    assert (gap.start_ms, gap.end_ms) == (T0, T0 + 2 * minute)  # both lost finals' open times


def test_trade_ids_still_missing_at_shutdown_are_ledgered(engine, tmp_path):
    conn = engine._primary
    engine._on_frame(conn, _trade(100, T0), T0 + PUSH_LAG)
    engine._on_frame(conn, _trade(103, T0 + 300), T0 + 300 + PUSH_LAG)  # 101..102 not yet seen
    assert engine.stats.gaps_recorded == 0  # within the grace a late id may still come

    async def stop():
        heartbeat = asyncio.create_task(asyncio.sleep(3600))
        await engine._shutdown(heartbeat)

    asyncio.run(stop())
    gaps = LandingStore(tmp_path).gaps("binance", T0 - 1, T0 + ID_GAP_GRACE_MS, "trades", S)
    assert [(g.cause, g.detail, g.start_ms, g.end_ms) for g in gaps] == [
        ("id_gap", "agg_trade_id 101..102", T0, T0 + 300)
    ]


def test_restart_gap_opens_at_the_previous_runs_last_trade_time(tmp_path):
    cfg = IngestConfig(group="gl", symbols=(S,), landing_path=str(tmp_path), datasets=("trades",))
    first = IngestEngine(cfg)
    conn = _Conn(1, "t")
    first._primary = conn
    for st in first._streams.values():
        st.source = conn.id
    first.writer.start()
    first._on_frame(conn, _trade(100, T0), T0 + PUSH_LAG)

    async def stop():
        await first._shutdown(asyncio.create_task(asyncio.sleep(3600)))

    asyncio.run(stop())
    second = IngestEngine(cfg)
    second._record_restart_gap()
    trades = next(st for st in second._streams.values() if st.stats.dataset == "trades")
    assert trades.outage_from == T0 and trades.outage_cause == "writer_restart"


def test_a_rotation_candidate_dying_hands_its_streams_back_to_the_live_connection(engine, tmp_path):
    """The old connection still carries every stream: no reconnect, no leaked socket; the
    streams the candidate had taken over get a gap, since what the old connection sent
    meanwhile was discarded as the candidate's."""
    old, cand = _rotating(engine)
    trades = next(st for st in engine._streams.values() if st.stats.dataset == "trades")
    engine._on_frame(old, _trade(100, T0), T0 + PUSH_LAG)
    engine._on_frame(cand, _trade(101, T0 + 10), T0 + 10 + PUSH_LAG)  # held by the candidate
    engine._on_frame(old, _trade(101, T0 + 10), T0 + 10 + PUSH_LAG)  # overlap reached: switch
    assert trades.source == cand.id
    engine._on_frame(cand, _trade(102, T0 + 20), T0 + 20 + PUSH_LAG)
    engine._on_frame(old, _trade(103, T0 + 30), T0 + 30 + PUSH_LAG)  # discarded: not its stream
    engine._on_close(cand)  # the candidate dies before it sends 103
    assert engine._primary is old and engine._candidate is None and trades.source == old.id
    assert engine.stats.disconnects == 1
    engine._on_frame(old, _trade(104, T0 + 40), T0 + 40 + PUSH_LAG)
    (gap,) = _gaps(engine, tmp_path, "trades")
    assert (gap.cause, gap.start_ms, gap.end_ms) == ("disconnect", T0 + 20, T0 + 40)


def _stop(engine: IngestEngine) -> None:
    async def stop():
        await engine._shutdown(asyncio.create_task(asyncio.sleep(3600)))

    asyncio.run(stop())


def test_an_outage_still_open_at_shutdown_is_ledgered(engine, tmp_path):
    """Issue 11 item 7: the connection dropped and the ingest stopped before the stream came
    back; the outage used to be written only when the next message arrived, i.e. never."""
    conn = engine._primary
    engine._on_frame(conn, _trade(100, T0), T0 + PUSH_LAG)
    engine._drop_primary(conn, T0 + 60)
    _stop(engine)
    gaps = LandingStore(tmp_path).gaps("binance", T0 - 1, T0 + 1, "trades", S)
    assert [(g.cause, g.start_ms, g.detail) for g in gaps] == [
        ("disconnect", T0, "open at shutdown")
    ]
    assert gaps[0].end_ms >= T0 + 60  # up to the stop: a trade up to then may be lost


def _landed_then_killed(tmp_path, heartbeat_data_ms: int | None) -> None:
    """A first run lands trade 100 at T0, then dies the hard way: its heartbeat (if any)
    claims a later trade it had only queued (a kill -9 loses the writer's queue)."""
    from petrosa_pipelines.ingest import heartbeat as hb

    with LandingWriter(tmp_path, "binance", "gl") as w:
        assert w.put(T0 + PUSH_LAG, _trade(100, T0))
    if heartbeat_data_ms is not None:
        stream = {"last_data_ms": heartbeat_data_ms, "last_event_ms": heartbeat_data_ms + 40}
        hb.write_heartbeat(tmp_path, "binance", "gl",
                           {"streams": {f"{S.lower()}@aggTrade": stream}})  # fmt: skip


@pytest.mark.parametrize("heartbeat_data_ms", [T0 + 5_000, None], ids=["ahead", "none"])
def test_restart_gap_opens_at_the_last_landed_trade_time(tmp_path, heartbeat_data_ms):
    """Issue 11 item 7: the restart gap opened at the heartbeat's last data time, which can be
    ahead of what became durable (trades in between fell outside every window) or absent."""
    _landed_then_killed(tmp_path, heartbeat_data_ms)
    cfg = IngestConfig(group="gl", symbols=(S,), landing_path=str(tmp_path), datasets=("trades",))
    second = IngestEngine(cfg)
    second._record_restart_gap()
    trades = next(st for st in second._streams.values() if st.stats.dataset == "trades")
    assert (trades.outage_from, trades.outage_cause) == (T0, "writer_restart")


def test_a_far_future_window_is_clamped_when_written(tmp_path):
    """Issue 11 item 9: a far-future trade time made a ledger entry end at 2**63-1."""
    with LandingWriter(tmp_path, "binance", "gl") as w:
        assert w.record_gap(GapRecord("trades", S, T0, 2**63 - 1, "disconnect", T0 + 1_000))
    (path,) = (tmp_path / "binance" / "_gaps" / "gl").glob("gap-*.jsonl")
    raw = msgspec.json.decode(path.read_bytes())
    assert raw["start_ms"] == T0 and raw["end_ms"] == T0 + 1_000 + LEDGER_MAX_AHEAD_MS
    assert "clamped from" in raw["detail"]


def test_a_poisoned_ledger_is_read_safely(tmp_path):
    """Entries written before the check (or by anything else) are clamped when read, and a
    corrupt file is reported without hiding the others."""
    gdir = tmp_path / "binance" / "_gaps" / "gl"
    gdir.mkdir(parents=True)
    poisoned = {"dataset": "trades", "symbol": S, "start_ms": T0, "end_ms": 2**63 - 1,
                "cause": "disconnect", "recorded_at": T0 + 1_000}  # fmt: skip
    (gdir / "gap-1-w-1.json").write_bytes(msgspec.json.encode(poisoned))
    (gdir / "gap-2-w-2.json").write_bytes(b'{"dataset": "trades", "end_ms": 1e999')
    fine = {**poisoned, "end_ms": T0 + 500, "recorded_at": T0 + 600}
    (gdir / "gap-3-w-3.json").write_bytes(msgspec.json.encode(fine))
    store = LandingStore(tmp_path)
    gaps = store.gaps("binance", T0 - 1, 2**63 - 1, "trades", S)
    assert sorted(g.end_ms for g in gaps) == [T0 + 500, T0 + 1_000 + LEDGER_MAX_AHEAD_MS]
    assert len(store.ledger_errors) == 1 and "gap-2-w-2.json" in store.ledger_errors[0]


def test_a_rotation_finished_before_a_candle_stream_overlapped_records_a_gap(engine, tmp_path):
    """Candles carry no sequence: a rotation forced by ``rotation_overlap_s`` (or the old
    connection closing) before the candle stream proved the overlap could lose updates between
    the two connections silently. The stream gets a gap from its last accepted candle to the
    candidate's first; trades, whose consecutive ids prove continuity, get none."""
    old, cand = _rotating(engine)
    engine._on_frame(old, bf.kline(S, T0, True, T0 + 59_999), T0 + 59_999)  # T0's closed
    engine._on_frame(old, _trade(100, T0), T0 + PUSH_LAG)
    # the candidate starts two candles on, the old connection never catches up: the candle
    # between may have lost its close
    m = 60_000
    engine._on_frame(cand, bf.kline(S, T0 + 2 * m, False, T0 + 2 * m + 9_000), T0 + 2 * m + 9_000)
    engine._on_frame(cand, _trade(101, T0 + 10), T0 + 10 + PUSH_LAG)
    engine._finish_rotation()  # rotation_overlap_s ran out
    assert engine._primary is cand and engine.stats.rotations == 1
    (gap,) = _gaps(engine, tmp_path, "candles")
    assert (gap.cause, gap.start_ms, gap.end_ms) == ("rotation_no_overlap", T0, T0 + 2 * m)
    assert LandingStore(tmp_path).gaps("binance", T0 - 1, T0 + 60_000, "trades", S) == []


def test_a_rotation_forced_inside_the_same_candle_loses_no_closed_candle(engine, tmp_path):
    """The candidate's first update is of the candle the old connection was on: that candle's
    close and every later one come from the candidate, so no gap (a false one was seen under
    load, the old connection too far behind to prove the overlap within rotation_overlap_s)."""
    old, cand = _rotating(engine)
    engine._on_frame(old, bf.kline(S, T0, False, T0 + 1_000), T0 + 1_000)
    engine._on_frame(cand, bf.kline(S, T0, False, T0 + 9_000), T0 + 9_000)
    engine._finish_rotation()
    assert _gaps(engine, tmp_path, "candles") == []


def test_a_rotation_whose_streams_overlapped_records_nothing(engine, tmp_path):
    old, cand = _rotating(engine)
    engine._on_frame(cand, bf.kline(S, T0, False, T0 + 1_000), T0 + 1_000)
    engine._on_frame(old, bf.kline(S, T0, False, T0 + 1_000), T0 + 1_000)  # overlap reached
    engine._finish_rotation()
    assert _gaps(engine, tmp_path, "candles") == []
