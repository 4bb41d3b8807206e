"""Launch market-data partition materialisations, or an asset backfill, from Python.

``materialize_partitions`` runs in this process (one run per symbol-day through the code
location's ``market_data_job``; a day before the rolling window, one run per instrument-month
of ``market_data/history/*`` rebuilding just the days asked for): for notebooks, scripts and
tests. ``launch_backfill`` only records an asset backfill in the instance; the instance's daemon
(``dagster-daemon run``) executes it with the deployment's run launcher, exactly like one
launched from the UI.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from petrosa_pipelines import instruments
from petrosa_pipelines.market_data.partitions import (
    PARTITIONS_START,
    SYMBOLS_PARTITIONS_NAME,
    is_history_day,
    partition_key,
)
from petrosa_pipelines.serving.arguments import checked_range, days_between, symbol_names

MARKET_DATA_JOB = "market_data_job"
DATASETS = instruments.DATASETS


@dataclass(frozen=True)
class RunOutcome:
    partition_key: str
    run_id: str
    success: bool


def _defs(defs: dg.Definitions | None) -> dg.Definitions:
    if defs is not None:
        return defs
    from petrosa_pipelines.definitions import defs as location_defs

    return location_defs


def _asset_keys(datasets: str | Iterable[str]) -> list[dg.AssetKey]:
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = [d for d in names if d not in DATASETS]
    if unknown or not names:
        raise ValueError(f"unknown datasets {unknown or names}; known: {list(DATASETS)}")
    return [dg.AssetKey(instruments.market_data_path(d)) for d in names]


def partition_keys(symbols: str | Iterable[str], start: Any, end: Any) -> list[str]:
    """``date|SYMBOL`` keys of every UTC day overlapping [start, end), for each symbol.

    Symbols and range are checked first (``serving.arguments``): a
    junk symbol would otherwise become a permanent dynamic partition of the instance.
    """
    syms = symbol_names(symbols)
    lo, hi = checked_range(start, end)
    return [str(partition_key(d, s)) for d in days_between(lo, hi) for s in syms]


def _register_symbols(instance: dg.DagsterInstance, symbols: str | Iterable[str]) -> None:
    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, symbol_names(symbols))


def materialize_partitions(
    datasets: str | Iterable[str],
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    *,
    instance: dg.DagsterInstance | None = None,
    defs: dg.Definitions | None = None,
    job_name: str = MARKET_DATA_JOB,
    raise_on_error: bool = False,
) -> list[RunOutcome]:
    """Materialise each symbol-day in process, one run each; failures are reported, not hidden.

    With no ``instance``, the one at ``$DAGSTER_HOME`` is used when set (so runs show in
    the UI), else an ephemeral one.
    """
    keys = _asset_keys(datasets)
    syms = symbol_names(symbols)  # checked before anything: a junk symbol stays registered
    pkeys = partition_keys(syms, start, end)
    window = [k for k in pkeys if not is_history_day(k[:10])]
    months = history_runs(pkeys)
    location = _defs(defs)
    owned = instance is None
    if instance is None:
        instance = dg.DagsterInstance.get() if _has_home() else dg.DagsterInstance.ephemeral()
    tags = {"petrosa/launched_by": "api.materialize_partitions"}
    try:
        _register_symbols(instance, syms)
        out = []
        job = location.resolve_job_def(job_name) if window else None
        for key in window:
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                asset_selection=keys,
                raise_on_error=raise_on_error,
                tags=tags,
            )
            out.append(RunOutcome(key, result.run_id, result.success))
        history_job = location.resolve_implicit_global_asset_job_def() if months else None
        for month, days in months.items():
            result = history_job.execute_in_process(
                partition_key=month,
                instance=instance,
                asset_selection=[_history_key(k) for k in keys],
                run_config=history_run_config(keys, days),
                raise_on_error=raise_on_error,
                tags=tags,
            )
            out.append(RunOutcome(month, result.run_id, result.success))
        return out
    finally:
        if owned:
            instance.dispose()


def _history_key(key: dg.AssetKey) -> dg.AssetKey:
    from petrosa_pipelines.market_data.history import history_key

    return history_key(key.path[-1])


def history_runs(pkeys: Iterable[str]) -> dict[str, list[str]]:
    """The instrument-month partitions of the keys before the window, with their days."""
    from petrosa_pipelines.market_data.history import month_key

    out: dict[str, list[str]] = {}
    for key in pkeys:
        day, _, value = str(key).partition(instruments.KEY_SEP)
        if is_history_day(day):
            out.setdefault(month_key(day, value), []).append(day)
    return out


def history_run_config(keys: Iterable[dg.AssetKey], days: list[str]) -> dict[str, Any]:
    """Run config rebuilding only ``days`` of each selected history asset."""
    ops = {"__".join(_history_key(k).path): {"config": {"days": sorted(days)}} for k in keys}
    return {"ops": ops}


def _has_home() -> bool:
    import os

    return bool(os.environ.get("DAGSTER_HOME"))


def launch_backfill(
    datasets: str | Iterable[str],
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    *,
    instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    title: str | None = None,
) -> str:
    """Record an asset backfill of the symbol-days in ``instance``; return its id.

    The daemon of that instance runs it (honouring backfill policies and concurrency pools).
    Days before the rolling window are backfilled as the whole instrument-months of
    ``market_data/history/*`` holding them; a range on both sides of the window's start is
    refused (two backfills, one each side).
    """
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    keys = _asset_keys(datasets)
    syms = symbol_names(symbols)  # checked before anything: a junk symbol stays registered
    pkeys = partition_keys(syms, start, end)
    months = list(history_runs(pkeys))
    if months and len(months) < len(pkeys):
        raise ValueError(
            f"[{start}, {end}) spans the history before the rolling window and its day "
            f"partitions (from {PARTITIONS_START}, PETROSA_DAILY_WINDOW_DAYS): launch one "
            f"backfill ending at {PARTITIONS_START} and one starting there"
        )
    if months:  # whole instrument-months of market_data/history/* (no run config per month)
        keys, pkeys = [_history_key(k) for k in keys], months
    _register_symbols(instance, syms)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=_defs(defs).resolve_asset_graph(),
        partition_names=pkeys,
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags={"petrosa/launched_by": "api.launch_backfill"},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title or f"{','.join(k.path[-1] for k in keys)} {pkeys[0]}..{pkeys[-1]}",
        description=f"launched from Python at {dt.datetime.now(tz=dt.UTC).isoformat()}",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id
