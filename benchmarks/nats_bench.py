"""NATS benchmarks (issue 14, item 6), each a ratio against a baseline measured in the same run.

1. messages/s into durable landing, the NATS source vs the websocket source, same frames:

   * **no transport**: the engine's ``_on_frame`` fed the combined-stream frames directly, as
     the websocket reader hands them over (``benchmarks/ingest_bench.py`` run 1), then flushed
     and the writer closed (every line fsynced): the ceiling any transport can only lower;
   * **websocket**: a full ``IngestEngine.run`` (its own websocket reader) connected to a local
     websocket server in a separate process that sends the frames back to back (each ``send``
     waits for the socket to drain: as fast as the engine reads); timed from the first send
     until every line is durable (the writer's ``lines_durable``);
   * **core NATS**: the same frames in the Petrosa socket-client's envelope
     (``local_exchange.venues.binance.wire.socket_client_envelope``) published back to back by
     a separate process on a fresh subject; ``IngestEngine.run`` with ``source="nats"``; timed
     from the first publish until every line is durable;
   * **JetStream, ack after durable**: the envelopes stored first in a fresh file-backed
     stream; timed from the engine's start (its durable consumer is created then) until every
     message is acknowledged (acks go out only once the writer made the lines durable).

   Every contender must process each message once (no dead letter, duplicate or book break).
   Rates are by wall clock and by this process's CPU time (the sender's CPU is not counted: it
   is another process); ratios are taken per round (rate / websocket rate, and / no-transport
   rate), median over rounds. Order books are seeded empty before their first diff (as
   ``ingest_bench`` does), so no REST snapshot is asked for.

2. publish overhead per message: the same hot path (``_on_frame`` on the frames) without live
   outputs (as the engine runs with no URL set) vs with them (``LiveOutputs`` publishing to a
   fresh JetStream stream on the NATS server, Redis latest state on), in alternating rounds:
   wall time of the loop and CPU time of the ingest thread (``time.thread_time``), per message;
   ratios on/off per round, median. The outputs' worker is a process of its own (its CPU is
   reported apart): what it costs the ingest is the offers and the pipe writes, and on a
   machine with fewer free cores than busy processes, the CPU it takes. The loop's wall time
   is split with the kernel's scheduler statistics (Linux) into CPU, run-queue wait (runnable,
   no CPU free: a busy machine) and blocked (not runnable: waiting for the GIL, or I/O), so a
   worker competing for the GIL shows apart from one competing for a CPU.

Frames: the real recorded Binance USD-M frames of the test fixtures (``fixtures/binance/ws``:
cryptofeed 2021-04-17 aggTrade, depthUpdate, kline; hftbacktest 2023-04-04 depthUpdate and
markPriceUpdate of BTCUSDT), merged by event time and cycled to ``--n`` messages. Every cycle
is moved forward in time (event/trade/kline times) and in ids (aggregate trade ids, depth
update ids ``U``/``u``/``pu``) by whole cycle lengths, so that each message is new to the
engine (no duplicates), chains (trade ids consecutive where the capture's were, each cycle's
first ``pu`` the previous cycle's last ``u``) and is recent (the engine rejects times more
than 24 h from their receipt). Prices, quantities and levels are the recorded bytes.

Servers: NATS at 127.0.0.1:4222 and Redis at 127.0.0.1:6379, else throwaway ones
(``petrosa_pipelines_tests/servers.py``); subjects, streams and keys of its own, deleted after.

    .venv/bin/python benchmarks/nats_bench.py           # 200,000 messages, 3 rounds
    .venv/bin/python benchmarks/nats_bench.py --n 100000 --rounds 3
    .venv/bin/python benchmarks/nats_bench.py --quick   # 30,000 messages, 1 round
    .venv/bin/python benchmarks/nats_bench.py --live-only --n 50000 --rounds 3  # run 2 only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord  # noqa: E402
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter  # noqa: E402
from petrosa_pipelines.ingest import IngestConfig, IngestEngine  # noqa: E402
from petrosa_pipelines.ingest.connection import Conn  # noqa: E402
from petrosa_pipelines.live import LiveOutputs  # noqa: E402
from petrosa_pipelines.local_exchange.venues.binance.wire import (  # noqa: E402
    socket_client_envelope,
)
from petrosa_pipelines.settings import LiveSettings  # noqa: E402
from petrosa_pipelines_tests.servers import (  # noqa: E402
    create_stream,
    delete_stream,
    nats_server,
    redis_server,
)

WS = ROOT / "petrosa_pipelines_tests" / "fixtures" / "binance" / "ws"
SOURCES = (
    "cryptofeed_2021-04-17/aggTrade.jsonl",
    "cryptofeed_2021-04-17/depthUpdate.jsonl",
    "cryptofeed_2021-04-17/kline.jsonl",
    "hftbacktest_2023-04-04/BTCUSDT_depthUpdate_first500.jsonl",
    "hftbacktest_2023-04-04/BTCUSDT_markPriceUpdate.jsonl",
)
DATASETS = ("trades", "depth", "candles", "funding")
#: a cycle lasts a whole number of minutes (kline minutes stay aligned)
MINUTE_MS = 60_000
DEADLINE_S = 600.0
#: core NATS: messages the publisher may run ahead of the reader (~10 MB of envelopes)
CORE_WINDOW = 20_000


# -- frames ---------------------------------------------------------------------------------------
def recorded() -> list[dict]:
    """The fixture frames as dicts, each capture's times made relative to its own first event,
    merged by that relative time."""
    out: list[tuple[int, int, dict]] = []
    for i, rel in enumerate(SOURCES):
        msgs = [orjson.loads(line) for line in (WS / rel).read_bytes().splitlines()]
        t0 = min(m["data"]["E"] for m in msgs)
        out += [(m["data"]["E"] - t0, i, m) for m in msgs]
    out.sort(key=lambda x: (x[0], x[1]))
    return [m for _, _, m in out]


def cycled(n: int, now_ms: int) -> tuple[list[bytes], list[str]]:
    """(``n`` combined-stream frames, their symbols): the recording repeated, each cycle moved
    on in time and ids (module docstring), the last one ending a minute before ``now_ms``."""
    base = recorded()
    # per symbol: aggregate trade id span, trade id span, depth (first pu, last u); per capture
    # (symbol, event type): the time origin
    agg: dict[str, list[int]] = {}
    tid: dict[str, list[int]] = {}
    depth: dict[str, list[int]] = {}
    origin: dict[tuple[str, str], int] = {}
    for m in base:
        d = m["data"]
        s = d["s"]
        if d["e"] == "aggTrade":
            a, t = agg.setdefault(s, [d["a"], d["a"]]), tid.setdefault(s, [d["f"], d["l"]])
            a[0], a[1] = min(a[0], d["a"]), max(a[1], d["a"])
            t[0], t[1] = min(t[0], d["f"]), max(t[1], d["l"])
        elif d["e"] == "depthUpdate":
            depth.setdefault(s, [d["pu"], d["u"]])[1] = d["u"]
        origin.setdefault((s, d["e"]), d["E"])
    longest = max(m["data"]["E"] - origin[(m["data"]["s"], m["data"]["e"])] for m in base)
    span_ms = MINUTE_MS * (2 + longest // MINUTE_MS)
    cycles = -(-n // len(base))
    start = (now_ms // MINUTE_MS) * MINUTE_MS - (cycles + 2) * span_ms
    frames: list[bytes] = []
    for k in range(cycles):
        for m in base:
            d = dict(m["data"])
            s = d["s"]
            dt = start + k * span_ms - origin[(s, d["e"])]
            dt -= dt % MINUTE_MS  # whole minutes: kline minutes stay aligned
            for f in ("E", "T"):
                if f in d:
                    d[f] += dt
            if d["e"] == "aggTrade":
                da, dtid = k * (agg[s][1] - agg[s][0] + 1), k * (tid[s][1] - tid[s][0] + 1)
                d["a"], d["f"], d["l"] = d["a"] + da, d["f"] + dtid, d["l"] + dtid
            elif d["e"] == "depthUpdate":
                du = k * (depth[s][1] - depth[s][0])
                d["U"], d["u"], d["pu"] = d["U"] + du, d["u"] + du, d["pu"] + du
            elif d["e"] == "kline":
                d["k"] = {**d["k"], "t": d["k"]["t"] + dt, "T": d["k"]["T"] + dt}
            frames.append(orjson.dumps({"stream": m["stream"], "data": d}))
            if len(frames) == n:
                break
    symbols = sorted({m["data"]["s"] for m in base})
    return frames, symbols


# -- engines --------------------------------------------------------------------------------------
def _config(root: str, symbols: list[str], **kw) -> IngestConfig:
    return IngestConfig(
        group="natsbench",
        symbols=tuple(symbols),
        datasets=DATASETS,
        landing_path=root,
        rest_base_url="http://127.0.0.1:9",
        heartbeat_interval_s=1.0,
        stale_after_s=600.0,
        **kw,
    )


def _off() -> LiveSettings:
    return LiveSettings()


def _engine(cfg: IngestConfig, live: LiveSettings, frames: list[bytes]) -> IngestEngine:
    """The engine with live outputs for ``live``; without any when both are off, as
    ``LiveOutputs.from_env`` leaves it with no URL set (whatever this shell's environment)."""
    adapter = BinanceUsdmAdapter()
    out = LiveOutputs(live, venue=adapter.venue, exchange=adapter.name, adapter=adapter)
    engine = IngestEngine(cfg, live=out)
    if not (live.publishing or live.keeping_latest):
        engine.live = None
    _seed_books(engine, frames)
    return engine


def _seed_books(engine: IngestEngine, frames: list[bytes]) -> None:
    """Books start from a REST snapshot; here each starts empty just before its first diff
    (as ``ingest_bench._seed_books``), so no REST is asked and every diff is applied."""
    engine._sync_books()
    parse = BinanceUsdmAdapter().parse
    for f in frames:
        if b"depthUpdate" not in f:
            continue
        rec = parse(f)
        sync = engine._books[rec.symbol]
        if not sync.book.synced:
            sync.on_snapshot(
                DepthSnapshotRecord(
                    "binance",
                    rec.symbol,
                    rec.prev_final_update_id,
                    rec.event_time,
                    None,
                    (),
                    (),
                    rec.event_time,
                )
            )
        if all(s.book.synced for s in engine._books.values()):
            return


def _landed(engine: IngestEngine) -> int:
    return engine.writer.stats.lines_durable


def _check(engine: IngestEngine, n: int, what: str) -> None:
    """Every message processed once: none a dead letter, a duplicate or a book break (the
    cycling chains the ids), so every contender did the same work."""
    s = engine.stats
    processed = sum(st.processed for st in s.streams.values())
    bad = (s.dead_letters, sum(st.duplicates for st in s.streams.values()))
    breaks = sum(b.breaks for b in engine._books.values())
    if processed != n or bad != (0, 0) or breaks:
        raise AssertionError(
            f"{what}: {processed} of {n} processed; dead letters, duplicates {bad}; "
            f"book breaks {breaks}"
        )


# -- run 1: baseline ------------------------------------------------------------------------------
def bench_direct(
    frames: list[bytes], symbols: list[str], live: LiveSettings | None = None
) -> tuple[float, float, float, float, int, dict[str, Any] | None]:
    """(loop wall s, loop thread-CPU s, wall s and process-CPU s until durable, lines landed,
    the live outputs' stats once caught up or None): ``_on_frame`` fed back to back, then
    flushed and the writer closed. The live outputs' worker is started and has reported
    before the clock starts (the engine starts it long before any saturation)."""
    with tempfile.TemporaryDirectory() as root:
        engine = _engine(_config(root, symbols), live or _off(), frames)
        out = engine.live
        worker_cpu = 0.0
        if out is not None:
            out.start()
            deadline = time.monotonic() + DEADLINE_S
            while out.stats()["worker"]["state"] != "running":
                if time.monotonic() > deadline:
                    raise TimeoutError("the live outputs' worker did not start")
                time.sleep(0.01)
            worker_cpu = out.stats()["worker"]["cpu_s"]  # its start (imports) not counted
        engine.writer.start()
        conn = Conn(1, "bench")
        engine._primary = conn
        for st in engine._streams.values():
            st.source = 1
        on_frame, now = engine._on_frame, engine.now_ms
        gc.collect()
        sched = _schedstat()
        t, c, pc = time.perf_counter(), time.thread_time(), time.process_time()
        for f in frames:
            on_frame(conn, f, now())
        engine.flush_landing()
        loop_wall, loop_cpu = time.perf_counter() - t, time.thread_time() - c
        runq = _schedstat()[1] - sched[1]
        engine.writer.close()
        durable, durable_cpu = time.perf_counter() - t, time.process_time() - pc
        _check(engine, len(frames), "direct")
        landed = _landed(engine)
        stats = None
        if out is not None:
            deadline = time.monotonic() + DEADLINE_S
            while not out.idle() and time.monotonic() < deadline:
                time.sleep(0.001)
            stats = out.stats()
            stats["caught_up_s"] = time.perf_counter() - t
            stats["worker_cpu_s"] = stats["worker"]["cpu_s"] - worker_cpu
            stats["runq_s"] = runq
            out.close()
            if stats["intake_dropped"] or stats["nats"]["dropped"] or stats["worker"]["lost_items"]:
                raise AssertionError(f"live outputs dropped messages: {stats}")
        return loop_wall, loop_cpu, durable, durable_cpu, landed, stats or {"runq_s": runq}


def _schedstat() -> tuple[float, float]:
    """(s on a CPU, s waiting for one) of this thread, from the kernel's scheduler statistics
    (Linux; zeros elsewhere): wall time - CPU - run-queue wait is time the thread was not
    runnable, which in the ingest's loop is waiting for the GIL (or for I/O)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run_ns, wait_ns, _ = f.read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


# -- run 1: websocket -----------------------------------------------------------------------------
def _ws_server(
    frames: list[bytes], port_q: multiprocessing.Queue, go: multiprocessing.Event
) -> None:
    """A separate process: a websocket server that, once ``go`` is set, sends the frames to
    its client back to back (each ``send`` waits for the socket to drain: as fast as the client
    reads), then keeps the connection open."""
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        for f in frames:
            await ws.send(f.decode())  # text frames, as Binance sends
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
            port_q.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def bench_websocket(frames: list[bytes], symbols: list[str]) -> tuple[float, float]:
    """(wall s, process CPU s) from the server's first send until every line is durable: the
    engine's own websocket reader on a local server replaying the frames."""
    ctx = multiprocessing.get_context("spawn")
    port_q, go = ctx.Queue(), ctx.Event()
    srv = ctx.Process(target=_ws_server, args=(frames, port_q, go), daemon=True)
    srv.start()
    try:
        port = port_q.get(timeout=120)
        with tempfile.TemporaryDirectory() as root:
            cfg = _config(root, symbols, ws_base_url=f"ws://127.0.0.1:{port}")
            engine = _engine(cfg, _off(), frames)
            n = len(frames)

            async def main() -> tuple[float, float]:
                task = asyncio.create_task(engine.run())
                try:
                    await _wait(lambda: engine.connected or task.done(), "connection")
                    if task.done():
                        await task
                    gc.collect()
                    t, c = time.perf_counter(), time.process_time()
                    go.set()
                    await _wait(lambda: _processed(engine) >= n or task.done(), "read")
                    engine.flush_landing()
                    await _wait(lambda: _landed(engine) >= n or task.done(), "durable")
                    return time.perf_counter() - t, time.process_time() - c
                finally:
                    engine.stop()
                    await asyncio.wait_for(task, 120)

            wall, cpu = asyncio.run(main())
            _check(engine, n, "websocket")
            return wall, cpu
    finally:
        srv.kill()
        srv.join(30)


def _processed(engine: IngestEngine) -> int:
    return sum(st.processed for st in engine.stats.streams.values())


# -- run 1: NATS ----------------------------------------------------------------------------------
def _publisher(
    url: str,
    subject: str,
    envs: list[bytes],
    go: multiprocessing.Event,
    read: Any,
) -> None:
    """A separate process publishing the envelopes back to back on core NATS, at most
    ``CORE_WINDOW`` ahead of what the engine has read (``read``, shared memory): the server
    disconnects a subscriber whose unread backlog outgrows its limits (a slow consumer), which
    would lose messages rather than measure the reader."""
    import nats

    async def main() -> None:
        nc = await nats.connect(url, pending_size=64 << 20)
        go.wait()
        for i, e in enumerate(envs):
            while i - read.value >= CORE_WINDOW:
                await nc.flush(timeout=120)
                await asyncio.sleep(0.0005)
            await nc.publish(subject, e)
        await nc.flush(timeout=120)
        await nc.close()

    asyncio.run(main())


async def _wait(
    cond: Callable[[], object], what: str, tick: Callable[[], None] | None = None
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {DEADLINE_S} s")
        if tick is not None:
            tick()
        await asyncio.sleep(0.001)


def bench_core(
    url: str, frames: list[bytes], envs: list[bytes], symbols: list[str]
) -> tuple[float, float]:
    """(wall s, process CPU s) from the first publish until every line is durable."""
    subject = f"natsbench.{uuid.uuid4().hex[:12]}"
    ctx = multiprocessing.get_context("spawn")
    go, read = ctx.Event(), ctx.Value("q", 0, lock=False)
    pub = ctx.Process(target=_publisher, args=(url, subject, envs, go, read), daemon=True)
    pub.start()
    with tempfile.TemporaryDirectory() as root:
        cfg = _config(
            root,
            symbols,
            source="nats",
            nats_url=url,
            nats_subject=subject,
            nats_pending_msgs_limit=len(envs) + 1000,
        )
        engine = _engine(cfg, _off(), frames)

        async def main() -> tuple[float, float]:
            task = asyncio.create_task(engine.run())
            await _wait(
                lambda: (engine._nats and engine._nats.ready.is_set()) or task.done(),
                "subscription",
            )
            if task.done():
                await task
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            go.set()
            n = len(envs)
            try:
                # the writer makes lines durable at its own pace: the last burst when flushed
                src = engine._nats

                def tick() -> None:
                    read.value = src.stats.messages
                    if engine.stats.disconnects:
                        raise AssertionError("core NATS: the server disconnected the reader")

                await _wait(lambda: src.stats.messages >= n or task.done(), "read", tick)
                engine.flush_landing()
                await _wait(lambda: _landed(engine) >= n or task.done(), "durable")
                return time.perf_counter() - t, time.process_time() - c
            finally:
                engine.stop()
                await asyncio.wait_for(task, 120)

        wall, cpu = asyncio.run(main())
        _check(engine, len(frames), "core NATS")
        if engine._nats.stats.slow_consumer_drops:
            raise AssertionError("core NATS: slow consumer drops")
    pub.join(60)
    if pub.is_alive():
        pub.kill()
    return wall, cpu


async def _store(url: str, stream: str, subject: str, envs: list[bytes]) -> None:
    import nats

    await create_stream(url, stream, [subject])
    nc = await nats.connect(url, pending_size=64 << 20)
    try:
        js = nc.jetstream()
        for i in range(0, len(envs), 1000):
            await asyncio.gather(*(js.publish(subject, e) for e in envs[i : i + 1000]))
    finally:
        await nc.close()


def bench_jetstream(
    url: str, frames: list[bytes], envs: list[bytes], symbols: list[str]
) -> tuple[float, float]:
    """(wall s, process CPU s) from the consumer's start until every message is acknowledged
    (the source acknowledges only what the writer made durable)."""
    u = uuid.uuid4().hex[:12]
    subject, stream = f"natsbench.{u}", f"PETROSA_BENCH_{u.upper()}"
    try:
        asyncio.run(_store(url, stream, subject, envs))
        with tempfile.TemporaryDirectory() as root:
            cfg = _config(
                root, symbols, source="nats", nats_url=url, nats_subject=subject, nats_stream=stream
            )
            engine = _engine(cfg, _off(), frames)

            async def main() -> tuple[float, float]:
                gc.collect()
                t, c = time.perf_counter(), time.process_time()
                task = asyncio.create_task(engine.run())
                n = len(envs)
                try:
                    await _wait(
                        lambda: (
                            engine._nats is not None
                            and engine._nats.stats.acked >= n
                            or task.done()
                        ),
                        "acked",
                    )
                    if task.done():
                        await task
                    return time.perf_counter() - t, time.process_time() - c
                finally:
                    engine.stop()
                    await asyncio.wait_for(task, 120)

            wall, cpu = asyncio.run(main())
            _check(engine, len(frames), "JetStream")
            return wall, cpu
    finally:
        asyncio.run(delete_stream(url, stream))


# -- report ---------------------------------------------------------------------------------------
def _row(name: str, n: int, runs: tuple[list[float], list[float]], *bases) -> str:
    """Median rates of ``runs`` (wall s, CPU s per round) and, per base, the median of the
    per-round ratios (rate / base rate), wall and CPU."""
    med = statistics.median
    wall, cpu = runs
    line = f"  {name:<34} {n / med(wall):>10,.0f} {n / med(cpu):>10,.0f}"
    for bw, bc in bases:
        line += f" {med(b / w for b, w in zip(bw, wall, strict=True)):>9.0%}"
        line += f" {med(b / c for b, c in zip(bc, cpu, strict=True)):>9.0%}"
    return line


def run1(url: str, frames: list[bytes], envs: list[bytes], symbols: list[str], rounds: int) -> None:
    """Run 1 of the module docstring: prints its table."""
    n = len(frames)
    res: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in "bwcj"}

    def add(key: str, timing: tuple[float, float]) -> None:
        res[key][0].append(timing[0])
        res[key][1].append(timing[1])

    for _ in range(rounds):
        # the CPU of the whole process (its writer thread included), as for the others
        _, _, durable, durable_cpu, landed, _ = bench_direct(frames, symbols)
        add("b", (durable, durable_cpu))
        if landed != n:
            raise AssertionError(f"baseline landed {landed} of {n}")
        add("w", bench_websocket(frames, symbols))
        add("c", bench_core(url, frames, envs, symbols))
        add("j", bench_jetstream(url, frames, envs, symbols))
    avg_f = sum(map(len, frames)) / n
    avg_e = sum(map(len, envs)) / n
    print(
        f"\n1. into durable landing, {n:,} real frames (avg {avg_f:.0f} B; in the socket-client "
        f"envelope {avg_e:.0f} B), {rounds} round(s), medians; rates in msg/s"
    )
    print(
        f"  {'source':<34} {'wall':>10} {'CPU':>10} {'/ws wall':>9} {'/ws CPU':>9} "
        f"{'/noT wall':>9} {'/noT CPU':>9}"
    )
    print(_row("no transport: _on_frame directly", n, res["b"]))
    print(_row("websocket (local replay server)", n, res["w"], res["w"], res["b"]))
    print(_row("core NATS (publisher process)", n, res["c"], res["w"], res["b"]))
    print(_row("JetStream, ack after durable", n, res["j"], res["w"], res["b"]))


def run2(
    nats_url: str, redis_url: str, frames: list[bytes], symbols: list[str], rounds: int
) -> None:
    """Run 2 of the module docstring: prints its table (off and on alternate, per round)."""
    n = len(frames)
    off, on, worker = [], [], []
    for _ in range(rounds):
        r = bench_direct(frames, symbols)
        off.append((*r[:2], r[5]["runq_s"]))
        u = uuid.uuid4().hex[:8]
        live = LiveSettings(
            nats_url=nats_url,
            redis_url=redis_url,
            subject_prefix=f"pbench_{u}",
            stream=f"PBENCH_{u}",
            redis_prefix=f"natsbench:{u}",
            buffer_messages=2 * n,
        )
        try:
            r = bench_direct(frames, symbols, live)
            stats = r[5]
            on.append((*r[:2], stats["runq_s"]))
            worker.append((stats["worker_cpu_s"], stats["caught_up_s"], stats["nats"]["published"]))
            (wf, cf, _), (wn, cn, _) = off[-1], on[-1]
            print(
                f"  round {len(on)}: off {wf / n * 1e6:.1f} / {cf / n * 1e6:.1f} us, on "
                f"{wn / n * 1e6:.1f} / {cn / n * 1e6:.1f} us (wall / ingest-thread CPU per "
                f"message), ratio {wn / wf:.2f} / {cn / cf:.2f}",
                flush=True,
            )
        finally:
            asyncio.run(delete_stream(nats_url, live.stream))
            _del_redis(redis_url, live.redis_prefix)
    med = statistics.median
    w_off, c_off = med(x[0] for x in off) / n * 1e6, med(x[1] for x in off) / n * 1e6
    w_on, c_on = med(x[0] for x in on) / n * 1e6, med(x[1] for x in on) / n * 1e6
    w_ratio = med(a[0] / b[0] for a, b in zip(on, off, strict=True))
    c_ratio = med(a[1] / b[1] for a, b in zip(on, off, strict=True))
    print(
        f"\n2. publish overhead, the engine's loop over {n:,} frames, {rounds} round(s), "
        "median, per message"
    )
    print(
        f"  {'live outputs':<34} {'us wall':>12} {'us CPU thr':>12} {'us run-queue':>12} "
        f"{'us blocked':>12}"
    )
    for name, runs in (("off (no outputs)", off), ("on (JetStream + Redis latest)", on)):
        wall, cpu, runq = (med(x[i] for x in runs) / n * 1e6 for i in range(3))
        # wall - CPU - run-queue wait: not runnable, i.e. waiting for the GIL (or I/O)
        blocked = med((x[0] - x[1] - x[2]) for x in runs) / n * 1e6
        print(f"  {name:<34} {wall:>12.2f} {cpu:>12.2f} {runq:>12.2f} {blocked:>12.2f}")
    print(f"  {'ratio of the medians on/off':<34} {w_on / w_off:>12.2f} {c_on / c_off:>12.2f}")
    print(f"  {'median of the per-round ratios':<34} {w_ratio:>12.2f} {c_ratio:>12.2f}")
    print(
        f"  the worker process (its start not counted): "
        f"{med(x[0] for x in worker) / n * 1e6:.1f} us CPU per frame "
        f"({med(x[2] for x in worker) / n:.2f} messages per frame), caught up "
        f"{med(x[1] for x in worker):.1f} s after the first frame"
    )


def _del_redis(url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    with contextlib.closing(r):
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="messages (default 200,000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="30,000 messages, 1 round")
    ap.add_argument("--live-only", action="store_true", help="run 2 only (publish overhead)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 30_000, 1
    logging.basicConfig(level=logging.WARNING)
    frames, symbols = cycled(args.n, time.time_ns() // 1_000_000)
    envs = [
        socket_client_envelope(f, orjson.loads(f)["data"]["E"], message_id=str(i))
        for i, f in enumerate(frames)
    ]
    with nats_server() as nats_url, redis_server() as redis_url:
        print(f"NATS {nats_url.split('@')[-1]}, Redis {redis_url.split('@')[-1]}")
        if not args.live_only:
            run1(nats_url, frames, envs, symbols, args.rounds)
        run2(nats_url, redis_url, frames, symbols, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
