"""A stream on a stepped (frozen, then moved) clock starts at the handshake, not when the
exchange's sender first runs.

The demo streams a day by freezing the clock, waiting for the ingest to connect, then moving
the clock one second and waiting for that second's frames. Under load the exchange's sender
first ran after the move, took the moved time as its start and never sent that second: the
demo hung at "first seconds of the day" (CI, intermittently). Here the sender is held back on
purpose, so the race is lost every time.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.sync.client import connect

from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines_tests.test_local_exchange.test_websocket import collect_until

pytestmark = pytest.mark.integration

START_MS = 1_704_456_000_000  # 2024-01-05 12:00:00 UTC
MARKET = MarketConfig(seed=7, symbols=("BTCUSDT",), trades_per_day=200_000)


def test_a_late_sender_still_sends_from_the_handshake(monkeypatch):
    real = LocalExchange._produce_live

    async def late(self, session, *args):
        await asyncio.sleep(1.0)  # the clock moves while the sender has not run yet
        await real(self, session, *args)

    monkeypatch.setattr(LocalExchange, "_produce_live", late)
    clock = SimulatedClock(START_MS, speed=0.0)
    with (
        LocalExchange(market=MARKET, clock=clock) as ex,
        connect(f"{ex.ws_base_url}/stream?streams=btcusdt@markPrice@1s") as ws,
    ):
        clock.set(START_MS + 1_000)  # the first second, as soon as the client is connected
        frames = collect_until(ws, lambda out: len(out) >= 1, deadline_s=60)
    # the markPrice sample of second 1 (its event time a few ms after the second)
    assert START_MS + 1_000 <= frames[0]["data"]["E"] < START_MS + 2_000
