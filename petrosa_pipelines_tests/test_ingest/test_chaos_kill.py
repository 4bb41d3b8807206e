"""Chaos: the ingest process is SIGKILLed at seeded moments while the exchange cuts connections
between trades that share a millisecond; the day is then repaired and must hold every trade id
the exchange produced exactly once (issue 11, "the suite that keeps this fixed").

The exchange runs in-process on a 20x simulated clock; each ingest is a child process
(``ingest_child``) so it can die the hard way: no flush, the writer's queue lost, the heartbeat
wherever it was. Two invariants are checked:

* the gap ledger accounts for every loss: each trade id between the first and the last landed
  one that did not land lies inside a trades window of the ledger (kill -9 restarts open at the
  last *landed* trade; cuts open at the last trade before them);
* the repair (``materialise_partition``: landing, then REST for what is missing and what the
  ledger names) leaves the partition with exactly the exchange's ids up to the frozen "now".

Everything waits on conditions with generous deadlines (a loaded 2-core machine), never on a
fixed pace; the random moments come from one seed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.exchanges.base import TradeRecord
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.lib.timeutil import day_start_ms
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition
from petrosa_pipelines_tests.test_ingest.ingest_child import GROUP

pytestmark = pytest.mark.slow  # an ingest child process killed with SIGKILL

SEED = 20240104
DAY = dt.date(2024, 1, 4)
SYMBOL = "BTCUSDT"
SPEED = 20.0
KILLS = 3
#: the first ingest connects before midnight: the day's first trades are not at a cut
START = day_start_ms(DAY) - 30_000
DEADLINE_S = 60.0


def _wait(cond: Callable[[], object], what: str, limit_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"chaos test: {what} not reached in {limit_s} s")
        time.sleep(0.02)


def _segments(root: Path) -> set[Path]:
    return set((root / "binance" / GROUP).glob("*/*/seg-*.jsonl"))


class Child:
    """One ingest process."""

    def __init__(self, root: Path, port: int) -> None:
        cmd = [sys.executable, "-m", "petrosa_pipelines_tests.test_ingest.ingest_child",
               str(root), str(port), str(SPEED), SYMBOL]  # fmt: skip
        self.before = _segments(root)
        self.root = root
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"started\n"

    def landed_something(self) -> bool:
        """A segment closed by this process holds a trade (the heartbeat alone is not data)."""
        return any(b"aggTrade" in p.read_bytes() for p in _segments(self.root) - self.before)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0


def test_kill_9_and_same_millisecond_cuts_then_repair_gives_every_trade_exactly_once(tmp_path):
    from resources import ExchangeResource, LandingResource

    rng = random.Random(SEED)
    root = tmp_path / "landing"
    market = MarketConfig(seed=SEED, symbols=(SYMBOL,), trades_per_day=400_000)
    clock = SimulatedClock(START, speed=0.0)  # frozen until the first ingest is connected
    with LocalExchange(market=market, clock=clock) as ex:
        ex.faults.reseed(SEED)
        ex.faults.cut_same_ms_probability = 0.15
        children = []
        try:
            for n in range(KILLS + 1):
                child = Child(root, ex.port)
                children.append(child)
                if n == 0:
                    _wait(lambda: ex.connection_count > 0, "first connection")
                    clock.set_speed(SPEED)
                _wait(child.landed_something, f"ingest {n} landing trades")
                if n < KILLS:
                    time.sleep(rng.uniform(0.1, 1.5))  # a seeded moment after it landed
                    child.kill()
            clock.set_speed(0.0)  # the market stops: "every trade ever produced" is now fixed
            time.sleep(0.5)  # what was in flight arrives (the clock no longer moves)
            child.stop()
        finally:
            for c in children:
                if c.proc.poll() is None:
                    c.kill()
        now = clock.now_ms()
        truth = ex.market.trades(SYMBOL, DAY)
        truth = truth[_ms(truth["trade_time"]) < now]
        assert ex.faults.disconnect_generation == 0  # cuts came from the same-ms switch only

        store = LandingStore(root)
        lo, hi = day_start_ms(DAY) - 3_600_000, now + 3_600_000
        landed = [r for r in store.read_records("binance", lo, hi, [SYMBOL])
                  if type(r) is TradeRecord]  # fmt: skip
        ids = {r.agg_trade_id for r in landed}
        gaps = store.gaps("binance", lo, hi, "trades", SYMBOL)
        causes = {g.cause for g in gaps}
        assert "writer_restart" in causes and "disconnect" in causes, causes
        time_of = dict(zip(truth["agg_trade_id"].tolist(), _ms(truth["trade_time"]).tolist(),
                           strict=True))  # fmt: skip
        inside = [a for a in time_of if min(ids) < a < max(ids)]
        lost = [a for a in inside if a not in ids]
        unledgered = [a for a in lost
                      if not any(g.start_ms <= time_of[a] <= g.end_ms for g in gaps)]  # fmt: skip
        assert lost, "the chaos lost nothing: the run proves nothing"
        assert not unledgered, f"{len(unledgered)} of {len(lost)} lost ids in no ledger window"

        resource = ExchangeResource(
            rest_base_url=ex.rest_base_url,
            ws_base_url=ex.ws_base_url,
            vision_base_url=ex.vision_base_url,
        )
        frame, meta = materialise_partition(
            "trades",
            f"{DAY}|{SYMBOL}",
            MarketDataConfig(),
            resource,
            LandingResource(root=str(root)),
            now_ms=now,
        )
    got = frame["agg_trade_id"].tolist()
    assert len(got) == len(set(got)), "a trade id is in the partition twice"
    want = set(truth["agg_trade_id"].tolist())
    assert set(got) - want == set(), "ids the exchange never produced before now"
    missing = sorted(want - set(got))
    assert not missing, f"{len(missing)} ids missing after repair, first {missing[:5]}"
    assert meta["source_mix"].value.get("ws", 0) > 0 and meta["source_mix"].value.get("rest")


def _ms(series: pd.Series) -> np.ndarray:
    """Epoch ms of a time column, whether the market gives ints or timestamps."""
    if pd.api.types.is_integer_dtype(series):
        return series.to_numpy()
    return series.astype("datetime64[ms, UTC]").astype("int64").to_numpy()
