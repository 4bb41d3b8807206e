"""PETROSA_START_DATE decides the partitions' first day (it was validated but never used).

The partitions definition is fixed when the code location loads, so the end-to-end test loads
it in a fresh interpreter with the setting, as ``dagster dev`` would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from petrosa_pipelines.market_data.partitions import partitions_start
from petrosa_pipelines.settings import SettingError
from petrosa_pipelines_tests.tmpfs import tmpfs_dir

ROOT = Path(__file__).resolve().parents[2]

MATERIALISE_A_2021_DAY = """
import json
import dagster as dg
from petrosa_pipelines.definitions import defs
from petrosa_pipelines.market_data.partitions import PARTITIONS_START, daily_partitions

job = defs.resolve_job_def("market_data_job")
with dg.DagsterInstance.get() as instance:
    instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    result = job.execute_in_process(
        partition_key="2021-03-01|BTCUSDT", instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey(["market_data", "depth"])],
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    mats = result.asset_materializations_for_node("market_data__depth") if result.success else []
analytics = defs.resolve_assets_def(["analytics", "volatility"]).partitions_def
print(json.dumps({
    "start": PARTITIONS_START,
    "first_day": daily_partitions.get_first_partition_key(),
    "analytics_first": str(analytics.get_partitions_def_for_dimension("date").start.date()),
    "success": result.success,
    "depth": {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()
              if k in ("dagster/row_count", "landed_coverage", "not_applicable", "note")}
             if mats else None,
}))
"""


@pytest.mark.slow  # a fresh interpreter loads the code location
def test_a_2021_day_materialises_when_the_start_date_says_so():
    # the instance and the lake on tmpfs: under a loaded suite the run's SQLite fsyncs queued
    # behind every other test's disk writes (petrosa_pipelines_tests.tmpfs)
    with tmpfs_dir("petrosa-start-date-") as scratch:
        _a_2021_day_materialises(scratch)


def _a_2021_day_materialises(scratch: Path) -> None:
    home = scratch / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_START_DATE": "2021-01-01",
        "PETROSA_LAKE_PATH": str(scratch / "lake"),
        "PETROSA_LANDING_PATH": str(scratch / "landing"),
    }
    out = subprocess.run(
        [sys.executable, "-c", MATERIALISE_A_2021_DAY],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["start"] == report["first_day"] == "2021-01-01"
    assert report["analytics_first"] == "2021-01-01"  # one owner: every layer follows
    assert report["success"], out.stderr[-3000:]
    depth = report["depth"]
    assert depth["dagster/row_count"] == 0
    # no book history exists and nothing landed: the partition says it is empty by necessity
    assert depth["landed_coverage"] == "none"
    assert depth["not_applicable"].startswith("not applicable")
    assert "cannot be backfilled" in depth["note"]
    assert (scratch / "lake/market_data/depth/binance/BTCUSDT/2021-03-01.parquet").is_file()


def test_start_date_defaults_and_is_validated():
    today = dt.date(2026, 12, 1)
    assert partitions_start({}, today=today) == "2024-01-01"
    assert partitions_start({"PETROSA_START_DATE": "2021-01-01"}, today=today) == "2021-01-01"
    # only this setting is read: a bad unrelated one does not break every import
    assert partitions_start({"PETROSA_REST_MAX_RETRIES": "x"}, today=today) == "2024-01-01"
    with pytest.raises(SettingError, match="PETROSA_START_DATE='2021-13-01'"):
        partitions_start({"PETROSA_START_DATE": "2021-13-01"}, today=today)
    with pytest.raises(SettingError, match="PETROSA_START_DATE='2027-01-01'.*not after today"):
        partitions_start({"PETROSA_START_DATE": "2027-01-01"}, today=today)
