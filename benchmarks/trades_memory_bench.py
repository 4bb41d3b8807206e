"""Where the memory of one trades instrument-day goes, step by step, in one process:

    python benchmarks/trades_memory_bench.py --trades 10000000 [--dagster | --rerun]

A Binance-shaped aggTrades archive of ``--trades`` rows is written once (numpy, cached under
the temp directory) and served by the real Vision client (``VisionArchiveClient``) whose
verified download is that file, so its ``daily_agg_trades`` streams and parses it as a run
does. The day is then built as a run builds it: the fill (``materialise_partition``), the lake
write (``LakeIOManager``), the lake read of the trades audit and its evaluation
(``evaluate_dataset``, GX included). ``--dagster`` runs the same through ``dg.materialize``
(asset and its audit check, in-process executor) instead.

Each named step records how far it raised the process's peak RSS (``ru_maxrss``: a high-water
mark, so the step that raises it is exactly the one that set the peak). ``phase_peak_mb`` is
the peak of each phase alone (the kernel's high-water mark reset before it): the asset step
(fill and lake write) and the check step (lake read and audit) run in processes of their own
under Dagster's default executor, so each is what its process would reach. A second process
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
import shutil
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


def reset_hwm() -> bool:
    """Reset the kernel's high-water mark of this process's RSS to its current RSS (Linux:
    ``clear_refs`` 5). ``ru_maxrss`` is reset with it: the lifetime peak is the phases'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_mb() -> float | None:
    """``VmHWM``: the peak RSS since the last ``reset_hwm`` (None where unreadable)."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


PHASES: dict[str, float | None] = {}


class phase:
    """Record the peak RSS of the ``with`` body alone in ``PHASES[name]``."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.ok = reset_hwm()

    def __exit__(self, *exc: object) -> None:
        hwm = hwm_mb() if self.ok else None
        PHASES[self.name] = round(hwm) if hwm is not None else None


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


def file_archive(path: Path):
    """The real Vision client (its ``daily_agg_trades``: the zip's CSV streamed into the real
    parse) whose verified download is ``path``'s bytes."""
    from petrosa_pipelines.exchanges.binance.vision import VisionArchiveClient
    from petrosa_pipelines.lib.endpoints import RestSettings

    class FileArchive(VisionArchiveClient):
        def fetch_verified(self, _: str) -> bytes:
            return step("archive_download")(path.read_bytes)()

    return FileArchive("http://127.0.0.1:9", RestSettings())


class Port:
    """An exchange port whose archive is ``file_archive``'s and whose REST is unreachable."""

    def __init__(self, archive):
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
    import petrosa_pipelines.exchanges.binance.vision as vision
    import petrosa_pipelines.lake as lake
    import petrosa_pipelines.market_data.assets as assets
    import petrosa_pipelines.market_data.fill as fill
    import petrosa_pipelines.market_data.sources as sources

    for mod, names in (
        (vision, ("parse_agg_trades_csv", "_read_csv", "_archive_frame")),
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
    for cls in (lake.Lake, lake.LocalLake):
        for name in ("read_frame", "write_frame"):
            if name in cls.__dict__:
                setattr(cls, name, step(f"{cls.__name__}.{name}")(cls.__dict__[name]))


def run_steps(port: Port, lake_dir: Path, rerun: bool = False) -> Path:
    """The run's steps called directly: fill, lake write, lake read, audit; with ``rerun``,
    the asset step again over the day the lake now holds (its rows the fill's last source)."""
    import gc

    from petrosa_pipelines.catalog.schemas import CANDLES
    from petrosa_pipelines.checks.definitions import evaluate_dataset
    from petrosa_pipelines.checks.settings import audit_settings
    from petrosa_pipelines.lake import LocalLake, lake_path
    from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition

    pk = f"{DAY}|binance-usdm:{SYMBOL}"
    rel = lake_path("market_data/trades", "binance", SYMBOL, DAY.isoformat())
    lake = LocalLake(lake_dir)
    with phase("asset_step"):
        frame, meta = step("materialise_partition")(materialise_partition)(
            "trades", pk, MarketDataConfig(), port, None
        )
        lake.write_frame(rel, frame)
        del frame, meta
        gc.collect()
    with phase("check_step"):
        frame = lake.read_frame(rel)
        results, quality = evaluate_dataset(
            "trades",
            frame,
            pk,
            now_ms=int(time.time() * 1000),
            settings=audit_settings(),
            candles=CANDLES.empty_frame(),
        )
    assert all(r.passed for r in results), [r.check_name for r in results if not r.passed]
    if rerun:
        del frame, results, quality
        gc.collect()
        with phase("rerun_asset_step"):
            rematerialise(port, lake_dir, pk, rel)
    return lake_dir / rel


def rematerialise(port: Port, lake_dir: Path, pk: str, rel: str) -> None:
    """The asset step of a re-run: the kept partition as the asset takes it
    (``assets.previous_partition``, through the IO manager), the fill, the shrink guard and
    the lake write."""
    from types import SimpleNamespace

    from petrosa_pipelines.lake import LocalLake
    from petrosa_pipelines.market_data import assets
    from resources import LakeIOManager

    io_manager = LakeIOManager(base_path=str(lake_dir))
    context = SimpleNamespace(resources=SimpleNamespace(io_manager=io_manager), partition_key=pk)
    previous = step("previous_partition")(assets.previous_partition)(context, "trades")
    frame, meta = step("rematerialise_partition")(assets.materialise_partition)(
        "trades", pk, assets.MarketDataConfig(), port, None, previous=previous
    )
    assert meta["kept_rows"] == 0 and len(frame) == len(previous), meta
    del previous
    LocalLake(lake_dir).write_frame(rel, frame)


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
    ap.add_argument(
        "--rerun",
        action="store_true",
        help="then materialise the day again over the lake's copy (steps mode)",
    )
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
    port = Port(file_archive(zpath))
    if args.dagster:
        out = run_dagster(port, work / "lake")
    else:
        out = run_steps(port, work / "lake", rerun=args.rerun)
    total_s = time.perf_counter() - t
    # the lifetime peak: the phases' resets of the high-water mark also reset ``ru_maxrss``
    asset_peak = max([peak_mb(), *(v for v in PHASES.values() if v is not None)])
    base = subprocess.run(
        [sys.executable, "-c", WRAP, sys.executable, "-c", BASELINE, str(out), str(work / "b.pq")],
        capture_output=True,
        text=True,
        check=True,
    )
    baseline_mb = int(base.stdout.strip().splitlines()[-1]) / 1024
    import pyarrow.parquet as pq

    rows_written = pq.ParquetFile(out).metadata.num_rows
    shutil.rmtree(work)  # the day's lake file and its baseline copy: GBs at full size

    raising = sorted(
        (s for s in STEPS if s["raised_peak_mb"] > 0), key=lambda s: -s["raised_peak_mb"]
    )
    print(
        json.dumps(
            {
                "trades": args.trades,
                "mode": "dagster" if args.dagster else ("steps+rerun" if args.rerun else "steps"),
                "rows_written": rows_written,
                "base_rss_mb": round(base_rss),
                "peak_mb": round(asset_peak),
                "phase_peak_mb": PHASES,
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
