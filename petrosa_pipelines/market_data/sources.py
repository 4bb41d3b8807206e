"""The history sources a partition is filled from: landing zone, archives, REST.

Thin adapters from each client's API to ``HistorySource``; the order they are tried in is
decided by ``sources_for`` and nowhere else. Which sources exist for a dataset, how far back
REST reaches and whether trades can be repaired by id are the venue's declared capabilities
(``exchanges/base.py``: ``Capabilities``), asked by the venue's storage name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.schemas import DATASETS, with_trade_ids
from petrosa_pipelines.exchanges import adapter_class
from petrosa_pipelines.exchanges.base import (
    Capabilities,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    Source,
)
from petrosa_pipelines.lake import LakeFile
from petrosa_pipelines.landing.book import BookSample, BookSync
from petrosa_pipelines.landing.store import (
    DEFAULT_DEPTH_CADENCE_MS,
    DEFAULT_DEPTH_TOP_N,
    depth_samples_to_frame,
    record_time,
)
from petrosa_pipelines.lib.timeutil import merge_ranges, ms_to_iso
from petrosa_pipelines.market_data.fill import (
    HistorySource,
    PartitionWindow,
    Range,
    SourceAnswer,
    blocks,
    constant_text,
    non_decreasing,
    subtract_ranges,
    trade_ids_are_agg_ids,
)


def _without_receipt_time(frame: pd.DataFrame) -> pd.DataFrame:
    """History rows carry no receipt time, so re-materialising gives identical rows.

    A frame that has none already (an archive's) is returned as is, and otherwise only the
    column is replaced (``assign`` shares the other columns): a day of trades is not copied.
    """
    if "received_at" not in frame.columns or frame["received_at"].isna().all():
        return frame
    return frame.assign(received_at=pd.NaT)


class LandingSource(HistorySource):
    """What the websocket ingest landed; it confirms nothing beyond its own rows, and its rows
    cannot clear a gap the ingest itself recorded."""

    name = Source.WS.value

    def __init__(self, store: Any, exchange: str, dataset: str):
        self.store, self.exchange, self.dataset = store, exchange, dataset

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        frame = self.store.read_frame(
            self.exchange, self.dataset, window.symbol, window.start_ms, window.end_ms
        )
        return SourceAnswer(frame=frame, confirmed=[])


_ARCHIVE_METHODS = {
    "candles": "daily_klines",
    "trades": "daily_agg_trades",
    "funding": "daily_funding",
}


class WrongDayError(ValueError):
    """A source answered for a day with rows of another day: nothing in it is trusted."""


def _time_span(frame: pd.DataFrame, dataset: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    col = DATASETS[dataset].time_column
    if frame.empty or col not in frame.columns:
        return None
    times = frame[col]
    if not (isinstance(times.dtype, pd.DatetimeTZDtype) and str(times.dtype.tz) == "UTC"):
        times = pd.to_datetime(times, utc=True)  # a UTC column as is: no copy of a day
    return times.min(), times.max()


def check_day(frame: pd.DataFrame, dataset: str, window: PartitionWindow, what: str) -> None:
    """Raise ``WrongDayError`` unless every row of ``frame`` lies inside ``window``'s day."""
    span = _time_span(frame, dataset)
    if span is None:
        return
    start = pd.Timestamp(window.start_ms, unit="ms", tz="UTC")
    end = pd.Timestamp(window.end_ms, unit="ms", tz="UTC")
    lo, hi = span
    if pd.isna(lo) or lo < start or hi >= end:
        raise WrongDayError(
            f"{what} for {window.day.isoformat()} holds rows from {lo} to {hi}: not that day's "
            "data, nothing in it is used"
        )


class ArchiveSource(HistorySource):
    """Daily archives (checksum-verified where the venue publishes checksums); only closed days
    are published.

    A checksum proves the bytes are what was published, not that they hold the day: the rows
    must all lie inside the day (else the whole file is refused as another day's), candles
    prove only the minutes they hold, and an empty file proves nothing.
    """

    name = Source.ARCHIVE.value
    clears_ledger = True

    def __init__(self, client: Any, dataset: str):
        self.client, self.dataset = client, dataset

    def available(self, window: PartitionWindow) -> bool:
        return window.closed

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        frame = getattr(self.client, _ARCHIVE_METHODS[self.dataset])(window.symbol, window.day)
        if frame is None or frame.empty:  # not published (yet), or empty: confirms nothing
            return SourceAnswer(frame=pd.DataFrame(), confirmed=[])
        check_day(frame, self.dataset, window, f"{self.dataset} archive")
        # candles: 1440 closed candles are the proof, their own rows; funding: a non-empty
        # file of the day stands for the day (each settlement is still checked); trades: ids
        # prove the inside, the edges are proven only where the rows reach them
        if self.dataset == "candles":
            confirmed: list[Range] = []
        elif self.dataset == "trades":
            confirmed = trade_edges_reached(frame, window)
        else:
            confirmed = [(window.start_ms, window.end_ms)]
        return SourceAnswer(frame=_without_receipt_time(frame), confirmed=confirmed)


#: an edge of a day of trades is reached when the nearest trade is closer to it than this many
#: typical gaps between trades (a Poisson market leaves 50 mean gaps empty with p ~ e^-50)
EDGE_GAPS = 50
#: ... or than this, whatever the typical gap
EDGE_MIN_MS = 60_000


def trade_edges_reached(frame: pd.DataFrame, window: PartitionWindow) -> list[Range]:
    """The day minus the head and tail its trades do not reach.

    A whole-day trades file proves its inside by consecutive ids, but only its rows can show it
    was not cut short: a file that stops at noon leaves the afternoon missing (to be proven by
    a trade id after the day's end from REST, or reported), whatever its checksum says.
    """
    ms = frame["trade_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    if len(ms) == 0:
        return []
    if not non_decreasing(ms):  # an archive day is in time order: no sorted copy then
        ms = np.sort(ms)
    # the gaps are partitioned in place for their median: one array of a day's length
    typical = (
        float(np.median(np.diff(ms), overwrite_input=True))
        if len(ms) > 1
        else float(window.end_ms - window.start_ms)
    )
    reach = max(EDGE_MIN_MS, EDGE_GAPS * typical)
    lo = window.start_ms if ms[0] - window.start_ms <= reach else int(ms[0]) + 1
    hi = window.end_ms if window.end_ms - ms[-1] <= reach else int(ms[-1])
    return [(lo, hi)] if hi > lo else []


#: the archive client's method giving one day of order-book history (snapshot and delta
#: records in the venue's order, ``None`` when the day has no file)
BOOK_ARCHIVE_METHOD = "daily_book_records"


class ArchiveMissingError(LookupError):
    """The archive the venue declares has no file for a closed day: a source failure, never a
    quiet (empty) day."""


class BookArchiveSource(HistorySource):
    """Depth from the venue's daily order-book history (a snapshot, then every delta), for
    venues that declare one (``Capabilities.depth_history`` with a depth ``ArchiveSpec``).

    The day's book is replayed through the landing rebuild's own book (``landing.book.BookSync``:
    the ingest's sequence rules; a snapshot the venue sent in its stream replaces the book) and
    sampled at the same cadence and top N (``LandingStore.depth_cadence_ms``/``depth_top_n``), so
    an archive sample is the one the ingest would have taken. A sample is kept at every tick of
    the day where no held row has one: where the ingest landed, its rows (ws) win, and the
    archive fills the rest, each snapshot whole from one source. The answer confirms the spans
    over which the archive's book was known (from a snapshot to the last message before a
    sequence break or the file's end): a tick outside them (before the file's first message,
    after a break until the next snapshot, after the last message, since nothing proves the
    file was not cut there) stays missing. Only closed days are published; a closed day without
    a file raises ``ArchiveMissingError``, which the run's ``sources_tried`` names (and the kept
    partition, ``PreviousPartitionSource``, is not shrunk).
    """

    name = Source.ARCHIVE.value
    clears_ledger = True

    def __init__(
        self,
        client: Any,
        exchange: str,
        *,
        cadence_ms: int = DEFAULT_DEPTH_CADENCE_MS,
        top_n: int = DEFAULT_DEPTH_TOP_N,
        snapshot_in_stream: bool = True,
    ):
        self.client, self.exchange = client, exchange
        self.cadence_ms, self.top_n = cadence_ms, top_n
        self.snapshot_in_stream = snapshot_in_stream

    def available(self, window: PartitionWindow) -> bool:
        return window.closed

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        return self.fetch_for(window, missing, pd.DataFrame())

    def fetch_for(
        self, window: PartitionWindow, missing: list[Range], held: pd.DataFrame
    ) -> SourceAnswer:
        records = getattr(self.client, BOOK_ARCHIVE_METHOD)(window.symbol, window.day)
        if records is None:
            raise ArchiveMissingError(
                f"no order-book history file for {window.symbol} on {window.day.isoformat()} "
                "in the venue's archive (not published yet, or the symbol was not listed)"
            )
        held_ms = np.unique(_ms_values(held["snapshot_time"])) if len(held) else np.empty(0, "i8")
        try:
            replay = self._replay(records, window, held_ms, missing)
        finally:  # a file-backed generator stopped early: release it now
            getattr(records, "close", lambda: None)()
        if replay.messages and not replay.messages_in_day:
            raise WrongDayError(
                f"order-book history for {window.day.isoformat()} holds no message of that day: "
                "not that day's file, nothing in it is used"
            )
        frame = samples_frame(self.exchange, replay.samples, self.top_n, self.name)
        confirmed = [(max(a, window.start_ms), min(b, window.end_ms)) for a, b in replay.known]
        confirmed = [(a, b) for a, b in confirmed if b > a]
        note = {
            "book_messages": replay.messages,
            "book_syncs": replay.syncs,
            "sequence_breaks": replay.breaks,
            "samples": len(replay.samples),
            "cadence_ms": self.cadence_ms,
            "top_n": self.top_n,
            "spans": {
                "held": _iso_spans(_tick_spans(held_ms.tolist(), self.cadence_ms)),
                self.name: _iso_spans(
                    _tick_spans([s.snapshot_time for s in replay.samples], self.cadence_ms)
                ),
                "book_known": _iso_spans(confirmed),
                "not_in_archive": _iso_spans(subtract_ranges(missing, confirmed)),
            },
        }
        return SourceAnswer(frame=frame, confirmed=confirmed, note=note)

    def _replay(
        self,
        records: Iterable[Any],
        window: PartitionWindow,
        held_ms: np.ndarray,
        missing: list[Range],
    ) -> BookReplay:
        return replay_book_history(
            records,
            window,
            held_ms,
            cadence_ms=self.cadence_ms,
            top_n=self.top_n,
            snapshot_in_stream=self.snapshot_in_stream,
            until_ms=max((e for _, e in missing), default=None),
        )


def samples_frame(
    exchange: str, samples: list[BookSample], top_n: int, source: str
) -> pd.DataFrame:
    """Book samples as catalog DEPTH rows of ``source``, from the book's floats."""
    return depth_samples_to_frame(exchange, samples, top_n, source, floats=True)


def _ms_values(series: pd.Series) -> np.ndarray:
    return series.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _tick_spans(ticks: list[int], cadence_ms: int) -> list[Range]:
    """Sample times as runs of consecutive ticks, [first, last + cadence)."""
    return merge_ranges([(t, t + cadence_ms) for t in ticks])


def _iso_spans(ranges: list[Range], limit: int = 20) -> list[str]:
    out = [f"{ms_to_iso(s)}/{ms_to_iso(e)}" for s, e in ranges[:limit]]
    if len(ranges) > limit:
        out.append(f"... {len(ranges) - limit} more")
    return out


@dataclass
class BookReplay:
    """What one pass over a day's book history gave: the samples kept, the spans over which
    the book was known (``[sync, last message before a break or the end)``), and counts."""

    samples: list[BookSample] = field(default_factory=list)
    known: list[Range] = field(default_factory=list)
    messages: int = 0
    messages_in_day: int = 0
    syncs: int = 0
    breaks: int = 0


def replay_book_history(
    records: Iterable[Any],
    window: PartitionWindow,
    held_ms: np.ndarray,
    *,
    cadence_ms: int,
    top_n: int,
    snapshot_in_stream: bool,
    until_ms: int | None = None,
) -> BookReplay:
    """Replay a day's book ``records`` (in the venue's order) through ``BookSync`` and keep
    the samples inside ``window`` at ticks not in ``held_ms`` (sorted). One pass: a streamed
    file is never held whole.

    ``until_ms``: the end of the last range asked for. The book at a tick depends only on the
    messages before it, so the replay stops at the first message at or after it once the
    sampler has passed it (``_past``): repairing a day's first minute reads a minute of the
    file, not the day (a streamed Bybit day missing its first second replayed 172,800
    messages)."""
    sync = BookSync(window.symbol, cadence_ms=cadence_ms, top_n=top_n)
    lo, hi = window.start_ms, window.end_ms
    out = BookReplay()
    opened: int | None = None
    last = 0
    for rec in records:
        kind = type(rec)
        breaks = sync.breaks
        if kind is DepthUpdateRecord:
            batch = sync.on_diff(rec)[1]
        elif kind is DepthSnapshotRecord:
            batch = sync.on_snapshot(rec, in_stream=snapshot_in_stream)[1]
        else:
            continue
        t = record_time(rec)
        out.messages += 1
        out.messages_in_day += lo <= t < hi
        if sync.breaks != breaks:  # missed messages: the book is unknown until a snapshot
            if opened is not None:
                out.known.append((opened, last))
            opened = None
        elif sync.book.synced:
            opened = t if opened is None else opened
            last = t
        for smp in batch:
            st = smp.snapshot_time
            if lo <= st < hi:
                j = int(np.searchsorted(held_ms, st))
                if j == len(held_ms) or held_ms[j] != st:
                    out.samples.append(smp)
        if until_ms is not None and _past(sync, t, until_ms):
            break
    if opened is not None:
        out.known.append((opened, last))
    out.known = [(a, b) for a, b in out.known if b > a]
    out.syncs, out.breaks = sync.syncs, sync.breaks
    return out


def _past(sync: BookSync, t: int, until_ms: int) -> bool:
    """Whether a replay at message time ``t`` has sampled every tick before ``until_ms`` and
    knows the book up to it."""
    return t >= until_ms and sync.next_tick is not None and sync.next_tick >= until_ms


_REST_METHODS = {"candles": "klines", "trades": "agg_trades", "funding": "funding_rates"}


def _ms(value: Any) -> int:
    return int(pd.Timestamp(value).value // 1_000_000)


class RestSource(HistorySource):
    """REST history for exactly the missing ranges, within the venue's reach.

    ``reach_ms`` is how far back the endpoint answers (the venue's
    ``Capabilities.rest_reach_ms``); ranges older than it are neither asked for nor confirmed.
    An answer confirms nothing by itself: its rows prove what they cover (whole candles,
    settlements, runs of consecutive trade ids). Trades are repaired by id (``repair_trades``)
    only where ids are consecutive (``repair_by_id``): elsewhere an id says nothing about its
    neighbours.
    """

    name = Source.REST.value
    clears_ledger = True

    def __init__(
        self, client: Any, dataset: str, reach_ms: int | None = None, repair_by_id: bool = True
    ):
        self.client, self.dataset, self.reach_ms = client, dataset, reach_ms
        self.repair_by_id = repair_by_id

    def reachable(self, window: PartitionWindow, missing: list[Range]) -> list[Range]:
        if self.reach_ms is None:
            return list(missing)
        oldest = window.now_ms - self.reach_ms
        return [(max(s, oldest), e) for s, e in missing if e > oldest]

    def available(self, window: PartitionWindow) -> bool:
        return self.reach_ms is None or window.end_ms > window.now_ms - self.reach_ms

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        method = getattr(self.client, _REST_METHODS[self.dataset])
        ranges = self.reachable(window, missing)
        frames = [method(window.symbol, start, end) for start, end in ranges]
        frames = [f for f in frames if f is not None and not f.empty]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return SourceAnswer(frame=_without_receipt_time(frame), confirmed=[])

    def fetch_for(
        self, window: PartitionWindow, missing: list[Range], held: pd.DataFrame
    ) -> SourceAnswer:
        by_id = self.repair_by_id and hasattr(self.client, "agg_trades_from_id")
        if self.dataset != "trades" or not by_id:
            return self.fetch(window, missing)
        frame, confirmed = repair_trades(
            self.client, window.symbol, self.reachable(window, missing), held, window.now_ms
        )
        return SourceAnswer(frame=_without_receipt_time(frame), confirmed=confirmed)


def repair_trades(
    client: Any, symbol: str, ranges: list[Range], held: pd.DataFrame, now_ms: int
) -> tuple[pd.DataFrame, list[Range]]:
    """Trades for the missing ``ranges`` by id, anchored on the trades already ``held``.

    For each range: page forward by ``fromId`` from the last held id before it until a trade
    at or after its end (which proves the range: ids run through it) or the present; without an
    earlier id, page backwards from the first held id after it until a trade before its start;
    with neither, find the first id by a time window and take its predecessor too. Ids, not
    times: a lost trade sharing the millisecond of the last held one is found. Returns the rows
    and the ranges proven by catching up with the present: only a range reaching ``now_ms`` (an
    open day) can be proven that way; a closed range needs a trade at or after its end.
    """
    have = held[["agg_trade_id", "trade_time"]] if len(held) else None
    ids = have["agg_trade_id"].to_numpy() if have is not None else np.array([], dtype=np.int64)
    times = (
        have["trade_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        if have is not None
        else np.array([], dtype=np.int64)
    )
    order = np.argsort(ids, kind="stable")
    ids, times = ids[order], times[order]
    parts: list[pd.DataFrame] = []
    confirmed: list[Range] = []
    for start, end in ranges:
        before = np.flatnonzero(times < start)
        after = np.flatnonzero(times >= end)
        if len(before):
            anchor = int(ids[before].max())
            rows, caught_up = client.agg_trades_from_id(symbol, anchor + 1, stop_ms=end)
            if caught_up and end >= now_ms:
                last = _ms(rows["trade_time"].max()) if len(rows) else start
                confirmed.append((max(start, last), end))
        elif len(after):
            rows = client.agg_trades_before_id(symbol, int(ids[after].min()), start)
        else:
            first = client.first_agg_page(symbol, start, end)
            if first.empty:
                continue
            first_id = int(first["agg_trade_id"].iloc[0])
            earlier = client.agg_trades_before_id(symbol, first_id, start) if first_id else None
            rows, caught_up = first, False
            if _ms(first["trade_time"].iloc[-1]) < end:
                more, caught_up = client.agg_trades_from_id(
                    symbol, int(first["agg_trade_id"].iloc[-1]) + 1, stop_ms=end
                )
                rows = pd.concat([first, more], ignore_index=True)
            if caught_up and end >= now_ms:
                confirmed.append((max(start, _ms(rows["trade_time"].max())), end))
            rows = pd.concat([r for r in (earlier, rows) if r is not None], ignore_index=True)
        if len(rows):
            parts.append(rows)
            got_ids = rows["agg_trade_id"].to_numpy()
            got_ms = rows["trade_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
            order = np.argsort(np.concatenate([ids, got_ids]), kind="stable")
            ids = np.concatenate([ids, got_ids])[order]
            times = np.concatenate([times, got_ms])[order]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame, confirmed


#: what says whether a kept trade is in the new result: its key, and the aggregate id that is
#: the key on Binance (``held_by_agg_id``)
_TRADE_KEY_COLUMNS = ("exchange", "symbol", "agg_trade_id", "trade_id")


class PreviousPartitionSource(HistorySource):
    """The partition as the lake holds it now, asked last and always: its rows that no other
    source gave are kept, so a re-run during an outage never publishes fewer rows. Rows keep
    their original ``source``; where another source has the same key, the other source wins.

    ``kept`` is the partition's frame, or its lake file unread (``LakeFile``: the IO manager's
    ``kept_partition``): then the file's key columns say which kept trades the new result
    lacks, and its rows are read only when some are (a re-run of a whole day reads its keys,
    not the day).
    """

    name = "previous"
    always = True

    def __init__(self, kept: pd.DataFrame | LakeFile, dataset: str):
        self.kept, self.dataset = kept, dataset
        self._frame: pd.DataFrame | None = None
        if not isinstance(kept, LakeFile):
            # a v1 trades file has no trade_id: its rows get their key as every reader fills it
            self._frame = with_trade_ids(kept) if dataset == "trades" else kept

    @property
    def frame(self) -> pd.DataFrame:
        """The kept rows (a lake file's read on first use, its trade ids filled as above)."""
        if self._frame is None:
            self._frame = self.kept.read()
        return self._frame

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        return SourceAnswer(frame=self.frame, confirmed=[])

    def fetch_for(
        self, window: PartitionWindow, missing: list[Range], held: pd.DataFrame
    ) -> SourceAnswer:
        key = list(DATASETS[self.dataset].natural_key)
        if held.empty or self.kept.empty:
            return self.fetch(window, missing)
        found = None
        if self.dataset == "trades":
            keys = self._frame if self._frame is not None else self.kept.read(_TRADE_KEY_COLUMNS)
            found = held_by_agg_id(keys, held)
            del keys
        if found is None:
            old = self.frame.set_index(key).index
            new = pd.MultiIndex.from_frame(held[key]) if len(key) > 1 else pd.Index(held[key[0]])
            found = old.isin(new)
        if found.all():  # the usual re-run: every kept row given again
            none = self._frame.iloc[0:0] if self._frame is not None else pd.DataFrame()
            return SourceAnswer(frame=none, confirmed=[])
        if not found.any():
            return SourceAnswer(frame=self.frame, confirmed=[])
        return SourceAnswer(frame=self.frame[~found], confirmed=[])


def held_by_agg_id(frame: pd.DataFrame, held: pd.DataFrame) -> np.ndarray | None:
    """Per row of ``frame``, whether ``held`` has its trade key, where both key their trades
    by aggregate id (one and the same exchange and symbol, every ``trade_id`` its aggregate
    id's text: Binance): the ids are looked up in ``held``'s sorted ids block by block, where
    an index of the (exchange, symbol, trade_id) texts of a 10 M-trade day held GBs. None
    where the key is not the aggregate id (Bybit's UUIDs)."""
    instruments = {
        (constant_text(f["exchange"]), constant_text(f["symbol"])) for f in (frame, held)
    }
    if len(instruments) != 1 or None in next(iter(instruments)):
        return None
    if not (trade_ids_are_agg_ids(frame) and trade_ids_are_agg_ids(held)):
        return None
    among = held["agg_trade_id"].to_numpy()
    if not non_decreasing(among):
        among = np.sort(among)
    found = np.empty(len(frame), dtype=bool)
    lo = 0
    for ids in blocks(frame["agg_trade_id"].to_numpy()):
        at = np.minimum(np.searchsorted(among, ids), len(among) - 1)
        found[lo : lo + len(ids)] = among[at] == ids
        lo += len(ids)
    return found


def venue_capabilities(exchange: str) -> Capabilities | None:
    """What the venue (id or storage name) declares; None for a name no adapter has."""
    try:
        return adapter_class(exchange).capabilities
    except ValueError:
        return None


def rest_reach_ms(capabilities: Capabilities | None, dataset: str) -> int | None:
    """How far back the venue's REST answers for ``dataset`` (None: from the listing on)."""
    if capabilities is None:
        return None
    return capabilities.rest_reach_ms.get(dataset)


def has_book_archive(capabilities: Capabilities | None) -> bool:
    """Whether the venue publishes order-book history files the depth fill can replay (an
    unknown venue: no, as Binance)."""
    return (
        capabilities is not None
        and capabilities.depth_history
        and capabilities.archive_for("depth") is not None
    )


def sources_for(
    dataset: str,
    landing: Any | None,
    archive: Any | None,
    rest: Any | None,
    exchange: str,
    previous: pd.DataFrame | LakeFile | None = None,
    capabilities: Capabilities | None = None,
) -> list[HistorySource]:
    """The failover order: landing, then archives (closed days), then REST, then the rows the
    partition already holds (``previous``, so a re-run never shrinks it).

    The venue's capabilities (``capabilities``, else those of ``exchange``) say which archives
    and REST histories exist: a source the venue does not have for ``dataset`` is not asked
    (an unknown venue is asked everything, as before venues declared anything). Depth has a
    history source only where the venue declares book history in an archive
    (``depth_history`` and a depth ``ArchiveSpec``: ``BookArchiveSource``, sampled as the
    landing store samples); elsewhere only the landing zone can give it.
    """
    caps = capabilities or venue_capabilities(exchange)
    out: list[HistorySource] = []
    if landing is not None:
        out.append(LandingSource(landing, exchange, dataset))
    if dataset == "depth":
        if archive is not None and has_book_archive(caps):
            out.append(
                BookArchiveSource(
                    archive,
                    exchange,
                    cadence_ms=getattr(landing, "depth_cadence_ms", DEFAULT_DEPTH_CADENCE_MS),
                    top_n=getattr(landing, "depth_top_n", DEFAULT_DEPTH_TOP_N),
                    snapshot_in_stream=bool(caps and caps.book_snapshot_in_stream),
                )
            )
    else:
        if archive is not None and (caps is None or caps.archive_for(dataset) is not None):
            out.append(ArchiveSource(archive, dataset))
        if rest is not None and (caps is None or dataset in caps.rest_reach_ms):
            repair = caps is None or caps.trade_ids_consecutive
            out.append(RestSource(rest, dataset, rest_reach_ms(caps, dataset), repair))
    if previous is not None and len(previous):
        out.append(PreviousPartitionSource(previous, dataset))
    return out
