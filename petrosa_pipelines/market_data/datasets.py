"""What a complete day looks like for each dataset (the ``DatasetSpec`` of the fill)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.schemas import CANDLES, DEPTH, FUNDING, TRADES
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS, merge_ranges
from petrosa_pipelines.market_data.fill import (
    DatasetSpec,
    PartitionWindow,
    Range,
    non_decreasing,
    step_positions,
)
from petrosa_pipelines.market_data.sources import EDGE_GAPS, EDGE_MIN_MS, venue_capabilities


def _ms(series: pd.Series) -> np.ndarray:
    return series.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _by_id(frame: pd.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(aggregate ids, trade ms) in id order. Rows already in that order (every archive day,
    every deduped partition of consecutive ids) are the columns themselves: no sort of the
    frame, whose indexer and sorted copies held several times a column. Otherwise sorted as
    ``frame.sort_values("agg_trade_id", kind=kind)`` would."""
    ids = frame["agg_trade_id"].to_numpy()
    times = _ms(frame["trade_time"])
    if non_decreasing(ids):
        return ids, times
    order = np.argsort(ids, kind=kind)
    return ids[order], times[order]


class TradesSpec(DatasetSpec):
    """Trades of one symbol-day; what proves them complete depends on the venue's ids.

    Where ids are consecutive per symbol (``Capabilities.trade_ids_consecutive``, Binance
    aggTrades) a missing id is a gap, and coverage is proven by ids, not by timestamps: a run of
    consecutive ids from trade ``a`` to trade ``b`` proves every trade strictly between their
    milliseconds, but not the whole millisecond of either end, which another (lost) trade may
    share. A day is complete once a run reaches from a trade before its start to a trade at or
    after its end; the neighbours outside the window that prove it are held while filling and
    dropped from the result.

    Where ids prove nothing (Bybit's UUIDs), rows cannot show a hole: a closed day is proven
    only by a source that confirms it (the venue's day archive, ``ArchiveSource``), and the open
    day by the density of its own trades (``dense_coverage``: the same Poisson bound the archive
    edges use), the ingest's gap ledger marking what it lost. The checks then hold the day
    against the venue's candles (``checks/audit.py``: ``trades_candle_evidence``).
    """

    schema = TRADES

    def __init__(self, consecutive_ids: bool = True):
        self.consecutive_ids = consecutive_ids

    def implied_coverage(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        if not self.consecutive_ids:
            if window.closed or frame.empty:
                return []
            return dense_coverage(_ms(frame["trade_time"]), window)
        if len(frame) < 2:
            return []
        ids, times = _by_id(frame, kind="stable")
        breaks = step_positions(ids, lambda step: step != 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [len(ids) - 1]])
        return merge_ranges(
            [(int(times[a]) + 1, int(times[b])) for a, b in zip(starts, ends, strict=True) if b > a]
        )

    def intrinsic_gaps(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        if not self.consecutive_ids or len(frame) < 2:
            return []
        ids, times = _by_id(frame, kind="quicksort")
        holes = step_positions(ids, lambda step: step > 1)
        return merge_ranges([(int(times[i]), int(times[i + 1]) + 1) for i in holes])

    def keep_rows(self, frame: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
        if not self.consecutive_ids:
            return self.in_window(frame, window)  # no id neighbour proves anything
        return frame  # neighbours outside the window prove its edges (see the class docstring)


def dense_coverage(times_ms: np.ndarray, window: PartitionWindow) -> list[Range]:
    """[start, now) where trades are no further apart than a silence the market would not keep.

    A stretch between two trades (or between a window edge and the nearest trade) counts as
    covered when it is shorter than ``EDGE_GAPS`` typical gaps or ``EDGE_MIN_MS``, whichever is
    longer (``sources.trade_edges_reached``: a Poisson market leaves 50 mean gaps empty with
    p ~ e^-50). Longer silences stay missing, so the next source is asked for them.
    """
    start, stop = window.start_ms, window.needed_end_ms
    ms = np.sort(times_ms[(times_ms >= start) & (times_ms < stop)])
    if ms.size == 0:
        return []
    typical = float(np.median(np.diff(ms))) if ms.size > 1 else float(stop - start)
    reach = max(EDGE_MIN_MS, EDGE_GAPS * typical)
    points = np.concatenate([[start], ms, [stop]])
    short = np.flatnonzero(np.diff(points) <= reach)
    return merge_ranges([(int(points[i]), int(points[i + 1])) for i in short])


class CandlesSpec(DatasetSpec):
    """A day of 1m candles is exactly 1440 closed candles; each missing minute is a gap."""

    schema = CANDLES
    interval_ms = MINUTE_MS

    def needed(self, window: PartitionWindow) -> list[Range]:
        end = window.needed_end_ms - window.needed_end_ms % self.interval_ms
        return [(window.start_ms, end)] if end > window.start_ms else []

    def implied_coverage(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        if frame.empty:
            return []
        opens = np.unique(_ms(frame["open_time"]))
        return merge_ranges([(int(t), int(t) + self.interval_ms) for t in opens])

    def row_ranges(self, frame: pd.DataFrame) -> list[Range]:
        return self.implied_coverage(frame.dropna(subset=[self.schema.time_column]), None)  # type: ignore[arg-type]


class FundingSpec(DatasetSpec):
    """Settlements every ``interval_hours`` (8 h on most perpetuals); Binance stamps them a few
    ms late (e.g. 1640995200006), so an event covers a tolerance around its nominal time."""

    schema = FUNDING
    tolerance_ms = 1_000

    def __init__(self, interval_hours: int = 8):
        if interval_hours not in (1, 2, 4, 8):
            raise ValueError(f"funding interval_hours={interval_hours} must be one of 1, 2, 4, 8")
        self.interval_ms = interval_hours * HOUR_MS

    def expected_times(self, window: PartitionWindow) -> list[int]:
        return list(range(window.start_ms, window.needed_end_ms, self.interval_ms))

    def needed(self, window: PartitionWindow) -> list[Range]:
        tol = self.tolerance_ms
        return [(t, t + tol) for t in self.expected_times(window) if t + tol <= window.now_ms]

    def implied_coverage(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        if frame.empty:
            return []
        tol = self.tolerance_ms
        return merge_ranges([(int(t) - tol, int(t) + tol) for t in _ms(frame["funding_time"])])

    def row_ranges(self, frame: pd.DataFrame) -> list[Range]:
        return self.implied_coverage(frame.dropna(subset=[self.schema.time_column]), None)  # type: ignore[arg-type]


class DepthSpec(DatasetSpec):
    """Sampled book snapshots; coverage is where samples exist within two cadences."""

    schema = DEPTH

    def __init__(self, cadence_ms: int = 1_000):
        self.cadence_ms = cadence_ms

    def implied_coverage(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        if frame.empty:
            return []
        times = np.unique(_ms(frame["snapshot_time"]))
        return merge_ranges(
            [(int(t), int(t) + self.cadence_ms) for t in times], gap=self.cadence_ms
        )


SPECS = {"trades": TradesSpec, "candles": CandlesSpec, "funding": FundingSpec, "depth": DepthSpec}


def trades_spec(exchange: str) -> TradesSpec:
    """The trades spec of a venue (id or storage name): ids prove coverage only where the
    venue declares them consecutive; an unknown name keeps the consecutive (Binance) rules."""
    caps = venue_capabilities(exchange)
    return TradesSpec(consecutive_ids=caps is None or caps.trade_ids_consecutive)
