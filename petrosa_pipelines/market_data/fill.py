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
        return merge_ranges([*open_ranges, *self.intrinsic_gaps(frame, window)])


@dataclass
class SourceAnswer:
    frame: pd.DataFrame
    confirmed: list[Range]


class HistorySource(abc.ABC):
    """One place a partition's rows can come from."""

    name: str

    def available(self, window: PartitionWindow) -> bool:
        return True

    @abc.abstractmethod
    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        """Rows for (at least) the ``missing`` ranges, and the ranges this answer confirms."""


@dataclass
class FillResult:
    frame: pd.DataFrame
    missing: list[Range]
    attempts: list[dict] = field(default_factory=list)

    def source_mix(self) -> dict[str, int]:
        if self.frame.empty:
            return {}
        return {str(k): int(v) for k, v in self.frame["source"].value_counts().sort_index().items()}

    def missing_iso(self, limit: int = 20) -> list[str]:
        return [f"{ms_to_iso(s)}/{ms_to_iso(e)}" for s, e in self.missing[:limit]]


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
    is tried: a dead REST endpoint must not lose what the archive has.
    """
    frame = spec.schema.empty_frame()
    confirmed: list[Range] = []
    attempts: list[dict] = []
    extra = list(known_gaps)
    for source in sources:
        missing = merge_ranges([*spec.missing(frame, window, confirmed), *extra])
        if not missing:
            break
        if not source.available(window):
            attempts.append({"source": source.name, "skipped": "not available for this window"})
            continue
        try:
            answer = source.fetch(window, missing)
        except Exception as exc:  # noqa: BLE001 - recorded in metadata, next source tried
            attempts.append({"source": source.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        got = (
            spec.in_window(conform(answer.frame, spec.schema), window)
            if len(answer.frame.columns)
            else spec.schema.empty_frame()
        )
        attempts.append({"source": source.name, "rows": len(got), "ranges": len(missing)})
        if not got.empty:
            frame = dedup(pd.concat([frame, got], ignore_index=True), spec.schema, keep)
        confirmed.extend(answer.confirmed)
        extra = subtract_ranges(extra, answer.confirmed)
    frame = spec.in_window(frame, window).reset_index(drop=True)
    remaining = merge_ranges([*spec.missing(frame, window, confirmed), *extra])
    return FillResult(frame=frame, missing=remaining, attempts=attempts)
