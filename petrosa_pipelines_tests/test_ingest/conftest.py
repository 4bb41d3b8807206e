"""A local exchange on a simulated clock (20x), and a helper that runs an engine against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock

START = "2024-01-03T00:00:00Z"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def exchange():
    market = MarketConfig(seed=7, symbols=(*SYMBOLS, "SOLUSDT"), trades_per_day=300_000)
    # at 20x the default 60 s catch-up is 3 s of wall time: a sender stalled that long on a
    # loaded machine (disk and CPU stress, measured) skipped data the tests then missed; 30
    # simulated minutes (90 s of wall time) lets it catch up, and ``skipped`` says if it did not
    clock = SimulatedClock(START, speed=20)
    with LocalExchange(market=market, clock=clock, max_catchup_ms=30 * 60_000) as ex:
        yield ex


def make_config(ex: LocalExchange, root, **kw) -> IngestConfig:
    defaults = dict(
        group="g1",
        symbols=SYMBOLS,
        landing_path=str(root),
        ws_base_url=ex.ws_base_url,
        rest_base_url=ex.rest_base_url,
        heartbeat_interval_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        stale_after_s=10.0,  # simulated seconds (the clock runs 20x)
    )
    defaults.update(kw)
    return IngestConfig(**defaults)


def run_engine(
    engine: IngestEngine, scenario: Callable[[IngestEngine], Awaitable[None]]
) -> IngestEngine:
    """Run ``engine`` while ``scenario`` plays, then stop it and wait for a clean close."""

    async def main() -> None:
        task = asyncio.create_task(engine.run())
        try:
            await scenario(engine)
        finally:
            engine.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(main())
    return engine
