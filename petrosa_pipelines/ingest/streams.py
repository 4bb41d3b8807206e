"""Per-stream state of the ingest: de-duplication, plausibility and the positions it keys on.

Pure bookkeeping, no I/O: the engine's hot path (``hotpath``) asks it whether a message is new
and plausible; the connection manager (``connection``) moves streams between connections.

Positions: every stream is de-duplicated by a number that grows with each new message (a
trade's ``agg_trade_id``, a depth diff's ``final_update_id``, the event time of candles and mark
prices). Before de-duplication each message is checked for plausibility (``implausible``: times
near their receipt, positions near the stream's), so a single corrupt frame is a dead letter,
never a stream's de-duplication floor or gap bound (issue 11, item 8).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    RawTradeRecord,
    Record,
    TickerRecord,
    TradeRecord,
)
from petrosa_pipelines.ingest.stats import StreamStats

#: the dataset each streamed record type belongs to
DATASET_OF: dict[type, str] = {
    TradeRecord: "trades",
    CandleRecord: "candles",
    DepthUpdateRecord: "depth",
    MarkPriceRecord: "funding",
    # raw trades (Binance ``@trade``) are checked and ledgered as the trades dataset's stream,
    # though the dataset's rows stay aggregate trades (``exchanges/binance/adapter.py``)
    RawTradeRecord: "trades",
    # feeds no dataset: landed, a liveness probe; its ledger entries name no real dataset
    TickerRecord: "ticker",
}
#: the record type whose stream another record type travels on (an in-stream book snapshot is
#: a message of the depth stream)
STREAM_TYPE: dict[type, type] = {DepthSnapshotRecord: DepthUpdateRecord}

#: positions remembered per stream for de-duplication (the exchange may reorder a little)
DEDUP_WINDOW = 4096
#: trade ids missing for this long (receipt ms) are recorded as an id gap
ID_GAP_GRACE_MS = 3000
#: a message's times may be this far ahead of its receipt (exchange and host clocks disagree by
#: ~1 s in real captures; a host whose clock is minutes off dead-letters with that reason)
MAX_FUTURE_MS = 10 * 60_000
#: ... and this far behind it (a stalled reader reads late; a day is corrupt, not late)
MAX_PAST_MS = 24 * 3_600_000
#: a position (trade id, depth update id, event time) may move this far from the stream's
#: highest accepted one, plus ``ID_JUMP_PER_MS`` per ms since the stream's last message: far
#: above the busiest known sequence (Binance USD-M depth update ids, ~5e4/s on average)
ID_JUMP_BASE = 10_000_000
ID_JUMP_PER_MS = 10_000
#: where trade ids are not consecutive, a trade's position is the venue's sequence number
#: times this plus the trade's index in its message (the trades contract; Bybit's ``seq``
#: rises ~25/ms on BTCUSDT), so that stream's jump allowances are this much wider
SEQ_POSITION_SCALE = 1000

#: the record field holding a record type's position (``position``)
_POSITION_ATTR: dict[type, str] = {
    TradeRecord: "agg_trade_id",
    RawTradeRecord: "trade_id",
    DepthUpdateRecord: "final_update_id",
    DepthSnapshotRecord: "last_update_id",
}
#: the record fields checked against receipt, per record type (``record_times``)
_TIME_ATTRS: dict[type, tuple[str, ...]] = {
    TradeRecord: ("event_time", "trade_time"),
    RawTradeRecord: ("event_time", "trade_time"),
    CandleRecord: ("event_time", "open_time"),
}


def position(rec: Record) -> int:
    """A per-stream number that grows with every new message (duplicates repeat it)."""
    t = type(rec)
    if t is TradeRecord:
        return rec.agg_trade_id  # type: ignore[union-attr]
    if t is DepthUpdateRecord:
        return rec.final_update_id  # type: ignore[union-attr]
    if t is DepthSnapshotRecord:
        return rec.last_update_id  # type: ignore[union-attr]
    if t is RawTradeRecord:
        return rec.trade_id  # type: ignore[union-attr]
    return rec.event_time  # type: ignore[union-attr, return-value]


def data_time(rec: Record) -> int | None:
    """The time in the dataset's own time column (what partitions and gap entries are cut by).

    A trade's event time is when the venue pushed it, a little after the trade: a gap bounded by
    event times could start after a lost trade's own time and miss it.
    """
    t = type(rec)
    if t is TradeRecord:
        return rec.trade_time  # type: ignore[union-attr]
    if t is CandleRecord:
        return rec.open_time  # type: ignore[union-attr]
    if t is RawTradeRecord:
        return rec.trade_time  # type: ignore[union-attr]
    return rec.event_time  # type: ignore[union-attr]


def position_field(rec_type: type, wire: dict[str, str]) -> str:
    """The name a dead letter gives a record type's position: the venue's wire name if known."""
    attr = _POSITION_ATTR.get(rec_type, "event_time")
    return wire.get(attr, attr)


def time_fields(rec_type: type, wire: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(dead-letter field name, record attribute) of the times checked against receipt."""
    return tuple((wire.get(a, a), a) for a in _TIME_ATTRS.get(rec_type, ("event_time",)))


def implausible(
    top: int | None,
    top_recv: int,
    pos: int,
    pos_field: str,
    times: Sequence[tuple[str, int | None]],
    recv: int,
    scale: int = 1,
) -> tuple[str, str] | None:
    """(field, reason) when a message cannot be right for its stream; None when plausible.

    ``times`` are the message's (field, epoch ms) checked against its receipt ``recv``; ``pos``
    is checked against the stream's highest accepted position ``top`` (received at
    ``top_recv``), the first message of a stream has none; ``scale`` widens the allowance
    (``SEQ_POSITION_SCALE``).
    """
    for fld, t in times:
        if t is None:
            continue
        if t > recv + MAX_FUTURE_MS:
            return fld, (
                f"implausible time {t}: {t - recv} ms after its receipt at {recv} "
                f"(at most {MAX_FUTURE_MS} ms; is this host's clock right?)"
            )
        if t < recv - MAX_PAST_MS:
            return fld, (
                f"implausible time {t}: {recv - t} ms before its receipt at {recv} "
                f"(at most {MAX_PAST_MS} ms)"
            )
    if top is not None:
        allowed = (ID_JUMP_BASE + max(recv - top_recv, 0) * ID_JUMP_PER_MS) * scale
        if abs(pos - top) > allowed:
            return pos_field, (
                f"implausible position {pos}: {pos - top:+d} from the stream's highest "
                f"accepted {top} (at most {allowed} at this point)"
            )
    return None


@dataclass
class Held:
    """A message a rotation's new connection delivered before its stream switched over."""

    pos: int
    event_time: int
    recv: int
    raw: bytes
    rec: Record


@dataclass
class StreamState:
    """De-duplication, rotation hand-over and gap bookkeeping of one stream."""

    stats: StreamStats
    seen: set[int] = field(default_factory=set)
    seen_order: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=DEDUP_WINDOW)
    )
    #: the oldest remembered position; anything older is treated as already seen
    floor: int | None = None
    #: highest accepted position and the receipt time of the stream's last accepted message
    #: (what ``implausible`` measures a new position against). None until two accepted
    #: positions agree (``remember``): a stream's first message cannot be judged by itself
    top: int | None = None
    top_recv: int = 0
    #: the last accepted position while ``top`` is not confirmed yet
    candidate_top: int | None = None
    max_event: int | None = None
    max_trade_id: int | None = None
    max_trade_time: int | None = None
    #: [lo, hi, t_from, t_to, deadline_recv] of trade ids not seen yet
    missing: list[list[int]] = field(default_factory=list)
    #: the record field of the ids tracked (``agg_trade_id``; raw trades: ``trade_id``), named
    #: in the ledger entries of missing ids
    id_field: str = "agg_trade_id"
    #: connection id whose messages are authoritative for this stream
    source: int = 0
    held: list[Held] = field(default_factory=list)
    #: data time (see ``data_time``) of the last message before an outage (gap opens there)
    outage_from: int | None = None
    outage_cause: str = "disconnect"
    #: how far a position may jump: ``ID_JUMP_*`` times the stream's ``SEQ_POSITION_SCALE``
    jump_base: int = ID_JUMP_BASE
    jump_per_ms: int = ID_JUMP_PER_MS

    @property
    def jump_scale(self) -> int:
        return self.jump_base // ID_JUMP_BASE

    def scale_jumps(self, scale: int) -> None:
        self.jump_base = ID_JUMP_BASE * scale
        self.jump_per_ms = ID_JUMP_PER_MS * scale

    def is_new(self, pos: int) -> bool:
        return pos not in self.seen and (self.floor is None or pos > self.floor)

    def is_new_snapshot(self, pos: int) -> bool:
        """An in-stream book snapshot is new unless its update id was seen: one going back
        (a venue restart numbers its book from 1 again) restarts the stream's positions."""
        if pos in self.seen:
            return False
        if (self.floor is not None and pos <= self.floor) or (
            self.top is not None and pos < self.top
        ):
            self.restart_positions()
        return True

    def restart_positions(self) -> None:
        """Forget every position: the venue numbers this stream afresh."""
        self.seen.clear()
        self.seen_order.clear()
        self.floor = None
        self.top = None
        self.candidate_top = None

    def remember(self, pos: int, recv: int) -> None:
        """Remember an accepted position; the one leaving the window may raise the floor.

        Only up to the position being accepted: an outlier that slipped through (say a
        stream's first message) leaving the window must not become a floor above every
        position still to come, which would drop them all as duplicates.
        """
        order = self.seen_order
        if len(order) == DEDUP_WINDOW:
            old = order[0]
            self.seen.discard(old)
            if old <= pos and (self.floor is None or old > self.floor):
                self.floor = old
        order.append(pos)
        self.seen.add(pos)
        self.top_recv = recv
        top = self.top
        if top is not None:
            if pos > top:
                self.top = pos
            return
        prev = self.candidate_top
        self.candidate_top = pos
        if prev is not None and abs(pos - prev) <= self.jump_base:
            self._confirm_top(max(pos, prev))

    def _confirm_top(self, top: int) -> None:
        """Two positions agree: the stream's range is known. What an outlier among the
        unconfirmed first messages left in the trade-id bookkeeping is forgotten."""
        self.top = top
        if self.max_trade_id is not None and self.max_trade_id > top:
            self.max_trade_id = None
            self.max_trade_time = None
            self.missing = [m for m in self.missing if m[1] <= top]
