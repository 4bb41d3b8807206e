"""Build one partition from its sources in failover order: landing, then archive, then REST.

This is the one place where the failover order lives. Each dataset says what it needs
(``DatasetSpec``); each source says what it can give (``HistorySource``). A source is asked
only for the ranges still missing after the sources before it, and every range a source
answered for is "confirmed": an empty answer over a confirmed range is a quiet market, not a gap.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from petrosa_pipelines.catalog.schemas import DatasetSchema, conform
from petrosa_pipelines.lib.timeutil import day_window_ms, merge_ranges, ms_to_iso
from petrosa_pipelines.market_data.validate import split_valid

Range = tuple[int, int]
DedupKeep = Literal["first", "last"]


@dataclass(frozen=True)
class PartitionWindow:
    """A UTC day of one symbol; ``closed`` once the day has ended at ``now_ms``."""

    day: dt.date
    symbol: str
    now_ms: int

    @property
    def start_ms(self) -> int:
        return day_window_ms(self.day)[0]

    @property
    def end_ms(self) -> int:
        return day_window_ms(self.day)[1]

    @property
    def closed(self) -> bool:
        return self.now_ms >= self.end_ms

    @property
    def needed_end_ms(self) -> int:
        """History can only exist up to now."""
        return min(self.end_ms, self.now_ms)


def subtract_ranges(needed: Sequence[Range], covered: Sequence[Range]) -> list[Range]:
    """``needed`` minus ``covered``, as sorted disjoint [start, end) ranges."""
    out: list[Range] = []
    cov = merge_ranges(list(covered))
    for start, end in merge_ranges(list(needed)):
        cursor = start
        for c_start, c_end in cov:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                out.append((cursor, c_start))
            cursor = max(cursor, c_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


class DatasetSpec(abc.ABC):
    """What a complete partition of one dataset looks like."""

    schema: DatasetSchema

    def needed(self, window: PartitionWindow) -> list[Range]:
        return (
            [(window.start_ms, window.needed_end_ms)]
            if window.needed_end_ms > window.start_ms
            else []
        )

    @abc.abstractmethod
    def implied_coverage(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        """Ranges the rows themselves prove complete."""

    def intrinsic_gaps(self, frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
        """Holes visible in the rows whatever a source confirmed (e.g. missing trade ids)."""
        return []

    def row_ranges(self, frame: pd.DataFrame) -> list[Range]:
        """The time each row stands for (a rejected row leaves exactly this missing)."""
        if frame.empty:
            return []
        times = frame[self.schema.time_column].dropna()
        ms = times.astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        return merge_ranges([(int(t), int(t) + 1) for t in ms])

    def keep_rows(self, frame: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
        """Rows worth holding while filling: the window's (trades also keep id neighbours)."""
        return self.in_window(frame, window)

    def in_window(self, frame: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
        col = frame[self.schema.time_column]
        start = pd.Timestamp(window.start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(window.end_ms, unit="ms", tz="UTC")
        return frame[(col >= start) & (col < end)]

    def missing(
        self, frame: pd.DataFrame, window: PartitionWindow, confirmed: Sequence[Range]
    ) -> list[Range]:
        covered = [*self.implied_coverage(frame, window), *confirmed]
        open_ranges = subtract_ranges(self.needed(window), covered)
        gaps = subtract_ranges(
            self.intrinsic_gaps(frame, window), subtract_ranges([(0, 2**62)], self.needed(window))
        )
        return merge_ranges([*open_ranges, *gaps])


@dataclass
class SourceAnswer:
    """Rows, and the ranges the source proves complete beyond what its rows imply."""

    frame: pd.DataFrame
    confirmed: list[Range]


class HistorySource(abc.ABC):
    """One place a partition's rows can come from."""

    name: str
    #: asked even when nothing is missing (the kept partition: never publish fewer rows)
    always: bool = False
    #: its rows clear ledger gaps they cover (history sources; the landing zone's cannot)
    clears_ledger: bool = False

    def available(self, window: PartitionWindow) -> bool:
        return True

    @abc.abstractmethod
    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        """Rows for (at least) the ``missing`` ranges, and the ranges this answer confirms."""

    def fetch_for(
        self, window: PartitionWindow, missing: list[Range], held: pd.DataFrame
    ) -> SourceAnswer:
        """``fetch`` knowing the rows already held (trade repair by id needs the ids held)."""
        return self.fetch(window, missing)


@dataclass
class FillResult:
    frame: pd.DataFrame
    missing: list[Range]
    attempts: list[dict] = field(default_factory=list)
    #: rows rejected by validation, per reason (every source)
    rejected: dict[str, int] = field(default_factory=dict)

    def source_mix(self) -> dict[str, int]:
        if self.frame.empty:
            return {}
        return {str(k): int(v) for k, v in self.frame["source"].value_counts().sort_index().items()}

    def missing_iso(self, limit: int = 20) -> list[str]:
        return [f"{ms_to_iso(s)}/{ms_to_iso(e)}" for s, e in self.missing[:limit]]

    def added_by(self, source: str) -> int:
        """Rows of the result that only ``source`` gave (after dedup)."""
        return sum(int(a.get("added", 0)) for a in self.attempts if a.get("source") == source)

    def errors(self) -> list[dict]:
        return [a for a in self.attempts if "error" in a]


def dedup(frame: pd.DataFrame, schema: DatasetSchema, keep: DedupKeep = "first") -> pd.DataFrame:
    """One row per natural key, sorted by time then key: the same input gives the same rows."""
    if frame.empty:
        return frame
    out = frame.drop_duplicates(subset=list(schema.natural_key), keep=keep)
    sort_cols = [schema.time_column, *[k for k in schema.natural_key if k != schema.time_column]]
    return out.sort_values(sort_cols, kind="stable").reset_index(drop=True)


def fill_partition(
    spec: DatasetSpec,
    window: PartitionWindow,
    sources: Sequence[HistorySource],
    keep: DedupKeep = "first",
    known_gaps: Sequence[Range] = (),
) -> FillResult:
    """Ask each source in order for what is still missing; dedup by natural key.

    ``known_gaps`` (from the ingest's gap ledger) are ranges the landing zone is known to lack
    even where its rows look continuous. Errors of one source are recorded and the next source
    is tried: a dead REST endpoint must not lose what the archive has. Every answer is
    validated (``market_data/validate.py``); a rejected row is counted and its range stays
    missing until a later source gives a valid row for it.
    """
    frame = spec.schema.empty_frame()
    confirmed: list[Range] = []
    attempts: list[dict] = []
    rejected: dict[str, int] = {}
    extra = list(known_gaps)
    for source in sources:
        missing = merge_ranges([*spec.missing(frame, window, confirmed), *extra])
        if not missing and not source.always:
            continue
        if not source.available(window):
            attempts.append({"source": source.name, "skipped": "not available for this window"})
            continue
        try:
            answer = source.fetch_for(window, missing, frame)
        except Exception as exc:  # noqa: BLE001 - recorded in metadata, next source tried
            attempts.append({"source": source.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        got = (
            spec.keep_rows(conform(answer.frame, spec.schema), window)
            if len(answer.frame.columns)
            else spec.schema.empty_frame()
        )
        got, bad, reasons = split_valid(got, spec.schema.name)
        attempt: dict = {"source": source.name, "rows": len(got), "ranges": len(missing)}
        if len(bad):
            attempt["rejected"] = reasons
            for reason, n in reasons.items():
                rejected[reason] = rejected.get(reason, 0) + n
        before = len(spec.in_window(frame, window))
        if not got.empty:
            frame = dedup(pd.concat([frame, got], ignore_index=True), spec.schema, keep)
        attempt["added"] = len(spec.in_window(frame, window)) - before
        attempts.append(attempt)
        bad_ranges = spec.row_ranges(spec.in_window(bad, window))
        answered = [*answer.confirmed]
        if source.clears_ledger:
            answered += spec.implied_coverage(got, window)
        confirmed.extend(subtract_ranges(answer.confirmed, bad_ranges))
        extra = merge_ranges([*subtract_ranges(extra, answered), *bad_ranges])
    remaining = merge_ranges([*spec.missing(frame, window, confirmed), *extra])
    frame = spec.in_window(frame, window).reset_index(drop=True)
    return FillResult(frame=frame, missing=remaining, attempts=attempts, rejected=rejected)
