"""What the ingest hands the landing writer: frames in batches, snapshots, gaps, dead letters.

Frames reach the writer in one batch per burst of the socket (``LineBatch``), not one queue
operation each. While the writer refuses (its queue and spill are full) everything waits in
``_blocked`` in order and the socket is not read: back-pressure, never a drop.

Each frame handed to the writer is also offered to the live outputs when the engine has them
(``live.LiveOutputs``: clean records on NATS, the latest state in Redis, docs/live.md): one
append to a bounded intake, no I/O on the loop; book samples likewise (``_offer_samples``).

A mixin of ``IngestEngine`` (``engine.py``): it uses the engine's ``writer``, ``stats``,
``config``, ``now_ms``, ``_streams``, ``_loop`` and ``_stream_of``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.ingest.stats import StreamStats
from petrosa_pipelines.landing.records import GapRecord
from petrosa_pipelines.landing.writer import LineBatch, format_line

if TYPE_CHECKING:
    from petrosa_pipelines.live import LiveOutputs

log = logging.getLogger(__name__)

#: frames are handed to the writer at the end of each burst, or once this many bytes wait
LAND_BATCH_BYTES = 256 << 10


class SinkMixin:
    """Landing of frames, snapshots, gap entries and dead letters (see the module docstring)."""

    def _init_sink(self, live: LiveOutputs | None = None) -> None:
        #: the live outputs (NATS, Redis) offered every landed frame and book sample, or None
        self.live = live
        self._batch = LineBatch()
        self._flush_scheduled = False
        #: the frame last landed: the records of a frame carrying several land it once
        self._landed_raw: bytes | None = None
        #: what waits while the writer refuses (in order); a deque: draining a long backlog
        #: with list.pop(0) cost O(n) per item, quadratic on the loop just when it is behind
        self._blocked: collections.deque[tuple[int, bytes | None, Any]] = collections.deque()

    def _land(self, recv: int, raw: bytes) -> None:
        """Batch the frame for the writer; the batch goes at the end of the burst (or when
        big, or when the receipt hour changes). While the writer refuses (queue and spill
        full), frames wait in ``_blocked`` in order and the socket is not read."""
        if raw is self._landed_raw:
            return  # another record of the frame just landed (frames carrying several)
        self._landed_raw = raw
        live = self.live
        if live is not None:
            live.offer_frame(raw, recv)  # a bounded append: never waits (live/publisher.py)
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

    def _offer_samples(self, samples: list) -> None:
        """Book samples (``landing.book.BookSample``) for the depth subjects and best bid/ask."""
        live = self.live
        if live is not None:
            live.offer_samples(samples)

    def live_stats(self) -> dict[str, Any] | None:
        """The live outputs' counters for the heartbeat (None without live outputs)."""
        return self.live.stats() if self.live is not None else None

    async def _close_live(self) -> None:
        """Publish what the live outputs still buffer (bounded wait), then stop them."""
        if self.live is not None:
            await asyncio.to_thread(self.live.close)

    def flush_landing(self) -> None:
        """Hand the batched frames to the writer (what the end of a socket burst does)."""
        self._flush_scheduled = False
        if self._batch.lines:
            for recv, line in self.writer.put_batch(self._batch):
                self._blocked.append((recv, line, None))

    def _land_snapshot(self, snap: DepthSnapshotRecord, kind: bytes) -> None:
        """A REST snapshot or a book checkpoint, landed after the frames the book saw."""
        self.flush_landing()
        if self._blocked or not self.writer.put_snapshot(snap, kind):
            self._blocked.append((snap.received_at or 0, None, (snap, kind)))

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
        stream = self._stream_of(raw) if self._stream_of is not None else None
        st = None
        if stream is not None:
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
