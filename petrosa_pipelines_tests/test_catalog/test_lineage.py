"""Lineage the graph shows: edges derived from the failover order, column lineage in the
column descriptions, code references; and the catalog export reads them back."""

from __future__ import annotations

import json

import dagster as dg

from petrosa_pipelines.catalog.export import export_catalog
from petrosa_pipelines.catalog.lineage import (
    describe_column_lineage,
    market_data_upstream,
    with_lineage,
)
from petrosa_pipelines.market_data.sources import sources_for

WS_LANDING = {d: f"landing/{d}" for d in ("trades", "candles", "depth", "funding")}


BINANCE_HISTORY = ["exchanges/binance_archive", "exchanges/binance_rest"]


def test_market_data_edges_follow_the_failover_order_of_each_venue():
    """Venue by venue in registry order, each venue's feeds in its failover order, and only
    the feeds its capabilities declare for the dataset (Bybit: trades archive, no trades REST;
    candles and funding REST, no archive)."""
    upstream = {d: [k.to_user_string() for k in market_data_upstream(d)] for d in WS_LANDING}
    assert upstream["trades"] == [
        "landing/trades",
        *BINANCE_HISTORY,
        "exchanges/bybit-linear_archive",
    ]
    for dataset in ("candles", "funding"):
        assert upstream[dataset] == [
            WS_LANDING[dataset],
            *BINANCE_HISTORY,
            "exchanges/bybit-linear_rest",
        ]
    # book history only where a venue publishes it (Bybit's daily order-book files)
    assert upstream["depth"] == ["landing/depth", "exchanges/bybit-linear_archive"]
    # the same order a run tries its sources in
    names = [s.name for s in sources_for("candles", object(), object(), object(), "binance")]
    assert names == ["ws", "archive", "rest"]


def test_column_lineage_is_written_into_the_column_descriptions():
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("vol", "double", description="Volatility."),
            dg.TableColumn("n", "int"),
            dg.TableColumn("symbol", "string", description="Symbol."),
        ]
    )
    candles = dg.AssetKey(["market_data", "candles"])
    lineage = dg.TableColumnLineage(
        deps_by_column={
            "vol": [dg.TableColumnDep(candles, "high"), dg.TableColumnDep(candles, "low")],
            "n": [dg.TableColumnDep(candles, "open_time")],
        }
    )
    out = {c.name: c.description for c in describe_column_lineage(schema, lineage).columns}
    assert out == {
        "vol": "Volatility. From: market_data/candles.high, market_data/candles.low.",
        "n": "From: market_data/candles.open_time.",
        "symbol": "Symbol.",
    }


def test_with_lineage_adds_health_deps_and_code_references_only():
    @dg.asset(key=["checks", "health"])
    def health() -> None: ...

    @dg.asset(key=["other", "thing"], deps=["x"])
    def thing() -> None: ...

    market = [dg.AssetKey(["market_data", "trades"]), dg.AssetKey(["market_data", "depth"])]
    new_health, new_thing = with_lineage([health, thing], market)
    assert set(new_health.asset_deps[health.key]) == set(market)
    assert list(new_thing.asset_deps[thing.key]) == [dg.AssetKey("x")]
    for a in (new_health, new_thing):
        assert "dagster/code_references" in a.specs_by_key[a.key].metadata


def test_catalog_export_of_the_code_location_starts_at_the_exchange():
    from petrosa_pipelines.definitions import defs

    entries = {e["key"]: e for e in json.loads(export_catalog(defs, "json"))["assets"]}
    assert entries["market_data/depth"]["upstream"] == [
        "exchanges/bybit-linear_archive",
        "landing/depth",
    ]
    assert entries["landing/trades"]["upstream"] == [
        "exchanges/binance_websocket",
        "exchanges/bybit-linear_websocket",
    ]
    assert entries["exchanges/binance_rest"]["downstream"] == [
        "market_data/candles",
        "market_data/funding",
        "market_data/trades",
    ]
    assert entries["exchanges/bybit-linear_rest"]["downstream"] == [
        "market_data/candles",
        "market_data/funding",
    ]
    assert entries["exchanges/bybit-linear_archive"]["downstream"] == [
        "market_data/depth",  # Bybit's daily order-book files
        "market_data/trades",
    ]
    assert entries["checks/health"]["upstream"] == [
        "market_data/candles",
        "market_data/depth",
        "market_data/funding",
        "market_data/trades",
    ]


def test_a_venue_without_archives_gets_no_archive_asset_and_no_archive_edge(monkeypatch):
    """Source assets and market-data edges follow each venue's declared capabilities."""
    from dataclasses import replace

    from petrosa_pipelines import exchanges
    from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
    from petrosa_pipelines.landing.assets import exchange_source_specs

    class NoArchiveVenue(BybitLinearAdapter):
        """A venue with REST candles only and no archives."""

        venue = "noarchive-linear"
        name = "noarchive-linear"
        capabilities = replace(
            BybitLinearAdapter.capabilities, archives=(), rest_reach_ms={"candles": None}
        )

    monkeypatch.setitem(exchanges.EXCHANGES, NoArchiveVenue.venue, NoArchiveVenue)
    monkeypatch.setattr(
        "petrosa_pipelines.landing.assets._endpoint", lambda venue, kind: ("http://x", "VAR")
    )
    keys = {s.key.to_user_string() for s in exchange_source_specs()}
    assert {k for k in keys if k.startswith("exchanges/noarchive")} == {
        "exchanges/noarchive-linear_websocket",
        "exchanges/noarchive-linear_rest",
    }
    for dataset in WS_LANDING:
        upstream = {k.to_user_string() for k in market_data_upstream(dataset)}
        assert "exchanges/noarchive-linear_archive" not in upstream
        assert ("exchanges/noarchive-linear_rest" in upstream) == (dataset == "candles")
