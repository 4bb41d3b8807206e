"""The local exchange's Bybit book-history day: build time, old builder vs new, and the stall.

Why: the local exchange serves Bybit's daily ``ob200`` files, built from its market when first
asked for. The first builder made a line the way the websocket makes its few per tick (a dict
and an ``orjson.dumps`` per line, a cached format per level) and ran inside the server's event
loop: one 100-level, 1 s-step day (the demo's market) took most of 20 s on a loaded 2-core
machine, during which no websocket frame and no REST answer left the server.

Two measurements, in the same run:

* build: the old builder (the byte-identity test's reference, as the baseline) and
  ``venues.bybit.book_file.book_history_zip`` on the same day, taking turns, ``--repeat`` times;
  the outputs must be byte-identical; medians and the median of per-turn ratios.
* stall: a live ``LocalExchange`` (the demo's market) asked for a book day while a client polls
  ``/v5/market/time`` every 20 ms; once with the old serving (the build on the event loop, as the
  route did) and once with the new (a worker thread): the longest REST answer during the build,
  and whether the book request itself was answered. (Before this change a build longer than
  the handshake's 10 s ``open_timeout`` also cut the file's body; the server now allows
  ``exchange.OPEN_TIMEOUT_S``, so the old mode here shows the stall alone.)

    .venv/bin/python benchmarks/book_archive_bench.py             # demo day, 2 turns
    .venv/bin/python benchmarks/book_archive_bench.py --quick     # a 10 s-step day, 1 turn
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petrosa_pipelines.local_exchange import (  # noqa: E402
    Faults,
    LocalExchange,
    MarketConfig,
    SimulatedClock,
)
from petrosa_pipelines.local_exchange.market import Market  # noqa: E402
from petrosa_pipelines.local_exchange.venues.bybit.book_file import (  # noqa: E402
    book_history_zip,
    member_name,
)
from petrosa_pipelines.local_exchange.venues.bybit.frames import BybitFormats  # noqa: E402

# the baseline: the builder as it was (one websocket message at a time), which the byte-identity
# test also keeps as its reference
from petrosa_pipelines_tests.test_local_exchange.test_bybit_book_file import (  # noqa: E402
    websocket_zip as old_book_history_zip,
)

SYMBOL = "BTCUSDT"
DAY = dt.date(2024, 1, 2)
#: the interactive demo's market (``petrosa_pipelines/tooling/demo.py``)
DEMO = dict(
    seed=7,
    symbols=("BTCUSDT", "ETHUSDT"),
    trades_per_day=20_000,
    start_date="2024-01-01",
    book_levels=100,
    book_step_ms=1_000,
)


# -- build --------------------------------------------------------------------------------------


def bench_build(market: dict, repeat: int) -> dict[str, float]:
    """Old and new builder on the same day, taking turns (each on a fresh market, so neither
    inherits the other's caches; the day's trades are made before the clock starts)."""
    old_s, new_s, old_cpu, new_cpu = [], [], [], []
    for _ in range(repeat):
        for build, out, cpu in (
            (old_book_history_zip, old_s, old_cpu),
            (book_history_zip, new_s, new_cpu),
        ):
            formats = BybitFormats(Market(MarketConfig(**market)))
            formats.market.day_trades(SYMBOL, DAY)
            formats.market.day_trades(SYMBOL, DAY - dt.timedelta(days=1))
            origin = formats.market.start_ms // formats.market.book_step_ms - 1
            t0, c0 = time.perf_counter(), time.process_time()
            data = build(formats, SYMBOL, DAY, lambda s, o=origin: s - o + 1)
            out.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if build is old_book_history_zip:
                reference = data
            elif data != reference:
                raise SystemExit("the new builder's file differs from the old one's")
    ratios = [o / n for o, n in zip(old_s, new_s, strict=True)]
    return {
        "old_s": statistics.median(old_s),
        "new_s": statistics.median(new_s),
        "ratio": statistics.median(ratios),
        "old_cpu_s": statistics.median(old_cpu),
        "new_cpu_s": statistics.median(new_cpu),
        "cpu_ratio": statistics.median(o / n for o, n in zip(old_cpu, new_cpu, strict=True)),
        "bytes": len(reference),
    }


# -- stall --------------------------------------------------------------------------------------


def _serve_on_the_loop(ex: LocalExchange) -> None:
    """The old serving: the route builds the file inside the event loop (old builder)."""
    books = ex.wires["bybit-linear"].rest.books  # type: ignore[attr-defined]

    async def fetch(path: str) -> bytes | None:
        key = books.key(path)
        if key is None:
            return None
        return old_book_history_zip(books.formats, *key, books.u_of, tuple(books.restarts()))

    books.fetch = fetch


def bench_stall(market: dict, old: bool) -> dict[str, object]:
    clock = SimulatedClock(f"{DAY + dt.timedelta(days=1)}T00:00:30+00:00", speed=0.0)
    with LocalExchange(market=MarketConfig(**market), clock=clock, faults=Faults()) as ex:
        if old:
            _serve_on_the_loop(ex)

        def get(path: str) -> bytes:
            with urllib.request.urlopen(ex.rest_base_url + path, timeout=600) as r:
                return r.read()

        get("/v5/market/time")
        ex.market.day_trades(SYMBOL, DAY)
        book: dict[str, object] = {}
        path = f"/orderbook/linear/{SYMBOL}/{member_name(SYMBOL, DAY)}.zip"

        def fetch() -> None:
            t0 = time.perf_counter()
            try:
                book["bytes"] = len(get(path))
            except Exception as exc:  # the old serving's cut body
                book["error"] = type(exc).__name__
            book["s"] = time.perf_counter() - t0

        thread = threading.Thread(target=fetch)
        thread.start()
        latencies = []
        while thread.is_alive():
            t0 = time.perf_counter()
            get("/v5/market/time")
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
        thread.join()
    return {
        "book_request_s": round(float(book["s"]), 2),  # type: ignore[arg-type]
        "book": book.get("bytes", book.get("error")),
        "polls": len(latencies),
        "max_rest_s": round(max(latencies), 3),
        "median_rest_ms": round(statistics.median(latencies) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 10 s-step day, one turn")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-stall", action="store_true", help="time the builds only")
    args = ap.parse_args(argv)
    market = dict(DEMO, book_step_ms=10_000) if args.quick else DEMO
    repeat = 1 if args.quick else args.repeat
    print(f"market: {market}")
    build = bench_build(market, repeat)
    print(
        f"build {SYMBOL} {DAY} ({build['bytes']:,} bytes, identical): "
        f"old {build['old_s']:.2f} s, new {build['new_s']:.2f} s, ratio {build['ratio']:.1f}x; "
        f"CPU (all threads) old {build['old_cpu_s']:.2f} s, new {build['new_cpu_s']:.2f} s, "
        f"ratio {build['cpu_ratio']:.1f}x"
    )
    if not args.no_stall:
        for old in (True, False):
            label = "on the event loop (old)" if old else "in a worker thread (new)"
            print(f"stall, build {label}: {bench_stall(market, old)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
