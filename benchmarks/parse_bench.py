"""Websocket parse throughput: BinanceUsdmAdapter.parse vs bare orjson.loads on real messages.

Why: ingest must keep up with bursts on many symbols, and a parser much slower than merely
decoding the JSON would be the bottleneck. The messages are the real recorded Binance USD-M
frames from the test fixtures, cycled to ``--n`` messages. Within each repetition the contenders
take turns every 10,000 messages on the same list (so machine noise hits them alike); we report
medians over repetitions and the median of the per-repetition ratios.

Targets: parse >= 100,000 msg/s on both runs, and >= 50% of bare orjson.loads on the aggTrade
run (orjson builds no record, keeps strings as strings and validates nothing). On the mixed run
the orjson ratio is printed for information only: depthUpdate frames (four in five of the mixed
frames) carry ~11 levels, i.e. ~22 Decimals each, and creating a Decimal costs several times
what orjson pays for a str, so no Decimal-exact parser reaches half of orjson on them. For
context, a plain ``json.loads`` + dict access + ``Decimal(str)`` normaliser producing the same
records (without any validation) is timed too.

    .venv/bin/python benchmarks/parse_bench.py           # 1,000,000 messages, 5 repetitions
    .venv/bin/python benchmarks/parse_bench.py --quick   # 100,000 messages, 3 repetitions
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petrosa_pipelines.exchanges.base import (  # noqa: E402
    CandleRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    TradeRecord,
)
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter  # noqa: E402

WS = ROOT / "petrosa_pipelines_tests" / "fixtures" / "binance" / "ws"
MIN_MSG_PER_S = 100_000
MIN_RATIO = 0.5


def _lines(pattern: str) -> list[bytes]:
    return [line for p in sorted(WS.glob(pattern)) for line in p.read_bytes().splitlines()]


def agg_trade_messages() -> list[bytes]:
    return _lines("*/aggTrade.jsonl")


def mixed_messages() -> list[bytes]:
    """aggTrade, kline, depthUpdate and markPriceUpdate frames, shuffled with a fixed seed."""
    msgs = (
        _lines("*/aggTrade.jsonl")
        + _lines("*/kline.jsonl")
        + _lines("*/*depthUpdate*.jsonl")
        + _lines("*/*markPriceUpdate*.jsonl")
    )
    random.Random(0).shuffle(msgs)
    return msgs


def _opt(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def baseline_parse(raw: bytes) -> object:
    """The obvious normaliser: stdlib json, dict access, Decimal(str); no validation."""
    d = json.loads(raw)["data"]
    e = d["e"]
    if e == "aggTrade":
        return TradeRecord(
            "binance", d["s"].upper(), d["a"], Decimal(d["p"]), Decimal(d["q"]),
            d["f"], d["l"], d["T"], d["m"], d["E"], "ws", None,
        )  # fmt: skip
    if e == "depthUpdate":
        return DepthUpdateRecord(
            "binance", d["s"].upper(), d["E"], d.get("T"), d["U"], d["u"], d.get("pu"),
            tuple((Decimal(p), Decimal(q)) for p, q in d["b"]),
            tuple((Decimal(p), Decimal(q)) for p, q in d["a"]),
        )  # fmt: skip
    if e == "kline":
        k = d["k"]
        return CandleRecord(
            "binance", d["s"].upper(), k["i"], k["t"], k["T"], Decimal(k["o"]), Decimal(k["h"]),
            Decimal(k["l"]), Decimal(k["c"]), Decimal(k["v"]), Decimal(k["q"]), k["n"],
            Decimal(k["V"]), Decimal(k["Q"]), k["x"], d["E"], "ws", None,
        )  # fmt: skip
    if e == "markPriceUpdate":
        return MarkPriceRecord(
            "binance", d["s"].upper(), d["E"], Decimal(d["p"]), _opt(d["i"]), _opt(d["P"]),
            _opt(d["r"]), d["T"] or None,
        )  # fmt: skip
    raise ValueError(e)


CHUNK = 10_000


def time_interleaved(
    contenders: dict[str, Callable[[bytes], object]], msgs: list[bytes]
) -> dict[str, float]:
    """msg/s of each contender over ``msgs``, taking turns every CHUNK messages so that load
    from other processes on a shared machine hits every contender alike."""
    elapsed = dict.fromkeys(contenders, 0.0)
    for lo in range(0, len(msgs), CHUNK):
        chunk = msgs[lo : lo + CHUNK]
        for name, fn in contenders.items():
            start = time.perf_counter()
            for m in chunk:
                fn(m)
            elapsed[name] += time.perf_counter() - start
    return {name: len(msgs) / t for name, t in elapsed.items()}


def run(label: str, base: list[bytes], n: int, reps: int, *, ratio_target: bool) -> bool:
    """Time the contenders on ``n`` cycled messages; print the table; True when targets met."""
    msgs = (base * (n // len(base) + 1))[:n]
    parse = BinanceUsdmAdapter().parse
    for m in base:  # same records both ways, and warm caches
        assert parse(m) == baseline_parse(m), m
    contenders: dict[str, Callable[[bytes], object]] = {
        "orjson.loads (bare)": orjson.loads,
        "adapter.parse (msgspec)": parse,
        "json.loads + dict normaliser": baseline_parse,
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for name, rate in time_interleaved(contenders, msgs).items():
            rates[name].append(rate)
    ratios = [
        p / o
        for p, o in zip(rates["adapter.parse (msgspec)"], rates["orjson.loads (bare)"], strict=True)
    ]
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = statistics.median(ratios)
    print(f"\n{label}: {n:,} messages ({len(base)} distinct real frames), {reps} repetitions")
    for name, rate in med.items():
        spread = f"{min(rates[name]):>12,.0f} .. {max(rates[name]):>12,.0f}"
        print(f"  {name:30s} {rate:>12,.0f} msg/s (median; range {spread})")
    base_ratio = med["adapter.parse (msgspec)"] / med["json.loads + dict normaliser"]
    print(f"  parse / orjson ratio (median of per-rep ratios): {ratio:.2f}")
    print(f"  parse / json+dict baseline: {base_ratio:.2f}x")
    ok_rate = med["adapter.parse (msgspec)"] >= MIN_MSG_PER_S
    ok_ratio = ratio >= MIN_RATIO or not ratio_target
    verdict = ("PASS" if ratio >= MIN_RATIO else "FAIL") if ratio_target else "(info only)"
    print(
        f"  target >= {MIN_MSG_PER_S:,} msg/s: {'PASS' if ok_rate else 'FAIL'}; "
        f"target >= {MIN_RATIO:.0%} of orjson: {verdict}"
    )
    return ok_rate and ok_ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 messages, 3 repetitions")
    ap.add_argument("--n", type=int, default=None, help="messages per run (default 1,000,000)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5)")
    args = ap.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (3 if args.quick else 5)
    print(
        f"python {platform.python_version()} msgspec {msgspec.__version__} "
        f"orjson {orjson.__version__} on {platform.machine()}"
    )
    ok = run("aggTrade", agg_trade_messages(), n, reps, ratio_target=True)
    mixed = "mixed aggTrade/kline/depthUpdate/markPrice"
    ok_mixed = run(mixed, mixed_messages(), n, reps, ratio_target=False)
    ok = ok and ok_mixed
    print(f"\nOVERALL: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
