"""The test suite's own time: the fast lane, then the whole suite, as the README runs them.

Each lane is measured by wall time and by the machine's busy and idle CPU-seconds over the run
(``/proc/stat``, https://man7.org/linux/man-pages/man5/proc_stat.5.html). The suite is
CPU-bound, so its wall time on another machine follows the busy CPU-seconds that machine needs,
and two machines of the same size can differ by half again: compare runs on one machine only.
The baseline in the same run is the fast lane (the whole suite's time is given as a ratio to it).

Not in ``run_all.py``: it runs the whole suite, which a benchmark run should not nest.

    python3 benchmarks/suite_time.py [--lanes fast,full] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the README's commands (``tasks.py test`` with and without ``--fast``)
LANES: dict[str, list[str]] = {"fast": ["--fast"], "full": []}
#: /proc/stat's ``cpu`` line counts in USER_HZ, 100 per second on Linux (proc_stat(5))
USER_HZ = 100
#: the fields of the ``cpu`` line that count idle time: idle and iowait (proc_stat(5))
IDLE_FIELDS = (3, 4)
#: user, nice, system, idle, iowait, irq, softirq, steal: guest time is already in user
COUNTED_FIELDS = 8


@dataclass(frozen=True)
class LaneResult:
    lane: str
    returncode: int
    wall_s: float
    busy_cpu_s: float
    idle_cpu_s: float
    counts: dict[str, int]


def cpu_seconds(stat_text: str) -> tuple[float, float]:
    """(busy, idle) CPU-seconds since boot from the text of ``/proc/stat``."""
    first = stat_text.splitlines()[0].split()
    if first[0] != "cpu":
        raise ValueError(f"/proc/stat: expected the 'cpu' line first, got {first[0]!r}")
    ticks = [int(v) for v in first[1 : 1 + COUNTED_FIELDS]]
    idle = sum(ticks[i] for i in IDLE_FIELDS)
    return (sum(ticks) - idle) / USER_HZ, idle / USER_HZ


def summary_counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line (``1689 passed, 4 skipped, 5 warnings in ...``)."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", lines[-1].split(" in ")[0])}


def run_lane(lane: str, extra: list[str]) -> LaneResult:
    """One ``tasks.py test`` lane, its output passed through, measured."""
    stat = Path("/proc/stat")
    busy0, idle0 = cpu_seconds(stat.read_text())
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tasks.py"), "test", *LANES[lane], *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    busy1, idle1 = cpu_seconds(stat.read_text())
    sys.stdout.write(proc.stdout[-3000:])
    sys.stderr.write(proc.stderr[-3000:])
    return LaneResult(
        lane, proc.returncode, wall, busy1 - busy0, idle1 - idle0, summary_counts(proc.stdout)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", default="fast,full", help="comma-separated, of: fast, full")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("extra", nargs="*", help="more pytest arguments, after --")
    args = ap.parse_args(argv)
    lanes = [s.strip() for s in args.lanes.split(",") if s.strip()]
    unknown = sorted(set(lanes) - set(LANES))
    if unknown or not lanes:
        raise SystemExit(f"--lanes: unknown or none {unknown}; known: {sorted(LANES)}")
    if not Path("/proc/stat").exists():
        raise SystemExit("suite_time: needs Linux's /proc/stat for the CPU-seconds")
    results = [run_lane(lane, args.extra) for lane in lanes]
    print("\nsuite_time")
    print(f"{'lane':<6}{'rc':>4}{'wall s':>10}{'busy CPU-s':>12}{'idle CPU-s':>12}  tests")
    for r in results:
        counts = ", ".join(f"{n} {w}" for w, n in r.counts.items())
        print(
            f"{r.lane:<6}{r.returncode:>4}{r.wall_s:>10.1f}{r.busy_cpu_s:>12.1f}"
            f"{r.idle_cpu_s:>12.1f}  {counts}"
        )
    by = {r.lane: r for r in results}
    if {"fast", "full"} <= set(by):
        ratio = by["full"].wall_s / by["fast"].wall_s
        print(f"whole suite / fast lane, wall: {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return max(r.returncode for r in results)


if __name__ == "__main__":
    raise SystemExit(main())
