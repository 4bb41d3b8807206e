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
    """REST history for exactly the missing ranges; each answered range is confirmed."""

    name = Source.REST.value

    def __init__(self, client: Any, dataset: str):
        self.client, self.dataset = client, dataset

    def fetch(self, window: PartitionWindow, missing: list[Range]) -> SourceAnswer:
        method = getattr(self.client, _REST_METHODS[self.dataset])
        frames = [method(window.symbol, start, end) for start, end in missing]
        frames = [f for f in frames if f is not None and not f.empty]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return SourceAnswer(frame=_without_receipt_time(frame), confirmed=list(missing))


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
        out.append(RestSource(rest, dataset))
    return out
