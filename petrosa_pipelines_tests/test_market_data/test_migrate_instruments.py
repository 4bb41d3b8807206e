"""``petrosa migrate-instruments`` on a real instance holding a materialised legacy partition.

An install from before instrument ids has ``symbols`` partitions ``BTCUSDT`` and keys
``2024-03-02|BTCUSDT``. After the migration the partition is ``binance-usdm:BTCUSDT``, shows
materialised with the same metadata, reads the same lake rows, and no run was started.
"""

import dagster as dg
import pandas as pd

from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import CANDLES_KEY, candles
from petrosa_pipelines.tooling import cli
from petrosa_pipelines.tooling.migrate import MIGRATED_FROM, migrate, plan_migration

DAY = "2024-03-02"
LEGACY = f"{DAY}|BTCUSDT"
QUALIFIED = f"{DAY}|binance-usdm:BTCUSDT"


def _materialise_legacy(resources, instance) -> pd.DataFrame:
    instance.add_dynamic_partitions("symbols", ["BTCUSDT", "ETHUSDT"])
    result = dg.materialize([candles], partition_key=LEGACY, resources=resources, instance=instance)
    assert result.success
    # the legacy key wrote the lake file Binance USD-M's instrument reads (storage name binance)
    lake = LocalLake(resources["io_manager"].base_path)
    return lake.read_frame(lake_path("market_data/candles", "binance", "BTCUSDT", DAY))


def _latest_metadata(instance, key):
    (rec,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CANDLES_KEY, asset_partitions=[key]), limit=1
    ).records
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


def test_legacy_partition_is_renamed_without_a_rebuild(resources, dagster_instance):
    instance = dagster_instance
    rows = _materialise_legacy(resources, instance)
    assert len(rows) == 1440
    runs_before = len(instance.get_runs())

    dry: list[str] = []
    plan = migrate(instance, dry_run=True, log=dry.append)
    assert plan.renames == {"BTCUSDT": "binance-usdm:BTCUSDT", "ETHUSDT": "binance-usdm:ETHUSDT"}
    assert [(c.asset, c.old, c.new) for c in plan.copies] == [(CANDLES_KEY, LEGACY, QUALIFIED)]
    assert f"would: materialisation market_data/candles {LEGACY} -> {QUALIFIED}" in dry
    # a dry run changes nothing
    assert sorted(instance.get_dynamic_partitions("symbols")) == ["BTCUSDT", "ETHUSDT"]
    assert QUALIFIED not in instance.get_materialized_partitions(CANDLES_KEY)

    migrate(instance, log=lambda _: None)
    assert sorted(instance.get_dynamic_partitions("symbols")) == [
        "binance-usdm:BTCUSDT",
        "binance-usdm:ETHUSDT",
    ]
    assert QUALIFIED in instance.get_materialized_partitions(CANDLES_KEY)
    old, new = _latest_metadata(instance, LEGACY), _latest_metadata(instance, QUALIFIED)
    assert new.pop(MIGRATED_FROM) == LEGACY
    assert new == old  # same row count, sources, schema: the UI shows the same fill
    assert len(instance.get_runs()) == runs_before  # nothing was re-run

    # the qualified partition reads the very rows the legacy one wrote
    again = resources["io_manager"].read_partition(CANDLES_KEY, QUALIFIED)
    pd.testing.assert_frame_equal(again, rows)

    # idempotent: a second run finds nothing and records nothing
    events = len(instance.fetch_materializations(CANDLES_KEY, limit=100).records)
    second: list[str] = []
    assert migrate(instance, log=second.append).empty
    assert second[0].startswith("nothing to migrate")
    assert len(instance.fetch_materializations(CANDLES_KEY, limit=100).records) == events
    assert plan_migration(instance).copies == []


def test_cli_runs_the_migration_on_dagster_home(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("symbols", ["SOLUSDT", "binance-usdm:BTCUSDT", "bad!"])
    assert cli.main(["migrate-instruments", "--dry-run"]) == 0
    assert "would: partition SOLUSDT -> binance-usdm:SOLUSDT" in capsys.readouterr().out
    assert cli.main(["migrate-instruments"]) == 0
    out = capsys.readouterr().out
    assert "migrated 1 instruments" in out and "left alone (not an instrument): bad!" in out
    with dg.DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("symbols")) == [
            "bad!",
            "binance-usdm:BTCUSDT",
            "binance-usdm:SOLUSDT",
        ]
