"""History days reach the serving stores (issue 13): each day of an instrument-month is
replaced from its lake file, one day at a time, under the shrink guard.

Against a real PostgreSQL warehouse, and the MongoDB sink on the fake client (a real server only
through ``test_mongo.py``'s integration tests). The asset itself runs in the code location with
a window in ``test_market_data/test_history.py``.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.serving import mongo
from petrosa_pipelines.serving.history import (
    FAILED,
    LOADED,
    NO_FILE,
    DayLoad,
    HistoryLoadConfig,
    load_history_days,
    loads_table,
    month_load_metadata,
    wanted_load_days,
)
from petrosa_pipelines_tests.test_storage import frames
from petrosa_pipelines_tests.test_storage.fake_mongo import FakeClient

INST = "binance-usdm:BTCUSDT"
DAYS = ["2024-01-02", "2024-01-03", "2024-01-04"]


def _lake(tmp_path, dataset: str, made: dict[str, pd.DataFrame]) -> LocalLake:
    lake = LocalLake(tmp_path / "lake")
    for day, frame in made.items():
        lake.write_frame(lake_path(f"market_data/{dataset}", "binance", "BTCUSDT", day), frame)
    return lake


def _day_frames(dataset: str) -> dict[str, pd.DataFrame]:
    def make(i: int, day: str) -> pd.DataFrame:
        if dataset == "candles":
            return frames.candles(day=dt.date.fromisoformat(day), seed=i)
        return frames.trades(day=dt.date.fromisoformat(day), seed=i, first_id=1 + i * 10_000)

    # the first and last days have files; the middle day has none
    return {d: make(i, d) for i, d in enumerate(DAYS) if i != 1}


def _read(wh, dataset: str, day: str) -> pd.DataFrame:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return wh.read(
        dataset,
        exchange="binance",
        symbols=["BTCUSDT"],
        start=start,
        end=start + dt.timedelta(days=1),
        qualifier="1m" if dataset == "candles" else None,
    )


@pytest.mark.parametrize("dataset", ["candles", "trades"])
def test_every_history_day_with_a_file_is_loaded_into_the_warehouse(tmp_path, warehouse, dataset):
    made = _day_frames(dataset)
    lake = _lake(tmp_path, dataset, made)
    loads = load_history_days(warehouse.load_partition, lake, dataset, INST, DAYS)
    assert [(d.day, d.status) for d in loads] == [
        (DAYS[0], LOADED),
        (DAYS[1], NO_FILE),
        (DAYS[2], LOADED),
    ]
    assert [d.rows for d in loads] == [len(made[DAYS[0]]), 0, len(made[DAYS[2]])]
    for day, frame in made.items():
        got = _read(warehouse, dataset, day)
        assert len(got) == len(frame)
        key = "open_time" if dataset == "candles" else "agg_trade_id"
        assert got[key].tolist() == frame[key].tolist()
    # idempotent: loading again replaces each day with the same rows
    again = load_history_days(warehouse.load_partition, lake, dataset, INST, DAYS)
    assert [(d.status, d.rows, d.replaced_rows) for d in again] == [
        (LOADED, d.rows, d.rows) if d.status == LOADED else (NO_FILE, 0, 0) for d in loads
    ]
    for day, frame in made.items():
        assert len(_read(warehouse, dataset, day)) == len(frame)


def test_a_day_with_fewer_rows_is_refused_and_the_others_still_load(tmp_path, warehouse):
    made = _day_frames("candles")
    lake = _lake(tmp_path, "candles", made)
    load_history_days(warehouse.load_partition, lake, "candles", INST, DAYS)
    # the first day's lake file loses 10 minutes; the last day gets a new, full version
    short = frames.candles(day=dt.date(2024, 1, 2), seed=0, skip=range(10))
    fresh = frames.candles(day=dt.date(2024, 1, 4), seed=9)
    lake = _lake(tmp_path, "candles", {DAYS[0]: short, DAYS[2]: fresh})
    loads = load_history_days(warehouse.load_partition, lake, "candles", INST, DAYS)
    first, _, last = loads
    assert first.status == FAILED and "ShrinkRefusedError" in first.error
    assert len(_read(warehouse, "candles", DAYS[0])) == 1440  # kept
    assert last.status == LOADED and last.replaced_rows == 1440
    assert _read(warehouse, "candles", DAYS[2])["open"].tolist() == fresh["open"].tolist()
    # allowed on purpose, the shorter day replaces the stored one
    [forced] = load_history_days(
        warehouse.load_partition, lake, "candles", INST, DAYS[:1], never_fewer=False
    )
    assert forced.status == LOADED and len(_read(warehouse, "candles", DAYS[0])) == 1430


def test_history_days_reach_the_mongodb_sink(tmp_path):
    sink = mongo.MongoSink(FakeClient(), "petrosa")
    sink.ensure()
    made = _day_frames("trades")
    lake = _lake(tmp_path, "trades", made)
    loads = load_history_days(sink.replace_partition, lake, "trades", INST, DAYS)
    assert [d.status for d in loads] == [LOADED, NO_FILE, LOADED]
    for day, frame in made.items():
        start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        got = sink.read(
            "trades",
            exchange="binance",
            symbols=["BTCUSDT"],
            start=start,
            end=start + dt.timedelta(days=1),
        )
        assert got["agg_trade_id"].tolist() == frame["agg_trade_id"].tolist()


def test_days_to_load_must_be_history_days_of_the_month():
    assert wanted_load_days(HistoryLoadConfig(), DAYS) == DAYS
    assert wanted_load_days(HistoryLoadConfig(days=[DAYS[2], DAYS[0]]), DAYS) == [DAYS[0], DAYS[2]]
    with pytest.raises(dg.Failure, match=r"run config `days`: \['2024-02-01'\]"):
        wanted_load_days(HistoryLoadConfig(days=["2024-02-01"]), DAYS)


def test_a_months_load_records_every_day_and_its_totals():
    loads = [
        DayLoad("2024-01-02", LOADED, rows=1440, replaced_rows=1440, seconds=0.25),
        DayLoad("2024-01-03", NO_FILE),
        DayLoad("2024-01-04", FAILED, rows=1430, error="ShrinkRefusedError: 1430 < 1440"),
    ]
    meta = month_load_metadata(loads, table="petrosa.candles")
    assert meta["dagster/row_count"] == 1440 and meta["replaced_rows"] == 1440
    assert (meta["days_loaded"], meta["days_without_file"], meta["days_failed"]) == (1, 1, 1)
    assert [d["status"] for d in meta["days"].value] == [LOADED, NO_FILE, FAILED]
    assert meta["table"] == "petrosa.candles"
    table = loads_table(loads)
    assert "| 2024-01-03 | no file |  |  | - |" in table
    assert "| 2024-01-04 | failed | 1,430 |  | ShrinkRefusedError: 1430 < 1440 |" in table


def test_mongodb_history_loaders_exist_only_when_mongodb_is_configured():
    from petrosa_pipelines.serving.history import build_history_storage_assets

    def keys(env):
        return {a.key.to_user_string() for a in build_history_storage_assets(env)}

    datasets = ("trades", "candles", "depth", "funding")
    warehouse = {f"storage/history/warehouse_{d}" for d in datasets}
    assert keys({}) == warehouse
    assert keys({"PETROSA_MONGODB_URL": "mongodb://127.0.0.1:27017"}) == warehouse | {
        f"storage/history/mongo_{d}" for d in datasets
    }
