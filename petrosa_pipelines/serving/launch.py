"""Launch market-data partition materialisations, or an asset backfill, from Python.

``materialize_partitions`` runs in this process (one run per symbol-day through the code
location's ``market_data_job``): for notebooks, scripts and tests. ``launch_backfill`` only
records an asset backfill in the instance; the instance's daemon (``dagster-daemon run``)
executes it with the deployment's run launcher, exactly like one launched from the UI.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from petrosa_pipelines import instruments
from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME, partition_key
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
    job = _defs(defs).resolve_job_def(job_name)
    owned = instance is None
    if instance is None:
        instance = dg.DagsterInstance.get() if _has_home() else dg.DagsterInstance.ephemeral()
    try:
        _register_symbols(instance, syms)
        out = []
        for key in pkeys:
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                asset_selection=keys,
                raise_on_error=raise_on_error,
                tags={"petrosa/launched_by": "api.materialize_partitions"},
            )
            out.append(RunOutcome(key, result.run_id, result.success))
        return out
    finally:
        if owned:
            instance.dispose()


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
    """
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    keys = _asset_keys(datasets)
    syms = symbol_names(symbols)  # checked before anything: a junk symbol stays registered
    pkeys = partition_keys(syms, start, end)
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
