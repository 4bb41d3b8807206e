"""The serving stores for history: each instrument-month of ``market_data/history/<dataset>``
loaded into the warehouse (and MongoDB) day by day.

A day that leaves the rolling window keeps its lake file (``market_data/history.py``), and
whatever the stores already held of it; but a day rebuilt as history (a one-day repair of its
month) or migrated from an install without a window was never loaded. These assets close that
gap with the same per-day replace as the window's loaders (``serving/assets.py``): each day is
one atomic replace, read one day at a time, under the same shrink guard (a day with fewer rows
than the store holds is refused and the store keeps its rows). A day with no lake file is not
loaded and says so; a refused or failed day does not stop the others, and the run fails naming
it.
"""

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from petrosa_pipelines.instruments import DATASETS, parse_instrument, partition_key_str
from petrosa_pipelines.lake import Lake
from petrosa_pipelines.market_data.assets import OWNER
from petrosa_pipelines.market_data.history import history_key, lake_of, read_day
from petrosa_pipelines.market_data.partitions import (
    HISTORY_START,
    MONTH_DIM,
    PARTITIONS_START,
    SYMBOL_DIM,
    history_days,
    monthly_symbol_partitions,
)
from petrosa_pipelines.serving.assets import (
    LAYER,
    MONGO_CODE_VERSIONS,
    ServingLoadConfig,
    load_metadata,
)
from petrosa_pipelines.serving.ports import MongoSinkPort, WarehousePort, mongo_configured

#: the history loaders' key prefix (``warehouse_job``, one symbol-day, leaves them out: a job
#: cannot mix partitions definitions)
HISTORY_PREFIX = [LAYER, "history"]
#: day statuses
LOADED, NO_FILE, FAILED = "loaded", "no file", "failed"

#: ``replace(dataset, frame, exchange=, symbol=, day=, qualifier=, never_fewer=)``: the store's
#: per-partition replace (``Warehouse.load_partition``, ``MongoSink.replace_partition``); its
#: result has ``rows``, ``replaced_rows`` and ``seconds``
Replace = Callable[..., Any]


class HistoryLoadConfig(ServingLoadConfig):
    """Run settings of a history month's load; every field has a default."""

    days: list[str] = Field(
        default_factory=list,
        description='The days of the month to load ("YYYY-MM-DD"); empty loads every history '
        "day of the month that has a lake file.",
    )


@dataclass(frozen=True)
class DayLoad:
    """What loading one history day did."""

    day: str
    status: str
    rows: int = 0
    replaced_rows: int = 0
    seconds: float = 0.0
    error: str = ""


def wanted_load_days(config: HistoryLoadConfig, days: Sequence[str]) -> list[str]:
    """The days to load; a day outside the month's history is refused, naming ``days``."""
    if not config.days:
        return list(days)
    bad = sorted(set(config.days) - set(days))
    if bad:
        span = f"{days[0]} .. {days[-1]}" if days else "none"
        raise dg.Failure(
            description=f"run config `days`: {bad} are not history days of this month "
            f"(its history days: {span})",
            allow_retries=False,
        )
    return sorted(set(config.days))


def load_history_days(
    replace: Replace,
    lake: Lake,
    dataset: str,
    instrument: str,
    days: Sequence[str],
    *,
    never_fewer: bool = True,
) -> list[DayLoad]:
    """Replace each day's partition in a store with its lake file, one day in memory at a time.

    A day with no file is not loaded (the store keeps what it has); a day whose replace raises
    (a shrink refused, rows outside the day) is recorded with the error and the next day goes on.
    """
    inst = parse_instrument(instrument)
    out = []
    for day in days:
        frame = read_day(lake, dataset, partition_key_str(day, instrument))
        if frame is None:
            out.append(DayLoad(day, NO_FILE))
            continue
        try:
            report = replace(
                dataset,
                frame,
                exchange=inst.exchange,
                symbol=inst.symbol,
                day=dt.date.fromisoformat(day),
                qualifier="1m" if dataset == "candles" else None,
                never_fewer=never_fewer,
            )
        except Exception as exc:  # noqa: BLE001 - one day's failure must not hide the others
            out.append(DayLoad(day, FAILED, rows=len(frame), error=f"{type(exc).__name__}: {exc}"))
            continue
        finally:
            del frame
        out.append(
            DayLoad(day, LOADED, report.rows, report.replaced_rows, round(report.seconds, 3))
        )
    return out


def loads_table(loads: Sequence[DayLoad]) -> str:
    """The month's days as a markdown table: day, status, rows, rows replaced, error."""
    lines = ["| day | status | rows | replaced rows | error |", "|---|---|---:|---:|---|"]
    for d in loads:
        rows = f"{d.rows:,}" if d.status != NO_FILE else ""
        replaced = f"{d.replaced_rows:,}" if d.status == LOADED else ""
        lines.append(f"| {d.day} | {d.status} | {rows} | {replaced} | {d.error or '-'} |")
    return "\n".join(lines)


def month_load_metadata(loads: Sequence[DayLoad], **extra: Any) -> dict[str, Any]:
    """The materialisation metadata of a month's load: totals, and every day's load."""
    loaded = [d for d in loads if d.status == LOADED]
    return load_metadata(
        sum(d.rows for d in loaded),
        sum(d.replaced_rows for d in loaded),
        sum(d.seconds for d in loaded),
        days_loaded=len(loaded),
        days_without_file=sum(1 for d in loads if d.status == NO_FILE),
        days_failed=sum(1 for d in loads if d.status == FAILED),
        days=dg.MetadataValue.json([asdict(d) for d in loads]),
        days_table=dg.MetadataValue.md(loads_table(loads)),
        **extra,
    )


def month_days(keys: Mapping[str, str], first: str, window_start: str) -> list[str]:
    """The history days of a month partition (``{month: YYYY-MM-01, symbol: ...}``)."""
    return [d.isoformat() for d in history_days(keys[MONTH_DIM], first, window_start)]


def _run_month(
    context: dg.AssetExecutionContext,
    config: HistoryLoadConfig,
    dataset: str,
    replace: Replace,
    **extra: Any,
) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    days = wanted_load_days(config, month_days(keys, HISTORY_START, PARTITIONS_START))
    loads = load_history_days(
        replace,
        lake_of(context),
        dataset,
        keys[SYMBOL_DIM],
        days,
        never_fewer=not config.allow_fewer_rows,
    )
    failed = [d for d in loads if d.status == FAILED]
    metadata = month_load_metadata(loads, **extra)
    if failed:  # the loaded days are in the store; the run did not do all it was asked
        raise dg.Failure(
            description=f"{len(failed)} day(s) not loaded, the store keeps their rows: "
            + "; ".join(f"{d.day}: {d.error}" for d in failed),
            metadata=metadata,
            allow_retries=False,
        )
    context.log.info(
        f"{dataset} {context.partition_key}: {metadata['days_loaded']} day(s) loaded, "
        f"{metadata['days_without_file']} without a lake file"
    )
    return dg.MaterializeResult(metadata=metadata)


def warehouse_history_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([*HISTORY_PREFIX, f"warehouse_{dataset}"])


def mongo_history_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([*HISTORY_PREFIX, f"mongo_{dataset}"])


def _spec(key: dg.AssetKey, dataset: str, text: str, kind: str, version: str) -> dict[str, Any]:
    return {
        "key": key,
        "deps": [history_key(dataset)],
        "partitions_def": monthly_symbol_partitions,
        "group_name": LAYER,
        "description": text + ' Load chosen days with run config `days: ["YYYY-MM-DD"]`.',
        "kinds": {kind},
        "owners": [OWNER],
        "tags": {"dataset": dataset, "layer": LAYER},
        "code_version": version,
    }


def build_warehouse_history_asset(dataset: str) -> dg.AssetsDefinition:
    """``storage/history/warehouse_<dataset>``: one instrument-month of history days."""

    @dg.asset(
        **_spec(
            warehouse_history_key(dataset),
            dataset,
            f"History days of {dataset} in the PostgreSQL warehouse (petrosa.{dataset}): each "
            "day of the instrument-month replaced atomically from its lake file.",
            "postgres",
            f"warehouse-history-{dataset}-v1",
        )
    )
    def _load(
        context: dg.AssetExecutionContext,
        config: HistoryLoadConfig,
        warehouse: dg.ResourceParam[WarehousePort],
    ) -> dg.MaterializeResult:
        store = warehouse.warehouse()
        return _run_month(
            context, config, dataset, store.load_partition, table=f"petrosa.{dataset}"
        )

    _load.__name__ = f"warehouse_history_{dataset}"
    return _load


def build_mongo_history_asset(dataset: str) -> dg.AssetsDefinition:
    """``storage/history/mongo_<dataset>``: one instrument-month of history days."""

    @dg.asset(
        **_spec(
            mongo_history_key(dataset),
            dataset,
            f"History days of {dataset} in the MongoDB time-series collection `{dataset}`: "
            "each day of the instrument-month replaced from its lake file (new load, then the "
            "day's pointer moves). Defined only when PETROSA_MONGODB_URL is set.",
            "mongodb",
            f"mongo-history-{dataset}-v{MONGO_CODE_VERSIONS.get(dataset, 1)}",
        )
    )
    def _load(
        context: dg.AssetExecutionContext,
        config: HistoryLoadConfig,
        mongo_sink: dg.ResourceParam[MongoSinkPort],
    ) -> dg.MaterializeResult:
        sink = mongo_sink.sink()
        return _run_month(
            context,
            config,
            dataset,
            sink.replace_partition,
            collection=f"{mongo_sink.database}.{dataset}",
        )

    _load.__name__ = f"mongo_history_{dataset}"
    return _load


def build_history_storage_assets(
    env: Mapping[str, str] | None = None,
) -> list[dg.AssetsDefinition]:
    """The warehouse history loaders, plus MongoDB's when ``PETROSA_MONGODB_URL`` is set."""
    assets = [build_warehouse_history_asset(d) for d in DATASETS]
    if mongo_configured(env):
        assets += [build_mongo_history_asset(d) for d in DATASETS]
    return assets


HISTORY_STORAGE_ASSETS = build_history_storage_assets()
