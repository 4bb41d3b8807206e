"""The recorded Bybit capture, landed by the live engine, read back from the landing zone.

What the partition assets rebuild a day from must equal what the ingest saw live: every record
of every frame (several trades per ``publicTrade`` frame, the closed and the new candle of a
kline roll), the MarkPriceRecords merged from ``tickers`` deltas (a fresh adapter replaying the
landed frames in order), and the book samples (in-stream snapshots replace the book).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
import pandas as pd
import pytest

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    Record,
    TradeRecord,
)
from petrosa_pipelines.exchanges.frames import mark_prices_to_funding, records_to_frame
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.landing import LandingStore, LandingWriter
from petrosa_pipelines.landing.book import BookSample
from petrosa_pipelines.landing.store import depth_samples_to_frame, record_time
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS
from petrosa_pipelines_tests.test_ingest.bybit_capture import (
    BYBIT_SYMBOLS,
    bybit_frames,
    receipts,
    topic_lines,
)

EX = "bybit-linear"


class NoRest:
    def depth_snapshot(self, *args):
        raise AssertionError("an in-stream venue needs no REST snapshot")


@dataclasses.dataclass
class Landed:
    root: str
    fed: list[tuple[int, bytes]]
    #: what one adapter made of the frames, in the order the engine got them (live)
    live: list[Record]
    samples: list[BookSample]


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Landed:
    root = str(tmp_path_factory.mktemp("bybit_landing"))
    fed = receipts(bybit_frames())
    cfg = IngestConfig(group="by", symbols=BYBIT_SYMBOLS, landing_path=root, exchange=EX,
                       rest_base_url="http://127.0.0.1:9")  # fmt: skip
    engine = IngestEngine(cfg, rest_client=NoRest())
    samples: list[BookSample] = []
    keep = engine._samples

    def collect(batch: list[BookSample]) -> None:
        samples.extend(batch)
        keep(batch)

    engine._samples = collect  # type: ignore[method-assign]
    engine._primary = conn = Conn(1, "t")
    for st in engine._streams.values():
        st.source = 1
    engine.writer.start()
    for recv, f in fed:
        engine._on_frame(conn, f, recv)
    engine.flush_landing()
    engine.writer.close()
    assert engine.stats.dead_letters == 0 and engine.stats.gaps_recorded == 0
    live_adapter = get_adapter(EX)
    live = [r for recv, f in fed for r in live_adapter.parse_frame(f, recv)]
    return Landed(root, fed, live, samples)


def _window(landed: Landed) -> tuple[int, int]:
    return landed.fed[0][0] - DAY_MS, landed.fed[-1][0] + DAY_MS


def test_every_record_of_every_landed_frame_reads_back_as_live(landed):
    lo, hi = _window(landed)
    got = list(LandingStore(landed.root).read_records(EX, lo, hi))
    assert got == [r for r in landed.live if lo <= record_time(r) < hi]
    kinds = {t: sum(type(r) is t for r in got) for t in (TradeRecord, CandleRecord,
             MarkPriceRecord, DepthSnapshotRecord, DepthUpdateRecord)}  # fmt: skip
    # several trades per frame and two candles per roll frame are all there
    assert kinds[TradeRecord] > len(topic_lines("publicTrade"))
    assert kinds[CandleRecord] > len(topic_lines("kline"))
    assert kinds[DepthSnapshotRecord] == 4 and kinds[MarkPriceRecord] > 4


@pytest.mark.parametrize("symbol", BYBIT_SYMBOLS)
def test_dataset_frames_read_back_equal_the_adapters_records(landed, symbol):
    lo, hi = _window(landed)
    store = LandingStore(landed.root)
    mine = [r for r in landed.live if r.symbol == symbol]
    trades = store.read_frame(EX, "trades", symbol, lo, hi)
    assert trades["trade_id"].tolist() == sorted(
        (r.trade_id for r in mine if type(r) is TradeRecord),
        key=lambda t: next(
            r.agg_trade_id for r in mine if type(r) is TradeRecord and r.trade_id == t
        ),  # fmt: skip
    )
    closed = [r for r in mine if type(r) is CandleRecord and r.is_closed]
    candles = store.read_frame(EX, "candles", symbol, lo, hi)
    assert len(closed) >= 1  # the capture crosses a minute roll
    expected = records_to_frame("candles", closed)
    assert candles["open_time"].tolist() == expected["open_time"].tolist()
    assert candles["close"].tolist() == expected["close"].tolist()
    assert candles["volume"].tolist() == expected["volume"].tolist()
    marks = [r for r in mine if type(r) is MarkPriceRecord]
    funding = store.read_frame(EX, "funding", symbol, lo, hi)
    # no settlement in 45 s: none derived live, none read (the settlement is tested below)
    assert mark_prices_to_funding(marks) == [] and funding.empty


@pytest.mark.parametrize("symbol", BYBIT_SYMBOLS)
def test_the_book_rebuilt_from_landing_equals_the_live_samples(landed, symbol):
    live = [s for s in landed.samples if s.symbol == symbol]
    assert len(live) >= 30  # one a second over the 45 s capture
    start, end = live[0].snapshot_time, live[-1].snapshot_time + 1
    store = LandingStore(landed.root)
    assert list(store.depth_samples(EX, symbol, start, end)) == live
    frame = store.read_frame(EX, "depth", symbol, start, end)
    pd.testing.assert_frame_equal(frame, depth_samples_to_frame(EX, live, store.depth_top_n))


def _land(root, lines: list[tuple[int, bytes]]) -> None:
    with LandingWriter(root, EX, "by") as w:
        for recv, f in lines:
            assert w.put(recv, f)


def test_ticker_deltas_without_their_snapshot_give_no_record(tmp_path):
    """A replay never merges deltas into a state it does not have (a fresh parser would give
    mark prices without funding rate or next funding time, unlike live)."""
    btc = [f for f in topic_lines("tickers") if b"tickers.BTCUSDT" in f]
    assert b'"snapshot"' in btc[0] and all(b'"delta"' in f for f in btc[1:])
    deltas = receipts(btc[1:])
    naive = [r for recv, f in deltas for r in get_adapter(EX).parse_frame(f, recv)]
    assert naive and all(r.funding_rate is None for r in naive)  # what the gate prevents
    _land(tmp_path, deltas)
    lo, hi = deltas[0][0] - HOUR_MS, deltas[-1][0] + HOUR_MS
    assert list(LandingStore(tmp_path).read_records(EX, lo, hi, ["BTCUSDT"])) == []


def _ticker(kind: str, ts: int, **data: str) -> bytes:
    return orjson.dumps({"topic": "tickers.BTCUSDT", "type": kind,
                         "data": {"symbol": "BTCUSDT", **data}, "cs": ts, "ts": ts})  # fmt: skip


def test_a_settlement_hours_after_the_snapshot_reads_from_its_snapshot(tmp_path):
    """The real BTCUSDT ticker snapshot (21:26:57Z, next funding 00:00Z, rate 0.0001) and its
    deltas, then two deltas shaped like the capture's own around the 00:00Z settlement: the
    funding of the next day comes from the state the snapshot began, read 2.5 h back."""
    btc = [f for f in topic_lines("tickers") if b"tickers.BTCUSDT" in f]
    settle = int(orjson.loads(btc[0])["data"]["nextFundingTime"])
    after = [
        _ticker("delta", settle - 1_000, markPrice="65201.10", indexPrice="65220.00"),
        _ticker(
            "delta",
            settle + 1_000,
            markPrice="65203.20",
            fundingRate="0.00005",
            nextFundingTime=str(settle + 8 * HOUR_MS),
        ),  # fmt: skip
    ]
    lines = receipts([*btc, *after])
    _land(tmp_path, lines)
    live_adapter = get_adapter(EX)
    live = [r for recv, f in lines for r in live_adapter.parse_frame(f, recv)]
    events = mark_prices_to_funding(live)
    assert [(e.funding_time, e.funding_rate, e.mark_price) for e in events] == [
        (settle, Decimal("0.0001"), Decimal("65201.10"))
    ]
    frame = LandingStore(tmp_path).read_frame(EX, "funding", "BTCUSDT", settle, settle + DAY_MS)
    assert frame["funding_time"].tolist() == [pd.Timestamp(settle, unit="ms", tz="UTC")]
    assert frame["funding_rate"].tolist() == [0.0001]
    assert frame["mark_price"].tolist() == [65201.10]
    # the marks read back around it are the live ones, state merged from the snapshot
    got = LandingStore(tmp_path).mark_prices(EX, "BTCUSDT", settle - HOUR_MS, settle + HOUR_MS)
    assert len(got) == 2
    assert got == [r for r in live if settle - HOUR_MS <= r.event_time < settle + HOUR_MS]
    # without the lookback to the snapshot: nothing (never a settlement without its rate)
    short = LandingStore(tmp_path, state_lookback_ms=0)
    assert short.read_frame(EX, "funding", "BTCUSDT", settle, settle + DAY_MS).empty


def test_a_restart_snapshot_replaces_the_book_in_the_rebuild_as_it_did_live(tmp_path):
    """Bybit restarted mid-stream: a snapshot with ``u=1`` (PROVENANCE quirk 21's numbering
    starting again), then the recorded deltas renumbered from 2. The live book took it as the
    new book; the rebuild from landing must too (a REST-style snapshot would be ignored while
    in sync, and every later delta would break the sequence)."""
    book = [f for f in topic_lines("orderbook") if b"orderbook.200.BTCUSDT" in f]
    half = len(book) // 2
    restart_ts = orjson.loads(book[half])["ts"]
    snap = orjson.loads(book[0])
    snap.update(ts=restart_ts)
    snap["data"].update(u=1)
    renumbered = []
    for n, f in enumerate(book[half + 1 :], start=2):
        m = orjson.loads(f)
        m["data"]["u"] = n
        renumbered.append(orjson.dumps(m))
    frames = receipts([*book[:half], orjson.dumps(snap), *renumbered])
    cfg = IngestConfig(group="by", symbols=("BTCUSDT",), landing_path=str(tmp_path), exchange=EX,
                       datasets=("depth",), rest_base_url="http://127.0.0.1:9")  # fmt: skip
    engine = IngestEngine(cfg, rest_client=NoRest())
    samples: list[BookSample] = []
    keep = engine._samples
    engine._samples = lambda b: (samples.extend(b), keep(b))  # type: ignore[method-assign]
    engine._primary = conn = Conn(1, "t")
    for st in engine._streams.values():
        st.source = 1
    engine.writer.start()
    for recv, f in frames:
        engine._on_frame(conn, f, recv)
    engine.flush_landing()
    engine.writer.close()
    sync = engine._books["BTCUSDT"]
    assert sync.syncs == 2 and sync.breaks == 0 and engine.stats.dead_letters == 0
    after = [s for s in samples if s.snapshot_time > restart_ts]
    assert after and all(s.last_update_id < 1_000 for s in after)
    start, end = samples[0].snapshot_time, samples[-1].snapshot_time + 1
    assert list(LandingStore(tmp_path).depth_samples(EX, "BTCUSDT", start, end)) == samples
