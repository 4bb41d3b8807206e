"""Health score 0-100 of a partition, from its check outcomes, and reading it back per partition.

The score is a pure function of the outcomes so it can be unit- and property-tested: each
outcome has a quality in [0, 1] (share of good units, or a decay for freshness) and belongs to
one component; a component's quality is its WORST check's (a perfect duplicate check must not
hide a broken OHLC check), and the score is the weighted mean over the components present
(weights are settings, renormalised so a dataset without e.g. a freshness check is not punished).

"Not applicable" outcomes (``checks/applicability.py``) are left out; a partition where every
outcome is not applicable has no score. An empty partition where data should exist scores 0:
its checks find no offending row in zero rows, which must not read as fully valid.
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
        if o.not_applicable:
            continue
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


def health_metadata(
    outcomes: Iterable[CheckOutcome],
    weights: HealthWeights,
    *,
    rows: int | None = None,
    data_expected: bool = False,
    min_score: float | None = None,
) -> dict[str, Any]:
    """Score, status, reason, component qualities and failing checks, for check metadata.

    ``rows`` is the partition's row count and ``data_expected`` whether rows must exist by now
    (the window has run long enough); together they make an empty partition score 0. Without
    a score (every outcome not applicable) ``score`` is absent and ``status`` is
    ``not_applicable``; else ``status`` is ``failed`` below ``min_score``.
    """
    outcomes = list(outcomes)
    failed = sorted(o.name for o in outcomes if not o.passed)
    judged = [o for o in outcomes if not o.not_applicable]
    if outcomes and not judged:
        return {
            "status": "not_applicable",
            "reason": outcomes[0].not_applicable,
            "failed_checks": failed,
        }
    comps = component_scores(judged)
    meta: dict[str, Any] = {"score": health_score(comps, weights)}
    reason = ""
    if rows == 0 and data_expected:
        meta["score"] = 0.0
        reason = "empty partition: 0 rows where data should exist"
    meta.update({c: round(comps[c], 6) for c in COMPONENTS if c in comps})
    meta["failed_checks"] = failed
    if rows is not None:
        meta["rows"] = int(rows)
    low = min_score is not None and meta["score"] < min_score
    meta["status"] = "failed" if low else "passed"
    meta["reason"] = reason or (f"failing: {', '.join(failed)}" if failed else "every check passes")
    return meta


def describe_health(meta: Mapping[str, Any], min_score: float) -> str:
    """One line: the score against the threshold and why (for the check's description)."""
    if meta.get("status") == "not_applicable":
        return str(meta.get("reason", "not applicable"))
    score = float(meta["score"])
    cmp = "<" if score < min_score else ">="
    return f"health {score:g} {cmp} {min_score:g}: {meta.get('reason', '')}".rstrip(": ")


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

    ``symbol`` is the partition's instrument as registered: an id (``bybit-linear:BTCUSDT``;
    ``binance:BTCUSDT`` reads as ``binance-usdm:BTCUSDT``) or a legacy bare Binance symbol.
    It is not upper-cased: an id's venue part is lower-case.

    Reads the per-partition results of the dataset's ``health`` check back from the Dagster
    instance (``DagsterInstance.get()`` when none is given). Days never audited are absent.
    Columns: date, symbol, dataset, score (NaN when not applicable), the four components,
    failed_checks, passed, status (passed, failed, not_applicable), reason, evaluated_at
    (UTC), run_id.
    """
    import dagster as dg
    from dagster._core.event_api import PartitionKeyFilter  # no public path in 1.13

    from petrosa_pipelines.instruments import market_data_path
    from petrosa_pipelines.market_data.partitions import partition_key

    first = dt.date.fromisoformat(start) if isinstance(start, str) else start
    last = dt.date.fromisoformat(end) if isinstance(end, str) else end
    inst = instance or dg.DagsterInstance.get()
    storage = inst.event_log_storage
    key = dg.AssetCheckKey(dg.AssetKey(market_data_path(dataset)), HEALTH_CHECK)
    rows = []
    day = first
    while day <= last:
        pk = str(partition_key(day, symbol))
        rec = storage.get_latest_asset_check_execution_by_key(
            [key], partition_filter=PartitionKeyFilter(key=pk)
        ).get(key)
        evaluation = rec.event.asset_check_evaluation if rec and rec.event else None
        if evaluation is not None:
            meta = {k: _value(v) for k, v in evaluation.metadata.items()}
            rows.append(
                {
                    "date": day,
                    "symbol": symbol,
                    "dataset": dataset,
                    "score": float(meta.get("score", float("nan"))),
                    **{c: meta.get(c) for c in COMPONENTS},
                    "failed_checks": meta.get("failed_checks", []),
                    "passed": bool(evaluation.passed),
                    "status": meta.get("status") or ("passed" if evaluation.passed else "failed"),
                    "reason": meta.get("reason", ""),
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
        "status",
        "reason",
        "evaluated_at",
        "run_id",
    ]
    return pd.DataFrame(rows, columns=columns)
