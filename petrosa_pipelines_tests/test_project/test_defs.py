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
            "market_data_history",
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
    # ④ before the rolling window of day partitions: the same datasets by instrument-month
    "market_data/history/trades",
    "market_data/history/candles",
    "market_data/history/depth",
    "market_data/history/funding",
    # ① each registered venue's feeds, named by storage name, one per feed its capabilities
    # declare, and ③ the landing zone (external: not materialised by Dagster)
    "exchanges/binance_websocket",
    "exchanges/binance_archive",
    "exchanges/binance_rest",
    "exchanges/bybit-linear_websocket",
    "exchanges/bybit-linear_archive",  # daily trades only (public.bybit.com/trading)
    "exchanges/bybit-linear_rest",  # candles and funding (recent-trade is no history)
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
    # the warehouse loaders of history days, by instrument-month
    "storage/history/warehouse_trades",
    "storage/history/warehouse_candles",
    "storage/history/warehouse_depth",
    "storage/history/warehouse_funding",
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


def test_the_warehouse_job_loads_day_partitions_only():
    job = defs.resolve_job_def("warehouse_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == {f"storage/warehouse_{d}" for d in ("trades", "candles", "depth", "funding")}


def _parents() -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    return {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }


def test_lineage_starts_at_the_exchange():
    """The README's layers 1-4 as edges: feeds -> landing -> market data <- archive, REST, for
    every venue, each feed linked only to the datasets its capabilities say it serves."""
    parents = _parents()
    binance = {s: f"exchanges/binance_{s}" for s in ("websocket", "archive", "rest")}
    bybit = {s: f"exchanges/bybit-linear_{s}" for s in ("websocket", "archive", "rest")}
    for source in (*binance.values(), *bybit.values()):
        assert parents[source] == set()
    for dataset in ("trades", "candles", "depth", "funding"):
        assert parents[f"landing/{dataset}"] == {binance["websocket"], bybit["websocket"]}
    assert parents["market_data/trades"] == {
        "landing/trades",
        binance["archive"],
        binance["rest"],
        bybit["archive"],  # Bybit's trades REST reaches back 1000 trades: no history edge
    }
    for dataset in ("candles", "funding"):  # Bybit archives trades only
        assert parents[f"market_data/{dataset}"] == {
            f"landing/{dataset}",
            binance["archive"],
            binance["rest"],
            bybit["rest"],
        }
    # book history only where a venue publishes it: Bybit's daily order-book files
    assert parents["market_data/depth"] == {"landing/depth", bybit["archive"]}
    assert parents["checks/health"] == {
        f"market_data/{d}" for d in ("trades", "candles", "depth", "funding")
    }
    graph = defs.resolve_asset_graph()
    external = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_external}
    assert external == {k for k in EXPECTED_ASSETS if k.split("/")[0] in ("exchanges", "landing")}


def test_supervisor_observations_name_the_venue_with_the_group():
    """Landing assets hold every venue's data: a group's observation says whose group it is."""
    from petrosa_pipelines.landing.assets import supervisor_observations

    (obs,) = supervisor_observations(
        ["trades"], "majors", "requested run generation 0", "r1", exchange="bybit-linear"
    )
    assert obs.asset_key == dg.AssetKey(["landing", "trades"])
    assert {k: v.value for k, v in obs.metadata.items()} == {
        "exchange": "bybit-linear",
        "ingest_group": "majors",
        "supervisor_action": "requested run generation 0",
        "ingest_run": "r1",
    }


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
    # exact for trades: the completeness evidence of each kind of venue is always registered
    assert by_asset["market_data/trades"] == {
        "trades_id_continuous",
        "trades_cover_candles",
        "trades_unique",
        "trades_time_ordered",
        "trades_values_valid",
        "trades_within_candles",
        "trades_sources_agree",
        "fresh",
        "gx_suite",
        "health",
        "schema_version_compatible",
    }


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
        "audit_sensor",
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
