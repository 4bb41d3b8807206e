"""The real ingest engine as a child process, to be killed with SIGKILL (the chaos test).

Usage: python -m petrosa_pipelines_tests.test_ingest.ingest_child ROOT PORT SPEED SYMBOLS
The receipt clock follows the exchange's simulated clock (its ``/fapi/v1/time``, then the same
speed), as a real deployment's wall clock follows Binance's. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.local_exchange import SimulatedClock
from petrosa_pipelines.settings import ExchangeEndpoints, Settings

GROUP = "chaos"


def main() -> None:
    root, port, speed, symbols = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    base = f"127.0.0.1:{port}"
    endpoints = ExchangeEndpoints(rest_base_url=f"http://{base}", ws_base_url=f"ws://{base}")
    rest = BinanceUsdmAdapter().rest_client(Settings(endpoints=endpoints))
    clock = SimulatedClock(rest.server_time(), speed=speed)
    config = IngestConfig(
        group=GROUP,
        symbols=tuple(symbols.split(",")),
        datasets=("trades",),
        landing_path=root,
        ws_base_url=f"ws://{base}",
        rest_base_url=f"http://{base}",
        backoff_initial_s=0.05,
        backoff_max_s=0.4,
        open_timeout_s=5.0,
        stale_after_s=30.0,
        # segments close often so the parent sees progress; the heartbeat stays the default
        # (5 s), so a kill usually finds it behind or ahead of what became durable
        writer=WriterConfig(segment_max_age_s=0.3),
    )
    engine = IngestEngine(config, clock_ms=clock.now_ms, rest_client=rest)

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, engine.stop)
        await engine.run()

    sys.stdout.write("started\n")
    sys.stdout.flush()
    asyncio.run(run())


if __name__ == "__main__":
    main()
