"""What every scale measurement shares: instrument ids, a throwaway DAGSTER_HOME, event counts.

Each measurement runs in its own process (``python benchmarks/scale/<name>.py``) and prints one
JSON line on stdout, so one that fails or runs out of memory does not take the others with it,
and the runs simulation can install its simulated clock before the code location is imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: the venue the steady-state simulation registers (the issue's target: 500 of ONE venue)
SIM_VENUE = "binance-usdm"
#: the venues of the partition count; the third is hypothetical (two are registered today):
#: a dynamic partition is any string, so its keys count the same
COUNT_VENUES = ("binance-usdm", "bybit-linear", "okx-swap")
#: Dagster's recommended ceiling per asset (docs: partitioning-ops; multi.py docstring)
DAGSTER_PARTITION_GUIDANCE = 100_000
#: the old design's run count per instrument per day (research scale_and_peers.md §A2)
OLD_RUNS_PER_INSTRUMENT_DAY = 1_154


def symbols(n: int) -> list[str]:
    """``n`` synthetic perpetual symbols (``S0000USDT`` ...), valid on every registered venue."""
    return [f"S{i:04d}USDT" for i in range(n)]


def instrument_ids(n: int, venue: str = SIM_VENUE) -> list[str]:
    """``<venue>:<SYMBOL>`` ids, the values of the ``symbols`` dynamic partitions."""
    return [f"{venue}:{s}" for s in symbols(n)]


def write_home(home: Path, *, launch_cap: int | None = None) -> Path:
    """A DAGSTER_HOME whose events all live in ONE SQLite table (what PostgreSQL has), so rows
    can be counted; ``launch_cap`` 0 queues runs without ever launching them (daemon CPU)."""
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "run_storage:",
        "  module: dagster._core.storage.runs",
        "  class: SqliteRunStorage",
        "  config:",
        f"    base_dir: {home / 'runs'}",
        "event_log_storage:",
        "  module: dagster._core.storage.event_log",
        "  class: ConsolidatedSqliteEventLogStorage",
        "  config:",
        f"    base_dir: {home / 'events'}",
        "schedule_storage:",
        "  module: dagster._core.storage.schedules",
        "  class: SqliteScheduleStorage",
        "  config:",
        f"    base_dir: {home / 'schedules'}",
        "telemetry:",
        "  enabled: false",
    ]
    if launch_cap is not None:
        lines += [
            "run_coordinator:",
            "  module: dagster._core.run_coordinator",
            "  class: QueuedRunCoordinator",
            "concurrency:",
            "  runs:",
            f"    max_concurrent_runs: {launch_cap}",
        ]
    (home / "dagster.yaml").write_text("\n".join(lines) + "\n")
    return home


def land(root: Path, days: list[Any], syms: list[str]) -> None:
    """One closed landing segment per day holding one aggTrade of every symbol (what the
    window sensor reads to know who traded that day)."""
    from petrosa_pipelines.landing import LandingWriter
    from petrosa_pipelines.lib.timeutil import day_start_ms
    from petrosa_pipelines_tests.test_landing import binance_frames as bf

    for day in days:
        with LandingWriter(root, "binance", "bench") as w:
            t = day_start_ms(day) + 3_600_000
            for i, sym in enumerate(syms):
                w.put(t + 5, bf.agg_trade(sym, i + 1, t))


def event_db(home: Path) -> Path:
    return home / "events" / "event_log.db"


def event_rows(home: Path) -> dict[str, int]:
    """Rows of the event log by event type (the consolidated SQLite table)."""
    db = event_db(home)
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select coalesce(dagster_event_type, 'log'), count(*) from event_logs group by 1"
        ).fetchall()
    return {str(k): int(v) for k, v in rows}


def bench_env(root: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measurement process: its own home, lake and landing zone; the
    exchange endpoints point at a loopback address unless ``extra`` names the local exchange,
    so nothing reaches the internet."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_LAKE_PATH": str(root / "lake"),
        "PETROSA_LANDING_PATH": str(root / "landing"),
        "PETROSA_REST_BASE_URL": "http://127.0.0.1:9",
        "PETROSA_WS_BASE_URL": "ws://127.0.0.1:9",
        "PETROSA_VISION_BASE_URL": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
    }
    env.update(extra or {})
    return env


def run_child(script: str, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``scale/<script>`` and return its last JSON line ({"error": ...} when it failed)."""
    cmd = [sys.executable, str(HERE / script), *args]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{script} {' '.join(args)}: timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            result.setdefault("wall_s", round(wall, 1))
            return result
    tail = (out.stderr or out.stdout)[-1500:]
    return {"error": f"{script} {' '.join(args)}: exit {out.returncode}: {tail}"}


def emit(result: dict[str, Any]) -> None:
    """The one JSON line a measurement process prints last."""
    print(json.dumps(result, default=str), flush=True)
