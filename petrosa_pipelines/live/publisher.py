"""``LiveOutputs``: landed records to NATS JetStream and the latest state to Redis, off the ingest.

The ingest only appends to a bounded intake (``offer*``: a ``deque`` append) and, every
``SEND_BATCH`` items, hands the batch to a worker *process* (``worker.py``) in one
non-blocking pipe write (``wire.py``): pickled raw frames, no parsing, never a wait. The worker
parses frames with its own copy of the adapter, builds messages and the latest state, and
publishes; being a process, it never holds the ingest's GIL. A thread of ours here
(``_supervise``) sends what a pause in the feed left in the intake, takes the worker's reports,
and restarts a worker that died. So NATS or Redis being slow or down, or the worker dying,
never reaches the ingest:

* **NATS**: messages wait in the worker's buffer bounded by ``PETROSA_LIVE_BUFFER_MESSAGES`` /
  ``_BYTES``; past it the *oldest* are dropped and counted per subject
  (``stats()["nats"]["dropped"]``), so on reconnect the buffer catches up with the most recent
  contiguous stretch. A message leaves the buffer only when JetStream acknowledged it; a batch
  not acknowledged in time is re-sent with the same ``Nats-Msg-Id``: at-least-once.
* **Redis**: changed keys are written at most once per interval (latest value wins); a failed
  write is retried with backoff, newer values replacing the ones that failed.
* **Intake**: full only when the worker cannot keep up (a starved CPU) or is being restarted:
  the pipe then refuses writes and items wait here up to the bound; what it refuses is counted
  (``intake_dropped``), frames by count since their subject is unknown.
* **Worker death**: seen at once (its report pipe ends); what it held is counted as lost
  (``stats()["worker"]``) and a new one is started with backoff; offers go on meanwhile.

``stats()`` is a plain dict for the engine's heartbeat: the ingest's own counters plus the
worker's last report (at most ``worker.REPORT_S`` old while anything changes).
"""

from __future__ import annotations

import collections
import logging
import pickle
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from petrosa_pipelines.live.counters import Totals, blank_report, plus
from petrosa_pipelines.live.messages import Message
from petrosa_pipelines.live.nats_output import ensure_stream
from petrosa_pipelines.live.process import WorkerProcess
from petrosa_pipelines.live.wire import encode
from petrosa_pipelines.settings import LiveSettings, live_settings_from_env

log = logging.getLogger(__name__)

#: the intake's bound: items offered and not yet handed to the worker
INTAKE_FACTOR = 1
#: items per pipe write from the ingest (amortises the write); at most ``MAX_BATCH`` in one
SEND_BATCH, MAX_BATCH = 256, 1024
#: how often the supervising thread looks for a tail the feed left unsent (s); while the ingest
#: sends its batches itself (a busy feed) it looks less and less often, up to ``TICK_MAX_S``:
#: each look takes the GIL from the ingest
TICK_S, TICK_MAX_S = 0.02, 0.2
#: a closing worker gets the close timeout plus this long to exit before it is killed (s)
CLOSE_GRACE_S = 10.0
#: restarts of a dying worker: backoff from/to (s); a worker that lived this long resets it
RESTART_MIN_S, RESTART_MAX_S, STABLE_S = 0.1, 30.0, 60.0
#: a worker silent this long is hung and is killed (it reports every second at least);
#: before its first report it gets ``STARTUP_S`` (imports on a loaded machine)
WATCHDOG_S, STARTUP_S = 30.0, 120.0
#: the worker's niceness: the ingest comes first when both want the CPU (a saturated feed on
#: a busy machine); the worker catches up when the ingest idles, its buffers bounded meanwhile
WORKER_NICE = 10


class LiveOutputs:
    """See the module docstring. ``venue``: the instrument venue id (``binance-usdm``);
    ``exchange``: its storage name (rows' ``exchange``); ``adapter``: the engine's adapter
    (a copy of it, pickled to the worker, parses the offered frames)."""

    def __init__(
        self,
        settings: LiveSettings,
        *,
        venue: str,
        exchange: str = "",
        adapter: Any | None = None,
    ) -> None:
        self.settings = settings
        self.venue, self.exchange = venue, exchange
        self._on = settings.publishing or settings.keeping_latest
        self._adapter = _adapter_blob(adapter)
        #: off: nothing to do with what is offered (a deque of length 0 forgets it)
        self._intake: collections.deque = collections.deque(maxlen=None if self._on else 0)
        self._intake_cap = max(1, settings.buffer_messages * INTAKE_FACTOR)
        self._send_at = SEND_BATCH
        self.offered = 0
        self.intake_dropped = 0
        self._send_lock = threading.Lock()
        self._life_lock = threading.Lock()
        self._child: WorkerProcess | None = None
        self._report = blank_report(settings)
        self._base = Totals()
        self._restarts = self._lost_items = self._lost_messages = 0
        self._last_exit: int | None = None
        self._state = "not started" if self._on else "off"
        self._thread: threading.Thread | None = None
        self._closing = False
        self._exited = threading.Event()
        #: when a batch was last sent, by anyone and by the ingest's own offers
        self._last_send = self._ingest_sent = 0.0

    @classmethod
    def from_env(cls, adapter: Any, environ: dict[str, str] | None = None) -> LiveOutputs | None:
        """Outputs for ``adapter``'s venue from ``PETROSA_NATS_URL`` / ``PETROSA_REDIS_URL``
        and ``PETROSA_LIVE_*``; None when neither output is configured. Started."""
        settings = live_settings_from_env(environ)
        if not (settings.publishing or settings.keeping_latest):
            return None
        out = cls(settings, venue=adapter.venue, exchange=adapter.name, adapter=adapter)
        out.start()
        return out

    # -- the ingest side: never blocks ------------------------------------------------------------
    def offer_frame(self, raw: bytes, received_at: int) -> None:
        """A landed frame (parsed in the worker)."""
        self.offered += 1
        q = self._intake
        if len(q) < self._intake_cap:
            q.append((raw, received_at))
            if len(q) >= self._send_at:
                self._send()
        else:
            self.intake_dropped += 1

    def offer(self, record: Any) -> None:
        """A record (``exchanges.base`` types) or a book sample."""
        self.offered += 1
        q = self._intake
        if len(q) < self._intake_cap:
            q.append(record)
            if len(q) >= self._send_at:
                self._send()
        else:
            self.intake_dropped += 1

    def offer_samples(self, samples: Iterable[Any]) -> None:
        for s in samples:
            self.offer(s)

    def _send(self, by_ingest: bool = True) -> None:
        """Hand the intake to the worker, what the pipe takes now; never waits (a busy sender
        on the other thread, a full pipe or no worker: the items stay, bounded)."""
        if self._send_lock.acquire(blocking=False):
            try:
                self._send_locked()
                if by_ingest:
                    self._ingest_sent = self._last_send
            finally:
                self._send_lock.release()

    def _send_locked(self) -> None:
        q, child = self._intake, self._child
        if child is None or self._closing:  # no worker (yet): the supervisor sends once there
            # is one; closing: ``close`` hands the rest over
            self._send_at = self._intake_cap + 1
            return
        w = child.writer
        while w.push() and q:
            n = min(len(q), MAX_BATCH)
            items = [q.popleft() for _ in range(n)]
            w.put(encode("items", items), n)
        self._last_send = time.monotonic()
        # a full pipe: try again a batch later, not at every offer
        self._send_at = len(q) + SEND_BATCH if w.busy() else SEND_BATCH

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker process and the thread that looks after it (not when off)."""
        with self._life_lock:
            if self._thread is not None or not self._on or self._closing:
                return
            try:  # here, not on the thread: a close right after start finds its worker
                self._spawn()
            except OSError as exc:  # the thread tries again
                log.warning("live outputs worker could not start: %s", exc)
            self._thread = threading.Thread(target=self._supervise, name="petrosa-live",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Publish what is buffered for up to ``timeout`` s (default the publish timeout); what
        is still unpublished then is counted as dropped. Returns within about ``timeout`` +
        ``CLOSE_GRACE_S``: a worker not gone by then is killed."""
        wait = self.settings.publish_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._life_lock:
            if self._closing:
                return
            self._closing = True
        with self._send_lock:
            child = self._child
            if child is not None:
                self._hand_over(child, deadline)
        if child is not None and self._thread is not None:
            if not self._exited.wait(max(0.0, deadline - time.monotonic()) + CLOSE_GRACE_S):
                log.warning("live outputs worker (pid %s) did not stop in time: killed", child.pid)
                child.kill()
                self._exited.wait(CLOSE_GRACE_S)
            self._thread.join(CLOSE_GRACE_S)
        with self._send_lock:  # what never reached a worker
            self.intake_dropped += len(self._intake)
            self._intake.clear()
        self._state = "closed" if self._on else "off"

    def _hand_over(self, child: WorkerProcess, deadline: float) -> None:
        """At close: the intake to the worker, then the close message, then the end of the pipe
        (which closes a worker the message did not reach)."""
        w, q = child.writer, self._intake
        while q and w.push_until(deadline):
            n = min(len(q), MAX_BATCH)
            w.put(encode("items", [q.popleft() for _ in range(n)]), n)
        if w.push_until(deadline):
            w.put(encode("close", deadline))
            w.push_until(deadline)
        self.intake_dropped += w.drop()  # a message cut short: the worker never sees its items
        w.close()

    def idle(self) -> bool:
        """Nothing offered is still waiting (intake, pipe, worker's buffers and writes)."""
        if self._intake:
            return False
        child, r = self._child, self._report
        if child is None:
            return self._closing or not self._on
        w = child.writer
        if w.busy():
            return False
        return w.sent == 0 or (r["pid"] == child.pid and r["taken"] == w.sent and r["idle"])

    # -- the supervising thread --------------------------------------------------------------------
    def _spawn(self) -> None:
        init = {
            "settings": self.settings,
            "venue": self.venue,
            "exchange": self.exchange,
            "adapter": self._adapter,
            "sys_path": [p for p in sys.path if p],
            "log_level": logging.getLogger("petrosa_pipelines.live").getEffectiveLevel(),
            "nice": WORKER_NICE,
        }
        child = WorkerProcess(init)
        with self._send_lock:
            self._child, self._report = child, blank_report(self.settings)
            self._send_at = SEND_BATCH
        self._state = "starting"

    def _supervise(self) -> None:
        backoff, restart_at, tick = RESTART_MIN_S, 0.0, TICK_S
        while True:
            child = self._child
            if child is None:
                if self._closing:
                    break
                backoff, restart_at = self._start_when_due(backoff, restart_at)
                continue
            alive = child.poll_reports(tick)
            if child.report is not None:
                self._report = child.report
                if self._state == "starting":
                    self._state = "running"
            if not alive:
                lived = time.monotonic() - child.started
                self._ended(child)
                if self._closing:
                    break
                backoff = RESTART_MIN_S if lived >= STABLE_S else min(backoff * 2, RESTART_MAX_S)
                restart_at = time.monotonic() + backoff
                log.warning("live outputs worker (pid %s) exited with %s: restarting in %.1f s",
                            child.pid, child.returncode, backoff)  # fmt: skip
                continue
            now = time.monotonic()
            if now - self._ingest_sent < TICK_S:  # the ingest sends by itself: look less often
                tick = min(tick * 2, TICK_MAX_S)
            else:
                tick = TICK_S
                if self._intake or child.writer.busy():
                    self._send(by_ingest=False)
            limit = WATCHDOG_S if child.reported_at is not None else STARTUP_S
            if not self._closing and child.silent_for(now) > limit:
                log.warning("live outputs worker (pid %s) silent for %.0f s: killed",
                            child.pid, child.silent_for(now))  # fmt: skip
                child.kill()
        self._exited.set()

    def _start_when_due(self, backoff: float, restart_at: float) -> tuple[float, float]:
        time.sleep(max(0.0, min(TICK_S * 5, restart_at - time.monotonic())))
        if time.monotonic() < restart_at:
            return backoff, restart_at
        with self._life_lock:
            if self._closing:
                return backoff, restart_at
            try:
                self._spawn()
            except OSError as exc:
                log.warning("live outputs worker could not start: %s", exc)
                backoff = min(backoff * 2, RESTART_MAX_S)
                restart_at = time.monotonic() + backoff
        return backoff, restart_at

    def _ended(self, child: WorkerProcess) -> None:
        """A worker's report pipe ended: unless it said its final words, count what it held (as
        of its last report) as lost; keep what it had done; reap it."""
        with self._send_lock:  # no send uses its pipe from here on
            self._child = None
            r, w = child.final or child.report, child.writer
            if child.final is not None:  # it read its pipe to the end: nothing is left there
                self._lost_items += w.waiting_items + max(0, w.sent - child.final["taken"])
            else:
                taken, intake, pending = (
                    (r["taken"], r["intake"], r["nats"]["pending"]) if r is not None else (0, 0, 0)
                )
                self._lost_items += w.waiting_items + max(0, w.sent - taken) + intake
                self._lost_messages += pending
                if not self._closing:
                    self._restarts += 1
            if r is not None:
                self._base.add(r)
            self._report = blank_report(self.settings, closed=self._closing)
        self._last_exit = child.reap()
        self._state = "closed" if self._closing else "restarting"

    # -- counters ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        child, r, b = self._child, self._report, self._base
        w = child.writer if child is not None else None
        in_pipe = 0
        if w is not None:  # written whole or in part, not yet read by this worker
            taken = r["taken"] if r["pid"] == child.pid else 0
            in_pipe = w.waiting_items + max(0, w.sent - taken)
        rn, rr = r["nats"], r["redis"]
        published = plus(b.published, rn["published_by_subject"])
        dropped = plus(b.dropped, rn["dropped_by_subject"])
        now = time.monotonic()
        return {
            "offered": self.offered,
            "intake": len(self._intake) + in_pipe + r["intake"],
            "intake_dropped": self.intake_dropped + b.intake_dropped + r["intake_dropped"],
            "parse_failures": b.parse_failures + r["parse_failures"],
            "unpublished": plus(b.unpublished, r["unpublished"]),
            "nats": {
                "state": rn["state"],
                "stream": rn["stream"],
                "pending": rn["pending"],
                "pending_bytes": rn["pending_bytes"],
                "published": sum(published.values()),
                "published_by_subject": published,
                "dropped": sum(dropped.values()),
                "dropped_by_subject": dropped,
                "acked_duplicates": b.duplicates + rn["acked_duplicates"],
                "errors": b.nats_errors + rn["errors"],
                "last_error": rn["last_error"] or b.nats_last_error,
            },
            "redis": {
                "state": rr["state"],
                "writes": b.redis_writes + rr["writes"],
                "failures": b.redis_failures + rr["failures"],
                "keys_waiting": rr["keys_waiting"],
                "last_error": rr["last_error"] or b.redis_last_error,
            },
            "worker": {
                "state": self._state,
                "pid": child.pid if child is not None else None,
                "restarts": self._restarts,
                "lost_items": self._lost_items,
                "lost_messages": self._lost_messages,
                "last_exit": self._last_exit,
                "report_age_s": (
                    round(child.silent_for(now), 3)
                    if child is not None and child.reported_at
                    else None
                ),  # fmt: skip
                "cpu_s": b.cpu_s + (r.get("cpu_s") or 0.0),
            },
        }


def _adapter_blob(adapter: Any) -> bytes | None:
    """The adapter pickled for the worker (its own copy: adapters keep per-symbol state); an
    adapter holding something that does not pickle goes as a fresh one of its class."""
    if adapter is None:
        return None
    try:
        return pickle.dumps(adapter, protocol=5)
    except Exception:  # noqa: BLE001
        profile = getattr(adapter, "stream_profile", None)
        fresh = type(adapter)(stream_profile=profile) if profile else type(adapter)()
        return pickle.dumps(fresh, protocol=5)


__all__ = ["LiveOutputs", "Message", "ensure_stream"]
