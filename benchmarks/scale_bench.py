"""Scale of the code location as it stands: partitions per asset, runs per day by kind, event-log
rows per day, GraphQL partition-status load time, peak RSS of a big trades day, daemon CPU.

Issue 13 (item 4) and the research note ``scale_and_peers.md`` §A1/§A2 give the targets: one
deployment holds 500 instruments per venue x 5 years for 3 venues within Dagster's guidance of
100,000 partitions per asset, at most 2,000 runs per day for 500 instruments of one venue
(the design before the batched audit: ~1,154 runs per instrument per day), a 10 M-trade day
under 1.5 GB peak RSS, the daemon under 10 % of one core. Each figure is measured against a
baseline or reference in the same run where one exists:

- partitions: the real ``Definitions`` with 500 x 3 instruments in a throwaway instance, the
  partition start 5 years back, against the 100,000 guidance;
- runs: the location's own sensors and schedules ticked over a simulated day against an
  instance in steady state (``scale/runs.py`` says how), for several N, against the old
  design's 1,154 x N;
- GraphQL: ``dagster-webserver`` over N x D materialised trades partitions, the UI's
  partition-health query, cold and warm (``scale/ui_status.py``);
- memory: ``dagster asset materialize`` of one trades instrument-day served by the local
  exchange, against a bare pyarrow read+write of the same rows (``scale/memory.py``);
- daemon: ``dagster-daemon`` over N instruments for a few minutes, CPU from /proc
  (``scale/daemon_cpu.py``).

Every measurement runs in its own process with its own DAGSTER_HOME (SQLite, events in one
table, on tmpfs when /dev/shm exists so fsync does not dominate) and nothing reaches the
internet. ``--quick`` is the smoke size of each, ``--tiny`` the test's: a smoke test, not a
measurement, so its sections run at once (``--jobs``) and its daemon window is a few seconds.

    .venv/bin/python benchmarks/scale_bench.py [--quick | --tiny] [--only partitions,runs,...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "scale"))

from common import (  # noqa: E402
    DAGSTER_PARTITION_GUIDANCE,
    OLD_RUNS_PER_INSTRUMENT_DAY,
    bench_env,
    run_child,
    write_home,
)

from petrosa_pipelines.settings import Settings  # noqa: E402

SECTIONS = ("partitions", "runs", "graphql", "memory", "daemon")
#: the rolling window of day partitions a deployment gets by default
WINDOW_DAYS = str(Settings().daily_window_days)
#: targets of issue 13
RUNS_TARGET_AT_500 = 2_000
RSS_TARGET_MB = 1_536
DAEMON_CPU_TARGET_PCT = 10.0

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "per_venue": 5,
        "list_keys": False,
        "runs_n": [5],
        "hours": 1.0,
        "tick_floor_s": 600.0,
        "gql": [(5, 2)],
        "trades": [10_000],
        "daemon": (5, 0.1, 0.0),
        # a smoke test, not a measurement: every section at once
        "jobs": 6,
    },
    "quick": {
        "per_venue": 500,
        "list_keys": False,
        "runs_n": [20, 100],
        "hours": 6.0,
        "tick_floor_s": 300.0,
        "gql": [(100, 30)],
        "trades": [1_000_000],
        "daemon": (100, 2.0, 60.0),
        "jobs": 1,
    },
    "full": {
        "per_venue": 500,
        "list_keys": True,
        "runs_n": [20, 100, 500],
        "hours": 6.0,
        "tick_floor_s": 300.0,
        "gql": [(500, 30), (500, 365)],
        "trades": [1_000_000, 2_000_000, 5_000_000, 10_000_000],
        "daemon": (500, 5.0, 90.0),
        "jobs": 1,
    },
}


def _scratch() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="scale-bench-", dir=base))


def _child(root: Path, name: str, script: str, args: list[str], timeout: float, **kw) -> dict:
    """One measurement in a fresh home under ``root/name``."""
    where = root / name
    home = write_home(where / "home", **kw)
    return run_child(script, args, bench_env(where, home), timeout)


def _partitions(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    import datetime as dt

    start = dt.datetime.now(tz=dt.UTC).date() - dt.timedelta(days=1825)
    args = ["--per-venue", str(size["per_venue"])]
    args += ["--list-keys"] if size["list_keys"] else []
    out = {}
    # the scheme as configured (rolling window + months), and every day a day partition (the
    # scheme before the window) in the same run: the ratio is the point
    for name, window in (("partitions", WINDOW_DAYS), ("partitions_every_day", "0")):
        home = write_home(root / name / "home")
        extra = {"PETROSA_START_DATE": start.isoformat(), "PETROSA_DAILY_WINDOW_DAYS": window}
        out[name] = run_child("partitions.py", args, bench_env(root / name, home, extra), timeout)
        print(f"{name}:", json.dumps(out[name])[:600], flush=True)
    return out


def _children(
    root: Path, timeout: float, script: str, runs: list[tuple[str, list[str], str]], width: int
) -> list[dict[str, Any]]:
    """``script`` once per (name, args, label), each result printed (cut at ``width``)."""
    out = []
    for name, args, label in runs:
        res = _child(root, name, script, args, timeout)
        out.append(res)
        print(f"{label}:", json.dumps(res)[:width], flush=True)
    return out


def _runs(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    tick = ["--tick-floor-s", str(size["tick_floor_s"])]
    runs = [
        (f"runs{n}", ["--n", str(n), "--hours", str(size["hours"]), *tick], f"runs N={n}")
        for n in size["runs_n"]
    ]
    return {"runs": _children(root, timeout, "runs.py", runs, 800)}


def _graphql(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    runs = [
        (f"gql{n}x{days}", ["--n", str(n), "--days", str(days)], f"graphql N={n} D={days}")
        for n, days in size["gql"]
    ]
    return {"graphql": _children(root, timeout, "ui_status.py", runs, 400)}


def _memory(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    runs = [(f"mem{t}", ["--trades", str(t)], f"memory {t:,} trades") for t in size["trades"]]
    return {"memory": _children(root, timeout, "memory.py", runs, 400)}


def _memory_steps(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    res = memory_steps(max(size["trades"]), root / "memsteps", timeout)
    print("memory steps:", json.dumps(res)[:600], flush=True)
    return {"memory_steps": res}


def _daemon(size: dict[str, Any], root: Path, timeout: float) -> dict[str, Any]:
    n, minutes, warm = size["daemon"]
    args = ["--n", str(n), "--minutes", str(minutes), "--warmup-s", str(warm)]
    res = _child(root, "daemon", "daemon_cpu.py", args, timeout, launch_cap=0)
    print("daemon:", json.dumps(res)[:400], flush=True)
    return {"daemon": res}


#: the measurements of each section, every one in processes of its own
TASKS = {
    "partitions": (_partitions,),
    "runs": (_runs,),
    "graphql": (_graphql,),
    "memory": (_memory, _memory_steps),
    "daemon": (_daemon,),
}
#: the order that lets the longest waits overlap the rest when sections run together
LONGEST_FIRST = ("daemon", "memory", "graphql", "runs", "partitions")


def measure(
    size: dict[str, Any], only: set[str], root: Path, timeout: float, jobs: int = 1
) -> dict[str, Any]:
    """Every task of the ``only`` sections, ``jobs`` at a time (each is its own processes in
    its own directory, so they may overlap; figures are only fair one at a time)."""
    tasks = [t for s in (LONGEST_FIRST if jobs > 1 else SECTIONS) if s in only for t in TASKS[s]]
    if jobs > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(lambda t: t(size, root, timeout), tasks))
    else:
        parts = [t(size, root, timeout) for t in tasks]
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


Row = tuple[str, str, str, str]


def _failed(name: str, r: dict) -> list[Row]:
    return [(name, "FAILED", r["error"].splitlines()[-1][:90], "")] if "error" in r else []


def partition_rows(p: dict, every_day: dict | None = None) -> list[Row]:
    if "error" in p:
        return _failed("partitions", p)
    name = f"partitions per asset, {p['instruments']:,} instruments x 5 y"
    ratio = f"{p['ratio_to_guidance']:.2f}x"
    rows = [(name, _fmt(p["max_per_asset"]), f"{DAGSTER_PARTITION_GUIDANCE:,}", ratio)]
    window = f"  window {p['daily_window_days']} d from {p['daily_start']}"
    rows.append((window + f", {p['history_months']} history months", "", "", ""))
    if every_day and "error" not in every_day:
        old = every_day["max_per_asset"]
        rows.append(
            ("  every day a day partition", _fmt(old), f"{DAGSTER_PARTITION_GUIDANCE:,}",
             f"{old / p['max_per_asset']:.1f}x the window's")
        )  # fmt: skip
    over = f"{p['assets_over_guidance']} of {p['partitioned_assets']}"
    rows.append(("assets over the guidance", over, "0", ""))
    if p.get("list_keys_s") is not None:
        rows.append(("listing every key of one asset (s)", _fmt(p["list_keys_s"]), "", ""))
    return rows


def run_rows(r: dict) -> list[Row]:
    if "error" in r:
        return _failed("runs", r)
    n, total = r["n"], r["runs_per_day"]
    old = OLD_RUNS_PER_INSTRUMENT_DAY * n
    label = f"runs/day, N={n} ({r['hours']:g} h simulated, ticks >= {r['tick_floor_s']:g} s)"
    rows = [(label, _fmt(total), f"old design {old:,}", f"{total / old:.4f}")]
    rows += [(f"  {k}", _fmt(c), "", "") for k, c in sorted(r["runs_per_day_by_kind"].items())]
    rows += [(f"  {k} raised", e[:60], "", "") for k, e in (r.get("errors") or {}).items()]
    if n == 500:
        met = "met" if total <= RUNS_TARGET_AT_500 else "NOT met"
        rows.append(("runs/day at 500 vs target", _fmt(total), f"{RUNS_TARGET_AT_500:,}", met))
    rows.append((f"event-log rows/day, N={n}", _fmt(r["event_rows_per_day"]), "", ""))
    if r.get("eval_s"):
        slow = max(r["eval_s"], key=r["eval_s"].get)
        per = r["eval_s"][slow] / max(1, r["ticks"].get(slow, 1))
        rows.append((f"  slowest tick, N={n}: {slow} (s)", _fmt(per), "sensor interval 30 s", ""))
    return rows


def graphql_rows(g: dict) -> list[Row]:
    if "error" in g:
        return _failed("graphql", g)
    label = f"partition status N={g['n']} D={g['days']}"
    return [
        (label + " cold (s)", _fmt(g["health_cold_s"]), "", ""),
        (label + " warm (s)", _fmt(g["health_warm_s"]), "", ""),
        (label + " response (KB)", _fmt(g["response_kb"]), "", ""),
    ]


def memory_steps(trades: int, where: Path, timeout: float) -> dict:
    """Which steps of the trades day raised the peak (``trades_memory_bench.py``: the same
    fill, lake write, lake read and audit, each step's rise of ``ru_maxrss``)."""
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "trades_memory_bench.py")]
    cmd += ["--trades", str(trades), "--cache", str(where)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"trades_memory_bench: timed out after {timeout:.0f} s"}
    if out.returncode:
        return {"error": out.stderr[-600:]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.pop("steps", None)
    return res


def memory_step_rows(m: dict | None) -> list[Row]:
    if not m:
        return []
    if "error" in m:
        return _failed("memory steps", m)
    ref = f"pyarrow {m['baseline_peak_mb']:,}"
    rows = [(f"  in-process peak {m['trades']:,} trades (MB)", _fmt(m["peak_mb"]), ref,
             f"{m['ratio']}x")]  # fmt: skip
    rows += [("    raised by", r, "", "") for r in m["raised_peak"][:4]]
    return rows


def memory_rows(ms: list[dict]) -> list[Row]:
    rows: list[Row] = []
    ok = []
    for m in ms:
        if "error" in m:
            rows += _failed("memory", m)
        elif m.get("asset_rc"):
            rows.append((f"peak RSS {m['trades']:,} trades", "FAILED", m["asset_error"][-90:], ""))
        elif m.get("rows_written") != m["trades"]:
            why = f"wrote {m.get('rows_written')} of {m['trades']:,} rows"
            rows.append((f"peak RSS {m['trades']:,} trades", "FAILED", why, ""))
        else:
            ok.append(m)
            ref = f"pyarrow {m['baseline_peak_mb']:,}; target {RSS_TARGET_MB:,}"
            rows.append((f"peak RSS {m['trades']:,} trades (MB)", _fmt(m["asset_peak_mb"]), ref,
                         f"{m['ratio']}x"))  # fmt: skip
    if ok and ok[0].get("run_event_rows"):
        rows.append(("event-log rows of one real trades run", _fmt(ok[0]["run_event_rows"]), "",
                     ""))  # fmt: skip
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        slope = (b["asset_peak_mb"] - a["asset_peak_mb"]) / ((b["trades"] - a["trades"]) / 1e6)
        at10 = b["asset_peak_mb"] + slope * (10 - b["trades"] / 1e6)
        rows.append(("  RSS slope (MB per M trades)", _fmt(slope), "", ""))
        if b["trades"] < 10_000_000:
            rows.append(("  RSS at 10 M on that slope (MB)", _fmt(at10), f"{RSS_TARGET_MB:,}", ""))
    return rows


def daemon_rows(d: dict) -> list[Row]:
    if "error" in d:
        return _failed("daemon", d)
    name = f"daemon + code server CPU, N={d['n']} (% core)"
    ref = f"target {DAEMON_CPU_TARGET_PCT}"
    return [(name, _fmt(d["cpu_pct_of_core"]), ref, f"{d['cpu_s_per_min']} s/min")]


def table(res: dict[str, Any]) -> list[Row]:
    """(figure, this code, reference, ratio) rows; a failed measurement shows its error."""
    rows = (
        partition_rows(res["partitions"], res.get("partitions_every_day"))
        if "partitions" in res
        else []
    )
    for r in res.get("runs", []):
        rows += run_rows(r)
    for g in res.get("graphql", []):
        rows += graphql_rows(g)
    rows += memory_rows(res.get("memory", []))
    rows += memory_step_rows(res.get("memory_steps"))
    rows += daemon_rows(res["daemon"]) if "daemon" in res else []
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke sizes (minutes)")
    mode.add_argument("--tiny", action="store_true", help="the test's sizes")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--timeout", type=float, default=3600, help="per measurement, seconds")
    ap.add_argument("--json", default="", help="also write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch instances")
    ap.add_argument("--runs-n", default="", help="override: instrument counts, e.g. 20,100,500")
    ap.add_argument("--hours", type=float, default=0, help="override: simulated hours")
    ap.add_argument("--trades", default="", help="override: trades per day, e.g. 1e6,1e7")
    ap.add_argument("--gql", default="", help="override: NxD pairs, e.g. 500x30,500x365")
    ap.add_argument("--daemon", default="", help="override: N,minutes, e.g. 500,5")
    ap.add_argument("--jobs", type=int, default=0, help="override: measurements run at once")
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()} or set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown section(s) {sorted(unknown)}; known: {list(SECTIONS)}")
    size = dict(SIZES["tiny" if args.tiny else "quick" if args.quick else "full"])
    if args.runs_n:
        size["runs_n"] = [int(x) for x in args.runs_n.split(",")]
    if args.hours:
        size["hours"] = args.hours
    if args.trades:
        size["trades"] = [int(float(x)) for x in args.trades.split(",")]
    if args.gql:
        size["gql"] = [tuple(int(v) for v in x.split("x")) for x in args.gql.split(",")]
    if args.daemon:
        n, minutes = args.daemon.split(",")
        size["daemon"] = (int(n), float(minutes), size["daemon"][2])
    if args.jobs:
        size["jobs"] = args.jobs
    root = _scratch()
    t0 = time.perf_counter()
    try:
        res = measure(size, only, root, args.timeout, size["jobs"])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    rows = table(res)
    head = ("figure", "this code", "reference", "ratio")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print(f"\nscale_bench ({time.perf_counter() - t0:.0f} s)")
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    failed = [r for r in rows if r[1] == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
