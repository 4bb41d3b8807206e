"""The NATS side of the live outputs' worker (``worker.py``): the bounded buffer, JetStream
batches with acknowledgements, reconnection with backoff, the stream and its retention.

A mixin: it uses the worker's ``settings``, ``_pending``/``_pending_bytes``, ``_inflight``,
``_lock``, counters, ``_error``, ``_closing``/``_late`` and ``_intake``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from petrosa_pipelines.live.messages import Message
from petrosa_pipelines.live.subjects import stream_subjects
from petrosa_pipelines.settings import LiveSettings

#: messages per JetStream batch (publish_async, acks awaited together)
BATCH = 256
#: de-duplication window of the stream (s): a re-sent message within it is not stored twice
DUPLICATE_WINDOW_S = 120.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
#: a connection (two tries and the stream check) not made in this time is a failed attempt
CONNECT_DEADLINE_S = 10.0


class NatsOutput:
    """Buffer and JetStream publishing of the worker (see the module docstring)."""

    def _buffer(self, m: Message) -> None:
        self._pending.append(m)
        self._pending_bytes += len(m.payload)
        self._bound()

    def _bound(self) -> None:
        s, pending = self.settings, self._pending
        cap, cap_bytes = s.buffer_messages, s.buffer_bytes
        while pending and (len(pending) > cap or self._pending_bytes > cap_bytes):
            old = pending.popleft()
            self._pending_bytes -= len(old.payload)
            with self._lock:
                self._dropped[old.subject] += 1

    async def _connect(self) -> Any:
        import nats

        async def on_error(exc: Exception) -> None:  # counted by the caller's attempt
            self._error("nats", exc)

        servers = [u.strip() for u in (self.settings.nats_url or "").split(",") if u.strip()]
        nc = await nats.connect(
            servers=servers,
            name="petrosa-live",
            allow_reconnect=False,
            connect_timeout=2,
            # nats-py retries the initial connect forever with 0; 1 = two tries, then raise
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,
            error_cb=on_error,
        )
        await ensure_stream(nc.jetstream(), self.settings)
        return nc

    async def _nats_loop(self) -> None:
        nc = None
        try:
            nc = await self._nats_until_closed()
        finally:
            if nc is not None:
                await _quiet_close(nc)
            self._drop_rest()

    async def _nats_until_closed(self) -> Any:
        """Connect, publish, reconnect with backoff until closed; the connection left open."""
        nc, backoff = None, BACKOFF_MIN_S
        while True:
            if self._closing and (not self._pending and not self._intake or self._late()):
                break
            if nc is None or not nc.is_connected:
                if nc is not None:
                    await _quiet_close(nc)
                    nc = None
                self._nats_state = "connecting" if self._nats_state != "down" else "down"
                try:
                    # asyncio.timeout, not wait_for: wait_for runs the connect as a task of its
                    # own, and a close that cancelled it while that task unwound from its
                    # deadline left the task's error unretrieved; asyncio then printed it with a
                    # traceback (Python 3.11, seen under load). Here it stays in this task:
                    # https://docs.python.org/3/library/asyncio-task.html#asyncio.timeout
                    async with asyncio.timeout(CONNECT_DEADLINE_S):
                        nc = await self._connect()
                    js = nc.jetstream()
                    self._nats_state, backoff = "connected", BACKOFF_MIN_S
                except Exception as exc:  # noqa: BLE001 - down: buffer, retry with backoff
                    with self._lock:
                        self._counts["nats_errors"] += 1
                    self._error("nats", exc)
                    self._nats_state = "down"
                    if nc is not None:
                        await _quiet_close(nc)
                        nc = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if not self._pending:
                await asyncio.sleep(0.02)  # idle: few wake-ups
                continue
            if not await self._publish_batch(js):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            else:
                backoff = BACKOFF_MIN_S
        return nc

    async def _publish_batch(self, js: Any) -> bool:
        """Publish up to ``BATCH`` buffered messages; the unacknowledged go back to the front."""
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
        self._pending_bytes -= sum(len(m.payload) for m in batch)
        self._inflight = len(batch)
        futures: list[asyncio.Future] = []
        try:
            for m in batch:
                hdr = {"Nats-Msg-Id": m.msg_id}
                futures.append(await js.publish_async(m.subject, m.payload, headers=hdr))
        except Exception as exc:  # noqa: BLE001 - connection gone mid-batch
            self._error("nats", exc)
        failed: list[Message] = []
        done: set = set()
        if futures:
            done, _ = await asyncio.wait(futures, timeout=self.settings.publish_timeout_s)
        ok = collections.Counter()
        dup = 0
        for i, m in enumerate(batch):
            f = futures[i] if i < len(futures) else None
            if f is not None and f in done and not f.cancelled() and f.exception() is None:
                ok[m.subject] += 1
                dup += bool(getattr(f.result(), "duplicate", False))
            else:
                if f is not None and not f.done():
                    f.cancel()
                elif f is not None and not f.cancelled() and f.exception() is not None:
                    self._error("nats", f.exception())
                failed.append(m)
        with self._lock:
            self._published.update(ok)
            self._counts["duplicates"] += dup
            if failed:
                self._counts["nats_errors"] += 1
        if failed:
            pending.extendleft(reversed(failed))
            self._pending_bytes += sum(len(m.payload) for m in failed)
            self._bound()
        self._inflight = 0
        return not failed

    def _drop_rest(self) -> None:
        """At close: what could not be published in time is counted as dropped."""
        with self._lock:
            for m in self._pending:
                self._dropped[m.subject] += 1
        self._pending.clear()
        self._pending_bytes = 0
        self._nats_state = "closed"


async def _quiet_close(nc: Any) -> None:
    with contextlib.suppress(Exception):  # closing a dead connection
        async with asyncio.timeout(5):  # in this task, see ``_nats_until_closed``
            await nc.close()


async def ensure_stream(js: Any, s: LiveSettings) -> None:
    """Create the live stream, or bring an existing one to the configured retention
    (idempotent: the same configuration is accepted as is)."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    cfg = StreamConfig(
        name=s.stream,
        subjects=stream_subjects(s.subject_prefix),
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=s.max_age_s,
        max_bytes=s.max_bytes,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(cfg)
    except BadRequestError:  # exists with another configuration: update it in place
        await js.update_stream(cfg)
