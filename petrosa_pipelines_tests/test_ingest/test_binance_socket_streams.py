"""The ingest on the Petrosa socket-client's Binance streams, over the local exchange's websocket.

A group with the adapter's socket-client stream profile subscribes ``@trade``,
``@depth20@100ms`` and ``@ticker``: a raw trade id that never arrives is an ``id_gap`` in the
trades ledger, a partial-depth ``pu`` jump is a ``sequence_break`` in the depth ledger healed by
the next message, the raw trades never enter the aggTrade rows, and the depth dataset rebuilt
from the landed snapshots is the local exchange's top 20 at every sample second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import numpy as np
import orjson

from petrosa_pipelines.catalog.depth_layout import ALL_LEVEL_COLUMNS, LEVEL_COLUMNS
from petrosa_pipelines.exchanges.base import DepthUpdateRecord, RawTradeRecord, TickerRecord
from petrosa_pipelines.exchanges.binance.adapter import SOCKET_CLIENT_PROFILE, BinanceUsdmAdapter
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope
from petrosa_pipelines_tests.test_ingest.conftest import make_config, run_engine

S = "BTCUSDT"
DEADLINE_S = 60.0  # generous: the machine is shared; every wait ends on its condition


async def _until(cond, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _ms(series) -> np.ndarray:
    """A snapshot_time column as epoch ms."""
    return series.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _engine(exchange, tmp_path, **kw) -> IngestEngine:
    cfg = make_config(exchange, tmp_path, datasets=("trades", "depth"), **kw)
    adapter = BinanceUsdmAdapter(stream_profile=SOCKET_CLIENT_PROFILE)
    return IngestEngine(cfg, clock_ms=exchange.clock.now_ms, adapter=adapter)


def test_the_group_subscribes_the_socket_clients_streams(exchange, tmp_path):
    engine = _engine(exchange, tmp_path)
    kinds = ("trade", "depth20@100ms", "ticker")
    assert sorted(engine.stream_names()) == sorted(
        f"{s.lower()}@{k}" for s in ("BTCUSDT", "ETHUSDT") for k in kinds
    )
    assert {k[0] for k in engine._streams} == {RawTradeRecord, DepthUpdateRecord, TickerRecord}


def test_raw_trade_gaps_and_depth20_breaks_are_ledgered_and_sampling_goes_on(exchange, tmp_path):
    live = []

    class Recording(IngestEngine):
        def _samples(self, samples):
            live.extend(samples)
            super()._samples(samples)

    cfg = make_config(exchange, tmp_path, datasets=("trades", "depth"))
    adapter = BinanceUsdmAdapter(stream_profile=SOCKET_CLIENT_PROFILE)
    engine = Recording(cfg, clock_ms=exchange.clock.now_ms, adapter=adapter)
    faults = exchange.faults
    trades = engine._streams[(RawTradeRecord, S)].stats
    depth = engine._streams[(DepthUpdateRecord, S)].stats
    ticker = engine._streams[(TickerRecord, S)].stats
    marks: dict[str, int] = {}

    async def scenario(e: IngestEngine) -> None:
        await _until(lambda: trades.processed >= 20 and e.samples_emitted >= 5, "a steady feed")
        assert e.stats.gaps_recorded == 0 and depth.resyncs == 0
        faults.drop_probability = 0.2  # messages lost on the wire: trade ids and pu jump
        await _until(lambda: trades.gaps >= 1 and depth.gaps >= 1, "an id gap and a pu break")
        faults.drop_probability = 0.0
        marks["samples"] = e.samples_emitted
        marks["after"] = e.now_ms()
        late = marks["after"] + 2_000  # past the snapshot that heals the book

        def healed() -> int:
            return sum(x.symbol == S and x.snapshot_time > late for x in live)

        await _until(lambda: healed() >= 8, "samples after it")

    run_engine(engine, scenario)
    assert ticker.processed > 0 and engine.stats.dead_letters == 0
    assert depth.resyncs >= 1 and engine._books[S].breaks >= 1
    store = LandingStore(tmp_path)
    lo, hi = exchange.market.start_ms, marks["after"] + 3_600_000
    trade_gaps = store.gaps("binance", lo, hi, "trades", S)
    id_gaps = [g for g in trade_gaps if g.cause == "id_gap"]
    assert id_gaps and all(g.detail.startswith("trade_id ") for g in id_gaps)
    first, last = (int(x) for x in id_gaps[0].detail.split()[1].split(".."))
    assert first <= last
    depth_gaps = [g for g in store.gaps("binance", lo, hi, "depth", S)]
    assert any(g.cause == "sequence_break" for g in depth_gaps)
    # raw trades are never aggTrade rows: the landing gives the trades dataset nothing
    assert store.read_frame("binance", "trades", S, lo, hi).empty
    # the next snapshot heals the book: the rebuild from landing samples after the break
    frame = store.read_frame("binance", "depth", S, lo, hi)
    breaks_end = max(g.end_ms for g in depth_gaps if g.cause == "sequence_break")
    times = _ms(frame["snapshot_time"])
    healed = frame[times > breaks_end]
    assert len(healed) >= 5  # samples, each the top 20 of both sides
    assert all(len(c) == 20 for col in ALL_LEVEL_COLUMNS for c in healed[col])
    # the live book and the rebuild from landing take the same path: the same samples
    mine = [x for x in live if x.symbol == S]
    t0, t1 = mine[0].snapshot_time, mine[-1].snapshot_time + 1
    rebuilt = list(store.depth_samples("binance", S, t0, t1))
    assert [(x.snapshot_time, x.last_update_id, x.bids, x.asks) for x in rebuilt] == [
        (x.snapshot_time, x.last_update_id, x.bids, x.asks) for x in mine
    ]


def test_the_landed_depth20_rebuilds_the_exchanges_top20_at_each_second(exchange, tmp_path):
    engine = _engine(exchange, tmp_path)

    async def scenario(e: IngestEngine) -> None:
        await _until(lambda: e.samples_emitted >= 2 * 12, "twelve samples per symbol")

    run_engine(engine, scenario)
    assert engine.stats.gaps_recorded == 0
    lo, hi = exchange.market.start_ms, exchange.clock.now_ms() + 3_600_000
    frame = LandingStore(tmp_path).read_frame("binance", "depth", S, lo, hi)
    times = _ms(frame["snapshot_time"])
    snaps = sorted(set(times.tolist()))
    assert len(snaps) >= 10
    mk = exchange.market
    step_ms = mk.book_step_ms
    for t in snaps:
        assert t % 1000 == 0
        # the last message at or before the sample: its event time is step * 100 + 1 + step % 7
        k = t // step_ms
        while k * step_ms + 1 + k % 7 > t:
            k -= 1
        want = mk.partial_depth_event(S, k - 1, k, 20)
        (row,) = frame[times == t].itertuples(index=False)  # one row per sample
        assert row.last_update_id == want["u"]
        for side, key in (("bid", "b"), ("ask", "a")):
            price_col, qty_col = LEVEL_COLUMNS[side]
            got = np.column_stack([getattr(row, price_col), getattr(row, qty_col)])
            exp = np.array([[float(p), float(q)] for p, q in want[key]])
            assert got.shape == (20, 2) and np.array_equal(got, exp), (t, side)


def test_enveloped_frames_fed_to_the_engine_land_and_ledger_like_plain_ones(tmp_path):
    """What the NATS source hands the engine: envelope bytes, stream anywhere among the keys."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "binance_socket"
    frames = (fixtures / "trade_2023-04-04_first5.jsonl").read_bytes().splitlines()
    cfg = IngestConfig(group="nats", symbols=(S,), landing_path=str(tmp_path), datasets=("trades",))
    engine = IngestEngine(cfg, adapter=BinanceUsdmAdapter(stream_profile=SOCKET_CLIENT_PROFILE))
    conn = Conn(1, "nats")
    engine._primary = conn
    for st in engine._streams.values():
        st.source = conn.id
    engine.writer.start()
    sent = [f for f in frames if b'"t":3535186034' not in f]  # one raw trade lost
    for i, f in enumerate(sent):
        recv = orjson.loads(f)["data"]["E"] + 5
        engine._on_frame(conn, socket_client_envelope(f, recv - 2, stream_first=i % 2 == 0), recv)

    async def stop() -> None:
        await engine._shutdown(asyncio.create_task(asyncio.sleep(3600)))

    asyncio.run(stop())
    assert engine.stats.dead_letters == 0
    assert engine._streams[(RawTradeRecord, S)].stats.processed == 4
    store = LandingStore(tmp_path)
    t0 = 1_680_652_700_000
    gaps = store.gaps("binance", t0 - 60_000, t0 + 60_000, "trades", S)
    assert [(g.cause, g.detail) for g in gaps] == [("id_gap", "trade_id 3535186034..3535186034")]
    recs = list(store.read_records("binance", t0 - 60_000, t0 + 60_000, [S]))
    assert [r.trade_id for r in recs] == [3535186032, 3535186033, 3535186035, 3535186036]
    assert store.symbols_with_data("binance", dt.date(2023, 4, 4)) == {S}
