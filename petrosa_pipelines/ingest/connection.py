"""The ingest's websocket connections: open, subscribe, ping, reconnect, rotate.

One connection carries every stream of the group; what the venue needs is asked of its
adapter: the URL (``combined_stream_url``), the frames to send right after connecting
(``initial_messages``: venues that subscribe in-band, like Bybit) and application pings
(``ping_message`` every ``capabilities.ping_interval_s``, for venues that close a connection
without them; the websocket protocol's own pings run as well).

* **drops**: reconnect with exponential backoff and full jitter; the new connection subscribes
  every stream; each stream's outage becomes a gap-ledger entry when its first message is back.
* **rotation without loss** (venues cut connections at an age, Binance at 24 h): before the
  cut, a second connection is opened; its messages are held per stream until they overlap what
  the old connection delivered (a held event time at or below the last accepted one), then that
  stream switches over; the old connection closes once every stream switched (or after
  ``rotation_overlap_s``).

A mixin of ``IngestEngine`` (``engine.py``), which owns the state used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.ingest.streams import StreamState, data_time

log = logging.getLogger(__name__)


@dataclass
class Conn:
    """One websocket connection (``candidate``: a rotation's new one, beside the primary)."""

    id: int
    url: str
    ws: ClientConnection | None = None
    opened_mono: float = 0.0
    task: asyncio.Task | None = None
    messages: int = 0
    candidate: bool = False
    opened: bool = False
    #: the streams the connection subscribes when it opens
    streams: tuple[str, ...] = ()
    #: application pings sent on this connection
    pings: int = 0


class ConnectionMixin:
    """Connection management of the stream group (see the module docstring)."""

    def _manage(self) -> None:
        now = time.monotonic()
        if self._nats is not None:
            self._nats.manage()  # stands in for the connections (``nats_source``)
        else:
            self._manage_connections(now)
        self.flush_landing()  # normally done at the end of each burst already
        self._request_snapshots()
        if now - self._last_checkpoint >= self.config.book_checkpoint_s:
            self._last_checkpoint = now
            self._checkpoint_books()
        if self.symbols_provider is not None:
            self._maybe_poll_symbols(now)

    def _manage_connections(self, now: float) -> None:
        """Open the primary, start a rotation when it is old, finish a rotation."""
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

    def _open(self, *, candidate: bool) -> None:
        self._conn_seq += 1
        streams = tuple(self.stream_names())
        url = self.adapter.combined_stream_url(self.config.ws_base_url, streams)
        conn = Conn(self._conn_seq, url, candidate=candidate, streams=streams)
        self._connecting = True
        conn.task = asyncio.create_task(self._connection(conn), name=f"ws-{conn.id}")

    async def _connection(self, conn: Conn) -> None:
        cfg = self.config
        pinger: asyncio.Task | None = None
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
                await self._send_initial(ws, conn.streams)
                pinger = self._start_pings(conn, ws)
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
            if pinger is not None:
                pinger.cancel()
            if not conn.opened:
                self._connecting = False
            conn.ws = None
            self._on_close(conn)

    async def _send_initial(self, ws: ClientConnection, streams: Sequence[str]) -> None:
        """What the venue wants right after connecting (in-band subscription), if anything."""
        frames = self.adapter.initial_messages(streams, self._request_id + 1)
        if frames:
            self._request_id += 1
        for frame in frames:
            await ws.send(frame)

    def _start_pings(self, conn: Conn, ws: ClientConnection) -> asyncio.Task | None:
        """The venue's application pings on this connection, if it wants any."""
        interval = self.adapter.capabilities.ping_interval_s
        ping = self.adapter.ping_message()
        if not interval or ping is None:
            return None
        return asyncio.create_task(self._ping_loop(conn, ws, interval, ping))

    @staticmethod
    async def _ping_loop(conn: Conn, ws: ClientConnection, interval: float, ping: bytes) -> None:
        with contextlib.suppress(WebSocketException, OSError):
            while True:
                await asyncio.sleep(interval)
                await ws.send(ping)
                conn.pings += 1

    def _next_request_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def _on_open(self, conn: Conn) -> None:
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

    def _on_close(self, conn: Conn) -> None:
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

    def _candidate_closed(self, conn: Conn, now_ms: int) -> None:
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

    def _drop_primary(self, conn: Conn, now_ms: int) -> None:
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

    def _schedule_reconnect(self) -> None:
        cfg = self.config
        delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2**self._attempt)
        self._attempt += 1
        # full jitter: a fleet of ingests that lost the exchange together does not return together
        self._next_connect = time.monotonic() + random.uniform(0, delay)

    def _promote(self, c: Conn) -> None:
        """Make the candidate the primary: release what it held, forget the old connection.

        A stream still on the old connection never proved the overlap (its old connection did
        not reach the candidate's first held event, or the candidate held nothing yet): what
        lay between may be lost, so it gets a gap unless the stream proves continuity itself."""
        c.candidate = False
        self._candidate = None
        self._primary = c
        now_ms = self.now_ms()
        for st in self._streams.values():
            if st.source != c.id:
                # (at shutdown the stream just ends, nothing falls between connections)
                if not (self._stop.is_set() or self._overlap_proven(st) or st.outage_from):
                    st.outage_from = st.stats.last_data_ms or now_ms
                    st.outage_cause = "rotation_no_overlap"
                self._switch(st, c.id)
        self.stats.rotations += 1

    def _overlap_proven(self, st: StreamState) -> bool:
        """Nothing can have fallen between the two connections of ``st``'s rotation.

        Either the old connection reached the candidate's first held event time, or the
        stream's own numbering shows a hole when it is accepted (consecutive trade ids and a
        book's ``pu``/``u`` chain become ledger entries there); time-keyed streams (candles,
        mark price, tickers) have no such numbering."""
        if st.held and st.max_event is not None and st.held[0].event_time <= st.max_event:
            return True
        d = st.stats.dataset
        if d == "candles" and st.held and st.stats.last_data_ms is not None:
            # the dataset is the closed candles: the candidate starting inside the candle the old
            # connection was on still brings that candle's close, and every later one
            return (data_time(st.held[0].rec) or 0) <= st.stats.last_data_ms
        return d == "depth" or (d == "trades" and self.adapter.capabilities.trade_ids_consecutive)

    def _finish_rotation(self) -> None:
        c = self._candidate
        old = self._primary
        assert c is not None
        self._primary = None
        self._promote(c)
        if old is not None and old.task is not None:
            old.candidate = True  # its close must not count as a drop
            old.task.cancel()

    def _switch(self, st: StreamState, conn_id: int) -> None:
        """The stream's messages now come from ``conn_id``: accept what it held, if new."""
        st.source = conn_id
        held, st.held = st.held, []
        for h in held:
            snapshot = type(h.rec) is DepthSnapshotRecord
            if (
                (st.is_new_snapshot(h.pos) or self._snapshot_wanted(h.rec.symbol))
                if snapshot
                else st.is_new(h.pos)
            ):
                self._accept(st, h.rec, h.raw, h.recv, h.pos)
            else:
                st.stats.duplicates += 1
