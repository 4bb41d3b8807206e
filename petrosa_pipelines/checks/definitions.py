"""The Dagster side of the auditor: partition-aware asset checks, the health asset, the audit
job and schedule, and the sensor that refreshes health when new results land.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd

from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.checks.applicability import ingest_started_ms
from petrosa_pipelines.checks.audit import (
    WICK_CHECK,
    CheckOutcome,
    TradeArrays,
    candles_match_trades,
    trades_within_candles,
)
from petrosa_pipelines.checks.audit_book import audit_dataset, reconcile
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
from petrosa_pipelines.checks.records import latest_record, new_check_records
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms
from petrosa_pipelines.market_data.partitions import (
    PARTITIONS_START,
    SYMBOLS_PARTITIONS_NAME,
    daily_symbol_partitions,
    split_partition_key,
)

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
    return dg.AssetKey(["market_data", dataset])


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
        ("trades_unique", True, "One row per aggregate trade id."),
        ("trades_time_ordered", True, "Trade time never decreases as the id grows."),
        ("trades_values_valid", True, "Price and quantity > 0; first_trade_id <= last."),
    ],
    "depth": [
        ("depth_sequence", True, "Book update ids never go back; resyncs counted."),
        ("depth_not_crossed", True, "Best bid below best ask in every sample."),
        ("depth_levels_ordered", True, "Bids falling, asks rising, levels 0..n-1, qty > 0."),
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


def to_result(asset: dg.AssetKey, o: CheckOutcome) -> dg.AssetCheckResult:
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
        description=describe(o),
    )


def _partition(context: dg.AssetCheckExecutionContext) -> tuple[dt.date, str, int, int]:
    day, symbol = split_partition_key(context.partition_key)
    start, end = day_window_ms(day)
    return day, symbol, start, end


def _conform(dataset: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """A loaded partition, or the dataset's empty frame when nothing was stored."""
    schema = DATASETS[dataset]
    if frame is None or not set(schema.column_names) <= set(frame.columns):
        return schema.empty_frame()
    return frame


def read_partition(context: dg.AssetCheckExecutionContext, asset: dg.AssetKey) -> pd.DataFrame:
    """This check's partition of ``asset`` from the lake, or its empty frame when absent."""
    from petrosa_pipelines.lake import lake_path

    day, symbol = split_partition_key(context.partition_key)
    io_manager = context.resources.io_manager
    dataset = asset.path[-1]
    relpath = lake_path(
        "/".join(asset.path), getattr(io_manager, "exchange", "binance"), symbol, day.isoformat()
    )
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


def _ledger(context: dg.AssetCheckExecutionContext, symbol: str, start: int, end: int) -> list:
    """Depth breaks and resyncs the ingest recorded for this symbol-day (empty when unreadable)."""
    landing = getattr(context.resources, "landing", None)
    if landing is None:
        return []
    try:
        gaps = landing.store().gaps("binance", start, end, dataset="depth", symbol=symbol)
    except Exception as exc:  # noqa: BLE001 - the ledger is advisory for this check
        context.log.warning(f"gap ledger unreadable: {type(exc).__name__}: {exc}")
        return []
    return [{"cause": g.cause, "start_ms": g.start_ms, "end_ms": g.end_ms} for g in gaps]


def _ingest_started(context: dg.AssetCheckExecutionContext) -> int | None:
    """When the ingest first landed anything (None when the landing zone cannot be asked)."""
    landing = getattr(context.resources, "landing", None)
    try:
        store = landing.store() if landing is not None else None
        root = getattr(store, "root", None)
        return ingest_started_ms(root, "binance") if root else None
    except OSError as exc:
        context.log.warning(f"landing zone unreadable: {type(exc).__name__}: {exc}")
        return None


def quality_verdict(meta: dict[str, Any], min_score: float) -> str:
    """The health check's verdict as one line with its grid mark (``checks/grid.py``)."""
    return f"{cell(meta, True, min_score).mark} {describe_health(meta, min_score)}"


def _quality_is_news(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str, verdict: str
) -> bool:
    """Whether the partition's shown verdict differs from ``verdict``: the UI shows only
    observations newer than the latest materialisation, so one is due after each
    materialisation and whenever the verdict changes (not every scheduled audit)."""
    records_filter = dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition])
    seen = instance.fetch_observations(records_filter, limit=1).records
    if not seen:
        return True
    built = instance.fetch_materializations(records_filter, limit=1).records
    if built and built[0].storage_id > seen[0].storage_id:
        return True
    shown = seen[0].asset_observation.metadata.get("quality") if seen[0].asset_observation else None
    return getattr(shown, "value", shown) != verdict


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
        required_resource_keys={"landing"} if dataset == "depth" else None,
    )
    def _audit(context: dg.AssetCheckExecutionContext, frame: pd.DataFrame):
        cfg = settings()
        day, symbol, start, end = _partition(context)
        frame = _conform(dataset, frame)
        ledger = _ledger(context, symbol, start, end) if dataset == "depth" else []
        started = _ingest_started(context) if dataset == "depth" else None
        now = utc_now_ms()
        outcomes = audit_dataset(dataset, frame, start, end, now, cfg, ledger, started)
        selected = {k.name for k in context.selected_asset_check_keys}
        if GX_CHECK in selected:
            gx = gx_outcome(dataset, frame)
            # a partition whose data cannot exist has nothing for the suite to judge either
            na = outcomes[0].not_applicable if all(o.not_applicable for o in outcomes) else ""
            outcomes.append(replace(gx, passed=True, not_applicable=na) if na else gx)
        for o in outcomes:
            if o.name in selected:
                yield to_result(asset, o)
        if HEALTH_CHECK in selected:
            judged_from = max(start, started) if started is not None and started < end else start
            meta = health_metadata(
                outcomes,
                cfg.health_weights,
                rows=len(frame),
                data_expected=min(now, end) - judged_from > cfg.freshness_max_lag_s * 1000,
                min_score=cfg.health_min_score,
            )
            meta["min_score"] = cfg.health_min_score
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=HEALTH_CHECK,
                passed=meta["status"] != "failed",
                severity=dg.AssetCheckSeverity.WARN,
                metadata={k: _metadata_value(v) for k, v in meta.items()},
                description=describe_health(meta, cfg.health_min_score),
            )
            pk = str(context.partition_key)
            verdict = quality_verdict(meta, cfg.health_min_score)
            if _quality_is_news(context.instance, asset, pk, verdict):
                context.op_execution_context.log_event(
                    quality_observation(asset, pk, meta, cfg.health_min_score)
                )

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
        candles = read_partition(context, candles_key)
        trades = read_partition(context, trades_key)
        lim = settings().examples_limit
        _, _, start, end = _partition(context)
        t = TradeArrays.from_frame(trades)
        selected = {k.name for k in context.selected_asset_check_keys}
        if MATCH_TRADES_CHECK in selected:
            yield to_result(candles_key, candles_match_trades(candles, t, start, end, limit=lim))
        if WITHIN_CANDLES_CHECK in selected:
            o = trades_within_candles(trades, t, candles, start, end, limit=lim)
            yield to_result(trades_key, o)

    return _agreement


def fetch_sources(
    dataset: str, exchange: Any, landing: Any, symbol: str, day: dt.date, now_ms: int
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """ws, archive and REST rows of one symbol-day where each exists; errors become notes.

    REST is asked only where the websocket has rows (candles: the whole day is one request of
    1440 rows; trades: the ws span, because aggTrades REST history is shallow and costly).
    """
    start, end = day_window_ms(day)
    name = exchange.settings().exchange
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
    if now_ms >= end:
        method = "daily_klines" if dataset == "candles" else "daily_agg_trades"
        attempt("archive", lambda: getattr(exchange.archive(), method)(symbol, day))
    ws = frames.get("ws")
    if dataset == "candles":
        attempt("rest", lambda: exchange.rest().klines(symbol, start, min(end, now_ms)))
    elif ws is not None:
        times = ws[time_col].to_numpy(dtype="datetime64[ms]").view("int64")
        lo = int(times.min())
        hi = min(int(times.max()) + 1, lo + REST_TRADES_SPAN_MS)
        attempt("rest", lambda: exchange.rest().agg_trades(symbol, lo, hi))
    return frames, notes


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
        for ds in ("candles", "trades")
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
        day, symbol, _, _ = _partition(context)
        selected = {k.name for k in context.selected_asset_check_keys}
        for ds, spec in specs.items():
            if spec.name not in selected:
                continue
            frames, notes = fetch_sources(
                ds,
                context.resources.exchange,
                context.resources.landing,
                symbol,
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
GRID_DATASETS = ("candles", "trades", "depth", "funding")


def _health_records(
    instance: dg.DagsterInstance, rows: Sequence[tuple[str, str]]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Latest health-check metadata per (day, symbol, dataset) of ``rows``."""
    out = {}
    for ds in GRID_DATASETS:
        key = dg.AssetCheckKey(market_key(ds), HEALTH_CHECK)
        for day, sym in rows:
            rec = latest_record(instance, key, f"{day}|{sym}")
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
            day, _, sym = str(pk).partition("|")
            built.add((day, sym, ds))
    keys = {f"{d}|{s}" for d, s, _ in built} | ({include} if include else set())
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
    metadata={"exchange": "binance"},
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
        "settings). Refreshed by `health_refresh_sensor` whenever a dataset's checks re-run, "
        "so a partition that degrades later shows here over time. Each materialisation also "
        "shows `health_grid`: day x symbol x dataset over the recent materialised partitions, "
        "the failing check named in each cell."
    ),
)
def health(context: dg.AssetExecutionContext):  # noqa: ANN201 - see below
    # no return annotation: with check_specs, Dagster 1.13 reads `-> MaterializeResult` as a
    # Nothing output and rejects the frame (and a parametrised one as a tuple of outputs)
    day, symbol = split_partition_key(context.partition_key)
    min_score = audit_settings().health_min_score
    frames = [health_for(symbol, ds, day, day, instance=context.instance) for ds in DATASETS]
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
    passed, text, figures = threshold_result(frame, min_score)
    meta["verdict"] = text
    grid = recent_grid(context.instance, min_score, include=str(context.partition_key))
    meta["health_grid"] = grid_table(grid)
    png = heatmap_png(
        grid, min_score, f"Health by symbol-day and dataset (threshold {min_score:g})"
    )
    if png is not None:
        meta["health_heatmap"] = dg.MetadataValue.md(png_markdown(png, "health heatmap"))
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


def dataset_check_keys(checks: Sequence[dg.AssetChecksDefinition]) -> dict[str, list]:
    """Check keys of ``checks`` grouped by the market-data dataset they target."""
    out: dict[str, list[dg.AssetCheckKey]] = {}
    for c in checks:
        for key in c.check_keys:
            out.setdefault(key.asset_key.path[-1], []).append(key)
    return out


def cron_for_interval(seconds: int) -> str:
    """A cron expression firing every ``seconds`` (whole minutes < 1 h, or whole hours)."""
    if seconds % 3600 == 0:
        return f"0 */{seconds // 3600} * * *" if seconds < 86400 else "0 0 * * *"
    if seconds % 60 == 0 and seconds < 3600:
        return f"*/{seconds // 60} * * * *"
    raise ValueError(f"audit interval {seconds}s is neither whole minutes < 1 h nor whole hours")


def audit_run_requests(
    instance: dg.DagsterInstance,
    now: dt.datetime,
    recent_days: int,
    checks: Sequence[dg.AssetChecksDefinition],
    tick: str,
) -> list[dg.RunRequest]:
    """One run per materialised symbol-day of the last ``recent_days`` days, re-running the
    checks of exactly the datasets that have that partition."""
    by_dataset = dataset_check_keys(checks)
    materialised = {ds: instance.get_materialized_partitions(market_key(ds)) for ds in by_dataset}
    symbols = instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME)
    first = dt.date.fromisoformat(PARTITIONS_START)
    days = [now.date() - dt.timedelta(days=i) for i in range(recent_days)]
    requests = []
    for day in sorted(d for d in days if d >= first):
        for symbol in sorted(symbols):
            pk = f"{day.isoformat()}|{symbol}"
            keys = [k for ds, ks in by_dataset.items() if pk in materialised[ds] for k in ks]
            if not keys:
                continue
            tags = dict(daily_symbol_partitions.get_tags_for_partition_key(pk))
            tags[AUDIT_TAG] = "scheduled"
            # partition via tags, not partition_key: a checks-only job has no assets to infer
            # its partitions definition from, and Dagster rejects partition_key there
            requests.append(
                dg.RunRequest(run_key=f"audit:{pk}:{tick}", tags=tags, asset_check_keys=keys)
            )
    return requests


def build_audit_job(checks: Sequence[dg.AssetChecksDefinition], name: str = "audit_job") -> Any:
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.checks(*checks),
        description="Re-run the market-data checks of one symbol-day (no re-materialisation).",
        tags={AUDIT_TAG: "true"},
    )


def build_audit_schedule(
    job: Any,
    checks: Sequence[dg.AssetChecksDefinition],
    interval_s: int = AuditSettings.audit_interval_s,
    settings: Callable[[], AuditSettings] = audit_settings,
    reconcile_checks: Sequence[dg.AssetChecksDefinition] = (),
) -> dg.ScheduleDefinition:
    """Re-run the checks over the most recent partitions every ``interval_s`` seconds, so a
    partition that degrades later (late data, a republished archive) is caught.

    ``reconcile_checks`` join when the ``audit_reconcile`` setting is on (they call the
    exchange). The cron is fixed when definitions load: pass ``audit_settings().audit_interval_s``.
    """

    @dg.schedule(
        name="audit_schedule",
        job=job,
        cron_schedule=cron_for_interval(interval_s),
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Scheduled audit every {interval_s}s over the most recent partitions.",
    )
    def _audit_schedule(context: dg.ScheduleEvaluationContext):
        now = context.scheduled_execution_time or dt.datetime.now(tz=dt.UTC)
        cfg = settings()
        active = [*checks, *(reconcile_checks if cfg.audit_reconcile else ())]
        requests = audit_run_requests(
            context.instance,
            now.astimezone(dt.UTC),
            cfg.audit_recent_days,
            active,
            now.strftime("%Y%m%dT%H%M%S"),
        )
        return requests or dg.SkipReason("no materialised partition in the audit window")

    return _audit_schedule


def build_health_sensor(
    checks: Sequence[dg.AssetChecksDefinition], minimum_interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Materialise the health asset of every partition whose health check has new results."""
    keys = [k for c in checks for k in c.check_keys if k.name == HEALTH_CHECK]

    @dg.sensor(
        name="health_refresh_sensor",
        # by key: the code location adds lineage to the asset (catalog/lineage.py)
        target=[HEALTH_KEY],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refresh checks/health for partitions whose checks produced new results.",
    )
    def _health_sensor(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        cursor = json.loads(context.cursor) if context.cursor else {}
        latest: dict[str, int] = {}
        for rec in new_check_records(context.instance, keys, cursor):
            if rec.partition:
                latest[rec.partition] = max(latest.get(rec.partition, 0), rec.record_id)
        for pk, rid in sorted(latest.items()):
            yield dg.RunRequest(
                run_key=f"health:{pk}:{rid}", partition_key=pk, asset_selection=[HEALTH_KEY]
            )
        context.update_cursor(json.dumps(cursor))

    return _health_sensor


DATASET_AUDITS = [build_dataset_check(ds) for ds in ("candles", "trades", "depth", "funding")]
AGREEMENT_CHECK = build_agreement_check()
RECONCILE_CHECK = build_reconcile_check()
ALL_CHECKS = [*DATASET_AUDITS, AGREEMENT_CHECK, RECONCILE_CHECK]
#: checks the schedule re-runs (reconciliation calls the exchange: opt in via a setting)
SCHEDULED_CHECKS = [*DATASET_AUDITS, AGREEMENT_CHECK]
audit_job = build_audit_job(ALL_CHECKS)
audit_schedule = build_audit_schedule(
    audit_job, SCHEDULED_CHECKS, reconcile_checks=[RECONCILE_CHECK]
)
health_refresh_sensor = build_health_sensor(ALL_CHECKS)
