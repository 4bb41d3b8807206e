"""Benchmark of the live outputs (not a test), on Binance frames:

1. ``offer_frame`` on the ingest's thread and the worker's throughput into JetStream and Redis
   (aggTrade frames);
2. the engine's hot path (validate, de-duplicate, land durably: ``benchmarks/ingest_bench.py``'s
   run 1 on its mixed frames) with the live outputs on (NATS + Redis) vs off, in alternating
   rounds: the overhead the outputs put on the ingest, per message: wall time of the loop and
   CPU time of the ingest's own thread (the outputs' worker is a process of its own: what it
   costs the ingest is the offers, and the CPU it takes when there is none to spare).

    .venv/bin/python -m petrosa_pipelines_tests.test_live.bench_live [frames]

Uses the NATS and Redis servers that answer on 127.0.0.1 (else throwaway ones), a stream and
keys of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import orjson

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.live import LiveOutputs
from petrosa_pipelines.settings import LiveSettings
from petrosa_pipelines_tests.servers import delete_stream, nats_server, redis_server


def frames(n: int, t0: int = 1_767_000_000_000) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "stream": "btcusdt@aggTrade",
                "data": {
                    "e": "aggTrade",
                    "E": t0 + i,
                    "a": i,
                    "s": "BTCUSDT",
                    "p": f"87000.{i % 100:02d}",
                    "q": "0.013",
                    "f": 3 * i,
                    "l": 3 * i + 2,
                    "T": t0 + i,
                    "m": bool(i % 2),
                },
            }
        )  # fmt: skip
        for i in range(n)
    ]


def run(n: int, nats_url: str | None, redis_url: str | None) -> dict[str, float]:
    u = uuid.uuid4().hex[:8]
    s = LiveSettings(nats_url=nats_url, redis_url=redis_url, subject_prefix=f"pbench_{u}",
                     stream=f"PBENCH_{u}", redis_prefix=f"petrosa-bench:{u}",
                     buffer_messages=max(n, 1000))  # fmt: skip
    adapter = get_adapter("binance-usdm")
    out = LiveOutputs(s, venue=adapter.venue, exchange=adapter.name, adapter=adapter)
    data = frames(n)
    out.start()
    _running(out)
    started = time.perf_counter()
    for i, raw in enumerate(data):
        out.offer_frame(raw, i)
    offered = time.perf_counter() - started
    while not out.idle():
        time.sleep(0.001)
    total = time.perf_counter() - started
    stats = out.stats()
    out.close()
    if nats_url:
        asyncio.run(delete_stream(nats_url, s.stream))
    assert stats["intake_dropped"] == 0 and stats["nats"]["dropped"] == 0, stats
    return {"offer_us": offered / n * 1e6, "msgs_per_s": n / total, "total_s": total}


def _running(out: LiveOutputs) -> None:
    """The worker process started and reported (the engine starts it long before a burst)."""
    while out.stats()["worker"]["state"] != "running":
        time.sleep(0.01)


def engine_overhead(n: int, nats_url: str, redis_url: str, rounds: int = 3) -> None:
    """Run 2 of the module docstring: median per-message cost with the outputs on and off."""
    import statistics
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import ingest_bench as ib  # the ingest benchmark's frames, engine and stopwatch

    frames, _ = ib.make_frames(n)

    def one(live: bool) -> tuple[float, float, float]:
        with tempfile.TemporaryDirectory() as root:
            engine = ib._engine(root)
            ib._seed_books(engine, frames)
            u = uuid.uuid4().hex[:8]
            out = None
            if live:
                s = LiveSettings(nats_url=nats_url, redis_url=redis_url,
                                 subject_prefix=f"pbench_{u}", stream=f"PBENCH_{u}",
                                 redis_prefix=f"petrosa-bench:{u}",
                                 buffer_messages=2 * n)  # fmt: skip
                out = engine.live = LiveOutputs(s, venue=engine.adapter.venue,
                                                exchange=engine.exchange,
                                                adapter=engine.adapter)  # fmt: skip
                out.start()
                _running(out)
            engine.writer.start()
            conn = ib._Conn(1, "bench")
            for st in engine._streams.values():
                st.source = 1
            wall, cpu = time.perf_counter(), time.thread_time()
            for f in frames:
                engine._on_frame(conn, f, engine.now_ms())
            engine.flush_landing()
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            engine.writer.close()
            drained = 0.0
            if out is not None:
                t = time.perf_counter()
                while not out.idle():
                    time.sleep(0.001)
                drained = time.perf_counter() - t
                stats = out.stats()
                out.close()
                asyncio.run(delete_stream(nats_url, s.stream))
                assert stats["intake_dropped"] == 0 and stats["nats"]["dropped"] == 0, stats
            return wall, cpu, drained

    on, off = [], []
    for _ in range(rounds):
        off.append(one(False))
        on.append(one(True))
    med = statistics.median
    w_off, c_off = med(x[0] for x in off), med(x[1] for x in off)
    w_on, c_on = med(x[0] for x in on), med(x[1] for x in on)
    print(f"engine hot path (the loop feeding frames), {n} mixed frames, median of {rounds} "
          f"rounds: outputs off {w_off / n * 1e6:.1f} us/msg wall, {c_off / n * 1e6:.1f} us/msg "
          f"CPU of the ingest thread; on (NATS+Redis) {w_on / n * 1e6:.1f} us/msg wall, "
          f"{c_on / n * 1e6:.1f} us/msg CPU of the ingest thread; the publisher caught up "
          f"{med(x[2] for x in on):.2f} s after the last frame landed")  # fmt: skip


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with nats_server() as nats_url, redis_server() as redis_url:
        engine_overhead(min(n, 50_000), nats_url, redis_url)
        if os.environ.get("BENCH_ENGINE_ONLY"):
            return
        for label, nu, ru in (("nats+redis", nats_url, redis_url), ("nats", nats_url, None),
                              ("redis", None, redis_url)):  # fmt: skip
            r = run(n, nu, ru)
            print(
                f"{label:11s} {n} frames: offer {r['offer_us']:.2f} us/frame on the ingest "
                f"thread; {r['msgs_per_s']:,.0f} frames/s end to end ({r['total_s']:.2f} s)"
            )


if __name__ == "__main__":
    main()
