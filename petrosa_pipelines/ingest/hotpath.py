"""The ingest's per-message path: validate once, check plausibility, de-duplicate, land.

Each frame is stamped with its receipt time, validated once (bad ones go to the dead-letter
store with the full parser's reason), checked for plausibility (``streams.implausible``),
de-duplicated by its stream's position and handed to the landing writer (``sink``); depth diffs
and in-stream snapshots also feed the books (``books``). No frame, however malformed, raises
out of this path. An in-stream snapshot is one the venue says is (``book_snapshot_in_stream``)
or one marked so by its parser (``DepthSnapshotRecord.in_stream``: Binance partial depth); raw
trades (``RawTradeRecord``) have their consecutive ids ``trade_id`` checked like aggTrades'.

**Venue fast path.** An adapter may offer one (``adapter.fast_path()``; Binance's is
``exchanges/binance/fastpath.py``): an object with

* ``decode(raw, received_at)`` -> None (take the full parser), a ``Record`` (then the general
  path below), ``(TradeRecord, symbol, stream, agg_trade_id, trade_time, event_time)`` or
  ``(DepthUpdateRecord, stream, event_time, first, final, prev, bids, asks)`` with the levels
  as ``(price, quantity)`` floats;
* ``routable(symbol)``: whether the engine routes a subscribed symbol's frames fast;
* ``stream_of(raw)`` (which stream a malformed frame names) and ``wire_fields`` (record field
  -> the venue's name for it, so dead letters name the field as sent).

It must accept only what the full parser accepts; whatever it declines goes to the full
parser, so the reasons and fields of dead letters are the full parser's. Without a fast path
every frame takes the full parser. A full parser may return several records for one frame
(``parse_frame``, e.g. Bybit's ``publicTrade`` carries many fills): each is de-duplicated on its
own and the frame lands once.

A mixin of ``IngestEngine`` (``engine.py``), which owns the state used here.
"""

from __future__ import annotations

from collections.abc import Sequence

from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MessageError,
    RawTradeRecord,
    Record,
    TradeRecord,
)
from petrosa_pipelines.ingest.streams import (
    ID_GAP_GRACE_MS,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    STREAM_TYPE,
    Held,
    StreamState,
    data_time,
    implausible,
    position,
    position_field,
    time_fields,
)
from petrosa_pipelines.landing.book import Applied, BookSync


class HotPathMixin:
    """The per-message path (see the module docstring)."""

    def _on_frame(self, conn, raw: bytes, recv: int) -> None:
        """One frame: the venue's fast path where it vouches, the full parser otherwise.

        Every early ``return self._on_frame_full(...)`` is a case the fast path does not vouch
        for; the full parser then decides, exactly as without a fast path.
        """
        conn.messages += 1
        decode = self._fast_decode
        v = decode(raw, recv) if decode is not None else None
        if v is None:
            return self._on_frame_full(conn, raw, recv)
        if type(v) is not tuple:
            return self._on_record(conn, v, raw, recv)
        if v[0] is TradeRecord:
            _, sym, stream, a, trade_time, e = v
            st = self._trade_routes.get(sym)
            # a frame routes by its data symbol: its stream must be that symbol's trade stream
            if st is None or st.source != conn.id or stream != st.stats.stream:
                return self._on_frame_full(conn, raw, recv)
            self._accept_trade(st, conn, raw, recv, a, trade_time, e)
            return None
        _, stream, e, first, final, prev, bids, asks = v
        route = self._depth_routes.get(stream)
        if route is None or route[0].source != conn.id:
            return self._on_frame_full(conn, raw, recv)
        self._accept_depth(route[0], route[1], conn, raw, recv, e, first, final, prev, bids, asks)
        return None

    def _accept_trade(
        self, st: StreamState, conn, raw: bytes, recv: int, a: int, trade_time: int, e: int
    ) -> None:
        """:meth:`_accept` of a fast-path trade (same steps, inlined, no record)."""
        top = st.top
        if (
            not (recv - MAX_PAST_MS <= e <= recv + MAX_FUTURE_MS)
            or not (recv - MAX_PAST_MS <= trade_time <= recv + MAX_FUTURE_MS)
            or (
                top is not None
                and abs(a - top) > st.jump_base + (recv - st.top_recv) * st.jump_per_ms
            )
        ) and self._reject_fast(st, raw, recv, a, "agg_trade_id", e, trade_time):
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

    def _accept_depth(
        self,
        st: StreamState,
        sync: BookSync | None,
        conn,
        raw: bytes,
        recv: int,
        e: int,
        first: int,
        u: int,
        prev: int,
        bids: tuple[tuple[float, float], ...],
        asks: tuple[tuple[float, float], ...],
    ) -> None:
        """:meth:`_accept` of a fast-path depth diff (same steps, inlined, no record)."""
        top = st.top
        if (
            not (recv - MAX_PAST_MS <= e <= recv + MAX_FUTURE_MS)
            or (
                top is not None
                and abs(u - top) > st.jump_base + (recv - st.top_recv) * st.jump_per_ms
            )
        ) and self._reject_fast(st, raw, recv, u, "final_update_id", e):
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
            result, samples = sync.on_update(e, first, u, prev, recv, bids, asks)
            if samples:
                self._samples(samples)
            if result is Applied.BREAK:
                self._book_broke(sync, stats, e)
        stats.processed_one(recv, e, e)
        self._after_accept(st, conn)

    def _reject_fast(
        self,
        st: StreamState,
        raw: bytes,
        recv: int,
        pos: int,
        pos_attr: str,
        e: int,
        trade_time: int | None = None,
    ) -> bool:
        """``_reject_implausible`` of a fast-path message, fields named as the venue does."""
        w = self._wire_fields
        times = [(w.get("event_time", "event_time"), e)]
        if trade_time is not None:
            times.append((w.get("trade_time", "trade_time"), trade_time))
        return self._reject_implausible(st, raw, recv, pos, w.get(pos_attr, pos_attr), times)

    def _reject_implausible(
        self,
        st: StreamState,
        raw: bytes,
        recv: int,
        pos: int,
        pos_field: str,
        times: Sequence[tuple[str, int | None]],
        check_position: bool = True,
    ) -> bool:
        """Dead-letter a message ``implausible`` rejects (True); False when it is plausible.

        ``check_position=False``: times only (an in-stream snapshot may restart the ids)."""
        top = st.top if check_position else None
        verdict = implausible(top, st.top_recv, pos, pos_field, times, recv, st.jump_scale)
        if verdict is None:
            return False
        self._dead_letter(raw, recv, verdict[1], verdict[0])
        return True

    def _after_accept(self, st: StreamState, conn) -> None:
        """Fast-path tail: finish a held rotation switch; a healthy connection resets backoff."""
        if st.held and st.held[0].event_time <= st.max_event:
            self._switch(st, self._candidate.id if self._candidate else st.source)
        if self._attempt and conn.messages > 1:
            self._attempt = 0

    def _on_frame_full(self, conn, raw: bytes, recv: int) -> None:
        """The general path: the full parser decides (record(s), control frame, dead letter)."""
        try:
            if self._parse_frame is not None:
                recs = self._parse_frame(raw, recv)
            else:
                rec = self.adapter.parse(raw, recv)
                recs = () if rec is None else (rec,)
        except MessageError as exc:
            self._dead_letter(raw, recv, exc.reason, exc.field)
            return
        except Exception as exc:  # noqa: BLE001 - one frame never takes the connection down
            reason = f"parser failed: {type(exc).__name__}: {str(exc)[:200]}"
            self._dead_letter(raw, recv, reason, "<message>")
            return
        if len(recs) == 1:
            self._on_record(conn, recs[0], raw, recv)
            return
        taken: set[tuple[str, int]] = set()
        for rec in recs:  # a frame carrying several records: each on its own, landed once
            self._on_record(conn, rec, raw, recv, taken)

    def _stream_key(self, rec: Record) -> tuple[type, str]:
        t = type(rec)
        if t is DepthSnapshotRecord and (self._snapshot_in_stream or rec.in_stream):  # type: ignore[union-attr]
            return STREAM_TYPE[t], rec.symbol
        return t, rec.symbol

    def _on_record(
        self,
        conn,
        rec: Record,
        raw: bytes,
        recv: int,
        taken: set[tuple[str, int]] | None = None,
    ) -> None:
        """A parsed record of ``raw``. ``taken``: the (stream, position) pairs the earlier
        records of the same frame were accepted at; a record sharing one (Bybit's closed and
        new candle share the frame's time) is part of that frame, not a duplicate."""
        st = self._streams.get(self._stream_key(rec))
        if st is None:
            fld = self._wire_fields.get("symbol", "symbol")
            self._dead_letter(raw, recv, f"not subscribed: {rec.symbol}", fld)
            return
        pos = position(rec)
        t = type(rec)
        snapshot = t is DepthSnapshotRecord
        spec = self._record_fields.get(t)
        if spec is None:
            w = self._wire_fields
            spec = self._record_fields[t] = (position_field(t, w), time_fields(t, w))
        pos_field = spec[0]
        times = [(name, getattr(rec, attr)) for name, attr in spec[1]]
        if self._reject_implausible(st, raw, recv, pos, pos_field, times, not snapshot):
            return
        stats = st.stats
        stats.received += 1
        if conn.id != st.source:
            if conn is self._candidate:
                st.held.append(Held(pos, rec.event_time or 0, recv, raw, rec))
                # streams are sent in event-time order: once the old connection has reached the
                # candidate's first event time, it has delivered everything before it
                if st.max_event is not None and st.held[0].event_time <= st.max_event:
                    self._switch(st, conn.id)
            else:
                stats.duplicates += 1  # the old connection after its streams switched
            return
        if not (
            (st.is_new_snapshot(pos) or self._snapshot_wanted(rec.symbol))
            if snapshot
            else st.is_new(pos)
        ) and not (taken and (stats.stream, pos) in taken):
            stats.duplicates += 1
            return
        self._accept(st, rec, raw, recv, pos)
        if taken is not None:
            taken.add((stats.stream, pos))
        if st.held and st.max_event is not None and st.held[0].event_time <= st.max_event:
            self._switch(st, self._candidate.id if self._candidate else st.source)
        if self._attempt and conn.messages > 1:
            self._attempt = 0

    def _accept(self, st: StreamState, rec: Record, raw: bytes, recv: int, pos: int) -> None:
        stats = st.stats
        if pos not in st.seen:  # a snapshot the book waits for may repeat a delta's id
            st.remember(pos, recv)
        event_time = rec.event_time  # type: ignore[union-attr]
        dtime = data_time(rec)
        outage = st.outage_from is not None
        if outage:
            self._gap(stats, st.outage_from, dtime or recv, st.outage_cause)  # type: ignore[arg-type]
            st.outage_from = None
        t = type(rec)
        if t is TradeRecord:
            self._track_trade_id(st, rec.agg_trade_id, rec.trade_time, recv, outage)  # type: ignore[union-attr]
        elif t is RawTradeRecord:  # raw trade ids are consecutive too (Binance ``t``)
            self._track_trade_id(st, rec.trade_id, rec.trade_time, recv, outage)  # type: ignore[union-attr]
        if event_time is not None and (st.max_event is None or event_time > st.max_event):
            st.max_event = event_time
        self._land(recv, raw)
        if t is DepthUpdateRecord:
            self._on_depth(rec, stats)  # type: ignore[arg-type]
        elif t is DepthSnapshotRecord:
            self._on_book_snapshot(rec)  # type: ignore[arg-type]
        stats.processed_one(recv, event_time, dtime)

    def _track_trade_id(
        self, st: StreamState, a: int, trade_time: int, recv: int, after_outage: bool
    ) -> None:
        """Where the venue's trade ids are consecutive, an id still missing after a grace is a
        gap (``Capabilities.trade_ids_consecutive``; elsewhere a jump in ids means nothing).

        The grace absorbs small reorderings (ids arriving a little late); an outage already
        has its own gap entry, so the jump right after it is not recorded twice.
        """
        if not self._trade_ids_consecutive:
            return
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

    def _record_id_gaps(self, st: StreamState, until_recv: int | None = None) -> None:
        """Ledger the missing id ranges whose grace ended (all of them at shutdown)."""
        due: list[list[int]] = []
        keep: list[list[int]] = []
        for m in st.missing:
            (due if until_recv is None or m[4] <= until_recv else keep).append(m)
        st.missing = keep
        for lo, hi, t0, t1, _ in due:
            self._gap(st.stats, t0, t1, "id_gap", f"{st.id_field} {lo}..{hi}")
