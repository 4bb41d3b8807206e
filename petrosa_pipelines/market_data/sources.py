"""The history sources a partition is filled from: landing zone, archives, REST.

Thin adapters from each client's API to ``HistorySource``; the order they are tried in is
decided by ``sources_for`` and nowhere else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.exchanges.base import Source
from petrosa_pipelines.market_data.fill import HistorySource, PartitionWindow, Range, SourceAnswer


def _without_receipt_time(frame: pd.DataFrame) -> pd.DataFrame:
    """History rows carry no receipt time, so re-materialising gives identical rows."""
    if "received_at" in frame.columns:
        frame = frame.copy()
        frame["received_at"] = pd.NaT
    return frame


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
    times = pd.to_datetime(frame[col], utc=True)
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
    """Checksum-verified daily archives; only closed days are published.

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
    ms = np.sort(frame["trade_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy())
    if len(ms) == 0:
        return []
    typical = (
        float(np.median(np.diff(ms))) if len(ms) > 1 else float(window.end_ms - window.start_ms)
    )
    reach = max(EDGE_MIN_MS, EDGE_GAPS * typical)
    lo = window.start_ms if ms[0] - window.start_ms <= reach else int(ms[0]) + 1
    hi = window.end_ms if window.end_ms - ms[-1] <= reach else int(ms[-1])
    return [(lo, hi)] if hi > lo else []


_REST_METHODS = {"candles": "klines", "trades": "agg_trades", "funding": "funding_rates"}


def _ms(value: Any) -> int:
    return int(pd.Timestamp(value).value // 1_000_000)


class RestSource(HistorySource):
    """REST history for exactly the missing ranges, within the venue's reach.

    ``reach_ms`` is how far back the endpoint answers (a venue capability: the client's
    ``history_reach_ms``); ranges older than it are neither asked for nor confirmed. An answer
    confirms nothing by itself: its rows prove what they cover (whole candles, settlements,
    runs of consecutive trade ids). Trades are repaired by id (``repair_trades``).
    """

    name = Source.REST.value
    clears_ledger = True

    def __init__(self, client: Any, dataset: str, reach_ms: int | None = None):
        self.client, self.dataset, self.reach_ms = client, dataset, reach_ms

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
        if self.dataset != "trades" or not hasattr(self.client, "agg_trades_from_id"):
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


class PreviousPartitionSource(HistorySource):
    """The partition as the lake holds it now, asked last and always: its rows that no other
    source gave are kept, so a re-run during an outage never publishes fewer rows. Rows keep
    their original ``source``; where another source has the same key, the other source wins.
    """

    name = "previous"
    always = True

    def __init__(self, frame: pd.DataFrame, dataset: str):
        self.frame, self.dataset = frame, dataset

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        return SourceAnswer(frame=self.frame, confirmed=[])

    def fetch_for(
        self, window: PartitionWindow, missing: list[Range], held: pd.DataFrame
    ) -> SourceAnswer:
        key = list(DATASETS[self.dataset].natural_key)
        if held.empty or self.frame.empty:
            return self.fetch(window, missing)
        old = self.frame.set_index(key).index
        new = pd.MultiIndex.from_frame(held[key]) if len(key) > 1 else pd.Index(held[key[0]])
        return SourceAnswer(frame=self.frame[~old.isin(new)], confirmed=[])


def rest_reach_ms(rest: Any, dataset: str) -> int | None:
    """How far back the venue's REST answers for ``dataset`` (its client declares it)."""
    return dict(getattr(rest, "history_reach_ms", {}) or {}).get(dataset)


def sources_for(
    dataset: str,
    landing: Any | None,
    archive: Any | None,
    rest: Any | None,
    exchange: str,
    previous: pd.DataFrame | None = None,
) -> list[HistorySource]:
    """The failover order: landing, then archives (closed days), then REST, then the rows the
    partition already holds (``previous``, so a re-run never shrinks it).

    Depth has no history anywhere: only the landing zone can give it.
    """
    out: list[HistorySource] = []
    if landing is not None:
        out.append(LandingSource(landing, exchange, dataset))
    if dataset != "depth":
        if archive is not None:
            out.append(ArchiveSource(archive, dataset))
        if rest is not None:
            out.append(RestSource(rest, dataset, rest_reach_ms(rest, dataset)))
    if previous is not None and len(previous):
        out.append(PreviousPartitionSource(previous, dataset))
    return out
