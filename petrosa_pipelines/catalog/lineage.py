"""Lineage the asset graph shows: edges no asset body declares, column lineage, code links.

Three gaps of the graph as the asset functions declare it (issue: "lineage starts at
market_data"):

- A market-data asset reads its sources through resources, not inputs, so nothing links it to
  the landing zone, the archives or REST. ``market_data_upstream`` derives those edges from the
  failover order itself (``market_data.sources.sources_for``), asked for every registered venue
  with its capabilities, so the graph cannot drift from what a run reads: a venue's archive or
  REST feed is an edge only for the datasets it serves.
- ``checks/health`` reads check results, not assets: it gets the market-data assets as deps.
- ``dagster/column_lineage`` is shown only by Dagster+ (https://docs.dagster.io/guides/build/
  assets/metadata-and-tags/column-level-lineage), and the open-source UI hides the entry.
  ``with_visible_column_lineage`` writes each column's sources into its description in the
  definition's column schema, which the UI's Columns table shows (it prefers the definition's
  description over a materialisation's).

``with_lineage`` applies all of it, and ``dg.with_source_code_references`` links every asset to
its code (Dagster's ``dagster/_core/definitions/metadata/source_code.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from petrosa_pipelines.instruments import MARKET_DATA
from petrosa_pipelines.landing.assets import (
    ARCHIVE,
    REST,
    landing_key,
    registered_venues,
    source_key,
)

MARKET_DATA_LAYER = MARKET_DATA
HEALTH_KEY = dg.AssetKey(["checks", "health"])
#: ``HistorySource.name`` of each source -> the asset it reads, given (dataset, storage name)
_SOURCE_ASSET: dict[str, Callable[[str, str], dg.AssetKey]] = {
    "ws": lambda dataset, _: landing_key(dataset),
    "archive": lambda _, exchange: source_key(exchange, ARCHIVE),
    "rest": lambda _, exchange: source_key(exchange, REST),
}


def market_data_upstream(dataset: str) -> list[dg.AssetKey]:
    """The assets a ``market_data/<dataset>`` partition is filled from: per registered venue,
    in failover order (the landing zone, shared by every venue, once).

    Asked of ``sources_for`` with every source present and each venue's name, so its declared
    capabilities decide which archive and REST feeds are asked (the previous partition, the
    last source, is the asset itself and no edge).
    """
    from petrosa_pipelines.market_data.sources import sources_for

    present = object()
    out: list[dg.AssetKey] = []
    for venue in registered_venues():
        sources = sources_for(
            dataset, landing=present, archive=present, rest=present, exchange=venue.name
        )
        for s in sources:
            key = _SOURCE_ASSET[s.name](dataset, venue.name) if s.name in _SOURCE_ASSET else None
            if key is not None and key not in out:
                out.append(key)
    return out


def _market_dataset(key: dg.AssetKey) -> str | None:
    path = key.path
    return path[1] if len(path) == 2 and path[0] == MARKET_DATA_LAYER else None


def column_sources(lineage: dg.TableColumnLineage) -> dict[str, list[str]]:
    """``{column: ["asset/key.column", ...]}`` of a column lineage."""
    return {
        col: [f"{d.asset_key.to_user_string()}.{d.column_name}" for d in deps]
        for col, deps in lineage.deps_by_column.items()
    }


def describe_column_lineage(
    schema: dg.TableSchema, lineage: dg.TableColumnLineage
) -> dg.TableSchema:
    """``schema`` with " From: <asset>.<column>, ..." appended to each derived column."""
    sources = column_sources(lineage)
    columns = []
    for c in schema.columns:
        src = sources.get(c.name)
        if src:
            text = f"{c.description.rstrip()} " if c.description else ""
            c = dg.TableColumn(
                name=c.name,
                type=c.type,
                description=f"{text}From: {', '.join(src)}.",
                constraints=c.constraints,
                tags=c.tags,
            )
        columns.append(c)
    return dg.TableSchema(columns=columns, constraints=schema.constraints)


def _meta_value(value: Any) -> Any:
    return getattr(value, "value", value)


def with_visible_column_lineage(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` whose column descriptions name their source columns (unchanged without both a
    column schema and a column lineage)."""
    meta = dict(spec.metadata or {})
    schema = _meta_value(meta.get("dagster/column_schema"))
    lineage = _meta_value(meta.get("dagster/column_lineage"))
    if not isinstance(schema, dg.TableSchema) or not isinstance(lineage, dg.TableColumnLineage):
        return spec
    meta["dagster/column_schema"] = describe_column_lineage(schema, lineage)
    return spec.replace_attributes(metadata=meta)


def _with_edges(spec: dg.AssetSpec, market_keys: Sequence[dg.AssetKey]) -> dg.AssetSpec:
    dataset = _market_dataset(spec.key)
    if dataset is not None:
        extra = market_data_upstream(dataset)
    elif spec.key == HEALTH_KEY:
        extra = list(market_keys)
    else:
        return spec
    have = {d.asset_key for d in spec.deps}
    return spec.replace_attributes(deps=[*spec.deps, *(k for k in extra if k not in have)])


def with_lineage(
    assets: Sequence[Any], market_keys: Sequence[dg.AssetKey] | None = None
) -> list[Any]:
    """``assets`` with the graph edges, visible column lineage and code references added.

    Accepts what ``dg.Definitions(assets=...)`` accepts; specs and definitions this module
    knows nothing about pass through unchanged (apart from their code references).
    ``market_keys`` (the market-data assets ``checks/health`` depends on) default to those
    among ``assets``.
    """
    if market_keys is None:
        market_keys = [
            key
            for a in assets
            if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)
            for key in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])
            if _market_dataset(key)
        ]

    def fix(spec: dg.AssetSpec) -> dg.AssetSpec:
        return with_visible_column_lineage(_with_edges(spec, market_keys))

    mapped = [
        dg.map_asset_specs(fix, [a])[0] if isinstance(a, dg.AssetsDefinition | dg.AssetSpec) else a
        for a in assets
    ]
    with warnings.catch_warnings():
        # code references are a Dagster beta feature, used on purpose
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(mapped))


__all__ = [
    "column_sources",
    "describe_column_lineage",
    "market_data_upstream",
    "with_lineage",
    "with_visible_column_lineage",
]
