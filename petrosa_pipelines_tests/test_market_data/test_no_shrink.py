"""A re-run during a source outage never publishes fewer rows (issue 11, item 1).

The lake file and the warehouse keep what they hold; the run fails naming the failed sources
and what is kept. A partial outage merges: rows only the old partition has are kept.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import candles, refuse_to_shrink, trades
from petrosa_pipelines.market_data.datasets import CandlesSpec
from petrosa_pipelines.market_data.fill import fill_partition
from petrosa_pipelines.market_data.sources import PreviousPartitionSource
from petrosa_pipelines.serving.assets import STORAGE_ASSETS
from petrosa_pipelines.serving.warehouse import ShrinkRefusedError, Warehouse
from petrosa_pipelines_tests.test_market_data.conftest import TRADES_PER_DAY
from petrosa_pipelines_tests.test_market_data.test_fill import CLOSED, FakeSource
from petrosa_pipelines_tests.test_market_data.test_fill import candles as candle_rows
from resources import ExchangeResource
from resources.warehouse import WarehouseResource

DAY = "2024-03-02"
KEY = f"{DAY}|BTCUSDT"
LOADERS = [a for a in STORAGE_ASSETS if a.key.path[-1] in ("warehouse_trades", "warehouse_candles")]


def _read(tmp_path, dataset):
    lake = LocalLake(tmp_path / "lake")
    return lake.read_frame(lake_path(f"market_data/{dataset}", "binance", "BTCUSDT", DAY))


def _warehouse_rows(url):
    wh = Warehouse(url)
    try:
        out = {}
        for table in ("trades", "candles"):
            q = "1m" if table == "candles" else None
            loaded = wh.loaded(
                table,
                exchange="binance",
                symbols=["BTCUSDT"],
                days=[pd.Timestamp(DAY).date()],
                qualifier=q,
            )
            out[table] = next(iter(loaded.values()), 0)
        return out
    finally:
        wh.dispose()


def test_rerun_with_every_source_down_fails_and_keeps_lake_and_warehouse(
    resources, dagster_instance, local_exchange, postgres_db, monkeypatch, tmp_path
):
    monkeypatch.setenv("PETROSA_REST_MAX_RETRIES", "0")
    dagster_instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    resources = {**resources, "warehouse": WarehouseResource(url=postgres_db)}
    assets = [trades, candles, *LOADERS]
    first = dg.materialize(
        assets, partition_key=KEY, resources=resources, instance=dagster_instance
    )
    assert first.success
    before = {d: _read(tmp_path, d) for d in ("trades", "candles")}
    assert len(before["trades"]) == TRADES_PER_DAY and len(before["candles"]) == 1440
    assert _warehouse_rows(postgres_db) == {"trades": TRADES_PER_DAY, "candles": 1440}

    # the archive re-published with a bad checksum, REST unreachable
    local_exchange.faults.bad_checksum = True
    down = ExchangeResource(
        rest_base_url="http://127.0.0.1:9", vision_base_url=local_exchange.vision_base_url
    )
    second = dg.materialize(
        assets,
        partition_key=KEY,
        resources={**resources, "exchange": down},
        instance=dagster_instance,
        raise_on_error=False,
    )
    local_exchange.faults.bad_checksum = False
    assert not second.success
    failures = [e for e in second.all_events if e.event_type_value == "STEP_FAILURE"]
    messages = " ".join(str(e.event_specific_data.error.message) for e in failures)
    assert "sources failed" in messages and "ChecksumMismatch" in messages
    assert "kept the existing partition" in messages
    for dataset, frame in before.items():
        pd.testing.assert_frame_equal(_read(tmp_path, dataset), frame)
    assert _warehouse_rows(postgres_db) == {"trades": TRADES_PER_DAY, "candles": 1440}


def test_partial_outage_merges_the_kept_rows_instead_of_shrinking():
    previous = candle_rows(range(720), "archive")
    broken = FakeSource("archive", None, error=ConnectionError("archive down"))
    rest = FakeSource("rest", candle_rows(range(700, 1440), "rest"), confirms=False)
    sources = [broken, rest, PreviousPartitionSource(previous, "candles")]
    result = fill_partition(CandlesSpec(), CLOSED, sources)
    assert len(result.frame) == 1440 and result.missing == []
    assert result.added_by("previous") == 700
    assert result.source_mix() == {"archive": 700, "rest": 740}  # REST wins where both have it
    assert refuse_to_shrink("candles", KEY, result, previous) is None


def test_outage_that_only_gives_back_the_old_rows_fails_the_run():
    previous = candle_rows(range(1440), "archive")
    broken = FakeSource("archive", None, error=ConnectionError("archive down"))
    rest = FakeSource("rest", candle_rows(range(10), "rest"), confirms=False)
    result = fill_partition(
        CandlesSpec(), CLOSED, [broken, rest, PreviousPartitionSource(previous, "candles")]
    )
    assert len(result.frame) == 1440
    reason = refuse_to_shrink("candles", KEY, result, previous)
    assert reason and "archive: ConnectionError: archive down" in reason
    assert "1440 rows" in reason


def test_warehouse_never_replaces_rows_with_fewer(postgres_db):
    wh = Warehouse(postgres_db)
    wh.migrate()
    try:
        full = candle_rows(range(1440), "archive")
        day = CLOSED.day
        load = dict(exchange="binance", symbol="BTCUSDT", day=day, qualifier="1m")
        wh.load_partition("candles", full, **load)
        with pytest.raises(ShrinkRefusedError, match="refusing to replace 1440 rows with 0"):
            wh.load_partition("candles", full.iloc[0:0], never_fewer=True, **load)
        assert wh.loaded(
            "candles", exchange="binance", symbols=["BTCUSDT"], days=[day], qualifier="1m"
        ) == {("BTCUSDT", day): 1440}
        assert (
            len(
                wh.read(
                    "candles",
                    exchange="binance",
                    symbols=["BTCUSDT"],
                    start=pd.Timestamp(day, tz="UTC"),
                    end=pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1),
                    qualifier="1m",
                )
            )
            == 1440
        )
        wh.load_partition("candles", full, never_fewer=True, **load)  # as many rows: fine
    finally:
        wh.dispose()
