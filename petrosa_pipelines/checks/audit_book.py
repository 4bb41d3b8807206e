"""Pure audit functions for depth, funding, freshness and three-way source reconciliation.

Same contract as ``audit``: plain frames in, ``CheckOutcome`` out, no Dagster. Funding is
judged on each instrument's own interval (``FundingInterval``): the venue's when its instrument
info reports one (``FundingIntervals``: a cache the funding asset fills through its REST
client, never a request from here), else the setting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import (
    LEVEL_COLUMNS,
    from_long,
    is_long,
    side_matrix,
)
from petrosa_pipelines.catalog.schemas import with_trade_ids
from petrosa_pipelines.checks.applicability import (
    NO_HISTORY_DATASETS,
    freshness_applicability,
    history_applicability,
    not_applicable,
)
from petrosa_pipelines.checks.audit import (
    CheckOutcome,
    _rows,
    ms_column,
    outcome,
    runs_to_ranges,
    time_ranges,
)
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.checks.venue import capabilities_of, ids_consecutive
from petrosa_pipelines.exchanges.base import Capabilities
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS, ms_to_iso

#: Binance stamps funding settlements a few ms after the hour (e.g. 1640995200006)
FUNDING_TOLERANCE_MS = 1_000


# --------------------------------------------------------------------------------------- depth
# Depth is one row per snapshot (schema version 2), each side's levels a list cell, best price
# first. The checks read the levels once as (snapshot x level) matrices (``side_matrix``), so a
# day of 86,400 snapshots x 20 levels a side is judged in vectorised passes, not as 3.5 M rows.
@dataclass(frozen=True)
class SideLevels:
    """One side of every snapshot: (snapshot x level) price and quantity matrices, NaN past a
    list's end, and how long each snapshot's price and quantity lists are."""

    prices: np.ndarray
    quantities: np.ndarray
    n_price: np.ndarray
    n_qty: np.ndarray

    @property
    def best(self) -> np.ndarray:
        """Each snapshot's best price (NaN: no level)."""
        if self.prices.shape[1] == 0:
            return np.full(self.prices.shape[0], np.nan)
        return self.prices[:, 0]


@dataclass(frozen=True)
class Book:
    """A depth partition read for its checks: per snapshot row (frame order) the time in ms,
    update id and source (None: no source column), and both sides' levels."""

    times: np.ndarray
    ids: np.ndarray
    source: np.ndarray | None
    bid: SideLevels
    ask: SideLevels


def _lengths(column: pd.Series) -> np.ndarray:
    cells = column.to_numpy(dtype=object)
    return np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))


def _head(column: pd.Series, width: int) -> np.ndarray:
    """The first ``width`` (0 or 1) values of each cell as an (n, width) matrix, NaN-padded:
    the best level without slicing every list (``side_matrix``'s cost on a day)."""
    cells = column.to_numpy(dtype=object)
    if width == 0:
        return np.empty((len(cells), 0))
    first = (c[0] if len(c) else np.nan for c in cells)
    return np.fromiter(first, dtype=np.float64, count=len(cells))[:, None]


def side_levels(frame: pd.DataFrame, side: str, width: int | None = None) -> SideLevels:
    """``side``'s level matrices; each list read to its own length, so a price list longer
    than its quantity list (or shorter) shows as NaN where the other has none."""
    price_col, qty_col = LEVEL_COLUMNS[side]
    n_price, n_qty = _lengths(frame[price_col]), _lengths(frame[qty_col])
    if width is not None and width <= 1:
        prices, quantities = _head(frame[price_col], width), _head(frame[qty_col], width)
    elif np.array_equal(n_price, n_qty):
        prices, quantities = side_matrix(frame, side, width)
    else:  # ``side_matrix`` cuts both lists at the price list's length
        if width is None:
            width = int(max(n_price.max(), n_qty.max()))
        prices = side_matrix(frame.assign(**{qty_col: frame[price_col]}), side, width)[0]
        quantities = side_matrix(frame.assign(**{price_col: frame[qty_col]}), side, width)[1]
    return SideLevels(prices, quantities, n_price, n_qty)


def read_book(frame: pd.DataFrame, width: int | None = None) -> Book:
    """A depth frame (version 2; a version 1 frame from an old caller is converted) for the
    checks; ``width``: levels read per side (1: best prices only)."""
    if is_long(frame):
        frame = from_long(frame)
    return Book(
        ms_column(frame, "snapshot_time"),
        frame["last_update_id"].to_numpy(dtype=np.int64),
        frame["source"].to_numpy(dtype=object) if "source" in frame.columns else None,
        side_levels(frame, "bid", width),
        side_levels(frame, "ask", width),
    )


@dataclass(frozen=True)
class Snapshots:
    """A partition's book samples in time order, one per snapshot time: update id, best bid,
    best ask (NaN: that side empty) and source (None: unknown)."""

    times: np.ndarray
    ids: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    source: np.ndarray | None


def snapshots(frame: pd.DataFrame | Book, prices: bool = True) -> Snapshots:
    """The samples of a depth partition in time order (``prices=False``: a frame's levels are
    not read, the best prices are NaN; the update ids need none).

    Rows sharing a time (a duplicate, which the suite's uniqueness reports) are judged as one
    sample, as the long layout grouped them: the highest update id and bid, the lowest ask.
    """
    book = frame if isinstance(frame, Book) else read_book(frame, width=int(prices))
    t, ids, bid, ask, src = book.times, book.ids, book.bid.best, book.ask.best, book.source
    if t.size < 2 or bool((np.diff(t) > 0).all()):
        return Snapshots(t, ids, bid, ask, src)
    order = np.argsort(t, kind="stable")
    t, ids, bid, ask = t[order], ids[order], bid[order], ask[order]
    first = np.flatnonzero(np.r_[True, np.diff(t) != 0])
    return Snapshots(
        t[first],
        np.maximum.reduceat(ids, first),
        np.fmax.reduceat(bid, first),
        np.fmin.reduceat(ask, first),
        None if src is None else src[order][first],
    )


#: how fast a restarted book numbering can climb back: at most one message a ms (Bybit's
#: fastest book topic pushes every 10 ms: https://bybit-exchange.github.io/docs/v5/websocket/
#: public/orderbook), so a spliced-in book with a venue's usual large ids is never a restart
RESTART_IDS_PER_MS = 1


def book_restarts(
    ids: np.ndarray, times_ms: np.ndarray, capabilities: Capabilities | None
) -> np.ndarray:
    """Positions of samples where the venue restarted its book numbering (a bool mask).

    Only a venue that sends its book snapshots in the stream can restart it there
    (``Capabilities.book_snapshot_in_stream``; Bybit: "if you receive a new snapshot message
    with u=1, reset your local orderbook", https://bybit-exchange.github.io/docs/v5/websocket/
    public/orderbook). Such a snapshot replaces the book whatever its id, so the samples' id
    falls back; it counts from 1 again, so the id after the fall is no more than the messages
    the restarted book can have seen since the previous sample.
    """
    restart = np.zeros(ids.size, dtype=bool)
    if capabilities is None or not capabilities.book_snapshot_in_stream or ids.size < 2:
        return restart
    back = np.diff(ids) < 0
    reachable = ids[1:] <= 1 + np.diff(times_ms) * RESTART_IDS_PER_MS
    restart[1:] = back & reachable
    return restart


def depth_sequence(
    frame: pd.DataFrame | Book,
    ledger: Sequence[Mapping[str, Any]] = (),
    limit: int = 10,
    capabilities: Capabilities | None = None,
) -> CheckOutcome:
    """The book's update id never goes back between samples; resyncs and restarts counted.

    A backwards id means samples from two books were spliced (wrong data), except where the
    venue restarted its book numbering with an in-stream snapshot (``book_restarts``): that is
    the book as the venue published it, counted and listed in ``book_restarts``. A resync
    recorded by the ingest after a ``pu`` break is the book healing itself and is only counted.
    Ids are compared within one source's run of samples only: a venue numbers each book topic
    on its own (Bybit's websocket ``orderbook.50`` and its daily ``ob200`` files), so the id at
    a switch between the websocket and the archive says nothing.
    """
    snaps = snapshots(frame, prices=False)
    if snaps.times.size == 0:
        return outcome("depth_sequence", "ERROR", "validity", 0, 0, breaks_recorded=len(ledger))
    ids, times = snaps.ids, snaps.times
    restart = book_restarts(ids, times, capabilities)
    backwards = np.r_[False, np.diff(ids) < 0] & ~restart
    if snaps.source is not None:
        src = snaps.source
        backwards &= np.r_[False, src[1:] == src[:-1]]
    back = np.flatnonzero(backwards)

    def step(i: int) -> dict[str, Any]:
        return {
            "snapshot_time": ms_to_iso(int(times[i])),
            "update_id": int(ids[i]),
            "previous_update_id": int(ids[i - 1]),
        }

    causes = [str(g.get("cause", "")) for g in ledger]
    result = outcome(
        "depth_sequence",
        "ERROR",
        "validity",
        max(len(ids) - 1, 0),
        back.size,
        [step(i) for i in back[:limit]],
        limit,
        backwards_update_ids=back.size,
        book_restarts=int(restart.sum()),
        sequence_breaks_recorded=causes.count("sequence_break"),
        resyncs_recorded=causes.count("resync"),
    )
    if not restart.any():
        return result
    restarts = [step(int(i)) for i in np.flatnonzero(restart)[:limit]]
    note = f"{int(restart.sum())} book restart(s) by the venue (update ids numbered afresh)"
    return replace(result, note=note, extra={"book_restarts": restarts})


def depth_crossed(frame: pd.DataFrame | Book, limit: int = 10) -> CheckOutcome:
    """Best bid < best ask in every snapshot that has both sides."""
    snaps = snapshots(frame)
    if snaps.times.size == 0:
        return outcome("depth_not_crossed", "ERROR", "validity", 0, 0)
    both = ~np.isnan(snaps.bid) & ~np.isnan(snaps.ask)
    bad = np.flatnonzero(both & (snaps.bid >= snaps.ask))
    examples = [
        {
            "snapshot_time": ms_to_iso(int(snaps.times[i])),
            "best_bid": float(snaps.bid[i]),
            "best_ask": float(snaps.ask[i]),
        }
        for i in bad[:limit]
    ]
    return outcome(
        "depth_not_crossed",
        "ERROR",
        "validity",
        int(both.sum()),
        bad.size,
        examples,
        limit,
        crossed_snapshots=bad.size,
    )


def _level_faults(levels: SideLevels, side: str) -> dict[str, np.ndarray]:
    """(snapshot x level) masks: misordered (a bid not below the level before it, an ask not
    above), nonpositive (price or quantity not > 0; NaN inside a list offends) and unpaired
    (a price without a quantity or the reverse: the lists' lengths differ)."""
    p, q = levels.prices, levels.quantities
    level = np.arange(p.shape[1])
    held = level < np.maximum(levels.n_price, levels.n_qty)[:, None]
    unpaired = held & (level >= np.minimum(levels.n_price, levels.n_qty)[:, None])
    misordered = np.zeros(p.shape, dtype=bool)
    step = np.diff(p, axis=1)  # NaN (past a list's end, a missing price) compares False
    misordered[:, 1:] = step >= 0 if side == "bid" else step <= 0
    nonpositive = held & ~unpaired & ~((p > 0) & (q > 0))
    return {"misordered": misordered, "nonpositive": nonpositive, "unpaired": unpaired}


def depth_levels(frame: pd.DataFrame | Book, limit: int = 10) -> CheckOutcome:
    """Bids strictly falling, asks strictly rising, every level a price and a quantity > 0.

    A level is its position in the side's list (0 = best), so it cannot be misnumbered as a
    long row could; lists of different lengths are the wide layout's broken level instead
    (``unpaired``). Each level is a checked unit; examples name snapshot, side and level.
    """
    book = frame if isinstance(frame, Book) else read_book(frame)
    if book.times.size == 0:
        return outcome("depth_levels_ordered", "ERROR", "validity", 0, 0)
    sides = {"ask": book.ask, "bid": book.bid}  # the long rows' order: ask before bid
    faults = {s: _level_faults(lv, s) for s, lv in sides.items()}
    bad = {s: f["misordered"] | f["nonpositive"] | f["unpaired"] for s, f in faults.items()}
    rows = np.flatnonzero(bad["ask"].any(axis=1) | bad["bid"].any(axis=1))
    examples: list[dict[str, Any]] = []
    for row in rows[np.argsort(book.times[rows], kind="stable")]:
        if len(examples) >= limit:
            break
        for s, lv in sides.items():
            examples += [
                {
                    "snapshot_time": ms_to_iso(int(book.times[row])),
                    "side": s,
                    "level": int(i),
                    "price": float(lv.prices[row, i]),
                    "quantity": float(lv.quantities[row, i]),
                }
                for i in np.flatnonzero(bad[s][row])
            ]
    total = {k: sum(int(f[k].sum()) for f in faults.values()) for k in faults["bid"]}
    return outcome(
        "depth_levels_ordered",
        "ERROR",
        "validity",
        sum(int(np.maximum(lv.n_price, lv.n_qty).sum()) for lv in sides.values()),
        sum(int(b.sum()) for b in bad.values()),
        examples,
        limit,
        **total,
    )


def depth_coverage(
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    cadence_ms: int,
    min_coverage: float,
    limit: int = 10,
) -> CheckOutcome:
    """Share of cadence slots with a sample; uncovered stretches as ranges (not refillable)."""
    stop = min(end_ms, now_ms)
    n = max((stop - start_ms) // cadence_ms, 0)
    covered = np.zeros(n, dtype=bool)
    if len(frame) and n:
        slot = (np.unique(ms_column(frame, "snapshot_time")) - start_ms) // cadence_ms
        covered[slot[(slot >= 0) & (slot < n)]] = True
    missing = np.flatnonzero(~covered).astype(np.int64)
    starts, ends = runs_to_ranges(missing, 1)
    share = float(covered.mean()) if n else 1.0
    return CheckOutcome(
        "depth_coverage",
        share >= min_coverage,
        "WARN",
        "completeness",
        int(n),
        missing.size,
        {
            "coverage": share,
            "min_coverage": min_coverage,
            "cadence_ms": cadence_ms,
            "uncovered_ranges": starts.size,
            "uncovered_ms": int(missing.size * cadence_ms),
        },
        time_ranges(start_ms + starts * cadence_ms, start_ms + ends * cadence_ms, limit),
        score=share,
    )


# ------------------------------------------------------------------------------------- funding
#: where an instrument's funding interval came from: its venue's instrument info, the run's
#: config (an operator's override), or the setting (``PETROSA_FUNDING_INTERVAL_HOURS`` / 8 h)
INTERVAL_FROM_VENUE = "venue"
INTERVAL_FROM_CONFIG = "run config"
INTERVAL_FROM_SETTING = "setting"
#: materialisation metadata keys the funding asset records its interval under (the check reads
#: them back: the partition is judged on the grid it was filled to)
INTERVAL_HOURS_KEY = "funding_interval_hours"
INTERVAL_SOURCE_KEY = "funding_interval_source"
INTERVAL_NOTE_KEY = "funding_interval_note"


@dataclass(frozen=True)
class FundingInterval:
    """One instrument's funding interval, where it came from, and why not the venue's (note)."""

    hours: int
    source: str = INTERVAL_FROM_SETTING
    note: str = ""

    def metadata(self) -> dict[str, Any]:
        """The materialisation metadata entries that record it (``from_metadata`` reads them)."""
        out: dict[str, Any] = {INTERVAL_HOURS_KEY: self.hours, INTERVAL_SOURCE_KEY: self.source}
        if self.note:
            out[INTERVAL_NOTE_KEY] = self.note
        return out

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any] | None, fallback_hours: int
    ) -> FundingInterval:
        """The interval a funding partition was materialised with (its metadata, Dagster
        values or plain) when it was the venue's or the run's; the setting ``fallback_hours``
        when the build fell back to its setting (its note kept), or recorded none (a note)."""
        meta = metadata or {}

        def value(key: str) -> Any:
            v = meta.get(key)
            return getattr(v, "value", v)

        hours, source = value(INTERVAL_HOURS_KEY), value(INTERVAL_SOURCE_KEY)
        note = str(value(INTERVAL_NOTE_KEY) or "")
        numeric = isinstance(hours, int | float) and not isinstance(hours, bool)
        if numeric and valid_hours(hours) and source in (INTERVAL_FROM_VENUE, INTERVAL_FROM_CONFIG):
            return cls(int(hours), str(source), note)
        if numeric and source == INTERVAL_FROM_SETTING:
            return cls(fallback_hours, INTERVAL_FROM_SETTING, note)  # this check's setting
        return cls(
            fallback_hours,
            INTERVAL_FROM_SETTING,
            f"the partition's build recorded no funding interval (built before intervals were "
            f"per instrument, or not built): judged on the {fallback_hours} h setting",
        )


def valid_hours(hours: float) -> bool:
    """A funding interval the checks can lay a daily grid with: whole hours dividing 24."""
    return float(hours).is_integer() and 1 <= hours <= 24 and 24 % int(hours) == 0


def intervals_from_info(info: Any) -> dict[str, int | None]:
    """Symbol -> funding interval in ms (None: the venue does not say) of an ``ExchangeInfo``."""
    return {s.symbol: getattr(s, "funding_interval_ms", None) for s in info.symbols}


class FundingIntervals:
    """Per-instrument funding intervals from each venue's instrument info, cached per key.

    ``interval(key, venue, symbol, fallback_hours, fetch)``: ``fetch()`` returns the venue's
    ``{symbol: interval ms or None}`` (``intervals_from_info(client.exchange_info())``); it is
    called at most once per ``ttl_s`` per key (a venue and its endpoint), and after a failure
    not again for ``retry_s`` (an outage costs one failed request, not one per partition). The
    interval is the venue's when it reports one (Bybit's ``fundingInterval``), else
    ``fallback_hours``: silently when the venue reports none for any symbol (Binance USD-M's
    exchangeInfo has no interval), with a note when the fetch failed, the symbol is not listed
    or its interval is not a whole number of hours dividing the day.
    """

    def __init__(
        self,
        ttl_s: float = 3600.0,
        retry_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl_s, self.retry_s, self._clock = ttl_s, retry_s, clock
        self._cache: dict[Any, tuple[float, dict[str, int | None] | None, str]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def table(
        self, key: Any, fetch: Callable[[], Mapping[str, int | None]]
    ) -> tuple[dict[str, int | None] | None, str]:
        """(symbol -> interval ms, "") or (None, why the fetch failed), from the cache if fresh."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1], hit[2]
        self.fetches += 1
        try:
            table, error = dict(fetch()), ""
        except Exception as e:  # noqa: BLE001 - any failure falls back, said in a note
            table, error = None, f"{type(e).__name__}: {e}"[:300]
        with self._lock:
            ttl = self.ttl_s if table is not None else self.retry_s
            self._cache[key] = (now + ttl, table, error)
        return table, error

    def interval(
        self,
        key: Any,
        venue: str,
        symbol: str,
        fallback_hours: int,
        fetch: Callable[[], Mapping[str, int | None]],
    ) -> FundingInterval:
        table, error = self.table(key, fetch)
        if table is None:
            return FundingInterval(
                fallback_hours,
                INTERVAL_FROM_SETTING,
                f"{venue} instrument info unavailable ({error}): {symbol} judged on the "
                f"{fallback_hours} h setting",
            )
        if not table:
            return FundingInterval(
                fallback_hours,
                INTERVAL_FROM_SETTING,
                f"{venue} instrument info listed no instrument: {symbol} judged on the "
                f"{fallback_hours} h setting",
            )
        if not any(table.values()):  # the venue reports no interval (Binance USD-M)
            return FundingInterval(fallback_hours, INTERVAL_FROM_SETTING)
        if symbol not in table:
            return FundingInterval(
                fallback_hours,
                INTERVAL_FROM_SETTING,
                f"{symbol} is not in {venue}'s instrument info: judged on the "
                f"{fallback_hours} h setting",
            )
        ms = table[symbol]
        if not ms:
            return FundingInterval(
                fallback_hours,
                INTERVAL_FROM_SETTING,
                f"{venue} reports no funding interval for {symbol} (not a perpetual?): "
                f"judged on the {fallback_hours} h setting",
            )
        hours = ms / HOUR_MS
        if not valid_hours(hours):
            return FundingInterval(
                fallback_hours,
                INTERVAL_FROM_SETTING,
                f"{venue} reports a {ms / MINUTE_MS:g} min funding interval for {symbol}, not "
                f"whole hours dividing the day: judged on the {fallback_hours} h setting",
            )
        return FundingInterval(int(hours), INTERVAL_FROM_VENUE)


def funding_schedule(
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    interval_hours: int | FundingInterval,
    limit: int = 10,
) -> CheckOutcome:
    """Settlements exactly on the symbol's funding grid (a few ms late allowed), none missing.

    ``interval_hours``: the instrument's interval (a ``FundingInterval`` says where it came
    from; its source, and its note when it is not the venue's, go into the metadata)."""
    interval = (
        interval_hours
        if isinstance(interval_hours, FundingInterval)
        else FundingInterval(int(interval_hours))
    )
    interval_hours = interval.hours
    step = interval_hours * HOUR_MS
    expected = np.arange(start_ms, min(end_ms, now_ms - FUNDING_TOLERANCE_MS + 1), step)
    times = np.sort(ms_column(frame, "funding_time")) if len(frame) else np.empty(0, np.int64)
    nominal = start_ms + np.round((times - start_ms) / step).astype(np.int64) * step
    off_grid = np.abs(times - nominal) > FUNDING_TOLERANCE_MS
    missing = np.setdiff1d(expected, nominal[~off_grid])
    examples = [{"missing_settlement": ms_to_iso(int(t))} for t in missing[:limit]]
    examples += [{"off_grid": ms_to_iso(int(t))} for t in times[off_grid][:limit]]
    result = outcome(
        "funding_interval_respected",
        "ERROR",
        "completeness",
        expected.size,
        missing.size + int(off_grid.sum()),
        examples,
        limit,
        expected_settlements=expected.size,
        missing_settlements=missing.size,
        off_grid=int(off_grid.sum()),
        interval_hours=interval_hours,
    )
    return replace(result, extra={"interval_source": interval.source}, note=interval.note)


def funding_rates(frame: pd.DataFrame, floor: float, cap: float, limit: int = 10) -> CheckOutcome:
    """Every rate within the exchange's floor and cap (NaN offends)."""
    r = frame["funding_rate"].to_numpy()
    bad = ~((r >= floor) & (r <= cap))
    idx = np.flatnonzero(bad)
    return outcome(
        "funding_rate_within_bounds",
        "ERROR",
        "validity",
        len(frame),
        idx.size,
        _rows(frame, idx, ["funding_time", "funding_rate"], limit),
        limit,
        above_cap=int((r > cap).sum()),
        below_floor=int((r < floor).sum()),
    )


def mark_price_sources(caps: Capabilities | None) -> frozenset[str] | None:
    """The funding sources whose rows must carry a mark price (None: unknown venue, where
    every source but the archive must, Binance's rule before venues declared it)."""
    return None if caps is None else caps.funding_mark_price_sources


def funding_mark_price(
    frame: pd.DataFrame, limit: int = 10, capabilities: Capabilities | None = None
) -> CheckOutcome:
    """Mark price present and > 0 where the row's source has one.

    Which sources have one is the venue's declaration (``Capabilities.funding_mark_price_sources``):
    Binance's fundingRate answers and markPrice stream do, its Vision archive does not; Bybit's
    tickers do, its REST funding history does not. Rows of other sources are excused and the
    result says how many, from which source.
    """
    source = frame["source"].astype(str).to_numpy()
    declared = mark_price_sources(capabilities)
    if declared is None:
        held = source != "archive"
    else:
        held = np.isin(source, sorted(declared))
    m = frame["mark_price"].to_numpy(dtype=float)
    missing = ~(m > 0)
    idx = np.flatnonzero(held & missing)
    excused = ~held & missing
    by_source = {str(k): int(v) for k, v in pd.Series(source[excused]).value_counts().items()}
    result = outcome(
        "funding_mark_price_present",
        "WARN",
        "validity",
        int(held.sum()),
        idx.size,
        _rows(frame, idx, ["funding_time", "mark_price", "source"], limit),
        limit,
        archive_rows_without_mark=by_source.get("archive", 0),
        rows_excused=int(excused.sum()),
    )
    if not by_source:
        return result
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_source.items()))
    note = f"not held to a mark price: {kinds} row(s), a source the venue publishes none in"
    extra = {"excused_without_mark": by_source}
    if declared is not None:
        extra["sources_with_mark"] = sorted(declared)
    return replace(result, note=note, extra=extra)


# ----------------------------------------------------------------------------------- freshness
def freshness(
    frame: pd.DataFrame,
    time_column: str,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    max_lag_ms: int,
    step_ms: int = MINUTE_MS,
    grid: bool = False,
) -> CheckOutcome:
    """The newest row is no more than ``max_lag_ms`` behind the newest row that could exist.

    Only the open (today's) partition is judged, against "now": on a closed day it is not
    applicable (its completeness checks judge it). The score decays linearly from 1 at the
    allowed lag to 0 at ten times it.
    """
    stop = min(end_ms, now_ms)
    newest_expected = stop - step_ms
    if grid:  # funding: the last settlement on the grid before ``stop``
        newest_expected = (
            start_ms + max((stop - FUNDING_TOLERANCE_MS - start_ms) // step_ms, 0) * step_ms
        )
    newest = int(ms_column(frame, time_column).max()) if len(frame) else None
    lag = (newest_expected - newest) if newest is not None else stop - start_ms
    lag = max(int(lag), 0)
    score = 1.0 if lag <= max_lag_ms else max(0.0, 1.0 - (lag - max_lag_ms) / (9 * max_lag_ms))
    result = CheckOutcome(
        "fresh",
        lag <= max_lag_ms,
        "WARN",
        "freshness",
        1,
        int(lag > max_lag_ms),
        {"lag_s": lag / 1000, "max_lag_s": max_lag_ms / 1000},
        [
            {
                "newest": ms_to_iso(newest) if newest is not None else None,
                "newest_expected": ms_to_iso(max(newest_expected, start_ms)),
            }
        ]
        if lag > max_lag_ms
        else [],
        score=score,
    )
    closed = freshness_applicability(end_ms, now_ms)
    return result if closed.applicable else not_applicable(result, closed.reason)


# ------------------------------------------------------------------------------ reconciliation
_COMPARE = {
    "candles": (("open_time",), ("open", "high", "low", "close", "volume", "trade_count")),
    "trades": (("agg_trade_id",), ("price", "quantity", "first_trade_id", "last_trade_id")),
}
#: trades of venues whose ids are not consecutive: matched by the venue's own id (one Bybit
#: trade has another aggregate id in the archive than in the websocket)
_COMPARE_BY_TRADE_ID = (("trade_id",), ("price", "quantity"))


def reconcile(
    dataset: str,
    frames: Mapping[str, pd.DataFrame],
    time_column: str,
    limit: int = 10,
    capabilities: Capabilities | None = None,
) -> CheckOutcome:
    """Websocket vs REST vs archive rows where their time ranges overlap.

    For each pair of sources: row counts inside the overlap, keys only one side has, and
    value equality on the shared keys (OHLCV for candles; price, quantity and trade-id span for
    trades, plus trade-id continuity of each side inside the overlap). Where the venue's trade
    ids are not consecutive (``capabilities``, else the rows' venue) trades are matched by
    ``trade_id`` on price and quantity, and no id gap is counted.
    """
    present = {k: f for k, f in frames.items() if f is not None and len(f)}
    by_id = True
    if dataset == "trades":
        present = {k: with_trade_ids(f) for k, f in present.items()}
        first = next(iter(present.values()), None)
        by_id = ids_consecutive(capabilities_of(first, capabilities=capabilities))
    key_cols, value_cols = _COMPARE[dataset] if by_id else _COMPARE_BY_TRADE_ID
    pairs, offending, checked, examples = {}, 0, 0, []
    names = sorted(present)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = present[a], present[b]
            ta, tb = ms_column(fa, time_column), ms_column(fb, time_column)
            lo, hi = max(ta.min(), tb.min()), min(ta.max(), tb.max())
            if lo > hi:
                continue
            sa, sb = fa[(ta >= lo) & (ta <= hi)], fb[(tb >= lo) & (tb <= hi)]
            merged = sa.merge(
                sb, on=list(key_cols), how="outer", suffixes=("_a", "_b"), indicator=True
            )
            only = merged["_merge"] != "both"
            both = merged[~only]
            diff = np.zeros(len(both), dtype=bool)
            for c in value_cols:
                diff |= ~np.isclose(
                    both[f"{c}_a"].to_numpy(float),
                    both[f"{c}_b"].to_numpy(float),
                    rtol=1e-12,
                    atol=0,
                )
            gaps = 0
            if dataset == "trades" and by_id:
                gaps = sum(
                    int((np.diff(np.sort(s["agg_trade_id"].to_numpy())) > 1).sum())
                    for s in (sa, sb)
                )
            bad = int(only.sum()) + int(diff.sum()) + gaps
            pair = f"{a}~{b}"
            pairs[pair] = {
                "rows_" + a: len(sa),
                "rows_" + b: len(sb),
                "only_one_side": int(only.sum()),
                "value_mismatches": int(diff.sum()),
                "id_gaps": gaps,
                "overlap": [ms_to_iso(int(lo)), ms_to_iso(int(hi))],
            }
            checked += len(merged)
            offending += bad
            for _, row in pd.concat([merged[only], both[diff]]).head(limit).iterrows():
                issue = "value mismatch" if row["_merge"] == "both" else f"only in {row['_merge']}"
                examples.append(
                    {
                        "pair": pair,
                        **{k: _plain(row[k]) for k in key_cols},
                        "issue": issue.replace("left_only", a).replace("right_only", b),
                    }
                )
    result = outcome(
        f"{dataset}_sources_agree",
        "WARN",
        "consistency",
        checked,
        offending,
        examples,
        limit,
        sources_compared=len(present),
        pairs_overlapping=len(pairs),
    )
    if not pairs:
        return replace(result, note="fewer than two sources overlap")
    return replace(result, extra={"pairs": pairs})


def _plain(v: Any) -> Any:
    if isinstance(v, pd.Timestamp):
        return ms_to_iso(int(v.value // 1_000_000))
    return v.item() if isinstance(v, np.generic) else v


def has_depth_history(caps: Capabilities | None) -> bool:
    """Whether the venue keeps book history anywhere (unknown venue: no, as Binance)."""
    return caps is not None and caps.depth_history


def audit_depth(
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    settings: AuditSettings,
    ledger: Sequence[Mapping[str, Any]] = (),
    capabilities: Capabilities | None = None,
) -> list[CheckOutcome]:
    """Every depth check on one partition (``capabilities``: the venue's, None: unknown)."""
    lim = settings.examples_limit
    book = read_book(frame)  # the levels read once for every check
    return [
        depth_sequence(book, ledger, lim, capabilities),
        depth_crossed(book, lim),
        depth_levels(book, lim),
        depth_coverage(
            frame,
            start_ms,
            end_ms,
            now_ms,
            settings.depth_cadence_ms,
            settings.depth_min_coverage,
            lim,
        ),
    ]


def audit_funding(
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    settings: AuditSettings,
    capabilities: Capabilities | None = None,
    interval: FundingInterval | None = None,
) -> list[CheckOutcome]:
    """Every funding check on one partition (``capabilities``: the venue's, None: unknown;
    ``interval``: the instrument's, None: the ``funding_interval_hours`` setting)."""
    lim = settings.examples_limit
    interval = interval or FundingInterval(settings.funding_interval_hours)
    return [
        funding_schedule(frame, start_ms, end_ms, now_ms, interval, lim),
        funding_rates(frame, settings.funding_rate_floor, settings.funding_rate_cap, lim),
        funding_mark_price(frame, lim, capabilities),
    ]


def audit_dataset(
    dataset: str,
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    settings: AuditSettings,
    ledger: Sequence[Mapping[str, Any]] = (),
    ingest_started_ms: int | None = None,
    *,
    candles: pd.DataFrame | None = None,
    exchange: str | None = None,
    capabilities: Capabilities | None = None,
    funding_interval: FundingInterval | None = None,
) -> list[CheckOutcome]:
    """Every single-dataset check of one partition, freshness included (no GX, no cross checks).

    ``funding_interval``: the instrument's funding interval (``FundingInterval.from_metadata``
    of the partition's build, which took it from the venue's instrument info); None: the
    ``funding_interval_hours`` setting.

    What the venue guarantees decides what is judged (``capabilities``, else those of
    ``exchange`` (the partition's storage name) or of the rows' exchange): trades are held
    against the day's 1m ``candles`` where their ids prove nothing (``audit_trades``), and
    ``ingest_started_ms`` (the first landed frame, ``applicability.ingest_started_ms``) decides
    whether depth can have data here unless the venue has book history: where it cannot, every
    outcome is "not applicable" with the reason; on the day the ingest started, coverage counts
    from then.
    """
    from petrosa_pipelines.checks.audit import audit_candles, audit_trades

    caps = capabilities_of(frame, exchange, capabilities)
    lag = settings.freshness_max_lag_s * 1000
    no_history = tuple(
        d for d in NO_HISTORY_DATASETS if not (d == "depth" and has_depth_history(caps))
    )
    app = history_applicability(
        dataset, start_ms, end_ms, len(frame), ingest_started_ms, no_history=no_history
    )
    if dataset == "candles":
        outs = audit_candles(frame, start_ms, end_ms, now_ms, settings)
        fresh = freshness(frame, "open_time", start_ms, end_ms, now_ms, lag)
    elif dataset == "trades":
        window = (start_ms, end_ms, now_ms)
        outs = audit_trades(frame, settings, candles=candles, window=window, capabilities=caps)[1]
        fresh = freshness(frame, "trade_time", start_ms, end_ms, now_ms, lag, step_ms=0)
    elif dataset == "depth":
        judged_from = app.from_ms if app.from_ms is not None else start_ms
        outs = audit_depth(frame, judged_from, end_ms, now_ms, settings, ledger, caps)
        if app.from_ms is not None:
            outs = [
                replace(o, note=f"{app.reason} (the ingest started then)")
                if o.name == "depth_coverage"
                else o
                for o in outs
            ]
        fresh = freshness(
            frame, "snapshot_time", start_ms, end_ms, now_ms, lag, step_ms=settings.depth_cadence_ms
        )
    elif dataset == "funding":
        interval = funding_interval or FundingInterval(settings.funding_interval_hours)
        outs = audit_funding(frame, start_ms, end_ms, now_ms, settings, caps, interval)
        step = interval.hours * HOUR_MS
        fresh = freshness(frame, "funding_time", start_ms, end_ms, now_ms, lag, step, grid=True)
    else:
        raise ValueError(f"no audit for dataset {dataset!r}")
    outs = [*outs, fresh]
    if not app.applicable:
        return [not_applicable(o, app.reason) for o in outs]
    return outs
