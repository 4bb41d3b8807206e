"""Reading one dataset of a landed day: streams of the other datasets skipped unparsed, against
the same read parsing every landed frame (the landing reader before ``stream_dataset``).

The landing holds ``--hours`` of one Binance USD-M symbol in the exact combined-stream wire
format at the demo's cadence: a ``@depth@100ms`` diff with 20 levels a side, a
``@markPrice@1s`` and a ``@kline_1m`` update every second, an ``@aggTrade`` every 4 seconds
(about 20,000 trades a day). Trades, candles and funding are read both ways in the same run;
the frames must be equal, the timing is the median of ``--repeat`` reads.

Usage: python benchmarks/landing_read_bench.py [--hours 9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import orjson
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_seconds  # noqa: E402

from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter  # noqa: E402
from petrosa_pipelines.landing import LandingStore, LandingWriter  # noqa: E402
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS  # noqa: E402

SYMBOL = "BTCUSDT"
T0 = 1_704_153_600_000  # 2024-01-02 00:00 UTC
LEVELS = 20


def _frame(stream: str, data: dict) -> bytes:
    return orjson.dumps({"stream": f"{SYMBOL.lower()}@{stream}", "data": data})


def frames(hours: float):
    """(receipt ms, frame) of ``hours`` from T0, in receipt order."""
    for i in range(1, int(hours * 3600) + 1):
        t = T0 + i * 1000
        px = 42_000 + (i % 500) / 10
        if i % 4 == 0:
            yield t + 3, _frame("aggTrade", {
                "e": "aggTrade", "E": t + 1, "a": i // 4, "s": SYMBOL, "p": f"{px:.1f}",
                "q": "0.010", "f": i // 2, "l": i // 2 + 1, "T": t, "m": i % 8 == 0,
            })  # fmt: skip
        minute = t // 60_000 * 60_000
        yield t + 5, _frame("kline_1m", {
            "e": "kline", "E": t, "s": SYMBOL, "k": {
                "t": minute, "T": minute + 59_999, "s": SYMBOL, "i": "1m", "f": 1, "L": 2,
                "o": "42000.0", "c": f"{px:.1f}", "h": "42050.0", "l": "41990.0", "v": "3.500",
                "n": 2, "x": t % 60_000 == 59_000, "q": "147000.0", "V": "1.500",
                "Q": "63000.0", "B": "0",
            },
        })  # fmt: skip
        nxt = (t // (8 * HOUR_MS) + 1) * 8 * HOUR_MS
        yield t + 7, _frame("markPrice@1s", {
            "e": "markPriceUpdate", "E": t, "s": SYMBOL, "p": f"{px:.1f}", "P": f"{px:.1f}",
            "i": f"{px:.1f}", "r": "0.00010000", "T": nxt,
        })  # fmt: skip
        bids = [[f"{px - k / 10:.1f}", f"{(i + k) % 9 + 0.5:.3f}"] for k in range(LEVELS)]
        asks = [[f"{px + 0.1 + k / 10:.1f}", f"{(i + k) % 7 + 0.5:.3f}"] for k in range(LEVELS)]
        yield t + 9, _frame("depth@100ms", {
            "e": "depthUpdate", "E": t, "T": t - 1, "s": SYMBOL, "U": 100 + i,
            "u": 100 + i, "pu": 99 + i, "b": bids, "a": asks,
        })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=9.0, help="landed hours (default 9)")
    ap.add_argument("--repeat", type=int, default=3, help="reads per figure (default 3)")
    args = ap.parse_args(argv)
    if args.hours <= 0 or args.repeat < 1:
        ap.error("--hours must be > 0 and --repeat >= 1")
    with tempfile.TemporaryDirectory(prefix="landing-read-bench-") as tmp:
        root = Path(tmp)
        n = 0
        with LandingWriter(root, "binance", "bench") as writer:
            for recv, payload in frames(args.hours):
                writer.put(recv, payload)
                n += 1
        store = LandingStore(root)
        print(f"landing_read_bench: {n:,} frames, {args.hours:g} h of {SYMBOL} (binance-usdm)")
        print(f"{'dataset':<10}{'rows':>8}{'every frame s':>16}{'own streams s':>16}{'ratio':>8}")
        for dataset in ("trades", "candles", "funding"):

            def read(ds: str = dataset) -> pd.DataFrame:
                return store.read_frame("binance", ds, SYMBOL, T0, T0 + DAY_MS)

            own = read()
            with mock.patch.object(BinanceUsdmAdapter, "stream_dataset", lambda self, s: None):
                every = read()
                base_s = median_seconds(read, args.repeat)
            pd.testing.assert_frame_equal(own, every)  # the same rows either way
            own_s = median_seconds(read, args.repeat)
            print(f"{dataset:<10}{len(own):>8,}{base_s:>16.3f}{own_s:>16.3f}{own_s / base_s:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
