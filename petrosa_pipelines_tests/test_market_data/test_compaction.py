"""Compaction of closed quiet months into month files (``market_data/compaction.py``) and the
lake reading a day from its month file (``lake.py``): every day reads back as before."""

import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from petrosa_pipelines.lake import LocalLake, is_month_file, lake_path, month_path
from petrosa_pipelines.market_data import compaction
from petrosa_pipelines.market_data.compaction import (
    ALREADY,
    COMPACTED,
    TOO_BIG,
    compact_max_bytes,
    compact_month,
    month_closed,
)
from petrosa_pipelines.settings import SettingError
from petrosa_pipelines.tooling.migrate_partitions import lake_fingerprint

DATASET = "market_data/candles"
FOLDER = f"{DATASET}/binance/BTCUSDT"
MB = 1024 * 1024


def day_frame(day: str, n: int = 1440) -> pd.DataFrame:
    """A candles-like day: constant text columns, timestamps, floats with a NaN, a nullable int."""
    rng = np.random.default_rng(int(day.replace("-", "")))
    start = pd.Timestamp(day, tz="UTC")
    close = 100 + rng.standard_normal(n).cumsum()
    close[min(7, n - 1) :: 500] = np.nan
    return pd.DataFrame(
        {
            "exchange": pd.Series(["binance"] * n, dtype="string[pyarrow]"),
            "symbol": pd.Series(["BTCUSDT"] * n, dtype="string[pyarrow]"),
            "open_time": pd.date_range(start, periods=n, freq="min"),
            "close": close,
            "trades": pd.array(rng.integers(0, 50, n), dtype="Int64"),
        }
    )


def days_of(month: str) -> list[str]:
    first = dt.date.fromisoformat(month + "-01")
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((nxt - first).days)]


def path(day: str) -> str:
    return lake_path(DATASET, "binance", "BTCUSDT", day)


@pytest.fixture
def month_lake(tmp_path):
    """A lake with every day of 2024-02 (one empty) and a day of 2024-03 (another month)."""
    lake = LocalLake(tmp_path)
    for i, day in enumerate(days_of("2024-02")):
        lake.write_frame(path(day), day_frame(day, 0 if i == 3 else 1440))
    lake.write_frame(path("2024-03-01"), day_frame("2024-03-01"))
    return lake


def snapshot(lake):
    listed = lake.list(FOLDER + "/")
    return listed, {p: lake.read_frame(p) for p in listed}, lake_fingerprint(lake)


def test_a_quiet_month_becomes_one_file_and_every_day_reads_the_same(month_lake):
    listed, frames, digest = snapshot(month_lake)
    done = compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert done.status == COMPACTED and done.files_before == 29 and done.files_after == 1
    assert done.days == days_of("2024-02") and done.kept == {}
    assert month_lake.list_files(FOLDER + "/") == [
        f"{FOLDER}/2024-02.parquet",
        path("2024-03-01"),
    ]
    assert month_lake.list(FOLDER + "/") == listed
    assert lake_fingerprint(month_lake) == digest
    for p, frame in frames.items():
        pd.testing.assert_frame_equal(month_lake.read_frame(p), frame)
        assert month_lake.num_rows(p) == len(frame) == month_lake.file(p).rows
        assert month_lake.exists(p) and not (is_month_file(p))
    some = ["open_time", "close"]
    pd.testing.assert_frame_equal(
        month_lake.read_frame(path("2024-02-10"), some), frames[path("2024-02-10")][some]
    )
    assert month_lake.num_rows(path("2024-02-04")) == 0
    with pytest.raises(FileNotFoundError):
        month_lake.read_frame(path("2024-01-31"))
    assert not month_lake.exists(path("2024-01-31"))
    # one row group per day, the days listed in the footer
    meta = pq.ParquetFile(month_lake.open(f"{FOLDER}/2024-02.parquet")).metadata
    assert meta.num_row_groups == 29
    assert done.bytes_after < done.bytes_before


def test_compacting_again_changes_nothing(month_lake):
    compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    month = f"{FOLDER}/2024-02.parquet"
    before = month_lake.signature(month)
    again = compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert again.status == ALREADY and again.days == days_of("2024-02")
    assert month_lake.signature(month) == before


def test_a_repaired_day_is_read_at_once_and_folded_back_into_the_month(month_lake):
    compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    _, frames, _ = snapshot(month_lake)
    repaired = day_frame("2024-02-10", 1000)
    repaired["close"] = 1.0
    month_lake.write_frame(path("2024-02-10"), repaired)  # what a one-day repair does
    pd.testing.assert_frame_equal(month_lake.read_frame(path("2024-02-10")), repaired)
    assert month_lake.num_rows(path("2024-02-10")) == 1000
    assert month_lake.list(FOLDER + "/").count(path("2024-02-10")) == 1
    done = compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert done.status == COMPACTED and done.files_before == 2 and done.files_after == 1
    assert not month_lake.file_exists(path("2024-02-10"))
    pd.testing.assert_frame_equal(month_lake.read_frame(path("2024-02-10")), repaired)
    for p, frame in frames.items():
        if p != path("2024-02-10"):
            pd.testing.assert_frame_equal(month_lake.read_frame(p), frame)


def test_a_month_over_the_limit_keeps_its_day_files(month_lake):
    listed = month_lake.list_files(FOLDER + "/")
    done = compact_month(month_lake, FOLDER, "2024-02", 100_000)
    assert done.status == TOO_BIG and done.files_after == done.files_before == 29
    assert month_lake.list_files(FOLDER + "/") == listed
    off = compact_month(month_lake, FOLDER, "2024-02", 0)
    assert "off" in off.status and month_lake.list_files(FOLDER + "/") == listed


def test_a_day_of_another_layout_stays_a_day_file(month_lake):
    odd = day_frame("2024-02-05").assign(extra=1.5)
    month_lake.write_frame(path("2024-02-05"), odd)
    done = compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert done.status == COMPACTED and list(done.kept) == ["2024-02-05"]
    assert "columns differ" in done.kept["2024-02-05"]
    assert month_lake.file_exists(path("2024-02-05"))
    pd.testing.assert_frame_equal(month_lake.read_frame(path("2024-02-05")), odd)
    assert "2024-02-05" in done.summary()


def test_a_day_written_during_the_compaction_is_kept_and_wins(month_lake, monkeypatch):
    newer = day_frame("2024-02-07", 10)
    store = month_lake.write_bytes

    def write_then_repair(relpath, data):
        store(relpath, data)
        if relpath.endswith("2024-02.parquet"):  # a repair lands between copy and delete
            month_lake.write_frame(path("2024-02-07"), newer)

    monkeypatch.setattr(month_lake, "write_bytes", write_then_repair)
    done = compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert "rewritten during the compaction" in done.kept["2024-02-07"]
    assert done.files_after == 2
    pd.testing.assert_frame_equal(month_lake.read_frame(path("2024-02-07")), newer)


def test_a_month_file_that_does_not_read_back_is_never_stored(month_lake, monkeypatch):
    listed, frames, digest = snapshot(month_lake)
    real = compaction._Source.read
    calls = {"n": 0}

    def flaky(self, lake, old):  # the copy of one day is short by a row
        table = real(self, lake, old)
        calls["n"] += 1
        return table.slice(1) if calls["n"] == 5 else table

    monkeypatch.setattr(compaction._Source, "read", flaky)
    with pytest.raises(RuntimeError, match="reads back differently"):
        compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert not month_lake.file_exists(f"{FOLDER}/2024-02.parquet")
    assert month_lake.list(FOLDER + "/") == listed and lake_fingerprint(month_lake) == digest


def test_a_month_is_closed_once_it_is_before_the_window_and_today():
    assert month_closed("2024-02-01", "2024-03-01", today=dt.date(2024, 6, 1))
    assert not month_closed("2024-02-01", "2024-02-29", today=dt.date(2024, 6, 1))
    assert not month_closed("2024-02", "2024-06-01", today=dt.date(2024, 2, 29))
    assert month_path(path("2024-02-10")) == f"{FOLDER}/2024-02.parquet"
    assert month_path(f"{FOLDER}/2024-02.parquet") is None


def test_the_size_limit_is_a_validated_setting():
    assert compact_max_bytes({}) == 64 * MB
    assert compact_max_bytes({"PETROSA_LAKE_COMPACT_MAX_MB": "0"}) == 0
    assert compact_max_bytes({"PETROSA_LAKE_COMPACT_MAX_MB": "0.5"}) == MB // 2
    for bad in ("-1", "lots"):
        with pytest.raises(SettingError, match="PETROSA_LAKE_COMPACT_MAX_MB"):
            compact_max_bytes({"PETROSA_LAKE_COMPACT_MAX_MB": bad})


def test_temporary_files_of_the_month_write_are_not_left_behind(month_lake):
    compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert [n for n in os.listdir(month_lake.base / FOLDER) if n.startswith(".")] == []


def test_compact_lake_compacts_closed_months_only_and_proves_every_day(tmp_path, capsys):
    from petrosa_pipelines.tooling.compact_lake import compact_lake

    lake = LocalLake(tmp_path)
    for month in ("2024-01", "2024-02", "2024-03"):
        for day in days_of(month)[:3]:
            lake.write_frame(path(day), day_frame(day, 60))
    funding = lake_path("market_data/funding", "bybit-linear", "ETHUSDT", "2024-01-02")
    lake.write_frame(funding, day_frame("2024-01-02", 3))
    digest = lake_fingerprint(lake)
    today = dt.date(2024, 4, 20)
    dry = compact_lake(lake, "2024-03-01", 64 * MB, dry_run=True, today=today)
    assert dry.candidates == [
        (FOLDER, "2024-01"),
        ("market_data/funding/bybit-linear/ETHUSDT", "2024-01"),
        (FOLDER, "2024-02"),
    ]
    assert len(lake.list_files("market_data/")) == 10  # the dry run changed nothing
    done = compact_lake(lake, "2024-03-01", 64 * MB, today=today, log=lambda _: None)
    assert done.changed == [] and done.files_removed == (3 - 1) + (1 - 1) + (3 - 1)
    assert [f.rsplit("/", 1)[1] for f in lake.list_files(FOLDER + "/")] == [
        "2024-01.parquet",
        "2024-02.parquet",
        "2024-03-01.parquet",
        "2024-03-02.parquet",
        "2024-03-03.parquet",
    ]
    assert lake_fingerprint(lake) == digest
    assert compact_lake(lake, "2024-03-01", 64 * MB, today=today).candidates == []  # idempotent


def test_the_compact_lake_command_reports_what_it_did(tmp_path, monkeypatch, capsys):
    from petrosa_pipelines.tooling.cli import main

    lake = LocalLake(tmp_path)
    for day in days_of("2023-11")[:4]:  # before the first day partition (2024-01-01 here)
        lake.write_frame(path(day), day_frame(day, 60))
    monkeypatch.setenv("PETROSA_LAKE_PATH", str(tmp_path))
    assert main(["compact-lake", "--dry-run"]) == 0
    assert "holding day files: 1" in capsys.readouterr().out
    assert len(lake.list_files(FOLDER + "/")) == 4
    assert main(["compact-lake"]) == 0
    assert "1 compacted, 3 files fewer; changed days: 0" in capsys.readouterr().out
    assert lake.list_files(FOLDER + "/") == [f"{FOLDER}/2023-11.parquet"]


def test_a_month_file_is_opened_once_while_it_is_unchanged(month_lake, monkeypatch):
    compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    opened = []
    real_open = month_lake.open
    monkeypatch.setattr(month_lake, "open", lambda rel: opened.append(rel) or real_open(rel))
    for day in days_of("2024-02"):
        month_lake.read_frame(path(day))
    assert opened.count(f"{FOLDER}/2024-02.parquet") == 1
    # the month rewritten (a repair folded back in): the next read sees the new month file
    month_lake.write_frame(path("2024-02-10"), day_frame("2024-02-10", 5))
    compact_month(month_lake, FOLDER, "2024-02", 64 * MB)
    assert month_lake.num_rows(path("2024-02-10")) == 5
    assert len(month_lake.read_frame(path("2024-02-10"))) == 5


def test_a_month_with_days_in_the_window_is_left_alone_and_says_why(month_lake):
    from petrosa_pipelines.market_data.history import MonthJob, compact_metadata

    def job(window_start: str) -> MonthJob:
        return MonthJob(
            "candles",
            "2024-02-01",
            "binance-usdm:BTCUSDT",
            month_lake,
            settings=None,
            first="2024-01-01",
            window_start=window_start,
        )

    meta = compact_metadata(job("2024-02-20"), log=None)
    assert meta == {"lake_layout": compaction.OPEN} and "not closed" in compaction.OPEN
    assert len(month_lake.list_files(FOLDER + "/")) == 30
    meta = compact_metadata(job("2024-03-02"), log=None)
    assert meta["lake_layout"].startswith("compacted: 29 file(s)") and meta["lake_file_count"] == 1
