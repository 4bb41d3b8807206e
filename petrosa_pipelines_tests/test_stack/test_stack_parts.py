"""The stack's and the progress reporter's parts, without starting the stack (fast)."""

from __future__ import annotations

import datetime as dt
import sys
import time

import dagster as dg
import pytest
from dagster._core.execution.backfill import PartitionBackfill

from petrosa_pipelines.tooling.backfill import BackfillMonitor, BackfillProgress, partition_keys
from petrosa_pipelines.tooling.stack import (
    Service,
    Stack,
    StackConfig,
    StackError,
    _hide_password,
    database_url,
    main,
    psycopg2_url,
    psycopg_url,
    resolve_postgres,
)


def test_storage_urls_name_the_psycopg2_driver():
    assert psycopg2_url("postgresql://u:p@h:5/db") == "postgresql+psycopg2://u:p@h:5/db"
    assert psycopg2_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert psycopg2_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert psycopg_url("postgresql+psycopg2://u@h:5/db") == "postgresql://u@h:5/db"
    assert database_url("postgresql://u@h:5/postgres", "x") == "postgresql://u@h:5/x"
    assert database_url("postgresql://u@h/postgres?sslmode=require", "x").endswith(
        "/x?sslmode=require"
    )
    with pytest.raises(ValueError):
        psycopg2_url("not a url")


def test_an_explicit_or_configured_url_wins_and_starts_nothing():
    url, cluster = resolve_postgres("postgresql://u@h:1/db")
    assert (url, cluster) == ("postgresql+psycopg2://u@h:1/db", None)
    env = {"PETROSA_DAGSTER_POSTGRES_URL": "postgresql+psycopg2://e@h:2/d"}
    assert resolve_postgres(None, env) == ("postgresql+psycopg2://e@h:2/d", None)


def test_passwords_are_hidden_in_printed_addresses():
    assert (
        _hide_password("postgresql+psycopg2://u:secret@h:5/db")
        == "postgresql+psycopg2://u:***@h:5/db"
    )
    assert _hide_password("postgresql+psycopg2://u@h:5/db") == "postgresql+psycopg2://u@h:5/db"


def test_partition_keys_are_day_major_and_inclusive():
    symbols = ["BTCUSDT", "bybit-linear:ETHUSDT"]  # a bare symbol is Binance USD-M's
    keys = partition_keys(dt.date(2024, 2, 10), dt.date(2024, 2, 11), symbols)
    assert keys == [
        "2024-02-10|binance-usdm:BTCUSDT",
        "2024-02-10|bybit-linear:ETHUSDT",
        "2024-02-11|binance-usdm:BTCUSDT",
        "2024-02-11|bybit-linear:ETHUSDT",
    ]
    with pytest.raises(ValueError):
        partition_keys(dt.date(2024, 2, 11), dt.date(2024, 2, 10), ["BTCUSDT"])


def _progress(**kw) -> BackfillProgress:
    base = dict(
        backfill_id="b1",
        status="REQUESTED",
        partitions_total=8,
        partitions_done=2,
        partitions_failed=0,
        asset_partitions_total=32,
        asset_partitions_done=9,
        runs=4,
        runs_finished=2,
        rows=12_000,
        elapsed_seconds=60.0,
    )
    return BackfillProgress(**{**base, **kw})


def test_progress_line_reads_like_an_operator_wants_it():
    line = _progress().line()
    assert line.startswith("[b1] 2/8 partitions (25%)")
    assert "9/32 asset partitions" in line and "12,000 rows" in line and "200 rows/s" in line
    assert "2.0 partitions/min" in line and "ETA 180s" in line and line.endswith("REQUESTED")
    finished = _progress(status="COMPLETED_SUCCESS", partitions_done=8)
    assert finished.finished and "ETA" not in finished.line()
    assert _progress(partitions_done=0).eta_seconds is None


symbols = dg.DynamicPartitionsDefinition(name="symbols")
daily_symbols = dg.MultiPartitionsDefinition(
    {"date": dg.DailyPartitionsDefinition(start_date="2024-01-01"), "symbol": symbols}
)


@dg.asset(partitions_def=daily_symbols, key=["market_data", "candles"])
def candles(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 1440})


def test_monitor_counts_partitions_and_rows_from_the_backfills_runs(dagster_instance):
    """Runs tagged with the backfill count at once, before the daemon's next bookkeeping tick."""
    instance = dagster_instance
    instance.add_dynamic_partitions("symbols", ["BTCUSDT", "ETHUSDT"])
    graph = dg.Definitions(assets=[candles]).resolve_asset_graph()
    keys = ["2024-02-10|BTCUSDT", "2024-02-10|ETHUSDT", "2024-02-11|BTCUSDT"]
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id="unitbf",
            asset_graph=graph,
            partition_names=keys,
            asset_selection=[candles.key],
            backfill_timestamp=time.time() - 30,
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )
    monitor = BackfillMonitor(instance, "unitbf", asset_graph=graph)
    before = monitor.poll()
    assert (before.partitions_total, before.partitions_done, before.rows) == (3, 0, 0)
    for key in keys[:2]:
        result = dg.materialize(
            [candles], partition_key=key, instance=instance, tags={"dagster/backfill": "unitbf"}
        )
        assert result.success
    after = monitor.poll()
    assert (after.partitions_done, after.asset_partitions_done) == (2, 2)
    assert (after.runs, after.runs_finished, after.rows) == (2, 2, 2 * 1440)
    assert after.status == "REQUESTED" and not after.finished
    assert 25 < after.elapsed_seconds < 600 and after.eta_seconds is not None


def test_a_part_that_dies_is_reported_with_its_log(tmp_path):
    stack = Stack(StackConfig(workdir=tmp_path, startup_timeout=30), log=lambda _: None)
    argv = [sys.executable, "-c", "import sys; print('boom: cannot bind'); sys.exit(3)"]
    service = Service("exchange", argv, "nowhere", lambda: False, tmp_path / "x.log")
    service.start({}, tmp_path)
    with pytest.raises(StackError, match=r"(?s)exchange exited with code 3.*boom: cannot bind"):
        stack._wait_ready(service)
    service.stop()


def test_a_part_that_never_answers_times_out(tmp_path):
    stack = Stack(StackConfig(workdir=tmp_path, startup_timeout=1), log=lambda _: None)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    service = Service("code", argv, "nowhere", lambda: False, tmp_path / "y.log")
    service.start({}, tmp_path)
    try:
        with pytest.raises(StackError, match="code did not answer within 1 s"):
            stack._wait_ready(service)
    finally:
        service.stop(timeout=5)
    assert not service.running()


def test_backfill_command_without_a_running_stack_says_so(tmp_path, capsys):
    assert main(["backfill", "--start", "2024-02-10", "--workdir", str(tmp_path)]) == 1
    assert "no stack is running" in capsys.readouterr().err


def test_partition_keys_leave_the_open_day_out_unless_asked():
    today = dt.date(2024, 2, 12)
    keys = partition_keys(dt.date(2024, 2, 10), today, ["BTCUSDT"], today=today)
    assert keys == ["2024-02-10|binance-usdm:BTCUSDT", "2024-02-11|binance-usdm:BTCUSDT"]
    with_today = partition_keys(
        dt.date(2024, 2, 11), today, ["BTCUSDT"], include_open_day=True, today=today
    )
    assert with_today[-1] == "2024-02-12|binance-usdm:BTCUSDT"
    with pytest.raises(ValueError, match="open day"):
        partition_keys(today, today, ["BTCUSDT"], today=today)
