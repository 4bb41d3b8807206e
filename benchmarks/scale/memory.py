"""Peak RSS of one trades instrument-day materialised through the real asset, against a bare
pyarrow write of the same rows, each in its own process:

    python memory.py --trades 10000000

The local exchange (this process) serves a Binance-shaped day of ``--trades`` aggTrades; the
measured child is ``dagster asset materialize --select market_data/trades`` of the code
location (what the issue measured: 972 MB at 2 M trades), so the asset's checks run as in a
window run. The baseline child reads the lake file that run wrote and writes it again with
pyarrow: the least a materialisation of these rows must hold. Each child is wrapped so its
own ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that child's peak alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import bench_env, emit, event_rows, write_home

DAY = "2024-03-02"
SYMBOL = "BTCUSDT"
WRAP = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(rc.stderr[-3000:] if rc.returncode else '', file=sys.stderr)\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print({'rc': rc.returncode, 'maxrss_kb': r.ru_maxrss, 's': time.perf_counter() - t,"
    " 'cpu_s': r.ru_utime + r.ru_stime})\n"
)
BASELINE = (
    "import sys, pyarrow.parquet as pq\n"
    "t = pq.read_table(sys.argv[1])\n"
    "pq.write_table(t, sys.argv[2])\n"
    "print(t.num_rows)\n"
)


def peak(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WRAP, *cmd], env=env, capture_output=True, text=True, timeout=timeout
    )
    line = out.stdout.strip().splitlines()[-1]
    res = eval(line, {})  # noqa: S307 - our own wrapper's dict literal
    if res["rc"]:
        res["stderr"] = out.stderr[-1500:]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=10_000_000)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig

    # inside the measurement's own directory when the bench gives one (it removes it after;
    # on tmpfs there, so fsync does not dominate), else a temp directory of its own
    home_env = os.environ.get("DAGSTER_HOME")
    parent = Path(home_env).parent if home_env else None
    root = Path(tempfile.mkdtemp(prefix="scale-mem-", dir=parent))
    home = write_home(root / "home")
    market = MarketConfig(seed=3, symbols=(SYMBOL,), trades_per_day=args.trades)
    with LocalExchange(market=market, host="127.0.0.1", port=0) as ex:
        env = bench_env(
            root,
            home,
            {
                "PETROSA_REST_BASE_URL": ex.rest_base_url,
                "PETROSA_WS_BASE_URL": ex.ws_base_url,
                "PETROSA_VISION_BASE_URL": ex.vision_base_url,
                "PETROSA_SYMBOLS": SYMBOL,
                # a fixed past day, a day partition whatever the date (no rolling window)
                "PETROSA_DAILY_WINDOW_DAYS": "0",
                # the local exchange builds a 10 M-trade archive on request: minutes on a
                # loaded machine, longer than a real venue's first byte
                "PETROSA_REST_TIMEOUT_SECONDS": "900",
                "PETROSA_REST_DEADLINE_SECONDS": "1800",
            },
        )
        key = f"{DAY}|binance-usdm:{SYMBOL}"
        reg = (
            "import dagster as dg; dg.DagsterInstance.get()"
            ".add_dynamic_partitions('symbols', ['binance-usdm:" + SYMBOL + "'])"
        )
        subprocess.run([sys.executable, "-c", reg], env=env, check=True)
        dagster = str(Path(sys.executable).parent / "dagster")
        cmd = [dagster, "asset", "materialize", "-m", "petrosa_pipelines.definitions"]
        cmd += ["--select", "market_data/trades", "--partition", key]
        t0 = time.perf_counter()
        asset = peak(cmd, env, args.timeout)
        asset_wall = time.perf_counter() - t0
        run_rows = event_rows(home)  # one real run: its steps, logs, checks, materialisation
    files = sorted((root / "lake").rglob("*.parquet"))
    files = [f for f in files if "trades" in str(f)]
    base: dict = {"error": "the materialisation wrote no trades file"}
    rows = None
    if files:
        out = root / "baseline.parquet"
        base = peak([sys.executable, "-c", BASELINE, str(files[0]), str(out)], env, args.timeout)
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(files[0]).metadata.num_rows
    emit(
        {
            "trades": args.trades,
            "rows_written": rows,
            "asset_peak_mb": round(asset["maxrss_kb"] / 1024),
            "asset_s": round(asset["s"], 1),
            "asset_cpu_s": round(asset["cpu_s"], 1),
            "asset_wall_s": round(asset_wall, 1),
            "asset_rc": asset["rc"],
            "asset_error": asset.get("stderr", ""),
            "baseline_peak_mb": round(base.get("maxrss_kb", 0) / 1024),
            "baseline_s": round(base.get("s", 0), 1),
            "ratio": round(asset["maxrss_kb"] / base["maxrss_kb"], 2)
            if base.get("maxrss_kb")
            else None,
            "run_event_rows": sum(run_rows.values()),
            "run_event_rows_by_type": run_rows,
            "lake_files": [str(f.relative_to(root)) for f in files],
            "note": json.dumps({"day": DAY, "symbol": SYMBOL}),
        }
    )


if __name__ == "__main__":
    main()
