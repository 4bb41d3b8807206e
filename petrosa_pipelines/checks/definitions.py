"""The Dagster side of the auditor: partition-aware asset checks and the health asset.

``evaluate_dataset`` is the one place a dataset's check results are produced: the checks of a
materialisation run yield them, and the batched audit (``checks/batch.py``: today's open day,
a daily re-audit of closed days, health) records them for many partitions in one run.

Bodies are thin: load the partition, call the pure functions of ``audit``/``audit_book``, map
each ``CheckOutcome`` to an ``AssetCheckResult``. One ``multi_asset_check`` per dataset loads a
partition once for all its checks (10 M trades are not read nine times). Every spec carries
``partitions_def`` (without it Dagster 1.13 stores results with ``partition=None``; the
partition-aware reads in petrosa_pipelines_tests/test_checks/test_dagster_checks.py prove it).
Only checks whose failure means downstream data would be WRONG are blocking with ERROR
severity; staleness, anomalies and cross-source disagreements warn.
"""

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import is_long
from petrosa_pipelines.catalog.schemas import DATASETS, conform
from petrosa_pipelines.checks.applicability import (
    as_of_from_metadata,
    ingest_started_ms,
    judged_now_ms,
    open_day_note,
)
from petrosa_pipelines.checks.audit import (
    CANDLE_EVIDENCE_CHECK,
    WICK_CHECK,
    CheckOutcome,
    TradeArrays,
    candles_match_trades,
    trades_within_candles,
)
from petrosa_pipelines.checks.audit_book import FundingInterval, audit_dataset, reconcile
from petrosa_pipelines.checks.explain import describe, key_figures
from petrosa_pipelines.checks.grid import (
    LEGEND,
    Cell,
    cell,
    grid_frame,
    health_grid,
    heatmap_png,
    png_markdown,
    recent_rows,
)
from petrosa_pipelines.checks.health import (
    HEALTH_CHECK,
    describe_health,
    health_for,
    health_metadata,
)
from petrosa_pipelines.checks.records import latest_record
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.instruments import (
    DATASETS as DATASET_NAMES,
)
from petrosa_pipelines.instruments import (
    Instrument,
    market_data_path,
    parse_instrument,
    partition_key_str,
    split_key,
)
from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms
from petrosa_pipelines.live.quality import publish_check_results, publish_health
from petrosa_pipelines.market_data.partitions import (
    daily_symbol_partitions,
    split_partition_key,
)
from petrosa_pipelines.market_data.sources import venue_capabilities

LAYER = "checks"
OWNER = "team:market-data"
HEALTH_KEY = dg.AssetKey([LAYER, "health"])
GX_CHECK = "gx_suite"
FRESH_CHECK = "fresh"
MATCH_TRADES_CHECK = "candles_match_trades"
WITHIN_CANDLES_CHECK = "trades_within_candles"
AUDIT_TAG = "petrosa/audit"
#: at most this much aggTrades REST history per reconciliation (REST history is shallow and
#: costs weight 20 per 1000 trades)
REST_TRADES_SPAN_MS = 3_600_000


def market_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(market_data_path(dataset))


#: dataset -> (check name, blocking, description); blocking ones fail with ERROR severity
DATASET_CHECKS: dict[str, list[tuple[str, bool, str]]] = {
    "candles": [
        ("candles_complete", True, "1440 closed 1m candles a day; missing minutes as ranges."),
        ("candles_unique", True, "One candle per open time."),
        ("candles_ohlc_consistent", True, "low <= open, close <= high; every price > 0."),
        ("candles_volumes_valid", True, "Volumes >= 0; taker-buy volume <= total volume."),
        ("candles_continuous", False, "Each minute opens near the previous close."),
        ("candles_no_anomalies", False, "No return with an extreme robust z-score."),
        (
            WICK_CHECK,
            True,
            "No high or low implausibly far beyond its candle's body and its neighbours "
            "(a lone bad print multiplies range-based volatility).",
        ),
    ],
    "trades": [
        ("trades_id_continuous", True, "Aggregate trade ids consecutive; gaps as id ranges."),
        (
            CANDLE_EVIDENCE_CHECK,
            True,
            "Where trade ids are not consecutive: every traded minute of the venue's 1m candles "
            "has trades, volumes within PETROSA_TRADES_VOLUME_RTOL.",
        ),
        ("trades_unique", True, "One row per aggregate trade id."),
        ("trades_time_ordered", True, "Trade time never decreases as the id grows."),
        ("trades_values_valid", True, "Price and quantity > 0; first_trade_id <= last."),
    ],
    "depth": [
        ("depth_sequence", True, "Book update ids never go back; resyncs counted."),
        ("depth_not_crossed", True, "Best bid below best ask in every sample."),
        (
            "depth_levels_ordered",
            True,
            "Bids falling, asks rising; every level a price and a quantity > 0.",
        ),
        ("depth_coverage", False, "Share of the sampling cadence covered (no refill exists)."),
    ],
    "funding": [
        ("funding_interval_respected", True, "Settlements on the symbol's funding grid."),
        ("funding_rate_within_bounds", True, "Rates within the exchange's cap and floor."),
        ("funding_mark_price_present", False, "Mark price present where the source has one."),
    ],
}
_COMMON_CHECKS = [
    (FRESH_CHECK, False, "The newest row is close to the newest that could exist."),
    (GX_CHECK, False, "The dataset's versioned great-expectations suite."),
    (
        HEALTH_CHECK,
        False,
        "Health score 0-100 from completeness, validity, consistency, freshness.",
    ),
]


def _spec(asset: dg.AssetKey, name: str, blocking: bool, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        blocking=blocking,
        description=description,
        partitions_def=daily_symbol_partitions,
    )


def _metadata_value(v: Any) -> Any:
    if isinstance(v, list | dict | tuple):
        return dg.MetadataValue.json(json.loads(json.dumps(v, default=str)))
    return v


def to_result(asset: dg.AssetKey, o: CheckOutcome, day_note: str = "") -> dg.AssetCheckResult:
    """A CheckOutcome as a Dagster check result: a one-line description of why
    (``explain.describe``), the key figures as top-level metadata, examples and details as
    JSON."""
    raw = {**o.metadata(), **key_figures(o)}
    meta = {k: _metadata_value(v) for k, v in raw.items() if v is not None}
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=o.name,
        passed=bool(o.passed),
        severity=dg.AssetCheckSeverity(o.severity),
        metadata=meta,
        description=describe(o, day_note),
    )


def _built_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str):
    """The metadata of the partition's latest build (None when it was never built)."""
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1
    ).records
    mat = recs[0].asset_materialization if recs else None
    return mat.metadata if mat else None


def _built_as_of(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str) -> int | None:
    """When the partition's latest build was judged up to (None for builds before as_of_ms)."""
    return as_of_from_metadata(_built_metadata(instance, asset, partition))


def _partition(context: dg.AssetCheckExecutionContext) -> tuple[dt.date, Instrument, int, int]:
    """(day, instrument, day start ms, day end ms) of the check's partition."""
    day, inst = split_partition_key(context.partition_key)
    start, end = day_window_ms(day)
    return day, inst, start, end


def _conform(dataset: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """A loaded partition, or the dataset's empty frame when nothing was stored."""
    schema = DATASETS[dataset]
    if frame is not None and dataset == "depth" and is_long(frame):
        frame = conform(frame, schema)  # version 1 rows from an old reader: as version 2
    if frame is None or not set(schema.column_names) <= set(frame.columns):
        return schema.empty_frame()
    return frame


def read_partition(context: dg.AssetCheckExecutionContext, asset: dg.AssetKey) -> pd.DataFrame:
    """This check's partition of ``asset`` from the lake, or its empty frame when absent."""
    from petrosa_pipelines.lake import lake_path

    day, inst = split_partition_key(context.partition_key)
    io_manager = context.resources.io_manager
    dataset = asset.path[-1]
    relpath = lake_path("/".join(asset.path), inst.exchange, inst.symbol, day.isoformat())
    try:
        frame = io_manager.lake().read_frame(relpath)
    except FileNotFoundError:
        return DATASETS[dataset].empty_frame()
    return _conform(dataset, frame)


def gx_outcome(dataset: str, frame: pd.DataFrame) -> CheckOutcome:
    """The GX suite's summary as a (WARN, validity) outcome."""
    from petrosa_pipelines.checks.gx import validate_frame

    s = validate_frame(dataset, frame)
    return CheckOutcome(
        GX_CHECK,
        s.success,
        "WARN",
        "validity",
        s.evaluated,
        s.failed,
        {"expectations": s.evaluated, "failed_expectations": s.failed, "suite_version": s.version},
        [r for r in s.results if not r["success"]],
        note=f"suite {s.suite}",
    )


def _ledger(context: dg.AssetCheckExecutionContext, inst: Instrument, start: int, end: int) -> list:
    """Depth breaks and resyncs the ingest recorded for this instrument-day (empty when
    unreadable), from its venue's landing directory."""
    landing = getattr(context.resources, "landing", None)
    if landing is None:
        return []
    try:
        gaps = landing.store().gaps(inst.exchange, start, end, dataset="depth", symbol=inst.symbol)
    except Exception as exc:  # noqa: BLE001 - the ledger is advisory for this check
        context.log.warning(f"gap ledger unreadable: {type(exc).__name__}: {exc}")
        return []
    return [{"cause": g.cause, "start_ms": g.start_ms, "end_ms": g.end_ms} for g in gaps]


def _ingest_started(context: dg.AssetCheckExecutionContext, exchange: str) -> int | None:
    """When the ingest first landed anything for ``exchange`` (a venue's storage name; None
    when the landing zone cannot be asked)."""
    landing = getattr(context.resources, "landing", None)
    try:
        store = landing.store() if landing is not None else None
        root = getattr(store, "root", None)
        return ingest_started_ms(root, exchange) if root else None
    except OSError as exc:
        context.log.warning(f"landing zone unreadable: {type(exc).__name__}: {exc}")
        return None


def quality_verdict(meta: dict[str, Any], min_score: float) -> str:
    """The health check's verdict as one line with its grid mark (``checks/grid.py``)."""
    return f"{cell(meta, True, min_score).mark} {describe_health(meta, min_score)}"


def _quality_is_news(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str, verdict: Any
) -> bool:
    """Whether the partition's shown verdict differs from ``verdict``: the UI shows only
    observations newer than the latest materialisation, so one is due after each
    materialisation and whenever the verdict changes (not every batched audit)."""
    records_filter = dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition])
    seen = instance.fetch_observations(records_filter, limit=1).records
    if not seen:
        return True
    built = instance.fetch_materializations(records_filter, limit=1).records
    if built and built[0].storage_id > seen[0].storage_id:
        return True
    shown = seen[0].asset_observation.metadata.get("quality") if seen[0].asset_observation else None
    # either may be a Dagster metadata value (an observation's metadata is normalised)
    return getattr(shown, "value", shown) != getattr(verdict, "value", verdict)


def quality_observation(
    asset: dg.AssetKey, partition: str, meta: dict[str, Any], min_score: float
) -> dg.AssetObservation:
    """The partition's quality where partitions are listed: the Partitions tab shows a
    partition's materialisation metadata plus the observations newer than it, first
    (dagster-io/dagster ``ui-core/src/assets/AssetPartitionDetail.tsx``); check results are
    not shown there."""
    metadata: dict[str, Any] = {
        "quality": quality_verdict(meta, min_score),
        "quality_status": str(meta.get("status", "")),
        "failing_checks": ", ".join(meta.get("failed_checks", [])) or "none",
    }
    if "score" in meta:
        metadata["quality_score"] = float(meta["score"])
    return dg.AssetObservation(asset_key=asset, partition=partition, metadata=metadata)


def evaluate_dataset(
    dataset: str,
    frame: pd.DataFrame,
    partition: str,
    *,
    now_ms: int,
    settings: AuditSettings,
    ledger: Sequence[dict] = (),
    started: int | None = None,
    candles: pd.DataFrame | None = None,
    selected: set[str] | None = None,
    built_metadata: Mapping[str, Any] | None = None,
) -> tuple[list[dg.AssetCheckResult], dg.AssetObservation | None]:
    """Every check result of one dataset partition, and its quality observation (None when
    ``health`` is not selected): the ONE place a check evaluation is produced.

    Both paths call it: the multi-asset check of a materialisation run (results yielded in the
    run) and the batched audit (``checks/batch.py``: one run recording many partitions). So a
    hook on every evaluation (publishing quality elsewhere) belongs here. ``now_ms`` is the
    moment judged (``judged_now_ms``: an open day as of its build or its landing read);
    ``selected`` the check names wanted (None: all of the dataset's); ``built_metadata`` the
    partition's latest materialisation metadata (funding: the interval it was filled to).
    """
    cfg = settings
    day, inst = split_partition_key(partition)
    start, end = day_window_ms(day)
    asset = market_key(dataset)
    names = {n for n, _, _ in [*DATASET_CHECKS[dataset], *_COMMON_CHECKS]}
    selected = names if selected is None else selected
    day_note = open_day_note(end, now_ms)
    # the partition's venue, not the rows': an empty frame has no exchange to read
    outcomes = audit_dataset(
        dataset,
        frame,
        start,
        end,
        now_ms,
        cfg,
        list(ledger),
        started,
        candles=candles,
        exchange=inst.exchange,
        funding_interval=(
            FundingInterval.from_metadata(built_metadata, cfg.funding_interval_hours)
            if dataset == "funding"
            else None
        ),
    )
    if GX_CHECK in selected:
        gx = gx_outcome(dataset, frame)
        # a partition whose data cannot exist has nothing for the suite to judge either
        na = outcomes[0].not_applicable if all(o.not_applicable for o in outcomes) else ""
        outcomes.append(replace(gx, passed=True, not_applicable=na) if na else gx)
    results = [to_result(asset, o, day_note) for o in outcomes if o.name in selected]
    quality = None
    if HEALTH_CHECK in selected:
        judged_from = max(start, started) if started is not None and started < end else start
        meta = health_metadata(
            outcomes,
            cfg.health_weights,
            rows=len(frame),
            data_expected=min(now_ms, end) - judged_from > cfg.freshness_max_lag_s * 1000,
            min_score=cfg.health_min_score,
        )
        meta["min_score"] = cfg.health_min_score
        results.append(
            dg.AssetCheckResult(
                asset_key=asset,
                check_name=HEALTH_CHECK,
                passed=meta["status"] != "failed",
                severity=dg.AssetCheckSeverity.WARN,
                metadata={k: _metadata_value(v) for k, v in meta.items()},
                description=describe_health(meta, cfg.health_min_score),
            )
        )
        quality = quality_observation(asset, partition, meta, cfg.health_min_score)
    # on NATS too (docs/live.md): never raises; after a failure, skipped for 30 s
    publish_check_results(partition, dataset, results)
    return results, quality


def agreement_results(
    candles: pd.DataFrame,
    trades: pd.DataFrame,
    partition: str,
    examples_limit: int,
    selected: set[str] | None = None,
) -> list[dg.AssetCheckResult]:
    """Candles against trades of one instrument-day (``candles_trades_agreement``)."""
    candles_key, trades_key = market_key("candles"), market_key("trades")
    start, end = day_window_ms(split_partition_key(partition)[0])
    t = TradeArrays.from_frame(trades)
    wanted = {MATCH_TRADES_CHECK, WITHIN_CANDLES_CHECK} if selected is None else selected
    out = []
    if MATCH_TRADES_CHECK in wanted:
        o = candles_match_trades(candles, t, start, end, limit=examples_limit)
        out.append(to_result(candles_key, o))
    if WITHIN_CANDLES_CHECK in wanted:
        o = trades_within_candles(trades, t, candles, start, end, limit=examples_limit)
        out.append(to_result(trades_key, o))
    return out


#: resources an audit reads besides its own partition: depth the gap ledger, trades the day's
#: candles (through the lake)
_AUDIT_RESOURCES: dict[str, set[str]] = {"depth": {"landing"}, "trades": {"io_manager"}}


def build_dataset_check(
    dataset: str, settings: Callable[[], AuditSettings] = audit_settings
) -> dg.AssetChecksDefinition:
    """All single-dataset checks of ``dataset`` in one partition-aware multi-asset check."""
    asset = market_key(dataset)
    table = [*DATASET_CHECKS[dataset], *_COMMON_CHECKS]
    specs = [_spec(asset, n, b, d) for n, b, d in table]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{dataset}_audit",
        description=f"Audit of one {dataset} partition (see each check's description).",
        can_subset=True,
        ins={"frame": dg.AssetIn(key=asset)},
        required_resource_keys=_AUDIT_RESOURCES.get(dataset),
    )
    def _audit(context: dg.AssetCheckExecutionContext, frame: pd.DataFrame):
        day, inst, start, end = _partition(context)
        pk = str(context.partition_key)
        built = _built_metadata(context.instance, asset, pk)
        results, quality = evaluate_dataset(
            dataset,
            _conform(dataset, frame),
            pk,
            now_ms=judged_now_ms(utc_now_ms(), as_of_from_metadata(built)),
            settings=settings(),
            ledger=_ledger(context, inst, start, end) if dataset == "depth" else [],
            started=_ingest_started(context, inst.exchange) if dataset == "depth" else None,
            # trades whose ids prove nothing are held against the venue's candles of the day
            candles=read_partition(context, market_key("candles")) if dataset == "trades" else None,
            selected={k.name for k in context.selected_asset_check_keys},
            built_metadata=built,
        )
        yield from results
        if quality is not None and _quality_is_news(
            context.instance, asset, pk, quality.metadata["quality"]
        ):
            context.op_execution_context.log_event(quality)

    return _audit


def build_agreement_check(
    settings: Callable[[], AuditSettings] = audit_settings,
) -> dg.AssetChecksDefinition:
    """Trades re-aggregate to the candles, and every trade lies inside its minute's range."""
    candles_key, trades_key = market_key("candles"), market_key("trades")

    @dg.multi_asset_check(
        specs=[
            _spec(
                candles_key,
                MATCH_TRADES_CHECK,
                False,
                "Re-aggregating a minute's trades gives that minute's candle exactly.",
            ),
            _spec(
                trades_key,
                WITHIN_CANDLES_CHECK,
                False,
                "Every trade's price lies inside its minute candle's [low, high].",
            ),
        ],
        name="candles_trades_agreement",
        description="Candles against trades of the same symbol-day (skipped when one is absent).",
        can_subset=True,
        required_resource_keys={"io_manager"},
    )
    def _agreement(context: dg.AssetCheckExecutionContext):
        # read through the lake, not AssetIn: one of the two partitions may not exist, and
        # Dagster forbids input metadata (allow_missing_partitions) on a check's own asset
        yield from agreement_results(
            read_partition(context, candles_key),
            read_partition(context, trades_key),
            str(context.partition_key),
            settings().examples_limit,
            {k.name for k in context.selected_asset_check_keys},
        )

    return _agreement


def fetch_sources(
    dataset: str,
    exchange: Any,
    landing: Any,
    instrument: Instrument | str,
    day: dt.date,
    now_ms: int,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """ws, archive and REST rows of one instrument-day where each exists; errors become notes.

    ``instrument``: an ``Instrument``, an id or a bare (Binance USD-M) symbol; its venue picks
    the landing directory and the clients, and its capabilities which sources exist: the
    archive only where the venue publishes one for ``dataset``, REST only where it has that
    history (Bybit's recent-trade endpoint is no history). Candles ask REST for the whole day
    (one request of 1440 rows); trades only for the ws span, because trades REST history is
    shallow and costly.
    """
    inst = instrument if isinstance(instrument, Instrument) else parse_instrument(instrument)
    symbol, venue, name = inst.symbol, inst.venue, inst.exchange
    caps = venue_capabilities(name)
    start, end = day_window_ms(day)
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    time_col = DATASETS[dataset].time_column

    def attempt(source: str, fn: Callable[[], pd.DataFrame | None]) -> None:
        try:
            frame = fn()
        except Exception as exc:  # noqa: BLE001 - an unreachable source is a note, not a failure
            notes.append(f"{source}: {type(exc).__name__}: {exc}")
            return
        if frame is not None and len(frame):
            frames[source] = frame

    attempt("ws", lambda: landing.store().read_frame(name, dataset, symbol, start, end))
    if now_ms >= end and (caps is None or caps.archive_for(dataset) is not None):
        method = "daily_klines" if dataset == "candles" else "daily_agg_trades"
        attempt("archive", lambda: getattr(exchange.archive(venue), method)(symbol, day))
    ws = frames.get("ws")
    has_rest = caps is None or dataset in caps.rest_reach_ms
    if dataset == "candles" and has_rest:
        attempt("rest", lambda: exchange.rest(venue).klines(symbol, start, min(end, now_ms)))
    elif dataset == "trades" and ws is not None and has_rest:
        times = ws[time_col].to_numpy(dtype="datetime64[ms]").view("int64")
        lo = int(times.min())
        hi = min(int(times.max()) + 1, lo + REST_TRADES_SPAN_MS)
        attempt("rest", lambda: exchange.rest(venue).agg_trades(symbol, lo, hi))
    return frames, notes


#: the datasets with a second and third source to reconcile against (archive and REST)
RECONCILED_DATASETS = ("candles", "trades")


def build_reconcile_check(
    settings: Callable[[], AuditSettings] = audit_settings,
) -> dg.AssetChecksDefinition:
    """Websocket vs REST vs archive where they overlap, for candles and trades."""
    specs = {
        ds: _spec(
            market_key(ds),
            f"{ds}_sources_agree",
            False,
            "Websocket, REST and checksum-verified archive rows agree where they overlap.",
        )
        for ds in RECONCILED_DATASETS
    }

    @dg.multi_asset_check(
        specs=list(specs.values()),
        name="sources_reconciliation",
        description="Three-way reconciliation of the sources of one symbol-day.",
        can_subset=True,
        required_resource_keys={"exchange", "landing"},
    )
    def _reconcile(context: dg.AssetCheckExecutionContext):
        lim = settings().examples_limit
        day, inst, _, _ = _partition(context)
        selected = {k.name for k in context.selected_asset_check_keys}
        for ds, spec in specs.items():
            if spec.name not in selected:
                continue
            frames, notes = fetch_sources(
                ds,
                context.resources.exchange,
                context.resources.landing,
                inst,
                day,
                utc_now_ms(),
            )
            o = reconcile(ds, frames, DATASETS[ds].time_column, lim)
            result = to_result(market_key(ds), o)
            if notes:
                meta = {**result.metadata, "source_errors": dg.MetadataValue.json(notes)}
                result = result._replace(metadata=meta)
            yield result

    return _reconcile


#: the health asset's own check: every applicable dataset of the partition at the threshold
HEALTH_THRESHOLD_CHECK = "health_above_threshold"
#: the grid on checks/health covers this many most recent days with materialised partitions
GRID_DAYS = 7
GRID_MAX_ROWS = 120
GRID_DATASETS = DATASET_NAMES


def _health_records(
    instance: dg.DagsterInstance, rows: Sequence[tuple[str, str]]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Latest health-check metadata per (day, instrument, dataset) of ``rows`` (the instrument
    as its partition value: an id, or a legacy bare symbol)."""
    out = {}
    for ds in GRID_DATASETS:
        key = dg.AssetCheckKey(market_key(ds), HEALTH_CHECK)
        for day, sym in rows:
            rec = latest_record(instance, key, partition_key_str(day, sym))
            if rec is not None and rec.metadata:
                out[(day, sym, ds)] = {**rec.metadata, "passed": rec.passed}
    return out


def recent_grid(
    instance: dg.DagsterInstance, min_score: float, include: str | None = None
) -> dict[tuple[str, str], dict[str, Cell]]:
    """The health grid over the ``GRID_DAYS`` most recent days with a materialised
    market-data partition (``include``, a partition key, is always among them)."""
    built: set[tuple[str, str, str]] = set()
    for ds in GRID_DATASETS:
        for pk in instance.get_materialized_partitions(market_key(ds)):
            day, sym = split_key(pk)
            built.add((day.isoformat(), sym, ds))
    keys = {partition_key_str(d, s) for d, s, _ in built} | ({include} if include else set())
    rows = recent_rows(sorted(keys), GRID_DAYS, GRID_MAX_ROWS)
    return health_grid(_health_records(instance, rows), built, rows, GRID_DATASETS, min_score)


def grid_table(grid: dict[tuple[str, str], dict[str, Cell]]) -> dg.MetadataValue:
    """The grid as a Dagster table (rendered inline, every cell a string)."""
    frame = grid_frame(grid)
    columns = ["day", "symbol", *GRID_DATASETS]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(r[c]) for c in columns}) for r in frame.to_dict("records")],
        schema=dg.TableSchema(
            columns=[dg.TableColumn(c, "string", description=LEGEND) for c in columns]
        ),
    )


def threshold_result(frame: pd.DataFrame, min_score: float) -> tuple[bool, str, dict[str, Any]]:
    """(passed, description, metadata) of ``health_above_threshold`` on one partition's rows."""
    judged = frame[(frame["status"] != "not_applicable") & frame["score"].notna()]
    if judged.empty:
        why = "; ".join(
            f"{r.dataset}: {str(r.reason).removeprefix('not applicable: ')}"
            for r in frame.itertuples()
        )
        why = why or "nothing audited yet"
        return True, f"not applicable: {why}", {"status": "not_applicable"}
    low = judged[judged["score"] < min_score]
    worst = judged.loc[judged["score"].idxmin()]
    meta = {
        "status": "failed" if len(low) else "passed",
        "min_score": float(judged["score"].min()),
        "threshold": min_score,
        "worst_dataset": str(worst["dataset"]),
        "datasets_below": ", ".join(low["dataset"]) or "none",
    }
    if len(low):
        parts = []
        for r in low.itertuples():
            named = ", ".join(r.failed_checks) if len(r.failed_checks) else r.reason
            parts.append(f"{r.dataset} {r.score:g} ({named})")
        return False, f"below {min_score:g}: " + "; ".join(parts), meta
    scores = ", ".join(f"{r.dataset} {r.score:g}" for r in judged.itertuples())
    return True, f"every judged dataset at or above {min_score:g}: {scores}", meta


@dg.asset(
    key=HEALTH_KEY,
    partitions_def=daily_symbol_partitions,
    group_name=LAYER,
    owners=[OWNER],
    kinds={"pandas", "parquet"},
    tags={"layer": LAYER},
    check_specs=[
        dg.AssetCheckSpec(
            HEALTH_THRESHOLD_CHECK,
            asset=HEALTH_KEY,
            partitions_def=daily_symbol_partitions,
            description=(
                "Every dataset of the symbol-day that can have data scores at or above the "
                "health threshold (PETROSA_HEALTH_MIN_SCORE); fails with ERROR naming the "
                "datasets and checks below it."
            ),
        )
    ],
    description=(
        "Health score 0-100 of each market-data dataset for one symbol-day, from the latest "
        "results of its checks (completeness, validity, consistency, freshness; weights are "
        "settings). Refreshed without a run per partition: `audit_sensor`'s batched `audit_job` "
        "records it for every partition whose checks re-ran (a materialisation, today's "
        "open day, the daily re-audit), so a partition that degrades later shows here over "
        "time; materialising one partition here recomputes it at once. Each materialisation also "
        "shows `health_grid`: day x symbol x dataset over the recent materialised partitions, "
        "the failing check named in each cell."
    ),
)
def health(context: dg.AssetExecutionContext):  # noqa: ANN201 - see below
    # no return annotation: with check_specs, Dagster 1.13 reads `-> MaterializeResult` as a
    # Nothing output and rejects the frame (and a parametrised one as a tuple of outputs)
    min_score = audit_settings().health_min_score
    frame, meta, (passed, text, figures) = health_value(
        context.instance, str(context.partition_key), min_score
    )
    return dg.MaterializeResult(
        value=frame,
        metadata=meta,
        check_results=[
            dg.AssetCheckResult(
                check_name=HEALTH_THRESHOLD_CHECK,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=text,
                metadata=figures,
            )
        ],
    )


def health_value(
    instance: dg.DagsterInstance, partition: str, min_score: float, grid: bool = True
) -> tuple[pd.DataFrame, dict[str, Any], tuple[bool, str, dict[str, Any]]]:
    """(frame, metadata, threshold verdict) of one ``checks/health`` partition, from the latest
    health-check results of its datasets: what the asset returns and what the batched audit
    records for many partitions in one run (``checks/batch.py``). ``grid``: add the recent
    health grid and heatmap (about 500 reads; a batch adds it once, not per partition)."""
    day, value = split_key(partition)  # the value as registered (id or legacy)
    frames = [health_for(value, ds, day, day, instance=instance) for ds in DATASETS]
    frame = pd.concat([f for f in frames if len(f)] or [frames[0]], ignore_index=True)
    meta: dict[str, Any] = {"dagster/row_count": len(frame)}
    not_applicable = []
    for row in frame.itertuples():
        if row.status == "not_applicable":
            not_applicable.append(f"{row.dataset}: {row.reason}")
        elif pd.notna(row.score):
            meta[f"score_{row.dataset}"] = float(row.score)
    if not_applicable:  # a text key, so each score_* key stays a number for the UI's plots
        meta["not_applicable"] = "; ".join(not_applicable)
    scored = frame["score"].dropna() if len(frame) else frame
    if len(scored):
        meta["min_score"] = float(scored.min())
    verdict = threshold_result(frame, min_score)
    meta["verdict"] = verdict[1]
    if grid:
        meta.update(grid_metadata(instance, min_score, include=partition))
    publish_health(partition, frame.to_dict("records"))  # NATS and Redis; never raises
    return frame, meta, verdict


def grid_metadata(
    instance: dg.DagsterInstance, min_score: float, include: str | None = None
) -> dict[str, Any]:
    """``health_grid`` (a table) and ``health_heatmap`` (when it can be drawn)."""
    grid = recent_grid(instance, min_score, include=include)
    meta: dict[str, Any] = {"health_grid": grid_table(grid)}
    png = heatmap_png(
        grid, min_score, f"Health by symbol-day and dataset (threshold {min_score:g})"
    )
    if png is not None:
        meta["health_heatmap"] = dg.MetadataValue.md(png_markdown(png, "health heatmap"))
    return meta


def dataset_check_keys(checks: Sequence[dg.AssetChecksDefinition]) -> dict[str, list]:
    """Check keys of ``checks`` grouped by the market-data dataset they target."""
    out: dict[str, list[dg.AssetCheckKey]] = {}
    for c in checks:
        for key in c.check_keys:
            out.setdefault(key.asset_key.path[-1], []).append(key)
    return out


DATASET_AUDITS = [build_dataset_check(ds) for ds in DATASET_NAMES]
AGREEMENT_CHECK = build_agreement_check()
RECONCILE_CHECK = build_reconcile_check()
ALL_CHECKS = [*DATASET_AUDITS, AGREEMENT_CHECK, RECONCILE_CHECK]
#: the checks the batched audit re-evaluates (reconciliation calls the exchange: it runs in
#: the materialisation run only)
SCHEDULED_CHECKS = [*DATASET_AUDITS, AGREEMENT_CHECK]
