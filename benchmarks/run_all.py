"""Run every benchmark in this folder, one process each, and say which ones failed.

Each script measures its own figure against a baseline in the same run (see its docstring);
this runner only sequences them so ``python3 tasks.py bench`` (and ``make bench``) has one
entry point. ``--quick`` passes each script its smallest documented size, for a smoke run.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only parse,ingest]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script -> arguments for a quick run (each script's own smallest documented size)
QUICK_ARGS: dict[str, list[str]] = {
    "parse_bench.py": ["--quick"],
    "ingest_bench.py": ["--quick"],
    "audit_bench.py": ["--rows", "1000000", "--repeat", "1"],
    "analytics_bench.py": ["--trades", "100000", "--repeat", "1"],
    "warehouse_bench.py": ["--rows", "100000", "--repeat", "1"],
    "scale_bench.py": ["--tiny"],
    "nats_bench.py": ["--quick"],
    "book_archive_bench.py": ["--quick"],
    "bybit_parse_bench.py": ["--quick"],
    "trades_memory_bench.py": ["--trades", "200000"],
    "depth_layout_bench.py": ["--cadence-ms", "10000"],
    "compaction_bench.py": ["--instruments", "3", "--repeat", "1"],
    "landing_read_bench.py": ["--hours", "1", "--repeat", "1"],
}


def scripts(only: list[str] | None = None) -> list[Path]:
    """Every ``*_bench.py`` here, or those whose stem (without ``_bench``) is in ``only``."""
    found = sorted(HERE.glob("*_bench.py"))
    if not only:
        return found
    names = {p.stem.removesuffix("_bench"): p for p in found}
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; known: {sorted(names)}")
    return [names[n] for n in only]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smallest documented sizes (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated names, e.g. parse,ingest")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    failed: list[str] = []
    for script in scripts(only):
        extra = QUICK_ARGS.get(script.name, []) if args.quick else []
        print(f"\n=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script), *extra], check=False).returncode
        print(f"=== {script.name}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall benchmarks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
