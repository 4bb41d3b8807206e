"""Reading asset-check results back from the Dagster instance, per partition.

1.13 has no public ``fetch_*`` API for check evaluations and the event-log cursor query fails
on the default (run-sharded) sqlite storage, so the sensors read the check-execution table per
check key (``EventLogStorage.get_asset_check_execution_history``, dagster/_core/storage/
event_log/base.py), which works on sqlite and PostgreSQL alike (tested on both here).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (  # no public path in 1.13
    AssetCheckExecutionRecordStatus,
)

FAILED = AssetCheckExecutionRecordStatus.FAILED
SUCCEEDED = AssetCheckExecutionRecordStatus.SUCCEEDED
PLANNED = AssetCheckExecutionRecordStatus.PLANNED
HISTORY_LIMIT = 500
#: a check still PLANNED after this long belongs to a run that died; stop waiting for it
PLANNED_GRACE_S = 3600


@dataclass(frozen=True)
class CheckRecord:
    """One finished check execution, flattened."""

    key: dg.AssetCheckKey
    record_id: int
    run_id: str
    partition: str | None
    status: AssetCheckExecutionRecordStatus
    passed: bool | None
    severity: str | None
    metadata: dict[str, Any]
    timestamp: float

    @property
    def key_string(self) -> str:
        return self.key.to_user_string()


def _flatten(key: dg.AssetCheckKey, rec: Any) -> CheckRecord:
    evaluation = rec.event.asset_check_evaluation if rec.event is not None else None
    meta = {}
    if evaluation is not None:
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    return CheckRecord(
        key=key,
        record_id=int(rec.id),
        run_id=rec.run_id,
        partition=rec.partition,
        status=rec.status,
        passed=None if evaluation is None else bool(evaluation.passed),
        severity=None if evaluation is None else evaluation.severity.value,
        metadata=meta,
        timestamp=float(rec.event.timestamp)
        if rec.event is not None
        else float(rec.create_timestamp),
    )


def _history_since(storage: Any, key: dg.AssetCheckKey, last: int) -> list[Any]:
    """Every execution row of ``key`` newer than ``last``, newest first, a page at a time: a
    batched audit run writes a row per instrument-day, more than one page between two ticks
    at a few hundred instruments (``cursor`` pages to ids below it)."""
    history: list[Any] = []
    page_cursor = None
    while True:
        page = storage.get_asset_check_execution_history(
            key, limit=HISTORY_LIMIT, cursor=page_cursor
        )
        history += page
        if len(page) < HISTORY_LIMIT or page[-1].id <= last:
            return history
        page_cursor = page[-1].id


def new_check_records(
    instance: dg.DagsterInstance,
    keys: Iterable[dg.AssetCheckKey],
    cursor: MutableMapping[str, int],
) -> Iterator[CheckRecord]:
    """Finished executions newer than ``cursor[key]`` per key, oldest first; advances the cursor.

    Row ids are assigned when a check is PLANNED, so the cursor only moves past finished rows
    and never past a row still PLANNED (a slow run's result is then read on a later tick),
    unless that row is older than ``PLANNED_GRACE_S`` (its run died).
    """
    now = time.time()
    storage = instance.event_log_storage
    for key in keys:
        name = key.to_user_string()
        last = int(cursor.get(name, 0))
        history = _history_since(storage, key, last)
        fresh = sorted((r for r in history if r.id > last), key=lambda r: r.id)
        planned = [
            r.id
            for r in fresh
            if r.status == PLANNED and now - r.create_timestamp < PLANNED_GRACE_S
        ]
        barrier = min(planned) if planned else None
        for rec in fresh:
            if barrier is not None and rec.id >= barrier:
                break
            if rec.status != PLANNED:
                yield _flatten(key, rec)
            cursor[name] = int(rec.id)


def latest_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> dict[str, AssetCheckExecutionRecordStatus]:
    """Latest execution status of ``key`` for every partition it ran on."""
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {
        i.partition_key: i.latest_execution_status for i in infos if i.partition_key is not None
    }


def latest_record(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, partition: str
) -> CheckRecord | None:
    """The latest execution of ``key`` on one partition, with its metadata."""
    from dagster._core.event_api import PartitionKeyFilter

    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=partition)
    ).get(key)
    return _flatten(key, rec) if rec is not None else None
