"""Per-stream ingest statistics, the liveness judgement, and their Prometheus text form.

Liveness tells a dead feed from a quiet market: the 1 s mark-price stream ticks whether or not
anyone trades, so silent trades with fresh mark prices are a quiet market, and silent mark
prices mean the feed (connection, exchange or our reader) is dead. A group without a mark-price
stream (the socket-client's streams) is judged by its ``@ticker``, sent every second or two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from petrosa_pipelines.exchanges import venue_of
from petrosa_pipelines.instruments import Instrument

ALIVE = "alive"
DEAD_FEED = "dead_feed"
STARTING = "starting"
DISCONNECTED = "disconnected"
STOPPED = "stopped"


@dataclass
class StreamStats:
    """Counters of one stream (e.g. ``btcusdt@aggTrade``); updated on the hot path."""

    stream: str
    dataset: str
    symbol: str
    received: int = 0
    processed: int = 0
    duplicates: int = 0
    failed: int = 0
    last_message_ms: int | None = None
    last_event_ms: int | None = None
    #: newest time in the dataset's own time column (trade time, candle open time, event time):
    #: where an outage's gap opens, so the ledger speaks the time the partitions are cut by
    last_data_ms: int | None = None
    lag_ms: int | None = None
    lag_ms_max: int = 0
    lag_ms_sum: int = 0
    resyncs: int = 0
    gaps: int = 0

    def processed_one(self, recv_ms: int, event_ms: int | None, data_ms: int | None) -> None:
        """Count one landed message: receipt time, event and data time, lag (exchange -> us)."""
        self.processed += 1
        self.last_message_ms = recv_ms
        if data_ms is not None:
            self.last_data_ms = data_ms
        if event_ms is None:
            return
        self.last_event_ms = event_ms
        lag = recv_ms - event_ms
        self.lag_ms = lag
        self.lag_ms_sum += lag
        if lag > self.lag_ms_max:
            self.lag_ms_max = lag

    def status(self, now_ms: int, stale_ms: int, feed_alive: bool) -> str:
        """ok / quiet (market quiet, feed alive) / dead / waiting (nothing yet)."""
        if self.last_message_ms is None:
            return "waiting"
        if now_ms - self.last_message_ms <= stale_ms:
            return "ok"
        return "quiet" if feed_alive else "dead"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lag_ms_avg"] = round(self.lag_ms_sum / self.processed, 1) if self.processed else None
        return d


@dataclass
class GroupStats:
    """Connection-level counters of one stream group."""

    connections_opened: int = 0
    reconnects: int = 0
    rotations: int = 0
    disconnects: int = 0
    dead_letters: int = 0
    gaps_recorded: int = 0
    unknown_stream_failures: int = 0
    streams: dict[str, StreamStats] = field(default_factory=dict)


#: the streams a live feed sends about once a second whatever the market does
LIVENESS_DATASETS = ("funding", "ticker")


def judge_liveness(
    streams: dict[str, StreamStats], now_ms: int, stale_ms: int, connected: bool
) -> str:
    """The group's liveness from its about-once-a-second streams (see module docstring): the
    mark price, or the 24 h ticker where a group carries no mark price (the socket-client's
    streams: ``@trade``, ``@depth20@100ms``, ``@ticker``)."""
    marks = [s for s in streams.values() if s.dataset in LIVENESS_DATASETS]
    if not any(s.last_message_ms is not None for s in streams.values()):
        return STARTING if connected else DISCONNECTED
    fresh = any(
        s.last_message_ms is not None and now_ms - s.last_message_ms <= stale_ms for s in marks
    )
    if fresh:
        return ALIVE
    return DEAD_FEED if connected else DISCONNECTED


_COUNTERS = ("received", "processed", "duplicates", "failed", "resyncs", "gaps")
_GROUP_COUNTERS = (
    "connections_opened",
    "reconnects",
    "rotations",
    "disconnects",
    "dead_letters",
    "gaps_recorded",
)


def prometheus_text(snapshot: dict[str, Any]) -> str:
    """Prometheus exposition format (text 0.0.4) of a heartbeat snapshot.

    Every series carries ``exchange`` (the storage name, as dashboards always had it),
    ``venue`` (``binance-usdm``) and ``group``; per-stream series also ``instrument``
    (``binance-usdm:BTCUSDT``), so two venues' BTCUSDT never share a series.
    """
    exchange = snapshot["exchange"]
    venue = snapshot.get("venue") or venue_of(exchange)
    g = f'exchange="{exchange}",venue="{venue}",group="{snapshot["group"]}"'
    lines: list[str] = []

    def per_stream(name: str, s: dict[str, Any]) -> str:
        return f'{g},stream="{name}",instrument="{Instrument(venue, s["symbol"]).id}"'

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP petrosa_ingest_{name} {help_}")
        lines.append(f"# TYPE petrosa_ingest_{name} {kind}")
        for labels, value in samples:
            lines.append(f"petrosa_ingest_{name}{{{labels}}} {value}")

    streams = snapshot["streams"]
    for c in _COUNTERS:
        metric(
            f"messages_{c}_total" if c not in ("resyncs", "gaps") else f"{c}_total",
            "counter",
            f"{c} per stream",
            [(per_stream(name, s), s[c]) for name, s in streams.items()],
        )
    metric(
        "lag_ms",
        "gauge",
        "receipt time minus exchange event time of the last message",
        [(per_stream(n, s), s["lag_ms"]) for n, s in streams.items() if s["lag_ms"] is not None],
    )
    metric(
        "last_message_age_seconds",
        "gauge",
        "seconds since the stream's last message",
        [
            (per_stream(n, s), round((snapshot["written_at"] - s["last_message_ms"]) / 1000, 3))
            for n, s in streams.items()
            if s["last_message_ms"] is not None
        ],
    )
    for c in _GROUP_COUNTERS:
        metric(f"{c}_total", "counter", c.replace("_", " "), [(g, snapshot["group_stats"][c])])
    metric("connected", "gauge", "1 when a connection is open", [(g, int(snapshot["connected"]))])
    metric(
        "alive",
        "gauge",
        "1 when the feed is alive (mark prices fresh)",
        [(g, int(snapshot["liveness"] == ALIVE))],
    )
    w = snapshot["writer"]
    metric("landed_total", "counter", "lines made durable", [(g, w["lines_durable"])])
    metric("queue_bytes", "gauge", "bytes waiting in memory", [(g, w["queue_memory_bytes"])])
    metric("spill_bytes", "gauge", "bytes spilled to disk", [(g, w["queue_spill_bytes"])])
    for q in ("p50", "p99"):
        if w.get(f"latency_{q}_ms") is not None:
            metric(
                f"durable_latency_{q}_ms",
                "gauge",
                f"receipt to durable landing, {q}",
                [(g, w[f"latency_{q}_ms"])],
            )
    return "\n".join(lines) + "\n"
