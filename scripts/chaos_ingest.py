"""Chaos run of the ingest: kill the exchange mid-stream, bring it back, check the landing zone.

Two scenarios against the local exchange (a deterministic simulated market, so what *should*
have arrived is known and can be asked for over REST):

1. ``kill``: the exchange runs as a child process on a fixed port and is ``SIGKILL``ed
   mid-stream (no close frame: the kernel just drops the sockets), stays away for a while and
   is started again on the same port with its clock continuing. The ingest must keep running,
   reconnect with backoff, and leave a consistent landing zone: every closed segment parses, no
   trade id is landed twice, the outage is a ``disconnect`` entry in the gap ledger covering
   every trade that was missed, and trade ids continue after the restart.
2. ``disconnects``: an in-process exchange drops every connection N times (default 20) while
   streaming. After refilling the gap-ledger windows from REST (what the partition fill does),
   0 trades are missing and 0 duplicated.

Run: ``.venv/bin/python scripts/chaos_ingest.py [--kills 2] [--disconnects 20]``; exits 1 if
any check fails. ``petrosa_pipelines_tests/test_ingest/test_chaos.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petrosa_pipelines.exchanges.base import MessageError, TradeRecord
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.landing.layout import DEAD_LETTER_DIR, SegmentName
from petrosa_pipelines.landing.records import decode_internal
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock

START = "2024-01-03T00:00:00+00:00"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SEED = 11
TRADES_PER_DAY = 300_000
EXCHANGE = "binance"


@dataclass
class ChaosReport:
    """What a scenario observed; ``failures`` lists every check that did not hold."""

    scenario: str
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)

    def lines(self) -> list[str]:
        out = [f"[{self.scenario}] {'OK' if self.ok else 'FAILED'}"]
        out += [f"  {k}: {v}" for k, v in self.facts.items()]
        out += [f"  FAIL: {f}" for f in self.failures]
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


class ExchangeProcess:
    """The local exchange as a child process, so that it can die the hard way (SIGKILL)."""

    def __init__(self, port: int, speed: float, symbols: Sequence[str] = SYMBOLS) -> None:
        self.port = port
        self.speed = speed
        self.symbols = symbols
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, now_ms: int, timeout: float = 60.0) -> None:
        """Start serving with the simulated clock at ``now_ms``; returns once the port answers."""
        cmd = [
            sys.executable, "-m", "petrosa_pipelines.local_exchange", "serve",
            "--port", str(self.port), "--now", _iso(now_ms), "--speed", str(self.speed),
            "--symbols", ",".join(self.symbols), "--seed", str(SEED),
            "--trades-per-day", str(TRADES_PER_DAY),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"local exchange exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError("local exchange did not start")

    def kill(self) -> None:
        """SIGKILL: no close frame, no flush; the kernel drops the connections."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def _config(root: Path, port: int, group: str, datasets: Sequence[str]) -> IngestConfig:
    return IngestConfig(
        group=group,
        symbols=SYMBOLS,
        datasets=tuple(datasets),
        landing_path=str(root),
        ws_base_url=f"ws://127.0.0.1:{port}",
        rest_base_url=f"http://127.0.0.1:{port}",
        heartbeat_interval_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.4,
        open_timeout_s=2.0,
        stale_after_s=10.0,
        # short segments: many closed segments to check, and a reader sees data soon
        writer=WriterConfig(segment_max_age_s=0.5),
    )


def _rest(port: int) -> Any:
    from petrosa_pipelines.settings import ExchangeEndpoints, Settings

    endpoints = ExchangeEndpoints(
        rest_base_url=f"http://127.0.0.1:{port}", ws_base_url=f"ws://127.0.0.1:{port}"
    )
    return BinanceUsdmAdapter().rest_client(Settings(endpoints=endpoints))


async def _run(engine: IngestEngine, scenario: Callable[[IngestEngine], Awaitable[None]]) -> None:
    task = asyncio.create_task(engine.run())
    try:
        await scenario(engine)
    finally:
        engine.stop()
        await asyncio.wait_for(task, 60)


# -- checks on the landing zone ------------------------------------------------------------------
def check_segments(root: Path, report: ChaosReport) -> None:
    """Every closed segment parses line by line; no temp segment is left after a clean close."""
    adapter = BinanceUsdmAdapter()
    segments = lines = 0
    for path in sorted(root.rglob("seg-*")):
        if SegmentName.parse(path.name) is None or DEAD_LETTER_DIR in path.parts:
            continue
        segments += 1
        for raw in path.read_bytes().split(b"\n"):
            if not raw:
                continue
            lines += 1
            try:
                recv, payload = raw.split(b" ", 1)
                int(recv)
                if payload[:1] == b"!":
                    decode_internal(payload)
                elif not adapter.parse_frame(payload):
                    report.failures.append(f"{path.name}: a control frame was landed")
            except (ValueError, MessageError) as exc:
                report.failures.append(f"{path.name}: unparsable line {raw[:80]!r}: {exc}")
                return
    temps = [p.name for p in root.rglob(".seg-*.tmp")]
    report.facts["segments"] = f"{segments} closed, {lines} lines, all parse"
    report.check(segments > 0, "no segment was landed")
    report.check(not temps, f"temp segments left after a clean close: {temps}")


def landed_trades(root: Path, symbol: str) -> list[TradeRecord]:
    """Every landed trade of ``symbol`` in landing order, duplicates included."""
    store = LandingStore(root)
    lo = int(dt.datetime.fromisoformat(START).timestamp() * 1000) - 86_400_000
    return [
        r
        for r in store.read_records(EXCHANGE, lo, lo + 30 * 86_400_000, [symbol])
        if type(r) is TradeRecord
    ]


def check_trades(
    root: Path,
    rest: Any,
    report: ChaosReport,
    outages: Sequence[tuple[int, int]] = (),
) -> None:
    """No duplicates; every trade the exchange made in the window is landed or in a trades gap
    (so a refill of the gap windows recovers it); each outage is a ``disconnect`` gap."""
    store = LandingStore(root)
    for sym in SYMBOLS:
        trades = landed_trades(root, sym)
        ids = [t.agg_trade_id for t in trades]
        report.check(len(ids) > 100, f"{sym}: only {len(ids)} trades landed")
        if not ids:
            continue
        dupes = len(ids) - len(set(ids))
        lo = min(t.trade_time for t in trades)
        hi = max(t.trade_time for t in trades)
        truth = rest.agg_trades(sym, lo, hi + 1)
        truth_ids = set(truth["agg_trade_id"].tolist())
        missing = sorted(truth_ids - set(ids))
        gaps = store.gaps(EXCHANGE, lo - 60_000, hi + 60_000, "trades", sym)
        times = truth["trade_time"].map(lambda t: int(t.value // 10**6)).tolist()
        time_of = dict(zip(truth["agg_trade_id"].tolist(), times, strict=True))
        uncovered = [
            a for a in missing if not any(g.start_ms <= time_of[a] <= g.end_ms for g in gaps)
        ]
        # refill: what the partition fill does with the ledger (REST for each gap window)
        refilled: set[int] = set()
        for g in gaps:
            got = rest.agg_trades(sym, g.start_ms, g.end_ms + 1)
            refilled.update(got["agg_trade_id"].tolist())
        after_refill = sorted(truth_ids - set(ids) - refilled)
        merged = len(set(ids) | (refilled & truth_ids))
        report.facts[f"{sym} trades"] = (
            f"{len(ids)} landed, {dupes} duplicated, {len(missing)} missed in "
            f"{len(gaps)} gaps, {len(after_refill)} missing after refill "
            f"({merged} of {len(truth_ids)} after merge)"
        )
        report.check(dupes == 0, f"{sym}: {dupes} trade ids landed twice")
        report.check(not uncovered, f"{sym}: missed trades outside any gap: {uncovered[:5]}")
        report.check(not after_refill, f"{sym}: still missing after refill: {after_refill[:5]}")
        for kill_lo, kill_hi in outages:
            # the gap runs from the last event before the kill to the first one after the
            # restart, so it holds the kill, known to lie in [kill_lo, kill_hi] (see run_kill)
            covered = any(
                g.cause == "disconnect" and g.start_ms <= kill_hi and g.end_ms >= kill_lo
                for g in gaps
            )
            report.check(covered, f"{sym}: kill at {kill_lo}..{kill_hi} not in the gap ledger")
            before = [t.agg_trade_id for t in trades if t.trade_time <= kill_lo]
            after = [t.agg_trade_id for t in trades if t.trade_time >= kill_hi]
            report.check(
                bool(before) and bool(after) and min(after) > max(before),
                f"{sym}: ids do not continue after the kill at {kill_lo}",
            )


# -- scenarios -----------------------------------------------------------------------------------
def _trades_reached(e: IngestEngine, t_ms: int) -> bool:
    """Every trades stream has processed a trade at or after ``t_ms`` (market time)."""
    trades = [s for s in e.stats.streams.values() if s.dataset == "trades"]
    return bool(trades) and all(
        s.last_data_ms is not None and s.last_data_ms >= t_ms for s in trades
    )


def run_kill(
    root: Path, *, kills: int = 1, outage_s: float = 1.0, stream_s: float = 2.0, speed: float = 20
) -> ChaosReport:
    """Scenario 1: SIGKILL the exchange ``kills`` times mid-stream, restart on the same port."""
    report = ChaosReport("kill")
    port = free_port()
    ex = ExchangeProcess(port, speed)
    clock = SimulatedClock(START, speed=0.0)  # frozen until the exchange is up
    outages: list[tuple[int, int]] = []
    running_during_outage: list[bool] = []

    async def scenario(e: IngestEngine) -> None:
        await _wait_for(lambda: e.stats.streams and e.writer.stats.lines_durable > 0, 60)
        for _ in range(kills):
            await asyncio.sleep(stream_s)
            # a loaded machine may not have delivered a trade yet: the check needs one before
            await _wait_for(lambda: _trades_reached(e, 0), 60)
            before = e.stats.connections_opened
            # the kill moment on the *exchange's* clock: its server time, asked just before,
            # plus the real time until the kill at the market's speed
            asked = time.monotonic()
            kill_lo = await asyncio.to_thread(rest.server_time)
            ex.kill()
            kill_hi = kill_lo + int((time.monotonic() - asked) * speed * 1000) + 1
            await asyncio.sleep(outage_s)
            running_during_outage.append(not e._stop.is_set() and e.writer.alive)
            # the clock keeps running: the exchange comes back where the market is now
            await asyncio.to_thread(ex.start, clock.now_ms())
            outages.append((kill_lo, kill_hi))
            await _wait_for(lambda b=before: e.stats.connections_opened > b, 30)
            # ... and one after the restart, however slowly the frames come
            await _wait_for(lambda hi=kill_hi: _trades_reached(e, hi), 60)
        await asyncio.sleep(stream_s)

    rest = _rest(port)
    try:
        ex.start(clock.now_ms())
        clock.set(rest.server_time())  # our receipt clock on the exchange's market time
        clock.set_speed(speed)
        engine = IngestEngine(
            _config(root, port, "chaos_kill", ("trades", "depth", "funding")),
            clock_ms=clock.now_ms,
        )
        asyncio.run(_run(engine, scenario))
        st = engine.stats
        report.facts["engine"] = (
            f"{st.connections_opened} connections, {st.reconnects} reconnects, "
            f"{st.disconnects} disconnects, {st.gaps_recorded} gaps recorded"
        )
        report.check(all(running_during_outage), "the ingest stopped while the exchange was down")
        report.check(st.reconnects >= kills, f"{st.reconnects} reconnects < {kills} kills")
        check_segments(root, report)
        check_trades(root, rest, report, outages)
    finally:
        ex.kill()
        rest.close()
    return report


def run_disconnects(
    root: Path, *, disconnects: int = 20, every_s: float = 0.3, speed: float = 20
) -> ChaosReport:
    """Scenario 2: ``disconnects`` forced drops while streaming; refill leaves 0 missing."""
    report = ChaosReport("disconnects")
    market = MarketConfig(seed=SEED, symbols=SYMBOLS, trades_per_day=TRADES_PER_DAY)
    clock = SimulatedClock(START, speed=speed)
    with LocalExchange(market=market, clock=clock) as ex:
        engine = IngestEngine(
            _config(root, ex.port, "chaos_drops", ("trades", "depth", "funding")),
            clock_ms=clock.now_ms,
        )

        async def scenario(e: IngestEngine) -> None:
            await _wait_for(lambda: e.writer.stats.lines_durable > 0, 30)
            for _ in range(disconnects):
                before = e.stats.connections_opened
                await asyncio.sleep(every_s)
                ex.disconnect_all()
                await _wait_for(lambda b=before: e.stats.connections_opened > b, 10)
            await asyncio.sleep(every_s * 2)

        asyncio.run(_run(engine, scenario))
        st = engine.stats
        report.facts["engine"] = (
            f"{st.connections_opened} connections, {st.reconnects} reconnects, "
            f"{st.disconnects} disconnects, {st.gaps_recorded} gaps recorded"
        )
        report.check(st.disconnects >= disconnects, f"only {st.disconnects} disconnects seen")
        check_segments(root, report)
        rest = _rest(ex.port)
        try:
            check_trades(root, rest, report)
        finally:
            rest.close()
    return report


async def _wait_for(cond: Callable[[], object], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=2, help="SIGKILLs of the exchange (0: skip)")
    ap.add_argument("--outage", type=float, default=2.0, help="seconds the exchange stays dead")
    ap.add_argument("--disconnects", type=int, default=20, help="forced drops (0: skip)")
    ap.add_argument("--root", help="landing root to keep (default: a temporary directory)")
    args = ap.parse_args(argv)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.root or tmp)
        if args.kills:
            reports.append(run_kill(base / "kill", kills=args.kills, outage_s=args.outage))
        if args.disconnects:
            reports.append(run_disconnects(base / "drops", disconnects=args.disconnects))
    for r in reports:
        print("\n".join(r.lines()))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
