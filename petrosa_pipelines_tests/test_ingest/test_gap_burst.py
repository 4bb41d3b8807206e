"""Issue 15 item 18: a burst of gap-ledger entries does not stall the ingest's event loop, and
every entry is durable after close, and after a kill -9 once reported durable.

The stall is measured on a simulated clock: every ``fsync``/``fdatasync`` made *on the event
loop's thread* advances it by ``FSYNC_COST_MS`` (what one cost on the reporting machine), and
a ticker task records how far it advanced between two of its turns. The real syscalls still
run, wherever they are made. No wall-clock threshold is involved.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.records import GapRecord
from petrosa_pipelines.landing.store import LandingStore
from petrosa_pipelines.landing.writer import LandingWriter, WriterConfig
from petrosa_pipelines.lib.timeutil import HOUR_MS

REPO = Path(__file__).resolve().parents[2]
T0 = 1_704_240_000_000
S = "BTCUSDT"
BURST = 1_000
#: gaps recorded between two yields of the burst (an ingest yields after every socket read)
PER_TURN = 50
FSYNC_COST_MS = 3


class LoopStallClock:
    """Simulated time spent in fsyncs on one thread (the event loop's)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, loop_thread: int):
        self.loop_thread = loop_thread
        self.now_ms = 0
        self.fsyncs_elsewhere = 0
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def synced(fd: int) -> None:
            if threading.get_ident() == self.loop_thread:
                self.now_ms += FSYNC_COST_MS
            else:
                self.fsyncs_elsewhere += 1
            real(fd)

        return synced


def _engine(root: Path) -> IngestEngine:
    cfg = IngestConfig(group="gb", symbols=(S,), landing_path=str(root), datasets=("trades",))
    return IngestEngine(cfg)


def _burst_with_ticker(engine: IngestEngine, clock: LoopStallClock) -> tuple[int, int]:
    """Record BURST gaps on the loop, yielding every PER_TURN; (max stall ms, ticker turns)."""
    stats = next(iter(engine._streams.values())).stats
    done = False
    stalls: list[int] = []

    async def ticker() -> None:
        last = clock.now_ms
        while not done:
            await asyncio.sleep(0)
            stalls.append(clock.now_ms - last)
            last = clock.now_ms

    async def burst() -> None:
        nonlocal done
        for i in range(BURST):
            engine._gap(stats, T0 + i * 10, T0 + i * 10 + 5, "id_gap", f"#{i}")
            if (i + 1) % PER_TURN == 0:
                await asyncio.sleep(0)
        done = True

    async def main() -> None:
        clock.loop_thread = threading.get_ident()
        await asyncio.gather(ticker(), burst())

    asyncio.run(main())
    return max(stalls), len(stalls)


def test_a_burst_of_gaps_does_not_stall_the_event_loop(tmp_path, monkeypatch):
    engine = _engine(tmp_path)
    engine.writer.start()
    clock = LoopStallClock(monkeypatch, loop_thread=-1)
    max_stall, turns = _burst_with_ticker(engine, clock)
    engine.writer.close()
    # before: a file and a directory fsync per gap on the loop, 300 ms per turn of 50 gaps
    assert max_stall == 0, f"the loop stalled {max_stall} simulated ms in fsyncs"
    assert turns >= BURST // PER_TURN  # the ticker ran between every turn of the burst
    assert clock.fsyncs_elsewhere >= 2  # the entries were synced, on the writer thread
    assert engine.stats.gaps_recorded == BURST
    # durable after close: a fresh reader sees every entry, once
    gaps = LandingStore(tmp_path).gaps("binance", T0 - HOUR_MS, T0 + HOUR_MS, "trades", S)
    assert sorted(g.detail for g in gaps) == sorted(f"#{i}" for i in range(BURST))
    assert engine.writer.stats.gaps_durable == BURST
    # batched: far fewer ledger files than entries
    assert engine.writer.stats.ledger_files < BURST // 10


def test_a_gap_is_durable_before_any_line_queued_after_it(tmp_path):
    """The ordering guarantee: when a frame queued after a gap is reported durable (or its
    segment published), the gap's ledger file is already on disk."""
    seen: list[tuple[int, int]] = []  # (lines durable so far, gaps on disk then)
    durable = 0

    def on_durable(n: int) -> None:
        nonlocal durable
        durable += n
        on_disk = LandingStore(tmp_path).gaps("binance", T0 - HOUR_MS, T0 + HOUR_MS)
        seen.append((durable, len(on_disk)))

    for batch_items in (1, 20_000):
        seen.clear()
        durable = 0
        group = f"g{batch_items}"
        w = LandingWriter(
            tmp_path, "binance", group, config=WriterConfig(batch_max_items=batch_items)
        )
        w.add_durable_listener(on_durable)
        with w:
            before = len(LandingStore(tmp_path).gaps("binance", T0 - HOUR_MS, T0 + HOUR_MS))
            assert w.put(T0, b'{"before":1}')
            assert w.record_gap(GapRecord("trades", S, T0, T0 + 5, "disconnect", T0 + 6, group))
            assert w.put(T0 + 7, b'{"after":1}')
            w.rotate()  # publish the segment holding the line after the gap
            published = sorted(tmp_path.rglob(f"{group}/**/seg-*.jsonl"))
            ledger_then = len(LandingStore(tmp_path).gaps("binance", T0 - HOUR_MS, T0 + HOUR_MS))
        assert published and ledger_then == before + 1
        # every report that counts the second line saw the gap on disk already
        assert [g for d, g in seen if d >= 2] and all(g == before + 1 for d, g in seen if d >= 2)


def _read_in_fresh_process(root: Path) -> list[str]:
    code = (
        "import sys; from petrosa_pipelines.landing.store import LandingStore\n"
        "s = LandingStore(sys.argv[1])\n"
        "gaps = s.gaps('binance', 0, 2**62)\n"
        "assert not s.ledger_errors, s.ledger_errors\n"
        "print('\\n'.join(g.detail for g in gaps))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=REPO, capture_output=True, check=True
    )
    return out.stdout.decode().split()


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_gaps_reported_durable_survive_kill_9(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "petrosa_pipelines_tests.test_ingest.gap_child", str(tmp_path),
         str(BURST)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"durable {BURST}".encode(), (
            proc.stderr.read() if proc.stderr else ""
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # read back in a fresh process, before any recovery ...
    assert sorted(_read_in_fresh_process(tmp_path)) == sorted(f"#{i}" for i in range(BURST))
    # ... and after a new writer of the group took over (recovery removes only temp files)
    with LandingWriter(tmp_path, "binance", "kill"):
        pass
    assert sorted(_read_in_fresh_process(tmp_path)) == sorted(f"#{i}" for i in range(BURST))
    ledger = layout.gap_dir(tmp_path, "binance", "kill")
    assert not list(ledger.glob(".gap-*.tmp"))
