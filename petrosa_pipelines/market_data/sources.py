"""The history sources a partition is filled from: landing zone, archives, REST.

Thin adapters from each client's API to ``HistorySource``; the order they are tried in is
decided by ``sources_for`` and nowhere else.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from petrosa_pipelines.exchanges.base import Source
from petrosa_pipelines.market_data.fill import HistorySource, PartitionWindow, Range, SourceAnswer


def _without_receipt_time(frame: pd.DataFrame) -> pd.DataFrame:
    """History rows carry no receipt time, so re-materialising gives identical rows."""
    if "received_at" in frame.columns:
        frame = frame.copy()
        frame["received_at"] = pd.NaT
    return frame


class LandingSource(HistorySource):
    """What the websocket ingest landed; it confirms nothing beyond its own rows."""

    name = Source.WS.value

    def __init__(self, store: Any, exchange: str, dataset: str):
        self.store, self.exchange, self.dataset = store, exchange, dataset

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        frame = self.store.read_frame(
            self.exchange, self.dataset, window.symbol, window.start_ms, window.end_ms
        )
        return SourceAnswer(frame=frame, confirmed=[])


_ARCHIVE_METHODS = {
    "candles": "daily_klines",
    "trades": "daily_agg_trades",
    "funding": "daily_funding",
}


class ArchiveSource(HistorySource):
    """Checksum-verified daily archives; only closed days are published."""

    name = Source.ARCHIVE.value

    def __init__(self, client: Any, dataset: str):
        self.client, self.dataset = client, dataset

    def available(self, window: PartitionWindow) -> bool:
        return window.closed

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        frame = getattr(self.client, _ARCHIVE_METHODS[self.dataset])(window.symbol, window.day)
        if frame is None:  # not published (yet): confirms nothing
            return SourceAnswer(frame=pd.DataFrame(), confirmed=[])
        return SourceAnswer(
            frame=_without_receipt_time(frame), confirmed=[(window.start_ms, window.end_ms)]
        )


_REST_METHODS = {"candles": "klines", "trades": "agg_trades", "funding": "funding_rates"}


class RestSource(HistorySource):
    """REST history for exactly the missing ranges; each answered range is confirmed.

    ``reach_ms`` is how far back the endpoint answers: Binance's aggTrades time queries only
    reach recent hours and answer ``[]`` beyond, which must not pass for a quiet market. Ranges
    older than the reach are neither asked for nor confirmed; they stay missing.
    """

    name = Source.REST.value

    def __init__(self, client: Any, dataset: str, reach_ms: int | None = None):
        self.client, self.dataset, self.reach_ms = client, dataset, reach_ms

    def reachable(self, window: PartitionWindow, missing: list[Range]) -> list[Range]:
        if self.reach_ms is None:
            return list(missing)
        oldest = window.now_ms - self.reach_ms
        return [(max(s, oldest), e) for s, e in missing if e > oldest]

    def available(self, window: PartitionWindow) -> bool:
        return self.reach_ms is None or window.end_ms > window.now_ms - self.reach_ms

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        method = getattr(self.client, _REST_METHODS[self.dataset])
        ranges = self.reachable(window, missing)
        frames = [method(window.symbol, start, end) for start, end in ranges]
        frames = [f for f in frames if f is not None and not f.empty]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return SourceAnswer(frame=_without_receipt_time(frame), confirmed=ranges)


#: how far back REST time queries reach, per dataset (None: any time). Binance USD-M aggTrades
#: by time only reach the last ~24 h (REFERENCE.md 4.3); deeper history comes from archives.
REST_REACH_MS = {"trades": 24 * 3_600_000}


def sources_for(
    dataset: str, landing: Any | None, archive: Any | None, rest: Any | None, exchange: str
) -> list[HistorySource]:
    """The failover order: landing, then archives (closed days), then REST.

    Depth has no history anywhere: only the landing zone can give it.
    """
    out: list[HistorySource] = []
    if landing is not None:
        out.append(LandingSource(landing, exchange, dataset))
    if dataset == "depth":
        return out
    if archive is not None:
        out.append(ArchiveSource(archive, dataset))
    if rest is not None:
        out.append(RestSource(rest, dataset, REST_REACH_MS.get(dataset)))
    return out
