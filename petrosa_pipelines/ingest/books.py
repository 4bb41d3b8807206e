"""The ingest's order books: kept in sync from the stream, sampled, checkpointed, re-synced.

How a book (re)starts depends on the venue (``Capabilities.book_snapshot_in_stream``):

* **REST snapshot** (Binance USD-M): diffs are buffered, a REST snapshot is fetched and landed
  in line with the frames, and the buffered diffs are caught up (``landing.book.BookSync``).
  A sequence break lands a gap entry and the next snapshot is fetched.
* **in-stream snapshot** (Bybit): the websocket sends the book itself, landed as the frame it
  came in; it replaces the book whatever its update id (after a venue restart it starts at 1
  again) and no REST snapshot is ever requested. After a sequence break the depth stream is
  subscribed afresh, which makes the venue send a new snapshot.
* **partial depth** (Binance ``@depth20@100ms``, the socket-client profile): every message is
  an in-stream snapshot of the top levels (``DepthSnapshotRecord.in_stream``), so it takes the
  path above whatever the venue's capability; its ``pu`` must be the previous message's ``u``,
  else the messages in between were missed: a sequence break, ledgered from the book's last
  event to the snapshot that heals it. No REST snapshot, no resubscription (no diffs are ever
  buffered, so ``_request_snapshots`` has nothing to do).

Books are sampled top-N at a fixed cadence and checkpointed periodically so a reader can
rebuild any window from the landing zone alone.

A mixin of ``IngestEngine`` (``engine.py``): it uses the engine's ``config``, ``adapter``,
``exchange``, ``now_ms``, ``_streams``, ``_primary``, ``_gap``, ``_land_snapshot`` and
``_next_request_id``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord
from petrosa_pipelines.ingest.stats import StreamStats
from petrosa_pipelines.landing.book import Applied, BookSample, BookSync
from petrosa_pipelines.landing.records import BOOK_CHECKPOINT

log = logging.getLogger(__name__)

#: an in-stream venue's depth stream is subscribed afresh at most this often per symbol, on the
#: engine's receipt clock (``now_ms``): the clock the ledger and the samples use, so a simulated
#: clock running faster than the wall does not stretch a resync over minutes of data
RESUBSCRIBE_EVERY_MS = 5_000


class BooksMixin:
    """Order books of the stream group (see the module docstring)."""

    def _init_books(self, rest_client: Any | None) -> None:
        self._rest = rest_client
        self._books: dict[str, BookSync] = {}
        self._snapshot_tasks: dict[str, asyncio.Task] = {}
        self._book_break_from: dict[str, int] = {}
        #: symbol -> receipt time (``now_ms``) of its last depth resubscription
        self._resubscribed_at: dict[str, int] = {}
        self.latest_samples: dict[str, BookSample] = {}
        self.samples_emitted = 0
        self._snapshot_in_stream = self.adapter.capabilities.book_snapshot_in_stream

    def _sync_books(self) -> None:
        """One book per wanted symbol when the group streams depth."""
        if "depth" not in self.config.datasets:
            return
        cfg = self.config
        for sym in self.symbols:
            if sym not in self._books:
                self._books[sym] = BookSync(
                    sym, cadence_ms=cfg.depth_cadence_ms, top_n=cfg.depth_top_n
                )
        for sym in [s for s in self._books if s not in self.symbols]:
            del self._books[sym]

    def _snapshot_wanted(self, symbol: str) -> bool:
        """Whether the symbol's book waits for a snapshot. A venue's resubscription answers
        with a snapshot whose update id is the last delta's, already seen: it is still the
        snapshot the book needs, not a duplicate (dropping it left the book unsynced until the
        next resubscription)."""
        sync = self._books.get(symbol)
        return sync is not None and not sync.book.synced

    def _on_depth(self, d: DepthUpdateRecord, stats: StreamStats) -> None:
        sync = self._books.get(d.symbol)
        if sync is None:
            return
        result, samples = sync.on_diff(d)
        if samples:
            self._samples(samples)
        if result is Applied.BREAK:
            self._book_broke(sync, stats, d.event_time)

    def _on_book_snapshot(self, snap: DepthSnapshotRecord) -> None:
        """An in-stream snapshot (already landed as its frame): it replaces the book. One whose
        ``pu`` is not the book's last update id follows missed messages: a sequence break,
        healed by this very snapshot (ledgered from the book's last event to it)."""
        sync = self._books.get(snap.symbol)
        if sync is None:
            return
        if sync.snapshot_breaks(snap):
            st = self._streams.get((DepthUpdateRecord, snap.symbol))
            if st is not None and snap.event_time is not None:
                self._book_broke(sync, st.stats, snap.event_time)
        _, samples = sync.on_snapshot(snap, in_stream=True)
        if samples:
            self._samples(samples)
        self._resubscribed_at.pop(snap.symbol, None)
        self._book_resynced(sync, snap)

    def _book_broke(self, sync: BookSync, stats: StreamStats, event_time: int) -> None:
        """A diff broke the sequence: count it; the gap opens at the book's last event."""
        stats.resyncs += 1
        sym = sync.book.symbol
        self._book_break_from.setdefault(sym, sync.book.last_event_time or event_time)
        if sync.book.last_event_time is None:
            self._book_break_from[sym] = event_time

    def _book_resynced(self, sync: BookSync, snap: DepthSnapshotRecord) -> None:
        """The book is whole again: a sequence break still open becomes a gap entry."""
        since = self._book_break_from.pop(sync.book.symbol, None)
        if since is None:
            return
        st = self._streams.get((DepthUpdateRecord, sync.book.symbol))
        # the book is whole from the snapshot on: the samples taken while catching up the
        # buffered diffs lie after it, never inside the ledgered window
        at = snap.event_time if snap.event_time is not None else snap.received_at
        end = max(since, at) if at is not None else sync.book.last_event_time
        if st is not None and end is not None:
            self._gap(st.stats, since, end, "sequence_break", "book resynced")

    def _samples(self, samples: list[BookSample]) -> None:
        self.samples_emitted += len(samples)
        self.latest_samples[samples[-1].symbol] = samples[-1]
        self._offer_samples(samples)  # to the live outputs (ingest/sink.py, docs/live.md)

    def _reset_books(self, books: dict[str, BookSync], now_ms: int) -> None:
        """Books cannot be trusted across a drop (diffs were missed): re-sync from a snapshot.

        The rebuild from landing does the same at each depth ledger window, so a sample is
        never taken from a book that was not re-synced after the break.
        """
        for sym, sync in books.items():
            if sync.book.synced:
                self._book_break_from.setdefault(sym, sync.book.last_event_time or now_ms)
            sync.reset()

    def _request_snapshots(self) -> None:
        """Start re-syncing every book that waits for a snapshot (one task per symbol)."""
        if self._primary is None or self._primary.ws is None:
            return
        for sym, sync in self._books.items():
            if sync.book.synced or not sync.buffer or sym in self._snapshot_tasks:
                continue
            if self._snapshot_in_stream:
                now = self.now_ms()
                last = self._resubscribed_at.get(sym)
                if last is not None and now - last < RESUBSCRIBE_EVERY_MS:
                    continue
                self._resubscribed_at[sym] = now
                task = self._resubscribe_depth(sym)
            else:
                task = self._fetch_snapshot(sym)
            self._snapshot_tasks[sym] = asyncio.create_task(task)

    async def _resubscribe_depth(self, sym: str) -> None:
        """Ask an in-stream venue for a fresh snapshot: unsubscribe and subscribe the stream."""
        try:
            ws = self._primary.ws if self._primary else None
            if ws is None:
                return
            (stream,) = self.adapter.stream_names([sym], ["depth"])
            await ws.send(self.adapter.unsubscribe_message([stream], self._next_request_id()))
            await ws.send(self.adapter.subscribe_message([stream], self._next_request_id()))
        except Exception as exc:  # noqa: BLE001 - retried on a later manage tick
            log.warning("depth resubscribe %s failed: %r", sym, exc)
        finally:
            self._snapshot_tasks.pop(sym, None)

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
            self._book_resynced(sync, snap)
        else:
            # the snapshot is older than the buffered diffs (a diff went missing while we were
            # catching up): that is a break too; wait a little and fetch again
            self._book_break_from.setdefault(sym, snap.event_time or snap.received_at or 0)
            await asyncio.sleep(0.2)
        self._snapshot_tasks.pop(sym, None)

    def _checkpoint_books(self) -> None:
        now = self.now_ms()
        for sync in self._books.values():
            if sync.book.synced:
                self._land_snapshot(sync.book.checkpoint(self.exchange, now), BOOK_CHECKPOINT)
