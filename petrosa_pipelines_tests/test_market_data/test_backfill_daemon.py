"""A backfill of 2 days x 2 instruments per venue (Binance USD-M and Bybit linear) launched
through Dagster completes with its checks green (real daemon, real runs of the real job, the
local exchange speaking both venues on one port).

The daemon runs the backfill's runs inside its own process (``SyncInMemoryRunLauncher``, see
``backfill_instance_yaml``) instead of a fresh interpreter per run, and the instance and the
lake live on tmpfs: on the 2-core CI box the run workers loading the code location and SQLite's
fsyncs were most of this test's time. The stack's end-to-end test covers the default launcher's
run workers.
"""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from petrosa_pipelines.definitions import defs
from petrosa_pipelines.instruments import parse_partition_key, partition_key_str
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, FUNDING_KEY, TRADES_KEY
from petrosa_pipelines.tooling.instance import instance_yaml
from petrosa_pipelines_tests.quick_daemon import quick_daemon_command
from petrosa_pipelines_tests.test_market_data.conftest import TRADES_PER_DAY
from petrosa_pipelines_tests.tmpfs import tmpfs_dir

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2024-02-10", "2024-02-11"]
INSTRUMENTS = [
    "binance-usdm:BTCUSDT",
    "binance-usdm:ETHUSDT",
    "bybit-linear:BTCUSDT",
    "bybit-linear:ETHUSDT",
]


def backfill_instance_yaml() -> str:
    """The project's instance config, with three test settings that change no run's work:

    - no automation: the sensor would queue about 20 analytics runs behind the backfill's
      eight, on the same queue and two cores (the stack's end-to-end test covers analytics
      following a backfill);
    - runs in the daemon's process (``SyncInMemoryRunLauncher``): the queue daemon runs each
      dequeued run to its end, one at a time, with the same job, resources, checks and event
      log, but no interpreter and code location loaded per run;
    - the queue looked at every second instead of 5 (runs launched one after another, not 5 s
      apart), like the backfill loop's 5 s in ``quick_daemon``.
    """
    config = yaml.safe_load(instance_yaml({}))
    config["auto_materialize"] = {"enabled": False, "use_sensors": False}
    config["run_launcher"] = {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    }
    config["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = 1
    return yaml.safe_dump(config, sort_keys=False)


#: one stream group, disabled: no ingest run (it would outlive the backfill); an empty list is
#: not a valid PETROSA_INGEST_GROUPS (the supervisor's every tick would fail on it)
NO_INGEST = '[{"name": "off", "symbols": ["BTCUSDT"], "enabled": false}]'


@pytest.mark.slow
@pytest.mark.timeout(1_200)  # its own 900 s wait on a loaded machine, then the daemon's teardown
def test_backfill_of_two_days_two_instruments_per_venue_completes(local_exchange, tmp_path):
    with tmpfs_dir("petrosa-backfill-") as scratch:
        _backfill_completes(local_exchange, scratch, tmp_path)


def _backfill_completes(local_exchange, scratch: Path, tmp_path: Path) -> None:
    """The backfill through the daemon: instance and lake under ``scratch`` (tmpfs), the
    daemon's log under ``tmp_path`` (kept for a failure's post-mortem)."""
    home = scratch / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(backfill_instance_yaml())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_REST_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": local_exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": local_exchange.vision_base_url,
        # Bybit v5 on the same port: REST and archive at the root, ws at /v5/public/linear
        "PETROSA_BYBIT_LINEAR_REST_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_BYBIT_LINEAR_WS_BASE_URL": local_exchange.ws_base_url,
        "PETROSA_BYBIT_LINEAR_ARCHIVE_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_SYMBOLS": ",".join(INSTRUMENTS),
        "PETROSA_LAKE_PATH": str(scratch / "lake"),
        "PETROSA_LANDING_PATH": str(scratch / "landing"),
        # no ingest run: this test is about the backfill, and an ingest run would outlive it
        "PETROSA_INGEST_GROUPS": NO_INGEST,
        # the audit sensor's one run a day, not one every 5 minutes in the backfill's queue
        "PETROSA_AUDIT_INTERVAL_S": "86400",
    }
    keys = [partition_key_str(d, i) for d in DAYS for i in INSTRUMENTS]
    selection = [CANDLES_KEY, TRADES_KEY, FUNDING_KEY]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", INSTRUMENTS)
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="petrosatest",
            asset_graph=defs.resolve_asset_graph(),
            partition_names=keys,
            asset_selection=selection,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="2 days x 2 instruments per venue",
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        # the daemon logs a lot: to a file, never to a pipe nobody drains (it would block)
        daemon_log = (tmp_path / "daemon.log").open("wb")
        # the real daemon, its backfill loop looking every 5 s instead of 30 (quick_daemon)
        daemon = subprocess.Popen(
            [*quick_daemon_command(), "run", "-w", str(REPO / "workspace.yaml")],
            env=env,
            cwd=REPO,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers die with it
        )
        try:
            deadline = time.monotonic() + 900  # a loaded 2-core machine
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
        assert progress and all(p["asset_partitions_total"] == 24 for p in progress), progress
        # every check of the three assets ran on every partition, and passed
        evaluations = [
            rec.event_log_entry.dagster_event.event_specific_data
            for run in runs
            for rec in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
        ]
        failed = sorted(
            (e.partition, e.asset_key.to_user_string(), e.check_name)
            for e in evaluations
            if not e.passed
        )
        assert evaluations and not failed, failed
        checked = {(e.asset_key, e.check_name) for e in evaluations}
        expected = {
            (check.asset_key, check.name)
            for check in defs.resolve_asset_graph().asset_check_keys
            if check.asset_key in selection
        }
        assert checked == expected, checked ^ expected
        assert len(evaluations) == len(expected) * len(keys), len(evaluations)
    lake = LocalLake(scratch / "lake")
    for key in keys:
        day, inst = parse_partition_key(key)
        path = {
            ds: lake_path(f"market_data/{ds}", inst.exchange, inst.symbol, day.isoformat())
            for ds in ("candles", "funding", "trades")
        }
        assert len(lake.read_frame(path["candles"])) == 1440, key
        assert len(lake.read_frame(path["funding"])) == 3, key
        assert len(lake.read_frame(path["trades"])) == TRADES_PER_DAY, key
    # the venues' rows went to their own directories, with their own trade ids
    bybit = lake.read_frame(lake_path("market_data/trades", "bybit-linear", "BTCUSDT", DAYS[0]))
    assert bybit["exchange"].eq("bybit-linear").all() and bybit["trade_id"].str.len().eq(36).all()
