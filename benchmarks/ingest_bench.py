"""Ingest benchmarks, each a ratio against a baseline measured in the same run.

1. validate + dedup + land durably (the engine's hot path, writer thread fsyncing) vs bare
   ``orjson.loads`` of the same frames (target >= 100k msg/s, >= 50% of orjson);
2. depth diffs decoded and applied to order books (the engine's path: ``fastpath`` + float
   book) vs bare ``orjson.loads`` (target >= 25%); the full-parser path is shown for reference;
3. receipt -> durable landing latency at 20,000 msg/s, p50/p99 (target p99 <= 50 ms);
4. RSS of an engine streaming 20 streams from the local exchange (target <= 150 MB).

1b. Bybit: the engine landing the real recorded Bybit v5 linear frames durably (the test
   fixtures ``fixtures/bybit/ws/cryptofeed_2026-08-09``: ``orderbook.200``, ``publicTrade``,
   ``kline.1``, ``tickers`` of four symbols, merged by message time as
   ``petrosa_pipelines_tests/test_ingest/bybit_capture.py`` does) vs bare ``orjson.loads`` of
   the same frames. The capture is 45 s of market (~2,500 frames), so each round is one fresh
   engine fed the whole capture with its recorded receipt times (message time + 50 ms; the
   engine rejects times far from their receipt), and there are more rounds; the fixed cost of
   closing the last segment (fsync, rename) weighs more than in run 1's 100k+ frames.

Steady state (``--steady-minutes N``, issue 15 item 10): the engine streams from the local
exchange at the interactive demo's rate for N minutes, beside a bare baseline (a websocket
reader that appends each frame to a file and ``fdatasync``s it, nothing else) reading the same
exchange at the same time, so both see the same machine. Reported per window (``--window-minutes``,
default 5): lines, p50/p99/max receipt -> durable, RSS; then the ratio p99 last/first window for
each and the engine's ratio divided by the baseline's (1.0: no drift of our own). With
``--compete-every-minutes M`` a CPU- and disk-bound process (a stand-in for the scheduled audit
and health runs) runs ``--compete-seconds`` every M minutes.

Fairness on a shared machine: the baseline and the candidate run in alternating rounds on the
same frames, each round's ratio is taken from the pair, and the median round is reported, with
rates both by wall clock and by this process's CPU time (other tenants' load inflates wall time
but not CPU time; the ingest's writer thread is in the same process, so its CPU counts too).

Frames come from the local exchange's deterministic market, in Binance's combined-stream format.
Run: ``.venv/bin/python benchmarks/ingest_bench.py [--quick]``, or
``.venv/bin/python benchmarks/ingest_bench.py --steady-minutes 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.binance.fastpath import FAST_DECODER, DepthRoute, depth_levels
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn as _Conn
from petrosa_pipelines.landing.book import BookSync
from petrosa_pipelines.local_exchange import Market, MarketConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
#: the hour before the current one: the frames (~35 min of market) are then plausible for an
#: engine stamping receipt with the wall clock (it rejects times far from their receipt), and
#: identical for every run within the hour
T0 = (time.time_ns() // 3_600_000_000_000 - 1) * 3_600_000


def make_frames(n: int) -> tuple[list[bytes], list[bytes]]:
    """(mixed frames in event order, depth-only frames) from the local exchange's market."""
    market = Market(MarketConfig(symbols=SYMBOLS, trades_per_day=2_000_000))
    events: list[tuple[int, bytes]] = []
    depth: list[bytes] = []
    span = 600_000
    lo = T0
    while len(events) < n:
        for sym in SYMBOLS:
            s = sym.lower()
            for d in market.agg_trade_events(sym, lo, lo + span):
                events.append((d["E"], orjson.dumps({"stream": f"{s}@aggTrade", "data": d})))
            for d in market.depth_events(sym, lo, lo + span, 100):
                f = orjson.dumps({"stream": f"{s}@depth@100ms", "data": d})
                events.append((d["E"], f))
                depth.append(f)
            for d in market.kline_events(sym, "1m", lo, lo + span):
                events.append((d["E"], orjson.dumps({"stream": f"{s}@kline_1m", "data": d})))
            for sec in range(lo // 1000 + 1, (lo + span) // 1000 + 1):
                d = market.mark_price_event(sym, sec * 1000)
                events.append((d["E"], orjson.dumps({"stream": f"{s}@markPrice@1s", "data": d})))
        lo += span
    events.sort(key=lambda e: e[0])
    return [f for _, f in events[:n]], depth


#: a timing: (wall seconds, CPU seconds of this process)
Timing = tuple[float, float]


class _Clock:
    """Wall and process-CPU stopwatch."""

    def __enter__(self) -> _Clock:
        gc.collect()
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t
        self.cpu = time.process_time() - self.c


def bench_orjson(frames: list[bytes]) -> Timing:
    loads = orjson.loads
    with _Clock() as c:
        for f in frames:
            loads(f)
    return c.wall, c.cpu


def paired(
    n: int, rounds: int, base: Callable[[], Timing], ours: Callable[[], Timing]
) -> dict[str, float]:
    """Alternate baseline and candidate ``rounds`` times; medians of rates and of ratios."""
    wall_ratio, cpu_ratio, ours_wall, ours_cpu, base_wall, base_cpu = [], [], [], [], [], []
    for _ in range(rounds):
        bw, bc = base()
        ow, oc = ours()
        base_wall.append(n / bw)
        base_cpu.append(n / bc)
        ours_wall.append(n / ow)
        ours_cpu.append(n / oc)
        wall_ratio.append(bw / ow)
        cpu_ratio.append(bc / oc)
    med = statistics.median
    return {
        "ours_wall": med(ours_wall),
        "ours_cpu": med(ours_cpu),
        "base_wall": med(base_wall),
        "base_cpu": med(base_cpu),
        "ratio_wall": med(wall_ratio),
        "ratio_cpu": med(cpu_ratio),
    }


def _fmt(r: dict[str, float]) -> str:
    return (
        f"{r['ours_wall']:,.0f} msg/s wall ({r['ours_cpu']:,.0f} by CPU time); bare orjson.loads "
        f"{r['base_wall']:,.0f} msg/s wall ({r['base_cpu']:,.0f} CPU); ratio "
        f"{r['ratio_wall']:.1%} wall, {r['ratio_cpu']:.1%} CPU"
    )


def _engine(root: str, **kw) -> IngestEngine:
    cfg = IngestConfig(group="bench", symbols=SYMBOLS, landing_path=root, **kw)
    return IngestEngine(cfg)


def _seed_books(engine: IngestEngine, frames: list[bytes]) -> None:
    """Live books start from a REST snapshot; here each starts empty just before its first diff
    so that every diff of the benchmark is applied."""
    from petrosa_pipelines.exchanges.base import DepthSnapshotRecord

    adapter = BinanceUsdmAdapter()
    for f in frames:
        if b"depthUpdate" not in f:
            continue
        rec = adapter.parse(f)
        sync = engine._books[rec.symbol]
        if not sync.book.synced:
            snap = DepthSnapshotRecord("binance", rec.symbol, rec.prev_final_update_id,
                                       rec.event_time, None, (), (), rec.event_time)  # fmt: skip
            sync.on_snapshot(snap)
        if all(s.book.synced for s in engine._books.values()):
            return


def bench_ingest(frames: list[bytes], check: list[tuple[int, int]] | None = None) -> Timing:
    """Time until every line is durable; appends (lines landed, dead letters) to ``check``.

    Frames are fed back to back, as one endless burst: the engine hands a batch to the writer
    every ``LAND_BATCH_BYTES`` (a live socket also hands one over whenever it runs dry).
    """
    with tempfile.TemporaryDirectory() as root:
        engine = _engine(root)
        _seed_books(engine, frames)
        engine.writer.start()
        conn = _Conn(1, "bench")
        for st in engine._streams.values():
            st.source = 1
        on_frame = engine._on_frame
        now = engine.now_ms
        with _Clock() as c:
            for f in frames:
                on_frame(conn, f, now())
            engine.flush_landing()
            engine.writer.close()  # drains the queue, fsyncs and publishes
        if check is not None:
            check.append((engine.writer.stats.lines_durable, engine.stats.dead_letters))
        return c.wall, c.cpu


# -- Bybit: the recorded capture ---------------------------------------------------------------
BYBIT_WS = (
    Path(__file__).resolve().parents[1]
    / "petrosa_pipelines_tests" / "fixtures" / "bybit" / "ws" / "cryptofeed_2026-08-09"
)  # fmt: skip
BYBIT_SYMBOLS = ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT")
BYBIT_TOPICS = ("orderbook", "publicTrade", "kline", "tickers")
BYBIT_RECEIPT_LAG_MS = 50


def bybit_frames() -> list[tuple[int, bytes]]:
    """(receipt ms, frame) of the recorded topic files merged by message time, each file in its
    own order; receipt = message time + a lag, never going backwards (the engine's clock)."""
    lines = [(BYBIT_WS / f"linear_{t}.jsonl").read_bytes().splitlines() for t in BYBIT_TOPICS]
    merged = heapq.merge(*lines, key=lambda f: orjson.loads(f)["ts"])
    out: list[tuple[int, bytes]] = []
    recv = 0
    for f in merged:
        recv = max(recv, orjson.loads(f)["ts"] + BYBIT_RECEIPT_LAG_MS)
        out.append((recv, f))
    return out


class _NoRest:
    """Bybit sends its book snapshots in the stream: a REST snapshot request is a bug here."""

    def depth_snapshot(self, *args: object) -> None:
        raise AssertionError("an in-stream venue needs no REST snapshot")


def bench_ingest_bybit(fed: list[tuple[int, bytes]], check: list[tuple[int, int, int]]) -> Timing:
    """One fresh Bybit engine lands the capture; time until every line is durable. Appends
    (lines landed, dead letters, gaps) to ``check``."""
    with tempfile.TemporaryDirectory() as root:
        cfg = IngestConfig(group="bench", symbols=BYBIT_SYMBOLS, landing_path=root,
                           exchange="bybit-linear", rest_base_url="http://127.0.0.1:9")  # fmt: skip
        engine = IngestEngine(cfg, rest_client=_NoRest())
        engine._primary = conn = _Conn(1, "bench")
        for st in engine._streams.values():
            st.source = 1
        engine.writer.start()
        on_frame = engine._on_frame
        with _Clock() as c:
            for recv, f in fed:
                on_frame(conn, f, recv)
            engine.flush_landing()
            engine.writer.close()  # drains the queue, fsyncs and publishes
        stats = engine.stats
        check.append((engine.writer.stats.lines_durable, stats.dead_letters, stats.gaps_recorded))
        return c.wall, c.cpu


def run_bybit(rounds: int) -> None:
    """Run 1b: prints the Bybit line."""
    fed = bybit_frames()
    frames = [f for _, f in fed]
    # the engine lands a frame with its records (ingest/hotpath.py): a ticker delta changing
    # none of a MarkPriceRecord's fields has none (exchanges/bybit/adapter.py), so is not landed
    adapter = BybitLinearAdapter()
    carrying = sum(1 for recv, f in fed if adapter.parse_frame(f, recv))
    check: list[tuple[int, int, int]] = []
    r = paired(
        len(frames), rounds, lambda: bench_orjson(frames), lambda: bench_ingest_bybit(fed, check)
    )
    assert all(c == (carrying, 0, 0) for c in check), (carrying, check)
    avg = sum(map(len, frames)) / len(frames)
    print(
        f"1b. Bybit linear, the recorded capture ({len(frames):,} real frames, avg {avg:.0f} B, "
        f"{carrying:,} landed, {rounds} rounds), validate+dedup+land durably: {_fmt(r)}"
    )


def _seeded_books(depth: list[bytes]) -> dict[str, BookSync]:
    """One empty book per symbol, synced just before its first diff (no REST here)."""
    from petrosa_pipelines.exchanges.base import DepthSnapshotRecord

    parse = BinanceUsdmAdapter().parse
    books: dict[str, BookSync] = {}
    for f in depth:
        r = parse(f)
        if r.symbol not in books:
            b = BookSync(r.symbol, cadence_ms=1000, top_n=20)
            seed = DepthSnapshotRecord(
                "binance", r.symbol, r.prev_final_update_id, r.event_time, None, (), (), None
            )
            b.on_snapshot(seed)
            books[r.symbol] = b
    return books


def bench_depth(depth: list[bytes]) -> Timing:
    """The engine's depth path: fast decode + canonical check + float levels + book apply."""
    books = _seeded_books(depth)
    routes = {f"{s.lower()}@depth@100ms": DepthRoute(f"{s.lower()}@depth@100ms", s) for s in books}
    decode = FAST_DECODER.decode
    with _Clock() as c:
        for f in depth:
            msg = decode(f)
            d = msg.data
            levels = depth_levels(f, routes[msg.stream], d)
            assert levels is not None
            books[d.s].on_update(d.E, d.U, d.u, d.pu, None, levels[0], levels[1])
    assert all(b.breaks == 0 and b.applied for b in books.values()), "benchmark broke a book"
    return c.wall, c.cpu


def bench_depth_full_parser(depth: list[bytes]) -> Timing:
    """For reference: the full parser's ``DepthUpdateRecord`` (Decimal levels) into the book."""
    parse = BinanceUsdmAdapter().parse
    books = _seeded_books(depth)
    with _Clock() as c:
        for f in depth:
            r = parse(f)
            books[r.symbol].on_diff(r)
    assert all(b.breaks == 0 for b in books.values()), "benchmark broke a book"
    return c.wall, c.cpu


def bench_latency(frames: list[bytes], rate: int, seconds: float) -> tuple[int, int, int]:
    """(p50 ms, p99 ms, messages) receipt -> durable at a paced ``rate`` msg/s."""
    with tempfile.TemporaryDirectory() as root:
        engine = _engine(root)
        _seed_books(engine, frames)
        engine.writer.start()
        conn = _Conn(1, "bench")
        for st in engine._streams.values():
            st.source = 1
        n = int(rate * seconds)
        batch = max(rate // 1000, 1)  # one batch per millisecond
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            due = int((time.perf_counter() - t0) * rate)
            while sent < min(due, n):
                engine._on_frame(conn, frames[sent % len(frames)], engine.now_ms())
                sent += 1
            engine.flush_landing()  # the socket ran dry: what the live loop does (call_soon)
            time.sleep(batch / rate / 4)
        engine.flush_landing()
        engine.writer.close()
        st = engine.writer.stats
        return st.latency_quantile(0.5), st.latency_quantile(0.99), sent


def _serve_exchange(port_q: multiprocessing.Queue) -> None:
    from petrosa_pipelines.local_exchange import LocalExchange

    market = MarketConfig(symbols=SYMBOLS, trades_per_day=2_000_000)
    with LocalExchange(market=market) as ex:
        port_q.put(ex.port)
        time.sleep(3600)


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ``ru_maxrss`` survives exec and would report the
    benchmark parent's frames."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ingest_child(port: int, seconds: float, out_q: multiprocessing.Queue) -> None:
    """A fresh process holding only the engine, so its max RSS is the ingest's own."""
    with tempfile.TemporaryDirectory() as root:
        cfg = IngestConfig(
            group="rss", symbols=SYMBOLS, landing_path=root,
            ws_base_url=f"ws://127.0.0.1:{port}", rest_base_url=f"http://127.0.0.1:{port}",
            heartbeat_interval_s=1.0,
        )  # fmt: skip
        engine = IngestEngine(cfg)

        async def main() -> None:
            task = asyncio.create_task(engine.run())
            await asyncio.sleep(seconds)
            engine.stop()
            await task

        asyncio.run(main())
        snap = engine.last_snapshot or {}
    streams = snap.get("streams", {})
    out_q.put(
        (
            _peak_rss_mb(),
            len(streams),
            sum(s["processed"] for s in streams.values()),
        )
    )


def bench_rss(seconds: float) -> tuple[float, int, int]:
    """(max RSS MB, streams, messages) of an engine streaming 5 symbols x 4 datasets."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    exchange = ctx.Process(target=_serve_exchange, args=(q,), daemon=True)
    exchange.start()
    port = q.get(timeout=120)
    try:
        out = ctx.Queue()
        child = ctx.Process(target=_ingest_child, args=(port, seconds, out))
        child.start()
        result = out.get(timeout=seconds + 120)
        child.join(30)
    finally:
        exchange.terminate()
    return result


# -- steady state at the demo's rate -------------------------------------------------------------
#: the market of the interactive demo (``petrosa_pipelines/tooling/demo.py``, ``run_demo``)
DEMO_MARKET = dict(
    seed=7,
    symbols=("BTCUSDT", "ETHUSDT"),
    trades_per_day=20_000,
    start_date="2024-01-01",
    book_levels=100,
    book_step_ms=1_000,
)


def _serve_demo_exchange(port_q: multiprocessing.Queue) -> None:
    from petrosa_pipelines.local_exchange import LocalExchange

    with LocalExchange(market=MarketConfig(**DEMO_MARKET)) as ex:
        port_q.put(ex.port)
        time.sleep(10 * 24 * 3600)


def _hist_summary(hist: list[int]) -> dict[str, int | None]:
    from petrosa_pipelines.landing.writer import hist_quantile

    nonzero = [ms for ms, n in enumerate(hist) if n]
    return {
        "lines": sum(hist),
        "p50": hist_quantile(hist, 0.5),
        "p99": hist_quantile(hist, 0.99),
        "max": nonzero[-1] if nonzero else None,
    }


def _steady_ours(port: int, seconds: float, window_s: float, out_q: multiprocessing.Queue) -> None:
    """The engine against the exchange; one summary of the window's latencies per window."""
    with tempfile.TemporaryDirectory() as root:
        cfg = IngestConfig(
            group="steady", symbols=DEMO_MARKET["symbols"], landing_path=root,
            ws_base_url=f"ws://127.0.0.1:{port}", rest_base_url=f"http://127.0.0.1:{port}",
        )  # fmt: skip
        engine = IngestEngine(cfg)

        async def main() -> None:
            task = asyncio.create_task(engine.run())
            t0 = time.monotonic()
            prev = list(engine.writer.stats.latency_hist)
            for k in range(1, int(seconds // window_s) + 1):
                await asyncio.sleep(max(t0 + k * window_s - time.monotonic(), 0))
                hist = list(engine.writer.stats.latency_hist)
                window = [a - b for a, b in zip(hist, prev, strict=True)]
                prev = hist
                out_q.put(("ours", k, {**_hist_summary(window), "rss_mb": _rss_mb()}))
            engine.stop()
            await task

        asyncio.run(main())


def _steady_bare(port: int, seconds: float, window_s: float, out_q: multiprocessing.Queue) -> None:
    """The baseline: read the same streams, append each frame to a file, fdatasync, measure."""
    import os

    from websockets.asyncio.client import connect

    from petrosa_pipelines.landing.writer import LATENCY_BUCKETS

    adapter = BinanceUsdmAdapter()
    datasets = ["trades", "candles", "depth", "funding"]
    url = adapter.combined_stream_url(
        f"ws://127.0.0.1:{port}", adapter.stream_names(list(DEMO_MARKET["symbols"]), datasets)
    )
    top = LATENCY_BUCKETS - 1

    async def main() -> None:
        hist = [0] * LATENCY_BUCKETS
        t0 = time.monotonic()
        k = 1
        # deliberately synchronous: the baseline is the least a durable reader must do
        with tempfile.TemporaryDirectory() as root, open(Path(root) / "bare.jsonl", "ab") as f:  # noqa: ASYNC230
            async with connect(url, max_size=2**22, compression=None) as ws:
                while k <= int(seconds // window_s):
                    try:
                        raw = await asyncio.wait_for(
                            ws.recv(decode=False), max(t0 + k * window_s - time.monotonic(), 0)
                        )
                    except TimeoutError:
                        raw = None
                    if raw is not None:
                        recv = time.time_ns() // 1_000_000
                        f.write(b"%d %b\n" % (recv, raw))
                        f.flush()
                        os.fdatasync(f.fileno())
                        d = time.time_ns() // 1_000_000 - recv
                        hist[min(max(d, 0), top)] += 1
                    if time.monotonic() >= t0 + k * window_s:
                        out_q.put(("bare", k, {**_hist_summary(hist), "rss_mb": _rss_mb()}))
                        hist = [0] * LATENCY_BUCKETS
                        k += 1

    asyncio.run(main())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _compete(seconds: float) -> None:
    """A stand-in for a scheduled audit or health run: Python start-up, then CPU and disk."""
    import os

    import dagster  # noqa: F401 - what a run process imports first

    end = time.monotonic() + seconds
    buf = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory() as root:
        while time.monotonic() < end:
            sum(i * i for i in range(200_000))
            with open(Path(root) / "scratch.bin", "wb") as f:
                for _ in range(8):
                    f.write(buf)
                f.flush()
                os.fsync(f.fileno())


def bench_steady(
    minutes: float, window_minutes: float, compete_every: float | None, compete_s: float
) -> None:
    """Ours and the bare baseline side by side; prints one line per window and the ratios."""
    ctx = multiprocessing.get_context("spawn")
    port_q = ctx.Queue()
    exchange = ctx.Process(target=_serve_demo_exchange, args=(port_q,), daemon=True)
    exchange.start()
    port = port_q.get(timeout=300)
    seconds, window_s = minutes * 60, window_minutes * 60
    n_windows = int(seconds // window_s)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_steady_ours, args=(port, seconds, window_s, out)),
        ctx.Process(target=_steady_bare, args=(port, seconds, window_s, out)),
    ]
    for p in procs:
        p.start()
    print(
        f"steady state: {minutes:g} min at the demo's rate ({len(DEMO_MARKET['symbols'])} "
        f"symbols x 4 datasets), {n_windows} windows of {window_minutes:g} min, engine and bare "
        f"baseline side by side"
        + (f"; competitor {compete_s:g}s every {compete_every:g} min" if compete_every else ""),
        flush=True,
    )
    results: dict[str, dict[int, dict]] = {"ours": {}, "bare": {}}
    started = time.monotonic()
    next_compete = started + compete_every * 60 if compete_every else None
    competitors = []
    try:
        while sum(len(v) for v in results.values()) < 2 * n_windows:
            if next_compete is not None and time.monotonic() >= next_compete:
                c = ctx.Process(target=_compete, args=(compete_s,), daemon=True)
                c.start()
                competitors.append(c)
                next_compete += compete_every * 60
            try:
                who, k, summary = out.get(timeout=5)
            except Exception:  # noqa: BLE001 - queue.Empty: poll the children and go on
                if not all(p.is_alive() for p in procs) and out.empty():
                    raise RuntimeError("a steady-state child died") from None
                continue
            results[who][k] = summary
            if k in results["ours"] and k in results["bare"]:
                o, b = results["ours"][k], results["bare"][k]
                print(
                    f"  window {k} ({(k - 1) * window_minutes:g}-{k * window_minutes:g} min): "
                    f"engine {o['lines']:,} lines p50 {o['p50']} p99 {o['p99']} max {o['max']} ms "
                    f"RSS {o['rss_mb']} MB | bare {b['lines']:,} lines p50 {b['p50']} p99 "
                    f"{b['p99']} max {b['max']} ms",
                    flush=True,
                )
    finally:
        for p in procs:
            p.join(60)
        for c in competitors:
            c.join(5)
        exchange.terminate()
    first, last = 1, n_windows

    def ratio(who: str) -> float:
        return max(results[who][last]["p99"] or 0, 1) / max(results[who][first]["p99"] or 0, 1)

    ours, bare = ratio("ours"), ratio("bare")
    print(
        f"p99 last/first window: engine {ours:.2f}, bare baseline {bare:.2f}; engine relative "
        f"to baseline {ours / bare:.2f} (1.0 = no drift of its own)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per ratio")
    ap.add_argument(
        "--steady-minutes", type=float, default=None,
        help="only the steady-state run at the demo's rate, this long (e.g. 30)",
    )  # fmt: skip
    ap.add_argument("--window-minutes", type=float, default=5.0, help="steady-state window")
    ap.add_argument(
        "--compete-every-minutes", type=float, default=None,
        help="steady state: start a CPU+disk competitor this often (a scheduled run's stand-in)",
    )  # fmt: skip
    ap.add_argument("--compete-seconds", type=float, default=60.0)
    ap.add_argument("--bybit-only", action="store_true", help="only run 1b (Bybit)")
    args = ap.parse_args()
    if args.steady_minutes is not None:
        if args.steady_minutes < 2 * args.window_minutes:
            ap.error("--steady-minutes must cover at least two windows (--window-minutes)")
        bench_steady(
            args.steady_minutes,
            args.window_minutes,
            args.compete_every_minutes,
            args.compete_seconds,
        )
        return
    n = 100_000 if args.quick else 400_000
    rounds = args.rounds or (3 if args.quick else 5)
    bybit_rounds = args.rounds or (21 if args.quick else 51)
    if args.bybit_only:
        run_bybit(bybit_rounds)
        return
    frames, depth = make_frames(n)
    n_depth = sum(b"depthUpdate" in f for f in frames)
    avg = sum(map(len, frames)) / len(frames)
    print(
        f"frames: {len(frames):,} mixed ({n_depth:,} depth), avg {avg:.0f} B; "
        f"{rounds} alternating rounds, medians"
    )

    check: list[tuple[int, int]] = []
    r = paired(
        len(frames), rounds, lambda: bench_orjson(frames), lambda: bench_ingest(frames, check)
    )
    assert all(landed == len(frames) and dead == 0 for landed, dead in check), check
    print(f"1. ingest validate+dedup+land durably: {_fmt(r)} "
          f"(targets >= 100,000 msg/s and >= 50%)")  # fmt: skip
    run_bybit(bybit_rounds)

    r = paired(len(depth), rounds, lambda: bench_orjson(depth), lambda: bench_depth(depth))
    print(f"2. depth diffs decoded+applied to books: {_fmt(r)} (target >= 25%; cryptofeed 8.5%)")
    r = paired(len(depth), 1, lambda: bench_orjson(depth), lambda: bench_depth_full_parser(depth))
    print(f"   (reference, full parser Decimal records into the same books: {_fmt(r)})")

    p50, p99, sent = bench_latency(frames, 20_000, 3.0 if args.quick else 10.0)
    print(
        f"3. receipt -> durable at 20,000 msg/s ({sent:,} msgs): p50 {p50} ms, p99 {p99} ms "
        f"(target p99 <= 50 ms)"
    )

    rss, n_streams, got = bench_rss(10.0 if args.quick else 30.0)
    print(
        f"4. RSS with {n_streams} streams from the local exchange: {rss:.0f} MB max "
        f"({got:,} msgs processed; target <= 150 MB)"
    )


if __name__ == "__main__":
    main()
