"""A backfill of 3 days x 2 symbols launched through Dagster completes (real daemon, real runs)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from petrosa_pipelines.definitions import defs
from petrosa_pipelines.instance import instance_yaml
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, FUNDING_KEY, TRADES_KEY

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2024-02-10", "2024-02-11", "2024-02-12"]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.mark.slow
def test_backfill_of_three_days_two_symbols_completes(local_exchange, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml({}))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_REST_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": local_exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": local_exchange.vision_base_url,
        "PETROSA_LAKE_PATH": str(tmp_path / "lake"),
        "PETROSA_LANDING_PATH": str(tmp_path / "landing"),
        # no ingest group: this test is about the backfill, and an ingest run would outlive it
        "PETROSA_INGEST_GROUPS": "[]",
    }
    keys = [f"{d}|{s}" for d in DAYS for s in SYMBOLS]
    selection = [CANDLES_KEY, TRADES_KEY, FUNDING_KEY]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", SYMBOLS)
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="petrosatest",
            asset_graph=defs.resolve_asset_graph(),
            partition_names=keys,
            asset_selection=selection,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="3 days x 2 symbols",
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        # the daemon logs a lot: to a file, never to a pipe nobody drains (it would block)
        daemon_log = (tmp_path / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(REPO / "workspace.yaml"),
            ],
            env=env,
            cwd=REPO,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers die with it
        )
        try:
            deadline = time.monotonic() + 420
            status = None
            while time.monotonic() < deadline:
                status = instance.get_backfill("petrosatest").status
                if status not in (BulkActionStatus.REQUESTED,):
                    break
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(2)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.pid, signal.SIGKILL)
                daemon_log.close()
        assert status == BulkActionStatus.COMPLETED_SUCCESS, (
            status,
            (tmp_path / "daemon.log").read_text()[-3000:],
        )
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": "petrosatest"}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # each run reports where the backfill stood, in its materialisations' metadata
        progress = [
            rec.event_log_entry.asset_materialization.metadata["backfill_progress"].value
            for rec in instance.get_records_for_run(
                runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
        ]
        assert progress and all(p["asset_partitions_total"] == 18 for p in progress), progress
    lake = LocalLake(tmp_path / "lake")
    for key in keys:
        day, symbol = key.split("|")
        assert (
            len(lake.read_frame(lake_path("market_data/candles", "binance", symbol, day))) == 1440
        )
        assert len(lake.read_frame(lake_path("market_data/funding", "binance", symbol, day))) == 3
