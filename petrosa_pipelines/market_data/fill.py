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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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


def window_metadata(window: PartitionWindow) -> dict[str, object]:
    """What day a build holds, for its metadata: a closed day, or the open day so far.

    The open day (today, ``partitions.OPEN_DAY_OFFSET``) is built from what has landed up to
    ``now`` (REST filling holes where the fill asks it): a partial day that only grows.
    ``as_of_ms`` is the moment it was judged complete up to; the checks judge it as of then
    (``checks.applicability.judged_now_ms``), not for minutes that had not happened.
    """
    meta: dict[str, object] = {
        "window_closed": window.closed,
        "day_state": "closed" if window.closed else "open",
        "as_of": ms_to_iso(min(window.now_ms, window.end_ms)),
        "as_of_ms": min(window.now_ms, window.end_ms),
    }
    if not window.closed:
        meta["partial_day"] = (
            f"open day {window.day.isoformat()}, partial: the day so far up to "
            f"{ms_to_iso(window.now_ms)}; it grows on each rebuild and is built in full once "
            "the day closes"
        )
    return meta


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
        return frame[self.window_mask(frame, window)]

    def window_mask(self, frame: pd.DataFrame, window: PartitionWindow) -> np.ndarray:
        """Which rows lie in the window (a mask: counting them copies no row)."""
        col = frame[self.schema.time_column]
        ms = ms_view(col)
        if ms is not None:  # NaT is int64's minimum: outside, as pandas compares it
            return (ms >= window.start_ms) & (ms < window.end_ms)
        start = pd.Timestamp(window.start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(window.end_ms, unit="ms", tz="UTC")
        return ((col >= start) & (col < end)).to_numpy(dtype=bool)

    def count_in_window(self, frame: pd.DataFrame, window: PartitionWindow) -> int:
        """How many rows lie in the window, counted block by block (no mask of the frame)."""
        if not len(frame):
            return 0
        ms = ms_view(frame[self.schema.time_column])
        if ms is None:
            return int(np.count_nonzero(self.window_mask(frame, window)))
        lo, hi = window.start_ms, window.end_ms
        return sum(int(np.count_nonzero((b >= lo) & (b < hi))) for b in blocks(ms))

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
    """Rows, and the ranges the source proves complete beyond what its rows imply.

    ``note``: what the source wants the run's metadata to say about this answer (e.g. which
    spans it filled), added to its entry of ``FillResult.attempts``.
    """

    frame: pd.DataFrame
    confirmed: list[Range]
    note: dict = field(default_factory=dict)


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

    def source_spans(self, spec: DatasetSpec, window: PartitionWindow) -> dict[str, list[Range]]:
        """Per row source, the spans its rows cover (``spec.implied_coverage`` of its rows):
        which part of the day came from where (e.g. depth: ws from noon, archive before)."""
        if self.frame.empty:
            return {}
        return {
            str(src): spec.implied_coverage(rows, window)
            for src, rows in self.frame.groupby("source", sort=True)
        }


def dedup(frame: pd.DataFrame, schema: DatasetSchema, keep: DedupKeep = "first") -> pd.DataFrame:
    """One row per natural key, sorted by time then ``schema.sort_columns``: the same input
    gives the same rows.

    Trades are keyed by the venue's own id (``trade_id``), so one Bybit trade met in the
    websocket (``agg_trade_id`` from its ``seq``) and in the archive (``agg_trade_id`` 0) is one
    row; on Binance ``trade_id`` is the aggregate id's text, the same key as before. A frame
    that already is its own result (a Binance archive day: ``already_deduped``) is returned
    without the hashing and sorting copies, which hold several times a 10 M-row frame.
    """
    if frame.empty:
        return frame
    if already_deduped(frame, schema):
        return frame.reset_index(drop=True)
    out = frame.drop_duplicates(subset=list(schema.natural_key), keep=keep)
    return out.sort_values(schema.sort_columns, kind="stable").reset_index(drop=True)


#: rows compared per block by ``already_deduped`` and the other whole-day scans (their
#: transient arrays stay this small: a day of 10 M trades is 80 MB per numeric column)
CHECK_BLOCK = 1 << 20
_TRADES_ORDER = ["trade_time", "exchange", "symbol", "agg_trade_id", "trade_id"]


def blocks(values: np.ndarray, overlap: int = 0):
    """``values`` as views of ``CHECK_BLOCK`` rows, each reaching ``overlap`` rows into the
    next (``overlap=1``: every step between neighbours lies inside one block)."""
    for lo in range(0, max(len(values) - overlap, 0), CHECK_BLOCK):
        yield values[lo : lo + CHECK_BLOCK + overlap]


def non_decreasing(values: np.ndarray) -> bool:
    """Whether ``values`` never go down (block by block: no full-length diff)."""
    return all(bool((np.diff(b) >= 0).all()) for b in blocks(values, overlap=1))


def step_positions(values: np.ndarray, test) -> np.ndarray:
    """Positions ``i`` where ``test(values[i + 1] - values[i])`` holds, diffed block by block
    (the positions are few; a full-length diff would be another copy of the column)."""
    out = [
        np.flatnonzero(test(np.diff(b))) + i * CHECK_BLOCK
        for i, b in enumerate(blocks(values, overlap=1))
    ]
    return np.concatenate(out) if out else np.empty(0, dtype=np.intp)


def ms_view(series: pd.Series) -> np.ndarray | None:
    """A ``datetime64[ms, UTC]`` column's int64 milliseconds without a copy (NaT is int64's
    minimum); None for any other dtype."""
    if str(series.dtype) != "datetime64[ms, UTC]":
        return None
    return series.array.asi8


def already_deduped(frame: pd.DataFrame, schema: DatasetSchema) -> bool:
    """Whether ``dedup`` would give ``frame``'s rows in ``frame``'s order (trades only).

    True when the rows are of one exchange and symbol, every ``trade_id`` is the text of its
    ``agg_trade_id`` (so the key is the aggregate id) and (time, aggregate id) strictly grows
    row after row: no key repeats, and the stable sort by ``schema.sort_columns`` keeps the
    order. Checked column by column in blocks, never copying the frame; anything else (a
    null, a Bybit UUID, one row out of order) answers False and the full dedup runs.
    """
    if schema.natural_key != ("exchange", "symbol", "trade_id"):
        return False
    if schema.sort_columns != _TRADES_ORDER or len(frame) < 2:
        return False
    times = frame["trade_time"]
    if str(times.dtype) != "datetime64[ms, UTC]" or times.isna().any():
        return False
    if not all(_constant_text(frame[c]) for c in ("exchange", "symbol")):
        return False
    ids = frame["agg_trade_id"].to_numpy()
    return (
        frame["agg_trade_id"].dtype == np.int64
        # ids strictly grow: unique, and ordered within a time
        and all(bool((np.diff(b) > 0).all()) for b in blocks(ids, overlap=1))
        and non_decreasing(times.array.asi8)
        and trade_ids_are_agg_ids(frame)
    )


def trade_ids_are_agg_ids(frame: pd.DataFrame) -> bool:
    """Whether every ``trade_id`` is the decimal text of its ``agg_trade_id`` (Binance's key):
    then the aggregate id is the key, unique exactly where it is. Compared in blocks through
    arrow, no Python string per row; False for a null, a Bybit UUID, a column not arrow text."""
    if "trade_id" not in frame.columns or frame["agg_trade_id"].dtype != np.int64:
        return False
    trade_ids = _arrow_text(frame["trade_id"])
    if trade_ids is None:
        return False
    for i, block in enumerate(blocks(frame["agg_trade_id"].to_numpy())):
        text = pc.cast(pa.array(block), trade_ids.type)
        if not pc.all(pc.equal(text, trade_ids.slice(i * CHECK_BLOCK, len(block)))).as_py():
            return False
    return True


def _arrow_text(series: pd.Series) -> pa.ChunkedArray | None:
    """An arrow-backed text column as its arrow data (no copy); None for any other column."""
    if not isinstance(series.dtype, pd.StringDtype) or series.dtype.storage != "pyarrow":
        return None
    data = series.array.__arrow_array__()  # the array's own arrow data (the arrow protocol)
    if not isinstance(data, pa.ChunkedArray):
        data = pa.chunked_array([data])
    return None if data.null_count else data


def _constant_text(series: pd.Series) -> bool:
    """One non-null value in every row (compared chunk by chunk, no copy)."""
    return constant_text(series) is not None


def constant_text(series: pd.Series) -> str | None:
    """The one value of an arrow text column holding it in every row, else None (compared
    chunk by chunk, no copy)."""
    data = _arrow_text(series)
    if data is None or len(data) == 0:
        return None
    first = data[0]
    same = all(pc.all(pc.equal(chunk, first)).as_py() for chunk in data.chunks if len(chunk))
    return first.as_py() if same else None


def conformed(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """``conform(frame, schema)``, without its copy of every column when ``frame`` already is
    conformed (the archive and lake readers give conformed frames): the same columns in the
    same order with the same dtypes, a default index and, for trades, every ``trade_id``."""
    if (
        list(frame.columns) == schema.column_names
        and isinstance(frame.index, pd.RangeIndex)
        and frame.index.start == 0
        and frame.index.step == 1
        and list(frame.dtypes) == list(_conformed_dtypes(schema))
        and not (schema.name == "trades" and frame["trade_id"].isna().any())
    ):
        return frame
    return conform(frame, schema)


_DTYPES: dict[str, pd.Series] = {}


def _conformed_dtypes(schema: DatasetSchema) -> pd.Series:
    key = f"{schema.name}.v{schema.version}"
    if key not in _DTYPES:
        _DTYPES[key] = schema.empty_frame().dtypes
    return _DTYPES[key]


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
            spec.keep_rows(conformed(answer.frame, spec.schema), window)
            if len(answer.frame.columns)
            else spec.schema.empty_frame()
        )
        got, bad, reasons = split_valid(got, spec.schema.name)
        attempt: dict = {"source": source.name, "rows": len(got), "ranges": len(missing)}
        attempt.update(answer.note)
        if len(bad):
            attempt["rejected"] = reasons
            for reason, n in reasons.items():
                rejected[reason] = rejected.get(reason, 0) + n
        before = spec.count_in_window(frame, window)
        if not got.empty:
            # nothing held yet: the answer alone is deduped (a concat would copy every row)
            both = pd.concat([frame, got], ignore_index=True) if len(frame) else got
            frame = dedup(both, spec.schema, keep)
            del both
        attempt["added"] = spec.count_in_window(frame, window) - before
        attempts.append(attempt)
        bad_ranges = spec.row_ranges(spec.in_window(bad, window))
        answered = [*answer.confirmed]
        if source.clears_ledger:
            answered += spec.implied_coverage(got, window)
        confirmed.extend(subtract_ranges(answer.confirmed, bad_ranges))
        extra = merge_ranges([*subtract_ranges(extra, answered), *bad_ranges])
    remaining = merge_ranges([*spec.missing(frame, window, confirmed), *extra])
    inside = spec.window_mask(frame, window)
    if not inside.all():  # only trades keep rows outside the window (id neighbours)
        frame = frame[inside]
    frame = frame.reset_index(drop=True)
    return FillResult(frame=frame, missing=remaining, attempts=attempts, rejected=rejected)
