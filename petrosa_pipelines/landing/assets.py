"""The first three layers in the asset graph: every registered venue's feeds (1), the landing
zone (3), and what the ingest (2) reports on it.

Each venue of ``exchanges.EXCHANGES`` has one source asset per feed its capabilities declare
(``exchanges/<storage name>_websocket``, ``_archive``, ``_rest``): a venue without archives
has no archive asset. Neither the exchange nor the landing zone is materialised by Dagster: the
exchange is outside it, and the landing zone is written continuously by the long-running
``ingest`` job. Both are external assets (``dg.AssetSpec`` without a function:
https://docs.dagster.io/concepts/assets/external-assets), so the graph shows where
``market_data`` comes from. The ingest job reports ``AssetObservation``s of its stream health on
the landing assets (``landing_observations``;
https://docs.dagster.io/concepts/assets/asset-observations), and the ingest supervisor reports
what it did to a group's runs the same way, so both show on the landing assets' pages and
timelines.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from petrosa_pipelines.instruments import DATASETS

if TYPE_CHECKING:
    from petrosa_pipelines.exchanges.base import ExchangeAdapter

EXCHANGES_GROUP = "exchanges"
LANDING_GROUP = "landing"
OWNER = "team:market-data"
#: the datasets the ingest lands (the curated datasets, ``instruments.DATASETS``)
LANDED_DATASETS = DATASETS
#: the kinds of feed a venue may have, in the order the README's data flow draws them
WEBSOCKET, ARCHIVE, REST = "websocket", "archive", "rest"
#: feed kind -> the ``ExchangeEndpoints`` field of its base URL (``lib/endpoints.py``)
_ENDPOINT_FIELD = {WEBSOCKET: "ws_base_url", ARCHIVE: "vision_base_url", REST: "rest_base_url"}
#: feed kind -> the Dagster kind shown on its asset
_KIND = {WEBSOCKET: "websocket", ARCHIVE: "csv", REST: "api"}


def source_key(exchange: str, kind: str) -> dg.AssetKey:
    """``exchanges/<storage name>_<kind>``: one feed of one venue (``exchange``: the venue's
    storage name, e.g. ``binance``, ``bybit-linear``; Dagster asset key parts may hold ``-``)."""
    return dg.AssetKey([EXCHANGES_GROUP, f"{exchange}_{kind}"])


def landing_key(dataset: str) -> dg.AssetKey:
    """``landing/<dataset>``: what the ingest landed of one dataset, every venue's."""
    return dg.AssetKey([LANDING_GROUP, dataset])


def registered_venues() -> list[type[ExchangeAdapter]]:
    """Every venue of the registry (``exchanges.EXCHANGES``), in its order."""
    from petrosa_pipelines.exchanges import EXCHANGES

    return list(EXCHANGES.values())


def feed_datasets(venue: type[ExchangeAdapter], kind: str) -> list[str]:
    """The datasets ``venue``'s feed of ``kind`` serves, as its capabilities declare them
    (empty: the venue has no such feed)."""
    caps = venue.capabilities
    if kind == WEBSOCKET:
        served = caps.datasets
    elif kind == ARCHIVE:
        served = {a.dataset for a in caps.archives}
    else:
        served = set(caps.rest_reach_ms)
    return [d for d in LANDED_DATASETS if d in served]


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


def _endpoint(venue: type[ExchangeAdapter], kind: str) -> tuple[str, str]:
    """(live base URL, the variable that overrides it) of one feed: the URL is the adapter's
    (``declared_endpoints``), the variable the settings' (``settings.endpoint_variables``). A
    venue without live defaults shows its variable's value, if set, else no URL."""
    import os

    from petrosa_pipelines.exchanges.base import declared_endpoints
    from petrosa_pipelines.settings import endpoint_variables

    field = _ENDPOINT_FIELD[kind]
    variable = endpoint_variables(venue.venue)[field]
    live = declared_endpoints(venue)
    url = getattr(live, field) if live is not None else os.environ.get(variable, "").strip()
    return url, variable


def _title(venue: type[ExchangeAdapter]) -> str:
    """The venue as its adapter describes itself (the first line of its docstring)."""
    doc = (venue.__doc__ or venue.venue).strip().splitlines()[0].rstrip(".")
    return f"{doc}, venue `{venue.venue}`."


def _days(ms: int | None) -> str:
    return "from the listing on" if ms is None else f"{ms // 86_400_000} days back"


def _description(venue: type[ExchangeAdapter], kind: str, variable: str) -> str:
    """What one feed is, said from the venue's declared capabilities."""
    caps = venue.capabilities
    datasets = feed_datasets(venue, kind)
    if kind == WEBSOCKET:
        streams = ", ".join(f"{d} `{venue.channels[d]}`" for d in datasets if d in venue.channels)
        depth = (
            "the only live source"
            if caps.depth_history
            else "the only live source, and the only source of order-book depth"
        )
        text = (
            f"{_title(venue)} Websocket streams ({streams}): {depth}. Streamed by the `ingest` "
            "job into the landing zone."
        )
    elif kind == ARCHIVE:
        files = ", ".join(
            f"{a.dataset} ({a.granularity}, "
            f"{'checksum-verified' if a.checksums else 'no published checksums'}, {a.url})"
            for a in caps.archives
        )
        text = (
            f"{_title(venue)} Bulk archives: {files}. Published for closed periods only, so "
            "they fill history the landing zone lacks."
        )
    else:
        reach = ", ".join(f"{d} {_days(caps.rest_reach_ms[d])}" for d in datasets)
        text = (
            f"{_title(venue)} REST history ({reach}), asked only for the ranges still missing "
            "after the landing zone and archives, within the venue's rate-limit budget."
        )
    if kind != WEBSOCKET and "depth" not in datasets and not caps.depth_history:
        text += " No order-book history (the venue declares none)."
    return f"{text} Endpoint: `{variable}`."


def _implementation(venue: type[ExchangeAdapter], kind: str) -> Any:
    """What reads the feed: the adapter (websocket) or its client factory (archive, REST)."""
    return {WEBSOCKET: venue, ARCHIVE: venue.archive_client, REST: venue.rest_client}[kind]


def venue_source_specs(venue: type[ExchangeAdapter]) -> list[dg.AssetSpec]:
    """One external asset per feed the venue has: no archive asset for a venue that
    publishes none, no REST asset for one without REST history."""
    specs = []
    for kind in (WEBSOCKET, ARCHIVE, REST):
        if not feed_datasets(venue, kind):
            continue
        url, variable = _endpoint(venue, kind)
        specs.append(
            dg.AssetSpec(
                source_key(venue.name, kind),
                description=_description(venue, kind, variable),
                group_name=EXCHANGES_GROUP,
                owners=[OWNER],
                tags={"exchange": venue.name, "venue": venue.venue},
                # the exchange part of the venue id (``<exchange>-<market>``) and the wire kind
                kinds={venue.venue.split("-")[0], _KIND[kind]},
                metadata={
                    "endpoint": dg.MetadataValue.url(url),
                    "endpoint_setting": variable,
                    "datasets": ", ".join(feed_datasets(venue, kind)),
                    "dagster/code_references": _code_reference(_implementation(venue, kind)),
                },
            )
        )
    return specs


def exchange_source_specs() -> list[dg.AssetSpec]:
    """Every registered venue's feeds (``exchanges.EXCHANGES``), venue by venue."""
    return [spec for venue in registered_venues() for spec in venue_source_specs(venue)]


def landing_specs(writer: Any) -> list[dg.AssetSpec]:
    """One external asset per landed dataset, downstream of the websocket of every venue that
    streams it; ``writer`` is the function that lands them (the ingest op's body), for the code
    reference. Passed in by the code location: the ingest imports this module to report its
    observations."""
    reference = _code_reference(writer)
    venues = registered_venues()
    return [
        dg.AssetSpec(
            landing_key(dataset),
            deps=[
                source_key(v.name, WEBSOCKET)
                for v in venues
                if dataset in feed_datasets(v, WEBSOCKET)
            ],
            group_name=LANDING_GROUP,
            owners=[OWNER],
            kinds={"jsonl", "websocket"},
            tags={"dataset": dataset, "layer": LANDING_GROUP},
            description=(
                f"Raw {dataset} messages of every venue's websocket streams, landed durably by "
                "the long-running `ingest` job (one run per venue and stream group, kept alive "
                "by the `ingest_supervisor` sensor) in append-only, crash-safe segments "
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
    datasets: Iterable[str],
    group: str,
    action: str,
    run_id: str | None = None,
    exchange: str | None = None,
) -> list[dg.AssetObservation]:
    """What the ingest supervisor did to a group's runs, on the group's landing assets.

    A group is one venue's (the landing assets hold every venue's data), so ``exchange``, the
    venue's storage name, is reported beside the group name.
    """
    meta = _metadata(
        {
            "exchange": exchange,
            "ingest_group": group,
            "supervisor_action": action,
            "ingest_run": run_id,
        }
    )
    return [
        dg.AssetObservation(asset_key=landing_key(d), metadata=meta)
        for d in LANDED_DATASETS
        if d in set(datasets)
    ]


__all__ = [
    "ARCHIVE",
    "LANDED_DATASETS",
    "REST",
    "WEBSOCKET",
    "dataset_health",
    "exchange_source_specs",
    "feed_datasets",
    "landing_key",
    "landing_observations",
    "landing_specs",
    "registered_venues",
    "source_and_landing_specs",
    "source_key",
    "supervisor_observations",
    "venue_source_specs",
]
