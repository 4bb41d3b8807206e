"""Reading the landing zone: records, dataset frames, gaps and dead letters for any window.

The partitioned assets rebuild a day from here, and today's data is readable the same way
(closed segments only; the ingest closes a segment at least every ``segment_max_age_s``).
Everything is derived by replaying the landed raw frames through the exchange adapter
(``parse_frame``: a frame may carry several records), so the landing zone stays the single
source of truth and a parser fix re-derives history.

Every read replays through a fresh adapter instance: an adapter may keep per-symbol state
(Bybit merges ``tickers`` deltas into the last snapshot), so a read must not depend on what
was read before. The reader knows no venue's framing: the adapter says which symbol and stream
a landed frame belongs to and where a replay of a stream may start (``frame_stream``), and which
datasets need frames from before the window to parse as they did live
(``capabilities.stateful_replay``). A stream's frames before its first start point in the window
are skipped, never parsed into a record the live ingest did not make.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path

import msgspec
import pandas as pd

from petrosa_pipelines.catalog.schemas import conform, dataset_schema
from petrosa_pipelines.exchanges import adapter_class
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    Dataset,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    ExchangeAdapter,
    FundingRecord,
    MarkPriceRecord,
    MessageError,
    RawTradeRecord,
    Record,
    TradeRecord,
)
from petrosa_pipelines.exchanges.frames import (
    depth_rows_to_frame,
    mark_prices_to_funding,
    records_to_frame,
)
from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.book import BookSample, BookSync
from petrosa_pipelines.landing.records import (
    DeadLetter,
    GapRecord,
    decode_dead_letter,
    decode_gap,
    decode_internal,
)
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_window_ms

log = logging.getLogger(__name__)
DEFAULT_DEPTH_CADENCE_MS = 1000
DEFAULT_DEPTH_TOP_N = 20
#: a reader of depth starts this far before the window to find a snapshot or checkpoint
DEFAULT_DEPTH_LOOKBACK_MS = HOUR_MS
#: a reader of a stream whose frames only make sense after a start point (Bybit ``tickers``
#: deltas after their snapshot) starts this far back: the ingest opens a new connection, which
#: sends the snapshot again, at least every 23 h (``IngestConfig.max_connection_age_s``)
DEFAULT_STATE_LOOKBACK_MS = 24 * HOUR_MS


def record_time(rec: Record) -> int:
    """The time a record belongs to a window by: trade, candle open, or event time."""
    if type(rec) is TradeRecord or type(rec) is RawTradeRecord:
        return rec.trade_time
    if type(rec) is CandleRecord:
        return rec.open_time
    if type(rec) is FundingRecord:
        return rec.funding_time
    if type(rec) is DepthSnapshotRecord:
        t = rec.event_time if rec.event_time is not None else rec.received_at
        return t if t is not None else 0
    return rec.event_time  # type: ignore[union-attr]


def iter_segment_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(received_at_ms, payload) of every line of one closed segment."""
    data = path.read_bytes()
    for line in data.split(b"\n"):
        if not line:
            continue
        sp = line.index(b" ")
        yield int(line[:sp]), line[sp + 1 :]


class LandingStore:
    """Read access to a landing root (``settings.landing_path``).

    ``adapters``: storage name -> an adapter for a venue outside the registry (tests); reads
    replay through a fresh instance of its class, so it must construct without arguments.
    """

    def __init__(
        self,
        root: str | Path,
        adapters: Mapping[str, ExchangeAdapter] | None = None,
        *,
        depth_cadence_ms: int = DEFAULT_DEPTH_CADENCE_MS,
        depth_top_n: int = DEFAULT_DEPTH_TOP_N,
        depth_lookback_ms: int = DEFAULT_DEPTH_LOOKBACK_MS,
        state_lookback_ms: int = DEFAULT_STATE_LOOKBACK_MS,
    ):
        self.root = Path(root)
        self.depth_cadence_ms = depth_cadence_ms
        self.depth_top_n = depth_top_n
        self.depth_lookback_ms = depth_lookback_ms
        self.state_lookback_ms = state_lookback_ms
        self.parse_failures = 0
        #: gap-ledger files that could not be read (path: error), see :meth:`gaps`
        self.ledger_errors: list[str] = []
        self._classes: dict[str, type[ExchangeAdapter]] = {
            name: type(a) for name, a in (adapters or {}).items()
        }

    def _adapter_class(self, exchange: str) -> type[ExchangeAdapter]:
        cls = self._classes.get(exchange)
        return cls if cls is not None else adapter_class(exchange)

    def _adapter(self, exchange: str) -> ExchangeAdapter:
        """A fresh adapter: no state from an earlier read (see the module docstring)."""
        return self._adapter_class(exchange)()

    # -- raw lines -------------------------------------------------------------------------------
    def iter_lines(
        self, exchange: str, start_ms: int, end_ms: int, *, slack_ms: int = HOUR_MS
    ) -> Iterator[tuple[int, bytes]]:
        """Landed (received_at, payload) whose receipt hour may hold events of the window.

        Each writer's segments are read in order (its exact arrival order, which the order
        book needs); different writers are merged by receipt time.
        """
        segs = layout.segments_for_receipt_window(
            self.root, exchange, start_ms, end_ms, slack_ms=slack_ms
        )
        by_writer: dict[str, list[Path]] = {}
        for name, path in sorted(segs, key=lambda s: (s[0].writer, s[0].seq)):
            by_writer.setdefault(name.writer, []).append(path)
        chains = [
            itertools.chain.from_iterable(iter_segment_lines(p) for p in paths)
            for paths in by_writer.values()
        ]
        if len(chains) == 1:
            yield from chains[0]
        else:
            yield from heapq.merge(*chains, key=lambda x: x[0])

    def _replay(
        self,
        exchange: str,
        start_ms: int,
        end_ms: int,
        symbols: Collection[str] | None,
        *,
        slack_ms: int = HOUR_MS,
        dataset: str | None = None,
    ) -> Iterator[tuple[Record, bool]]:
        """(record, from an internal line) of every landed line, in landing order, replayed
        through one fresh adapter; a stream's frames count from its first start point on.

        ``dataset``: frames of streams the adapter knows parse into another dataset
        (``stream_dataset``) are skipped unparsed, so a day's trades are read without
        parsing its book diffs, and its book without its trades, candles and mark prices.
        For ``"depth"`` a diff the adapter's ingest fast path vouches for comes as a
        :class:`FastDiff` (float levels, no ``Decimal``: the conversion was most of a depth
        day's build).
        """
        adapter = self._adapter(exchange)
        stream_of = adapter.frame_stream
        parse_frame = _book_parser(adapter) if dataset == "depth" else _full_parser(adapter)
        skip = _other_datasets(adapter, dataset) if dataset else _never
        # as the venue spells them, and upper-cased as callers have always passed them
        wanted = {*symbols, *(s.upper() for s in symbols)} if symbols is not None else None
        started: set[str] = set()
        for recv, payload in self.iter_lines(exchange, start_ms, end_ms, slack_ms=slack_ms):
            if payload[:1] == b"!":
                snap = decode_internal(payload)[2]
                if wanted is None or snap.symbol in wanted:
                    yield snap, True
                continue
            info = stream_of(payload)
            if info is not None:
                sym, stream, starts = info
                if wanted is not None and sym not in wanted:
                    continue
                if skip(stream):
                    continue
                if stream not in started:
                    if not starts:
                        continue  # its records depend on frames before this window
                    started.add(stream)
            try:
                recs = parse_frame(payload, recv, info)
            except MessageError:
                # landed frames parsed at ingest; a stricter parser later must not stop a read
                self.parse_failures += 1
                continue
            for rec in recs:
                if wanted is None or rec.symbol in wanted:
                    yield rec, False

    def _iter_parsed(
        self,
        exchange: str,
        start_ms: int,
        end_ms: int,
        symbols: Collection[str] | None,
        *,
        slack_ms: int = HOUR_MS,
        dataset: str | None = None,
    ) -> Iterator[Record]:
        for rec, _ in self._replay(
            exchange, start_ms, end_ms, symbols, slack_ms=slack_ms, dataset=dataset
        ):
            yield rec

    def read_records(
        self,
        exchange: str,
        start_ms: int,
        end_ms: int,
        symbols: Collection[str] | None = None,
        *,
        dataset: str | None = None,
    ) -> Iterator[Record]:
        """Every landed record whose trade/candle-open/event time is in [start_ms, end_ms).

        Raw frames are replayed through the adapter parser (every record of a frame); REST
        depth snapshots and book checkpoints come back as ``DepthSnapshotRecord``. Duplicates
        are not removed here. A stream that needs its start point (Bybit ``tickers``) gives
        records only from the first one in the read on (:meth:`mark_prices` looks back for it).
        ``dataset``: frames the adapter knows belong to another dataset are skipped unparsed
        (records of unknown streams and REST snapshots still come, callers filter by type).
        """
        for rec in self._iter_parsed(exchange, start_ms, end_ms, symbols, dataset=dataset):
            if start_ms <= record_time(rec) < end_ms:
                yield rec

    # -- dataset frames --------------------------------------------------------------------------
    def read_frame(
        self, exchange: str, dataset: str, symbol: str, start_ms: int, end_ms: int
    ) -> pd.DataFrame:
        """One symbol's dataset for [start_ms, end_ms) as a frame conforming to the catalog.

        trades and candles are de-duplicated on the natural key (first receipt wins) and only
        closed 1m candles count; funding is the settled events seen in markPrice samples; depth
        is the book rebuilt from landed snapshots and diffs, sampled top-N at the cadence.
        """
        schema = dataset_schema(dataset)
        symbol = symbol.upper()
        if dataset == "depth":
            return self._depth_frame(exchange, symbol, start_ms, end_ms)
        if dataset == "trades":
            recs: list[Record] = [
                r
                for r in self.read_records(exchange, start_ms, end_ms, [symbol], dataset=dataset)
                if type(r) is TradeRecord
            ]
        elif dataset == "candles":
            recs = [
                r
                for r in self.read_records(exchange, start_ms, end_ms, [symbol], dataset=dataset)
                if type(r) is CandleRecord and r.is_closed and r.interval == "1m"
            ]
        elif dataset == "funding":
            recs = self._funding_records(exchange, symbol, start_ms, end_ms)
        else:  # pragma: no cover - dataset_schema rejected it
            raise ValueError(dataset)
        if not recs:
            return schema.empty_frame()
        frame = records_to_frame(dataset, recs)
        frame = frame.drop_duplicates(list(schema.natural_key), keep="first")
        frame = frame.sort_values(schema.time_column, kind="stable")
        if dataset == "trades":
            frame = frame.sort_values("agg_trade_id", kind="stable")
        return conform(frame, schema)

    def mark_prices(
        self, exchange: str, symbol: str, start_ms: int, end_ms: int
    ) -> list[MarkPriceRecord]:
        """One symbol's mark-price samples with event time in [start_ms, end_ms), by time.

        A venue whose funding frames need an earlier start frame (``stateful_replay``:
        Bybit's ``tickers`` deltas merge into their snapshot) is replayed from
        ``state_lookback_ms`` before the window, so the samples are the live ones; the frames
        before its first snapshot are skipped unparsed.
        """
        caps = self._adapter_class(exchange).capabilities
        stateful = Dataset.FUNDING in caps.stateful_replay
        lo = start_ms - (self.state_lookback_ms if stateful else 0)
        marks = [
            r
            for r in self._iter_parsed(exchange, lo, end_ms, [symbol], dataset="funding")
            if type(r) is MarkPriceRecord and start_ms <= r.event_time < end_ms
        ]
        marks.sort(key=lambda r: r.event_time)
        return marks

    def _funding_records(
        self, exchange: str, symbol: str, start_ms: int, end_ms: int
    ) -> list[Record]:
        marks = self.mark_prices(exchange, symbol, start_ms - HOUR_MS, end_ms + HOUR_MS)
        events = mark_prices_to_funding(marks)
        return [e for e in events if start_ms <= e.funding_time < end_ms]

    def depth_samples(
        self, exchange: str, symbol: str, start_ms: int, end_ms: int
    ) -> Iterator[BookSample]:
        """Top-N book samples with ``start_ms <= snapshot_time < end_ms`` rebuilt from landing.

        The gap ledger is honoured: at each depth window (disconnect, restart, break) the book
        is dropped once the replay passes the window's start, exactly as the live ingest
        dropped it, and sampling resumes only from a snapshot or checkpoint newer than the
        break (for a venue that sends its book in the stream, its next snapshot). Without
        this, the pre-cut book was sampled through the outage as if it were current (diffs of
        the outage missing from it). No sample strictly inside a window is ever given, whatever
        the window's bounds (``in_window``).
        """
        symbol = symbol.upper()
        sync = BookSync(symbol, cadence_ms=self.depth_cadence_ms, top_n=self.depth_top_n)
        lo = start_ms - self.depth_lookback_ms
        windows = [(g.start_ms, g.end_ms) for g in self.gaps(exchange, lo, end_ms, "depth", symbol)]
        breaks = sorted({a for a, _ in windows}, reverse=True)
        in_stream_venue = self._adapter_class(exchange).capabilities.book_snapshot_in_stream
        for rec, internal in self._replay(exchange, lo, end_ms, [symbol], dataset="depth"):
            t = type(rec)
            if t is DepthUpdateRecord or t is FastDiff:
                if rec.event_time < lo:
                    continue
                samples = _replay_diff(sync, rec, breaks)
            elif t is DepthSnapshotRecord:
                venue_sent = (in_stream_venue or rec.in_stream) and not internal
                samples = _replay_snapshot(sync, rec, breaks, venue_sent)
            else:
                continue
            for s in samples:
                if s.snapshot_time >= end_ms:
                    return
                if s.snapshot_time >= start_ms and not in_window(s.snapshot_time, windows):
                    yield s

    def _depth_frame(self, exchange: str, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        samples = self.depth_samples(exchange, symbol, start_ms, end_ms)
        return depth_samples_to_frame(exchange, samples, self.depth_top_n, floats=True)

    # -- catalogue of what landed ---------------------------------------------------------------
    def symbols_with_data(self, exchange: str, day: dt.date) -> set[str]:
        """Symbols with any landed frame received during ``day`` (UTC), as the venue spells them.

        Internal lines carry their symbol; the venue reads each frame's symbol from its bytes
        (``frame_stream``) and a frame it cannot read is parsed by its adapter.
        """
        start, end = day_window_ms(day)
        adapter = self._adapter(exchange)
        out: set[str] = set()
        for group in layout.data_groups(self.root, exchange):
            base = layout.group_dir(self.root, exchange, group)
            for hour_dir in layout.hour_dirs_between(base, start, end):
                for _, path in layout.closed_segments_in(hour_dir):
                    out |= _segment_symbols(adapter, path)
        return out

    def last_data_times(
        self,
        exchange: str,
        group: str,
        wanted: Collection[tuple[type, str]],
        *,
        max_segments: int = 1_000,
    ) -> dict[tuple[type, str], int]:
        """Newest *landed* data time (``record_time``) per (record type, symbol) of one group.

        What a restarted ingest opens its ``writer_restart`` gaps at: a heartbeat can claim
        messages that never became durable (a kill -9 loses the writer's queue) or be missing
        altogether (killed before its first heartbeat with data). Segments are read newest
        first; a stream is settled by the newest segment holding it (its maximum there absorbs
        small reorderings); reading stops once every wanted stream is settled or after
        ``max_segments`` segments.
        """
        # records' times only: a stateful parse (ticker deltas read without their snapshot)
        # still gives every landed frame's records their times
        parse_frame = self._adapter(exchange).parse_frame
        todo = set(wanted)
        out: dict[tuple[type, str], int] = {}
        seen = 0
        base = layout.group_dir(self.root, exchange, group)
        for hour_dir in layout.hour_dirs_newest_first(base):
            for _, path in reversed(layout.closed_segments_in(hour_dir)):
                if not todo or seen >= max_segments:
                    return out
                seen += 1
                found: dict[tuple[type, str], int] = {}
                for recv, payload in iter_segment_lines(path):
                    if payload[:1] == b"!":
                        continue
                    try:
                        recs = parse_frame(payload, recv)
                    except (MessageError, ValueError, RecursionError):
                        continue  # a stricter parser later must not stop a restart
                    for rec in recs:
                        # a venue's in-stream snapshot is its depth stream's data
                        kind = (
                            DepthUpdateRecord
                            if type(rec) is DepthSnapshotRecord and rec.in_stream
                            else type(rec)
                        )
                        key = (kind, rec.symbol)
                        if key in todo:
                            t = record_time(rec)
                            if t > found.get(key, t - 1):
                                found[key] = t
                out.update(found)
                todo -= found.keys()
        return out

    def gaps(
        self,
        exchange: str,
        start_ms: int,
        end_ms: int,
        dataset: str | None = None,
        symbol: str | None = None,
    ) -> list[GapRecord]:
        """Gap-ledger entries overlapping [start_ms, end_ms), oldest first.

        An entry with symbol ``*`` concerns every symbol of its group. Ledger files are
        ``gap-*.jsonl`` (one entry per line, what the writer lands a batch of entries as) and
        ``gap-*.json`` (one entry, what earlier writers wrote). Windows come back clamped to
        plausible times (``records.sane_gap``); unreadable entries are listed in
        ``ledger_errors``.
        """
        base = layout.exchange_dir(self.root, exchange) / layout.GAP_DIR
        if not base.is_dir():
            return []
        out = []
        for gap in self._ledger_entries(base):
            if gap.end_ms <= start_ms or gap.start_ms >= end_ms:
                continue
            if dataset is not None and gap.dataset not in (dataset, "*"):
                continue
            if symbol is not None and gap.symbol not in (symbol, symbol.upper(), "*"):
                continue
            out.append(gap)
        out.sort(key=lambda g: (g.start_ms, g.recorded_at, g.dataset, g.symbol))
        return out

    def _ledger_entries(self, base: Path) -> Iterator[GapRecord]:
        """Every readable entry under a ledger root; the unreadable ones in ``ledger_errors``.

        One corrupt entry must not hide the others (a reader that raised here made the
        auto-backfill sensor drop the whole ledger): it is reported, not skipped silently.
        """
        for path in [*base.glob("*/gap-*.json"), *base.glob("*/gap-*.jsonl")]:
            try:
                data = path.read_bytes()
            except OSError as exc:
                self._ledger_error(f"{path}", exc)
                continue
            lines = data.splitlines() if path.suffix == ".jsonl" else [data]
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    yield decode_gap(line)
                except msgspec.DecodeError as exc:
                    self._ledger_error(f"{path}:{n}" if path.suffix == ".jsonl" else f"{path}", exc)

    def _ledger_error(self, where: str, exc: Exception) -> None:
        self.ledger_errors.append(f"{where}: {type(exc).__name__}: {exc}")
        log.warning("gap-ledger entry %s unreadable: %r", where, exc)

    def dead_letters(self, exchange: str, day: dt.date) -> list[DeadLetter]:
        """Frames rejected during ``day`` (by receipt), with reason, field and raw bytes."""
        start, end = day_window_ms(day)
        base = layout.exchange_dir(self.root, exchange) / layout.DEAD_LETTER_DIR
        if not base.is_dir():
            return []
        out: list[DeadLetter] = []
        for gdir in sorted(p for p in base.iterdir() if p.is_dir()):
            for hour_dir in layout.hour_dirs_between(gdir, start, end):
                for _, path in layout.closed_segments_in(hour_dir):
                    out.extend(
                        decode_dead_letter(recv, payload, gdir.name)
                        for recv, payload in iter_segment_lines(path)
                    )
        out.sort(key=lambda d: d.received_at)
        return out


def _segment_symbols(adapter: ExchangeAdapter, path: Path) -> set[str]:
    """Symbols of one segment's lines: internal lines (``!kind SYMBOL ...``) and frames the
    venue reads (``frame_stream``) unparsed, the other frames parsed (their records' symbols)."""
    out: set[str] = set()
    add = out.add
    stream_of = adapter.frame_stream
    # the hot loop of a day's listing: no receipt-time parse unless a frame must be parsed
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        sp = line.index(b" ")
        payload = line[sp + 1 :]
        if payload[:1] == b"!":
            parts = payload.split(b" ", 2)
            if len(parts) == 3:
                add(parts[1].decode())
            continue
        info = stream_of(payload)
        if info is not None:
            add(info[0])
            continue
        try:
            recs = adapter.parse_frame(payload, int(line[:sp]))
        except (MessageError, ValueError, RecursionError):
            continue  # dead letters never land here; a stricter parser must not stop us
        out.update(r.symbol for r in recs)
    return out


def _replay_diff(
    sync: BookSync, rec: DepthUpdateRecord | FastDiff, breaks: list[int]
) -> list[BookSample]:
    """A landed diff into the rebuilt book; ``breaks``: window starts not passed yet, latest
    first. The first diff after a break (a window opens at the last diff before it) drops the
    book. Snapshots fetched from REST do not: one landed just before a cut can carry a later
    event time than the last diff, and a re-sync snapshot is only fetched once diffs flow
    again, so it always comes after."""
    t = rec.event_time
    if breaks and t > breaks[-1]:
        while breaks and t > breaks[-1]:
            breaks.pop()
        sync.reset()
    if type(rec) is FastDiff:
        return sync.on_update(
            t, rec.first, rec.final, rec.prev, rec.received_at, rec.bids, rec.asks
        )[1]
    return sync.on_diff(rec)[1]


def _replay_snapshot(
    sync: BookSync, rec: DepthSnapshotRecord, breaks: list[int], venue_sent: bool
) -> list[BookSample]:
    """A landed snapshot or checkpoint into the rebuilt book. ``venue_sent``: the venue's own
    snapshot in its place in the stream (``book_snapshot_in_stream``): it replaces the book as
    it did live and ends a break before it (a reconnect sends it); the book was dropped at the
    break, as live, so the ticks up to it are not samples of the pre-break book."""
    if not venue_sent:
        return sync.on_snapshot(rec)[1]
    t = record_time(rec)
    if breaks and t > breaks[-1]:
        while breaks and t > breaks[-1]:
            breaks.pop()
        sync.reset()
    return sync.on_snapshot(rec, in_stream=True)[1]


class FastDiff:
    """A landed book diff decoded by the adapter's ingest fast path: the fields
    ``BookSync.on_update`` takes, levels as floats (the values ``float(Decimal)`` of the full
    parser's levels give: both are the correctly rounded double of the wire's decimal)."""

    __slots__ = ("symbol", "event_time", "first", "final", "prev", "received_at", "bids", "asks")

    def __init__(self, symbol, event_time, first, final, prev, received_at, bids, asks) -> None:
        self.symbol = symbol
        self.event_time = event_time
        self.first = first
        self.final = final
        self.prev = prev
        self.received_at = received_at
        self.bids = bids
        self.asks = asks


def _full_parser(adapter: ExchangeAdapter) -> Callable[[bytes, int, object], list]:
    """``adapter.parse_frame`` with ``_book_parser``'s arguments."""
    parse_frame = adapter.parse_frame
    return lambda payload, recv, info: parse_frame(payload, recv)


def _book_parser(adapter: ExchangeAdapter) -> Callable[[bytes, int, object], list]:
    """``adapter.parse_frame``, but a diff its fast path accepts (``ingest/hotpath.py``: only
    what the full parser accepts) becomes a :class:`FastDiff` without the full parse. Its third
    argument is ``adapter.frame_stream(payload)``, which the replay has already read."""
    parse_frame = adapter.parse_frame
    fast = adapter.fast_path()
    if fast is None:
        return _full_parser(adapter)
    decode = fast.decode

    def parse(payload: bytes, recv: int, info: tuple | None) -> list:
        got = decode(payload, recv)
        if type(got) is tuple and got[0] is DepthUpdateRecord and info is not None:
            _, _, e, first, final, prev, bids, asks = got
            return [FastDiff(info[0], e, first, final, prev, recv, bids, asks)]
        return parse_frame(payload, recv)

    return parse


def _never(stream: str) -> bool:
    return False


def _other_datasets(adapter: ExchangeAdapter, dataset: str) -> Callable[[str], bool]:
    """Whether a stream is one ``adapter`` knows parses into another dataset than
    ``dataset`` (or none), cached per name."""
    known: dict[str, bool] = {}

    def skip(stream: str) -> bool:
        hit = known.get(stream)
        if hit is None:
            of = adapter.stream_dataset(stream)
            hit = known[stream] = of is not None and of != dataset
        return hit

    return skip


def in_window(t: int, windows: Iterable[tuple[int, int]]) -> bool:
    """Whether ``t`` lies strictly inside a gap window: the book at a window's ends is known
    (its last diff before the break, the snapshot that ends it), in between it is not."""
    return any(a < t < b for a, b in windows)


def depth_samples_to_frame(
    exchange: str,
    samples: Iterable[BookSample],
    top_n: int,
    source: str = "ws",
    *,
    floats: bool = False,
) -> pd.DataFrame:
    """Book samples as catalog DEPTH rows (one per sample, its levels as arrays) of ``source``.

    ``floats``: take the book's float levels instead of its ``Decimal`` ones, the same values
    (``float(Decimal(repr(x))) == x``) without a round trip that took most of a day's build.
    """
    return depth_rows_to_frame(
        (
            (
                exchange,
                s.symbol,
                s.snapshot_time,
                s.last_update_id,
                s.received_at,
                s.bid_floats if floats else s.bids,
                s.ask_floats if floats else s.asks,
            )
            for s in samples
        ),
        top_n,
        source=source,
    )
