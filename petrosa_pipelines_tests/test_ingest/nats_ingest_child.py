"""The real ingest engine on a JetStream source as a child process, to be killed with SIGKILL.

Usage: python -m petrosa_pipelines_tests.test_ingest.nats_ingest_child ROOT SUBJECT STREAM SYMBOLS
The server URL comes from ``PETROSA_NATS_URL`` (as in production: never an argument). It
prints ``started`` once its consumer is bound; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.landing.writer import WriterConfig

GROUP = "natsjs"


def config(root: str, subject: str, stream: str, symbols: str) -> IngestConfig:
    return IngestConfig(
        group=GROUP,
        symbols=tuple(symbols.split(",")),
        datasets=("trades",),
        landing_path=root,
        source="nats",
        nats_subject=subject,
        nats_stream=stream,
        # few in flight: a kill finds some acknowledged, some landed only, some not landed
        nats_max_ack_pending=200,
        nats_ack_wait_s=30.0,
        stale_after_s=120.0,
        heartbeat_interval_s=0.2,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        writer=WriterConfig(segment_max_age_s=0.2),
    )


def main() -> None:
    root, subject, stream, symbols = sys.argv[1:5]
    engine = IngestEngine(config(root, subject, stream, symbols))

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, engine.stop)
        task = asyncio.create_task(engine.run())
        while engine._nats is None or not engine._nats.ready.is_set():
            if task.done():
                await task
            await asyncio.sleep(0.01)
        sys.stdout.write("started\n")
        sys.stdout.flush()
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
