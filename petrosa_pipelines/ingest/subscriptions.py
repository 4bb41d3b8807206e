"""Which streams the ingest carries: per-stream state, fast-path routes, live symbol changes.

``symbols_provider`` is polled for the wanted symbols off the event loop; adding or removing
one resubscribes the live connection (the adapter's ``subscribe_message`` /
``unsubscribe_message``) without touching the other symbols' streams.

A mixin of ``IngestEngine`` (``engine.py``), which owns the state used here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from petrosa_pipelines.exchanges.base import DepthUpdateRecord, RawTradeRecord, TradeRecord
from petrosa_pipelines.ingest.stats import StreamStats
from petrosa_pipelines.ingest.streams import SEQ_POSITION_SCALE, StreamState
from petrosa_pipelines.instruments import DATASETS

log = logging.getLogger(__name__)


class SubscriptionsMixin:
    """Streams of the stream group (see the module docstring)."""

    _last_symbols_poll = 0.0
    _symbols_poll: asyncio.Task | None = None

    def _stream_kinds(self) -> list[str]:
        """The group's datasets plus the venue's liveness stream (``liveness_stream``: the mark
        price, or the socket-client profile's ``@ticker``), which is always in."""
        live = getattr(self.adapter, "liveness_stream", "funding")
        return list(dict.fromkeys([*self.config.datasets, live]))

    def stream_names(self, symbols: Sequence[str] | None = None) -> list[str]:
        """Every stream of the group; the liveness stream is always in."""
        kinds = self._stream_kinds()
        return self.adapter.stream_names(symbols if symbols is not None else self.symbols, kinds)

    def _sync_streams(self) -> None:
        """Create state for new symbols' streams; drop state of removed ones.

        A stream is keyed by the record type it parses into (``stream_record_type``: raw trades
        under Binance's socket-client profile) and its symbol.
        """
        wanted: dict[tuple[type, str], tuple[str, str]] = {}
        kinds = self._stream_kinds()
        type_of = {k: self.adapter.stream_record_type(k) for k in kinds}
        for sym in self.symbols:
            for ds in kinds:
                (name,) = self.adapter.stream_names([sym], [ds])
                wanted[(type_of[ds], sym)] = (name, ds)
        for key in [k for k in self._streams if k not in wanted]:
            del self.stats.streams[self._streams.pop(key).stats.stream]
        src = self._primary.id if self._primary else 0
        for key, (name, ds) in wanted.items():
            if key not in self._streams:
                st = StreamState(StreamStats(name, ds, key[1]), source=src)
                if key[0] is TradeRecord and not self._trade_ids_consecutive:
                    st.scale_jumps(SEQ_POSITION_SCALE)
                if key[0] is RawTradeRecord:
                    st.id_field = "trade_id"
                if ds not in DATASETS:
                    log.info(
                        "%s %s: landed raw, feeds no dataset (liveness probe, latest price)",
                        self.exchange,
                        name,
                    )
                self._streams[key] = st
                self.stats.streams[name] = st.stats
        self._sync_books()
        self._sync_routes()

    def _sync_routes(self) -> None:
        """The fast path's lookups, rebuilt whenever streams or books change.

        Trades route by the symbol exactly as the venue sends it; symbols the fast path says
        the full parser would reject (or only accept after normalising) get no route, so they
        take the full parser.
        """
        self._trade_routes = {}
        self._depth_routes = {}
        fast = self._fast
        if fast is None:
            return
        for (kind, sym), st in self._streams.items():
            if not fast.routable(sym):
                continue
            if kind is TradeRecord:
                self._trade_routes[sym] = st
            elif kind is DepthUpdateRecord:
                self._depth_routes[st.stats.stream] = (st, self._books.get(sym))

    def _maybe_poll_symbols(self, now: float) -> None:
        if now - self._last_symbols_poll < self.config.symbols_poll_s:
            return
        if self._symbols_poll is not None and not self._symbols_poll.done():
            return  # the previous poll is still waiting for its answer
        self._last_symbols_poll = now
        self._symbols_poll = asyncio.get_running_loop().create_task(self._poll_symbols())

    async def _poll_symbols(self) -> None:
        """Ask the provider off the event loop: in a Dagster run it queries the instance's
        storage, which the batched audit runs write to, and a query that waits
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
            return  # the next connection subscribes the new set
        # one control frame each: venues limit incoming messages (Binance: 10 per second)
        if added:
            rid = self._next_request_id()
            await ws.send(self.adapter.subscribe_message(self.stream_names(added), rid))
        if removed:
            rid = self._next_request_id()
            await ws.send(self.adapter.unsubscribe_message(self.stream_names(removed), rid))
