"""The durable landing writer of one stream group: a thread that turns queued lines into segments.

The websocket side only formats a line and hands it over (:meth:`LandingWriter.put`, which never
blocks on the disk); this thread group-commits whatever is queued with one ``fdatasync`` per
batch, which is what keeps receipt-to-durable latency low at high rates. Segments rotate on the
receipt hour, on age (so readers see recent data soon) and on size. :meth:`close` drains the
queue and publishes every open segment, which is what a terminated run does.
"""

from __future__ import annotations

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

#: latency histogram: one bucket per ms up to this bound (the last bucket is "at least")
LATENCY_BUCKETS = 2048


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
    latency_hist: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)

    def latency_quantile(self, q: float) -> int | None:
        """Receipt-to-durable latency (ms) at quantile ``q``, None before any line."""
        total = sum(self.latency_hist)
        if total == 0:
            return None
        target = q * total
        acc = 0
        for ms, n in enumerate(self.latency_hist):
            acc += n
            if acc >= target:
                return ms
        return LATENCY_BUCKETS - 1


def new_writer_id() -> str:
    return uuid.uuid4().hex[:10]


def format_line(recv_ms: int, payload: bytes) -> bytes:
    """``<ms> <payload>\\n``; a newline inside a JSON frame is whitespace, so it becomes a space."""
    if b"\n" in payload:
        payload = payload.replace(b"\n", b" ")
    return b"%d %b\n" % (recv_ms, payload)


class _Store:
    """The open segment of one store (data or dead letters) and its rotation rules."""

    def __init__(self, dir_for: Callable[[int], Path], writer_id: str, config: WriterConfig):
        self.dir_for = dir_for
        self.writer_id = writer_id
        self.config = config
        self.seq = 0
        self.current: OpenSegment | None = None
        self.hour = -1
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
        self._stop = threading.Event()
        self._rotate_now = threading.Event()
        self._rotated = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._durable_listeners: list[Callable[[int], None]] = []

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
        # an orphaned spill file holds lines that were accepted but never made durable: re-land
        for spill in sorted(gdir.glob(".spill-*.tmp")):
            if spill != self.queue.spill_path:
                self._reland_spill(spill)

    def _reland_spill(self, spill: Path) -> None:
        data = spill.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        for raw in data.splitlines(keepends=True):
            try:
                sp1 = raw.index(b" ")
                sp2 = raw.index(b" ", sp1 + 1)
                store, recv = int(raw[:sp1]), int(raw[sp1 + 1 : sp2])
            except ValueError:
                continue
            self._stores[store].segment_for(recv).write(raw[sp1 + 1 :])
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
        return self.queue.put(DATA, recv_ms, format_line(recv_ms, payload))

    def put_snapshot(self, snap: DepthSnapshotRecord, kind: bytes = DEPTH_SNAPSHOT) -> bool:
        """Land a REST depth snapshot (or a book checkpoint) in line with the frames."""
        recv = snap.received_at if snap.received_at is not None else self._clock_ms()
        return self.queue.put(DATA, recv, format_line(recv, encode_snapshot(kind, snap)))

    def put_dead_letter(self, recv_ms: int, raw: bytes | str, reason: str, field: str) -> bool:
        """Queue a rejected frame with its reason for the dead-letter store."""
        line = format_line(recv_ms, encode_dead_letter(raw, reason, field))
        return self.queue.put(DEAD, recv_ms, line)

    def record_gap(self, gap: GapRecord) -> Path:
        """Write one gap-ledger entry at once (one small atomic file: gaps are rare)."""
        self._gap_seq += 1
        name = f"gap-{gap.recorded_at}-{self.writer_id}-{self._gap_seq}.json"
        path = layout.gap_dir(self.root, self.exchange, self.group) / name
        atomic_write(path, encode_gap(gap))
        return path

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
        finally:
            for s in self._stores.values():
                try:
                    if s.close():
                        self.stats.segments_closed += 1
                except OSError as e:
                    self._error = self._error or e
            with self._rotated:
                self._rotated.notify_all()

    def _write_batch(self, batch: list[Item]) -> None:
        touched: set[int] = set()
        stores = self._stores
        nbytes = 0
        for store, recv, line in batch:
            stores[store].segment_for(recv).write(line)
            touched.add(store)
            nbytes += len(line)
        for store in touched:
            seg = stores[store].current
            if seg is not None:
                seg.sync()
        durable = self._clock_ms()
        hist = self.stats.latency_hist
        top = LATENCY_BUCKETS - 1
        dead = 0
        for store, recv, _ in batch:
            if store == DATA:
                d = durable - recv
                hist[d if 0 <= d < top else (top if d > 0 else 0)] += 1
            else:
                dead += 1
        st = self.stats
        st.lines_durable += len(batch) - dead
        st.dead_letters += dead
        st.batches += 1
        st.bytes_written += nbytes
        for fn in self._durable_listeners:
            fn(len(batch))


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
    "LandingWriter",
    "WriterConfig",
    "WriterStats",
    "format_line",
    "recover_group",
    "recover_temp_file",
]
