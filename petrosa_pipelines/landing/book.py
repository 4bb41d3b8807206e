"""Local order books kept in sync under Binance USD-M's rules, and top-N sampling at a cadence.

The live ingest and the landing reader share this code, so the depth samples a partition is
rebuilt with are the ones the ingest saw. The procedure (REFERENCE.md 4.2): buffer diffs, take
a snapshot, drop diffs with ``u < lastUpdateId``, the first applied diff must straddle the
snapshot (``U <= lastUpdateId <= u``), then every diff's ``pu`` must equal the previous ``u``;
anything else is a sequence break that forces a new snapshot. A checkpoint of our own book
(``pu`` of the next diff equals its id) is accepted like a snapshot.
"""

from __future__ import annotations

import bisect
import collections
import enum
from dataclasses import dataclass
from decimal import Decimal

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord

Level = tuple[Decimal, Decimal]


class Applied(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"  # older than the book (before the snapshot, or a duplicate)
    BUFFERED = "buffered"  # no book yet: kept until a snapshot arrives
    BREAK = "break"  # sequence broken: the book is dropped until the next snapshot


class _Side:
    """One side: price -> qty plus an ascending price list, so a top-N read is a slice.

    Most diff levels change the quantity of a known price (a dict write); only new and removed
    prices touch the sorted list. Measured against ``dict.update`` + ``heapq`` per sample, this
    is about twice as fast at one sample per second (benchmarks/ingest_bench.py).
    """

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[Decimal, Decimal] = {}
        self.prices: list[Decimal] = []

    def load(self, levels: tuple[Level, ...]) -> None:
        self.levels = {p: q for p, q in levels if q}
        self.prices = sorted(self.levels)

    def update(self, levels: tuple[Level, ...]) -> None:
        book = self.levels
        prices = self.prices
        for p, q in levels:
            if q:
                if p not in book:
                    bisect.insort(prices, p)
                book[p] = q
            elif p in book:  # removing an unknown level is normal (Binance rule 9)
                del book[p]
                del prices[bisect.bisect_left(prices, p)]

    def best(self, n: int, descending: bool) -> list[Level]:
        book = self.levels
        ps = (self.prices[: -n - 1 : -1] if n else []) if descending else self.prices[:n]
        return [(p, book[p]) for p in ps]


class OrderBook:
    """One symbol's book. ``last_update_id`` is the ``u`` the book reflects (None: no book)."""

    __slots__ = (
        "symbol",
        "bids",
        "asks",
        "last_update_id",
        "last_event_time",
        "last_received_at",
        "_first",
    )

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.bids = _Side()
        self.asks = _Side()
        self.last_update_id: int | None = None
        self.last_event_time: int | None = None
        self.last_received_at: int | None = None
        self._first = False

    @property
    def synced(self) -> bool:
        return self.last_update_id is not None

    def load(self, snap: DepthSnapshotRecord) -> None:
        """Start from a snapshot (REST) or a checkpoint of our own book."""
        self.bids.load(snap.bids)
        self.asks.load(snap.asks)
        self.last_update_id = snap.last_update_id
        self.last_event_time = snap.event_time
        self.last_received_at = snap.received_at
        self._first = True

    def reset(self) -> None:
        self.bids = _Side()
        self.asks = _Side()
        self.last_update_id = None
        self._first = False

    def apply(self, d: DepthUpdateRecord) -> Applied:
        """Apply one diff under the sequence rules; a break drops the book."""
        lid = self.last_update_id
        if lid is None:
            return Applied.BUFFERED
        u = d.final_update_id
        if self._first:
            if u < lid:
                return Applied.STALE
            if not (d.first_update_id <= lid <= u or d.prev_final_update_id == lid):
                self.reset()
                return Applied.BREAK
            self._first = False
        else:
            if u <= lid:
                return Applied.STALE
            if d.prev_final_update_id is not None and d.prev_final_update_id != lid:
                self.reset()
                return Applied.BREAK
            if d.prev_final_update_id is None and d.first_update_id != lid + 1:
                self.reset()
                return Applied.BREAK
        if d.bids:
            self.bids.update(d.bids)
        if d.asks:
            self.asks.update(d.asks)
        self.last_update_id = u
        self.last_event_time = d.event_time
        self.last_received_at = d.received_at
        return Applied.APPLIED

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first), ``n`` levels each."""
        return self.bids.best(n, descending=True), self.asks.best(n, descending=False)

    def checkpoint(self, exchange: str, received_at: int | None = None) -> DepthSnapshotRecord:
        """The whole book as a snapshot record (landed so a day can be rebuilt without REST)."""
        assert self.last_update_id is not None
        return DepthSnapshotRecord(
            exchange=exchange,
            symbol=self.symbol,
            last_update_id=self.last_update_id,
            event_time=self.last_event_time,
            transaction_time=None,
            bids=tuple(self.bids.best(len(self.bids.prices), descending=True)),
            asks=tuple(self.asks.best(len(self.asks.prices), descending=False)),
            received_at=received_at,
        )


@dataclass(frozen=True)
class BookSample:
    """Top-N of one book at one cadence tick."""

    symbol: str
    snapshot_time: int
    last_update_id: int
    bids: list[Level]
    asks: list[Level]
    received_at: int | None = None


class BookSync:
    """One symbol's book fed by diffs and snapshots in receipt order, sampled at a cadence.

    ``on_diff`` returns what happened to the diff plus the samples due before it: a sample at
    tick ``T`` reflects every diff with event time ``<= T``. Diffs seen while there is no book
    are buffered (bounded) so the next snapshot can be caught up, as Binance prescribes.
    """

    def __init__(
        self, symbol: str, *, cadence_ms: int, top_n: int, max_buffer: int = 50_000
    ) -> None:
        self.book = OrderBook(symbol)
        self.cadence_ms = cadence_ms
        self.top_n = top_n
        self.buffer: collections.deque[DepthUpdateRecord] = collections.deque(maxlen=max_buffer)
        self.next_tick: int | None = None
        self.breaks = 0
        self.syncs = 0
        self.applied = 0
        self.last_diff_event_time: int | None = None

    def _tick_after(self, t: int) -> int:
        """The first tick at or after ``t`` (a book known at ``t`` can be sampled at ``t``)."""
        return -(-t // self.cadence_ms) * self.cadence_ms

    def _samples_before(self, event_time: int) -> list[BookSample]:
        out: list[BookSample] = []
        book = self.book
        nt = self.next_tick
        if nt is None or book.last_update_id is None:
            return out
        while nt < event_time:
            bids, asks = book.top(self.top_n)
            out.append(
                BookSample(book.symbol, nt, book.last_update_id, bids, asks, book.last_received_at)
            )
            nt += self.cadence_ms
        self.next_tick = nt
        return out

    def on_diff(self, d: DepthUpdateRecord) -> tuple[Applied, list[BookSample]]:
        self.last_diff_event_time = d.event_time
        if self.book.last_update_id is None:
            self.buffer.append(d)
            return Applied.BUFFERED, []
        samples = self._samples_before(d.event_time)
        result = self.book.apply(d)
        if result is Applied.APPLIED:
            self.applied += 1
        elif result is Applied.BREAK:
            self.breaks += 1
            self.next_tick = None
            self.buffer.clear()
            self.buffer.append(d)
        return result, samples

    def on_snapshot(self, snap: DepthSnapshotRecord) -> tuple[bool, list[BookSample]]:
        """Load a snapshot (ignored while in sync) and catch up the buffer.

        Returns (synced now, samples emitted while catching up).
        """
        if self.book.last_update_id is not None:
            return True, []
        self.book.load(snap)
        self.syncs += 1
        start = snap.event_time if snap.event_time is not None else snap.received_at
        self.next_tick = self._tick_after(start) if start is not None else None
        samples: list[BookSample] = []
        pending = list(self.buffer)
        self.buffer.clear()
        for d in pending:
            if self.next_tick is None:
                self.next_tick = self._tick_after(d.event_time)
            samples.extend(self._samples_before(d.event_time))
            r = self.book.apply(d)
            if r is Applied.BREAK:
                # the snapshot is older than the oldest buffered diff: need a newer snapshot
                self.breaks += 1
                self.next_tick = None
                self.buffer.extend(pending[pending.index(d) :])
                return False, samples
            if r is Applied.APPLIED:
                self.applied += 1
        return True, samples

    def flush_until(self, t: int) -> list[BookSample]:
        """Samples for every tick before ``t`` (end of a window with no later diff)."""
        return self._samples_before(t)
