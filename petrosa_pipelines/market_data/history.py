"""History: the days before the rolling window, tracked and checked by instrument-month.

Day x instrument partitions cover only the window (``market_data/partitions.py``); a day that
leaves it keeps its lake file, which every reader (the Python API, the analytics' inputs) reads
as before, and is tracked here instead: ``market_data/history/<dataset>`` is partitioned by
month x instrument, so 500 instruments x 5 years are 30,000 partitions per asset, not 913,000.

Nothing about a day is given up (docs/scale.md, "The partition scheme"):

- each day keeps its own rows (``{layer}/{dataset}/{exchange}/{symbol}/{date}``), written by the
  same fill (``assets.materialise_partition``, shrink guard included) whether built in the
  window or here; once its month is closed and small, the month's days share one month file
  (``market_data/compaction.py``) that every reader resolves a day in (``lake.py``);
- every day's check results and health are in the month's materialisation (``days``, a JSON
  list, and ``days_table``), judged by the same checks (``checks.definitions.evaluate_dataset``);
  the month's check ``history_days_pass`` fails naming each failing day and its checks;
- one day is repaired by materialising its month with ``days: ["YYYY-MM-DD"]`` in the run
  config: only that day is rebuilt, the other days' results are carried over.

The history roll (``history_roll_job``, launched by ``sensors/history_sensor.py`` at most once a
day) records the months of days that left the window, judging each new day from its lake file
without refetching anything; ``petrosa migrate-partitions`` runs the same roll over every
month of an existing install.
"""

import calendar
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.checks.batch import (
    LakeFrames,
    evaluation_event,
    landing_context,
    latest_materialisation,
    target_of,
)
from petrosa_pipelines.checks.definitions import _conform, evaluate_dataset
from petrosa_pipelines.checks.health import HEALTH_CHECK
from petrosa_pipelines.checks.settings import AuditSettings, audit_settings
from petrosa_pipelines.instruments import DATASETS as INSTRUMENT_DATASETS
from petrosa_pipelines.instruments import (
    MARKET_DATA,
    InstrumentError,
    parse_instrument,
    partition_key_str,
    split_key,
)
from petrosa_pipelines.lake import Lake, is_month_file, lake_path
from petrosa_pipelines.lib.timeutil import utc_now_ms
from petrosa_pipelines.market_data.assets import (
    OWNER,
    MarketDataConfig,
    asset_key,
    materialise_partition,
    table_schema,
)
from petrosa_pipelines.market_data.compaction import (
    OPEN,
    MonthCompaction,
    compact_max_bytes,
    compact_month,
    month_closed,
)
from petrosa_pipelines.market_data.partitions import (
    HISTORY_START,
    MONTH_DIM,
    PARTITIONS_START,
    SYMBOL_DIM,
    SYMBOLS_PARTITIONS_NAME,
    history_days,
    monthly_partitions,
    monthly_symbol_partitions,
)
from petrosa_pipelines.market_data.ports import ExchangePort, LandingPort

HISTORY = "history"
HISTORY_GROUP = "market_data_history"
DAYS_CHECK = "history_days_pass"
HISTORY_ROLL_JOB = "history_roll_job"
#: the roll's run tag (the sensor's runs and ``petrosa migrate-partitions``)
ROLL_TAG = "petrosa/history_roll"
#: day statuses
OK, FAILED, MISSING = "ok", "failed", "no file"


def history_key(dataset: str) -> dg.AssetKey:
    """``market_data/history/<dataset>``: the month-grain twin of ``market_data/<dataset>``."""
    return dg.AssetKey([MARKET_DATA, HISTORY, dataset])


def month_key(month: dt.date | str, instrument: str) -> str:
    """``YYYY-MM-01|<instrument>`` (dimensions in Dagster's order: month, symbol)."""
    month = month if isinstance(month, str) else month.isoformat()
    return partition_key_str(month[:8] + "01", instrument)


@dataclass(frozen=True)
class DayResult:
    """One history day of one dataset: its rows and what its checks said."""

    day: str
    #: rows in the lake file (None: no file)
    rows: int | None
    failed: tuple[str, ...] = ()
    health: float | None = None
    #: why the day could not be rebuilt (its file was kept as it was)
    error: str = ""
    #: rebuilt by this run (else judged from the lake, or carried over from the last record)
    rebuilt: bool = False

    @property
    def status(self) -> str:
        if self.error or self.failed:
            return FAILED
        return MISSING if self.rows is None else OK

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed), "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DayResult":
        return cls(
            day=str(d["day"]),
            rows=None if d.get("rows") is None else int(d["rows"]),
            failed=tuple(d.get("failed", ())),
            health=None if d.get("health") is None else float(d["health"]),
            error=str(d.get("error", "")),
        )


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def judge_day(
    dataset: str,
    partition: str,
    frame: pd.DataFrame | None,
    *,
    settings: AuditSettings,
    now_ms: int,
    frames: LakeFrames | None = None,
    landing: Any = None,
    built_metadata: Mapping[str, Any] | None = None,
    error: str = "",
    rebuilt: bool = False,
) -> DayResult:
    """Every check of one history day (``evaluate_dataset``, as in the window), summarised.

    ``frame`` None: the lake holds no file for the day; the checks judge it empty (a day that
    could hold no data, such as depth before any ingest, is not applicable, not failed).
    """
    day, _ = split_key(partition)
    ledger, started = landing_context(landing, partition, dg.get_dagster_logger())
    candles = (
        frames.frame("candles", partition) if frames is not None and dataset == "trades" else None
    )
    results, _ = evaluate_dataset(
        dataset,
        _conform(dataset, frame),
        partition,
        now_ms=now_ms,
        settings=settings,
        ledger=ledger if dataset == "depth" else (),
        started=started if dataset == "depth" else None,
        candles=candles,
        built_metadata=built_metadata,
    )
    health = next(
        (_value(r.metadata.get("score")) for r in results if r.check_name == HEALTH_CHECK), None
    )
    return DayResult(
        day=day.isoformat(),
        rows=None if frame is None else len(frame),
        failed=tuple(sorted(r.check_name for r in results if not r.passed)),
        health=None if health is None else round(float(health), 2),
        error=error,
        rebuilt=rebuilt,
    )


def days_table(results: Sequence[DayResult]) -> str:
    """The month's days as a markdown table: day, rows, status, failing checks, health."""
    lines = ["| day | rows | status | failing checks | health |", "|---|---:|---|---|---:|"]
    for r in results:
        rows = "" if r.rows is None else f"{r.rows:,}"
        failing = ", ".join(r.failed) + (f" ({r.error})" if r.error else "")
        health = "" if r.health is None else f"{r.health:g}"
        lines.append(f"| {r.day} | {rows} | {r.status} | {failing or '-'} | {health} |")
    return "\n".join(lines)


def month_metadata(results: Sequence[DayResult]) -> dict[str, Any]:
    """What a history month records: every day's result (``days``) and the month's totals."""
    failing = [r for r in results if r.status == FAILED]
    return {
        "dagster/row_count": sum(r.rows or 0 for r in results),
        "history_days": len(results),
        "days_with_data": sum(1 for r in results if r.rows),
        "days_failing": len(failing),
        "days_rebuilt": sum(1 for r in results if r.rebuilt),
        "first_day": results[0].day if results else "",
        "history_last_day": results[-1].day if results else "",
        "days": dg.MetadataValue.json([r.as_dict() for r in results]),
        "days_table": dg.MetadataValue.md(days_table(results)),
    }


def month_check(results: Sequence[DayResult]) -> tuple[bool, str, dict[str, Any]]:
    """(passed, description, metadata) of ``history_days_pass``: every day's checks passed."""
    failing = [r for r in results if r.status == FAILED]
    if not results:
        text = "no history day in this month (all of it is in the day partitions' window)"
    elif not failing:
        text = f"all {len(results)} days pass their checks"
    else:
        named = "; ".join(f"{r.day}: {', '.join(r.failed) or r.error}" for r in failing[:10]) + (
            f"; and {len(failing) - 10} more" if len(failing) > 10 else ""
        )
        text = f"{len(failing)} of {len(results)} days fail: {named}"
    meta = {
        "days": len(results),
        "failing_days": dg.MetadataValue.json(
            {r.day: list(r.failed) or [r.error] for r in failing}
        ),
    }
    return not failing, text, meta


def recorded_days(metadata: Mapping[str, Any] | None) -> dict[str, DayResult]:
    """The day results of a month's last record (empty when never recorded)."""
    raw = _value((metadata or {}).get("days"))
    if not isinstance(raw, list):
        return {}
    return {str(d["day"]): DayResult.from_dict(d) for d in raw if isinstance(d, dict)}


def _day_path(dataset: str, partition: str) -> str:
    day, inst = split_key(partition)
    parsed = parse_instrument(inst)
    return lake_path("/".join(asset_key(dataset).path), parsed.exchange, parsed.symbol, str(day))


def read_day(lake: Lake, dataset: str, partition: str) -> pd.DataFrame | None:
    """A day's lake file (None: no file)."""
    try:
        return lake.read_frame(_day_path(dataset, partition))
    except FileNotFoundError:
        return None


@dataclass
class MonthJob:
    """One history month of one dataset and instrument, and where to read and write it."""

    dataset: str
    month: str  # YYYY-MM-01
    instrument: str  # the partition's symbol value
    lake: Lake
    settings: AuditSettings
    landing: Any = None
    now_ms: int = field(default_factory=utc_now_ms)
    first: str = HISTORY_START
    window_start: str = PARTITIONS_START

    def days(self) -> list[str]:
        return [d.isoformat() for d in history_days(self.month, self.first, self.window_start)]

    def partition(self, day: str) -> str:
        return partition_key_str(day, self.instrument)

    def folder(self) -> str:
        """The lake folder of the month's days (``{layer}/{dataset}/{exchange}/{symbol}``)."""
        inst = parse_instrument(self.instrument)
        return "/".join([*asset_key(self.dataset).path, inst.exchange, inst.symbol])

    def compact(self, max_bytes: int) -> MonthCompaction:
        """The month's days in one month file, once the month is closed (``compaction.py``)."""
        if not month_closed(self.month, self.window_start):
            return MonthCompaction(self.folder(), self.month[:7], status=OPEN)
        return compact_month(self.lake, self.folder(), self.month, max_bytes)

    def judge(self, day: str, frame: pd.DataFrame | None, **kw: Any) -> DayResult:
        return judge_day(
            self.dataset,
            self.partition(day),
            frame,
            settings=self.settings,
            now_ms=self.now_ms,
            frames=LakeFrames(self.lake),
            landing=self.landing,
            **kw,
        )


def judge_month(
    job: MonthJob,
    known: Mapping[str, DayResult] | None = None,
    rebuilt: Mapping[str, DayResult] | None = None,
) -> list[DayResult]:
    """Every history day of the month: ``rebuilt`` as given, ``known`` (the last record)
    carried over, the rest judged from its lake file."""
    known, rebuilt = known or {}, rebuilt or {}
    out = []
    for day in job.days():
        if day in rebuilt:
            out.append(rebuilt[day])
        elif day in known:
            out.append(known[day])
        else:
            out.append(job.judge(day, read_day(job.lake, job.dataset, job.partition(day))))
    return out


def compact_metadata(job: MonthJob, log: Any) -> dict[str, Any]:
    """Compact the month (``PETROSA_LAKE_COMPACT_MAX_MB``) and say what the lake holds; a
    failed compaction changed nothing (``compaction.py``) and is reported, not raised: the
    month's record stays true."""
    try:
        done = job.compact(compact_max_bytes())
    except Exception as exc:  # noqa: BLE001 - the days' files are untouched, the record stands
        log.error(f"compaction of {job.folder()} {job.month[:7]} failed: {exc}")
        return {"lake_layout": f"compaction failed, day files kept as they were: {exc}"}
    return done.metadata()


def rebuild_day(
    job: MonthJob,
    day: str,
    config: MarketDataConfig,
    exchange: ExchangePort,
    landing: LandingPort | None,
) -> DayResult:
    """Refill one history day as the window would (same fill, same shrink guard), write its
    file and judge it; a refused or failed fill keeps the file as it was and says why."""
    partition = job.partition(day)
    previous = read_day(job.lake, job.dataset, partition)
    try:
        frame, meta = materialise_partition(
            job.dataset, partition, config, exchange, landing, previous=previous
        )
    except dg.Failure as exc:
        return job.judge(day, previous, error=exc.description or "refused", rebuilt=False)
    except Exception as exc:  # noqa: BLE001 - one day's failure must not hide the others
        return job.judge(day, previous, error=f"{type(exc).__name__}: {exc}", rebuilt=False)
    job.lake.write_frame(_day_path(job.dataset, partition), frame)
    built = {k: _value(v) for k, v in meta.items()}
    return job.judge(day, frame, built_metadata=built, rebuilt=True)


class HistoryConfig(MarketDataConfig):
    """Run settings of a history month; every field has a default."""

    days: list[str] = Field(
        default_factory=list,
        description='The days of the month to rebuild ("YYYY-MM-DD"); empty rebuilds every '
        "history day of the month. Days not rebuilt keep their last recorded results.",
    )
    rebuild: bool = Field(
        default=True,
        description="false: refetch nothing, only judge the lake files and record the month "
        "(what the history roll does).",
    )


def wanted_days(config: HistoryConfig, days: Sequence[str]) -> list[str]:
    """The days to rebuild; a day outside the month's history is refused, naming ``days``."""
    if not config.rebuild:
        return []
    if not config.days:
        return list(days)
    bad = [d for d in config.days if d not in days]
    if bad:
        raise dg.Failure(
            description=f"run config `days`: {bad} are not history days of this month "
            f"(its history days: {days[0] if days else '-'} .. {days[-1] if days else '-'}; "
            f"days from {PARTITIONS_START} are day partitions of market_data/*)",
            allow_retries=False,
        )
    return sorted(set(config.days))


def lake_of(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Lake:
    io_manager = getattr(context.resources, "io_manager", None)
    lake = getattr(io_manager, "lake", None)
    if lake is None:
        raise dg.Failure(
            description="the history assets need the lake IO manager (resource `io_manager`: "
            "resources.LakeIOManager)",
            allow_retries=False,
        )
    return lake()


def build_history_asset(dataset: str) -> dg.AssetsDefinition:
    """``market_data/history/<dataset>``, month x instrument."""
    key = history_key(dataset)

    @dg.asset(
        key=key,
        partitions_def=monthly_symbol_partitions,
        group_name=HISTORY_GROUP,
        description=(
            f"History of market_data/{dataset} before the rolling window of day partitions, "
            "tracked by instrument-month: the same per-day lake files, every day's check "
            "results in the month's metadata (`days_table`). Repair one day with run config "
            '`days: ["YYYY-MM-DD"]`.'
        ),
        owners=[OWNER],
        kinds={"pandas", "parquet"},
        tags={"dataset": dataset, "layer": MARKET_DATA},
        metadata={
            "dagster/column_schema": table_schema(DATASETS[dataset]),
            "natural_key": ", ".join(DATASETS[dataset].natural_key),
            "lake_files": f"market_data/{dataset}/<exchange>/<SYMBOL>/<date>.parquet; a "
            "closed quiet month: <YYYY-MM>.parquet, a row group per day",
        },
        check_specs=[
            dg.AssetCheckSpec(
                DAYS_CHECK,
                asset=key,
                description="Every history day of the month passes the checks of "
                f"market_data/{dataset} (the failing days and checks are named).",
            )
        ],
        code_version=f"history-{dataset}-v1",
    )
    def _history(
        context: dg.AssetExecutionContext,
        config: HistoryConfig,
        exchange: dg.ResourceParam[ExchangePort],
        landing: dg.ResourceParam[LandingPort],
    ) -> Iterator[dg.MaterializeResult]:
        keys = context.partition_key.keys_by_dimension
        job = MonthJob(
            dataset,
            keys[MONTH_DIM],
            keys[SYMBOL_DIM],
            lake_of(context),
            audit_settings(),
            landing=landing,
        )
        days = job.days()
        rebuild = wanted_days(config, days)
        last = latest_materialisation(context.instance, key, context.partition_key)
        known = recorded_days(last.asset_materialization.metadata if last else None)
        rebuilt = {d: rebuild_day(job, d, config, exchange, landing) for d in rebuild}
        results = judge_month(job, known, rebuilt)
        passed, text, check_meta = month_check(results)
        errors = [r for r in rebuilt.values() if r.error]
        layout = compact_metadata(job, context.log)
        context.log.info(f"{dataset} {context.partition_key}: {text}; lake: {layout}")
        yield dg.MaterializeResult(
            metadata={**month_metadata(results), **layout},
            check_results=[
                dg.AssetCheckResult(
                    check_name=DAYS_CHECK,
                    passed=passed,
                    description=text,
                    metadata=check_meta,
                )
            ],
        )
        if errors:  # recorded above (every day's result), but the run did not do all it was asked
            raise dg.Failure(
                description=f"{len(errors)} day(s) not rebuilt, files kept as they were: "
                + "; ".join(f"{r.day}: {r.error}" for r in errors),
                allow_retries=False,
            )

    _history.__name__ = f"history_{dataset}"
    return _history


HISTORY_ASSETS = [build_history_asset(d) for d in INSTRUMENT_DATASETS]


# -- the roll: months of days that left the window ------------------------------------------


def history_month_keys() -> list[str]:
    """Every month of the history partitions (oldest first)."""
    return list(monthly_partitions.get_partition_keys())


def lake_days(lake: Lake, dataset: str, instrument: str) -> set[str]:
    """The days the lake holds, of one dataset and instrument; a compacted month counts as
    every day of its month (it holds at least one), so the roll reads no month file's footer
    to plan (1,500 instruments x 60 months would be 90,000 footers a dataset a day)."""
    inst = parse_instrument(instrument)
    prefix = "/".join([*asset_key(dataset).path, inst.exchange, inst.symbol]) + "/"
    out = set()
    for relpath in lake.list_files(prefix):
        name = relpath.rsplit("/", 1)[-1]
        if is_month_file(relpath):
            first = dt.date.fromisoformat(name[:7] + "-01")
            out.update(
                (first + dt.timedelta(days=i)).isoformat()
                for i in range(calendar.monthrange(first.year, first.month)[1])
            )
        else:
            out.add(name[:10])
    return out


@dataclass(frozen=True)
class RollItem:
    dataset: str
    month: str
    instrument: str

    @property
    def partition(self) -> str:
        return month_key(self.month, self.instrument)


def plan_roll(
    instance: dg.DagsterInstance,
    lake: Lake,
    instruments: Iterable[str],
    months: Sequence[str],
    datasets: Sequence[str] = INSTRUMENT_DATASETS,
    first: str = HISTORY_START,
    window_start: str = PARTITIONS_START,
) -> list[RollItem]:
    """The months to record: never recorded and holding a lake file, or recorded before more
    of their days left the window (only the newest history month can be)."""
    out = []
    for dataset in datasets:
        done = instance.get_materialized_partitions(history_key(dataset))
        for instrument in instruments:
            try:
                held = lake_days(lake, dataset, instrument)
            except InstrumentError:
                continue
            for month in months:
                days = [d.isoformat() for d in history_days(month, first, window_start)]
                item = RollItem(dataset, month, instrument)
                if item.partition not in done:
                    if held.intersection(days):
                        out.append(item)
                elif month == months[-1] and days:
                    last = latest_materialisation(instance, history_key(dataset), item.partition)
                    meta = last.asset_materialization.metadata if last else {}
                    if str(_value(meta.get("history_last_day", ""))) < days[-1]:
                        out.append(item)
    return out


def roll_events(
    instance: dg.DagsterInstance, job: MonthJob, log: Any = None
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The month's record (judged from the lake, the last record carried over) and its check.

    The evaluation is yielded after the materialisation and targets it, so the UI counts the
    result as current for the partition (``checks/batch.py`` says why that is needed). A
    closed month is compacted on the way (``compact_metadata``)."""
    log = log or logging.getLogger(__name__)
    key, partition = history_key(job.dataset), month_key(job.month, job.instrument)
    last = latest_materialisation(instance, key, partition)
    results = judge_month(job, recorded_days(last.asset_materialization.metadata if last else None))
    passed, text, check_meta = month_check(results)
    layout = compact_metadata(job, log)
    yield dg.AssetMaterialization(
        asset_key=key,
        partition=partition,
        description="recorded by the history roll from the lake files",
        metadata={**month_metadata(results), **layout, ROLL_TAG: True},
    )
    result = dg.AssetCheckResult(
        asset_key=key, check_name=DAYS_CHECK, passed=passed, description=text, metadata=check_meta
    )
    yield evaluation_event(
        result, partition, target_of(latest_materialisation(instance, key, partition))
    )


@dg.op(out={}, required_resource_keys={"io_manager", "landing"})
def history_roll(context: dg.OpExecutionContext) -> Iterator[Any]:
    """Record every history month whose days left the window since its last record."""
    lake = lake_of(context)
    instruments = sorted(context.instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    plan = plan_roll(context.instance, lake, instruments, history_month_keys())
    context.log.info(
        f"history roll: {len(plan)} month(s) to record"
        + (f" (first: {plan[0].dataset} {plan[0].partition})" if plan else "")
    )
    settings, now_ms = audit_settings(), utc_now_ms()
    landing = context.resources.landing
    for item in plan:
        job = MonthJob(item.dataset, item.month, item.instrument, lake, settings, landing, now_ms)
        yield from roll_events(context.instance, job, context.log)


@dg.job(
    name=HISTORY_ROLL_JOB,
    tags={ROLL_TAG: "true"},
    description="Record the history months (market_data/history/*) of days that left the "
    "rolling window of day partitions, judged from their lake files.",
)
def history_roll_job() -> None:
    history_roll()


__all__ = [
    "DAYS_CHECK",
    "HISTORY_ASSETS",
    "HISTORY_ROLL_JOB",
    "DayResult",
    "HistoryConfig",
    "MonthJob",
    "history_key",
    "history_roll_job",
    "judge_month",
    "month_key",
    "plan_roll",
]
