"""The long-running websocket ingest of one stream group (asyncio), venue-neutral.

One connection carries every stream of the group. Each frame is stamped with its receipt time,
validated once (bad ones go to the dead-letter store), de-duplicated by a per-stream position
and handed to the landing writer, whose own thread makes it durable. Everything a venue defines
is asked of its adapter (``petrosa_pipelines.exchanges``): URL, subscribe and ping frames,
parser and optional fast path, and its declared ``capabilities`` (in-stream book snapshots or
REST ones; whether trade ids are consecutive, so that a missing one is a lost trade).

The engine is split by responsibility, one mixin each:

* ``connection``: connect, subscribe, ping, reconnect with backoff, rotation without loss;
* ``subscriptions``: the streams carried, fast-path routes, live symbol changes;
* ``hotpath``: the per-message path (plausibility, de-duplication, trade-id gaps);
* ``books``: order books, their snapshots (REST or in-stream), samples and checkpoints;
* ``sink``: batches, snapshots, gap entries and dead letters handed to the landing writer;

Frames come from the venue's websocket, or from a NATS subject (``config.source == "nats"``:
``nats_source``, which hands each message to the same hot path and stands in for the
connection manager).

And this module: construction, the run loop, the heartbeat (statistics per stream and a
liveness judgement, written under the landing root for the supervisor sensor and served as
Prometheus text) and a shutdown that ledgers whatever is still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from petrosa_pipelines.exchanges.base import DepthUpdateRecord, ExchangeAdapter
from petrosa_pipelines.ingest import heartbeat as hb
from petrosa_pipelines.ingest.books import BooksMixin
from petrosa_pipelines.ingest.config import IngestConfig, make_adapter
from petrosa_pipelines.ingest.connection import Conn, ConnectionMixin
from petrosa_pipelines.ingest.hotpath import HotPathMixin
from petrosa_pipelines.ingest.nats_source import NatsSource
from petrosa_pipelines.ingest.sink import SinkMixin
from petrosa_pipelines.ingest.stats import DISCONNECTED, STOPPED, GroupStats, judge_liveness
from petrosa_pipelines.ingest.streams import StreamState
from petrosa_pipelines.ingest.subscriptions import SubscriptionsMixin
from petrosa_pipelines.landing.store import LandingStore
from petrosa_pipelines.landing.writer import LATENCY_SLOT_MS, LATENCY_SLOTS, LandingWriter
from petrosa_pipelines.live import LiveOutputs
from petrosa_pipelines.settings import mask_url

log = logging.getLogger(__name__)


class IngestEngine(ConnectionMixin, SubscriptionsMixin, HotPathMixin, BooksMixin, SinkMixin):
    """Runs one stream group until :meth:`stop` (or cancellation); see the module docstring.

    ``clock_ms`` stamps receipt (tests pass the local exchange's clock); ``symbols_provider``
    is polled for the wanted symbols, so adding or removing one resubscribes the live
    connection without touching the other symbols' streams. ``adapter`` replaces the one
    ``config.exchange`` names (a venue id or storage name, ``exchanges.get_adapter``).
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
        adapter: ExchangeAdapter | None = None,
        live: LiveOutputs | None = None,
    ):
        self.config = config
        self.adapter = (
            adapter if adapter is not None else make_adapter(config.exchange, config.stream_profile)
        )
        self._own_adapter = adapter is not None
        #: the venue's directory in the landing zone (Binance USD-M: ``binance``)
        self.exchange: str = self.adapter.name
        self._init_venue()
        self._wall_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last_recv = 0
        self.run_id = run_id
        self.on_heartbeat = on_heartbeat
        self.symbols_provider = symbols_provider
        self.symbols: list[str] = sorted({s.upper() for s in config.symbols})
        self.writer = LandingWriter(
            config.landing_path,
            self.exchange,
            config.group,
            config=config.writer,
            clock_ms=self._wall_ms,
        )
        self.stats = GroupStats()
        self._streams: dict[tuple[type, str], StreamState] = {}
        #: fast-path routes: symbol as sent -> trade stream; stream name -> depth stream
        self._trade_routes: dict[str, StreamState] = {}
        self._depth_routes: dict[str, tuple[StreamState, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_sink(live if live is not None else LiveOutputs.from_env(self.adapter))
        self._init_books(rest_client)
        self._primary: Conn | None = None
        self._candidate: Conn | None = None
        self._conn_seq = 0
        self._attempt = 0
        self._next_connect = 0.0
        self._connecting = False
        self._stop = asyncio.Event()
        self._request_id = 0
        self._started_ms = 0
        self._last_checkpoint = time.monotonic()
        self._metrics_server: Any = None
        self.last_snapshot: dict[str, Any] | None = None
        self._rotation_retry_at = 0.0
        self.metrics_port: int | None = None
        self._sync_streams()
        #: the NATS source standing in for the websocket connections (``config.source``)
        self._nats: NatsSource | None = NatsSource(self) if config.source == "nats" else None

    def _init_venue(self) -> None:
        """What the hot path asks of the venue, looked up once."""
        adapter = self.adapter
        hook = getattr(adapter, "fast_path", None)
        self._fast = hook() if callable(hook) else None
        fast = self._fast
        self._fast_decode = fast.decode if fast is not None else None
        self._stream_of = fast.stream_of if fast is not None else None
        self._wire_fields: dict[str, str] = dict(getattr(fast, "wire_fields", None) or {})
        #: record type -> (position field, time fields) as dead letters name them
        self._record_fields: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {}
        parse_frame = getattr(adapter, "parse_frame", None)
        self._parse_frame = parse_frame if callable(parse_frame) else None
        self._trade_ids_consecutive = adapter.capabilities.trade_ids_consecutive

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

    def source_info(self) -> dict[str, Any]:
        """Where frames come from, as heartbeats and run metadata show it (no credentials)."""
        if self._nats is not None:
            return self._nats.describe()
        return {"kind": "websocket", "url": mask_url(self.config.ws_base_url)}

    async def run(self) -> None:
        """Ingest until :meth:`stop`; always flushes and publishes what was landed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        await loop.run_in_executor(None, self.writer.start)
        self._started_ms = self.now_ms()
        if self._nats is not None and self._nats.jetstream:
            # nothing was missed while stopped (the stream kept it): read back what landed, so
            # what comes again is dropped as duplicates (``nats_source``)
            await asyncio.to_thread(self._nats.seed_from_landing)
        else:
            await asyncio.to_thread(self._record_restart_gap)  # reads the newest segments
        if self.config.metrics_port is not None:
            from petrosa_pipelines.ingest.metrics import serve_metrics

            self._metrics_server = serve_metrics(self.config.metrics_port, self._last_snapshot)
            self.metrics_port = self._metrics_server.server_address[1]
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        if self._nats is not None:
            self._nats.start()
        try:
            while not self._stop.is_set():
                self._manage()
                if self.writer.error is not None:
                    raise RuntimeError("landing writer failed") from self.writer.error
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
        finally:
            await self._shutdown(heartbeat)

    # -- heartbeat, shutdown ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the heartbeat file, the run metadata and the metrics endpoint show."""
        now = self.now_ms()
        stale = int(self.config.stale_after_s * 1000)
        if self._nats is not None:
            liveness = self._nats.liveness(now, stale)
        else:
            liveness = judge_liveness(self.stats.streams, now, stale, self.connected)
        if self._stop.is_set():
            liveness = STOPPED
        feed_alive = liveness == "alive"
        ws = self.writer.stats
        g = self.stats
        return {
            "exchange": self.exchange,
            "venue": self.adapter.venue,
            "group": self.config.group,
            "run_id": self.run_id,
            "pid": os.getpid(),
            "written_at": now,
            "started_at": self._started_ms,
            "symbols": list(self.symbols),
            "live": self.live_stats(),
            "source": self.source_info(),
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
        root, group = self.config.landing_path, self.config.group
        await asyncio.to_thread(hb.write_heartbeat, root, self.exchange, group, snap)
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
        prev = hb.read_heartbeat(cfg.landing_path, self.exchange, cfg.group) or {}
        # an injected adapter may be a venue outside the registry (tests): the store replays
        # with fresh instances of its class (adapters may keep per-symbol state)
        adapters = {self.exchange: self.adapter} if self._own_adapter else None
        store = LandingStore(cfg.landing_path, adapters)
        landed = store.last_data_times(self.exchange, cfg.group, list(self._streams))
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
        if self._nats is not None:
            await self._nats.stop_reading()
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
        landed = False
        try:
            await asyncio.to_thread(self.writer.close)
            landed = True
        finally:
            if self._nats is not None:  # acknowledge only what the writer made durable
                await self._nats.finish(landed)
        await self._close_live()  # publish what the live outputs buffer (bounded wait)
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
