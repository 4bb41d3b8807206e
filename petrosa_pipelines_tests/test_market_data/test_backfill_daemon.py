"""A backfill of 2 days x 2 instruments per venue (Binance USD-M and Bybit linear) launched
through Dagster completes with its checks green (real daemon, real runs, the local exchange
speaking both venues on one port)."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from petrosa_pipelines.definitions import defs
from petrosa_pipelines.instruments import parse_partition_key, partition_key_str
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, FUNDING_KEY, TRADES_KEY
from petrosa_pipelines.tooling.instance import instance_yaml
from petrosa_pipelines_tests.quick_daemon import quick_daemon_command
from petrosa_pipelines_tests.test_market_data.conftest import TRADES_PER_DAY

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2024-02-10", "2024-02-11"]
INSTRUMENTS = [
    "binance-usdm:BTCUSDT",
    "binance-usdm:ETHUSDT",
    "bybit-linear:BTCUSDT",
    "bybit-linear:ETHUSDT",
]
#: the automation sensor would queue about 20 analytics runs behind the backfill's eight, which
#: share its queue and two cores; this test is about the backfill (the stack's end-to-end test
#: covers analytics following a backfill)
NO_AUTOMATION = "\nauto_materialize:\n  enabled: false\n  use_sensors: false\n"


@pytest.mark.slow
@pytest.mark.timeout(1_200)  # its own 900 s wait on a loaded machine, then the daemon's teardown
def test_backfill_of_two_days_two_instruments_per_venue_completes(local_exchange, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml({}) + NO_AUTOMATION)
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
        "PETROSA_LAKE_PATH": str(tmp_path / "lake"),
        "PETROSA_LANDING_PATH": str(tmp_path / "landing"),
        # no ingest group: this test is about the backfill, and an ingest run would outlive it
        "PETROSA_INGEST_GROUPS": "[]",
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
    lake = LocalLake(tmp_path / "lake")
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
