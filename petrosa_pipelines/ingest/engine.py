"""The long-running websocket ingest of one stream group (asyncio).

One combined-stream connection carries every stream of the group. Each frame is stamped with its
receipt time, validated once (bad ones go to the dead-letter store), de-duplicated by a
per-stream position (aggregate trade id, depth final update id, event time for klines and mark
prices) and handed to the landing writer, whose own thread makes it durable. Trades and depth
diffs take a fast path (``fastpath``: no ``Decimal`` records, book levels as floats) that only
accepts what the full parser accepts; anything else goes through the full parser, which also
writes the dead-letter reasons. Frames reach the writer in one batch per burst of the socket
(``LineBatch``), not one queue operation each. Before de-duplication each message is checked
for plausibility (``implausible``: times near their receipt, positions near the stream's), so a
single corrupt frame is a dead letter, never a stream's de-duplication floor or gap bound; no
frame, however malformed, raises out of the message path. Around that hot path:

* **drops**: reconnect with exponential backoff and full jitter; the URL resubscribes every
  stream; each stream's outage becomes a gap-ledger entry when its first message is back.
* **24 h rotation without loss**: before the cut, a second connection is opened; its messages
  are held per stream until they overlap what the old connection delivered (a held event time at
  or below the last accepted one), then that stream switches over; the old connection closes
  once every stream switched (or after ``rotation_overlap_s``).
* **order books**: diffs are buffered, a REST snapshot is fetched and landed in line with the
  frames, and the book follows Binance's ``U``/``u``/``pu`` rules; a break lands a gap entry and
  triggers a resync. Books are sampled top-N at a fixed cadence and checkpointed periodically so
  a reader can rebuild any window from the landing zone alone.
* **heartbeat**: statistics per stream and a liveness judgement, written to a heartbeat file
  under the landing root (what the supervisor sensor reads) and served as Prometheus text.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import InvalidOperation
from typing import Any

import msgspec
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    MessageError,
    Record,
    TradeRecord,
)
from petrosa_pipelines.exchanges.binance.schemas import (
    _SYMBOL_RE,
    CONVERTERS,
    BinanceAggTradeData,
    stream_symbol,
)
from petrosa_pipelines.ingest import heartbeat as hb
from petrosa_pipelines.ingest.config import IngestConfig
from petrosa_pipelines.ingest.fastpath import (
    DEC_MAX,
    DEC_MIN,
    DECODE_ERRORS,
    FAST_DECODER,
    DepthRoute,
    FastDepth,
    depth_levels,
)
from petrosa_pipelines.ingest.stats import (
    DISCONNECTED,
    STOPPED,
    GroupStats,
    StreamStats,
    judge_liveness,
)
from petrosa_pipelines.landing.book import Applied, BookSample, BookSync
from petrosa_pipelines.landing.records import BOOK_CHECKPOINT, GapRecord
from petrosa_pipelines.landing.store import LandingStore
from petrosa_pipelines.landing.writer import (
    LATENCY_SLOT_MS,
    LATENCY_SLOTS,
    LandingWriter,
    LineBatch,
    format_line,
)

log = logging.getLogger(__name__)

_DATASET_OF: dict[type, str] = {
    TradeRecord: "trades",
    CandleRecord: "candles",
    DepthUpdateRecord: "depth",
    MarkPriceRecord: "funding",
}
_STREAM_HEAD = b'{"stream":"'


def _position(rec: Record) -> int:
    """A per-stream number that grows with every new message (duplicates repeat it)."""
    t = type(rec)
    if t is TradeRecord:
        return rec.agg_trade_id  # type: ignore[union-attr]
    if t is DepthUpdateRecord:
        return rec.final_update_id  # type: ignore[union-attr]
    return rec.event_time  # type: ignore[union-attr, return-value]


def _data_time(rec: Record) -> int | None:
    """The time in the dataset's own time column (what partitions and gap entries are cut by).

    A trade's event time is when Binance pushed it, a little after the trade: a gap bounded by
    event times could start after a lost trade's own time and miss it.
    """
    t = type(rec)
    if t is TradeRecord:
        return rec.trade_time  # type: ignore[union-attr]
    if t is CandleRecord:
        return rec.open_time  # type: ignore[union-attr]
    return rec.event_time  # type: ignore[union-attr]


#: positions remembered per stream for de-duplication (the exchange may reorder a little)
DEDUP_WINDOW = 4096
#: trade ids missing for this long (receipt ms) are recorded as an id gap
ID_GAP_GRACE_MS = 3000
#: frames are handed to the writer at the end of each burst, or once this many bytes wait
LAND_BATCH_BYTES = 256 << 10

_fast_decode = FAST_DECODER.decode

# Plausibility of a message for its stream, checked before de-duplication (integer work only).
# One corrupt frame must not become a stream's de-duplication floor, its highest trade id or a
# gap-ledger bound: a time far from its receipt or a position far from the stream's is rejected
# into the dead-letter store with the reason (issue 11, item 8).
#: a message's times may be this far ahead of its receipt (exchange and host clocks disagree by
#: ~1 s in real captures; a host whose clock is minutes off dead-letters with that reason)
MAX_FUTURE_MS = 10 * 60_000
#: ... and this far behind it (a stalled reader reads late; a day is corrupt, not late)
MAX_PAST_MS = 24 * 3_600_000
#: a position (trade id, depth update id, event time) may move this far from the stream's
#: highest accepted one, plus ``ID_JUMP_PER_MS`` per ms since the stream's last message: far
#: above Binance's busiest sequence (depth update ids, ~5e4/s on average across USD-M)
ID_JUMP_BASE = 10_000_000
ID_JUMP_PER_MS = 10_000


def implausible(
    top: int | None,
    top_recv: int,
    pos: int,
    pos_field: str,
    times: Sequence[tuple[str, int | None]],
    recv: int,
) -> tuple[str, str] | None:
    """(field, reason) when a message cannot be right for its stream; None when plausible.

    ``times`` are the message's (field, epoch ms) checked against its receipt ``recv``; ``pos``
    is checked against the stream's highest accepted position ``top`` (received at
    ``top_recv``), the first message of a stream has none.
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
        allowed = ID_JUMP_BASE + max(recv - top_recv, 0) * ID_JUMP_PER_MS
        if abs(pos - top) > allowed:
            return pos_field, (
                f"implausible position {pos}: {pos - top:+d} from the stream's highest "
                f"accepted {top} (at most {allowed} at this point)"
            )
    return None


def _record_times(rec: Record) -> tuple[tuple[str, int | None], ...]:
    """The (field, time) pairs of a record checked against its receipt time."""
    t = type(rec)
    if t is TradeRecord:
        return (("data.E", rec.event_time), ("data.T", rec.trade_time))  # type: ignore[union-attr]
    if t is CandleRecord:
        return (("data.E", rec.event_time), ("data.k.t", rec.open_time))  # type: ignore[union-attr]
    return (("data.E", rec.event_time),)  # type: ignore[union-attr]


_POS_FIELD: dict[type, str] = {TradeRecord: "data.a", DepthUpdateRecord: "data.u"}


@dataclass
class _Held:
    pos: int
    event_time: int
    recv: int
    raw: bytes
    rec: Record


@dataclass
class _StreamState:
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
    #: connection id whose messages are authoritative for this stream
    source: int = 0
    held: list[_Held] = field(default_factory=list)
    #: data time (see ``_data_time``) of the last message before an outage (gap opens there)
    outage_from: int | None = None
    outage_cause: str = "disconnect"

    def is_new(self, pos: int) -> bool:
        return pos not in self.seen and (self.floor is None or pos > self.floor)

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
        if prev is not None and abs(pos - prev) <= ID_JUMP_BASE:
            self._confirm_top(max(pos, prev))

    def _confirm_top(self, top: int) -> None:
        """Two positions agree: the stream's range is known. What an outlier among the
        unconfirmed first messages left in the trade-id bookkeeping is forgotten."""
        self.top = top
        if self.max_trade_id is not None and self.max_trade_id > top:
            self.max_trade_id = None
            self.max_trade_time = None
            self.missing = [m for m in self.missing if m[1] <= top]


@dataclass
class _Conn:
    id: int
    url: str
    ws: ClientConnection | None = None
    opened_mono: float = 0.0
    task: asyncio.Task | None = None
    messages: int = 0
    candidate: bool = False
    opened: bool = False


class IngestEngine:
    """Runs one stream group until :meth:`stop` (or cancellation); see the module docstring.

    ``clock_ms`` stamps receipt (tests pass the local exchange's clock); ``symbols_provider``
    is polled for the wanted symbols, so adding or removing one resubscribes the live
    connection without touching the other symbols' streams.
    """

    def __init__(
        self,
        config: IngestConfig,
        *,
        clock_ms: Callable[[], int] | None = None,
        rest_client: Any | None = None,
        symbols_provider: Callable[[], Sequence[str]] | None = None,
        run_id: str | None = None,
        on_heartbeat: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config = config
        self.adapter = get_adapter(config.exchange)
        self._wall_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last_recv = 0
        self.run_id = run_id
        self.on_heartbeat = on_heartbeat
        self.symbols_provider = symbols_provider
        self.symbols: list[str] = sorted({s.upper() for s in config.symbols})
        self.writer = LandingWriter(
            config.landing_path,
            config.exchange,
            config.group,
            config=config.writer,
            clock_ms=self._wall_ms,
        )
        self._rest = rest_client
        self.stats = GroupStats()
        self._streams: dict[tuple[type, str], _StreamState] = {}
        self._books: dict[str, BookSync] = {}
        #: fast-path routes: exchange symbol -> trade stream; stream name -> depth stream
        self._trade_routes: dict[str, _StreamState] = {}
        self._depth_routes: dict[str, tuple[DepthRoute, _StreamState, BookSync | None]] = {}
        self._batch = LineBatch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._snapshot_tasks: dict[str, asyncio.Task] = {}
        self._book_break_from: dict[str, int] = {}
        self.latest_samples: dict[str, BookSample] = {}
        self.samples_emitted = 0
        self._primary: _Conn | None = None
        self._candidate: _Conn | None = None
        self._conn_seq = 0
        self._attempt = 0
        self._next_connect = 0.0
        self._connecting = False
        self._stop = asyncio.Event()
        #: what waits while the writer refuses (in order); a deque: draining a long backlog
        #: with list.pop(0) cost O(n) per item, quadratic on the loop just when it is behind
        self._blocked: collections.deque[tuple[int, bytes | None, Any]] = collections.deque()
        self._request_id = 0
        self._started_ms = 0
        self._last_checkpoint = time.monotonic()
        self._metrics_server: Any = None
        self.last_snapshot: dict[str, Any] | None = None
        self._rotation_retry_at = 0.0
        self.metrics_port: int | None = None
        self._sync_streams()

    # -- public ----------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Receipt clock, never going backwards (segments are filed by receipt hour)."""
        t = self._wall_ms()
        if t < self._last_recv:
            return self._last_recv
        self._last_recv = t
        return t

    def stop(self) -> None:
        """Ask :meth:`run` to flush, close and return (safe from any coroutine)."""
        self._stop.set()

    @property
    def connected(self) -> bool:
        return self._primary is not None and self._primary.ws is not None

    def stream_names(self, symbols: Sequence[str] | None = None) -> list[str]:
        """Every stream of the group; the 1 s mark price is always in (it is the liveness probe)."""
        datasets = list(dict.fromkeys([*self.config.datasets, "funding"]))
        return self.adapter.stream_names(symbols if symbols is not None else self.symbols, datasets)

    async def run(self) -> None:
        """Ingest until :meth:`stop`; always flushes and publishes what was landed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        await loop.run_in_executor(None, self.writer.start)
        self._started_ms = self.now_ms()
        await asyncio.to_thread(self._record_restart_gap)  # reads the newest landed segments
        if self.config.metrics_port is not None:
            from petrosa_pipelines.ingest.metrics import serve_metrics

            self._metrics_server = serve_metrics(self.config.metrics_port, self._last_snapshot)
            self.metrics_port = self._metrics_server.server_address[1]
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            while not self._stop.is_set():
                self._manage()
                if self.writer.error is not None:
                    raise RuntimeError("landing writer failed") from self.writer.error
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
        finally:
            await self._shutdown(heartbeat)

    # -- connection management ------------------------------------------------------------------
    def _manage(self) -> None:
        now = time.monotonic()
        if self._primary is None and not self._connecting and now >= self._next_connect:
            self._open(candidate=False)
        p = self._primary
        if (
            p is not None
            and p.ws is not None
            and self._candidate is None
            and not self._connecting
            and now - p.opened_mono >= self.config.max_connection_age_s
            and now >= self._rotation_retry_at
        ):
            self._open(candidate=True)
        c = self._candidate
        if c is not None and c.ws is not None:
            switched = all(s.source == c.id for s in self._streams.values())
            if switched or now - c.opened_mono >= self.config.rotation_overlap_s:
                self._finish_rotation()
        self.flush_landing()  # normally done at the end of each burst already
        self._request_snapshots()
        if now - self._last_checkpoint >= self.config.book_checkpoint_s:
            self._last_checkpoint = now
            self._checkpoint_books()
        if self.symbols_provider is not None:
            self._maybe_poll_symbols(now)

    def _open(self, *, candidate: bool) -> None:
        self._conn_seq += 1
        url = self.adapter.combined_stream_url(self.config.ws_base_url, self.stream_names())
        conn = _Conn(self._conn_seq, url, candidate=candidate)
        self._connecting = True
        conn.task = asyncio.create_task(self._connection(conn), name=f"ws-{conn.id}")

    async def _connection(self, conn: _Conn) -> None:
        cfg = self.config
        try:
            async with connect(
                conn.url,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                open_timeout=cfg.open_timeout_s,
                close_timeout=2,
                max_size=2**22,
                compression=None,
            ) as ws:
                self._connecting = False
                conn.ws = ws
                conn.opened = True
                conn.opened_mono = time.monotonic()
                self.stats.connections_opened += 1
                self._on_open(conn)
                recv = ws.recv
                on_frame = self._on_frame
                while True:
                    raw = await recv(decode=False)
                    on_frame(conn, raw, self.now_ms())
                    if self._blocked:
                        await self._drain_blocked()
        except asyncio.CancelledError:
            raise
        except (WebSocketException, OSError, TimeoutError) as exc:
            log.info("connection %s closed: %r", conn.id, exc)
        finally:
            if not conn.opened:
                self._connecting = False
            conn.ws = None
            self._on_close(conn)

    def _on_open(self, conn: _Conn) -> None:
        if conn.candidate:
            self._candidate = conn
            log.info("rotation: connection %s opened beside %s", conn.id, self._primary)
            return
        if self._primary is not None and self._primary is not conn:  # pragma: no cover
            raise AssertionError("two primaries")
        if self.stats.connections_opened > 1:
            self.stats.reconnects += 1
        self._primary = conn
        for st in self._streams.values():
            st.source = conn.id
            st.held.clear()

    def _on_close(self, conn: _Conn) -> None:
        now_ms = self.now_ms()
        if conn is self._candidate:
            self._candidate_closed(conn, now_ms)
            return
        if conn is self._primary:
            c = self._candidate
            if c is not None and c.ws is not None:
                # the old connection ended during the overlap: the candidate takes over
                self._primary = None
                self._promote(c)
                return
            self._drop_primary(conn, now_ms)
            return
        if not conn.opened and not self._stop.is_set():
            # a connection attempt failed: back off before the next one
            if conn.candidate:
                self._rotation_retry_at = time.monotonic() + self.config.backoff_max_s / 10
            elif self._primary is None:
                self._schedule_reconnect()

    def _candidate_closed(self, conn: _Conn, now_ms: int) -> None:
        """A rotation's new connection ended before the old one was retired."""
        self._candidate = None
        if self._stop.is_set():
            return
        # try the rotation again a little later, not on the next tick
        self._rotation_retry_at = time.monotonic() + self.config.backoff_max_s / 10
        for st in self._streams.values():
            if st.source != conn.id:
                st.held.clear()
        carried = [st for st in self._streams.values() if st.source == conn.id]
        old = self._primary
        if carried and old is not None and old.ws is not None:
            # the streams that had switched go back to the old connection, which still carries
            # them; what it sent meanwhile was discarded as the candidate's, so each of those
            # streams has a gap until its next message
            self.stats.disconnects += 1
            for st in carried:
                st.source = old.id
                if st.outage_from is None:
                    st.outage_from = st.stats.last_data_ms or now_ms
                    st.outage_cause = "disconnect"
            depth = {st.stats.symbol for st in carried if st.stats.dataset == "depth"}
            self._reset_books({s: b for s, b in self._books.items() if s in depth}, now_ms)
        elif carried:
            self._drop_primary(conn, now_ms)

    def _drop_primary(self, conn: _Conn, now_ms: int) -> None:
        self._primary = None
        if self._stop.is_set():
            return
        self.stats.disconnects += 1
        for st in self._streams.values():
            if st.outage_from is None:
                st.outage_from = st.stats.last_data_ms or now_ms
                st.outage_cause = "disconnect"
        self._reset_books(self._books, now_ms)
        self._schedule_reconnect()

    def _reset_books(self, books: dict[str, BookSync], now_ms: int) -> None:
        """Books cannot be trusted across a drop (diffs were missed): re-sync from a snapshot.

        The rebuild from landing does the same at each depth ledger window, so a sample is
        never taken from a book that was not re-synced after the break.
        """
        for sym, sync in books.items():
            if sync.book.synced:
                self._book_break_from.setdefault(sym, sync.book.last_event_time or now_ms)
            sync.reset()

    def _schedule_reconnect(self) -> None:
        cfg = self.config
        delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2**self._attempt)
        self._attempt += 1
        # full jitter: a fleet of ingests that lost the exchange together does not return together
        self._next_connect = time.monotonic() + random.uniform(0, delay)

    def _promote(self, c: _Conn) -> None:
        """Make the candidate the primary: release what it held, forget the old connection."""
        c.candidate = False
        self._candidate = None
        self._primary = c
        for st in self._streams.values():
            if st.source != c.id:
                self._switch(st, c.id)
        self.stats.rotations += 1

    def _finish_rotation(self) -> None:
        c = self._candidate
        old = self._primary
        assert c is not None
        self._primary = None
        self._promote(c)
        if old is not None and old.task is not None:
            old.candidate = True  # its close must not count as a drop
            old.task.cancel()

    def _switch(self, st: _StreamState, conn_id: int) -> None:
        st.source = conn_id
        held, st.held = st.held, []
        for h in held:
            if st.is_new(h.pos):
                self._accept(st, h.rec, h.raw, h.recv, h.pos)
            else:
                st.stats.duplicates += 1

    # -- hot path --------------------------------------------------------------------------------
    def _on_frame(self, conn: _Conn, raw: bytes, recv: int) -> None:
        """One frame: the fast path for trades and depth diffs, the full parser otherwise.

        Every early ``return self._on_frame_full(...)`` is a case the fast path does not vouch
        for (see ``fastpath``); the full parser then decides, exactly as without a fast path.
        """
        conn.messages += 1
        try:
            msg = _fast_decode(raw)
        except DECODE_ERRORS:
            return self._on_frame_full(conn, raw, recv)
        d = msg.data
        t = type(d)
        if t is BinanceAggTradeData:
            st = self._trade_routes.get(d.s)
            # a frame routes by its data symbol: its stream must be that symbol's trade stream
            if st is None or st.source != conn.id or msg.stream != st.stats.stream:
                return self._on_frame_full(conn, raw, recv)
            p = d.p
            q = d.q
            try:  # to_trade's checks, without building the TradeRecord
                ok = DEC_MIN <= p < DEC_MAX and DEC_MIN <= q < DEC_MAX and d.f <= d.l
            except InvalidOperation:  # NaN
                ok = False
            if not ok:
                return self._on_frame_full(conn, raw, recv)
            self._accept_trade(st, conn, raw, recv, d.a, d.T, d.E)
        elif t is FastDepth:
            route = self._depth_routes.get(msg.stream)
            if route is None or d.U > d.u:
                return self._on_frame_full(conn, raw, recv)
            droute, st, sync = route
            if st.source != conn.id:
                return self._on_frame_full(conn, raw, recv)
            try:
                levels = depth_levels(raw, droute, d)
            except DECODE_ERRORS:
                levels = None
            if levels is None:
                return self._on_frame_full(conn, raw, recv)
            self._accept_depth(st, sync, conn, raw, recv, d, levels[0], levels[1])
        else:
            self._on_frame_other(conn, msg.stream, d, raw, recv)
        return None

    def _on_frame_other(self, conn: _Conn, stream: str, d: Any, raw: bytes, recv: int) -> None:
        """kline, markPriceUpdate: the full parser's converter on the already decoded struct."""
        try:
            rec = CONVERTERS[type(d)](d, recv)
        except Exception:  # noqa: BLE001 - MessageError or worse: the full parser says why
            return self._on_frame_full(conn, raw, recv)
        if rec.symbol != stream_symbol(stream):
            return self._on_frame_full(conn, raw, recv)
        return self._on_record(conn, rec, raw, recv)

    def _accept_trade(
        self, st: _StreamState, conn: _Conn, raw: bytes, recv: int, a: int, trade_time: int, e: int
    ) -> None:
        """:meth:`_accept` of a fast-path trade (same steps, inlined, no record)."""
        top = st.top
        if (
            not (recv - MAX_PAST_MS <= e <= recv + MAX_FUTURE_MS)
            or not (recv - MAX_PAST_MS <= trade_time <= recv + MAX_FUTURE_MS)
            or (
                top is not None
                and abs(a - top) > ID_JUMP_BASE + (recv - st.top_recv) * ID_JUMP_PER_MS
            )
        ) and self._reject_implausible(
            st, raw, recv, a, "data.a", (("data.E", e), ("data.T", trade_time))
        ):
            return
        stats = st.stats
        stats.received += 1
        floor = st.floor
        if a in st.seen or (floor is not None and a <= floor):
            stats.duplicates += 1
            return
        st.remember(a, recv)
        outage = st.outage_from is not None
        if outage:
            self._gap(stats, st.outage_from, trade_time, st.outage_cause)  # type: ignore[arg-type]
            st.outage_from = None
        top = st.max_trade_id
        if top is not None and a == top + 1 and not st.missing:
            st.max_trade_id = a
            st.max_trade_time = trade_time
        else:
            self._track_trade_id(st, a, trade_time, recv, outage)
        if st.max_event is None or e > st.max_event:
            st.max_event = e
        self._land(recv, raw)
        stats.processed_one(recv, e, trade_time)
        self._after_accept(st, conn)

    def _reject_implausible(
        self,
        st: _StreamState,
        raw: bytes,
        recv: int,
        pos: int,
        pos_field: str,
        times: Sequence[tuple[str, int | None]],
    ) -> bool:
        """Dead-letter a message ``implausible`` rejects (True); False when it is plausible."""
        verdict = implausible(st.top, st.top_recv, pos, pos_field, times, recv)
        if verdict is None:
            return False
        self._dead_letter(raw, recv, verdict[1], verdict[0])
        return True

    def _after_accept(self, st: _StreamState, conn: _Conn) -> None:
        """Fast-path tail: finish a held rotation switch; a healthy connection resets backoff."""
        if st.held and st.held[0].event_time <= st.max_event:
            self._switch(st, self._candidate.id if self._candidate else st.source)
        if self._attempt and conn.messages > 1:
            self._attempt = 0

    def _accept_depth(
        self,
        st: _StreamState,
        sync: BookSync | None,
        conn: _Conn,
        raw: bytes,
        recv: int,
        d: FastDepth,
        bids: tuple[tuple[float, float], ...],
        asks: tuple[tuple[float, float], ...],
    ) -> None:
        """:meth:`_accept` of a fast-path depth diff (same steps, inlined, no record)."""
        u = d.u
        e = d.E
        top = st.top
        if (
            not (recv - MAX_PAST_MS <= e <= recv + MAX_FUTURE_MS)
            or (
                top is not None
                and abs(u - top) > ID_JUMP_BASE + (recv - st.top_recv) * ID_JUMP_PER_MS
            )
        ) and self._reject_implausible(st, raw, recv, u, "data.u", (("data.E", e),)):
            return
        stats = st.stats
        stats.received += 1
        floor = st.floor
        if u in st.seen or (floor is not None and u <= floor):
            stats.duplicates += 1
            return
        st.remember(u, recv)
        if st.outage_from is not None:
            self._gap(stats, st.outage_from, e, st.outage_cause)
            st.outage_from = None
        if st.max_event is None or e > st.max_event:
            st.max_event = e
        self._land(recv, raw)
        if sync is not None:
            result, samples = sync.on_update(e, d.U, u, d.pu, recv, bids, asks)
            if samples:
                self._samples(samples)
            if result is Applied.BREAK:
                self._book_broke(sync, stats, e)
        stats.processed_one(recv, e, e)
        self._after_accept(st, conn)

    def _on_frame_full(self, conn: _Conn, raw: bytes, recv: int) -> None:
        """The general path: the full parser decides (record, control frame or dead letter)."""
        try:
            rec = self.adapter.parse(raw, recv)
        except MessageError as exc:
            self._dead_letter(raw, recv, exc.reason, exc.field)
            return
        except Exception as exc:  # noqa: BLE001 - one frame never takes the connection down
            reason = f"parser failed: {type(exc).__name__}: {str(exc)[:200]}"
            self._dead_letter(raw, recv, reason, "<message>")
            return
        if rec is None:
            return
        self._on_record(conn, rec, raw, recv)

    def _on_record(self, conn: _Conn, rec: Record, raw: bytes, recv: int) -> None:
        st = self._streams.get((type(rec), rec.symbol))
        if st is None:
            self._dead_letter(raw, recv, f"not subscribed: {rec.symbol}", "data.s")
            return
        pos = _position(rec)
        pos_field = _POS_FIELD.get(type(rec), "data.E")
        if self._reject_implausible(st, raw, recv, pos, pos_field, _record_times(rec)):
            return
        stats = st.stats
        stats.received += 1
        if conn.id != st.source:
            if conn is self._candidate:
                st.held.append(_Held(pos, rec.event_time or 0, recv, raw, rec))
                # streams are sent in event-time order: once the old connection has reached the
                # candidate's first event time, it has delivered everything before it
                if st.max_event is not None and st.held[0].event_time <= st.max_event:
                    self._switch(st, conn.id)
            else:
                stats.duplicates += 1  # the old connection after its streams switched
            return
        if not st.is_new(pos):
            stats.duplicates += 1
            return
        self._accept(st, rec, raw, recv, pos)
        if st.held and st.max_event is not None and st.held[0].event_time <= st.max_event:
            self._switch(st, self._candidate.id if self._candidate else st.source)
        if self._attempt and conn.messages > 1:
            self._attempt = 0

    def _accept(self, st: _StreamState, rec: Record, raw: bytes, recv: int, pos: int) -> None:
        stats = st.stats
        st.remember(pos, recv)
        event_time = rec.event_time  # type: ignore[union-attr]
        data_time = _data_time(rec)
        outage = st.outage_from is not None
        if outage:
            self._gap(stats, st.outage_from, data_time or recv, st.outage_cause)  # type: ignore[arg-type]
            st.outage_from = None
        t = type(rec)
        if t is TradeRecord:
            self._track_trade_id(st, rec.agg_trade_id, rec.trade_time, recv, outage)  # type: ignore[union-attr]
        if event_time is not None and (st.max_event is None or event_time > st.max_event):
            st.max_event = event_time
        self._land(recv, raw)
        if t is DepthUpdateRecord:
            self._on_depth(rec, stats)  # type: ignore[arg-type]
        stats.processed_one(recv, event_time, data_time)

    def _track_trade_id(
        self, st: _StreamState, a: int, trade_time: int, recv: int, after_outage: bool
    ) -> None:
        """Aggregate trade ids are consecutive: an id still missing after a grace is a gap.

        The grace absorbs small reorderings (ids arriving a little late); an outage already
        has its own gap entry, so the jump right after it is not recorded twice.
        """
        top = st.max_trade_id
        if top is None or a > top:
            prev_time = st.max_trade_time
            st.max_trade_id, st.max_trade_time = a, trade_time
            if top is None or after_outage:
                return
            if a > top + 1:
                t0 = prev_time if prev_time is not None else trade_time
                st.missing.append([top + 1, a - 1, t0, trade_time, recv + ID_GAP_GRACE_MS])
        elif st.missing:
            for i, (lo, hi, t0, t1, dl) in enumerate(st.missing):
                if lo <= a <= hi:
                    pieces = [p for p in ([lo, a - 1, t0, t1, dl], [a + 1, hi, t0, t1, dl])
                              if p[0] <= p[1]]  # fmt: skip
                    st.missing[i : i + 1] = pieces
                    break
        if st.missing and st.missing[0][4] <= recv:
            self._record_id_gaps(st, recv)

    def _record_id_gaps(self, st: _StreamState, until_recv: int | None = None) -> None:
        """Ledger the missing id ranges whose grace ended (all of them at shutdown)."""
        due: list[list[int]] = []
        keep: list[list[int]] = []
        for m in st.missing:
            (due if until_recv is None or m[4] <= until_recv else keep).append(m)
        st.missing = keep
        for lo, hi, t0, t1, _ in due:
            self._gap(st.stats, t0, t1, "id_gap", f"agg_trade_id {lo}..{hi}")

    def _land(self, recv: int, raw: bytes) -> None:
        """Batch the frame for the writer; the batch goes at the end of the burst (or when
        big, or when the receipt hour changes). While the writer refuses (queue and spill
        full), frames wait in ``_blocked`` in order and the socket is not read."""
        batch = self._batch
        if batch.lines and recv >= batch.hour_end:
            self.flush_landing()
        if self._blocked:
            self._blocked.append((recv, format_line(recv, raw), None))
            return
        batch.add(recv, raw)
        if batch.nbytes >= LAND_BATCH_BYTES:
            self.flush_landing()
        elif not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush_landing)

    def flush_landing(self) -> None:
        """Hand the batched frames to the writer (what the end of a socket burst does)."""
        self._flush_scheduled = False
        if self._batch.lines:
            for recv, line in self.writer.put_batch(self._batch):
                self._blocked.append((recv, line, None))

    async def _drain_blocked(self) -> None:
        """The writer's queue and spill are full: hold the socket (back-pressure), never drop."""
        while self._blocked:
            recv, line, item = self._blocked[0]
            if item is None:
                ok = self.writer.put_line(recv, line)
            elif isinstance(item, GapRecord):
                ok = self.writer.record_gap(item)
            else:
                ok = self.writer.put_snapshot(*item)
            if ok:
                self._blocked.popleft()
            else:
                await asyncio.sleep(0.01)

    def _dead_letter(self, raw: bytes, recv: int, reason: str, fld: str) -> None:
        self.stats.dead_letters += 1
        stream = None
        if raw[:11] == _STREAM_HEAD:
            end = raw.find(b'"', 11)
            stream = raw[11:end].decode(errors="replace") if end > 0 else None
        st = next((s for s in self._streams.values() if s.stats.stream == stream), None)
        if st is not None:
            st.stats.received += 1
            st.stats.failed += 1
        else:
            self.stats.unknown_stream_failures += 1
        if self._blocked or not self.writer.put_dead_letter(recv, raw, reason, fld):
            # rare enough to wait for in place; the payload is already in the writer's format
            deadline = time.monotonic() + 30
            while not self.writer.put_dead_letter(recv, raw, reason, fld):
                if time.monotonic() > deadline:
                    raise RuntimeError("dead-letter store is not accepting writes")
                time.sleep(0.01)

    def _gap(self, stats: StreamStats, start: int, end: int, cause: str, detail: str = "") -> None:
        stats.gaps += 1
        self.stats.gaps_recorded += 1
        gap = GapRecord(
            dataset=stats.dataset,
            symbol=stats.symbol,
            start_ms=min(start, end),
            end_ms=max(start, end),
            cause=cause,
            recorded_at=self.now_ms(),
            group=self.config.group,
            detail=detail,
        )
        # queued, not written here: the writer thread makes it durable before any line queued
        # after it (``landing.writer``), so a burst of gaps costs the event loop no disk I/O
        if not self.writer.record_gap(gap):
            self._blocked.append((gap.recorded_at, None, gap))
        log.info("gap %s %s %s..%s %s", gap.dataset, gap.symbol, start, end, cause)

    # -- order books -----------------------------------------------------------------------------
    def _on_depth(self, d: DepthUpdateRecord, stats: StreamStats) -> None:
        sync = self._books.get(d.symbol)
        if sync is None:
            return
        result, samples = sync.on_diff(d)
        if samples:
            self._samples(samples)
        if result is Applied.BREAK:
            self._book_broke(sync, stats, d.event_time)

    def _book_broke(self, sync: BookSync, stats: StreamStats, event_time: int) -> None:
        """A diff broke the sequence: count it; the gap opens at the book's last event."""
        stats.resyncs += 1
        sym = sync.book.symbol
        self._book_break_from.setdefault(sym, sync.book.last_event_time or event_time)
        if sync.book.last_event_time is None:
            self._book_break_from[sym] = event_time

    def _samples(self, samples: list[BookSample]) -> None:
        self.samples_emitted += len(samples)
        self.latest_samples[samples[-1].symbol] = samples[-1]

    def _request_snapshots(self) -> None:
        if self._primary is None or self._primary.ws is None:
            return
        for sym, sync in self._books.items():
            if sync.book.synced or not sync.buffer or sym in self._snapshot_tasks:
                continue
            self._snapshot_tasks[sym] = asyncio.create_task(self._fetch_snapshot(sym))

    def _rest_client(self) -> Any:
        if self._rest is None:
            from petrosa_pipelines.settings import ExchangeEndpoints, Settings

            endpoints = ExchangeEndpoints(
                rest_base_url=self.config.rest_base_url, ws_base_url=self.config.ws_base_url
            )
            self._rest = self.adapter.rest_client(Settings(endpoints=endpoints))
        return self._rest

    async def _fetch_snapshot(self, sym: str) -> None:
        try:
            client = self._rest_client()
            snap = await asyncio.to_thread(
                client.depth_snapshot, sym, self.config.depth_snapshot_limit
            )
        except Exception as exc:  # noqa: BLE001 - retried on the next manage tick
            log.warning("depth snapshot %s failed: %r", sym, exc)
            await asyncio.sleep(1.0)
            self._snapshot_tasks.pop(sym, None)
            return
        sync = self._books.get(sym)
        if sync is None or sync.book.synced:
            self._snapshot_tasks.pop(sym, None)
            return
        snap = msgspec.structs.replace(snap, received_at=self.now_ms())
        # landed at the point in the stream where the book takes it, so a replay agrees
        self._land_snapshot(snap, b"depth_snapshot")
        ok, samples = sync.on_snapshot(snap)
        if samples:
            self._samples(samples)
        if ok:
            since = self._book_break_from.pop(sym, None)
            if since is not None:
                st = self._streams.get((DepthUpdateRecord, sym))
                end = sync.book.last_event_time or snap.event_time or snap.received_at
                if st is not None and end is not None:
                    self._gap(st.stats, since, end, "sequence_break", "book resynced")
        else:
            # the snapshot is older than the buffered diffs (a diff went missing while we were
            # catching up): that is a break too; wait a little and fetch again
            self._book_break_from.setdefault(sym, snap.event_time or snap.received_at or 0)
            await asyncio.sleep(0.2)
        self._snapshot_tasks.pop(sym, None)

    def _land_snapshot(self, snap: DepthSnapshotRecord, kind: bytes) -> None:
        self.flush_landing()  # the snapshot lands after the frames the book saw before it
        if self._blocked or not self.writer.put_snapshot(snap, kind):
            self._blocked.append((snap.received_at or 0, None, (snap, kind)))

    def _checkpoint_books(self) -> None:
        now = self.now_ms()
        for sync in self._books.values():
            if sync.book.synced:
                self._land_snapshot(
                    sync.book.checkpoint(self.config.exchange, now), BOOK_CHECKPOINT
                )

    # -- subscriptions ---------------------------------------------------------------------------
    def _sync_streams(self) -> None:
        """Create state for new symbols' streams; drop state of removed ones."""
        wanted: dict[tuple[type, str], tuple[str, str]] = {}
        datasets = list(dict.fromkeys([*self.config.datasets, "funding"]))
        type_of = {v: k for k, v in _DATASET_OF.items()}
        for sym in self.symbols:
            for ds in datasets:
                (name,) = self.adapter.stream_names([sym], [ds])
                wanted[(type_of[ds], sym)] = (name, ds)
        for key in [k for k in self._streams if k not in wanted]:
            del self.stats.streams[self._streams.pop(key).stats.stream]
        src = self._primary.id if self._primary else 0
        for key, (name, ds) in wanted.items():
            if key not in self._streams:
                self._streams[key] = _StreamState(StreamStats(name, ds, key[1]), source=src)
                self.stats.streams[name] = self._streams[key].stats
        if "depth" not in self.config.datasets:
            self._sync_routes()
            return
        cfg = self.config
        for sym in self.symbols:
            if sym not in self._books:
                self._books[sym] = BookSync(
                    sym, cadence_ms=cfg.depth_cadence_ms, top_n=cfg.depth_top_n
                )
        for sym in [s for s in self._books if s not in self.symbols]:
            del self._books[sym]
        self._sync_routes()

    def _sync_routes(self) -> None:
        """The fast path's lookups, rebuilt whenever streams or books change.

        Trades route by the symbol exactly as Binance sends it; symbols the full parser would
        reject (or only accept after upper-casing) get no route, so they take the full parser.
        """
        self._trade_routes = {}
        self._depth_routes = {}
        for (kind, sym), st in self._streams.items():
            if not _SYMBOL_RE.fullmatch(sym) or sym != sym.upper():
                continue
            if kind is TradeRecord:
                self._trade_routes[sym] = st
            elif kind is DepthUpdateRecord:
                route = DepthRoute(st.stats.stream, sym)
                self._depth_routes[st.stats.stream] = (route, st, self._books.get(sym))

    _last_symbols_poll = 0.0

    _symbols_poll: asyncio.Task | None = None

    def _maybe_poll_symbols(self, now: float) -> None:
        if now - self._last_symbols_poll < self.config.symbols_poll_s:
            return
        if self._symbols_poll is not None and not self._symbols_poll.done():
            return  # the previous poll is still waiting for its answer
        self._last_symbols_poll = now
        self._symbols_poll = asyncio.get_running_loop().create_task(self._poll_symbols())

    async def _poll_symbols(self) -> None:
        """Ask the provider off the event loop: in a Dagster run it queries the instance's
        storage, which the scheduled audit and health runs write to, and a query that waits
        for their locks must not hold up the frames."""
        assert self.symbols_provider is not None
        try:
            wanted = sorted({s.upper() for s in await asyncio.to_thread(self.symbols_provider)})
        except Exception as exc:  # noqa: BLE001 - keep ingesting the current set
            log.warning("symbols provider failed: %r", exc)
            return
        if wanted and wanted != self.symbols and not self._stop.is_set():
            await self.set_symbols(wanted)

    async def set_symbols(self, symbols: Sequence[str]) -> None:
        """Resubscribe the live connection to exactly ``symbols`` (others keep streaming)."""
        new = sorted({s.upper() for s in symbols})
        added = [s for s in new if s not in self.symbols]
        removed = [s for s in self.symbols if s not in new]
        if not added and not removed:
            return
        self.symbols = new
        self._sync_streams()
        ws = self._primary.ws if self._primary else None
        if ws is None:
            return  # the next connection's URL carries the new set
        # one control frame each: Binance allows 10 incoming messages per second
        if added:
            self._request_id += 1
            await ws.send(
                self.adapter.subscribe_message(self.stream_names(added), self._request_id)
            )
        if removed:
            self._request_id += 1
            await ws.send(
                self.adapter.unsubscribe_message(self.stream_names(removed), self._request_id)
            )

    # -- heartbeat, shutdown ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the heartbeat file, the run metadata and the metrics endpoint show."""
        now = self.now_ms()
        stale = int(self.config.stale_after_s * 1000)
        liveness = judge_liveness(self.stats.streams, now, stale, self.connected)
        if self._stop.is_set():
            liveness = STOPPED
        feed_alive = liveness == "alive"
        ws = self.writer.stats
        g = self.stats
        return {
            "exchange": self.config.exchange,
            "group": self.config.group,
            "run_id": self.run_id,
            "pid": os.getpid(),
            "written_at": now,
            "started_at": self._started_ms,
            "symbols": list(self.symbols),
            "connected": self.connected,
            "rotating": self._candidate is not None,
            "liveness": liveness,
            "group_stats": {
                k: getattr(g, k)
                for k in (
                    "connections_opened",
                    "reconnects",
                    "rotations",
                    "disconnects",
                    "dead_letters",
                    "gaps_recorded",
                    "unknown_stream_failures",
                )
            },
            "streams": {
                name: {**s.as_dict(), "status": s.status(now, stale, feed_alive)}
                for name, s in sorted(g.streams.items())
            },
            "books": {
                sym: {
                    "synced": b.book.synced,
                    "last_update_id": b.book.last_update_id,
                    "resyncs": b.breaks,
                    "syncs": b.syncs,
                }
                for sym, b in sorted(self._books.items())
            },
            "writer": {
                "lines_durable": ws.lines_durable,
                "dead_letters": ws.dead_letters,
                "segments_closed": ws.segments_closed,
                "recovered_segments": ws.recovered_segments,
                "queue_memory_bytes": self.writer.queue.memory_bytes,
                "queue_spill_bytes": self.writer.queue.spill_bytes,
                "spilled_total": self.writer.queue.spilled_total,
                # receipt -> durable over the last LATENCY_SLOTS minutes: what is happening now
                # (the since-start figure is a ratchet that one slow minute raises for good)
                "latency_window_s": LATENCY_SLOTS * LATENCY_SLOT_MS // 1000,
                "latency_p50_ms": ws.recent_latency_quantile(0.5, now),
                "latency_p99_ms": ws.recent_latency_quantile(0.99, now),
                "latency_p99_ms_since_start": ws.latency_quantile(0.99),
            },
        }

    def _last_snapshot(self) -> dict[str, Any] | None:
        return self.last_snapshot

    async def write_heartbeat(self) -> dict[str, Any]:
        """Take a snapshot on the loop (consistent), write the file off the loop."""
        snap = self.snapshot()
        self.last_snapshot = snap
        cfg = self.config
        await asyncio.to_thread(hb.write_heartbeat, cfg.landing_path, cfg.exchange, cfg.group, snap)
        if self.on_heartbeat is not None:
            self.on_heartbeat(snap)
        return snap

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.write_heartbeat()
            except Exception as exc:  # noqa: BLE001 - a heartbeat must not kill the ingest
                log.warning("heartbeat failed: %r", exc)
            await asyncio.sleep(self.config.heartbeat_interval_s)

    def _record_restart_gap(self) -> None:
        """If a previous run of this group stopped, its silence until now is a gap per stream.

        The gap opens at the stream's last *landed* data time, read from the landing zone: the
        previous heartbeat may count messages that never became durable (a kill -9 loses the
        writer's queue) or predate the last ones; it is only the fallback for streams whose
        data is older than the segments read.
        """
        cfg = self.config
        prev = hb.read_heartbeat(cfg.landing_path, cfg.exchange, cfg.group) or {}
        landed = LandingStore(cfg.landing_path).last_data_times(
            cfg.exchange, cfg.group, list(self._streams)
        )
        for key, st in self._streams.items():
            last = landed.get(key)
            if last is None:
                prev_stream = prev.get("streams", {}).get(st.stats.stream, {})
                last = prev_stream.get("last_data_ms") or prev_stream.get("last_event_ms")
            if last is not None:
                st.outage_from = last
                st.outage_cause = "writer_restart"

    def _record_open_outages(self) -> None:
        """At shutdown, ledger what is still broken: stream outages and books not re-synced.

        Nothing else would: an outage is written when the stream's first message is back,
        which does not happen in this run once it stops (chaos runs lost 1-2 trailing trades
        per run outside every ledger window this way).
        """
        now = self.now_ms()
        for st in self._streams.values():
            if st.outage_from is not None:
                self._gap(st.stats, st.outage_from, now, st.outage_cause, "open at shutdown")
                st.outage_from = None
        for sym, since in list(self._book_break_from.items()):
            st = self._streams.get((DepthUpdateRecord, sym))
            if st is not None:
                self._gap(st.stats, since, now, "sequence_break", "book not re-synced at shutdown")
        self._book_break_from.clear()

    async def _shutdown(self, heartbeat: asyncio.Task) -> None:
        self._stop.set()
        tasks = [c.task for c in (self._primary, self._candidate) if c and c.task]
        tasks += list(self._snapshot_tasks.values())
        if self._symbols_poll is not None:
            tasks.append(self._symbols_poll)
        for t in [*tasks, heartbeat]:
            t.cancel()
        await asyncio.gather(*tasks, heartbeat, return_exceptions=True)
        for st in self._streams.values():  # ids still missing now will not come in this run
            if st.missing:
                self._record_id_gaps(st)
        try:
            self._record_open_outages()
        except OSError as exc:  # the landing is still closed below; the next run's gap covers
            log.error("could not ledger the outages open at shutdown: %r", exc)
        self.flush_landing()
        while self._blocked:
            await self._drain_blocked()
        await asyncio.to_thread(self.writer.close)
        try:
            await self.write_heartbeat()
        except Exception as exc:  # noqa: BLE001
            log.warning("final heartbeat failed: %r", exc)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._rest is not None and hasattr(self._rest, "close"):
            with contextlib.suppress(Exception):
                self._rest.close()


def dumps_snapshot(snapshot: dict[str, Any]) -> bytes:
    return orjson.dumps(snapshot, option=orjson.OPT_INDENT_2)


__all__ = ["DISCONNECTED", "IngestEngine", "dumps_snapshot"]
