"""The checks' run economy: one batched audit run per interval, never a run per partition.

A materialisation run already runs its partition's checks (``definitions.build_dataset_check``).
What used to cost a run per instrument-day on a clock (``audit_schedule`` every 300 s over the
last 2 days, then ``health_refresh_sensor`` one more run per partition: ~1,150 runs per
instrument per day) is now at most ONE ``audit_job`` run per ``audit_interval_s`` in total,
whatever the number of instruments (``audit_sensor`` below). Each run fans out inside over:

- the open day (today): registered instruments with landed data today, judged from the landing
  zone as the day so far (the same fill as a build, without history sources), at most
  ``OPEN_PER_RUN`` per run in turns; a result is re-recorded when its pass/fail flips, and
  all of a partition's hourly (``OPEN_DAY_REFRESH_S``);
- once a day, the ``audit_recent_days`` closed days before today, re-judged from the lake, so
  a partition that degrades later (late data, a republished archive) is caught;
- ``checks/health`` of every partition whose checks changed (a materialisation since the
  last run, or a result this run recorded).

Each result is an ``AssetCheckEvaluation`` with ``partition`` that the run's op yields
(dagster PR #28473: an op may yield evaluations of checks outside its job), so it becomes that
partition's latest result, linked to the one audit run. On a materialised partition it carries
``target_materialization_data`` (the partition's latest materialisation): without it the UI's
check partition status (``AssetCheckState``, dagster ``_core/storage/asset_check_state.py``
``_process_partition_records``) counts the result as not current and clears the partition.
``checks/health`` partitions are yielded as ``AssetMaterialization`` after the value is written
where the lake IO manager reads it (``resources/lake_io_manager.py``), so the Partitions tab
marks them materialised.

Why not ``DagsterInstance.report_runless_asset_event``, which records an evaluation without
any run: on Dagster 1.13.27 it records a partition's result only ONCE. Runless rows share
``run_id=""`` and ``asset_check_executions`` has a unique index on (asset_key, check_name,
run_id, partition) (``_core/storage/event_log/schema.py``, ``idx_asset_check_executions_unique``),
so a second runless evaluation of the same check and partition raises ``IntegrityError``
after its event was written, and the partition keeps showing the first result
(``petrosa_pipelines_tests/test_checks/test_run_economy.py`` shows both).
"""

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dagster as dg
import pandas as pd
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # no public path
    AssetCheckEvaluationTargetMaterializationData,
)

from petrosa_pipelines.checks.applicability import (
    as_of_from_metadata,
    ingest_started_ms,
    judged_now_ms,
)
from petrosa_pipelines.checks.definitions import (
    AUDIT_TAG,
    HEALTH_KEY,
    HEALTH_THRESHOLD_CHECK,
    _conform,
    _quality_is_news,
    agreement_results,
    evaluate_dataset,
    grid_metadata,
    health_value,
    market_key,
)
from petrosa_pipelines.checks.health import HEALTH_CHECK
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.instruments import DATASETS, parse_partition_key, partition_key_str
from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms
from petrosa_pipelines.market_data.partitions import PARTITIONS_START, SYMBOLS_PARTITIONS_NAME

AUDIT_JOB_NAME = "audit_job"
AUDIT_OP_NAME = "audit_batch"
#: an open-day result whose pass/fail did not change is re-recorded at most this often (its
#: figures grow all day; recording all of them every interval writes ~50 events per instrument)
OPEN_DAY_REFRESH_S = 3600
#: at most this many open-day partitions are judged per run, in turns (the landing zone holds
#: a venue's instruments mixed, so each one's read scans the day so far: the run stays bounded
#: and every instrument comes round every ceil(N / this) intervals)
OPEN_PER_RUN = 100
#: the daily re-audit of closed days starts at this UTC hour (after the window sensor has
#: built yesterday: its grace is 30 s, but a venue's 500 partitions take a while)
REAUDIT_HOUR_UTC = 2
#: at most this many partitions get their health refreshed for materialisations per run
#: (more wait for the next run; the cursor moves only past what was requested)
MAX_HEALTH_PER_RUN = 5000
#: the run statuses that make a new audit run wait (one audit run at a time)
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

Event = dg.AssetCheckEvaluation | dg.AssetMaterialization | dg.AssetObservation
Target = AssetCheckEvaluationTargetMaterializationData


# -- results as events ---------------------------------------------------------------------------


def latest_materialisation(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str
) -> dg.EventLogRecord | None:
    """The partition's latest materialisation record (None: never materialised)."""
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1
    ).records
    return recs[0] if recs else None


def target_of(record: dg.EventLogRecord | None) -> Target | None:
    """What an evaluation judged: the partition's latest materialisation, so the UI counts
    the result as current for it (None for a partition never materialised)."""
    if record is None:
        return None
    return Target(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)


def evaluation_event(
    result: dg.AssetCheckResult, partition: str, target: Target | None
) -> dg.AssetCheckEvaluation:
    """A check result (as ``evaluate_dataset`` produces it) as a partitioned evaluation."""
    return dg.AssetCheckEvaluation(
        asset_key=result.asset_key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
        partition=partition,
        target_materialization_data=target,
    )


def latest_statuses(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], partitions: Sequence[str]
) -> dict[tuple[dg.AssetCheckKey, str], str]:
    """Latest execution status per (check, partition), in one read."""
    if not keys or not partitions:
        return {}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(keys), partition_keys=list(partitions)
    )
    return {
        (i.check_key, i.partition_key): i.latest_execution_status.value
        for i in infos
        if i.partition_key is not None
    }


def changed(
    results: Sequence[dg.AssetCheckResult],
    partition: str,
    shown: Mapping[tuple[dg.AssetCheckKey, str], str],
) -> list[dg.AssetCheckResult]:
    """The results whose pass/fail differs from what the partition shows (or that it lacks)."""
    out = []
    for r in results:
        key = dg.AssetCheckKey(r.asset_key, r.check_name)
        if shown.get((key, partition)) != ("SUCCEEDED" if r.passed else "FAILED"):
            out.append(r)
    return out


# -- frames --------------------------------------------------------------------------------------


class Frames(Protocol):
    """Where an audit reads a partition of a dataset (None: nothing to judge there)."""

    def frame(self, dataset: str, partition: str) -> pd.DataFrame | None: ...


@dataclass
class LakeFrames:
    """Closed days: the partition as the lake holds it (what its materialisation wrote)."""

    lake: Any  # petrosa_pipelines.lake.Lake

    def frame(self, dataset: str, partition: str) -> pd.DataFrame | None:
        from petrosa_pipelines.lake import lake_path

        day, inst = parse_partition_key(partition)
        path = lake_path("/".join(market_key(dataset).path), inst.exchange, inst.symbol, str(day))
        try:
            return _conform(dataset, self.lake.read_frame(path))
        except FileNotFoundError:
            return None


class _LandingOnly:
    """An ``ExchangePort`` without history: the open day is judged on what landed."""

    def settings(self) -> Any:
        from petrosa_pipelines.settings import from_env

        return from_env()

    def archive(self, venue: str | None = None) -> None:
        return None

    def rest(self, venue: str | None = None) -> None:
        return None


@dataclass
class LandingFrames:
    """The open day: what a build now would hold from the landing zone alone (the same fill,
    ``market_data.assets.materialise_partition``, without archive or REST). An instrument
    with nothing landed today in any dataset is not trading or not collected: None."""

    landing: Any  # a LandingPort
    now_ms: int
    _cache: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)

    def _read(self, dataset: str, partition: str) -> pd.DataFrame:
        from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition

        key = (dataset, partition)
        if key not in self._cache:
            frame, _ = materialise_partition(
                dataset, partition, MarketDataConfig(), _LandingOnly(), self.landing, self.now_ms
            )
            self._cache[key] = _conform(dataset, frame)
        return self._cache[key]

    def frame(self, dataset: str, partition: str) -> pd.DataFrame | None:
        if all(self._read(ds, partition).empty for ds in DATASETS):
            return None
        return self._read(dataset, partition)


# -- one partition -------------------------------------------------------------------------------


def landing_context(landing: Any, partition: str, log: Any) -> tuple[list[dict], int | None]:
    """(depth gap ledger, ingest start) of a partition from the landing zone (advisory)."""
    if landing is None:
        return [], None
    day, inst = parse_partition_key(partition)
    start, end = day_window_ms(day)
    try:
        store = landing.store()
        gaps = store.gaps(inst.exchange, start, end, dataset="depth", symbol=inst.symbol)
        root = getattr(store, "root", None)
        started = ingest_started_ms(root, inst.exchange) if root else None
    except Exception as exc:  # noqa: BLE001 - the ledger is advisory for the depth checks
        log.warning(f"landing zone unreadable for {partition}: {type(exc).__name__}: {exc}")
        return [], None
    return [{"cause": g.cause, "start_ms": g.start_ms, "end_ms": g.end_ms} for g in gaps], started


@dataclass
class BatchReport:
    """What one batched audit did."""

    audited: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    health: int = 0
    errors: list[str] = field(default_factory=list)


def audit_partition(
    instance: dg.DagsterInstance,
    partition: str,
    frames: Frames,
    *,
    now_ms: int,
    settings: AuditSettings,
    landing: Any = None,
    only_changes: bool = False,
    log: Any = None,
) -> tuple[list[Event], bool]:
    """The events recording every check of one instrument-day, and whether any dataset had
    a frame to judge.

    A dataset without a frame (not materialised, nothing landed) is left alone: its status
    stays what its last run said. ``only_changes``: only results whose pass/fail differs from
    what the partition shows (the open day between its hourly refreshes).
    """
    log = log or dg.get_dagster_logger()
    loaded = {ds: frames.frame(ds, partition) for ds in DATASETS}
    present = [ds for ds, f in loaded.items() if f is not None]
    ledger, started = ([], None)
    if "depth" in present:
        ledger, started = landing_context(landing, partition, log)
    results: list[dg.AssetCheckResult] = []
    targets: dict[dg.AssetKey, Target | None] = {}
    qualities = []
    for ds in present:
        asset = market_key(ds)
        built = latest_materialisation(instance, asset, partition)
        targets[asset] = target_of(built)
        as_of = as_of_from_metadata(built.asset_materialization.metadata) if built else None
        evaluated, quality = evaluate_dataset(
            ds,
            loaded[ds],
            partition,
            now_ms=judged_now_ms(now_ms, as_of),
            settings=settings,
            ledger=ledger if ds == "depth" else (),
            started=started if ds == "depth" else None,
            candles=loaded.get("candles") if ds == "trades" else None,
            built_metadata=built.asset_materialization.metadata if built else None,
        )
        results += evaluated
        if quality is not None:
            qualities.append(quality)
    if loaded.get("candles") is not None and loaded.get("trades") is not None:
        results += agreement_results(
            loaded["candles"], loaded["trades"], partition, settings.examples_limit
        )
    if only_changes:
        keys = sorted({dg.AssetCheckKey(r.asset_key, r.check_name) for r in results}, key=str)
        results = changed(results, partition, latest_statuses(instance, keys, [partition]))
    events: list[Event] = [evaluation_event(r, partition, targets[r.asset_key]) for r in results]
    recorded = {r.asset_key for r in results}
    for q in qualities:
        if q.asset_key in recorded and _quality_is_news(
            instance, q.asset_key, partition, q.metadata["quality"]
        ):
            events.append(q)
    return events, bool(present)


def health_events(
    instance: dg.DagsterInstance,
    partitions: Sequence[str],
    lake: Any,
    min_score: float,
    errors: list[str] | None = None,
) -> Iterator[Event]:
    """``checks/health`` of ``partitions``, materialised by the batch (no run per partition).

    Each value is written where the lake IO manager reads the asset (a downstream load or a
    later materialisation sees it), then yielded as the partition's materialisation, then its
    ``health_above_threshold`` result targeting it. The health grid and heatmap (hundreds of
    reads) go on the batch's last partition only: the one the asset's page shows as latest.
    A partition that fails is named in ``errors`` (when given, else raised) and the rest go on.
    """
    from petrosa_pipelines.lake import lake_path

    for i, pk in enumerate(partitions):
        try:
            frame, meta, (passed, text, figures) = health_value(instance, pk, min_score, False)
            if i == len(partitions) - 1:
                meta.update(grid_metadata(instance, min_score, include=pk))
            day, inst = parse_partition_key(pk)
            path = lake_path("/".join(HEALTH_KEY.path), inst.exchange, inst.symbol, str(day))
            lake.write_frame(path, frame)
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"health {pk}: {type(exc).__name__}: {exc}")
            continue
        meta["path"] = dg.MetadataValue.path(lake.uri(path))
        yield dg.AssetMaterialization(asset_key=HEALTH_KEY, partition=pk, metadata=meta)
        # stored once yielded (in-process executor), so the result can target it
        yield dg.AssetCheckEvaluation(
            asset_key=HEALTH_KEY,
            check_name=HEALTH_THRESHOLD_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=text,
            metadata=figures,
            partition=pk,
            target_materialization_data=target_of(latest_materialisation(instance, HEALTH_KEY, pk)),
        )


# -- the batched run -----------------------------------------------------------------------------


class AuditBatchConfig(dg.Config):
    """What one audit run covers (the sensor fills it; every field may be empty)."""

    open_day: str | None = None
    #: judge the open day's partitions from this position of the sorted list, at most
    #: ``open_limit`` of them (None: all), wrapping round
    open_offset: int = 0
    open_limit: int | None = None
    #: record every open-day result; else only those whose pass/fail changed, plus all of a
    #: partition whose results are older than ``OPEN_DAY_REFRESH_S``
    open_day_full: bool = False
    closed_days: list[str] = []
    health_partitions: list[str] = []
    #: the moment judged, epoch ms (None: the run's clock)
    now_ms: int | None = None


def open_day_partitions(
    instance: dg.DagsterInstance, day: str, allow_list: Sequence[str] | None = None
) -> list[str]:
    """The key of ``day`` of every registered instrument a build would accept (the
    ``PETROSA_SYMBOLS`` allow-list); those with nothing landed are skipped when read."""
    from petrosa_pipelines.market_data.partitions import instrument_problem

    if allow_list is None:
        from petrosa_pipelines.settings import from_env

        allow_list = from_env().qualified_symbols
    values = sorted(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    return [partition_key_str(day, v) for v in values if not instrument_problem(v, allow_list)]


def in_turn(keys: Sequence[str], offset: int, limit: int | None) -> list[str]:
    """At most ``limit`` of ``keys`` from ``offset`` on, wrapping round (None: all)."""
    if not keys or limit is None or limit >= len(keys):
        return list(keys)
    start = offset % len(keys)
    return [*keys[start:], *keys[:start]][:limit]


def recorded_recently(
    instance: dg.DagsterInstance, partition: str, now_ms: int, within_s: int = OPEN_DAY_REFRESH_S
) -> bool:
    """Whether the partition's health results were all recorded within ``within_s`` of
    ``now_ms`` (one read: the latest execution of each dataset's ``health`` check)."""
    from dagster._core.event_api import PartitionKeyFilter  # no public path in 1.13

    keys = [dg.AssetCheckKey(market_key(ds), HEALTH_CHECK) for ds in DATASETS]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition)
    )
    if len(latest) < len(keys):
        return False
    oldest = min((r.event.timestamp if r.event else 0.0) for r in latest.values())
    return now_ms / 1000 - oldest < within_s


def closed_partitions(instance: dg.DagsterInstance, days: Sequence[str]) -> list[str]:
    """Keys of ``days`` with at least one materialised market-data dataset."""
    values = sorted(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    return [
        pk
        for day in days
        for pk in (partition_key_str(day, v) for v in values)
        if any(latest_materialisation(instance, market_key(ds), pk) for ds in DATASETS)
    ]


def batch_events(
    instance: dg.DagsterInstance,
    config: AuditBatchConfig,
    lake: Any,
    landing: Any,
    report: BatchReport,
    *,
    settings: AuditSettings | None = None,
    log: Any = None,
) -> Iterator[Event]:
    """Every event of one batch, partition by partition (the op yields them as they come, so
    memory holds one partition's frames at a time). A partition that cannot be audited is
    named in ``report.errors`` and the others go on."""
    cfg = settings or audit_settings()
    log = log or dg.get_dagster_logger()
    now_ms = config.now_ms or utc_now_ms()
    health: dict[str, None] = dict.fromkeys(config.health_partitions)
    scopes: list[tuple[str, list[str], Frames]] = []
    if config.open_day:
        keys = in_turn(
            open_day_partitions(instance, config.open_day), config.open_offset, config.open_limit
        )
        scopes.append(("open", keys, LandingFrames(landing, now_ms)))
    if config.closed_days:
        scopes.append(("closed", closed_partitions(instance, config.closed_days), LakeFrames(lake)))
    for scope, keys, frames in scopes:
        report.audited[scope] = 0
        for pk in keys:
            try:
                only_changes = (
                    scope == "open"
                    and not config.open_day_full
                    and recorded_recently(instance, pk, now_ms)
                )
                events, judged = audit_partition(
                    instance,
                    pk,
                    frames,
                    now_ms=now_ms,
                    settings=cfg,
                    landing=landing,
                    only_changes=only_changes,
                    log=log,
                )
            except Exception as exc:  # noqa: BLE001 - one bad partition must not stop the batch
                report.errors.append(f"{scope} {pk}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(frames, LandingFrames):
                frames._cache.clear()  # one partition's frames in memory at a time
            report.audited[scope] += int(judged)
            for e in events:
                if isinstance(e, dg.AssetCheckEvaluation):
                    report.recorded += 1
                    if e.check_name == HEALTH_CHECK:
                        health[pk] = None
                yield e
    for e in health_events(instance, list(health), lake, cfg.health_min_score, report.errors):
        report.health += isinstance(e, dg.AssetMaterialization)
        yield e


@dg.op(
    name=AUDIT_OP_NAME,
    out={},
    required_resource_keys={"io_manager", "landing"},
    description="Judge today's open partitions, re-audit recent closed days, refresh health: "
    "every instrument-day in this one run, each result recorded on its partition.",
)
def audit_batch(context: dg.OpExecutionContext, config: AuditBatchConfig) -> Iterator[Event]:
    report = BatchReport()
    yield from batch_events(
        context.instance,
        config,
        context.resources.io_manager.lake(),
        context.resources.landing,
        report,
        log=context.log,
    )
    context.log.info(
        f"audited {report.audited} partitions, {report.recorded} results recorded, "
        f"health of {report.health} partitions"
    )
    if report.errors:
        raise dg.Failure(
            description=f"{len(report.errors)} partition(s) could not be audited (the rest were)",
            metadata={"errors": dg.MetadataValue.json(report.errors[:100])},
        )


@dg.job(
    name=AUDIT_JOB_NAME,
    tags={AUDIT_TAG: "batch"},
    description="The batched audit: one run covers every instrument-day it judges (open day, "
    "daily re-audit of closed days, health) and records each one's results on its partition.",
)
def audit_job() -> None:
    audit_batch()


# -- when to run: the sensor --------------------------------------------------------------------


@dataclass
class AuditCursor:
    """The sensor's state: the last interval slot requested, the last day re-audited, where
    the next run's turn of open-day partitions starts, and per dataset the last
    materialisation whose partition's health was requested."""

    slot: int = -1
    reaudited: str | None = None
    open_offset: int = 0
    mats: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None) -> "AuditCursor":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(text).items() if k in known}) if text else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def closed_days_to_reaudit(now: dt.datetime, recent_days: int, first_day: dt.date) -> list[str]:
    """The ``recent_days`` closed days before ``now``'s day (never before ``first_day``)."""
    today = now.date()
    days = [today - dt.timedelta(days=i) for i in range(recent_days, 0, -1)]
    return [d.isoformat() for d in days if d >= first_day]


def new_materialised_partitions(
    instance: dg.DagsterInstance, mats: Mapping[str, int], limit: int = MAX_HEALTH_PER_RUN
) -> tuple[list[str], dict[str, int]]:
    """Partitions with a market-data materialisation after ``mats`` (per dataset) from runs
    that have finished (their checks ran in the same run), and the moved cursor. A record of
    a run still going stops its dataset's cursor there (its checks have not all landed)."""
    out: dict[str, None] = {}
    moved = dict(mats)
    for ds in DATASETS:
        key = market_key(ds)
        after = mats.get(ds)
        if after is None:  # first look: start from now, history is not re-judged here
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
            moved[ds] = recs.records[0].storage_id if recs.records else 0
            continue
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
            limit=limit,
            ascending=True,
        ).records
        run_ids = sorted({r.run_id for r in recs if r.run_id})
        # a purged run counts as finished: only runs still going hold the cursor
        going = (
            {
                r.run_id
                for r in instance.get_runs(dg.RunsFilter(run_ids=run_ids, statuses=ACTIVE_STATUSES))
            }
            if run_ids
            else set()
        )
        for r in recs:
            if r.run_id in going:
                break
            if r.partition_key:
                out[r.partition_key] = None
            moved[ds] = r.storage_id
    return list(out)[:limit], moved


def plan_batch(
    now_s: float,
    cursor: AuditCursor,
    interval_s: int,
    recent_days: int,
    first_day: dt.date,
    reaudit_hour_utc: int = REAUDIT_HOUR_UTC,
    open_per_run: int = OPEN_PER_RUN,
) -> tuple[AuditBatchConfig, AuditCursor] | None:
    """What the run of the interval slot holding ``now_s`` covers, and the moved cursor; None
    once the slot's run was requested (at most one run per ``interval_s``)."""
    slot = int(now_s // interval_s)
    if slot <= cursor.slot:
        return None
    now = dt.datetime.fromtimestamp(now_s, tz=dt.UTC)
    today = now.date().isoformat()
    nxt = AuditCursor(slot, cursor.reaudited, cursor.open_offset + open_per_run, dict(cursor.mats))
    closed: list[str] = []
    if now.hour >= reaudit_hour_utc and cursor.reaudited != today:
        closed = closed_days_to_reaudit(now, recent_days, first_day)
        nxt.reaudited = today
    batch = AuditBatchConfig(
        open_day=today, open_offset=cursor.open_offset, open_limit=open_per_run, closed_days=closed
    )
    return batch, nxt


def build_audit_sensor(
    job: Any = audit_job,
    *,
    settings: Callable[[], AuditSettings] = audit_settings,
    clock: Callable[[], float] = time.time,
    name: str = "audit_sensor",
    minimum_interval_seconds: int = 30,
    reaudit_hour_utc: int = REAUDIT_HOUR_UTC,
    first_day: str = PARTITIONS_START,
    open_per_run: int = OPEN_PER_RUN,
) -> dg.SensorDefinition:
    """At most one ``audit_job`` run per ``audit_interval_s`` slot, never two at once.

    An evaluation is a few reads (the active audit runs, the registered instruments, the new
    materialisations of each dataset), never a frame, so it stays far below the 60 s sensor
    timeout at any number of instruments.
    """
    start = dt.date.fromisoformat(first_day)

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One batched audit run per interval (PETROSA_AUDIT_INTERVAL_S): today's "
        "open partitions, a daily re-audit of recent closed days, health of changed partitions.",
    )
    def _audit_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cfg = settings()
        cursor = AuditCursor.load(context.cursor)
        plan = plan_batch(
            clock(),
            cursor,
            cfg.audit_interval_s,
            cfg.audit_recent_days,
            start,
            reaudit_hour_utc,
            open_per_run,
        )
        if plan is None:  # no read at all until the next slot
            return dg.SensorResult(skip_reason="this interval's audit run was requested")
        active = context.instance.get_runs(
            dg.RunsFilter(job_name=AUDIT_JOB_NAME, statuses=ACTIVE_STATUSES), limit=1
        )
        if active:  # the cursor stays: the slot's run is requested once this one is done
            return dg.SensorResult(skip_reason=f"audit run {active[0].run_id[:8]} still going")
        batch, nxt = plan
        health, nxt.mats = new_materialised_partitions(context.instance, cursor.mats)
        batch = batch.model_copy(update={"health_partitions": health})
        if not health and not context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME):
            return dg.SensorResult(skip_reason="no instrument registered", cursor=nxt.dump())
        covered = {
            "open": batch.open_day,
            "closed": batch.closed_days,
            "health": batch.health_partitions,
        }
        request = dg.RunRequest(
            run_key=f"audit:{nxt.slot}",
            run_config=dg.RunConfig(ops={AUDIT_OP_NAME: batch}),
            tags={AUDIT_TAG: "+".join(k for k, v in covered.items() if v)},
        )
        return dg.SensorResult(run_requests=[request], cursor=nxt.dump())

    return _audit_sensor


audit_sensor = build_audit_sensor()
