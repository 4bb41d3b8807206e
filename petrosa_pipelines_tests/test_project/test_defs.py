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


EXPECTED_ASSETS = {
    "market_data/trades",
    "market_data/candles",
    "market_data/depth",
    "market_data/funding",
    "checks/health",
    "storage/warehouse_trades",
    "storage/warehouse_candles",
    "storage/warehouse_depth",
    "storage/warehouse_funding",
}


def test_asset_key_snapshot():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    analytics = sorted(k for k in keys if k.startswith("analytics/"))
    assert len(analytics) >= 14, analytics
    assert keys - EXPECTED_ASSETS == set(analytics)


def test_every_market_data_asset_has_partition_aware_checks():
    graph = defs.resolve_asset_graph()
    by_asset: dict[str, set[str]] = {}
    for ck in graph.asset_check_keys:
        by_asset.setdefault(ck.asset_key.to_user_string(), set()).add(ck.name)
    for dataset in ("trades", "candles", "depth", "funding"):
        assert len(by_asset[f"market_data/{dataset}"]) >= 4, by_asset.get(f"market_data/{dataset}")


def test_schedules_jobs_and_sensors_snapshot():
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert {
        "market_data_job",
        "audit_job",
        "analytics_job",
        "analytics_rolling_job",
        "analytics_cross_symbol_job",
    } <= jobs
    sensors = {s.name for s in repo.sensor_defs}
    assert {
        "check_failure_alert_sensor",
        "auto_backfill_sensor",
        "health_refresh_sensor",
        "analytics_automation",
    } <= sensors
    assert len(repo.schedule_defs) >= 2


def test_market_data_job_is_partitioned_by_symbol_day():
    job = defs.resolve_job_def("market_data_job")
    pdef = job.partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    assert [d.name for d in pdef.partitions_defs] == ["date", "symbol"]
