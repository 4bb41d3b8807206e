"""``petrosa migrate-depth``: v1 depth files become v2, proved lossless, and recorded."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from petrosa_pipelines.catalog import depth_layout as dl
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.tooling import migrate_depth as md
from petrosa_pipelines_tests.test_catalog.test_depth_layout import BOOKS, same_levels, wide

PATH = lake_path(md.DEPTH_DIR, "binance", "BTCUSDT", "2026-11-30")
OTHER = lake_path(md.DEPTH_DIR, "binance", "ETHUSDT", "2026-11-30")


def test_v1_files_are_rewritten_as_v2_and_a_second_run_finds_nothing(tmp_path):
    lake = LocalLake(tmp_path)
    frame = wide(BOOKS)
    lake.write_frame(PATH, dl.to_long(frame))
    lake.write_frame(OTHER, frame)  # already v2
    lines: list[str] = []
    done = md.migrate_lake(lake, log=lines.append)
    assert done.rewritten == {PATH: (9, 3)} and done.already == [OTHER] and not done.refused
    assert md._is_v1(lake.read_bytes(PATH)) is False
    assert same_levels(lake.read_frame(PATH), frame)
    again = md.migrate_lake(lake, log=lines.append)
    assert not again.rewritten and sorted(again.already) == sorted([PATH, OTHER])


def test_dry_run_changes_nothing(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_frame(PATH, dl.to_long(wide(BOOKS)))
    before = lake.read_bytes(PATH)
    done = md.migrate_lake(lake, dry_run=True, log=lambda _: None)
    assert done.rewritten == {PATH: (9, 3)}
    assert lake.read_bytes(PATH) == before


def test_a_file_that_would_lose_a_row_is_left_alone(tmp_path):
    """Two v1 rows for one (snapshot, side, level) cannot both live in v2: not rewritten."""
    lake = LocalLake(tmp_path)
    long = dl.to_long(wide(BOOKS))
    dup = pd.concat([long, long.iloc[[0]].assign(price=123.0)], ignore_index=True)
    lake.write_frame(PATH, dup)
    before = lake.read_bytes(PATH)
    done = md.migrate_lake(lake, log=lambda _: None)
    assert PATH in done.refused and not done.rewritten
    assert lake.read_bytes(PATH) == before


def test_the_instance_records_the_new_row_count_and_version(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_frame(PATH, dl.to_long(wide(BOOKS)))
    key = "2026-11-30|binance-usdm:BTCUSDT"
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("symbols", ["binance-usdm:BTCUSDT"])
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=md.DEPTH_ASSET,
                partition=key,
                metadata={"dagster/row_count": 9, "schema_version": 1, "note": "kept"},
                tags={"dagster/code_version": "abc"},
            )
        )
        done = md.migrate_lake(lake, log=lambda _: None)
        assert md.record_in_instance(instance, done, log=lambda _: None) == [key]
        latest = (
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=md.DEPTH_ASSET, asset_partitions=[key]), limit=1
            )
            .records[0]
            .asset_materialization
        )
    assert latest.metadata["dagster/row_count"].value == 3
    assert latest.metadata["schema_version"].value == 2
    assert latest.metadata[md.MIGRATED_FROM_SCHEMA].value == 1
    assert latest.metadata["note"].value == "kept"
    assert latest.tags["dagster/code_version"] == "abc"
    assert np.isfinite(lake.read_frame(PATH)["last_update_id"]).all()


def test_the_command_rewrites_the_configured_lake(tmp_path, monkeypatch, capsys):
    from petrosa_pipelines.tooling.cli import main

    lake = LocalLake(tmp_path / "lake")
    lake.write_frame(PATH, dl.to_long(wide(BOOKS)))
    monkeypatch.setenv("PETROSA_LAKE_PATH", str(tmp_path / "lake"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["migrate-depth", "--dry-run"]) == 0
    assert "1 to rewrite" in capsys.readouterr().out and md._is_v1(lake.read_bytes(PATH))
    assert main(["migrate-depth"]) == 0
    assert "1 rewritten" in capsys.readouterr().out and not md._is_v1(lake.read_bytes(PATH))
