"""Rows, bytes, read time and read memory of one depth instrument-day, v1 against v2:

    python benchmarks/depth_layout_bench.py [--levels 20] [--cadence-ms 1000] [--symbol BTCUSDT]

The day is the local exchange's BTCUSDT book (the demo's market: the same generator that
serves its websocket books), sampled every ``--cadence-ms`` at the top ``--levels`` per side,
as the ingest lands it. It is written once as depth v2 (one row per snapshot, list columns,
``catalog/depth_layout.py``) and once as v1 (one row per snapshot, side and level, the layout
before issue 13), both through ``lake.write_parquet``. Each file is then read in a fresh process
(peak RSS of that process alone): v2 through ``lake.read_parquet_frame``, v1 by bare pyarrow
into pandas (what reading it cost before), and v1 through ``read_parquet_frame`` (what an old
file costs now: read and turned into v2). Prints one JSON line with the ratios v1 / v2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DAY = dt.date(2024, 3, 2)
_OURS = "from petrosa_pipelines.lake import read_parquet_frame as r"
#: (imports, the read): imports are not timed
READ = {
    "v2": (_OURS, "f = r(sys.argv[1])"),
    "v1_raw": ("import pyarrow.parquet as pq", "f = pq.read_table(sys.argv[1]).to_pandas()"),
    "v1_as_v2": (_OURS, "f = r(sys.argv[1])"),
}
#: the child's own peak: ``VmHWM`` belongs to the address space ``exec`` made (``ru_maxrss``
#: of a child carries the parent's peak over exec)
CHILD = (
    "import sys, time\n{imports}\nimport pandas\nt0 = time.perf_counter()\n{read}\n"
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "print(time.perf_counter() - t0, len(f), int(hwm.split()[1]) / 1024)\n"
)


def day_frame(symbol: str, levels: int, cadence_ms: int) -> pd.DataFrame:
    """A day of ``symbol``'s book as depth v2, from the local exchange's market."""
    from petrosa_pipelines.catalog.depth_layout import from_matrix
    from petrosa_pipelines.catalog.schemas import DEPTH, conform
    from petrosa_pipelines.local_exchange import MarketConfig
    from petrosa_pipelines.local_exchange.generator import MarketGenerator

    gen = MarketGenerator(MarketConfig(seed=7, symbols=(symbol,), book_levels=100))
    spec = gen.spec(symbol)
    start = int(dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC).timestamp() * 1000)
    times = start + np.arange(0, 86_400_000, cadence_ms, dtype=np.int64)
    steps = times // gen.book_step_ms
    bid_t, bid_q, ask_t, ask_q = gen.book_levels(symbol, steps, levels)
    tick = 10.0**-spec.price_decimals
    lot = 10.0**-spec.qty_decimals
    bp, bq = from_matrix(np.round(bid_t * spec.tick_units * tick, 10), np.round(bid_q * lot, 10))
    ap, aq = from_matrix(np.round(ask_t * spec.tick_units * tick, 10), np.round(ask_q * lot, 10))
    t = pd.to_datetime(times, unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "snapshot_time": t,
            "last_update_id": steps,
            "bid_price": bp,
            "bid_quantity": bq,
            "ask_price": ap,
            "ask_quantity": aq,
            "source": "ws",
            "received_at": t + pd.Timedelta(milliseconds=3),
        }
    )
    return conform(frame, DEPTH)


def read_in_child(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(imports=READ[kind][0], read=READ[kind][1]), str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {"read_s": float(out[0]), "rows": int(out[1]), "peak_rss_mb": float(out[2])}


def main(argv: list[str] | None = None) -> dict:
    from petrosa_pipelines.catalog.depth_layout import to_long
    from petrosa_pipelines.lake import write_parquet

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=20)
    parser.add_argument("--cadence-ms", type=int, default=1000)
    parser.add_argument("--symbol", default="BTCUSDT")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    v2 = day_frame(args.symbol, args.levels, args.cadence_ms)
    v1 = to_long(v2)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"v2": Path(tmp) / "v2.parquet", "v1": Path(tmp) / "v1.parquet"}
        write_s = {}
        for name, frame in (("v2", v2), ("v1", v1)):
            t0 = time.perf_counter()
            write_parquet(frame, paths[name])
            write_s[name] = time.perf_counter() - t0
        size = {k: os.path.getsize(p) for k, p in paths.items()}
        reads = {
            "v2": read_in_child("v2", paths["v2"]),
            "v1_raw": read_in_child("v1_raw", paths["v1"]),
            "v1_as_v2": read_in_child("v1_as_v2", paths["v1"]),
        }
    result = {
        "day": DAY.isoformat(),
        "levels": args.levels,
        "cadence_ms": args.cadence_ms,
        "build_s": round(build_s, 2),
        "rows": {"v1": len(v1), "v2": len(v2), "ratio_v1_over_v2": round(len(v1) / len(v2), 1)},
        "bytes": {**size, "ratio_v1_over_v2": round(size["v1"] / size["v2"], 2)},
        "write_s": {k: round(v, 3) for k, v in write_s.items()},
        "read": reads,
        "read_time_ratio_v1_raw_over_v2": round(
            reads["v1_raw"]["read_s"] / reads["v2"]["read_s"], 2
        ),
        "read_rss_ratio_v1_raw_over_v2": round(
            reads["v1_raw"]["peak_rss_mb"] / reads["v2"]["peak_rss_mb"], 2
        ),
        # 500 instruments x 5 years x 3 venues at this instrument-day's size
        "projected_tb_500x5yx3": {
            k: round(size[k] * 500 * 1826 * 3 / 1e12, 2) for k in ("v1", "v2")
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
