"""Local order books kept in sync by update ids, and top-N sampling at a cadence.

The live ingest and the landing reader share this code, so the depth samples a partition is
rebuilt with are the ones the ingest saw. The sequence rules are on the record's fields
(``first_update_id``, ``final_update_id``, ``prev_final_update_id``) and every venue maps its
own ids onto them in its parser (``exchanges/<venue>/``): Binance USD-M's ``U``/``u``/``pu``
are the three fields as sent; a Bybit delta has first = final = ``u`` and prev = ``u - 1``
(its ``u`` rises by exactly one per book message). The rules are Binance's procedure ("How to
manage a local order book correctly": https://developers.binance.com/docs/derivatives/
usds-margined-futures/websocket-market-streams/How-to-manage-a-local-order-book-correctly):
buffer diffs, take a snapshot, drop diffs with ``final < lastUpdateId``, the first applied diff
must straddle the snapshot (``first <= lastUpdateId <= final``) or continue it (``prev ==
lastUpdateId``), then every diff's ``prev`` must equal the previous ``final`` (where a venue has
no ``prev``: ``first == previous final + 1``); anything else is a sequence break that forces a
new snapshot. A checkpoint of our own book is accepted like a snapshot. A snapshot the venue
sends in the stream itself (Bybit, https://bybit-exchange.github.io/docs/v5/websocket/public/
orderbook) replaces the book whatever its id: ``BookSync.on_snapshot(..., in_stream=True)``.

**Numbers.** Levels are kept as ``(price, quantity)`` floats, keyed by the float price. This is
what makes the live path cheap (msgspec parses the level strings to floats in C, see
``petrosa_pipelines/exchanges/binance/fastpath.py``; building and hashing ~40 ``Decimal`` per
diff was the ingest's bottleneck) and it loses nothing the dataset keeps: the catalog stores
depth prices and quantities as float64. It also normalises spellings: ``"100.10"``, ``"100.1"``
and a REST snapshot's ``Decimal("100.1")`` are one level, because float conversion (msgspec's
parser and ``float(Decimal)`` are both correctly rounded) maps equal decimal values to the same
float. Two *different* prices only share a key when they differ beyond ~15 significant digits,
which no venue's tick size comes near. Samples hand out ``Decimal`` levels (the ``Level``
contract of the records), converted lazily from the shortest float repr, so a sample nobody
reads costs nothing.
"""

from __future__ import annotations

import collections
import enum
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from decimal import Decimal

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord

#: a level as records and samples expose it
Level = tuple[Decimal, Decimal]
#: a level as the book keeps it
FloatLevel = tuple[float, float]
FloatLevels = Sequence[FloatLevel]


class Applied(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"  # older than the book (before the snapshot, or a duplicate)
    BUFFERED = "buffered"  # no book yet: kept until a snapshot arrives
    BREAK = "break"  # sequence broken: the book is dropped until the next snapshot


def float_levels(levels: Iterable[tuple[Decimal | float | str, Decimal | float | str]]) -> list:
    """Record levels (``Decimal`` pairs) as the book's float pairs."""
    return [(float(p), float(q)) for p, q in levels]


#: a buffered diff: (event_time, first, final, prev, received_at, bids, asks)
_Diff = tuple[int, int, int, "int | None", "int | None", FloatLevels, FloatLevels]


def diff_fields(d: DepthUpdateRecord) -> _Diff:
    """A diff record as the book's arguments: (event_time, first, final, prev, received_at,
    bids, asks), levels as floats."""
    return (
        d.event_time,
        d.first_update_id,
        d.final_update_id,
        d.prev_final_update_id,
        d.received_at,
        float_levels(d.bids),
        float_levels(d.asks),
    )


def to_decimal(x: float) -> Decimal:
    """The shortest decimal that round-trips ``x``: ``31193.7`` -> ``Decimal("31193.7")``."""
    return Decimal(repr(x))


class _Side:
    """One side: price -> level plus a sorted key list whose *last* element is the best price.

    Most diff levels change the quantity of a known price (one dict write); only new and removed
    prices touch the sorted list. Keeping the best price at the end (bids ascending by price,
    asks ascending by negated price) puts the busy top of the book where ``list.insert`` and
    ``del`` move the fewest elements, which matters once a book holds thousands of levels.
    """

    __slots__ = ("levels", "keys", "negate")

    def __init__(self, negate: bool) -> None:
        self.negate = negate
        self.levels: dict[float, FloatLevel] = {}
        self.keys: list[float] = []

    def load(self, levels: FloatLevels) -> None:
        self.levels = {lv[0]: lv for lv in levels if lv[1]}
        self.keys = sorted([-p for p in self.levels] if self.negate else self.levels)

    def update(self, levels: FloatLevels) -> None:
        book = self.levels
        keys = self.keys
        if self.negate:
            for lv in levels:
                p = lv[0]
                if lv[1]:
                    if p not in book:
                        insort(keys, -p)
                    book[p] = lv
                elif p in book:  # removing an unknown level is normal (the procedure above)
                    del book[p]
                    del keys[bisect_left(keys, -p)]
        else:
            for lv in levels:
                p = lv[0]
                if lv[1]:
                    if p not in book:
                        insort(keys, p)
                    book[p] = lv
                elif p in book:
                    del book[p]
                    del keys[bisect_left(keys, p)]

    def best(self, n: int) -> list[FloatLevel]:
        """The ``n`` best levels, best first."""
        if n <= 0:
            return []
        book = self.levels
        top = self.keys[-n:]
        top.reverse()
        if self.negate:
            return [book[-k] for k in top]
        return [book[k] for k in top]

    def __len__(self) -> int:
        return len(self.keys)


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
        self.bids = _Side(negate=False)
        self.asks = _Side(negate=True)
        self.last_update_id: int | None = None
        self.last_event_time: int | None = None
        self.last_received_at: int | None = None
        self._first = False

    @property
    def synced(self) -> bool:
        return self.last_update_id is not None

    def load(self, snap: DepthSnapshotRecord) -> None:
        """Start from a snapshot (REST) or a checkpoint of our own book."""
        self.bids.load(float_levels(snap.bids))
        self.asks.load(float_levels(snap.asks))
        self.last_update_id = snap.last_update_id
        self.last_event_time = snap.event_time
        self.last_received_at = snap.received_at
        self._first = True

    def reset(self) -> None:
        self.bids = _Side(negate=False)
        self.asks = _Side(negate=True)
        self.last_update_id = None
        self._first = False

    def apply(self, d: DepthUpdateRecord) -> Applied:
        """Apply one diff record under the sequence rules; a break drops the book."""
        return self.apply_update(*diff_fields(d))

    def apply_update(
        self,
        event_time: int,
        first: int,
        final: int,
        prev: int | None,
        received_at: int | None,
        bids: FloatLevels,
        asks: FloatLevels,
    ) -> Applied:
        """:meth:`apply` on the diff's fields with float levels (the ingest's fast path)."""
        lid = self.last_update_id
        if lid is None:
            return Applied.BUFFERED
        if self._first:
            if final < lid:
                return Applied.STALE
            if not (first <= lid <= final or prev == lid):
                self.reset()
                return Applied.BREAK
            self._first = False
        else:
            if final <= lid:
                return Applied.STALE
            if prev is not None and prev != lid:
                self.reset()
                return Applied.BREAK
            if prev is None and first != lid + 1:
                self.reset()
                return Applied.BREAK
        if bids:
            self.bids.update(bids)
        if asks:
            self.asks.update(asks)
        self.last_update_id = final
        self.last_event_time = event_time
        self.last_received_at = received_at
        return Applied.APPLIED

    def top(self, n: int) -> tuple[list[FloatLevel], list[FloatLevel]]:
        """(bids best first, asks best first), ``n`` levels each, as floats."""
        return self.bids.best(n), self.asks.best(n)

    def checkpoint(self, exchange: str, received_at: int | None = None) -> DepthSnapshotRecord:
        """The whole book as a snapshot record (landed so a day can be rebuilt without REST)."""
        assert self.last_update_id is not None
        return DepthSnapshotRecord(
            exchange=exchange,
            symbol=self.symbol,
            last_update_id=self.last_update_id,
            event_time=self.last_event_time,
            transaction_time=None,
            bids=_decimal_levels(self.bids.best(len(self.bids))),
            asks=_decimal_levels(self.asks.best(len(self.asks))),
            received_at=received_at,
        )


def _decimal_levels(levels: FloatLevels) -> tuple[Level, ...]:
    return tuple((to_decimal(p), to_decimal(q)) for p, q in levels)


class BookSample:
    """Top-N of one book at one cadence tick.

    Taken at every tick of every symbol but mostly never read by the live ingest (only the
    latest one is kept), so the ``Decimal`` levels are built on first access; ``bid_floats`` /
    ``ask_floats`` are the levels as the book holds them.
    """

    __slots__ = (
        "symbol",
        "snapshot_time",
        "last_update_id",
        "bid_floats",
        "ask_floats",
        "received_at",
        "_bids",
        "_asks",
    )

    def __init__(
        self,
        symbol: str,
        snapshot_time: int,
        last_update_id: int,
        bid_floats: list[FloatLevel],
        ask_floats: list[FloatLevel],
        received_at: int | None = None,
    ) -> None:
        self.symbol = symbol
        self.snapshot_time = snapshot_time
        self.last_update_id = last_update_id
        self.bid_floats = bid_floats
        self.ask_floats = ask_floats
        self.received_at = received_at
        self._bids: list[Level] | None = None
        self._asks: list[Level] | None = None

    @property
    def bids(self) -> list[Level]:
        if self._bids is None:
            self._bids = list(_decimal_levels(self.bid_floats))
        return self._bids

    @property
    def asks(self) -> list[Level]:
        if self._asks is None:
            self._asks = list(_decimal_levels(self.ask_floats))
        return self._asks

    def _key(self) -> tuple:
        return (
            self.symbol,
            self.snapshot_time,
            self.last_update_id,
            self.bid_floats,
            self.ask_floats,
            self.received_at,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BookSample):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable lazily, like the dataclass it replaced

    def __repr__(self) -> str:
        return (
            f"BookSample({self.symbol!r}, {self.snapshot_time}, {self.last_update_id}, "
            f"bids={self.bid_floats!r}, asks={self.ask_floats!r})"
        )


class BookSync:
    """One symbol's book fed by diffs and snapshots in receipt order, sampled at a cadence.

    ``on_diff`` returns what happened to the diff plus the samples due before it: a sample at
    tick ``T`` reflects every diff with event time ``<= T``. Diffs seen while there is no book
    are buffered (bounded) so the next snapshot can be caught up (module docstring).
    ``on_update`` is the same for a diff given as fields with float levels (the live ingest's
    fast path); both feed the same book, so the ingest's samples equal a rebuild from landing.
    """

    def __init__(
        self, symbol: str, *, cadence_ms: int, top_n: int, max_buffer: int = 50_000
    ) -> None:
        self.book = OrderBook(symbol)
        self.cadence_ms = cadence_ms
        self.top_n = top_n
        self.buffer: collections.deque[_Diff] = collections.deque(maxlen=max_buffer)
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
        return self.on_update(*diff_fields(d))

    def on_update(
        self,
        event_time: int,
        first: int,
        final: int,
        prev: int | None,
        received_at: int | None,
        bids: FloatLevels,
        asks: FloatLevels,
    ) -> tuple[Applied, list[BookSample]]:
        self.last_diff_event_time = event_time
        book = self.book
        if book.last_update_id is None:
            self.buffer.append((event_time, first, final, prev, received_at, bids, asks))
            return Applied.BUFFERED, []
        nt = self.next_tick
        samples = self._samples_before(event_time) if nt is not None and nt < event_time else []
        result = book.apply_update(event_time, first, final, prev, received_at, bids, asks)
        if result is Applied.APPLIED:
            self.applied += 1
        elif result is Applied.BREAK:
            self.breaks += 1
            self.next_tick = None
            self.buffer.clear()
            self.buffer.append((event_time, first, final, prev, received_at, bids, asks))
            # a diff between the last applied one and this one was missed, at an unknown
            # time in between: the ticks in between are not samples of the real book
            samples = []
        return result, samples

    def on_snapshot(
        self, snap: DepthSnapshotRecord, *, in_stream: bool = False
    ) -> tuple[bool, list[BookSample]]:
        """Load a snapshot and catch up the buffer; a REST one is ignored while in sync.

        ``in_stream`` (or the record's own ``in_stream``: Binance partial depth): the venue sent
        the snapshot in the stream, so its place among the diffs is exact: it replaces the book
        whatever its update id (a venue restart numbers the book from 1 again), diffs buffered
        before it are older, and the ticks before it are sampled from the book it replaces, as
        before a diff, unless its ``prev_update_id`` shows missed messages
        (``snapshot_breaks``): then those ticks are dropped, as at a diff's break. Partial depth
        is thus sampled at the cadence exactly like a diff-built book: a sample at tick ``T`` is
        the last snapshot with event time ``<= T``. Returns (synced now, samples emitted).
        """
        if in_stream or snap.in_stream:
            return True, self._replace(snap)
        if self.book.last_update_id is not None:
            return True, []
        self.book.load(snap)
        self.syncs += 1
        start = snap.event_time if snap.event_time is not None else snap.received_at
        self.next_tick = self._tick_after(start) if start is not None else None
        samples: list[BookSample] = []
        pending = list(self.buffer)
        self.buffer.clear()
        for i, d in enumerate(pending):
            if self.next_tick is None:
                self.next_tick = self._tick_after(d[0])
            due = self._samples_before(d[0])
            r = self.book.apply_update(*d)
            if r is Applied.BREAK:
                # the snapshot is older than the oldest buffered diff: need a newer snapshot
                # (and, as in on_update, the ticks before the breaking diff are not samples)
                self.breaks += 1
                self.next_tick = None
                self.buffer.extend(pending[i:])
                return False, samples
            samples.extend(due)
            if r is Applied.APPLIED:
                self.applied += 1
        return True, samples

    def snapshot_breaks(self, snap: DepthSnapshotRecord) -> bool:
        """Whether an in-stream snapshot follows missed messages: it names the update id of
        the stream's previous message (``prev_update_id``, Binance partial depth ``pu``) and
        that is not the one the book reflects. Unknown (no book, no ``pu``): no break."""
        prev = snap.prev_update_id
        lid = self.book.last_update_id
        return prev is not None and lid is not None and prev != lid

    def _replace(self, snap: DepthSnapshotRecord) -> list[BookSample]:
        start = snap.event_time if snap.event_time is not None else snap.received_at
        if self.snapshot_breaks(snap):
            # messages between the book and this snapshot were missed, at unknown times: the
            # ticks in between are not samples of the real book (as for a diff's break)
            self.breaks += 1
            self.next_tick = None
            samples: list[BookSample] = []
        else:
            samples = self._samples_before(start) if start is not None else []
        self.book.reset()
        self.buffer.clear()
        self.book.load(snap)
        self.syncs += 1
        if self.next_tick is None and start is not None:
            self.next_tick = self._tick_after(start)
        return samples

    def reset(self) -> None:
        """Forget the book: the stream broke (a disconnect, a restart), so diffs were missed.

        No sample is taken until a snapshot newer than the break re-syncs the book; the live
        ingest calls this when its connection drops and the rebuild from landing when it
        reaches a ledger window (``LandingStore.depth_samples``), so both sample the same.
        """
        self.book.reset()
        self.buffer.clear()
        self.next_tick = None

    def flush_until(self, t: int) -> list[BookSample]:
        """Samples for every tick before ``t`` (end of a window with no later diff)."""
        return self._samples_before(t)
