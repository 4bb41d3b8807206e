"""``petrosa migrate-partitions``: move an install onto the rolling window + monthly history.

Before the window (``PETROSA_DAILY_WINDOW_DAYS``), every day since ``PETROSA_START_DATE`` was a
day x instrument partition. After it, the days before the window are tracked by instrument-month
in ``market_data/history/*`` (``market_data/history.py``). The lake layout is the same in both
schemes (one file per instrument-day), so the migration moves no data: it records every history
month that holds a lake file, each day judged by the same checks, in one ``history_roll_job``
run (the run the daily roll would make), and proves that no lake file changed.

Nothing is lost: every day's rows are listed and hashed before and after (rows, not files: the
roll compacts closed quiet months into month files, ``market_data/compaction.py``); a missing
or different day fails the command. The days' old day-partition materialisations stay in the
event log. Idempotent: a recorded month is not recorded again unless more of its days have
left the window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa

from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.lake import Lake


@dataclass
class PartitionMigration:
    """What the migration did (or would do)."""

    #: dataset -> months recorded (or to record)
    months: dict[str, int] = field(default_factory=dict)
    files_before: int = 0
    #: lake paths whose bytes changed or that vanished (must stay empty)
    changed: list[str] = field(default_factory=list)
    run_id: str | None = None


def lake_fingerprint(lake: Lake) -> dict[str, str]:
    """sha256 of every market-data day's rows in the lake, by day path: the same whether the
    day is its own file or a row group of a month file."""
    return {
        path: rows_digest(lake.read_table(path))
        for dataset in DATASETS
        for path in lake.list(f"market_data/{dataset}/")
    }


def rows_digest(table: pa.Table) -> str:
    """sha256 of the table's columns and rows (Arrow IPC of its data, one chunk per column,
    no schema metadata): equal for equal rows however they were stored."""
    sink = pa.BufferOutputStream()
    table = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def migrate(instance: dg.DagsterInstance, lake: Lake, dry_run: bool = False) -> PartitionMigration:
    """Record every history month holding a lake file (``dry_run``: only count them)."""
    from petrosa_pipelines.definitions import defs
    from petrosa_pipelines.market_data.history import (
        HISTORY_ROLL_JOB,
        history_month_keys,
        plan_roll,
    )
    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME

    before = lake_fingerprint(lake)
    instruments = sorted(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    plan = plan_roll(instance, lake, instruments, history_month_keys())
    out = PartitionMigration(files_before=len(before))
    for item in plan:
        out.months[item.dataset] = out.months.get(item.dataset, 0) + 1
    if dry_run or not plan:
        return out
    result = defs.resolve_job_def(HISTORY_ROLL_JOB).execute_in_process(
        instance=instance, tags={"petrosa/migration": "partitions"}
    )
    out.run_id = result.run_id
    after = lake_fingerprint(lake)
    out.changed = sorted(p for p, h in before.items() if after.get(p) != h)
    if not result.success:
        raise RuntimeError(f"the history roll run {result.run_id} failed; nothing was moved")
    return out


def main(dry_run: bool = False) -> int:
    """The CLI entry: the lake of ``PETROSA_LAKE_PATH`` and the instance at ``$DAGSTER_HOME``."""
    from petrosa_pipelines.lake import lake_from_path
    from petrosa_pipelines.market_data.partitions import HISTORY_START, PARTITIONS_START
    from petrosa_pipelines.settings import from_env

    lake = lake_from_path(from_env().lake_path)
    with dg.DagsterInstance.get() as instance:
        done = migrate(instance, lake, dry_run=dry_run)
    verb = "to record" if dry_run else "recorded"
    months = ", ".join(f"{k} {v}" for k, v in sorted(done.months.items())) or "none"
    print(
        f"history before the window ({HISTORY_START} .. {PARTITIONS_START}): months {verb}: "
        f"{months}; lake days: {done.files_before}, changed: {len(done.changed)}"
        + (f"; run {done.run_id}" if done.run_id else "")
    )
    for path in done.changed:
        print(f"CHANGED: {path}")
    return 1 if done.changed else 0


__all__ = ["PartitionMigration", "lake_fingerprint", "main", "migrate", "rows_digest"]
