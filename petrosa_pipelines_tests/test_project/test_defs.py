"""The code location loads, and its asset keys, checks, jobs and sensors are what we expect.

A renamed asset key changes lake paths and partition history: it must fail here loudly.
"""

from pathlib import Path

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
        assert spec.group_name in {
            "exchanges",
            "landing",
            "market_data",
            "checks",
            "analytics",
            "storage",
        }
        assert spec.owners, spec.key
        assert spec.kinds, spec.key
        if spec.group_name == "market_data":
            assert "dagster/column_schema" in spec.metadata
            assert spec.tags["dataset"] == spec.key.path[-1]


#: every asset key of the code location, exactly: a new, renamed or lost key fails here
EXPECTED_ASSETS = {
    # ① exchange feeds and ③ the landing zone (external: not materialised by Dagster)
    "exchanges/binance_websocket",
    "exchanges/binance_archive",
    "exchanges/binance_rest",
    "landing/trades",
    "landing/candles",
    "landing/depth",
    "landing/funding",
    # ④ market data, ⑤ health, storage
    "market_data/trades",
    "market_data/candles",
    "market_data/depth",
    "market_data/funding",
    "checks/health",
    "storage/warehouse_trades",
    "storage/warehouse_candles",
    "storage/warehouse_depth",
    "storage/warehouse_funding",
    # ⑥ analytics
    "analytics/candles_from_1m",
    "analytics/candles_from_trades",
    "analytics/correlation",
    "analytics/correlation_rolling",
    "analytics/deviation",
    "analytics/funding",
    "analytics/liquidity",
    "analytics/liquidity_heatmap",
    "analytics/seasonality",
    "analytics/trade_sizes",
    "analytics/trend",
    "analytics/volatility",
    "analytics/volume",
    "analytics/volume_profile",
}


def test_asset_key_snapshot():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == EXPECTED_ASSETS


def _parents() -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    return {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }


def test_lineage_starts_at_the_exchange():
    """The README's layers 1-4 as edges: feeds -> landing -> market data <- archive, REST."""
    parents = _parents()
    ws, archive, rest = (f"exchanges/binance_{s}" for s in ("websocket", "archive", "rest"))
    for source in (ws, archive, rest):
        assert parents[source] == set()
    for dataset in ("trades", "candles", "depth", "funding"):
        assert parents[f"landing/{dataset}"] == {ws}
    for dataset in ("trades", "candles", "funding"):
        assert parents[f"market_data/{dataset}"] == {f"landing/{dataset}", archive, rest}
    assert parents["market_data/depth"] == {"landing/depth"}  # no book history anywhere
    assert parents["checks/health"] == {
        f"market_data/{d}" for d in ("trades", "candles", "depth", "funding")
    }
    graph = defs.resolve_asset_graph()
    external = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_external}
    assert external == {k for k in EXPECTED_ASSETS if k.split("/")[0] in ("exchanges", "landing")}


def test_every_asset_links_to_its_code():
    for spec in defs.resolve_all_asset_specs():
        refs = spec.metadata["dagster/code_references"].code_references
        assert refs and all(Path(r.file_path).is_file() for r in refs), spec.key


def _value(entry):
    """A metadata entry as given (TableSchema) or normalised (TableSchemaMetadataValue)."""
    return getattr(entry, "value", entry)


def test_analytics_column_lineage_is_in_the_column_descriptions():
    """The open-source UI hides dagster/column_lineage; the Columns table shows descriptions."""
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    for key, spec in specs.items():
        lineage = _value(spec.metadata.get("dagster/column_lineage"))
        if lineage is None:
            continue
        columns = {c.name: c for c in _value(spec.metadata["dagster/column_schema"]).columns}
        for column, deps in lineage.deps_by_column.items():
            text = columns[column].description or ""
            for dep in deps:
                assert f"{dep.asset_key.to_user_string()}.{dep.column_name}" in text, (key, column)
    vol = _value(specs["analytics/volatility"].metadata["dagster/column_schema"]).columns
    assert "From: market_data/candles.close" in next(
        c.description for c in vol if c.name == "volatility_day"
    )


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


def test_analytics_refresh_schedules_run_by_default():
    """The README presents the 900 s refresh as the behaviour: it must not start off."""
    repo = defs.get_repository_def()
    statuses = {s.name: s.default_status for s in repo.schedule_defs}
    assert statuses["analytics_rolling_refresh"] == dg.DefaultScheduleStatus.RUNNING
    assert statuses["analytics_cross_symbol_refresh"] == dg.DefaultScheduleStatus.RUNNING


def test_market_data_job_is_partitioned_by_symbol_day():
    job = defs.resolve_job_def("market_data_job")
    pdef = job.partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    assert [d.name for d in pdef.partitions_defs] == ["date", "symbol"]
