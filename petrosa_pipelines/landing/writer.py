"""The durable landing writer of one stream group: a thread that turns queued lines into segments.

The websocket side only formats a line and hands it over (:meth:`LandingWriter.put`, which never
blocks on the disk); this thread group-commits whatever is queued with one ``fdatasync`` per
batch, which is what keeps receipt-to-durable latency low at high rates. Segments rotate on the
receipt hour, on age (so readers see recent data soon) and on size. :meth:`close` drains the
queue and publishes every open segment, which is what a terminated run does.

**Gap-ledger entries** (:meth:`record_gap`) take the same queue, so recording one costs the
caller (the ingest's event loop) no disk I/O: a burst of gaps used to cost a file and a
directory fsync each on the loop (~3 ms apiece). The writer thread lands the entries of a batch
as one ledger file (``gap-<recorded>-<writer>-<seq>.jsonl``, one entry per line; one fsync of
the file, one of the directory) *before* it writes any line of that batch. The ordering
guarantee, in queue order: an entry is durable before any line queued after it is written, so
before the data after the gap is synced or its segment published; :meth:`close` makes every
queued entry durable. A ``kill -9`` can therefore lose an entry only together with every line
queued after it, and the next run's ``writer_restart`` gap (opened at the last *landed* data
time, ``LandingStore.last_data_times``) covers that window.

**Durable-position watermark.** Every line the writer accepts (frames, snapshots, dead
letters, gap entries) advances :attr:`LandingWriter.queued_mark` by one; the writer thread
advances :attr:`LandingWriter.durable_mark` once those lines are synced (queue order: a mark is
durable only when everything queued before it is). A source that must acknowledge upstream only
after durable landing (the NATS JetStream source, ``ingest/nats_source.py``) takes
``queued_mark`` after handing its messages over and acknowledges once ``durable_mark`` reaches
it (:meth:`add_mark_listener` wakes it; :meth:`wait_durable` blocks).
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.records import (
    DEPTH_SNAPSHOT,
    GapRecord,
    encode_dead_letter,
    encode_gap,
    encode_snapshot,
)
from petrosa_pipelines.landing.segments import (
    GroupLock,
    OpenSegment,
    atomic_write,
    recover_temp_file,
    recover_temp_files,
)
from petrosa_pipelines.landing.spill import Item, SpillQueue

DATA = 0
DEAD = 1
#: queue items that are gap-ledger entries (``<recorded_at> <entry json>\n``)
GAP = 2

#: latency histogram: one bucket per ms up to this bound (the last bucket is "at least")
LATENCY_BUCKETS = 2048
#: the recent latency (what the heartbeat reports as p50/p99) covers this many slots of
#: ``LATENCY_SLOT_MS``: the last 5 minutes, in a ring of per-minute histograms (bounded)
LATENCY_SLOT_MS = 60_000
LATENCY_SLOTS = 5


def hist_quantile(hist: list[int], q: float) -> int | None:
    """The bucket (ms) at quantile ``q`` of a latency histogram; None when it is empty."""
    total = sum(hist)
    if total == 0:
        return None
    target = q * total
    acc = 0
    for ms, n in enumerate(hist):
        acc += n
        if acc >= target:
            return ms
    return LATENCY_BUCKETS - 1


@dataclass(frozen=True)
class WriterConfig:
    """How segments rotate and how much may wait in memory before spilling."""

    segment_max_age_s: float = 15.0
    segment_max_bytes: int = 128 << 20
    max_memory_bytes: int = 64 << 20
    max_spill_bytes: int = 2 << 30
    fsync: bool = True
    batch_max_items: int = 20_000


@dataclass
class WriterStats:
    lines_durable: int = 0
    dead_letters: int = 0
    segments_closed: int = 0
    batches: int = 0
    bytes_written: int = 0
    recovered_segments: int = 0
    #: gap-ledger entries made durable, and the ledger files they went into
    gaps_durable: int = 0
    ledger_files: int = 0
    #: since the writer started (never forgets: one bad minute stays in it for the whole run)
    latency_hist: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    #: (slot start ms, histogram) of the last ``LATENCY_SLOTS`` slots with lines, oldest first
    latency_slots: collections.deque[tuple[int, list[int]]] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SLOTS)
    )

    def latency_quantile(self, q: float) -> int | None:
        """Receipt-to-durable latency (ms) at quantile ``q`` since the start, None before any
        line."""
        return hist_quantile(self.latency_hist, q)

    def slot_hist(self, durable_ms: int) -> list[int]:
        """The histogram of the slot holding ``durable_ms`` (a new slot drops the oldest)."""
        start = durable_ms - durable_ms % LATENCY_SLOT_MS
        slots = self.latency_slots
        if not slots or slots[-1][0] != start:
            slots.append((start, [0] * LATENCY_BUCKETS))
        return slots[-1][1]

    def recent_latency_quantile(self, q: float, now_ms: int) -> int | None:
        """Latency (ms) at quantile ``q`` over the last ``LATENCY_SLOTS`` slots before
        ``now_ms`` (the current one included); None when no line landed in them.

        What the heartbeat reports: a since-start quantile is a ratchet, the p99 of a run that
        was slow once stays high for the rest of the run and rises with every slow episode.
        """
        oldest = now_ms - now_ms % LATENCY_SLOT_MS - (LATENCY_SLOTS - 1) * LATENCY_SLOT_MS
        merged = [0] * LATENCY_BUCKETS
        for start, hist in list(self.latency_slots):
            if start >= oldest:
                merged = [a + b for a, b in zip(merged, hist, strict=True)]
        return hist_quantile(merged, q)


def new_writer_id() -> str:
    return uuid.uuid4().hex[:10]


def format_line(recv_ms: int, payload: bytes) -> bytes:
    """``<ms> <payload>\\n``; a newline inside a JSON frame is whitespace, so it becomes a space."""
    if b"\n" in payload:
        payload = payload.replace(b"\n", b" ")
    return b"%d %b\n" % (recv_ms, payload)


class LineBatch:
    """Frames formatted as landing lines, handed to the writer as one queue item.

    Queueing every frame on its own (a lock, a condition notify, a tuple) cost more than
    decoding it; the engine appends frames here and :meth:`LandingWriter.put_batch` queues the
    joined lines once per burst. A batch never spans a receipt hour (segments are filed by it):
    :meth:`add` reports when the hour changed so the caller hands the batch over first.
    """

    __slots__ = ("parts", "lines", "nbytes", "first_recv", "hour_end", "_recv", "_prefix")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.lines = 0
        self.nbytes = 0
        self.first_recv = 0
        self.hour_end = 0
        self._recv = -1
        self._prefix = b""

    def fits(self, recv_ms: int) -> bool:
        """False when ``recv_ms`` belongs to a later receipt hour than the batched lines."""
        return not self.lines or recv_ms < self.hour_end

    def add(self, recv_ms: int, payload: bytes) -> None:
        """Append ``<recv_ms> <payload>\\n`` (see :func:`format_line`); check :meth:`fits` first."""
        if recv_ms != self._recv:
            self._recv = recv_ms
            self._prefix = b"%d " % recv_ms
            if not self.lines:
                self.first_recv = recv_ms
                self.hour_end = layout.hour_floor(recv_ms) + 3_600_000
        if b"\n" in payload:
            payload = payload.replace(b"\n", b" ")
        self.parts += (self._prefix, payload, b"\n")
        self.lines += 1
        self.nbytes += len(payload)

    def take(self) -> tuple[int, bytes, int]:
        """(first receipt time, joined lines, line count); empties the batch."""
        out = (self.first_recv, b"".join(self.parts), self.lines)
        self.parts = []
        self.lines = 0
        self.nbytes = 0
        return out


class _Store:
    """The open segment of one store (data or dead letters) and its rotation rules."""

    def __init__(self, dir_for: Callable[[int], Path], writer_id: str, config: WriterConfig):
        self.dir_for = dir_for
        self.writer_id = writer_id
        self.config = config
        self.seq = 0
        self.current: OpenSegment | None = None
        self.hour = -1
        #: start of the open segment's receipt hour (ms), for the writer's per-item check
        self.hour_start = -1
        self.opened_at = 0.0

    def segment_for(self, recv_ms: int) -> OpenSegment:
        hour = layout.hour_floor(recv_ms)
        cur = self.current
        if cur is not None and hour == self.hour and cur.bytes < self.config.segment_max_bytes:
            return cur
        self.close()
        self.seq += 1
        name = layout.SegmentName(recv_ms, self.writer_id, self.seq)
        self.current = OpenSegment(self.dir_for(recv_ms), name, fsync=self.config.fsync)
        self.hour = hour
        self.hour_start = hour
        self.opened_at = time.monotonic()
        return self.current

    def due(self, now: float) -> bool:
        cur = self.current
        return cur is not None and (
            cur.bytes >= self.config.segment_max_bytes
            or now - self.opened_at >= self.config.segment_max_age_s
        )

    def close(self) -> bool:
        if self.current is None:
            return False
        self.current.close()
        self.current = None
        return True


class LandingWriter:
    """Lands one stream group's frames, dead letters and gap entries durably.

    Use as a context manager or call :meth:`start` / :meth:`close`. Holding the group lock makes
    this the only writer of the group; leftover temp files of a crashed predecessor are
    recovered at start.
    """

    def __init__(
        self,
        root: str | Path,
        exchange: str,
        group: str,
        *,
        config: WriterConfig | None = None,
        writer_id: str | None = None,
        clock_ms: Callable[[], int] | None = None,
    ):
        self.root = Path(root)
        self.exchange = layout.check_name("exchange", exchange)
        self.group = layout.check_name("group", group)
        self.config = config or WriterConfig()
        self.writer_id = writer_id or new_writer_id()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.stats = WriterStats()
        self._lock = GroupLock(layout.lock_path(self.root, exchange, group))
        self.queue = SpillQueue(
            layout.group_dir(self.root, exchange, group) / f".spill-{self.writer_id}.tmp",
            max_memory_bytes=self.config.max_memory_bytes,
            max_spill_bytes=self.config.max_spill_bytes,
        )
        self._stores = {
            DATA: _Store(
                lambda ms: layout.data_hour_dir(self.root, exchange, group, ms),
                self.writer_id,
                self.config,
            ),
            DEAD: _Store(
                lambda ms: layout.dead_letter_hour_dir(self.root, exchange, group, ms),
                self.writer_id,
                self.config,
            ),
        }
        self._gap_seq = 0
        self._gaps_queued = 0
        self._gaps_done = threading.Condition()
        self._stop = threading.Event()
        self._rotate_now = threading.Event()
        self._rotated = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._durable_listeners: list[Callable[[int], None]] = []
        #: lines accepted / made durable so far (the watermark of the module docstring)
        self._queued_mark = 0
        self._durable_mark = 0
        self._mark_cond = threading.Condition()
        self._mark_listeners: list[Callable[[int], None]] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LandingWriter:
        """Take the group lock, recover what a crashed writer left, start the writer thread."""
        self._lock.acquire()
        try:
            self._recover()
        except BaseException:
            self._lock.release()
            raise
        self._thread = threading.Thread(target=self._run, name=f"landing-{self.group}", daemon=True)
        self._thread.start()
        return self

    def _recover(self) -> None:
        gdir = layout.group_dir(self.root, self.exchange, self.group)
        recovered = recover_temp_files(gdir)
        recovered += recover_temp_files(
            layout.dead_letter_group_dir(self.root, self.exchange, self.group)
        )
        self.stats.recovered_segments = len(recovered)
        # a ledger file whose writer died before its rename was never reported durable
        ledger = layout.gap_dir(self.root, self.exchange, self.group)
        for tmp in ledger.glob(".gap-*.tmp") if ledger.is_dir() else ():
            tmp.unlink()
        # an orphaned spill file holds lines that were accepted but never made durable: re-land
        for spill in sorted(gdir.glob(".spill-*.tmp")):
            if spill != self.queue.spill_path:
                self._reland_spill(spill)

    def _reland_spill(self, spill: Path) -> None:
        data = spill.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        gaps: list[bytes] = []
        for raw in data.splitlines(keepends=True):
            try:
                sp1 = raw.index(b" ")
                sp2 = raw.index(b" ", sp1 + 1)
                store, recv = int(raw[:sp1]), int(raw[sp1 + 1 : sp2])
            except ValueError:
                continue
            if store == GAP:
                gaps.append(raw[sp1 + 1 :])
            else:
                self._stores[store].segment_for(recv).write(raw[sp1 + 1 :])
        if gaps:  # before the data is synced, as in _write_batch
            self._write_ledger(gaps)
        for s in self._stores.values():
            if s.current is not None:
                s.current.sync()
                s.close()
        spill.unlink()

    def close(self, timeout: float | None = 60.0) -> None:
        """Drain the queue, publish every open segment, release the lock."""
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._lock.release()
        if self._error is not None:
            raise RuntimeError("landing writer failed") from self._error

    def __enter__(self) -> LandingWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    # -- producer API (any thread) --------------------------------------------------------------
    def put(self, recv_ms: int, payload: bytes) -> bool:
        """Queue one raw frame; False means full (memory and spill): wait and retry, never drop."""
        return self._counted(self.queue.put(DATA, recv_ms, format_line(recv_ms, payload)))

    def _counted(self, accepted: bool, lines: int = 1) -> bool:
        if accepted:
            self._queued_mark += lines
        return accepted

    def put_batch(self, batch: LineBatch) -> list[tuple[int, bytes]]:
        """Queue a batch of frames; returns the lines the queue refused (in order, formatted).

        The common case queues the joined lines as *one* item. That is only done when the item
        is sure to stay in memory (no spill in progress and room left): a spilled item is read
        back line by line, so a multi-line item must never reach the spill file. Both
        conditions can only improve between the check and the put because the consumer only
        drains, which holds as long as one thread produces (the engine's loop does every put).
        Otherwise the lines are queued one by one, spilling like single :meth:`put` calls.
        """
        if not batch.lines:
            return []
        first, chunk, _ = batch.take()
        q = self.queue
        if q.spill_bytes == 0 and q.memory_bytes + len(chunk) <= q.max_memory_bytes:
            if self._counted(q.put(DATA, first, chunk), chunk.count(b"\n")):
                return []
            raise AssertionError("landing queue refused a batch that fitted in memory")
        refused: list[tuple[int, bytes]] = []
        for line in chunk.splitlines(keepends=True):
            recv = int(line[: line.index(b" ")])
            if refused or not self._counted(q.put(DATA, recv, line)):
                refused.append((recv, line))
        return refused

    def put_line(self, recv_ms: int, line: bytes) -> bool:
        """Queue one already formatted line (a refused line of :meth:`put_batch`, retried)."""
        return self._counted(self.queue.put(DATA, recv_ms, line))

    def put_snapshot(self, snap: DepthSnapshotRecord, kind: bytes = DEPTH_SNAPSHOT) -> bool:
        """Land a REST depth snapshot (or a book checkpoint) in line with the frames."""
        recv = snap.received_at if snap.received_at is not None else self._clock_ms()
        line = format_line(recv, encode_snapshot(kind, snap))
        return self._counted(self.queue.put(DATA, recv, line))

    def put_dead_letter(self, recv_ms: int, raw: bytes | str, reason: str, field: str) -> bool:
        """Queue a rejected frame with its reason for the dead-letter store."""
        line = format_line(recv_ms, encode_dead_letter(raw, reason, field))
        return self._counted(self.queue.put(DEAD, recv_ms, line))

    def record_gap(self, gap: GapRecord) -> bool:
        """Queue one gap-ledger entry; no disk I/O here (see the module docstring for when it
        is durable). False means the queue is full: retry, as with :meth:`put`."""
        if self._stop.is_set():
            raise RuntimeError("landing writer is closed: the gap entry would be lost")
        line = format_line(gap.recorded_at, encode_gap(gap))
        if not self._counted(self.queue.put(GAP, gap.recorded_at, line)):
            return False
        self._gaps_queued += 1
        return True

    def wait_gaps_durable(self, timeout: float = 10.0) -> int:
        """Block until every entry queued so far is durable; returns how many are durable.

        For callers that must know (tests, a process reporting before it may be killed); the
        ingest itself relies on the ordering guarantee instead.
        """
        want = self._gaps_queued
        with self._gaps_done:
            if not self._gaps_done.wait_for(
                lambda: self.stats.gaps_durable >= want or self._error is not None, timeout
            ):
                raise TimeoutError(f"{want - self.stats.gaps_durable} gap entries not durable")
        if self._error is not None:
            raise RuntimeError("landing writer failed") from self._error
        return self.stats.gaps_durable

    def rotate(self, timeout: float = 10.0) -> None:
        """Publish what is queued now: drain, close the open segments, return when done."""
        with self._rotated:
            self._rotate_now.set()
            self.queue.wake()
            if not self._rotated.wait(timeout):
                raise TimeoutError("landing writer did not rotate in time")

    def add_durable_listener(self, fn: Callable[[int], None]) -> None:
        """``fn(n)`` is called on the writer thread after ``n`` more lines became durable."""
        self._durable_listeners.append(fn)

    @property
    def queued_mark(self) -> int:
        """Lines accepted so far (frames, snapshots, dead letters, gap entries): take it after
        handing something over, then wait until :attr:`durable_mark` reaches it."""
        return self._queued_mark

    @property
    def durable_mark(self) -> int:
        """Lines made durable so far, in queue order (see the module docstring)."""
        return self._durable_mark

    def add_mark_listener(self, fn: Callable[[int], None]) -> None:
        """``fn(durable_mark)`` is called on the writer thread each time the mark advances
        (an asyncio caller passes a ``loop.call_soon_threadsafe`` wrapper)."""
        self._mark_listeners.append(fn)

    def wait_durable(self, mark: int, timeout: float = 10.0) -> int:
        """Block until :attr:`durable_mark` >= ``mark``; returns the mark. Raises
        ``TimeoutError``, or ``RuntimeError`` when the writer failed (never reports a line
        durable that is not)."""
        with self._mark_cond:
            ok = self._mark_cond.wait_for(
                lambda: self._durable_mark >= mark or self._error is not None, timeout
            )
        if self._error is not None:
            raise RuntimeError("landing writer failed") from self._error
        if not ok:
            raise TimeoutError(f"durable mark {self._durable_mark} did not reach {mark}")
        return self._durable_mark

    # -- writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                batch = self.queue.get_batch(self.config.batch_max_items, timeout=0.05)
                if batch:
                    self._write_batch(batch)
                now = time.monotonic()
                rotate = self._rotate_now.is_set()
                if rotate and not self.queue.empty:
                    continue
                for s in self._stores.values():
                    if (rotate or s.due(now)) and s.close():
                        self.stats.segments_closed += 1
                if rotate:
                    self._rotate_now.clear()
                    with self._rotated:
                        self._rotated.notify_all()
                if self._stop.is_set() and self.queue.empty:
                    break
        except BaseException as e:  # noqa: BLE001 - surfaced by close() and the engine
            self._error = e
            with self._gaps_done:
                self._gaps_done.notify_all()
            with self._mark_cond:
                self._mark_cond.notify_all()
        finally:
            for s in self._stores.values():
                try:
                    if s.close():
                        self.stats.segments_closed += 1
                except OSError as e:
                    self._error = self._error or e
            with self._rotated:
                self._rotated.notify_all()

    def _write_ledger(self, lines: list[bytes]) -> Path:
        """Make queued ledger lines (``<ms> <entry>\n``) durable as one atomic ledger file."""
        first = int(lines[0][: lines[0].index(b" ")])
        self._gap_seq += 1
        name = f"gap-{first}-{self.writer_id}-{self._gap_seq}.jsonl"
        path = layout.gap_dir(self.root, self.exchange, self.group) / name
        atomic_write(path, b"".join(line[line.index(b" ") + 1 :] for line in lines))
        self.stats.ledger_files += 1
        with self._gaps_done:
            self.stats.gaps_durable += len(lines)
            self._gaps_done.notify_all()
        return path

    def _write_batch(self, batch: list[Item]) -> None:
        """Write a batch, make it durable with one sync per store, account latency per line.

        An item is one line or, from :meth:`put_batch`, several lines of one receipt hour; its
        receipt time is its first (oldest) line's, so the recorded latency of the other lines
        is an upper bound (by the length of one burst). Gap-ledger entries of the batch are
        made durable first (the ordering guarantee of the module docstring).
        """
        gaps = [line for store, _, line in batch if store == GAP]
        marked = len(gaps)
        if gaps:
            self._write_ledger(gaps)
            batch = [item for item in batch if item[0] != GAP]
        stores = self._stores
        data = stores[DATA]
        nbytes = 0
        touched = [False, False]  # DATA, DEAD
        counts: list[int] = []
        for store, recv, line in batch:
            s = data if store == DATA else stores[store]
            cur = s.current
            if (
                cur is None
                or recv < s.hour_start
                or recv >= s.hour_start + 3_600_000
                or cur.bytes >= s.config.segment_max_bytes
            ):
                cur = s.segment_for(recv)
            cur.write(line)
            n = line.count(b"\n")
            cur.lines += n - 1  # write() counted one
            counts.append(n)
            nbytes += len(line)
            touched[store] = True
        for store in (DATA, DEAD):
            seg = stores[store].current
            if touched[store] and seg is not None:
                seg.sync()
        durable = self._clock_ms()
        hist = self.stats.latency_hist
        recent = self.stats.slot_hist(durable)
        top = LATENCY_BUCKETS - 1
        lines = dead = 0
        for (store, recv, _), n in zip(batch, counts, strict=True):
            if store == DATA:
                d = durable - recv
                b = d if 0 <= d < top else (top if d > 0 else 0)
                hist[b] += n
                recent[b] += n
                lines += n
            else:
                dead += n
        st = self.stats
        st.lines_durable += lines
        st.dead_letters += dead
        st.batches += 1
        st.bytes_written += nbytes
        for fn in self._durable_listeners:
            fn(lines + dead)
        self._advance_mark(marked + lines + dead)

    def _advance_mark(self, n: int) -> None:
        """``n`` more accepted lines are durable (writer thread, after their sync)."""
        with self._mark_cond:
            self._durable_mark += n
            mark = self._durable_mark
            self._mark_cond.notify_all()
        for fn in self._mark_listeners:
            fn(mark)


def recover_group(root: str | Path, exchange: str, group: str) -> list[Path]:
    """Recover a dead writer's leftovers without starting a writer (holds the lock briefly)."""
    lock = GroupLock(layout.lock_path(Path(root), exchange, group))
    lock.acquire()
    try:
        out = recover_temp_files(layout.group_dir(Path(root), exchange, group))
        out += recover_temp_files(layout.dead_letter_group_dir(Path(root), exchange, group))
        return out
    finally:
        lock.release()


__all__ = [
    "DATA",
    "DEAD",
    "GAP",
    "LandingWriter",
    "LineBatch",
    "WriterConfig",
    "WriterStats",
    "format_line",
    "recover_group",
    "recover_temp_file",
]
