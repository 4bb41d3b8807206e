"""Auto-backfill: re-materialise exactly the partitions the gap ledger or a failed gap check
names, within limits that are settings (minimum gap, concurrent runs, cooldown, attempts).

Re-materialising a partition refills it from the archive or REST (``market_data.fill``) and
re-runs its checks in the same run, so a closed gap turns the check green. Gaps that history
cannot fill (depth: Binance publishes no order-book history; the rule and its words are shared
with the checks in ``petrosa_pipelines/checks/applicability.py``) are marked unrecoverable at once;
any other gap becomes unrecoverable after ``max_attempts`` and is never retried again. Both are
recorded as asset observations so the UI shows them on the partition.

The open day (today's partition, ``market_data.partitions``) is never repaired here: it is
still landing, its archive does not exist yet, and the window sensor builds it in full once
it closes. Its gaps wait (no attempt is spent) and are planned like any other once it closes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

from petrosa_pipelines.checks.applicability import (
    NO_HISTORY_DATASETS,
    no_history_datasets,
    no_history_reason,
)
from petrosa_pipelines.checks.records import FAILED, latest_by_partition, latest_record
from petrosa_pipelines.checks.settings import BackfillSettings, backfill_settings
from petrosa_pipelines.exchanges import venue_of
from petrosa_pipelines.instruments import (
    DATASETS,
    LEGACY_VENUE,
    Instrument,
    InstrumentError,
    market_data_path,
    parse_instrument,
    partition_key_str,
    partition_value,
    split_key,
    storage_name,
)
from petrosa_pipelines.landing.records import sane_gap
from petrosa_pipelines.lib.timeutil import DAY_MS, day_window_ms
from petrosa_pipelines.market_data.partitions import (
    PARTITIONS_START,
    SYMBOLS_PARTITIONS_NAME,
    is_open_day,
)

#: why a target of today's partition waits
OPEN_DAY_SKIP = "open day (repaired once it closes)"

AUTO_BACKFILL_TAG = "petrosa/auto_backfill"
#: check name per dataset whose failure means "rows are missing", and the metadata key giving
#: the missing time (trade-id gaps always qualify: any missing id is lost data)
GAP_CHECKS = {
    "candles": ("candles_complete", "missing_ms"),
    "trades": ("trades_id_continuous", None),
    "funding": ("funding_interval_respected", None),
    "depth": ("depth_coverage", "uncovered_ms"),
}
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def market_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(market_data_path(dataset))


def _of_venue(registered: Sequence[str], venue: str) -> list[str]:
    """The registered partition values whose instrument trades on ``venue``."""
    out = []
    for value in registered:
        try:
            if parse_instrument(value).venue == venue:
                out.append(value)
        except InstrumentError:
            continue
    return out


def unrecoverable(target: GapTarget, datasets: Sequence[str]) -> bool:
    """Whether ``target`` can never be refilled: its dataset is configured unrecoverable and,
    for a dataset no exchange usually keeps (depth), its venue keeps no history of it either
    (a venue publishing book archives, Bybit's daily order-book files, can refill depth)."""
    if target.dataset not in datasets:
        return False
    if target.dataset not in NO_HISTORY_DATASETS:
        return True
    _, inst = split_key(target.partition)
    return target.dataset in no_history_datasets(parse_instrument(inst).venue)


@dataclass(frozen=True)
class GapTarget:
    """A (dataset, partition) that needs a refill, why, and how much is missing."""

    dataset: str
    partition: str
    reason: str  # ledger:<cause> | check:<name>
    gap_ms: int
    #: when the evidence appeared (ledger recorded_at / check evaluation time), epoch s
    seen_at: float

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.partition}"


# ------------------------------------------------------------------------------------- evidence
def ledger_targets(
    gaps: Iterable[Any],
    symbols: Sequence[str],
    lookback_start_ms: int,
    end_ms: int | None = None,
    venue: str = LEGACY_VENUE,
) -> list[GapTarget]:
    """Gap-ledger entries of one venue's landing zone split into instrument-day partitions
    (``*`` = every registered instrument of the venue / every dataset). ``symbols`` are the
    registered partition values: a target takes the form registered for its instrument
    (``instruments.partition_value``: the id, or a legacy bare symbol not yet migrated).

    Bounded whatever an entry says: its window is clamped (``landing.records.sane_gap``) and
    cut to [``lookback_start_ms``, ``end_ms``), so the days walked never exceed the lookback
    (an entry ending at 2**63-1 once made this walk 10**14 days and the sensor fail every tick).
    """
    out = []
    first_day_ms = day_window_ms(dt.date.fromisoformat(PARTITIONS_START))[0]
    for g in gaps:
        g = sane_gap(g)
        lo = max(g.start_ms, lookback_start_ms, first_day_ms)
        hi = g.end_ms if end_ms is None else min(g.end_ms, end_ms)
        syms = (
            _of_venue(symbols, venue)
            if g.symbol == "*"
            else [partition_value(Instrument(venue, g.symbol), symbols)]
        )
        dsets = DATASETS if g.dataset == "*" else [g.dataset]
        day_start = lo - lo % DAY_MS
        while day_start < hi:
            span = min(hi, day_start + DAY_MS) - max(lo, day_start)
            day = dt.datetime.fromtimestamp(day_start / 1000, tz=dt.UTC).date().isoformat()
            for ds in dsets:
                for sym in syms:
                    out.append(
                        GapTarget(
                            ds,
                            partition_key_str(day, sym),
                            f"ledger:{g.cause}",
                            span,
                            g.recorded_at / 1000,
                        )
                    )
            day_start += DAY_MS
    return out


def check_targets(instance: dg.DagsterInstance, first_day: dt.date) -> list[GapTarget]:
    """Partitions whose latest gap check FAILED (within the lookback)."""
    out = []
    for dataset, (check, size_key) in GAP_CHECKS.items():
        key = dg.AssetCheckKey(market_key(dataset), check)
        for pk, status in latest_by_partition(instance, key).items():
            if status != FAILED or pk[:10] < first_day.isoformat():
                continue
            rec = latest_record(instance, key, pk)
            if rec is None:
                continue
            gap = int(rec.metadata.get(size_key, 0)) if size_key else None
            out.append(
                GapTarget(
                    dataset, pk, f"check:{check}", gap if gap is not None else -1, rec.timestamp
                )
            )
    return out


def registered_targets(targets: Iterable[GapTarget], symbols: Sequence[str]) -> list[GapTarget]:
    """``targets`` under the partition key their instrument is registered as now, dropping
    those of unregistered instruments: a check failed on a legacy bare key before
    ``petrosa migrate-instruments`` is repaired under the instrument id (the bare partition no
    longer exists, and a run request for it would be refused)."""
    out = []
    for t in targets:
        day, value = split_key(t.partition)
        try:
            value = partition_value(parse_instrument(value), symbols)
        except InstrumentError:
            continue
        if value in symbols:
            out.append(replace(t, partition=partition_key_str(day, value)))
    return out


# ------------------------------------------------------------------------------------- planning
@dataclass
class Plan:
    requests: list[GapTarget]
    unrecoverable: list[tuple[GapTarget, str]]
    skipped: dict[str, int]


def closed_day_targets(
    targets: Iterable[GapTarget], now: float, skipped: dict[str, int]
) -> list[GapTarget]:
    """``targets`` of days that have ended at ``now``; the open day's are counted in
    ``skipped`` and given no state entry, so nothing is spent on a day still landing."""
    targets = list(targets)
    out = [t for t in targets if not is_open_day(t.partition[:10], now)]
    waiting = len(targets) - len(out)
    if waiting:
        skipped[OPEN_DAY_SKIP] = skipped.get(OPEN_DAY_SKIP, 0) + waiting
    return out


def plan_backfill(
    targets: Iterable[GapTarget],
    state: dict[str, dict],
    active_runs: int,
    now: float,
    settings: BackfillSettings,
) -> Plan:
    """Which targets get a run now; updates ``state`` (attempts, last attempt, unrecoverable).

    A target is new evidence only if it appeared after the last attempt on that partition:
    the ledger is append-only, so an entry already acted on must not trigger again; a check
    that fails again after the refill does.
    """
    merged: dict[str, GapTarget] = {}
    for t in targets:
        prev = merged.get(t.key)
        if prev is not None:  # one run repairs all gaps of a partition: keep the largest
            size = -1 if -1 in (t.gap_ms, prev.gap_ms) else max(t.gap_ms, prev.gap_ms)
            t = replace(t, gap_ms=size, seen_at=max(t.seen_at, prev.seen_at))
        merged[t.key] = t
    plan = Plan([], [], {})

    def skip(why: str) -> None:
        plan.skipped[why] = plan.skipped.get(why, 0) + 1

    slots = max(settings.max_concurrent_runs - active_runs, 0)
    closed = closed_day_targets(merged.values(), now, plan.skipped)
    for t in sorted(closed, key=lambda t: (t.partition, t.dataset)):
        entry = state.setdefault(t.key, {"attempts": 0, "last_attempt": 0.0})
        if entry.get("unrecoverable"):
            skip("unrecoverable")
            continue
        if t.seen_at <= entry["last_attempt"]:
            skip("already attempted")
            continue
        if unrecoverable(t, settings.unrecoverable_datasets):
            entry["unrecoverable"] = no_history_reason(t.dataset)
            plan.unrecoverable.append((t, entry["unrecoverable"]))
            continue
        if 0 <= t.gap_ms < settings.min_gap_s * 1000:
            skip("below minimum gap")
            continue
        if now - entry["last_attempt"] < settings.cooldown_s:
            skip("cooling down")
            continue
        if entry["attempts"] >= settings.max_attempts:
            entry["unrecoverable"] = f"still missing after {entry['attempts']} attempts"
            plan.unrecoverable.append((t, entry["unrecoverable"]))
            continue
        if len(plan.requests) >= slots:
            skip("max concurrent runs")
            continue
        entry["attempts"] += 1
        entry["last_attempt"] = now
        plan.requests.append(t)
    return plan


def run_request(
    t: GapTarget, attempt: int, settings: BackfillSettings, check_keys: Sequence[dg.AssetCheckKey]
) -> dg.RunRequest:
    """Re-materialise one dataset partition and re-run its checks in the same run."""
    key = market_key(t.dataset)
    op_name = "__".join(key.path)
    return dg.RunRequest(
        run_key=f"autobackfill:{t.key}:{attempt}",
        partition_key=t.partition,
        asset_selection=[key],
        asset_check_keys=[k for k in check_keys if k.asset_key == key],
        run_config={"ops": {op_name: {"config": {"dedup_keep": settings.dedup_keep}}}},
        tags={
            AUTO_BACKFILL_TAG: "true",
            "petrosa/dataset": t.dataset,
            "petrosa/attempt": str(attempt),
            "petrosa/reason": t.reason,
        },
    )


def _ledger(root: str | None, exchange: str, start_ms: int, end_ms: int) -> list[Any]:
    if not root:
        return []
    from petrosa_pipelines.landing import LandingStore

    return LandingStore(root).gaps(exchange, start_ms, end_ms)


def _landing_root() -> tuple[str, tuple[str, ...]]:
    """The landing root and the venues whose ledgers to read (every venue followed)."""
    from petrosa_pipelines.settings import from_env

    s = from_env()
    return s.landing_path, s.venues


def build_auto_backfill_sensor(
    settings: Callable[[], BackfillSettings] = backfill_settings,
    landing: Callable[[], tuple[str | None, str | Sequence[str]]] = _landing_root,
    gap_reader: Callable[[str | None, str, int, int], list[Any]] = _ledger,
    clock: Callable[[], float] = time.time,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    """The sensor; factory arguments let tests inject a fake ledger, settings and a clock."""

    @dg.sensor(
        name="auto_backfill_sensor",
        target=dg.AssetSelection.assets(*(market_key(d) for d in DATASETS)),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-materialise partitions named by the gap ledger or a failed gap check.",
    )
    def _auto_backfill(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cfg = settings()
        now = clock()
        state = json.loads(context.cursor) if context.cursor else {}
        first_day = dt.datetime.fromtimestamp(now, tz=dt.UTC).date() - dt.timedelta(
            days=cfg.lookback_days
        )
        start_ms = day_window_ms(first_day)[0]
        root, venues = landing()
        symbols = context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME)
        targets = registered_targets(check_targets(context.instance, first_day), symbols)
        for venue in [venues] if isinstance(venues, str) else venues:
            venue = venue_of(venue)  # a venue id or storage name
            try:
                gaps = gap_reader(root, storage_name(venue), start_ms, int(now * 1000))
            except Exception as exc:  # noqa: BLE001 - the failed checks still get repaired
                context.log.warning(f"gap ledger unreadable: {type(exc).__name__}: {exc}")
                gaps = []
            targets += [
                t
                for t in ledger_targets(gaps, symbols, start_ms, int(now * 1000) + 1, venue)
                if split_key(t.partition)[1] in symbols
            ]
        active = len(
            context.instance.get_run_ids(
                dg.RunsFilter(tags={AUTO_BACKFILL_TAG: "true"}, statuses=ACTIVE), limit=1000
            )
        )
        plan = plan_backfill(targets, state, active, now, cfg)
        check_keys = list(context.repository_def.asset_graph.asset_check_keys)
        requests = [
            run_request(t, state[t.key]["attempts"], cfg, check_keys) for t in plan.requests
        ]
        events = [
            dg.AssetObservation(
                market_key(t.dataset),
                partition=t.partition,
                metadata={"unrecoverable_gap": why, "reason": t.reason},
            )
            for t, why in plan.unrecoverable
        ]
        for t, why in plan.unrecoverable:
            context.log.warning(f"gap in {t.key} marked unrecoverable: {why}")
        return dg.SensorResult(
            run_requests=requests,
            asset_events=events,
            cursor=json.dumps(state),
            skip_reason=None if requests else f"nothing to backfill ({plan.skipped})",
        )

    return _auto_backfill


auto_backfill_sensor = build_auto_backfill_sensor()

__all__ = [
    "GapTarget",
    "auto_backfill_sensor",
    "build_auto_backfill_sensor",
    "check_targets",
    "ledger_targets",
    "plan_backfill",
    "registered_targets",
]
