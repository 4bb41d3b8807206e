"""Health score 0-100 of a partition, from its check outcomes, and reading it back per partition.

The score is a pure function of the outcomes so it can be unit- and property-tested: each
outcome has a quality in [0, 1] (share of good units, or a decay for freshness) and belongs to
one component; a component's quality is its WORST check's (a perfect duplicate check must not
hide a broken OHLC check), and the score is the weighted mean over the components present
(weights are settings, renormalised so a dataset without e.g. a freshness check is not punished).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from petrosa_pipelines.checks.audit import CheckOutcome
from petrosa_pipelines.checks.settings import COMPONENTS, HealthWeights

#: name of the per-dataset check that carries the health score in its metadata
HEALTH_CHECK = "health"


def component_scores(outcomes: Iterable[CheckOutcome]) -> dict[str, float]:
    """Worst quality per component, over the components that have at least one outcome."""
    out: dict[str, float] = {}
    for o in outcomes:
        out[o.component] = min(out.get(o.component, 1.0), o.quality)
    return out


def health_score(components: Mapping[str, float], weights: HealthWeights) -> float:
    """Weighted mean of the component qualities, 0-100; 100 when there is nothing to judge."""
    w = weights.as_dict()
    total = sum(w[c] for c in components if c in w)
    if total <= 0:
        return 100.0
    value = sum(w[c] * min(1.0, max(0.0, q)) for c, q in components.items() if c in w)
    return round(100.0 * value / total, 2)


def health_metadata(outcomes: Iterable[CheckOutcome], weights: HealthWeights) -> dict[str, Any]:
    """Score, component qualities and the names of failing checks, for check metadata."""
    outcomes = list(outcomes)
    comps = component_scores(outcomes)
    meta: dict[str, Any] = {"score": health_score(comps, weights)}
    meta.update({c: round(comps[c], 6) for c in COMPONENTS if c in comps})
    meta["failed_checks"] = sorted(o.name for o in outcomes if not o.passed)
    return meta


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def health_for(
    symbol: str,
    dataset: str,
    start: dt.date | str,
    end: dt.date | str,
    instance: Any | None = None,
) -> pd.DataFrame:
    """Latest health of ``dataset`` for ``symbol`` on each day in [start, end] (inclusive).

    Reads the per-partition results of the dataset's ``health`` check back from the Dagster
    instance (``DagsterInstance.get()`` when none is given). Days never audited are absent.
    Columns: date, symbol, dataset, score, the four components, failed_checks, passed,
    evaluated_at (UTC), run_id.
    """
    import dagster as dg
    from dagster._core.event_api import PartitionKeyFilter  # no public path in 1.13

    from petrosa_pipelines.market_data.partitions import partition_key

    first = dt.date.fromisoformat(start) if isinstance(start, str) else start
    last = dt.date.fromisoformat(end) if isinstance(end, str) else end
    inst = instance or dg.DagsterInstance.get()
    storage = inst.event_log_storage
    key = dg.AssetCheckKey(dg.AssetKey(["market_data", dataset]), HEALTH_CHECK)
    rows = []
    day = first
    while day <= last:
        pk = str(partition_key(day, symbol.upper()))
        rec = storage.get_latest_asset_check_execution_by_key(
            [key], partition_filter=PartitionKeyFilter(key=pk)
        ).get(key)
        evaluation = rec.event.asset_check_evaluation if rec and rec.event else None
        if evaluation is not None:
            meta = {k: _value(v) for k, v in evaluation.metadata.items()}
            rows.append(
                {
                    "date": day,
                    "symbol": symbol.upper(),
                    "dataset": dataset,
                    "score": float(meta.get("score", float("nan"))),
                    **{c: meta.get(c) for c in COMPONENTS},
                    "failed_checks": meta.get("failed_checks", []),
                    "passed": bool(evaluation.passed),
                    "evaluated_at": pd.Timestamp(rec.event.timestamp, unit="s", tz="UTC"),
                    "run_id": rec.run_id,
                }
            )
        day += dt.timedelta(days=1)
    columns = [
        "date",
        "symbol",
        "dataset",
        "score",
        *COMPONENTS,
        "failed_checks",
        "passed",
        "evaluated_at",
        "run_id",
    ]
    return pd.DataFrame(rows, columns=columns)
