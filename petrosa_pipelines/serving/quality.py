"""Cheap per-partition checks the Python API runs on what it returns.

Why here and not only in Dagster: a consumer reading the lake must learn that a partition is
short or broken even when no Dagster instance is at hand. Each check is a pure function of
one partition's frame; the Dagster asset checks stay the authority for blocking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import SIDES, side_matrix
from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.checks.applicability import NO_HISTORY_DATASETS, no_history_datasets
from petrosa_pipelines.instruments import parse_instrument, split_key
from petrosa_pipelines.market_data.sources import venue_capabilities

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class FailedCheck:
    """One check that failed on one partition (``partition`` is ``YYYY-MM-DD|SYMBOL``)."""

    partition: str
    check: str
    detail: str


Finding = tuple[str, str]  # (check, detail)


def _candles(frame: pd.DataFrame, day_closed: bool) -> list[Finding]:
    out = []
    one_min = frame[frame["interval"] == "1m"]
    if day_closed and len(one_min) != MINUTES_PER_DAY:
        out.append(("completeness", f"{len(one_min)} of {MINUTES_PER_DAY} 1m candles"))
    lo = np.minimum(frame["open"], frame["close"])
    hi = np.maximum(frame["open"], frame["close"])
    bad = (frame["low"] > lo) | (frame["high"] < hi) | (frame["volume"] < 0)
    if bad.any():
        out.append(
            ("ohlc_invariants", f"{int(bad.sum())} candles break low<=open,close<=high, volume>=0")
        )
    return out


def _ids_consecutive(frame: pd.DataFrame) -> bool:
    """Whether the venue of ``frame``'s rows numbers trades consecutively (unknown: yes)."""
    exchanges = frame["exchange"].unique() if "exchange" in frame.columns else []
    caps = [venue_capabilities(str(e)) for e in exchanges]
    return all(c is None or c.trade_ids_consecutive for c in caps)


def _trades(frame: pd.DataFrame, day_closed: bool) -> list[Finding]:
    """A missing id is a lost trade only where the venue's ids are consecutive (Binance); Bybit's
    UUIDs prove nothing here (the Dagster checks hold them against the venue's candles)."""
    out = []
    if _ids_consecutive(frame):
        ids = np.sort(frame["agg_trade_id"].to_numpy())
        gaps = np.diff(ids) - 1
        missing = int(gaps[gaps > 0].sum())
        if missing:
            out.append(
                ("trade_id_continuity", f"{missing} aggregate trade ids missing inside the day")
            )
    bad = (frame["price"] <= 0) | (frame["quantity"] <= 0)
    if bad.any():
        out.append(("positive_values", f"{int(bad.sum())} trades with price or quantity <= 0"))
    return out


def _depth(frame: pd.DataFrame, day_closed: bool) -> list[Finding]:
    """Levels priced or sized <= 0, and snapshots whose best bid is not below the best ask
    (the first row of a repeated snapshot time, as the checks of version 1 pivoted them)."""
    out = []
    best: dict[str, np.ndarray] = {}
    bad = 0
    for side in SIDES:
        prices, qtys = side_matrix(frame, side)
        bad += int(((prices <= 0) | (qtys <= 0)).sum())  # NaN padding compares False
        best[side] = prices[:, 0] if prices.shape[1] else np.full(len(frame), np.nan)
    if bad:
        out.append(("positive_values", f"{bad} levels with price or quantity <= 0"))
    first = ~frame["snapshot_time"].duplicated().to_numpy()
    crossed = int((best["bid"] >= best["ask"])[first].sum())
    if crossed:
        out.append(("crossed_book", f"{crossed} snapshots with best bid >= best ask"))
    return out


def _funding(frame: pd.DataFrame, day_closed: bool) -> list[Finding]:
    if not np.isfinite(frame["funding_rate"].to_numpy()).all():
        return [("finite_rate", "non-finite funding rates")]
    return []


_CHECKS: dict[str, Callable[[pd.DataFrame, bool], list[Finding]]] = {
    "candles": _candles,
    "trades": _trades,
    "depth": _depth,
    "funding": _funding,
}


def _no_history(partition: str) -> tuple[str, ...]:
    """Datasets the venue of ``partition`` keeps no history of (a key without an instrument,
    or of an unknown venue: the general rule)."""
    try:
        _, inst = split_key(partition)
        return no_history_datasets(parse_instrument(inst).venue)
    except (ValueError, KeyError):
        return NO_HISTORY_DATASETS


def check_partition(
    dataset: str, frame: pd.DataFrame, *, partition: str, day_closed: bool
) -> list[FailedCheck]:
    """Failed checks of one market-data partition (empty list when all pass).

    A closed day with no rows fails ``empty`` for a dataset the exchange serves history of
    (zero rows hold no offending row, which must not read as a clean day); a dataset without
    history (depth) may rightly be empty before the ingest existed, which only the landing
    zone can tell (the Dagster checks do, ``checks/applicability.py``), unless the venue of
    ``partition`` keeps that history (``no_history_datasets``: Bybit's book archives).
    """
    if dataset not in DATASETS:
        return []
    if frame.empty:
        if day_closed and dataset not in _no_history(partition):
            return [FailedCheck(partition, "empty", f"0 {dataset} rows for a closed day")]
        return []
    findings: list[Finding] = []
    dupes = int(frame.duplicated(list(DATASETS[dataset].natural_key)).sum())
    if dupes:
        findings.append(("duplicates", f"{dupes} rows repeat a natural key"))
    findings += _CHECKS[dataset](frame, day_closed)
    return [FailedCheck(partition, check, detail) for check, detail in findings]
