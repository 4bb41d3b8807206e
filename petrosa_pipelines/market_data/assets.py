"""The four partitioned market-data assets, built by one factory.

Each asset body is thin: it reads its partition window, calls ``fill_partition`` with the
sources in failover order, and reports what it did in the output metadata.
"""

import os
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from petrosa_pipelines.catalog.schemas import DATASETS, DatasetSchema
from petrosa_pipelines.checks.audit_book import (
    INTERVAL_FROM_CONFIG,
    INTERVAL_FROM_SETTING,
    FundingInterval,
    FundingIntervals,
    intervals_from_info,
    valid_hours,
)
from petrosa_pipelines.instruments import DATASETS as INSTRUMENT_DATASETS
from petrosa_pipelines.instruments import (
    LEGACY_VENUE,
    MARKET_DATA,
    InstrumentError,
    market_data_path,
    split_key,
    storage_name,
)
from petrosa_pipelines.lake import LakeFile
from petrosa_pipelines.lib.timeutil import ms_to_iso, utc_now_ms
from petrosa_pipelines.market_data.datasets import SPECS, DepthSpec, FundingSpec, trades_spec
from petrosa_pipelines.market_data.fill import (
    FillResult,
    PartitionWindow,
    fill_partition,
    window_metadata,
)
from petrosa_pipelines.market_data.guidance import depth_metadata, refuse_unknown_instrument
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions, split_partition_key
from petrosa_pipelines.market_data.ports import EXCHANGE_POOL, ExchangePort, LandingPort
from petrosa_pipelines.market_data.sources import (
    PreviousPartitionSource,
    has_book_archive,
    sources_for,
    venue_capabilities,
)
from petrosa_pipelines.settings import SettingError

LAYER = MARKET_DATA
OWNER = "team:market-data"
#: the storage name of a legacy bare partition's venue (Binance USD-M keeps ``binance``); rows
#: and lake paths take the exchange from each partition's instrument
DEFAULT_EXCHANGE = storage_name(LEGACY_VENUE)


def asset_key(dataset: str) -> dg.AssetKey:
    """``market_data/<dataset>`` (``instruments.market_data_path`` owns the path)."""
    return dg.AssetKey(market_data_path(dataset))


TRADES_KEY, CANDLES_KEY, DEPTH_KEY, FUNDING_KEY = (asset_key(d) for d in INSTRUMENT_DATASETS)


class MarketDataConfig(dg.Config):
    """Run settings of a market-data materialisation. None is needed: every field has a
    default, and the launchpad's "Scaffold all default config" shows them with these
    descriptions."""

    dedup_keep: str | None = Field(
        default=None,
        description='Which row wins when two sources give the same natural key: "first" keeps '
        'the earlier source in failover order, "last" the later; empty reads PETROSA_DEDUP_KEEP '
        '(default "first").',
    )
    funding_interval_hours: int | None = Field(
        default=None,
        description="Funding settlement interval of the instrument, in hours (funding): empty "
        "takes the venue's (Bybit's instruments-info fundingInterval), else "
        "PETROSA_FUNDING_INTERVAL_HOURS (default 8); a value here overrides both.",
    )
    depth_cadence_ms: int = Field(
        default=1_000, description="Depth sampling cadence, in milliseconds (depth)."
    )


def table_schema(schema: DatasetSchema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=str(c.type),
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in schema.columns
        ]
    )


def output_metadata(
    schema: DatasetSchema, result: FillResult, window: PartitionWindow
) -> dict[str, object]:
    frame = result.frame
    meta: dict[str, object] = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": table_schema(schema),
        "schema_version": schema.version,
        "source_mix": dg.MetadataValue.json(result.source_mix()),
        "missing_ranges": dg.MetadataValue.json(result.missing_iso()),
        "missing_range_count": len(result.missing),
        "sources_tried": dg.MetadataValue.json(result.attempts),
        **window_metadata(window),
        "rejected_rows": sum(result.rejected.values()),
        "kept_rows": result.added_by(PreviousPartitionSource.name),
    }
    if result.rejected:
        meta["rejected_reasons"] = dg.MetadataValue.json(result.rejected)
    if not frame.empty:
        times = frame[schema.time_column]
        meta["first_time"] = str(times.min())
        meta["last_time"] = str(times.max())
    return meta


def dedup_keep(config: MarketDataConfig) -> Literal["first", "last"]:
    """The run's dedup rule, else the PETROSA_DEDUP_KEEP setting, else "first"."""
    if config.dedup_keep is not None:
        name, raw = "dedup_keep (run config)", config.dedup_keep
    else:
        name, raw = "PETROSA_DEDUP_KEEP", os.environ.get("PETROSA_DEDUP_KEEP", "first")
    raw = raw.strip().lower()
    if raw not in ("first", "last"):
        raise SettingError(name, raw, "first or last")
    return raw  # type: ignore[return-value]


#: the funding interval of an instrument whose venue reports none (Binance USD-M's exchangeInfo
#: has no interval), unless PETROSA_FUNDING_INTERVAL_HOURS says otherwise
DEFAULT_FUNDING_INTERVAL_HOURS = 8
FUNDING_INTERVAL_VAR = "PETROSA_FUNDING_INTERVAL_HOURS"
#: each venue's funding intervals (its instrument info), fetched at most once an hour per
#: process and endpoint; a failed fetch is not retried for 5 minutes
FUNDING_INTERVALS = FundingIntervals()


def funding_interval_setting() -> int:
    """``PETROSA_FUNDING_INTERVAL_HOURS`` (the checks' setting too), else 8."""
    raw = os.environ.get(FUNDING_INTERVAL_VAR, "").strip()
    if not raw:
        return DEFAULT_FUNDING_INTERVAL_HOURS
    if not raw.isdigit() or not valid_hours(int(raw)):
        raise SettingError(FUNDING_INTERVAL_VAR, raw, "whole hours dividing 24 (1, 2, 4, 8...)")
    return int(raw)


def _close(client: object) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        close()


def funding_interval(
    config: MarketDataConfig, exchange: ExchangePort, venue: str, symbol: str
) -> FundingInterval:
    """The instrument's funding interval: the run config's when set, else the venue's from its
    instrument info (``exchange.rest(venue).exchange_info()``, cached in ``FUNDING_INTERVALS``),
    else the setting; a failed fetch falls back to the setting with a note, never fails the
    run. Binance USD-M reports none in exchangeInfo (its ``/fapi/v1/fundingInfo`` is not read
    by its adapter), so its instruments take the setting."""
    if config.funding_interval_hours is not None:
        return FundingInterval(config.funding_interval_hours, INTERVAL_FROM_CONFIG)
    fallback = funding_interval_setting()
    try:
        endpoint = exchange.settings().endpoints_for(venue).rest_base_url
    except Exception:  # noqa: BLE001 - only the cache key: one per venue then
        endpoint = None

    def fetch() -> dict[str, int | None]:
        client = exchange.rest(venue)
        try:
            return intervals_from_info(client.exchange_info())
        finally:
            _close(client)

    return FUNDING_INTERVALS.interval((venue, endpoint), venue, symbol, fallback, fetch)


def funding_spec(
    interval: FundingInterval, fallback_hours: int
) -> tuple[FundingSpec, FundingInterval]:
    """The funding spec of ``interval``, or of the setting (with a note) when the spec cannot
    lay that grid."""
    try:
        return FundingSpec(interval.hours), interval
    except ValueError as e:
        if interval.source == INTERVAL_FROM_CONFIG:
            raise  # the run asked for it: say so, as before
        note = (
            f"{interval.source} interval {interval.hours} h unusable ({e}): filled on the setting"
        )
        fallback = FundingInterval(fallback_hours, INTERVAL_FROM_SETTING, note)
        return FundingSpec(fallback_hours), fallback


def _spec(
    dataset: str,
    config: MarketDataConfig,
    exchange: str,
    interval: FundingInterval | None = None,
):
    """The dataset's spec; trades follow the venue (``exchange``: its storage name), whose ids
    prove coverage only where it declares them consecutive; funding settles on the
    instrument's ``interval`` (None: the run config's, else the setting)."""
    if dataset == "trades":
        return trades_spec(exchange)
    if dataset == "funding":
        if interval is None:
            hours = config.funding_interval_hours or funding_interval_setting()
            interval = FundingInterval(hours)
        return funding_spec(interval, funding_interval_setting())[0]
    if dataset == "depth":
        return DepthSpec(config.depth_cadence_ms)
    return SPECS[dataset]()


def materialise_partition(
    dataset: str,
    partition: str,
    config: MarketDataConfig,
    exchange: ExchangePort,
    landing: LandingPort | None,
    now_ms: int | None = None,
    previous: pd.DataFrame | LakeFile | None = None,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """The frame of one partition and its metadata (plain function: tests call it directly).

    ``previous`` is the partition as the lake holds it now (None when there is none): it is
    the last source, and ``refuse_to_shrink`` fails the run rather than publish less.
    """
    settings = exchange.settings()
    # "Add a partition" accepts any text: refuse (naming it) what the allow-list does not name,
    # malformed values included, before the key is parsed
    refuse_unknown_instrument(split_key(partition)[1], settings.qualified_symbols)
    day, inst = split_partition_key(partition)
    window = PartitionWindow(day=day, symbol=inst.symbol, now_ms=now_ms or utc_now_ms())
    # depth has history only where the venue publishes book files (``sources.has_book_archive``)
    use_archive = dataset != "depth" or has_book_archive(venue_capabilities(inst.exchange))
    store = landing.store() if landing is not None else None
    sources = sources_for(
        dataset,
        landing=store,
        archive=exchange.archive(inst.venue) if use_archive else None,
        rest=exchange.rest(inst.venue) if dataset != "depth" else None,
        exchange=inst.exchange,
        previous=previous,
    )
    ledger = (
        store.gaps(inst.exchange, window.start_ms, window.end_ms, dataset, inst.symbol)
        if store is not None
        else []
    )
    known_gaps = [(max(g.start_ms, window.start_ms), min(g.end_ms, window.end_ms)) for g in ledger]
    interval = None
    if dataset == "funding":  # the instrument's own interval (Bybit varies it per symbol)
        wanted = funding_interval(config, exchange, inst.venue, inst.symbol)
        interval = funding_spec(wanted, funding_interval_setting())[1]
    spec = _spec(dataset, config, inst.exchange, interval)
    result = fill_partition(
        spec,
        window,
        sources,
        keep=dedup_keep(config),
        known_gaps=known_gaps,
    )
    meta = output_metadata(DATASETS[dataset], result, window)
    meta["ledger_gaps"] = len(ledger)
    if interval is not None:  # the checks judge the partition on the grid it was filled to
        meta.update(interval.metadata())
    if dataset == "depth":  # which spans of the day came from where (ws, archive, previous)
        meta["source_spans"] = dg.MetadataValue.json(
            {
                src: [f"{ms_to_iso(a)}/{ms_to_iso(b)}" for a, b in spans[:20]]
                for src, spans in result.source_spans(spec, window).items()
            }
        )
    refusal = refuse_to_shrink(dataset, partition, result, previous)
    if refusal:
        raise dg.Failure(description=refusal, metadata=meta, allow_retries=False)
    if dataset == "depth":  # say whether this day could hold any, and from where
        meta.update(depth_metadata(landing, inst.exchange, window, len(result.frame)))
    return result.frame, meta


def refuse_to_shrink(
    dataset: str,
    partition: str,
    result: FillResult,
    previous: pd.DataFrame | LakeFile | None,
) -> str | None:
    """Why this result must not replace ``previous`` (None: publish it).

    A partition never loses rows to an outage: the previous rows are the fill's last source, so
    the result holds them unless validation rejected them (a proof they were wrong). When
    sources failed and the run could only give back what the partition already held, the run
    fails instead of reporting success, naming the failed sources and what is kept.
    """
    if previous is None or previous.empty:
        return None
    kept = result.added_by(PreviousPartitionSource.name)
    rejected_old = next(
        (
            sum(a.get("rejected", {}).values())
            for a in result.attempts
            if a.get("source") == PreviousPartitionSource.name
        ),
        0,
    )
    errors = result.errors()
    if len(result.frame) < len(previous) - rejected_old:
        return (
            f"{dataset} {partition}: the new result has {len(result.frame)} rows, fewer than the "
            f"{len(previous)} the lake holds; kept the existing partition (lake file and "
            "warehouse unchanged)"
        )
    if kept and errors and len(result.frame) <= len(previous):
        failed = "; ".join(f"{a['source']}: {a['error']}" for a in errors)
        return (
            f"{dataset} {partition}: sources failed ({failed}) and the rest gave nothing the "
            f"partition lacks; kept the existing partition: {len(previous)} rows, "
            f"{len(result.missing)} missing ranges (lake file and warehouse unchanged)"
        )
    return None


def previous_partition(
    context: dg.AssetExecutionContext, dataset: str, exchange_name: str | None = None
) -> pd.DataFrame | LakeFile | None:
    """The partition as the lake holds it now, through the run's IO manager (None if absent
    or when the IO manager cannot read partitions back): its file unread where the IO manager
    gives it (``kept_partition``: the fill reads its keys, the shrink guard its row count),
    else its frame. The lake file follows from the partition's instrument; ``exchange_name``
    only matters for partitions without one."""
    io_manager = getattr(context.resources, "io_manager", None)
    reader = getattr(io_manager, "kept_partition", None) or getattr(
        io_manager, "read_partition", None
    )
    if reader is None:
        return None
    try:
        return reader(asset_key(dataset), context.partition_key, exchange_name)
    except InstrumentError:
        return None  # a malformed partition: ``materialise_partition`` refuses it, naming it


def backfill_progress(context: dg.AssetExecutionContext) -> dict[str, object] | None:
    """Where the run's backfill stands (asset partitions done of total), for run metadata.

    Read from the backfill's own bookkeeping, which the daemon updates once per tick, so it lags
    by up to a tick; the terminal view (``petrosa stack backfill``) also counts runs' events.
    """
    backfill_id = context.run.tags.get("dagster/backfill")
    if not backfill_id:
        return None
    try:
        backfill = context.instance.get_backfill(backfill_id)
        data = backfill.get_asset_backfill_data(context.repository_def.asset_graph)
        total = data.target_subset.num_partitions_and_non_partitioned_assets
        done = data.materialized_subset.num_partitions_and_non_partitioned_assets
        failed = data.failed_and_downstream_subset.num_partitions_and_non_partitioned_assets
    except Exception as exc:  # noqa: BLE001 - progress is informative, never fatal
        return {"backfill": backfill_id, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "backfill": backfill_id,
        "asset_partitions_done": done,
        "asset_partitions_failed": failed,
        "asset_partitions_total": total,
        "percent_done": round(100.0 * done / total, 1) if total else 0.0,
    }


def build_market_data_asset(dataset: str):
    """One market-data asset; every venue's instruments are its partitions (no exchange is
    fixed here: each partition's venue names the exchange of its rows and lake files)."""
    schema = DATASETS[dataset]

    @dg.asset(
        key=asset_key(dataset),
        partitions_def=daily_symbol_partitions,
        group_name=LAYER,
        description=schema.description,
        owners=[OWNER],
        kinds={"pandas", "parquet"},
        tags={"dataset": dataset, "layer": LAYER},
        metadata={
            "natural_key": ", ".join(schema.natural_key),
            "dagster/column_schema": table_schema(schema),
            "schema_version": schema.version,
        },
        code_version=f"{dataset}-v{schema.version}",
        pool=None if dataset == "depth" else EXCHANGE_POOL,
    )
    def _market_data_asset(
        context: dg.AssetExecutionContext,
        config: MarketDataConfig,
        exchange: dg.ResourceParam[ExchangePort],
        landing: dg.ResourceParam[LandingPort],
    ) -> dg.MaterializeResult:
        frame, meta = materialise_partition(
            dataset,
            context.partition_key,
            config,
            exchange,
            landing,
            previous=previous_partition(context, dataset),
        )
        progress = backfill_progress(context)
        if progress:
            meta["backfill_progress"] = dg.MetadataValue.json(progress)
            context.log.info(f"backfill progress: {progress}")
        context.log.info(
            f"{dataset} {context.partition_key}: {len(frame)} rows, sources "
            f"{meta['source_mix'].value}, {meta['missing_range_count']} missing ranges"
        )
        return dg.MaterializeResult(value=frame, metadata=meta)

    _market_data_asset.__name__ = dataset
    return _market_data_asset


trades, candles, depth, funding = MARKET_DATA_ASSETS = [
    build_market_data_asset(d) for d in INSTRUMENT_DATASETS
]
