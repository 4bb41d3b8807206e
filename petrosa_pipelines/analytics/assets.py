"""The analytics assets, their automation, jobs and the refresh schedule.

Each ``AnalyticSpec`` becomes one asset ``analytics/<name>`` in group ``analytics``:

* partitioned like its input (``date|symbol``), or by ``date`` alone when it spans symbols;
* earlier days reach the asset through partition mappings, never by hand: a window of N days is
  ``TimeWindowPartitionMapping(start_offset=-(N-1))`` on the date dimension, all symbols of a day
  is ``MultiToSingleDimensionPartitionMapping("date")``; holes are skipped
  (``allow_missing_partitions``) and the IO manager hands over one frame sorted by time;
* automation follows the inputs only once their blocking checks passed
  (``AutomationCondition.all_deps_blocking_checks_passed``; test_analytics/test_automation.py);
* the body is thin: it calls the spec's plain ``compute`` function and reports row count, time
  range, column schema and lineage, and a chart (``summary`` inline, ``chart: <what>`` as a PNG);
* an input without rows (e.g. no depth for a day from before the ingest ran) is not computed:
  the asset writes 0 rows and a ``note`` saying which dataset had no data, never rows of NaN.
"""

import datetime as dt

import dagster as dg
import pandas as pd

from petrosa_pipelines.analytics.charts import ChartContext
from petrosa_pipelines.analytics.compute import AnalyticsConfig, Part
from petrosa_pipelines.analytics.specs import ALL_SPECS, AnalyticSpec, InputSpec
from petrosa_pipelines.instruments import LEGACY_VENUE, storage_name
from petrosa_pipelines.market_data.assets import table_schema
from petrosa_pipelines.market_data.partitions import (
    DATE_DIM,
    SYMBOL_DIM,
    daily_partitions,
    daily_symbol_partitions,
    split_partition_key,
)

LAYER = "analytics"
OWNER = "team:analytics"
#: the lake directory of the cross-symbol assets (partitioned by date alone, no instrument):
#: they span every venue, so no venue's (``analytics/correlation/all-venues/ALL/<day>``);
#: per-instrument assets take it from each partition's instrument
CROSS_VENUE_EXCHANGE = "all-venues"
#: where the cross-symbol assets were written before (``analytics/correlation/binance/ALL``),
#: when their rows were Binance USD-M's bare symbols; a reader may fall back to it for days not
#: rebuilt since (``legacy_exchange`` metadata; ``correlation.pool`` reads bare symbols as
#: Binance USD-M instruments)
LEGACY_CROSS_EXCHANGE = storage_name(LEGACY_VENUE)
AC = dg.AutomationCondition

#: ``since_last_handled()`` without its reset on the initial evaluation: on that one tick the
#: reset holds every partition of the asset, which the next tick reloads from the cursor by
#: listing the whole date x instrument space (N=500: ~57 s of CPU once, after each deploy that
#: changes a condition); the first evaluation never requests anyway (nothing updated yet)
HANDLED = (AC.newly_requested() | AC.newly_updated()).with_label("handled")
#: ``eager()`` over any date, without ``newly_missing``: Dagster evaluates that over the asset's
#: whole partition space on every tick (``NewlyTrueCondition``: ~1,070 days x N instruments of
#: keys per asset; at N=100, 13-24 s of CPU per 30 s tick, docs/scale.md). It only ever fired
#: for a partition key added while its inputs were already present, which a new day or a new
#: instrument never is (no market data yet); dependency updates on any date still trigger.
EAGER_ANY_DATE = (
    AC.any_deps_updated().since(HANDLED)
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
)
#: any date (not only the latest), and only once the inputs' blocking checks passed
GATED_ANY_DATE = (EAGER_ANY_DATE & AC.all_deps_blocking_checks_passed()).with_label(
    "eager, any date, upstream blocking checks passed"
)
#: rolling windows: eager() would wait forever on a missing older day of the window (a symbol
#: added last week), so only the updates, in-progress guards and checks gate the run
GATED_ROLLING = (
    AC.any_deps_updated().since(HANDLED)
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
    & AC.all_deps_blocking_checks_passed()
).with_label("on upstream update in window, upstream blocking checks passed")


def analytics_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([LAYER, name])


#: a rolling asset of day d also depends on this same-day asset (identity mapping), and does
#: not run while it is missing: an update of day d-3 then refreshes only the days that have
#: their own data, instead of requesting every later day of the window (measured in the stack
#: test: a 4-key backfill fanned out into ~150 runs without this anchor)
SAME_DAY_ANCHOR = analytics_key("candles_from_1m")
GATED_ROLLING_WITH_DATA = (
    GATED_ROLLING
    & ~AC.any_deps_match(AC.missing()).allow(dg.AssetSelection.assets(SAME_DAY_ANCHOR))
).with_label("on upstream update in window, own day present, upstream blocking checks passed")


def partition_mapping(spec: AnalyticSpec, inp: InputSpec) -> dg.PartitionMapping | None:
    """The mapping that brings the input's window to one partition of ``spec``."""
    if inp.all_symbols:
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIM)
    if inp.window_days <= 1:
        return None
    window = dg.TimeWindowPartitionMapping(start_offset=-(inp.window_days - 1))
    if not spec.per_symbol:
        return window
    return dg.MultiPartitionMapping(
        {
            DATE_DIM: dg.DimensionPartitionMapping(DATE_DIM, window),
            SYMBOL_DIM: dg.DimensionPartitionMapping(SYMBOL_DIM, dg.IdentityPartitionMapping()),
        }
    )


def column_lineage(spec: AnalyticSpec) -> dg.TableColumnLineage:
    """``dagster/column_lineage``: each output column from the upstream columns it reads."""
    return dg.TableColumnLineage(
        deps_by_column={
            out: [dg.TableColumnDep(dg.AssetKey(list(spec.inputs[i].key)), col) for i, col in deps]
            for out, deps in spec.lineage.items()
        }
    )


def _part(context: dg.AssetExecutionContext, per_symbol: bool) -> Part:
    """The partition as ``compute`` sees it: the instrument's venue symbol (the rows' ``symbol``
    column; their ``exchange`` column comes from the inputs)."""
    if per_symbol:
        day, inst = split_partition_key(context.partition_key)
        symbol: str | None = inst.symbol
    else:
        day, symbol = dt.date.fromisoformat(context.partition_key), None
    return Part(day, symbol, pd.Timestamp.now(tz="UTC"))


def no_data_note(missing: list[str]) -> str:
    """Why a materialisation has 0 rows: the upstream datasets that held none."""
    names = ", ".join(missing)
    return (
        f"no {names} data for this partition (market_data/{missing[0]} has 0 rows): nothing to "
        "compute, 0 rows written"
    )


def output_metadata(
    spec: AnalyticSpec,
    frame: pd.DataFrame,
    part: Part,
    note: str | None = None,
    instrument: str | None = None,
) -> dict[str, object]:
    """Row count, time range, schema, lineage and the chart (or the note) of one
    materialisation; charts are labelled with the ``instrument`` id (None: the symbol)."""
    ctx = ChartContext(part.day, part.symbol, instrument)
    meta: dict[str, object] = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": table_schema_of(spec),
        "dagster/column_lineage": column_lineage(spec),
        "window_closed": part.closed,
    }
    if note is not None:
        meta["note"] = note
        meta["summary"] = dg.MetadataValue.md(f"**{ctx.label}**: {note}")
    else:
        meta.update(spec.chart(frame, ctx))
    if len(frame) and spec.time_column in frame.columns:
        times = pd.to_datetime(frame[spec.time_column], utc=True)
        meta["first_time"] = str(times.min())
        meta["last_time"] = str(times.max())
    if "is_complete" in frame.columns:
        meta["partial_intervals"] = int((~frame["is_complete"].astype(bool)).sum())
    if not spec.per_symbol and "symbol_a" in frame.columns:  # ids: venue:SYMBOL
        instruments = sorted(set(frame["symbol_a"]) | set(frame["symbol_b"]))
        meta["instruments"] = dg.MetadataValue.json(instruments)
    return meta


def _dataset_schema(spec: AnalyticSpec):
    from petrosa_pipelines.catalog.schemas import DatasetSchema

    return DatasetSchema(spec.name, 1, spec.description, (), spec.time_column, spec.columns)


def table_schema_of(spec: AnalyticSpec) -> dg.TableSchema:
    return table_schema(_dataset_schema(spec))


def table_schema_frame(spec: AnalyticSpec) -> pd.DataFrame:
    """The asset's columns with their types and no rows."""
    return _dataset_schema(spec).empty_frame()


def build_analytics_asset(spec: AnalyticSpec) -> dg.AssetsDefinition:
    """One analytics asset from its spec."""
    ins = {
        name: dg.AssetIn(
            key=dg.AssetKey(list(inp.key)),
            partition_mapping=partition_mapping(spec, inp),
            metadata={"allow_missing_partitions": True},
        )
        for name, inp in spec.inputs.items()
    }

    @dg.asset(
        key=analytics_key(spec.name),
        ins=ins,
        partitions_def=daily_symbol_partitions if spec.per_symbol else daily_partitions,
        group_name=LAYER,
        description=spec.description,
        owners=[OWNER],
        kinds={"pandas", "parquet"},
        tags={"dataset": spec.name, "layer": LAYER, **spec.tags},
        metadata={
            **(
                {}
                if spec.per_symbol
                else {"exchange": CROSS_VENUE_EXCHANGE, "legacy_exchange": LEGACY_CROSS_EXCHANGE}
            ),
            "dagster/column_schema": table_schema_of(spec),
            "dagster/column_lineage": column_lineage(spec),
            "rolling_window_days": max(i.window_days for i in spec.inputs.values()),
            "cross_symbol": not spec.per_symbol,
        },
        deps=[SAME_DAY_ANCHOR] if spec.rolling and spec.per_symbol else None,
        automation_condition=(
            GATED_ROLLING_WITH_DATA if spec.rolling and spec.per_symbol else GATED_ANY_DATE
        ),
        code_version=f"{spec.name}-v1",
    )
    def _analytics_asset(
        context: dg.AssetExecutionContext, config: AnalyticsConfig, **inputs: pd.DataFrame
    ) -> dg.MaterializeResult:
        part = _part(context, spec.per_symbol)
        missing = spec.missing_inputs(inputs)
        note = no_data_note(missing) if missing else None
        frame = table_schema_frame(spec) if missing else spec.compute(inputs, part, config)
        inst = split_partition_key(context.partition_key)[1].id if spec.per_symbol else None
        meta = output_metadata(spec, frame, part, note, inst)
        meta["input_rows"] = dg.MetadataValue.json({k: len(v) for k, v in inputs.items()})
        context.log.info(f"{spec.name} {context.partition_key}: {len(frame)} rows {note or ''}")
        return dg.MaterializeResult(value=frame, metadata=meta)

    return _analytics_asset


ANALYTICS_ASSETS: list[dg.AssetsDefinition] = [build_analytics_asset(s) for s in ALL_SPECS]
ROLLING_KEYS = [analytics_key(s.name) for s in ALL_SPECS if s.per_symbol and s.rolling]
CROSS_SYMBOL_KEYS = [analytics_key(s.name) for s in ALL_SPECS if not s.per_symbol]
SYMBOL_DAY_KEYS = [analytics_key(s.name) for s in ALL_SPECS if s.per_symbol]

analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=dg.AssetSelection.assets(*SYMBOL_DAY_KEYS),
    description="Every per-symbol analytics asset of one symbol-day.",
)
analytics_rolling_job = dg.define_asset_job(
    "analytics_rolling_job",
    selection=dg.AssetSelection.assets(*ROLLING_KEYS),
    description="Rolling-window analytics (volatility, trend, deviation, seasonality, funding).",
)
analytics_cross_symbol_job = dg.define_asset_job(
    "analytics_cross_symbol_job",
    selection=dg.AssetSelection.assets(*CROSS_SYMBOL_KEYS),
    description="Cross-symbol correlation of one day, then its rolling window.",
)
ANALYTICS_JOBS = [
    analytics_job,
    analytics_rolling_job,
    analytics_cross_symbol_job,
]

#: the automation sensor for this group: Dagster's default one starts STOPPED
analytics_automation_sensor = dg.AutomationConditionSensorDefinition(
    "analytics_automation",
    target=dg.AssetSelection.groups(LAYER),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
