"""The first three layers in the asset graph: exchange sources (1), the landing zone (3), and
what the ingest (2) reports on it.

Neither the exchange nor the landing zone is materialised by Dagster: the exchange is outside
it, and the landing zone is written continuously by the long-running ``ingest`` job. Both are
external assets (``dg.AssetSpec`` without a function:
https://docs.dagster.io/concepts/assets/external-assets), so the graph shows where
``market_data`` comes from. The ingest job reports ``AssetObservation``s of its stream health on
the landing assets (``landing_observations``; https://docs.dagster.io/concepts/assets/asset-observations),
and the ingest supervisor reports what it did to a group's runs the same way, so both show on
the landing assets' pages and timelines.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

EXCHANGE = "binance"
EXCHANGES_GROUP = "exchanges"
LANDING_GROUP = "landing"
OWNER = "team:market-data"
#: the datasets the ingest lands (``ingest.config.ALL_DATASETS``; repeated to keep this light)
LANDED_DATASETS = ("trades", "candles", "depth", "funding")

WEBSOCKET_KEY = dg.AssetKey([EXCHANGES_GROUP, f"{EXCHANGE}_websocket"])
REST_KEY = dg.AssetKey([EXCHANGES_GROUP, f"{EXCHANGE}_rest"])
ARCHIVE_KEY = dg.AssetKey([EXCHANGES_GROUP, f"{EXCHANGE}_archive"])


def landing_key(dataset: str) -> dg.AssetKey:
    """``landing/<dataset>``: what the ingest landed of one dataset."""
    return dg.AssetKey([LANDING_GROUP, dataset])


def _code_reference(obj: Any) -> dg.CodeReferencesMetadataValue:
    """A link to where ``obj`` is defined (what ``dg.with_source_code_references`` adds to
    materialisable assets; external specs have no function to take it from). Code references
    are a Dagster beta feature used on purpose: its warning is silenced here only."""
    _, line = inspect.getsourcelines(obj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(
                    file_path=inspect.getsourcefile(obj), line_number=line, label=obj.__qualname__
                )
            ]
        )


def exchange_source_specs() -> list[dg.AssetSpec]:
    """The venue's three feeds, in the order the README's data flow draws them."""
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
    from petrosa_pipelines.exchanges.binance.rest import BinanceRestClient
    from petrosa_pipelines.exchanges.binance.vision import VisionArchiveClient
    from petrosa_pipelines.settings import (
        LIVE_BINANCE_REST,
        LIVE_BINANCE_VISION,
        LIVE_BINANCE_WS,
    )

    common = {"group_name": EXCHANGES_GROUP, "owners": [OWNER], "tags": {"exchange": EXCHANGE}}
    return [
        dg.AssetSpec(
            WEBSOCKET_KEY,
            description=(
                "Binance USD-M websocket streams (aggTrade, kline_1m, depth diffs, markPrice): "
                "the only live source, and the only source of order-book depth. Streamed by the "
                "`ingest` job into the landing zone. Endpoint: `PETROSA_WS_BASE_URL`."
            ),
            kinds={"binance", "websocket"},
            metadata={
                "endpoint": dg.MetadataValue.url(LIVE_BINANCE_WS),
                "endpoint_setting": "PETROSA_WS_BASE_URL",
                "dagster/code_references": _code_reference(BinanceUsdmAdapter),
            },
            **common,
        ),
        dg.AssetSpec(
            ARCHIVE_KEY,
            description=(
                "Binance Vision daily archives (aggTrades, 1m klines, fundingRate), checksum-"
                "verified; published for closed days only, so they fill history the landing zone "
                "lacks. No depth archive exists. Endpoint: `PETROSA_VISION_BASE_URL`."
            ),
            kinds={"binance", "csv"},
            metadata={
                "endpoint": dg.MetadataValue.url(LIVE_BINANCE_VISION),
                "endpoint_setting": "PETROSA_VISION_BASE_URL",
                "dagster/code_references": _code_reference(VisionArchiveClient),
            },
            **common,
        ),
        dg.AssetSpec(
            REST_KEY,
            description=(
                "Binance USD-M REST history (aggTrades by id up to a year back, klines, "
                "fundingRate), asked only for the ranges still missing after the landing zone "
                "and archives, within a shared request-weight budget. No order-book history "
                "exists. Endpoint: `PETROSA_REST_BASE_URL`."
            ),
            kinds={"binance", "api"},
            metadata={
                "endpoint": dg.MetadataValue.url(LIVE_BINANCE_REST),
                "endpoint_setting": "PETROSA_REST_BASE_URL",
                "dagster/code_references": _code_reference(BinanceRestClient),
            },
            **common,
        ),
    ]


def landing_specs(writer: Any) -> list[dg.AssetSpec]:
    """One external asset per landed dataset, downstream of the websocket source; ``writer``
    is the function that lands them (the ingest op's body), for the code reference. Passed in
    by the code location: the ingest imports this module to report its observations."""
    reference = _code_reference(writer)
    return [
        dg.AssetSpec(
            landing_key(dataset),
            deps=[WEBSOCKET_KEY],
            group_name=LANDING_GROUP,
            owners=[OWNER],
            kinds={"jsonl", "websocket"},
            tags={"exchange": EXCHANGE, "dataset": dataset, "layer": LANDING_GROUP},
            description=(
                f"Raw {dataset} messages of the websocket streams, landed durably by the "
                "long-running `ingest` job (one run per stream group, kept alive by the "
                "`ingest_supervisor` sensor) in append-only, crash-safe segments "
                "(`PETROSA_LANDING_PATH`/{exchange}/{group}/{day}/{hour}/seg-*.jsonl), with dead "
                "letters and a gap ledger beside them. Not materialised by Dagster: the ingest "
                "reports its stream health (messages, lag, durable-write p99) here as "
                "observations, and the supervisor reports the runs it launches or stops."
            ),
            metadata={
                "writer": "ingest job (ingest_stream_group op)",
                "dagster/code_references": reference,
            },
        )
        for dataset in LANDED_DATASETS
    ]


def source_and_landing_specs(writer: Any) -> list[dg.AssetSpec]:
    """Layers 1 and 3 of the data flow, for the code location (``writer``: see landing_specs)."""
    return [*exchange_source_specs(), *landing_specs(writer)]


# --- what the ingest reports --------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from petrosa_pipelines.lib.timeutil import ms_to_iso

    return ms_to_iso(ms)


def dataset_health(snapshot: Mapping[str, Any], dataset: str) -> dict[str, Any] | None:
    """Stream health of one dataset from an engine snapshot (None: the run has no such stream).

    Messages and failures are summed over the dataset's streams (one per symbol); lag is the
    worst current lag (exchange event time to receipt); the durable-write latency is the
    writer's (all datasets share it).
    """
    streams = {n: s for n, s in snapshot["streams"].items() if s.get("dataset") == dataset}
    if not streams:
        return None
    lags = [s["lag_ms"] for s in streams.values() if s.get("lag_ms") is not None]
    processed = sum(s["processed"] for s in streams.values())
    lag_sum = sum(s.get("lag_ms_sum", 0) for s in streams.values())
    last_data = [s["last_data_ms"] for s in streams.values() if s.get("last_data_ms")]
    statuses = [s.get("status", "waiting") for s in streams.values()]
    writer = snapshot["writer"]
    group = snapshot["group_stats"]
    return {
        "liveness": snapshot["liveness"],
        "group": snapshot["group"],
        "exchange": snapshot["exchange"],
        "symbols": len({s["symbol"] for s in streams.values()}),
        "messages_processed": processed,
        "messages_failed": sum(s["failed"] for s in streams.values()),
        "duplicates_dropped": sum(s["duplicates"] for s in streams.values()),
        "lag_ms": max(lags) if lags else None,
        "lag_ms_avg": round(lag_sum / processed, 1) if processed else None,
        "lag_ms_max": max((s.get("lag_ms_max", 0) for s in streams.values()), default=0),
        "last_data_time": _iso(max(last_data)) if last_data else None,
        "streams_ok": statuses.count("ok"),
        "streams_quiet": statuses.count("quiet"),
        "streams_dead": statuses.count("dead"),
        "streams_waiting": statuses.count("waiting"),
        "durable_latency_p50_ms": writer.get("latency_p50_ms"),
        "durable_latency_p99_ms": writer.get("latency_p99_ms"),
        "lines_durable": writer.get("lines_durable"),
        "reconnects": group.get("reconnects"),
        "gaps_recorded": group.get("gaps_recorded"),
        "dead_letters": group.get("dead_letters"),
    }


def _metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Observation metadata: None (not measured yet) is left out rather than shown as 'null'."""
    return {k: v for k, v in values.items() if v is not None}


def landing_observations(snapshot: Mapping[str, Any]) -> list[dg.AssetObservation]:
    """One observation per landed dataset of the run, from an engine snapshot."""
    out = []
    for dataset in LANDED_DATASETS:
        health = dataset_health(snapshot, dataset)
        if health is not None:
            out.append(
                dg.AssetObservation(asset_key=landing_key(dataset), metadata=_metadata(health))
            )
    return out


def supervisor_observations(
    datasets: Iterable[str], group: str, action: str, run_id: str | None = None
) -> list[dg.AssetObservation]:
    """What the ingest supervisor did to a group's runs, on the group's landing assets."""
    meta = _metadata({"ingest_group": group, "supervisor_action": action, "ingest_run": run_id})
    return [
        dg.AssetObservation(asset_key=landing_key(d), metadata=meta)
        for d in LANDED_DATASETS
        if d in set(datasets)
    ]


__all__ = [
    "ARCHIVE_KEY",
    "LANDED_DATASETS",
    "REST_KEY",
    "WEBSOCKET_KEY",
    "dataset_health",
    "exchange_source_specs",
    "landing_key",
    "landing_observations",
    "landing_specs",
    "source_and_landing_specs",
    "supervisor_observations",
]
