"""Check results, alerts and health changes on NATS.

Subjects: ``<prefix>.quality.<venue>.<dataset>.<SYMBOL>`` (``subjects.quality_subject``).

``publish_quality`` is called from Dagster ops and sensors, synchronously: it connects,
publishes into the live stream and waits for the acknowledgements for at most ``timeout``
seconds, on a thread of its own (an op may run inside an event loop). It never raises:
a failure is logged (URLs redacted) and counted in ``QUALITY_STATS``; the op goes on. Health
events also update the instrument's ``health`` hash in Redis (``latest.py``).
Without ``PETROSA_NATS_URL`` (and ``PETROSA_REDIS_URL``) it does nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from petrosa_pipelines.instruments import parse_partition_key
from petrosa_pipelines.live.latest import LatestState, write_commands
from petrosa_pipelines.live.subjects import quality_subject
from petrosa_pipelines.settings import LiveSettings, live_settings_from_env, redact_live

log = logging.getLogger(__name__)

#: published / failed / skipped counts of this process (what the ops did)
QUALITY_STATS: collections.Counter[str] = collections.Counter()
DEFAULT_TIMEOUT_S = 2.0
#: after a call found NATS down, calls fail at once for this long: a batch of audits (one
#: call per partition) waits for a dead server once, not once per partition
RETRY_AFTER_S = 30.0
_NATS_DOWN_UNTIL: dict[str, float] = {}


@dataclass
class QualityEvent:
    """One message of a quality subject (schema: ``subjects.quality_schema``)."""

    kind: str  # check | alert | health
    venue: str
    symbol: str
    dataset: str
    name: str
    description: str = ""
    partition: str | None = None
    passed: bool | None = None
    severity: str | None = None
    score: float | None = None
    status: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    emitted_at: int = 0

    def msg_id(self) -> str:
        return f"{self.kind}:{self.venue}:{self.symbol}:{self.dataset}:{self.name}:" + (
            f"{self.partition}:{self.run_id}:{self.emitted_at}"
        )


def _plain(v: Any) -> Any:
    """A metadata value as JSON (Dagster ``MetadataValue``s carry theirs in ``.value``)."""
    v = getattr(v, "value", v)
    return orjson.loads(orjson.dumps(v, default=str))


def _where(partition: str) -> tuple[str, str]:
    _, inst = parse_partition_key(partition)
    return inst.venue, inst.symbol


def check_events(
    partition: str, dataset: str, results: Iterable[Any], run_id: str | None = None
) -> list[QualityEvent]:
    """Events of Dagster ``AssetCheckResult``s (read by attribute: ``check_name``, ``passed``,
    ``severity``, ``description``, ``metadata``) of one market-data partition."""
    venue, symbol = _where(partition)
    out = []
    for r in results:
        severity = getattr(r, "severity", None)
        meta = {k: _plain(v) for k, v in (getattr(r, "metadata", None) or {}).items()}
        out.append(
            QualityEvent(
                "check",
                venue,
                symbol,
                dataset,
                str(r.check_name),
                description=str(getattr(r, "description", "") or ""),
                partition=partition,
                passed=bool(r.passed),
                severity=getattr(severity, "value", severity),
                score=meta.get("score") if isinstance(meta.get("score"), int | float) else None,
                status=meta.get("status") if isinstance(meta.get("status"), str) else None,
                metadata=meta,
                run_id=run_id,
            )  # fmt: skip
        )
    return out


def health_events(partition: str, rows: Iterable[Mapping[str, Any]]) -> list[QualityEvent]:
    """Events of the health asset's rows (``dataset``, ``score``, ``status``, ``reason``...)."""
    venue, symbol = _where(partition)
    out = []
    for row in rows:
        score = row.get("score")
        score = None if score is None or score != score else float(score)  # NaN -> None
        out.append(
            QualityEvent(
                "health",
                venue,
                symbol,
                str(row.get("dataset")),
                "health",
                description=str(row.get("reason") or ""),
                partition=partition,
                score=score,
                status=str(row.get("status")) if row.get("status") is not None else None,
            )  # fmt: skip
        )
    return out


def alert_event(alert: Any) -> QualityEvent:
    """The event of a ``sensors.alert_sensor.Alert`` (or its ``asdict``)."""
    a = alert if isinstance(alert, Mapping) else asdict(alert)
    part = a.get("partition")
    if a.get("kind") == "ingest_down":  # subject "<exchange>/<group>"
        exchange, _, group = str(a.get("subject", "")).partition("/")
        try:
            from petrosa_pipelines.exchanges import venue_of

            venue = venue_of(exchange)
        except ValueError:
            venue = exchange
        venue, symbol, dataset = venue, group or "unknown", "ingest"
    else:
        venue, symbol = _where(part) if part else ("unknown", "unknown")
        # check keys read "market_data/<dataset>:<check>"
        dataset = str(a.get("subject", "")).partition(":")[0].rpartition("/")[2] or "unknown"
    return QualityEvent(
        "alert", venue, symbol, dataset, str(a.get("kind")),
        description=str(a.get("title", "")), partition=part, passed=False,
        severity=a.get("severity"), metadata=_plain(a.get("details") or {}),
        run_id=a.get("run_id"),
    )  # fmt: skip


def publish_quality(
    events: Iterable[QualityEvent] | QualityEvent,
    settings: LiveSettings | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Publish ``events`` (and write health to Redis); how many JetStream acknowledged.

    Never raises; waits at most about ``timeout`` seconds for NATS and as long for Redis.
    After a failure, calls within ``RETRY_AFTER_S`` fail at once (counted) instead of waiting.
    """
    items = [events] if isinstance(events, QualityEvent) else list(events)
    if not items:
        return 0
    try:
        s = settings if settings is not None else live_settings_from_env()
    except Exception as exc:  # noqa: BLE001 - a bad setting must not fail the check either
        log.warning("quality events not published: %s", exc)
        QUALITY_STATS["failed"] += len(items)
        return 0
    now = time.time_ns() // 1_000_000
    for e in items:
        e.emitted_at = e.emitted_at or now
    acked = 0
    if not s.publishing:
        QUALITY_STATS["skipped"] += len(items)
    elif time.monotonic() < _NATS_DOWN_UNTIL.get(s.nats_url or "", 0.0):
        QUALITY_STATS["failed"] += len(items)  # failed moments ago: do not wait again yet
        QUALITY_STATS["not_tried"] += len(items)
    else:
        acked = _in_thread(lambda: _publish(items, s, timeout), timeout + 3, s) or 0
        QUALITY_STATS["published"] += acked
        QUALITY_STATS["failed"] += len(items) - acked
        if acked == 0:
            _NATS_DOWN_UNTIL[s.nats_url or ""] = time.monotonic() + RETRY_AFTER_S
    if s.keeping_latest:
        health = [e for e in items if e.kind == "health"]
        if health:
            _in_thread(lambda: _write_health(health, s, timeout), timeout + 3, s)
    return acked


def publish_check_results(
    partition: str, dataset: str, results: Iterable[Any], run_id: str | None = None
) -> int:
    """``publish_quality(check_events(...))`` for a check's call site: never raises."""
    return _safely(lambda: check_events(str(partition), dataset, results, run_id))


def publish_health(partition: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """``publish_quality(health_events(...))`` for the health asset: never raises."""
    return _safely(lambda: health_events(str(partition), rows))


def publish_alerts(alerts: Iterable[Any]) -> int:
    """``publish_quality`` of the alerts a sensor tick sent: never raises."""
    return _safely(lambda: [alert_event(a) for a in alerts])


def _safely(build: Any) -> int:
    try:
        return publish_quality(build())
    except Exception as exc:  # noqa: BLE001 - a quality event must never fail its op
        log.warning("quality events not built: %s: %s", type(exc).__name__, str(exc)[:200])
        QUALITY_STATS["failed"] += 1
        return 0


def _in_thread(fn: Any, wait: float, s: LiveSettings) -> Any:
    """Run ``fn`` on a thread with its own loop; its result, or None when it failed or hung."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, name="petrosa-quality", daemon=True)
    t.start()
    t.join(wait)
    if "error" in box or t.is_alive():
        exc = box.get("error", TimeoutError(f"no answer in {wait:.0f}s"))
        text = redact_live(f"{type(exc).__name__}: {exc}", s)
        log.warning("quality events: %s", text[:300])
        return None
    return box.get("result")


async def _quiet(exc: Exception) -> None:
    """nats-py's default logs each failed attempt with its traceback; one warning suffices."""
    log.debug("quality events: NATS %s", type(exc).__name__)


def _publish(items: list[QualityEvent], s: LiveSettings, timeout: float) -> int:
    async def go() -> int:
        import nats

        from petrosa_pipelines.live.nats_output import ensure_stream

        servers = [u.strip() for u in (s.nats_url or "").split(",") if u.strip()]
        nc = await nats.connect(servers=servers, name="petrosa-quality", allow_reconnect=False,
                                connect_timeout=timeout, max_reconnect_attempts=1,
                                reconnect_time_wait=0.05, error_cb=_quiet)  # fmt: skip
        try:
            js = nc.jetstream()
            await asyncio.wait_for(ensure_stream(js, s), timeout)
            futures = []
            for e in items:
                subject = quality_subject(e.venue, e.dataset, e.symbol, s.subject_prefix)
                hdr = {"Nats-Msg-Id": e.msg_id()}
                payload = orjson.dumps(asdict(e), default=str)
                futures.append(await js.publish_async(subject, payload, headers=hdr))
            done, pending = await asyncio.wait(futures, timeout=timeout)
            for f in pending:
                f.cancel()
            return sum(1 for f in done if not f.cancelled() and f.exception() is None)
        finally:
            await nc.close()

    return asyncio.run(go())


def _write_health(items: list[QualityEvent], s: LiveSettings, timeout: float) -> None:
    """The instrument's ``health`` hash: the latest score per dataset and the lowest."""
    import redis

    state = LatestState(s.redis_prefix)
    by_inst: dict[tuple[str, str], list[QualityEvent]] = {}
    for e in items:
        by_inst.setdefault((e.venue, e.symbol), []).append(e)
    for (venue, symbol), evs in by_inst.items():
        scores = {e.dataset: e.score for e in evs if e.score is not None}
        state.on_health(
            venue, symbol, evs[0].emitted_at,
            score=min(scores.values()) if scores else None,
            scores=orjson.dumps(scores).decode(), partition=evs[0].partition,
            status=",".join(sorted({f"{e.dataset}:{e.status}" for e in evs if e.status})),
        )  # fmt: skip
    client = redis.Redis.from_url(s.redis_url, socket_connect_timeout=timeout,
                                  socket_timeout=timeout)  # fmt: skip
    try:
        pipe = client.pipeline(transaction=False)
        write_commands(pipe, state.take(), time.time_ns() // 1_000_000, s.redis_ttl_s,
                       s.redis_health_ttl_s)  # fmt: skip
        pipe.execute()
    finally:
        client.close()


__all__ = [
    "QUALITY_STATS",
    "QualityEvent",
    "alert_event",
    "check_events",
    "health_events",
    "publish_alerts",
    "publish_check_results",
    "publish_health",
    "publish_quality",
]
