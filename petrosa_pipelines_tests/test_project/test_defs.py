"""The code location loads, and its asset keys, checks, jobs and sensors are what we expect.

A renamed asset key changes lake paths and partition history: it must fail here loudly.
"""

import dagster as dg

from petrosa_pipelines.definitions import defs


def test_definitions_validate():
    repo = defs.get_repository_def()
    assert repo.get_all_jobs()


def test_market_data_asset_keys_are_stable():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {
        "market_data/trades",
        "market_data/candles",
        "market_data/depth",
        "market_data/funding",
    } <= keys


def test_every_asset_is_catalogued():
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, spec.key
        assert spec.group_name in {"market_data", "checks", "analytics", "storage", "ingest"}
        assert spec.owners, spec.key
        assert spec.kinds, spec.key
        if spec.group_name == "market_data":
            assert "dagster/column_schema" in spec.metadata
            assert spec.tags["dataset"] == spec.key.path[-1]


def test_market_data_job_is_partitioned_by_symbol_day():
    job = defs.resolve_job_def("market_data_job")
    pdef = job.partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    assert [d.name for d in pdef.partitions_defs] == ["date", "symbol"]
