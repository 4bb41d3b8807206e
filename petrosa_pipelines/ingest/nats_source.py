"""NATS as an ingest source: a stream group's frames from a NATS subject instead of a websocket.

The Petrosa socket-client publishes each raw Binance futures frame on
``binance.futures.websocket.data`` wrapped in an envelope (``{"stream": "btcusdt@trade",
"data": {...}, "timestamp": "...Z", "message_id": ..., "source": "binance-websocket",
"version": "1.0"}``, plus OpenTelemetry keys; ``socket_client/models/message.py`` of
https://github.com/PetroSa2/petrosa-socket-client). Each message's bytes go through the
engine's hot path unchanged (``IngestEngine._on_frame``): the same plausibility checks, dead
letters, de-duplication, trade-id gaps, books and statistics, and the envelope is what lands
(the sender's timestamp kept beside our receipt time). The venue's adapter parses envelopes.

* **Filter.** The subject carries every symbol the publisher follows: a message for a symbol
  outside the group, or for a stream of a dataset the group does not carry, is counted
  (``filtered_symbol`` / ``filtered_dataset``), not landed and not a dead letter. A message
  without a readable ``stream`` goes to the parser, which lands or dead-letters it.
* **JetStream** (``nats_stream`` set: a stream capturing the subject). A durable push consumer
  (explicit acks, at most ``nats_max_ack_pending`` in flight) delivers; each burst is handed to
  the landing writer and acknowledged once the writer's durable mark passes it
  (``LandingWriter.queued_mark`` / ``durable_mark``), so a kill -9 loses nothing:
  unacknowledged messages come again. At start the consumer is recreated at its ack floor
  (what was acknowledged stays acknowledged, the rest is delivered again at once and in order,
  not after ``ack_wait``) and the newest landed lines (at least ``nats_max_ack_pending``) are
  read back into the streams' de-duplication state, so a message that landed but was not
  acknowledged before the kill is dropped as a duplicate: nothing doubles.
* **Core NATS** (no ``nats_stream``): a subscriber that is down misses messages, so misses
  are ledgered for the partition fill: trade-id gaps and depth ``pu``/``u`` breaks (the hot
  path's own checks), a disconnect opens an outage on every stream (ledgered when its data is
  back, or at shutdown), a slow-consumer drop ledgers every stream from its last landed data
  to now, and so does the restart (the engine's ``writer_restart`` gap).
* **Silence** (both): a stream with no message for ``stale_after_s`` while the connection is
  up is an outage (``nats_silence``), ledgered when its data is back or at shutdown: the
  market never stops for that long on the streams a group carries, the publisher did.

The server URL may carry a token or password: it is only logged, tagged and reported as its
hosts (``settings.nats_hosts``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, MessageError
from petrosa_pipelines.ingest.config import make_adapter
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.ingest.stats import ALIVE, DEAD_FEED, DISCONNECTED, STARTING
from petrosa_pipelines.ingest.streams import DATASET_OF, data_time, position
from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.store import iter_segment_lines
from petrosa_pipelines.settings import nats_hosts, redact

log = logging.getLogger(__name__)

#: the envelope's stream name (the first ``"stream"`` key; Binance payloads have none)
_STREAM_RE = re.compile(rb'"stream"\s*:\s*"([^"\\]{1,256})"')
#: a slow-consumer drop is ledgered up to this far past its receipt (exchange vs host clocks)
DROP_SLACK_MS = 5_000
#: extra landed lines read back at a JetStream start beyond ``nats_max_ack_pending``
SEED_MARGIN_LINES = 1_000


def _delivered(reply: str | None) -> int:
    """How often JetStream delivered a message, from its ack subject (``$JS.ACK.<stream>.
    <consumer>.<delivered>...``, or with domain and account hash in front: 12+ tokens); what
    ``Msg.metadata`` parses, without building it for every message."""
    if not reply:
        return 0
    tokens = reply.split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 0


def envelope_stream(raw: bytes) -> str | None:
    """The ``stream`` of an envelope (or of a Binance combined-stream frame), None if absent."""
    m = _STREAM_RE.search(raw)
    return m.group(1).decode("ascii", "replace") if m else None


class NatsLink:
    """What the engine's websocket-speaking code sees on a NATS source: (un)subscribe frames
    mean nothing on a subject (its publisher decides what it carries; the filter decides what
    lands), so they are dropped."""

    async def send(self, frame: bytes) -> None:  # noqa: ARG002 - the websocket's signature
        return None


class StreamFilter:
    """Which envelope streams a group lands (see the module docstring)."""

    def __init__(self, adapter: Any, symbols: list[str], datasets: tuple[str, ...]):
        self.symbols = {s.upper() for s in symbols}
        carried = set(datasets) | {getattr(adapter, "liveness_stream", "funding")}
        self._stream_dataset = getattr(adapter, "stream_dataset", None)
        self.carried = carried
        # streams of the group's symbols for datasets it does not carry (venue's own names)
        other = []
        venue_datasets = {getattr(d, "value", d) for d in adapter.capabilities.datasets}
        for ds in sorted(venue_datasets - carried):
            with contextlib.suppress(ValueError, KeyError):
                other += adapter.stream_names(sorted(self.symbols), [ds])
        self.other = {s.lower() for s in other}

    def verdict(self, stream: str | None) -> str | None:
        """None: hand the frame to the hot path; else why it is filtered out."""
        if stream is None:
            return None
        symbol = stream.partition("@")[0].upper()
        if symbol not in self.symbols:
            return "symbol"
        if stream.lower() in self.other:
            return "dataset"
        if self._stream_dataset is not None:
            ds = self._stream_dataset(stream)
            if ds is not None and ds not in self.carried:
                return "dataset"
        return None


@dataclass
class NatsStats:
    """Counters of the NATS source (the heartbeat's ``source`` section)."""

    messages: int = 0
    filtered_symbol: int = 0
    filtered_dataset: int = 0
    acked: int = 0
    ack_pending: int = 0
    redelivered: int = 0
    slow_consumer_drops: int = 0
    silences: int = 0
    seeded_lines: int = 0
    connect_failures: int = 0


class NatsSource:
    """Feeds one ``IngestEngine`` from NATS (see the module docstring)."""

    def __init__(self, engine: Any):
        self.engine = engine
        cfg = engine.config
        self.config = cfg
        self.url = cfg.nats_url
        self.hosts = nats_hosts(cfg.nats_url)
        self.jetstream = cfg.nats_stream is not None
        self.stats = NatsStats()
        self.link = NatsLink()
        self.conn: Conn | None = None
        self.nc: Any = None
        self.task: asyncio.Task | None = None
        self._ack_task: asyncio.Task | None = None
        self._ack_wakeup = asyncio.Event()
        #: (writer mark, messages) waiting for the writer to make the mark durable
        self._pending: collections.deque[tuple[int, list[Any]]] = collections.deque()
        #: messages of the current burst, not yet sealed (``_seal``)
        self._batch_msgs: list[Any] = []
        self._seal_scheduled = False
        self._connected_ms: int | None = None
        self._stopping = False
        self._closed = asyncio.Event()
        #: set once the subscription (or consumer) is in place on the server
        self.ready = asyncio.Event()
        self._seed_data_ms: dict[tuple[type, str], int] = {}
        self._rebuild_filter()

    def _rebuild_filter(self) -> None:
        """The filter for the engine's current symbols (they change with ``set_symbols``)."""
        e = self.engine
        self._filter_symbols = e.symbols
        self.filter = StreamFilter(e.adapter, e.symbols, self.config.datasets)

    # -- what the engine calls -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The source as heartbeats, run tags and metadata show it (never the credentials)."""
        return {
            "kind": "nats",
            "hosts": self.hosts,
            "subject": self.config.nats_subject,
            "jetstream_stream": self.config.nats_stream,
            "durable": self.config.nats_durable if self.jetstream else None,
            **asdict(self.stats),
        }

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.ws is not None

    def liveness(self, now_ms: int, stale_ms: int) -> str:
        """Alive while any stream of the group had a message within ``stale_ms`` (the feed
        has no mark-price stream to tell a quiet market from a dead feed)."""
        streams = self.engine.stats.streams.values()
        if not any(s.last_message_ms is not None for s in streams):
            return STARTING if self.connected else DISCONNECTED
        if any(s.last_message_ms is not None and now_ms - s.last_message_ms <= stale_ms
               for s in streams):  # fmt: skip
            return ALIVE
        return DEAD_FEED if self.connected else DISCONNECTED

    def start(self) -> None:
        """Start reading (the engine's loop is running)."""
        self.task = asyncio.create_task(self._run(), name=f"nats-{self.config.group}")
        if self.jetstream:
            loop = asyncio.get_running_loop()
            wake = self._ack_wakeup.set

            def on_mark(_mark: int) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                    loop.call_soon_threadsafe(wake)

            self.engine.writer.add_mark_listener(on_mark)
            self._ack_task = asyncio.create_task(self._ack_loop(), name="nats-acks")

    def manage(self) -> None:
        """Each engine tick: open an outage on every stream silent for ``stale_after_s``."""
        if not self.connected or self._connected_ms is None:
            return
        e = self.engine
        now = e.now_ms()
        stale = int(self.config.stale_after_s * 1000)
        if now - self._connected_ms <= stale:
            return
        for key, st in e._streams.items():
            if st.outage_from is not None:
                continue
            last = st.stats.last_message_ms
            if last is None:
                last = self._connected_ms
            if now - last > stale:
                st.outage_from = st.stats.last_data_ms or self._seed_data_ms.get(key) or last
                st.outage_cause = "nats_silence"
                self.stats.silences += 1
                log.info("nats %s: %s silent for %d ms", self.hosts, st.stats.stream, now - last)

    async def stop_reading(self) -> None:
        """Stop taking messages (shutdown); what was delivered but not landed comes again."""
        self._stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def finish(self, landed: bool) -> None:
        """After the writer closed: acknowledge what it made durable (``landed``: it closed
        cleanly, so every line handed over is), then close the connection."""
        self._stopping = True
        if landed and self._batch_msgs:
            self._pending.append((self.engine.writer.queued_mark, self._batch_msgs))
            self._batch_msgs = []
        if self._ack_task is not None:
            self._ack_task.cancel()
            await asyncio.gather(self._ack_task, return_exceptions=True)
        try:
            if landed and self.nc is not None and not self.nc.is_closed:
                await self._ack_durable()
        finally:
            if self.nc is not None and not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await self.nc.flush(timeout=5)
                with contextlib.suppress(Exception):
                    await self.nc.close()

    # -- JetStream restart: read back what landed ------------------------------------------------
    def seed_from_landing(self) -> int:
        """Read the newest landed lines of the group into the streams' de-duplication state and
        trade-id tracking (blocking; before the first message). Returns the lines read.

        A restart is redelivered at most ``nats_max_ack_pending`` messages that may already
        have landed; they are the newest landed lines, so reading that many back drops them
        again as duplicates. The trade-id tracking continues from the last landed id, so ids
        lost while the group was down (a stream's retention ran out) are an id gap.
        """
        e = self.engine
        cfg = self.config
        want = cfg.nats_max_ack_pending + SEED_MARGIN_LINES
        base = layout.group_dir(Path(cfg.landing_path), e.exchange, cfg.group)
        chunks: list[list[tuple[int, bytes]]] = []
        count = 0
        for hour_dir in layout.hour_dirs_newest_first(base):
            for _, path in reversed(layout.closed_segments_in(hour_dir)):
                lines = [(r, p) for r, p in iter_segment_lines(path) if p[:1] != b"!"]
                chunks.append(lines)
                count += len(lines)
                if count >= want:
                    break
            if count >= want:
                break
        parse = make_adapter(e.exchange, getattr(e.adapter, "stream_profile", "")).parse_frame
        n = 0
        for lines in reversed(chunks):
            for recv, payload in lines:
                try:
                    recs = parse(payload, recv)
                except (MessageError, ValueError, RecursionError):
                    continue
                n += 1
                for rec in recs:
                    self._seed(rec, recv)
        self.stats.seeded_lines = n
        return n

    def _seed(self, rec: Any, recv: int) -> None:
        e = self.engine
        key = e._stream_key(rec)
        st = e._streams.get(key)
        if st is None:
            return
        pos = position(rec)
        if pos not in st.seen:
            st.remember(pos, recv)
        t = type(rec)
        if DATASET_OF.get(t) == "trades" and e._trade_ids_consecutive:
            if st.max_trade_id is None or pos > st.max_trade_id:
                st.max_trade_id, st.max_trade_time = pos, rec.trade_time
        ev = rec.event_time
        if ev is not None and (st.max_event is None or ev > st.max_event):
            st.max_event = ev
        dt = data_time(rec) if t is not DepthSnapshotRecord else rec.event_time
        if dt is not None and dt > self._seed_data_ms.get(key, -1):
            self._seed_data_ms[key] = dt

    # -- connection ------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Connect (retrying with backoff), read until stopped; reconnects are nats-py's."""
        cfg = self.config
        attempt = 0
        while not self._stopping:
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
                self.stats.connect_failures += 1
                delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2**attempt)
                attempt += 1
                log.warning(
                    "nats %s: cannot connect (%s), retrying in %.2fs",
                    self.hosts,
                    self._safe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            try:
                if self.jetstream:
                    await self._read_jetstream()
                else:
                    await self._read_core()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect from scratch
                why = self._safe(exc)
                log.warning("nats %s: reader failed (%s), reconnecting", self.hosts, why)
                self._on_disconnect()
                # acks of the old connection cannot be sent: those messages come again (the
                # consumer restarts at its ack floor) and are dropped as duplicates
                self._pending.clear()
                self.stats.ack_pending = 0
                with contextlib.suppress(Exception):
                    await self.nc.close()
                await asyncio.sleep(cfg.backoff_initial_s)

    def _safe(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self.url.split(","))

    async def _connect(self) -> None:
        import nats

        cfg = self.config
        e = self.engine
        self._closed = asyncio.Event()
        self.nc = await nats.connect(
            servers=self.url.split(","),
            name=f"petrosa-ingest-{cfg.group}",
            connect_timeout=cfg.open_timeout_s,
            # nats-py retries (re)connections itself, every this many seconds (with jitter)
            reconnect_time_wait=min(max(cfg.backoff_initial_s * 4, 0.1), cfg.backoff_max_s),
            max_reconnect_attempts=-1,
            ping_interval=cfg.ping_interval_s,
            max_outstanding_pings=3,
            allow_reconnect=True,
            error_cb=self._error_cb,
            disconnected_cb=self._disconnected_cb,
            reconnected_cb=self._reconnected_cb,
            closed_cb=self._closed_cb,
        )
        if self.conn is None:
            e._conn_seq += 1
            self.conn = Conn(e._conn_seq, f"nats://{self.hosts}")
            e._primary = self.conn
        else:
            e.stats.reconnects += 1
        self.conn.ws = self.link
        self.conn.opened = True
        self.conn.opened_mono = time.monotonic()
        e.stats.connections_opened += 1
        self._connected_ms = e.now_ms()
        for st in e._streams.values():
            st.source = self.conn.id
        log.info(
            "nats %s: connected, %s %s",
            self.hosts,
            "jetstream stream" if self.jetstream else "core subject",
            cfg.nats_stream if self.jetstream else cfg.nats_subject,
        )

    async def _error_cb(self, exc: Exception) -> None:
        import nats.errors

        if isinstance(exc, nats.errors.SlowConsumerError):
            self._on_drop()
            return
        if not self.connected and isinstance(exc, OSError | TimeoutError):
            # nats-py retries the (re)connection itself: count, log the 1st, 2nd, 4th, 8th...
            self.stats.connect_failures += 1
            n = self.stats.connect_failures
            if n & (n - 1) == 0 or n % 100 == 0:
                log.warning(
                    "nats %s: cannot connect (%s), attempt %d", self.hosts, self._safe(exc), n
                )
            return
        log.warning("nats %s: %s", self.hosts, self._safe(exc))

    async def _disconnected_cb(self) -> None:
        if not self._stopping:
            log.warning("nats %s: disconnected", self.hosts)
            self._on_disconnect()

    async def _reconnected_cb(self) -> None:
        if self.conn is None:
            return
        log.info("nats %s: reconnected", self.hosts)
        self.conn.ws = self.link
        self.engine.stats.reconnects += 1
        self._connected_ms = self.engine.now_ms()

    async def _closed_cb(self) -> None:
        self._closed.set()
        if not self._stopping:
            self._on_disconnect()

    def _on_disconnect(self) -> None:
        """Core NATS misses what is published meanwhile: every stream has an outage from its
        last data, and the books cannot be trusted. JetStream keeps it for us."""
        e = self.engine
        if self.conn is None or self.conn.ws is None:
            return
        self.conn.ws = None
        e.stats.disconnects += 1
        if self.jetstream or e._stop.is_set():
            return
        now = e.now_ms()
        for st in e._streams.values():
            if st.outage_from is None:
                st.outage_from = st.stats.last_data_ms or now
                st.outage_cause = "nats_disconnect"
        e._reset_books(e._books, now)

    def _on_drop(self) -> None:
        """The client dropped messages (our reader fell behind its buffer): ledger every stream
        from its last landed data to now (the dropped ones are the newest)."""
        e = self.engine
        self.stats.slow_consumer_drops += 1
        if self.stats.slow_consumer_drops > 1 and self._drop_open:
            return  # one entry per burst of drops: the next message closes the burst
        self._drop_open = True
        now = e.now_ms()
        for st in e._streams.values():
            start = st.stats.last_data_ms or now
            e._gap(st.stats, start, now + DROP_SLACK_MS, "nats_slow_consumer", "messages dropped")
        e._reset_books(e._books, now)

    _drop_open = False

    # -- reading ---------------------------------------------------------------------------------
    def _handle(self, raw: bytes) -> None:
        """One message: filtered out (counted) or through the engine's hot path."""
        self.stats.messages += 1
        e = self.engine
        if e.symbols is not self._filter_symbols:  # ``set_symbols`` replaced the list
            self._rebuild_filter()
        why = self.filter.verdict(envelope_stream(raw))
        if why is not None:
            if why == "symbol":
                self.stats.filtered_symbol += 1
            else:
                self.stats.filtered_dataset += 1
            return
        e._on_frame(self.conn, raw, e.now_ms())

    async def _read_core(self) -> None:
        cfg = self.config
        e = self.engine

        async def on_msg(msg: Any) -> None:
            self._drop_open = False
            self._handle(msg.data)
            if e._blocked:
                await e._drain_blocked()

        sub = await self.nc.subscribe(
            cfg.nats_subject,
            cb=on_msg,
            pending_msgs_limit=cfg.nats_pending_msgs_limit,
            pending_bytes_limit=max(cfg.writer.max_memory_bytes, 64 << 20),
        )
        await self.nc.flush()  # the server has the subscription: publishers may go
        self.ready.set()
        try:
            await self._closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        raise ConnectionError("nats connection closed")

    async def _consumer_config(self, js: Any) -> Any:
        """The group's durable push consumer, (re)created at its ack floor: what was
        acknowledged stays so, the rest comes again at once and in order (an unacknowledged
        message would otherwise wait out ``ack_wait``, and a push consumer's inbox is its
        connection's). A consumer that delivered but never acknowledged starts over from the
        stream's first message (what had landed is dropped as duplicates)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        cfg = self.config
        stream, durable = cfg.nats_stream, cfg.nats_durable
        start_seq = None
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:
            info = None
        if info is not None:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            delivered = info.delivered.stream_seq if info.delivered else 0
            start_seq = floor + 1 if floor or delivered else None
            await js.delete_consumer(stream, durable)
        policy = {
            "all": DeliverPolicy.ALL,
            "new": DeliverPolicy.NEW,
            "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
        }[cfg.nats_deliver_policy]
        return ConsumerConfig(
            durable_name=durable,
            deliver_subject=self.nc.new_inbox(),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=cfg.nats_ack_wait_s,
            max_ack_pending=cfg.nats_max_ack_pending,
            filter_subject=cfg.nats_subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else policy,
            opt_start_seq=start_seq,
            description=f"petrosa ingest group {cfg.group}",
        )

    async def _read_jetstream(self) -> None:
        """Messages arrive in bursts (push); each burst is landed, then sealed as one batch
        acknowledged when the writer's durable mark passes it (``_seal``)."""
        cfg = self.config
        e = self.engine
        js = self.nc.jetstream()
        config = await self._consumer_config(js)
        self._batch_msgs = []

        async def on_msg(msg: Any) -> None:
            self._handle(msg.data)
            if _delivered(msg.reply) > 1:
                self.stats.redelivered += 1
            self._batch_msgs.append(msg)
            if e._blocked:
                await e._drain_blocked()
            if not self._seal_scheduled:
                self._seal_scheduled = True
                asyncio.get_running_loop().call_soon(self._seal)

        # subscribe to the inbox before the consumer exists: nothing is pushed to no one
        sub = await js.subscribe_bind(
            cfg.nats_stream,
            config,
            cfg.nats_durable,
            cb=on_msg,
            manual_ack=True,
            pending_msgs_limit=max(2 * cfg.nats_max_ack_pending, 65_536),
            pending_bytes_limit=max(cfg.writer.max_memory_bytes, 256 << 20),
        )
        try:
            await js.add_consumer(cfg.nats_stream, config)
            self.ready.set()
            await self._closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        raise ConnectionError("nats connection closed")

    def _seal(self) -> None:
        """End of a burst: hand its frames to the writer and queue its messages for their
        acknowledgement at the writer's mark (later while the writer refuses: the mark must
        cover every line of the burst)."""
        self._seal_scheduled = False
        if not self._batch_msgs:
            return
        e = self.engine
        e.flush_landing()
        if e._blocked:
            self._seal_scheduled = True
            asyncio.get_running_loop().call_later(0.01, self._seal)
            return
        msgs, self._batch_msgs = self._batch_msgs, []
        self._pending.append((e.writer.queued_mark, msgs))
        self.stats.ack_pending += len(msgs)
        self._ack_wakeup.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            try:
                await self._ack_durable()
            except Exception as exc:  # noqa: BLE001 - unacknowledged messages come again
                log.warning("nats %s: ack failed (%s)", self.hosts, self._safe(exc))

    async def _ack_durable(self) -> None:
        """Acknowledge every batch whose writer mark is durable (in delivery order)."""
        durable = self.engine.writer.durable_mark
        pending = self._pending
        while pending and pending[0][0] <= durable:
            _, msgs = pending[0]
            for m in msgs:
                await m.ack()
            pending.popleft()
            self.stats.acked += len(msgs)
            self.stats.ack_pending -= len(msgs)


__all__ = ["NatsLink", "NatsSource", "NatsStats", "StreamFilter", "envelope_stream"]
