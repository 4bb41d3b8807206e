"""Where the memory of one trades instrument-day goes, step by step, in one process:

    python benchmarks/trades_memory_bench.py --trades 10000000 [--dagster]

A Binance-shaped aggTrades archive of ``--trades`` rows is written once (numpy, cached under
the temp directory) and served by an in-process archive client that runs the real parse
(``vision.extract_csv`` + ``parse_agg_trades_csv``). The day is then built as a run builds it:
the fill (``materialise_partition``), the lake write (``LakeIOManager``), the lake read of the
trades audit and its evaluation (``evaluate_dataset``, GX included). ``--dagster`` runs the same
through ``dg.materialize`` (asset and its audit check, in-process executor) instead.

Each named step records how far it raised the process's peak RSS (``ru_maxrss``: a high-water
mark, so the step that raises it is exactly the one that set the peak). A second process
reads the written file and writes it again with bare pyarrow: the baseline of the same rows.
Prints one JSON line. ``benchmarks/scale/memory.py`` measures the same through the dagster CLI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

DAY = dt.date(2024, 3, 2)
SYMBOL = "BTCUSDT"
BASELINE = (
    "import sys, pyarrow.parquet as pq\n"
    "t = pq.read_table(sys.argv[1])\n"
    "pq.write_table(t, sys.argv[2])\n"
)
#: a child started by this (large) process inherits its peak; the baseline runs as a
#: grandchild of a small wrapper, whose RUSAGE_CHILDREN is then the baseline's alone
WRAP = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STEPS: list[dict] = []
_DEPTH = [0]


def step(name: str):
    """Wrap a function so each call records RSS and how far it raised the peak."""

    def deco(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            before, rss0 = peak_mb(), rss_mb()
            _DEPTH[0] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _DEPTH[0] -= 1
                after = peak_mb()
                STEPS.append(
                    {
                        "step": name,
                        "depth": _DEPTH[0],
                        "rss_in_mb": round(rss0),
                        "rss_out_mb": round(rss_mb()),
                        "peak_mb": round(after),
                        "raised_peak_mb": round(after - before),
                        "s": round(time.perf_counter() - t, 2),
                    }
                )

        return inner

    return deco


def archive_zip(n: int, root: Path) -> Path:
    """A Vision-shaped aggTrades zip of ``n`` consecutive trades spread over ``DAY``."""
    path = root / f"aggtrades-{SYMBOL}-{DAY}-{n}.zip"
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from petrosa_pipelines.lib.timeutil import day_window_ms

    rng = np.random.default_rng(7)
    start, end = day_window_ms(DAY)
    times = np.sort(rng.integers(start, end, n))
    ids = np.arange(1_000_000_000, 1_000_000_000 + n, dtype=np.int64)
    extra = rng.integers(0, 3, n)
    last = 3_000_000_000 + np.cumsum(extra + 1)
    first = last - extra
    price = np.round(60_000 + np.cumsum(rng.normal(0, 0.5, n)), 1)
    qty = np.round(rng.exponential(0.05, n) + 0.001, 3)
    table = pa.table(
        {
            "agg_trade_id": ids,
            "price": price,
            "quantity": qty,
            "first_trade_id": first,
            "last_trade_id": last,
            "transact_time": times,
            "is_buyer_maker": rng.random(n) < 0.5,
        }
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="none"))
    name = f"{SYMBOL}-aggTrades-{DAY}"
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{name}.csv", buf.getvalue())
    tmp.replace(path)
    return path


class FileArchive:
    """The archive client's ``daily_agg_trades`` over one local zip (the real parse)."""

    def __init__(self, path: Path):
        self.path = path

    def daily_agg_trades(self, symbol: str, day: dt.date):
        from petrosa_pipelines.exchanges.binance import vision

        zipped = step("archive_download")(self.path.read_bytes)()
        parse = step("archive_parse")(vision.parse_agg_trades_csv)
        if hasattr(vision, "csv_stream"):  # the client streams the CSV out of the zip
            with vision.csv_stream(zipped, str(self.path)) as csv:
                return parse(csv, symbol)
        return parse(step("archive_unzip")(vision.extract_csv)(zipped, str(self.path)), symbol)


class Port:
    """An exchange port whose archive is ``FileArchive`` and whose REST is unreachable."""

    def __init__(self, archive: FileArchive):
        from resources import ExchangeResource

        self.real = ExchangeResource(
            rest_base_url="http://127.0.0.1:9",
            ws_base_url="ws://127.0.0.1:9",
            vision_base_url="http://127.0.0.1:9",
        )
        self._archive = archive

    def settings(self):
        return self.real.settings()

    def rest(self, venue=None):
        return self.real.rest(venue)

    def archive(self, venue=None):
        return self._archive


def instrument() -> None:
    """Label the steps of the fill, the lake write and read, and the audit."""
    import petrosa_pipelines.checks.definitions as cdefs
    import petrosa_pipelines.lake as lake
    import petrosa_pipelines.market_data.assets as assets
    import petrosa_pipelines.market_data.fill as fill
    import petrosa_pipelines.market_data.sources as sources

    for mod, names in (
        (fill, ("conform", "split_valid", "dedup")),
        (assets, ("fill_partition", "output_metadata", "refuse_to_shrink")),
        (sources, ("check_day", "trade_edges_reached", "_without_receipt_time")),
        (lake, ("frame_to_parquet_bytes",)),
        (cdefs, ("evaluate_dataset", "audit_dataset", "gx_outcome", "read_partition")),
    ):
        for name in names:
            if hasattr(mod, name):
                setattr(mod, name, step(name)(getattr(mod, name)))
    spec_cls = fill.DatasetSpec
    from petrosa_pipelines.market_data.datasets import TradesSpec

    for cls in (spec_cls, TradesSpec):
        for name in ("implied_coverage", "intrinsic_gaps", "missing", "in_window", "keep_rows"):
            if name in cls.__dict__:
                setattr(cls, name, step(f"spec.{name}")(cls.__dict__[name]))
    lake.Lake.read_frame = step("lake.read_frame")(lake.Lake.read_frame)
    lake.Lake.write_frame = step("lake.write_frame")(lake.Lake.write_frame)


def run_steps(port: Port, lake_dir: Path) -> Path:
    """The run's steps called directly: fill, lake write, lake read, audit."""
    import gc

    from petrosa_pipelines.checks.definitions import evaluate_dataset
    from petrosa_pipelines.checks.settings import audit_settings
    from petrosa_pipelines.lake import LocalLake, lake_path
    from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition

    pk = f"{DAY}|binance-usdm:{SYMBOL}"
    frame, meta = step("materialise_partition")(materialise_partition)(
        "trades", pk, MarketDataConfig(), port, None
    )
    rel = lake_path("market_data/trades", "binance", SYMBOL, DAY.isoformat())
    lake = LocalLake(lake_dir)
    lake.write_frame(rel, frame)
    del frame, meta
    gc.collect()
    frame = lake.read_frame(rel)
    from petrosa_pipelines.catalog.schemas import CANDLES

    results, quality = evaluate_dataset(
        "trades",
        frame,
        pk,
        now_ms=int(time.time() * 1000),
        settings=audit_settings(),
        candles=CANDLES.empty_frame(),
    )
    assert all(r.passed for r in results), [r.check_name for r in results if not r.passed]
    return lake_dir / rel


def run_dagster(port: Port, lake_dir: Path) -> Path:
    """The asset and its audit check through ``dg.materialize`` (in-process executor)."""
    import dagster as dg

    from petrosa_pipelines.checks.definitions import build_dataset_check
    from petrosa_pipelines.market_data.assets import trades
    from resources import LakeIOManager, LandingResource

    pk = f"{DAY}|binance-usdm:{SYMBOL}"
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("symbols", [f"binance-usdm:{SYMBOL}"])
    res = dg.materialize(
        [trades, build_dataset_check("trades")],
        partition_key=pk,
        instance=inst,
        resources={
            "exchange": port,
            "landing": LandingResource(root=str(lake_dir.parent / "landing")),
            "io_manager": LakeIOManager(base_path=str(lake_dir)),
        },
    )
    assert res.success
    return next(lake_dir.rglob("*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=10_000_000)
    ap.add_argument("--dagster", action="store_true")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "trades-memory-bench"))
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / f"aggtrades-{SYMBOL}-{DAY}-{args.trades}.zip").exists():
        # built in a child, so this process's peak is the run's alone
        subprocess.run(
            [sys.executable, __file__, "--build-only", str(args.trades), str(cache)], check=True
        )
    zpath = archive_zip(args.trades, cache)
    import petrosa_pipelines.definitions  # noqa: F401 - the code location, as a run loads it

    instrument()
    from petrosa_pipelines.checks.gx import runner

    runner()  # GX's context: imported by every audit, once per process
    base_rss = rss_mb()
    work = Path(tempfile.mkdtemp(prefix="trades-mem-"))
    t = time.perf_counter()
    port = Port(FileArchive(zpath))
    out = (run_dagster if args.dagster else run_steps)(port, work / "lake")
    total_s = time.perf_counter() - t
    asset_peak = peak_mb()
    base = subprocess.run(
        [sys.executable, "-c", WRAP, sys.executable, "-c", BASELINE, str(out), str(work / "b.pq")],
        capture_output=True,
        text=True,
        check=True,
    )
    baseline_mb = int(base.stdout.strip().splitlines()[-1]) / 1024
    import pyarrow.parquet as pq

    raising = sorted(
        (s for s in STEPS if s["raised_peak_mb"] > 0), key=lambda s: -s["raised_peak_mb"]
    )
    print(
        json.dumps(
            {
                "trades": args.trades,
                "mode": "dagster" if args.dagster else "steps",
                "rows_written": pq.ParquetFile(out).metadata.num_rows,
                "base_rss_mb": round(base_rss),
                "peak_mb": round(asset_peak),
                "baseline_peak_mb": round(baseline_mb),
                "ratio": round(asset_peak / baseline_mb, 2),
                "s": round(total_s, 1),
                "steps": STEPS,
                "raised_peak": [
                    f"{s['step']}:+{s['raised_peak_mb']} (to {s['peak_mb']})" for s in raising
                ],
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--build-only":
        archive_zip(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
