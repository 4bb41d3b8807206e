"""The catalog export reads the asset graph; the schema registry holds every dataset version."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import dagster as dg
import pyarrow as pa
import pytest

import resources
from petrosa_pipelines.analytics import ANALYTICS_ASSETS
from petrosa_pipelines.catalog import versions
from petrosa_pipelines.catalog.export import export_catalog
from petrosa_pipelines.catalog.schema_checks import build_schema_version_checks, evaluate
from petrosa_pipelines.catalog.schemas import CANDLES, DATASETS, Column
from petrosa_pipelines.market_data.assets import CANDLES_KEY, MARKET_DATA_ASSETS, table_schema

DEFS = dg.Definitions.merge(
    resources.defs(), dg.Definitions(assets=[*MARKET_DATA_ASSETS, *ANALYTICS_ASSETS])
)


def test_json_export_covers_every_asset_with_catalog_fields():
    data = json.loads(export_catalog(DEFS, "json"))
    entries = {e["key"]: e for e in data["assets"]}
    assert set(entries) == {k.to_user_string() for k in DEFS.resolve_all_asset_keys()}
    for key, e in entries.items():
        assert e["description"] and e["owners"] and e["kinds"] and e["group"], key
        # one asset holds every venue's instruments: no exchange is fixed on the asset
        assert e["tags"]["dataset"] and "exchange" not in e["tags"], key
        assert e["columns"] and all(c["description"] for c in e["columns"]), key
        assert not any(t.startswith("dagster/kind/") for t in e["tags"]), key
    vol = entries["analytics/volatility"]
    # its window of candles, and the same-day anchor that keeps automation from fanning out
    assert vol["upstream"] == ["analytics/candles_from_1m", "market_data/candles"]
    assert "market_data/candles.high" in vol["column_lineage"]["volatility_day"]
    assert "analytics/volatility" in entries["market_data/candles"]["downstream"]
    assert entries["market_data/candles"]["schema_version"] == CANDLES.version
    assert entries["market_data/candles"]["partitions"] == (
        "multi(date: DailyPartitionsDefinition, symbol: DynamicPartitionsDefinition of "
        "instrument ids)"
    )
    assert "blocking checks passed" in vol["automation"]
    assert entries["analytics/correlation"]["partitions"] == "DailyPartitionsDefinition"


def test_markdown_export_has_a_section_and_column_table_per_asset():
    md = export_catalog(DEFS, "markdown")
    assert md.startswith("# petrosa_pipelines data catalog")
    for key in DEFS.resolve_all_asset_keys():
        assert f"## {key.to_user_string()}" in md
    assert "| volatility_window | double |" in md
    with pytest.raises(ValueError, match="unknown catalog format"):
        export_catalog(DEFS, "yaml")


def test_export_adds_row_count_and_time_range_from_the_instance(dagster_instance):
    @dg.asset(
        key=["demo", "t"],
        description="d",
        owners=["team:x"],
        kinds={"pandas"},
        tags={"dataset": "t", "exchange": "binance"},
        metadata={"dagster/column_schema": table_schema(CANDLES)},
    )
    def t():
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": 1440,
                "first_time": "2024-01-01 00:00:00+00:00",
                "last_time": "2024-01-01 23:59:00+00:00",
            }
        )

    dg.materialize([t], instance=dagster_instance)
    out = json.loads(export_catalog(dg.Definitions(assets=[t]), "json", instance=dagster_instance))[
        "assets"
    ][0]
    assert out["row_count"] == 1440 and out["first_time"].startswith("2024-01-01 00:00")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_live_schema_matches_its_stored_version(name):
    assert versions.check_schema(DATASETS[name]) == []


def test_removing_renaming_or_retyping_a_column_fails_unless_the_version_is_raised(tmp_path):
    versions.write_snapshot(CANDLES, tmp_path)
    cols = list(CANDLES.columns)
    removed = replace(CANDLES, columns=tuple(c for c in cols if c.name != "quote_volume"))
    renamed = replace(
        CANDLES, columns=tuple(replace(c, name="qty") if c.name == "volume" else c for c in cols)
    )
    retyped = replace(
        CANDLES,
        columns=tuple(replace(c, type=pa.string()) if c.name == "open" else c for c in cols),
    )
    for changed, word in ((removed, "removed"), (renamed, "renamed"), (retyped, "retyped")):
        problems = versions.check_schema(changed, tmp_path)
        assert problems and word in problems[0] and "without raising" in problems[0]
        bumped = replace(changed, version=CANDLES.version + 1)
        assert "not stored yet" in versions.check_schema(bumped, tmp_path)[0]
        versions.write_snapshot(bumped, tmp_path)
        assert versions.check_schema(bumped, tmp_path) == []
        (tmp_path / "candles" / f"v{bumped.version}.json").unlink()


def test_additive_nullable_change_is_compatible_but_the_snapshot_must_be_refreshed(tmp_path):
    versions.write_snapshot(CANDLES, tmp_path)
    added = replace(CANDLES, columns=(*CANDLES.columns, Column("vwap", pa.float64(), "v", True)))
    diff = versions.compare(versions.snapshot(CANDLES), versions.snapshot(added))
    assert diff.ok and diff.compatible == ["nullable column 'vwap' added"]
    assert "stale" in versions.check_schema(added, tmp_path)[0]
    required = replace(CANDLES, columns=(*CANDLES.columns, Column("x", pa.int64(), "x")))
    assert not versions.compare(versions.snapshot(CANDLES), versions.snapshot(required)).ok


def test_schema_change_check_fails_on_a_breaking_change_in_the_lake(dagster_instance):
    schema = table_schema(CANDLES)
    narrowed = dg.TableSchema(columns=[c for c in schema.columns if c.name != "trade_count"])

    def build(column_schema):
        @dg.asset(key=CANDLES_KEY)
        def candles():
            return dg.MaterializeResult(
                metadata={"dagster/column_schema": column_schema, "schema_version": 1}
            )

        return candles

    dg.materialize([build(schema)], instance=dagster_instance)
    assert evaluate(dagster_instance, CANDLES_KEY, "candles").passed
    dg.materialize([build(narrowed)], instance=dagster_instance)
    result = evaluate(dagster_instance, CANDLES_KEY, "candles")
    assert not result.passed
    assert "trade_count" in json.dumps(result.metadata["problems"].value)
    checks = build_schema_version_checks({CANDLES_KEY: "candles"})
    assert [next(iter(c.check_keys)).name for c in checks] == ["schema_version_compatible"]


def test_stored_snapshots_are_plain_json_with_every_column():
    for name, schema in DATASETS.items():
        stored = versions.stored_versions(name)[schema.version]
        assert [c["name"] for c in stored["columns"]] == schema.column_names
        assert copy.deepcopy(stored) == versions.snapshot(schema)
