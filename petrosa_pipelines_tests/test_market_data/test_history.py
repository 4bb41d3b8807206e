"""The partition scheme: day x instrument for a rolling window, month x instrument before it.

The pure parts run here; the code location is loaded in a fresh interpreter with a window set
(partitions definitions are fixed when the definitions load, as under ``dagster dev``), against
the local exchange: a history day is rebuilt, a pre-window lake is migrated, nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from petrosa_pipelines.market_data.history import (
    FAILED,
    MISSING,
    OK,
    DayResult,
    HistoryConfig,
    days_table,
    month_check,
    month_metadata,
    recorded_days,
    wanted_days,
)
from petrosa_pipelines.market_data.partitions import (
    daily_window_days,
    history_days,
    history_months,
    window_start,
)
from petrosa_pipelines.settings import SettingError

ROOT = Path(__file__).resolve().parents[2]


def test_the_window_ends_today_and_never_starts_before_the_first_day_kept():
    today = dt.date(2026, 12, 2)
    assert window_start("2024-01-01", 56, today) == "2026-10-08"  # 56 days incl. today
    assert window_start("2026-11-20", 56, today) == "2026-11-20"  # a young install
    assert window_start("2024-01-01", 0, today) == "2024-01-01"  # no window: every day


def test_history_months_hold_exactly_the_days_before_the_window():
    assert history_months("2024-01-15", "2026-10-08") == ("2024-01-01", "2026-11-01")
    assert history_months("2026-11-20", "2026-11-20") == ("2026-11-01", "2026-11-01")  # none
    oct_days = history_days("2026-10-01", "2024-01-15", "2026-10-08")
    assert [d.day for d in oct_days] == list(range(1, 8))
    assert history_days("2024-01-01", "2024-01-15", "2026-10-08")[0] == dt.date(2024, 1, 15)
    assert len(history_days("2024-02-01", "2024-01-15", "2026-10-08")) == 29  # leap year
    assert history_days("2026-11-01", "2024-01-15", "2026-10-08") == []


def test_the_window_setting_is_validated_by_name():
    assert daily_window_days({}) == 56
    assert daily_window_days({"PETROSA_DAILY_WINDOW_DAYS": "0"}) == 0
    for bad in ("3", "-1", "soon"):
        with pytest.raises(SettingError, match="PETROSA_DAILY_WINDOW_DAYS"):
            daily_window_days({"PETROSA_DAILY_WINDOW_DAYS": bad})


def test_a_month_names_its_failing_days_and_keeps_every_days_result():
    results = [
        DayResult("2024-05-01", 1440, health=100.0),
        DayResult("2024-05-02", 1300, failed=("candles_complete",), health=80.0),
        DayResult("2024-05-03", None, failed=("candles_complete", "not_empty")),
        DayResult("2024-05-04", 1440, error="sources failed: rest: 503", rebuilt=False),
    ]
    assert [r.status for r in results] == [OK, FAILED, FAILED, FAILED]
    assert DayResult("2024-05-05", None).status == MISSING
    passed, text, meta = month_check(results)
    assert not passed
    assert text.startswith("3 of 4 days fail: 2024-05-02: candles_complete; 2024-05-03")
    assert "rest: 503" in text
    assert set(meta["failing_days"].value) == {"2024-05-02", "2024-05-03", "2024-05-04"}
    recorded = month_metadata(results)
    assert recorded["dagster/row_count"] == 1440 + 1300 + 1440
    assert recorded["days_failing"] == 3 and recorded["history_last_day"] == "2024-05-04"
    # what the next run carries over is every day's result, as recorded
    assert list(recorded_days(recorded).values()) == [
        DayResult.from_dict(r.as_dict()) for r in results
    ]
    table = days_table(results)
    assert "| 2024-05-03 |  | failed | candles_complete, not_empty |  |" in table
    assert month_check([DayResult("2024-05-01", 10)])[0]


def test_days_to_rebuild_must_be_history_days_of_the_month():
    days = ["2024-05-01", "2024-05-02"]
    assert wanted_days(HistoryConfig(), days) == days
    assert wanted_days(HistoryConfig(days=["2024-05-02"]), days) == ["2024-05-02"]
    assert wanted_days(HistoryConfig(rebuild=False, days=["2024-05-02"]), days) == []
    with pytest.raises(dg.Failure, match=r"run config `days`: \['2024-06-01'\]"):
        wanted_days(HistoryConfig(days=["2024-06-01"]), days)


HISTORY_RUN = """
import json, shutil
import dagster as dg
from pathlib import Path
from petrosa_pipelines.definitions import defs
from petrosa_pipelines.market_data import partitions as P
from petrosa_pipelines.market_data.history import DAYS_CHECK, history_key, month_key
from petrosa_pipelines.tooling.migrate_partitions import migrate
from petrosa_pipelines.lake import lake_from_path
import os

INST = "binance-usdm:BTCUSDT"
out = {}
lake = lake_from_path(os.environ["PETROSA_LAKE_PATH"])
with dg.DagsterInstance.get() as instance:
    instance.add_dynamic_partitions("symbols", [INST])
    graph = defs.resolve_asset_graph()
    daily = graph.get(dg.AssetKey(["market_data", "candles"])).partitions_def
    monthly = graph.get(history_key("candles")).partitions_def
    dates = daily.get_partitions_def_for_dimension("date").get_partition_keys()
    months = monthly.get_partitions_def_for_dimension("month").get_partition_keys()
    out["daily_first"], out["daily_last"], out["months"] = dates[0], dates[-1], months
    last_month = months[-1]
    days = [d.isoformat() for d in P.history_days(last_month)]
    out["last_month_days"] = days
    # the Python API routes a day before the window to its instrument-month, that day only
    from petrosa_pipelines.api import materialize_partitions
    import datetime as dt
    first = dt.date.fromisoformat(days[0])
    [run] = materialize_partitions("candles", INST, first, first + dt.timedelta(days=1),
                                   instance=instance)
    out["run_key"], out["run_success"] = run.partition_key, run.success
    [rec] = instance.fetch_materializations(history_key("candles"), limit=1).records
    meta = {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}
    out["days"] = meta.get("days")
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(history_key("candles"), DAYS_CHECK)]
    )[dg.AssetCheckKey(history_key("candles"), DAYS_CHECK)]
    ev = check.event.dagster_event.event_specific_data
    out["check"] = [[ev.check_name, ev.passed, ev.description]]
    # the rebuilt day reaches the warehouse through the month's loader
    from petrosa_pipelines.serving.history import warehouse_history_key
    loader = warehouse_history_key("candles")
    month_key_ = run.partition_key
    loaded = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=month_key_, instance=instance, asset_selection=[loader]
    )
    out["load_success"] = loaded.success
    [rec] = instance.fetch_materializations(loader, limit=1).records
    meta = {k: getattr(v, "value", v) for k, v in rec.asset_materialization.metadata.items()}
    out["load"] = {k: meta[k] for k in ("dagster/row_count", "days_loaded", "days_without_file")}
    from petrosa_pipelines.serving.warehouse import Warehouse
    wh = Warehouse(os.environ["PETROSA_WAREHOUSE_URL"])
    out["warehouse"] = {
        f"{k[0]} {k[1]}": v
        for k, v in wh.loaded("candles", exchange="binance", symbols=["BTCUSDT"],
                              days=[dt.date.fromisoformat(d) for d in days], qualifier="1m").items()
    }
    wh.dispose()
    # an install from before the window: day files older than the window, never tracked by month
    built = Path(os.environ["PETROSA_LAKE_PATH"]) / "market_data/candles/binance/BTCUSDT"
    src = built / f"{days[0]}.parquet"
    first_month_day = P.history_days(months[0])[0].isoformat()
    shutil.copy(src, built / f"{first_month_day}.parquet")
    out["first_month_day"] = first_month_day
    out["dry"] = migrate(instance, lake, dry_run=True).months
    done = migrate(instance, lake)
    out["migrated"], out["changed"], out["files"] = done.months, done.changed, done.files_before
    old_month = [month_key(months[0], INST)]
    recorded = instance.fetch_materializations(
        dg.AssetRecordsFilter(history_key("candles"), asset_partitions=old_month), limit=1
    ).records
    rec = recorded[0].asset_materialization.metadata if recorded else {}
    out["first_month_days"] = getattr(rec.get("days"), "value", None)
    out["again"] = migrate(instance, lake, dry_run=True).months
    # the old month is closed: the roll compacted it into one month file
    folder = "market_data/candles/binance/BTCUSDT"
    out["stored"] = [p.rsplit("/", 1)[1] for p in lake.list_files(folder + "/")]
    out["listed"] = [p.rsplit("/", 1)[1] for p in lake.list(folder + "/")]
    out["compacted_rows"] = len(lake.read_frame(f"{folder}/{first_month_day}.parquet"))
    out["layout"] = getattr(rec.get("lake_layout"), "value", None)
print(json.dumps(out))
"""


@pytest.mark.slow  # a fresh interpreter loads the code location with a window
def test_history_months_rebuild_a_day_and_migrate_an_old_lake(
    tmp_path, local_exchange, postgres_db
):
    from petrosa_pipelines.tooling.demo import local_endpoint_env

    today = dt.datetime.now(tz=dt.UTC).date()
    start = today - dt.timedelta(days=45)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PETROSA_")},
        **local_endpoint_env(local_exchange.rest_base_url),
        "DAGSTER_HOME": str(home),
        "PETROSA_START_DATE": start.isoformat(),
        "PETROSA_DAILY_WINDOW_DAYS": "14",
        "PETROSA_LAKE_PATH": str(tmp_path / "lake"),
        "PETROSA_LANDING_PATH": str(tmp_path / "landing"),
        "PETROSA_LIVE_PUBLISH": "false",
        "PETROSA_WAREHOUSE_URL": postgres_db,
    }
    done = subprocess.run(
        [sys.executable, "-c", HISTORY_RUN],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if dt.datetime.now(tz=dt.UTC).date() != today:
        pytest.skip("midnight UTC passed while the code location loaded: the window moved")
    window_first = today - dt.timedelta(days=13)
    assert out["daily_first"] == window_first.isoformat()  # 14 days ending today
    assert out["daily_last"] == today.isoformat()
    assert out["months"][0] == start.replace(day=1).isoformat()
    last_history_day = window_first - dt.timedelta(days=1)
    assert out["months"][-1] == last_history_day.replace(day=1).isoformat()
    assert out["last_month_days"][-1] == last_history_day.isoformat()
    # one day rebuilt from the exchange; the month's other days judged from the (empty) lake
    assert out["run_success"], done.stderr[-4000:]
    assert out["run_key"] == f"{out['months'][-1]}|binance-usdm:BTCUSDT"
    days = {d["day"]: d for d in out["days"]}
    assert list(days) == out["last_month_days"]
    first = days[out["last_month_days"][0]]
    assert first["rows"] == 1440 and first["status"] == "ok" and first["failed"] == []
    assert all(d["status"] == "failed" for d in list(days.values())[1:])  # no file: no candles
    [(name, passed, text)] = out["check"]
    assert name == "history_days_pass" and not passed
    assert text.startswith(f"{len(days) - 1} of {len(days)} days fail")
    # the month's warehouse loader loads the one day with a file, and only it
    assert out["load_success"]
    assert out["load"] == {
        "dagster/row_count": 1440,
        "days_loaded": 1,
        "days_without_file": len(days) - 1,
    }
    assert out["warehouse"] == {f"BTCUSDT {out['last_month_days'][0]}": 1440}
    # migration: the old month with a file is recorded; the month just built is not re-recorded
    assert out["dry"] == {"candles": 1} == out["migrated"]
    assert out["changed"] == [] and out["files"] == 2
    old = {d["day"]: d for d in out["first_month_days"]}
    assert old[out["first_month_day"]]["rows"] == 1440
    assert sum(1 for d in old.values() if d["rows"]) == 1
    assert out["again"] == {}  # idempotent
    # the old month (closed: it ends before the window) is one month file read as its day
    month_file = f"{out['first_month_day'][:7]}.parquet"
    assert month_file in out["stored"]
    assert f"{out['first_month_day']}.parquet" not in out["stored"]
    assert f"{out['first_month_day']}.parquet" in out["listed"]
    assert out["compacted_rows"] == 1440
    assert out["layout"].startswith("compacted: 1 file(s)")
