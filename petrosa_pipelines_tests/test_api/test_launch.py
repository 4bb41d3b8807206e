"""Materialise and backfill from Python with the Dagster instance on the real PostgreSQL."""

import datetime as dt

import dagster as dg
import pytest

from petrosa_pipelines import api
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions, split_partition_key
from petrosa_pipelines.serving.assets import build_warehouse_asset, warehouse_asset_key
from petrosa_pipelines.serving.launch import partition_keys
from petrosa_pipelines.serving.warehouse import Warehouse
from petrosa_pipelines_tests.test_storage import frames
from resources.lake_io_manager import LakeIOManager
from resources.warehouse import WarehouseResource

D1, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 4)


@dg.asset(
    key=["market_data", "trades"],
    partitions_def=daily_symbol_partitions,
    group_name="market_data",
    metadata={"exchange": "binance"},
)
def fake_trades(context: dg.AssetExecutionContext):
    """Stands in for the exchange-backed asset: a small deterministic frame per symbol-day."""
    day, symbol = split_partition_key(context.partition_key)
    return frames.trades(symbol.symbol, day, n=50, first_id=1 + 1000 * day.day)


def make_defs(lake_dir, url):
    return dg.Definitions(
        assets=[fake_trades, build_warehouse_asset("trades")],
        jobs=[
            dg.define_asset_job(
                "market_data_job", selection=dg.AssetSelection.groups("market_data")
            )
        ],
        resources={
            "io_manager": LakeIOManager(base_path=str(lake_dir)),
            "warehouse": WarehouseResource(url=url),
        },
    )


@pytest.fixture
def pg_instance(tmp_path, postgres_db):
    home = tmp_path / "dagster_home"
    home.mkdir()
    psycopg2_url = postgres_db.replace("postgresql://", "postgresql+psycopg2://", 1)
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {psycopg2_url}\ntelemetry:\n  enabled: false\n"
    )
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def test_partition_keys_cover_days_times_symbols():
    assert partition_keys(["btcusdt", "binance-usdm:ETHUSDT"], D1, D3) == [
        "2024-01-02|binance-usdm:BTCUSDT",
        "2024-01-02|binance-usdm:ETHUSDT",
        "2024-01-03|binance-usdm:BTCUSDT",
        "2024-01-03|binance-usdm:ETHUSDT",
    ]
    with pytest.raises(ValueError, match="unknown datasets"):
        api.materialize_partitions(["klines"], ["BTCUSDT"], D1, D3)


def test_materialise_load_and_read_back_on_postgres_instance(pg_instance, tmp_path, postgres_db):
    assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
    defs = make_defs(tmp_path / "lake", postgres_db)
    outcomes = api.materialize_partitions(
        "trades", ["BTCUSDT"], D1, D3, instance=pg_instance, defs=defs
    )
    assert [(o.partition_key, o.success) for o in outcomes] == [
        ("2024-01-02|binance-usdm:BTCUSDT", True),
        ("2024-01-03|binance-usdm:BTCUSDT", True),
    ]
    lake = LocalLake(tmp_path / "lake")
    assert lake.exists(lake_path("market_data/trades", "binance", "BTCUSDT", "2024-01-03"))
    mats = pg_instance.get_materialized_partitions(dg.AssetKey(["market_data", "trades"]))
    assert mats == {"2024-01-02|binance-usdm:BTCUSDT", "2024-01-03|binance-usdm:BTCUSDT"}

    # the storage asset loads the same partition into the warehouse, twice: nothing changes
    for _ in range(2):
        result = dg.materialize(
            [fake_trades, build_warehouse_asset("trades")],
            selection=[warehouse_asset_key("trades")],
            partition_key="2024-01-02|binance-usdm:BTCUSDT",
            instance=pg_instance,
            resources={
                "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
                "warehouse": WarehouseResource(url=postgres_db),
            },
        )
        assert result.success
    wh = Warehouse(postgres_db)
    try:
        loaded = wh.loaded("trades", exchange="binance", symbols=["BTCUSDT"], days=[D1, D3])
        assert loaded == {("BTCUSDT", D1): 50}
        src = api.DataSources(
            lake=LocalLake(tmp_path / "empty"),
            warehouse=wh,
            now=lambda: dt.datetime(2024, 2, 1, tzinfo=dt.UTC),
        )
        r = api.load_trades("BTCUSDT", D1, D1 + dt.timedelta(days=1), sources=src)
        assert r.complete and len(r.frame) == 50 and r.partitions[0].source == "warehouse"
    finally:
        wh.dispose()


def test_launch_backfill_records_an_asset_backfill(pg_instance, tmp_path, postgres_db):
    defs = make_defs(tmp_path / "lake", postgres_db)
    backfill_id = api.launch_backfill(
        ["trades"], ["BTCUSDT", "ETHUSDT"], D1, D3, instance=pg_instance, defs=defs
    )
    backfill = pg_instance.get_backfill(backfill_id)
    assert backfill.status.value == "REQUESTED"
    subset = backfill.asset_backfill_data.target_subset
    keys = {
        str(pk)
        for pk in subset.get_partitions_subset(
            dg.AssetKey(["market_data", "trades"])
        ).get_partition_keys()
    }
    assert keys == set(partition_keys(["BTCUSDT", "ETHUSDT"], D1, D3))
    assert set(pg_instance.get_dynamic_partitions("symbols")) == {
        "binance-usdm:BTCUSDT",
        "binance-usdm:ETHUSDT",
    }
