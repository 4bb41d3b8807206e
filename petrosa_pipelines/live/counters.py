"""The counters ``LiveOutputs.stats()`` is made of: a worker's report as it is before the first
one comes (``blank_report``), and the totals of workers that ended (``Totals``), so that the
counters of a restarted worker carry on from its predecessor's instead of starting over.
"""

from __future__ import annotations

from typing import Any

from petrosa_pipelines.settings import LiveSettings


class Totals:
    """The counters of workers that ended, carried into ``stats()`` after a restart."""

    def __init__(self) -> None:
        self.intake_dropped = self.parse_failures = self.duplicates = self.nats_errors = 0
        self.redis_writes = self.redis_failures = 0
        self.cpu_s = 0.0
        self.unpublished: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.nats_last_error: str | None = None
        self.redis_last_error: str | None = None

    def add(self, r: dict[str, Any]) -> None:
        n, rd = r["nats"], r["redis"]
        self.intake_dropped += r["intake_dropped"]
        self.parse_failures += r["parse_failures"]
        self.duplicates += n["acked_duplicates"]
        self.nats_errors += n["errors"]
        self.redis_writes += rd["writes"]
        self.redis_failures += rd["failures"]
        self.cpu_s += r.get("cpu_s") or 0.0
        self.unpublished = plus(self.unpublished, r["unpublished"])
        self.published = plus(self.published, n["published_by_subject"])
        self.dropped = plus(self.dropped, n["dropped_by_subject"])
        self.nats_last_error = n["last_error"] or self.nats_last_error
        self.redis_last_error = rd["last_error"] or self.redis_last_error


def plus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Counts of ``a`` and ``b`` added per key (a new dict)."""
    if not a:
        return dict(b)
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def blank_report(s: LiveSettings, closed: bool = False) -> dict[str, Any]:
    """What ``stats()`` shows before a worker's first report (or after the last one ended)."""
    nats_state = "off" if not s.publishing else "closed" if closed else "connecting"
    redis_state = "off" if not s.keeping_latest else "closed" if closed else "connecting"
    return {
        "pid": None,
        "taken": 0,
        "intake": 0,
        "intake_dropped": 0,
        "idle": True,
        "parse_failures": 0,
        "unpublished": {},
        "nats": {
            "state": nats_state,
            "stream": s.stream if s.publishing else None,
            "pending": 0,
            "pending_bytes": 0,
            "published_by_subject": {},
            "dropped_by_subject": {},
            "acked_duplicates": 0,
            "errors": 0,
            "last_error": None,
        },
        "redis": {
            "state": redis_state,
            "writes": 0,
            "failures": 0,
            "keys_waiting": 0,
            "last_error": None,
        },
    }
