"""Websocket parse throughput on Bybit: BybitLinearAdapter.parse_frame vs bare orjson.loads.

Why: the ingest must keep up with bursts on many symbols on every venue; a parser much slower
than merely decoding the JSON would be the bottleneck. The messages are the real recorded Bybit
v5 linear frames of the test fixtures (``fixtures/bybit/ws/cryptofeed_2026-08-09``), cycled to
``--n`` frames, timed the way ``parse_bench.py`` times Binance: the contenders take turns every
10,000 frames on the same list, medians over repetitions, and the median of per-repetition
ratios.

Bybit frames are heavier than Binance's: a ``publicTrade`` frame carries every fill of one taker
order (3.2 on average here, up to 46), and ``orderbook.200`` deltas ~20 levels, snapshots 400,
each level two ``Decimal``s; so frames/s is reported with records/s, and the orjson ratio is
for information (the Binance targets are about one-record frames).

    .venv/bin/python benchmarks/bybit_parse_bench.py           # 1,000,000 frames, 5 repetitions
    .venv/bin/python benchmarks/bybit_parse_bench.py --quick   # 100,000 frames, 3 repetitions
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.parse_bench import time_interleaved  # noqa: E402
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter  # noqa: E402

WS = ROOT / "petrosa_pipelines_tests" / "fixtures" / "bybit" / "ws" / "cryptofeed_2026-08-09"


def _lines(*names: str) -> list[bytes]:
    return [line for n in names for line in (WS / f"linear_{n}.jsonl").read_bytes().splitlines()]


def trade_messages() -> list[bytes]:
    return _lines("publicTrade")


def mixed_messages() -> list[bytes]:
    """publicTrade, kline, orderbook (deltas only: snapshots are one per subscription) and
    tickers frames as recorded (orderbook deltas are 1,594 of 2,525), shuffled, fixed seed."""
    book = [m for m in _lines("orderbook") if b'"type":"delta"' in m]
    msgs = _lines("publicTrade", "kline", "tickers") + book
    random.Random(0).shuffle(msgs)
    return msgs


def run(label: str, base: list[bytes], n: int, reps: int) -> float:
    """Time the contenders on ``n`` cycled frames; print the table; return the ratio."""
    msgs = (base * (n // len(base) + 1))[:n]
    adapter = BybitLinearAdapter()
    parse_frame = adapter.parse_frame
    records_per_frame = sum(len(parse_frame(m)) for m in base) / len(base)
    contenders: dict[str, Callable[[bytes], object]] = {
        "orjson.loads (bare)": orjson.loads,
        "adapter.parse_frame (msgspec)": parse_frame,
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for name, rate in time_interleaved(contenders, msgs).items():
            rates[name].append(rate)
    ours, bare = rates["adapter.parse_frame (msgspec)"], rates["orjson.loads (bare)"]
    ratio = statistics.median(p / o for p, o in zip(ours, bare, strict=True))
    print(f"\n{label}: {n:,} frames ({len(base)} distinct real frames), {reps} repetitions")
    for name, values in rates.items():
        med, lo, hi = statistics.median(values), min(values), max(values)
        print(f"  {name:32s} {med:>12,.0f} frames/s (range {lo:,.0f} .. {hi:,.0f})")
    print(f"  records per frame: {records_per_frame:.2f} -> "
          f"{statistics.median(ours) * records_per_frame:,.0f} records/s")  # fmt: skip
    print(f"  parse_frame / orjson ratio (median of per-rep ratios): {ratio:.2f}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 frames, 3 repetitions")
    ap.add_argument("--n", type=int, default=None, help="frames per run (default 1,000,000)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5)")
    args = ap.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (3 if args.quick else 5)
    print(
        f"python {platform.python_version()} msgspec {msgspec.__version__} "
        f"orjson {orjson.__version__} on {platform.machine()}"
    )
    run("publicTrade", trade_messages(), n, reps)
    run("mixed publicTrade/kline/orderbook delta/tickers", mixed_messages(), n, reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
