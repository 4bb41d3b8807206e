"""Launch an asset backfill through Dagster's GraphQL API and follow its progress.

Why: a backfill of months x symbols runs for hours, and the Dagster UI shows it only to whoever
has it open. An operator at a terminal (``petrosa stack backfill``) wants one line every few
seconds: partitions done of total, failures, rows landed, rate and time left. The numbers come
from the instance (the backfill's own bookkeeping plus the ``dagster/row_count`` of every
materialisation its runs emitted), so they agree with what the UI shows.

Launching goes through ``launchPartitionBackfill`` rather than the Python internals, so the CLI
and the end-to-end test exercise the same path as the UI's "Materialize" dialog.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from petrosa_pipelines import instruments
from petrosa_pipelines.market_data.partitions import utc_today
from petrosa_pipelines.tooling.graphql_client import (
    LOCATION_NAME,
    REPOSITORY_NAME,
    StackError,
    graphql,
)

BACKFILL_TAG = "dagster/backfill"
ROW_COUNT = "dagster/row_count"
#: statuses after which the backfill launches nothing more
FINISHED_STATUSES = frozenset(
    {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
)

REPOSITORY_SELECTOR = {
    "repositoryLocationName": LOCATION_NAME,
    "repositoryName": REPOSITORY_NAME,
}


def partition_keys(
    start: dt.date,
    end: dt.date,
    symbols: Sequence[str],
    *,
    include_open_day: bool = False,
    today: dt.date | None = None,
) -> list[str]:
    """Every ``YYYY-MM-DD|<venue>:<SYMBOL>`` key from ``start`` to ``end`` inclusive, day by
    day; ``symbols`` are instrument ids or bare symbols (Binance USD-M).

    A backfill repairs closed days: today (UTC, still open) is left out unless
    ``include_open_day`` asks to build the day so far.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if not include_open_day:
        last = (today or utc_today()) - dt.timedelta(days=1)
        if start > last:
            raise ValueError(
                f"start {start} is the open day (or later): a backfill builds closed days; "
                "pass include_open_day=True (petrosa stack backfill --include-today) to build "
                "the day so far"
            )
        end = min(end, last)
    ids = [instruments.instrument_id(sym) for sym in symbols]
    days = (end - start).days + 1
    return [
        instruments.partition_key_str(start + dt.timedelta(days=n), inst)
        for n in range(days)
        for inst in ids
    ]


def add_symbols(graphql_url: str, symbols: Iterable[str], partitions_def: str = "symbols") -> None:
    """Register instruments (ids or bare symbols, registered as ids) in the dynamic dimension
    (already present ones are fine)."""
    for symbol in dict.fromkeys(instruments.instrument_id(s) for s in symbols):
        data = graphql(
            graphql_url,
            """mutation($sel: RepositorySelector!, $def: String!, $key: String!) {
                 addDynamicPartition(repositorySelector: $sel, partitionsDefName: $def,
                                     partitionKey: $key) {
                   __typename ... on PythonError { message } ... on UnauthorizedError { message }
                 } }""",
            {"sel": REPOSITORY_SELECTOR, "def": partitions_def, "key": symbol},
        )
        result = data["addDynamicPartition"]
        if result["__typename"] not in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ):
            raise StackError(f"adding symbol {symbol}: {result}")


def launch_backfill(
    graphql_url: str,
    keys: Sequence[str],
    assets: Sequence[Sequence[str]],
    title: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """``launchPartitionBackfill`` over ``keys`` x ``assets``; returns the backfill id."""
    params: dict[str, Any] = {
        "partitionNames": list(keys),
        "assetSelection": [{"path": list(a)} for a in assets],
        "fromFailure": False,
        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
    }
    if title:
        params["title"] = title
    data = graphql(
        graphql_url,
        """mutation($params: LaunchBackfillParams!) {
             launchPartitionBackfill(backfillParams: $params) {
               __typename
               ... on LaunchBackfillSuccess { backfillId }
               ... on PythonError { message }
               ... on PartitionKeysNotFoundError { message partitionKeys }
               ... on UnauthorizedError { message }
               ... on InvalidSubsetError { message }
             } }""",
        {"params": params},
    )
    result = data["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise StackError(f"launchPartitionBackfill failed: {result}")
    return str(result["backfillId"])


@dataclass(frozen=True)
class BackfillProgress:
    """A snapshot of one backfill, in the units an operator thinks in."""

    backfill_id: str
    status: str
    #: partition keys (symbol-days) targeted / with every targeted asset materialised / failed
    partitions_total: int
    partitions_done: int
    partitions_failed: int
    #: the same counted per asset partition (a symbol-day of four assets counts four)
    asset_partitions_total: int
    asset_partitions_done: int
    runs: int
    runs_finished: int
    rows: int
    elapsed_seconds: float

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def partitions_per_minute(self) -> float:
        if self.elapsed_seconds <= 0:
            return 0.0
        return 60.0 * self.partitions_done / self.elapsed_seconds

    @property
    def eta_seconds(self) -> float | None:
        """Time left at the rate so far; None before the first partition is done."""
        left = self.partitions_total - self.partitions_done - self.partitions_failed
        if self.partitions_done == 0:
            return None
        return left * self.elapsed_seconds / self.partitions_done

    def line(self) -> str:
        """One terminal line, e.g. ``[abcd1234] 4/6 partitions (67%) ...``."""
        pct = 100.0 * self.partitions_done / self.partitions_total if self.partitions_total else 0
        eta = self.eta_seconds
        parts = [
            f"[{self.backfill_id}] {self.partitions_done}/{self.partitions_total} partitions"
            f" ({pct:.0f}%)",
            f"{self.asset_partitions_done}/{self.asset_partitions_total} asset partitions",
            f"{self.partitions_failed} failed",
            f"runs {self.runs_finished}/{self.runs}",
            f"{self.rows:,} rows",
            f"{self.rows_per_second:,.0f} rows/s",
            f"{self.partitions_per_minute:.1f} partitions/min",
            f"elapsed {self.elapsed_seconds:.0f}s",
        ]
        if not self.finished and eta is not None:
            parts.append(f"ETA {eta:.0f}s")
        parts.append(self.status)
        return " | ".join(parts)


class BackfillMonitor:
    """Polls the instance for one backfill; rows of finished runs are read only once."""

    def __init__(self, instance: Any, backfill_id: str, asset_graph: Any = None):
        self.instance = instance
        self.backfill_id = backfill_id
        self._asset_graph = asset_graph
        self._finished_runs: dict[str, tuple[int, set[tuple[Any, str]]]] = {}

    @property
    def asset_graph(self) -> Any:
        if self._asset_graph is None:
            from petrosa_pipelines.definitions import defs

            self._asset_graph = defs.resolve_asset_graph()
        return self._asset_graph

    def poll(self) -> BackfillProgress:
        backfill = self.instance.get_backfill(self.backfill_id)
        if backfill is None:
            raise StackError(f"no backfill {self.backfill_id!r} in this instance")
        data = backfill.get_asset_backfill_data(self.asset_graph)
        runs = self.instance.get_runs(filters=_runs_filter(self.backfill_id))
        rows = 0
        # the daemon updates its bookkeeping once per tick (30 s); the runs' own events are
        # fresher, so a partition counts as soon as either says it is materialised
        landed: set[tuple[Any, str]] = set()
        for run in runs:
            run_rows, run_landed = self._run_events(run.run_id, run.is_finished)
            rows += run_rows
            landed |= run_landed
        by_key: dict[str, list[bool]] = defaultdict(list)
        failed_keys: set[str] = set()
        for akpk in data.target_subset.iterate_asset_partitions():
            key = str(akpk.partition_key)
            by_key[key].append(akpk in data.materialized_subset or (akpk.asset_key, key) in landed)
            if akpk in data.failed_and_downstream_subset:
                failed_keys.add(key)
        end = backfill.backfill_end_timestamp or time.time()
        return BackfillProgress(
            backfill_id=self.backfill_id,
            status=backfill.status.value,
            partitions_total=len(by_key),
            partitions_done=sum(all(flags) for flags in by_key.values()),
            partitions_failed=len(failed_keys),
            asset_partitions_total=sum(len(flags) for flags in by_key.values()),
            asset_partitions_done=sum(sum(flags) for flags in by_key.values()),
            runs=len(runs),
            runs_finished=sum(r.is_finished for r in runs),
            rows=rows,
            elapsed_seconds=max(0.0, end - backfill.backfill_timestamp),
        )

    def _run_events(self, run_id: str, finished: bool) -> tuple[int, set[tuple[Any, str]]]:
        """Rows and (asset key, partition) materialised by one run; cached once it finished."""
        if run_id in self._finished_runs:
            return self._finished_runs[run_id]
        from dagster import DagsterEventType

        records = self.instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        ).records
        rows, landed = 0, set()
        for record in records:
            mat = record.event_log_entry.asset_materialization
            if mat is None:
                continue
            landed.add((mat.asset_key, str(mat.partition)))
            count = mat.metadata.get(ROW_COUNT)
            if count is not None and isinstance(count.value, int):
                rows += count.value
        if finished:
            self._finished_runs[run_id] = (rows, landed)
        return rows, landed


def _runs_filter(backfill_id: str) -> Any:
    import dagster as dg

    return dg.RunsFilter(tags={BACKFILL_TAG: backfill_id})


def follow_backfill(
    instance: Any,
    backfill_id: str,
    interval: float = 2.0,
    timeout: float | None = None,
    log: Callable[[str], None] = print,
    asset_graph: Any = None,
) -> BackfillProgress:
    """Print a progress line whenever it changes until the backfill finishes (or times out)."""
    monitor = BackfillMonitor(instance, backfill_id, asset_graph=asset_graph)
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] = ()
    while True:
        progress = monitor.poll()
        line = progress.line()
        # rates and ETA change on every poll: print when a count or the status moves
        counts = (
            progress.partitions_done,
            progress.partitions_failed,
            progress.asset_partitions_done,
            progress.runs,
            progress.runs_finished,
            progress.rows,
            progress.status,
        )
        if counts != last:
            log(line)
            last = counts
        if progress.finished:
            return progress
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} not finished: {line}")
        time.sleep(interval)
