"""``benchmarks/scale_bench.py`` at its tiny size, so the scale bench cannot rot: every section
runs against the code location as it stands and its figures are consistent with what was set up
(5 instruments per venue, 1 simulated day, a 10,000-trade day). The tiny size runs its
sections at once and the daemon's window closes on its first tick, not on a fixed minute."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_PER_VENUE, TINY_VENUES, TINY_TRADES = 5, 3, 10_000


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
def test_scale_bench_tiny_mode_measures_every_section(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale_bench.py"), "--tiny", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "scale_bench" in proc.stdout and "figure" in proc.stdout

    # partitions: day x instrument, 5 years back to the day counted (the open day) inclusive;
    # the bench names that day, so a run crossing midnight UTC compares like with like
    # the scheme before the rolling window: every day since the start a day partition
    p = res["partitions_every_day"]
    counted_on = dt.date.fromisoformat(p["counted_on"])
    assert abs((dt.datetime.now(tz=dt.UTC).date() - counted_on).days) <= 1
    days = (counted_on - dt.date.fromisoformat(p["start_date"])).days + 1
    n = TINY_PER_VENUE * TINY_VENUES
    assert p["instruments"] == n
    assert p["max_per_asset"] == days * n and p["history_months"] == 0
    assert p["partitioned_assets"] >= 4
    # the default scheme: the window's days x instruments, or months before it x instruments
    w = res["partitions"]
    counted_on = dt.date.fromisoformat(w["counted_on"])
    assert w["daily_start"] == str(counted_on - dt.timedelta(days=w["daily_window_days"] - 1))
    assert 57 <= w["history_months"] <= 60  # 5 years less a window of 8 weeks
    assert w["max_per_asset"] == max(w["daily_window_days"], w["history_months"]) * n
    assert w["max_per_asset"] * 20 < p["max_per_asset"]

    # runs: every sensor and schedule evaluated without raising; yesterday got built for
    # every instrument (at least one requested partition per instrument-day)
    (r,) = res["runs"]
    assert r["errors"] == {}, r["errors"]
    assert sum(r["ticks"].values()) > 0
    assert sum(r["partitions_requested"].values()) >= r["n"]
    assert r["runs_per_day"] == sum(r["runs_per_day_by_kind"].values()) > 0
    assert r["event_rows_per_day"] > 0

    # GraphQL: the webserver saw exactly the materialised instrument-days
    (g,) = res["graphql"]
    assert g["stats"]["numMaterialized"] == g["n"] * g["days"]
    assert g["health_cold_s"] > 0 and g["health_warm_s"] > 0

    # memory: the real asset wrote every trade; it holds more than a bare pyarrow write
    (m,) = res["memory"]
    assert m["asset_rc"] == 0, m["asset_error"]
    assert m["rows_written"] == TINY_TRADES
    assert m["asset_peak_mb"] > m["baseline_peak_mb"] > 0

    # daemon: it ran through the measurement and its CPU was read
    d = res["daemon"]
    assert d["daemon_alive"] and d["cpu_s"] > 0
