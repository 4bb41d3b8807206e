"""The NATS source lands what the websocket source lands (issue 14, item 5).

The websocket path runs against the local exchange (simulated clock, 20x): one group on the
exchange profile for Binance's aggTrades, one on the socket-client profile for partial depth
(``@depth20@100ms``, in-stream snapshots: no REST snapshot whose timing would differ between
the paths). Every frame those groups landed is then wrapped in the socket-client envelope
(``socket_client_envelope``, the websocket receipt time as its ``timestamp``), published in
receipt order through a real NATS server and ingested by NATS-sourced groups of the same
profiles. The trades and depth frames read back from both landing zones must be equal, receipt
columns aside (the NATS path's receipt is its own).

Real recordings take the same two paths: Binance aggTrades (cryptofeed) on the exchange profile,
and raw ``@trade`` frames (hftbacktest, the socket-client's own stream) on the socket-client
profile, whose raw trades must come back equal, receipt time aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec
import orjson
import pandas as pd
import pytest

from petrosa_pipelines.exchanges.base import RawTradeRecord
from petrosa_pipelines.exchanges.binance.adapter import SOCKET_CLIENT_PROFILE
from petrosa_pipelines.ingest import IngestEngine
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.landing.store import iter_segment_lines
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope
from petrosa_pipelines.tooling.socket_client_feed import (
    SocketClientFeed,
    combined_stream_url,
    stream_names,
)
from petrosa_pipelines_tests.servers import delete_stream, unique_name
from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401
from petrosa_pipelines_tests.test_ingest.conftest import START, make_config
from petrosa_pipelines_tests.test_ingest.test_nats_source import (
    landed_payloads,
    nats_config,
    wait_for,
)

S = "BTCUSDT"
#: real recorded frames (fixtures/binance/PROVENANCE.md: cryptofeed, Binance USD-M 2021-04-17)
REAL = Path(__file__).parents[1] / "fixtures" / "binance" / "ws" / "cryptofeed_2021-04-17"
REAL_SYMBOL = "DENTUSDT"
ROOT = Path(__file__).resolve().parents[2]
MIN_TRADES, MIN_DEPTH = 40, 60  # aggTrades / depth20 messages the websocket path must land
#: per group: (profile, dataset)
GROUPS = {"trades": ("", "trades"), "depth": (SOCKET_CLIENT_PROFILE, "depth")}


def _processed(engine: IngestEngine, dataset: str) -> int:
    return sum(s.processed for s in engine.stats.streams.values() if s.dataset == dataset)


def _landed(root: Path, group: str) -> list[tuple[int, bytes]]:
    """(receipt ms, frame) of every landed frame of ``group``, in receipt order."""
    lines = [
        line
        for seg in sorted((root / "binance" / group).glob("*/*/seg-*.jsonl"))
        for line in iter_segment_lines(seg)
        if line[1][:1] != b"!"
    ]
    return sorted(lines, key=lambda x: x[0])


def _without_receipt(frame: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in frame.columns if "receiv" not in c and "recv" not in c]
    return frame[keep].reset_index(drop=True)


async def _run_until(engines: list[IngestEngine], cond, what: str) -> None:
    tasks = [asyncio.create_task(e.run()) for e in engines]
    try:
        await wait_for(lambda: cond() or any(t.done() for t in tasks), what)
        for t in tasks:
            if t.done():
                await t  # an engine that died says why
    finally:
        for e in engines:
            e.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


def _land_over_nats(
    ws_root: Path, nats_root: Path, nats_url: str, groups: dict, symbols: tuple, clock
) -> None:
    """Wrap every frame the websocket groups ``ws-<name>`` landed in the socket-client envelope
    (their receipt time as its timestamp), publish them in receipt order on a subject per group
    through NATS, and ingest them with NATS groups ``nats-<name>`` of the same profiles."""
    import nats

    subjects = {name: f"test.eq.{name}.{time.time_ns()}" for name in groups}
    frames: dict[str, list[bytes]] = {name: [] for name in groups}
    for name in groups:
        for recv, raw in _landed(ws_root, f"ws-{name}"):
            try:
                frames[name].append(socket_client_envelope(raw, recv))
            except ValueError:  # a subscription answer, not a stream frame
                continue
    assert all(len(f) >= 10 for f in frames.values()), {k: len(v) for k, v in frames.items()}
    over_nats = {
        name: IngestEngine(
            nats_config(
                nats_root,
                nats_url,
                subjects[name],
                group=f"nats-{name}",
                symbols=symbols,
                datasets=(ds,),
                stream_profile=profile,
                stale_after_s=3600.0,
            ),
            clock_ms=clock,
        )
        for name, (profile, ds) in groups.items()
    }

    async def replay() -> None:
        tasks = [asyncio.create_task(e.run()) for e in over_nats.values()]
        nc = await nats.connect(nats_url)
        try:
            await wait_for(
                lambda: (
                    all(e._nats.ready.is_set() for e in over_nats.values())
                    or any(t.done() for t in tasks)
                ),
                "the NATS subscriptions",
            )
            for name, envs in frames.items():
                for env in envs:
                    await nc.publish(subjects[name], env)
            await nc.flush()
            await wait_for(
                lambda: (
                    all(e._nats.stats.messages == len(frames[n]) for n, e in over_nats.items())
                    or any(t.done() for t in tasks)
                ),
                "every envelope read",
            )
        finally:
            await nc.close()
            for e in over_nats.values():
                e.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

    asyncio.run(replay())
    for e in over_nats.values():
        assert e.stats.dead_letters == 0 and e._nats.stats.messages > 0


def _assert_same_records(
    ws_root: Path, nats_root: Path, ds: str, symbol: str, lo: int, hi: int
) -> pd.DataFrame:
    want = _without_receipt(LandingStore(ws_root).read_frame("binance", ds, symbol, lo, hi))
    got = _without_receipt(LandingStore(nats_root).read_frame("binance", ds, symbol, lo, hi))
    assert len(want) > 0, f"the websocket path landed no {ds}"
    pd.testing.assert_frame_equal(got, want)
    return want


@pytest.mark.slow
def test_the_same_frames_land_the_same_records_over_nats_and_websocket(
    exchange, tmp_path, nats_url, monkeypatch
):
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)  # no live outputs: only the landing matters
    ws_root, nats_root = tmp_path / "ws", tmp_path / "nats"
    clock = exchange.clock.now_ms
    ws = {
        name: IngestEngine(
            make_config(
                exchange,
                ws_root,
                group=f"ws-{name}",
                symbols=(S,),
                datasets=(ds,),
                stream_profile=profile,
            ),
            clock_ms=clock,
        )
        for name, (profile, ds) in GROUPS.items()
    }

    def enough() -> bool:
        return (
            _processed(ws["trades"], "trades") >= MIN_TRADES
            and _processed(ws["depth"], "depth") >= MIN_DEPTH
        )

    asyncio.run(_run_until(list(ws.values()), enough, "the websocket path's frames"))

    _land_over_nats(ws_root, nats_root, nats_url, GROUPS, (S,), clock)
    start = int(dt.datetime.fromisoformat(START).timestamp() * 1000)
    lo, hi = start - 60_000, clock() + 3_600_000
    for _, ds in GROUPS.values():
        _assert_same_records(ws_root, nats_root, ds, S, lo, hi)
    assert len(LandingStore(ws_root).read_frame("binance", "trades", S, lo, hi)) >= MIN_TRADES


@contextlib.contextmanager
def _real_aggtrades_landed(tmp_path: Path, nats_url: str) -> Iterator[RealReplay]:
    """The real DENTUSDT aggTrade recording landed by both paths: replayed byte-identical by
    the local exchange's websocket to ``ws-real`` under ``tmp_path/ws``, then every landed frame
    as a socket-client envelope through NATS (core, no stream) to ``nats-real`` under
    ``tmp_path/nats``. The local exchange stays up while the caller holds the context."""
    lines = [
        line
        for line in (REAL / "aggTrade.jsonl").read_text().splitlines()
        if line.startswith('{"stream":"dentusdt@aggTrade"')
    ]
    recording = tmp_path / "dentusdt_aggTrade.jsonl"
    recording.write_text("\n".join(lines) + "\n")
    ws_root, nats_root = tmp_path / "ws", tmp_path / "nats"
    first = orjson.loads(lines[0])["data"]["E"]
    clock = SimulatedClock(dt.datetime.fromtimestamp(first / 1000, dt.UTC).isoformat(), speed=5)
    market = MarketConfig(seed=7, symbols=("BTCUSDT",))
    groups = {"real": ("", "trades")}
    with LocalExchange(market=market, replay=recording, speed=5, clock=clock) as ex:
        engine = IngestEngine(
            make_config(
                ex,
                ws_root,
                group="ws-real",
                symbols=(REAL_SYMBOL,),
                datasets=("trades",),
                stale_after_s=3600.0,
            ),
            clock_ms=ex.clock.now_ms,
        )

        def replayed() -> bool:
            # by count, not by time: the recording's last frames share a time, and stopping at
            # the first of them would drop the rest before they arrive
            return sum(
                s.processed + s.duplicates
                for s in engine.stats.streams.values()
                if s.dataset == "trades"
            ) >= len(lines)

        asyncio.run(_run_until([engine], replayed, "the recording's last aggTrade"))
        assert engine.stats.dead_letters == 0
        _land_over_nats(ws_root, nats_root, nats_url, groups, (REAL_SYMBOL,), ex.clock.now_ms)
        yield RealReplay(ex, ws_root, nats_root, lines, first)


class RealReplay(NamedTuple):
    exchange: LocalExchange
    ws_root: Path
    nats_root: Path
    lines: list[str]  # the recorded combined-stream frames
    first_ms: int  # the first frame's event time


@pytest.mark.slow
def test_real_recorded_aggtrades_land_the_same_over_nats_and_websocket(
    tmp_path, nats_url, monkeypatch
):
    """Real Binance USD-M aggTrade frames (cryptofeed's recording of 2021-04-17, DENTUSDT:
    fixtures/binance/PROVENANCE.md) replayed byte-identical by the local exchange's websocket,
    then as socket-client envelopes through NATS: the same trades rows."""
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    with _real_aggtrades_landed(tmp_path, nats_url) as real:
        hi = real.exchange.clock.now_ms() + 3_600_000
    lines, lo = real.lines, real.first_ms - 60_000
    want = _assert_same_records(real.ws_root, real.nats_root, "trades", REAL_SYMBOL, lo, hi)
    # frames sent before the subscription are not the websocket's: every later one landed
    assert len(lines) // 2 <= len(want) <= len(lines)
    recorded = sorted(orjson.loads(line)["data"]["a"] for line in lines)
    assert sorted(want["agg_trade_id"]) == recorded[len(lines) - len(want) :]


#: one trades partition materialised per landing zone through the real Dagster asset
#: (``market_data/trades``), in a fresh interpreter: the partitions' first day is fixed when
#: the definitions load (``PETROSA_START_DATE``, default 2024-01-01), and the recording's day
#: is 2021-04-17 (as ``test_project/test_start_date.py`` does for its 2021 day)
MATERIALISE_TRADES = """
import json, sys
import dagster as dg
from petrosa_pipelines.market_data.assets import trades
from resources import ExchangeResource, LakeIOManager, LandingResource

args = json.loads(sys.argv[1])
out = {}
with dg.instance_for_test(temp_dir=args["home"]) as instance:
    instance.add_dynamic_partitions("symbols", [args["symbol"]])
    for name, (landing, lake) in args["zones"].items():
        result = dg.materialize(
            [trades],
            partition_key=args["key"],
            instance=instance,
            resources={
                "exchange": ExchangeResource(**args["exchange"]),
                "landing": LandingResource(root=landing),
                "io_manager": LakeIOManager(base_path=lake),
            },
        )
        assert result.success, name
        (event,) = result.get_asset_materialization_events()
        meta = event.event_specific_data.materialization.metadata
        out[name] = {k: meta[k].value for k in args["meta"]}
print(json.dumps(out, default=str))
"""

#: lake columns that legitimately differ between the two paths' partitions: ``received_at``
#: is each path's own receipt clock (the websocket consumer's reading vs the NATS consumer's,
#: the envelope's timestamp being the websocket's); every other column (ids, price, quantity,
#: times, side, ``source``) comes from the exchange's payload, which the envelope carries
#: byte-identical, so it must be equal
RECEIPT_COLUMNS = ("received_at",)
#: the materialisation metadata both partitions must agree on
META_KEYS = ("dagster/row_count", "source_mix", "missing_range_count", "missing_ranges")


@pytest.mark.slow
def test_real_recorded_aggtrades_materialise_the_same_lake_over_nats_and_websocket(
    tmp_path, nats_url, monkeypatch
):
    """The real DENTUSDT aggTrades landed by each path (``_real_aggtrades_landed``) are
    materialised into two separate lakes by the ``market_data/trades`` asset for the recorded
    instrument-day, and the two lake partitions are equal row for row, receipt time aside.

    The partition's history sources (archives, REST) point at the local exchange replaying
    the recording, which lists no DENTUSDT in its market: they give nothing for the rest of
    the day, so every lake row comes from a landing zone and a record one path landed
    differently cannot be hidden by a refill from history (both lakes report the same
    missing ranges instead)."""
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    lakes = {name: tmp_path / f"lake-{name}" for name in ("ws", "nats")}
    with _real_aggtrades_landed(tmp_path, nats_url) as real:
        day = dt.datetime.fromtimestamp(real.first_ms / 1000, dt.UTC).date()  # 2021-04-17
        args = {
            "home": str(tmp_path / "dagster_home"),
            "symbol": REAL_SYMBOL,
            "key": f"{day}|{REAL_SYMBOL}",
            "meta": META_KEYS,
            "exchange": {
                "rest_base_url": real.exchange.rest_base_url,
                "ws_base_url": real.exchange.ws_base_url,
                "vision_base_url": real.exchange.vision_base_url,
            },
            "zones": {
                "ws": [str(real.ws_root), str(lakes["ws"])],
                "nats": [str(real.nats_root), str(lakes["nats"])],
            },
        }
        (tmp_path / "dagster_home").mkdir()
        env = {
            **os.environ,
            "PETROSA_START_DATE": "2021-01-01",
            "PETROSA_SYMBOLS": REAL_SYMBOL,
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        }
        out = subprocess.run(
            [sys.executable, "-c", MATERIALISE_TRADES, orjson.dumps(args).decode()],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    meta = orjson.loads(out.stdout.strip().splitlines()[-1])
    frames = {
        name: LocalLake(lake)
        .read_frame(lake_path("market_data/trades", "binance", REAL_SYMBOL, str(day)))
        .sort_values("agg_trade_id", kind="stable")
        .reset_index(drop=True)
        for name, lake in lakes.items()
    }
    want, got = frames["ws"], frames["nats"]
    recorded = {orjson.loads(line)["data"]["a"] for line in real.lines}
    # the lake holds the recording's trades and nothing else (no history for DENTUSDT here)
    assert len(want) >= len(real.lines) // 2, meta["ws"]
    assert set(want["agg_trade_id"]) <= recorded
    assert (want["source"] == "ws").all()  # landed rows only: no history refilled a hole
    assert meta["ws"]["dagster/row_count"] == len(want)
    pd.testing.assert_frame_equal(
        got.drop(columns=list(RECEIPT_COLUMNS)), want.drop(columns=list(RECEIPT_COLUMNS))
    )
    assert want["received_at"].notna().all() and got["received_at"].notna().all()
    for key in META_KEYS:
        assert meta["nats"][key] == meta["ws"][key], key


@pytest.mark.slow
def test_the_feed_publishes_every_frame_into_jetstream_and_the_ingest_lands_each_once(
    exchange, tmp_path, nats_url, monkeypatch
):
    """``SocketClientFeed`` (the demo's socket-client stand-in) with a JetStream stream: every
    combined-stream frame of the local exchange is published once in the envelope, and a
    NATS group with a durable consumer on that stream lands exactly those envelopes."""
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    stream, subject = unique_name("feed"), f"test.feed.{unique_name()}"  # not under petrosa.>
    sent: list[bytes] = []
    clock = exchange.clock.now_ms
    feed = SocketClientFeed(
        combined_stream_url(exchange.ws_base_url, stream_names([S])),
        nats_url,
        subject,
        jetstream_stream=stream,
        clock_ms=clock,
        on_frame=lambda _raw, env: sent.append(env),
    )
    engine = IngestEngine(
        nats_config(
            tmp_path,
            nats_url,
            subject,
            group="feedg",
            symbols=(S,),
            datasets=("trades", "depth"),
            stream_profile=SOCKET_CLIENT_PROFILE,
            nats_stream=stream,
            stale_after_s=3600.0,
        ),
        clock_ms=clock,
    )

    async def scenario() -> None:
        publishing = asyncio.create_task(feed.run())
        await wait_for(lambda: feed.stats.published >= 100 or publishing.done(), "100 frames")
        feed.stop()
        await publishing  # raises if the feed failed
        await _run_until(
            [engine], lambda: engine._nats.stats.acked >= len(sent), "every frame acknowledged"
        )

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(delete_stream(nats_url, stream))
    assert feed.stats.published == len(sent) >= 100
    assert {n.split("@", 1)[1] for n in feed.stats.by_stream} == {
        "trade",
        "depth20@100ms",
        "ticker",
    }
    assert sorted(landed_payloads(tmp_path, "feedg")) == sorted(sent)
    assert engine.stats.dead_letters == 0


#: real raw ``@trade`` recordings (fixtures/binance/PROVENANCE.md: nkaz001/hftbacktest's USD-M
#: BTCUSDT capture) and the replay speed that keeps each run to a few seconds
HFT = Path(__file__).parents[1] / "fixtures" / "binance" / "ws"
RAW_TRADE_RECORDINGS = {
    # 2023-04-04: the first 20 of 2197 trades (1.1 s of market time)
    "2023-04-04_first20": (HFT / "hftbacktest_2023-04-04" / "BTCUSDT_trade_first20.jsonl", 1),
    # 2023-04-05 00:01: one minute, 1824 consecutive ids, one ``"X":"INSURANCE_FUND"`` print
    "2023-04-05_0001": (HFT / "hftbacktest_2023-04-05" / "BTCUSDT_trade_0001.jsonl", 20),
}


def _raw_trades(root: Path, symbol: str, lo: int, hi: int) -> list[RawTradeRecord]:
    """The landed raw trades, receipt time aside (each path's receipt is its own), by id."""
    recs = [
        msgspec.structs.replace(r, received_at=None)
        for r in LandingStore(root).read_records("binance", lo, hi, [symbol])
        if type(r) is RawTradeRecord
    ]
    return sorted(recs, key=lambda r: r.trade_id)


@pytest.mark.slow
@pytest.mark.parametrize("recording", sorted(RAW_TRADE_RECORDINGS))
def test_real_recorded_raw_trades_land_the_same_over_nats_and_websocket(
    tmp_path, nats_url, monkeypatch, recording
):
    """Real Binance USD-M ``@trade`` frames (what the socket-client subscribes) replayed
    byte-identical by the local exchange's websocket to a group on the socket-client stream
    profile, then as socket-client envelopes through NATS to a NATS group of the same profile:
    the same raw trades, non-market prints kept and marked on both paths."""
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    path, speed = RAW_TRADE_RECORDINGS[recording]
    lines = path.read_text().splitlines()
    assert lines and all(line.startswith('{"stream":"btcusdt@trade"') for line in lines)
    data = [orjson.loads(line)["data"] for line in lines]
    first = data[0]["E"]
    ws_root, nats_root = tmp_path / "ws", tmp_path / "nats"
    clock = SimulatedClock(dt.datetime.fromtimestamp(first / 1000, dt.UTC).isoformat(), speed=speed)
    market = MarketConfig(seed=7, symbols=(S,))
    groups = {"raw": (SOCKET_CLIENT_PROFILE, "trades")}
    with LocalExchange(market=market, replay=path, speed=speed, clock=clock) as ex:
        engine = IngestEngine(
            make_config(
                ex,
                ws_root,
                group="ws-raw",
                symbols=(S,),
                datasets=("trades",),
                stream_profile=SOCKET_CLIENT_PROFILE,
                stale_after_s=3600.0,
            ),
            clock_ms=ex.clock.now_ms,
        )

        def replayed() -> bool:
            # by count: the last two trades share a trade time (2023-04-04_first20)
            st = engine.stats.streams.get("btcusdt@trade")
            return st is not None and st.processed + st.duplicates >= len(data)

        asyncio.run(_run_until([engine], replayed, "the recording's last trade"))
        assert engine.stats.dead_letters == 0
        _land_over_nats(ws_root, nats_root, nats_url, groups, (S,), ex.clock.now_ms)
    lo, hi = first - 60_000, ex.clock.now_ms() + 3_600_000
    want = _raw_trades(ws_root, S, lo, hi)
    got = _raw_trades(nats_root, S, lo, hi)
    assert got == want
    # every recorded trade, exactly (the streams are in the connection's URL: none is sent
    # before the subscription), with its price, quantity, time and print type
    recorded = {d["t"]: d for d in data}
    assert [r.trade_id for r in want] == sorted(recorded)
    for r in want:
        d = recorded[r.trade_id]
        assert (str(r.price), str(r.quantity), r.trade_time, r.trade_type) == (
            d["p"], d["q"], d["T"], d["X"]
        )  # fmt: skip
    if recording == "2023-04-05_0001":
        assert [r.trade_id for r in want if not r.is_market] == [3535191080]
