"""The live outputs' worker: a process of its own that parses what the ingest offered, publishes
it on NATS and keeps the latest state in Redis (``LiveOutputs`` in ``publisher.py`` feeds it).

A process, not a thread, so that parsing frames again and building messages never holds the
ingest's GIL. It reads batches of offered items from its data pipe (``wire.py``), parses frames
with its own adapter (adapters may keep per-symbol state), turns records into messages
(``messages.py``) and the latest state (``latest.py``); the NATS side (``nats_output.py``) and
the Redis side (``redis_output.py``) publish from its asyncio loop. Its counters go back to the
ingest on the report pipe at most every ``REPORT_S`` while anything changes (every
``HEARTBEAT_S`` otherwise): ``LiveOutputs.stats()`` adds them to its own.

It stops when told (``close`` with a deadline) or when the data pipe ends (the ingest's process
exited): it publishes what it holds until the deadline, counts the rest as dropped, sends a
final report and exits. Ctrl-C is the ingest's to handle: the worker ignores SIGINT.

    python -m petrosa_pipelines.live.worker <data fd> <report fd>   (started by publisher.py)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from petrosa_pipelines.exchanges.base import DepthUpdateRecord, MarkPriceRecord
from petrosa_pipelines.live.candles import TradeCandles, builds_candles
from petrosa_pipelines.live.latest import LatestState
from petrosa_pipelines.live.messages import FundingTracker, record_messages
from petrosa_pipelines.live.nats_output import NatsOutput
from petrosa_pipelines.live.redis_output import RedisOutput
from petrosa_pipelines.live.wire import Decoder, PipeWriter, encode
from petrosa_pipelines.settings import LiveSettings, redact_live

log = logging.getLogger("petrosa_pipelines.live.worker")

#: items handled per turn of the loop before yielding to publishing
DRAIN_TURN = 2000
#: the pipe is not read while this many items wait: a worker behind leaves them in the pipe and
#: then in the ingest's bounded intake, where what does not fit is counted
INTAKE_HIGH = 4 * DRAIN_TURN
#: reports while anything changes, and a heartbeat report when nothing does (s)
REPORT_S, HEARTBEAT_S = 0.2, 1.0
#: how long the final report may wait for room in the report pipe (s)
FINAL_REPORT_S = 5.0
#: records the outputs have no use for: depth diffs are neither published (the book samples
#: are) nor part of the latest state. A stream found to carry only these is not parsed again
#: (most of a feed's frames, and its costliest to parse); its frames are still counted in
#: ``unpublished`` as if they were.
UNUSED_RECORDS = frozenset({DepthUpdateRecord})
#: streams remembered at most (a feed carries a few per symbol)
STREAMS_MAX = 10_000


class Worker(NatsOutput, RedisOutput):
    """Parsing, messages, latest state and the counters of one worker process."""

    def __init__(self, settings: LiveSettings, venue: str, exchange: str, parser: Any) -> None:
        self.settings, self.venue, self.exchange, self._parser = settings, venue, exchange, parser
        self._frame_stream = getattr(parser, "frame_stream", None)
        #: streams whose frames carry only ``UNUSED_RECORDS``: (record type, records a frame)
        self._unused: dict[str, tuple[str, int]] = {}
        self._intake: collections.deque = collections.deque()
        #: items received from the ingest; items refused at a passed close deadline
        self.taken = 0
        self.intake_dropped = 0
        self._pending: collections.deque = collections.deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()  # the mixins' habit; uncontended in a process of its own
        self._published: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._unpublished: collections.Counter[str] = collections.Counter()
        self._counts: collections.Counter[str] = collections.Counter()
        self._nats_state = "connecting" if settings.publishing else "off"
        self._redis_state = "connecting" if settings.keeping_latest else "off"
        self._last_error: dict[str, str] = {}
        self._state = LatestState(settings.redis_prefix)
        self._funding = FundingTracker()
        #: 1-minute candles from trades, for a group whose streams carry no klines
        self._candles = TradeCandles() if builds_candles(parser) else None
        self._closing = False
        self._deadline = 0.0
        self._redis_streak = 0
        self._inflight = 0
        self._writing = 0

    # -- what comes in --------------------------------------------------------------------------
    def take(self, items: list) -> None:
        self._intake.extend(items)
        self.taken += len(items)

    def close_by(self, deadline: float) -> None:
        if not self._closing:
            self._closing, self._deadline = True, deadline

    def idle(self) -> bool:
        return not (
            self._intake or self._pending or self._inflight or self._state.dirty or self._writing
        )

    def _late(self) -> bool:
        return time.monotonic() > self._deadline

    def _error(self, where: str, exc: BaseException) -> None:
        text = redact_live(f"{type(exc).__name__}: {exc}", self.settings)[:300]
        first = self._last_error.get(where) is None
        self._last_error[where] = text
        (log.warning if first else log.debug)("live %s: %s", where, text)

    # -- parsing and messages ---------------------------------------------------------------------
    def drain(self, limit: int) -> int:
        """Handle up to ``limit`` items; past a close deadline the rest is counted, not handled."""
        intake, n = self._intake, 0
        if self._closing and self._late():
            self.intake_dropped += len(intake)
            intake.clear()
            return 0
        while intake and n < limit:
            item = intake.popleft()
            n += 1
            if type(item) is tuple:
                if self._parser is None:  # outputs made without an adapter cannot parse
                    self._unpublished["frame_without_adapter"] += 1
                    continue
                recs = self._parse(*item)
            else:
                recs = (item,)
            for rec in recs:
                try:
                    self._handle(rec)
                except Exception as exc:  # noqa: BLE001 - one odd record never stops the worker
                    self._unpublished[f"failed:{type(rec).__name__}"] += 1
                    self._error("record", exc)
        return n

    def _parse(self, raw: bytes, received_at: int) -> list[Any]:
        stream = self._stream_of(raw)
        if stream is not None:
            unused = self._unused.get(stream)
            if unused is not None:  # a stream of depth diffs: counted, not parsed again
                self._unpublished[unused[0]] += unused[1]
                return []
        p = self._parser
        try:
            parse_frame = getattr(p, "parse_frame", None)
            if callable(parse_frame):
                recs = list(parse_frame(raw, received_at))
            else:
                rec = p.parse(raw, received_at)
                recs = [] if rec is None else [rec]
        except Exception:  # noqa: BLE001 - the engine dead-lettered what it could not parse
            self._counts["parse_failures"] += 1
            return []
        if stream is not None and recs and all(type(r) in UNUSED_RECORDS for r in recs):
            if len(self._unused) >= STREAMS_MAX:
                self._unused.clear()
            self._unused[stream] = (type(recs[0]).__name__, len(recs))
        return recs

    def _stream_of(self, raw: bytes) -> str | None:
        """The stream a frame names, read unparsed by the adapter (None: it cannot tell)."""
        frame_stream = self._frame_stream
        if frame_stream is None:
            return None
        try:
            info = frame_stream(raw)
        except Exception:  # noqa: BLE001 - the parser then says what is wrong with it
            return None
        return info[1] if info is not None else None

    def _handle(self, rec: Any) -> None:
        venue, s = self.venue, self.settings
        if s.keeping_latest:
            if hasattr(rec, "bid_floats"):
                self._state.on_sample(venue, rec)
            else:
                self._state.on_record(venue, rec)
        recs = [rec, *self._derived(rec)]
        if not s.publishing:
            return
        for r in recs:
            try:
                msgs = record_messages(venue, r, s.subject_prefix, self.exchange)
            except ValueError as exc:  # a symbol that cannot be a subject token
                self._unpublished[f"invalid_subject:{getattr(r, 'symbol', '?')}"] += 1
                self._error("subject", exc)
                continue
            if not msgs:
                self._unpublished[type(r).__name__] += 1
            for m in msgs:
                self._buffer(m)

    def _derived(self, rec: Any) -> list[Any]:
        """What ``rec`` adds beside itself, the latest state already told: settled funding from
        mark prices, and for a group without klines the 1-minute candles of its trades (the
        open one only to the latest state, a closed one also to publish)."""
        keep, out = self.settings.keeping_latest, []
        derived = self._candles.on_record(rec) if self._candles is not None else []
        if type(rec) is MarkPriceRecord:
            derived += self._funding.on_mark_price(rec)
        for r in derived:
            if keep:
                self._state.on_record(self.venue, r)
            if getattr(r, "is_closed", True):
                out.append(r)
        return out

    # -- what goes back ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The counters ``LiveOutputs.stats()`` adds to its own (``taken``: to tell what is
        still in the pipe; ``idle``: for ``LiveOutputs.idle``)."""
        c, s = self._counts, self.settings
        return {
            "pid": os.getpid(),
            "taken": self.taken,
            "intake": len(self._intake),
            "intake_dropped": self.intake_dropped,
            "idle": self.idle(),
            "parse_failures": c["parse_failures"],
            "unpublished": dict(self._unpublished),
            "nats": {
                "state": self._nats_state,
                "stream": s.stream if s.publishing else None,
                "pending": len(self._pending) + self._inflight,
                "pending_bytes": self._pending_bytes,
                "published_by_subject": dict(self._published),
                "dropped_by_subject": dict(self._dropped),
                "acked_duplicates": c["duplicates"],
                "errors": c["nats_errors"],
                "last_error": self._last_error.get("nats"),
            },
            "redis": {
                "state": self._redis_state,
                "writes": c["redis_writes"],
                "failures": c["redis_failures"],
                "keys_waiting": len(self._state.dirty),
                "last_error": self._last_error.get("redis"),
            },
        }

    # -- the loop ---------------------------------------------------------------------------------
    def on_message(self, kind: str, data: Any) -> None:
        if kind == "items":
            self.take(data)
        elif kind == "close":
            self.close_by(data)

    async def serve(self, data_fd: int, report: PipeWriter) -> None:
        """Read the data pipe, drain, publish and report until closed (module docstring)."""
        feed = _Feed(self, data_fd)
        feed.resume()
        outputs = []
        if self.settings.publishing:
            outputs.append(asyncio.create_task(self._nats_loop()))
        if self.settings.keeping_latest:
            outputs.append(asyncio.create_task(self._redis_loop()))
        reporter = asyncio.create_task(self._report_loop(report))
        while True:  # drain until closed and empty
            n = self.drain(DRAIN_TURN)
            if len(self._intake) < DRAIN_TURN:
                feed.resume()
            if n:
                await asyncio.sleep(0)
            elif self._closing and not self._intake:
                break
            else:
                await feed.wait(0.5)
        feed.pause()
        if outputs:  # they finish what is buffered, until the close deadline at most
            left = max(0.0, self._deadline - time.monotonic())
            _, late = await asyncio.wait(outputs, timeout=left)
            for t in late:
                t.cancel()
            for res in await asyncio.gather(*outputs, return_exceptions=True):
                if isinstance(res, Exception):
                    self._error("worker", res)
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)

    async def _report_loop(self, report: PipeWriter) -> None:
        last: dict[str, Any] | None = None
        sent_at = 0.0
        while True:
            await asyncio.sleep(REPORT_S)
            now = time.monotonic()
            r = self.report()
            if r != last or now - sent_at >= HEARTBEAT_S:
                if report.push():  # else the ingest is not reading: skip, a newer one follows
                    r["cpu_s"] = time.process_time()
                    report.put(encode("report", r))
                    last, sent_at = {k: v for k, v in r.items() if k != "cpu_s"}, now


class _Feed:
    """The data pipe, read from the worker's loop; not read while the intake is full (the
    ingest then holds what waits, bounded) nor after the end of the pipe or a close."""

    def __init__(self, worker: Worker, fd: int) -> None:
        self.worker, self.fd = worker, fd
        self.loop = asyncio.get_running_loop()
        self.decoder, self.arrived = Decoder(), asyncio.Event()
        self.reading = False
        os.set_blocking(fd, False)

    def on_readable(self) -> None:
        w = self.worker
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the ingest's process is gone, or closed without a word
            self.pause()
            w.close_by(time.monotonic() + w.settings.publish_timeout_s)
        for kind, data in self.decoder.feed(chunk):
            w.on_message(kind, data)
        if len(w._intake) >= INTAKE_HIGH:
            self.pause()
        self.arrived.set()

    def pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def resume(self) -> None:
        if not self.reading and not self.worker._closing:
            self.loop.add_reader(self.fd, self.on_readable)
            self.reading = True

    async def wait(self, most_s: float) -> None:
        """Until something arrives, ``most_s`` at most."""
        self.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), most_s)


def _read_init(fd: int) -> dict[str, Any]:
    """The first message, read exactly (blocking: there is nothing to do before it)."""
    head = _read_exact(fd, 4)
    kind, init = pickle.loads(_read_exact(fd, int.from_bytes(head, "little")))  # noqa: S301
    if kind != "init":
        raise ValueError(f"expected init, got {kind}")
    return init


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("the data pipe ended before the settings came")
        buf += chunk
    return bytes(buf)


def _parser(init: dict[str, Any]) -> Any:
    blob = init.get("adapter")
    if blob is None:
        return None
    try:
        return pickle.loads(blob)  # noqa: S301 - our own ingest's process sent it
    except Exception as exc:  # noqa: BLE001 - frames are then counted, not published
        log.warning("live worker: the adapter could not be rebuilt (%s): frames not parsed", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data_fd, report_fd = int(args[0]), int(args[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the ingest, which closes us
    try:
        init = _read_init(data_fd)
    except (EOFError, OSError, ValueError):  # the ingest went away before it said anything
        return 1
    sys.path[:0] = [p for p in init.get("sys_path", ()) if p not in sys.path]
    logging.basicConfig(
        level=init.get("log_level", logging.WARNING),
        format="%(asctime)s %(levelname)s petrosa live worker: %(message)s",
    )
    if init.get("nice"):
        try:
            os.nice(init["nice"])
        except OSError:
            pass
    settings: LiveSettings = init["settings"]
    worker = Worker(settings, init["venue"], init["exchange"], _parser(init))
    report = PipeWriter(report_fd)
    try:
        asyncio.run(worker.serve(data_fd, report))
    except BaseException:  # noqa: BLE001 - said once, secrets masked; the ingest restarts us
        log.error("live worker stopped: %s", redact_live(traceback.format_exc(), settings))
        return 1
    final = worker.report()
    final["cpu_s"] = time.process_time()
    deadline = time.monotonic() + FINAL_REPORT_S
    if report.push_until(deadline):
        report.put(encode("final", final))
        report.push_until(deadline)
    report.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
