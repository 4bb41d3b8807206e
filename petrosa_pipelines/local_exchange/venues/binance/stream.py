"""Binance USD-M's websocket: stream names, raw and combined framing, the JSON control protocol.

Stream names and payloads follow
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
(``aggTrade``, ``trade``, ``kline_<i>``, ``depth[@<ms>]``, partial ``depth<5|10|20>[@<ms>]``,
``markPrice[@1s]``, ``ticker``):
``/ws/<stream>`` sends bare payloads, ``/stream?streams=a/b`` wraps each in
``{"stream": ..., "data": ...}``; ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` answer
``{"result": ..., "id": ...}`` or ``{"error": {"code", "msg"}, "id"}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from petrosa_pipelines.local_exchange.faults import MALFORMED_SAMPLES
from petrosa_pipelines.local_exchange.replay import RecordedFrame, Recording, stream_key
from petrosa_pipelines.local_exchange.units import INTERVALS_MS
from petrosa_pipelines.local_exchange.venues.base import WireSession
from petrosa_pipelines.local_exchange.venues.binance.frames import BinanceMarket
from petrosa_pipelines.local_exchange.venues.binance.rest import ApiError

_STREAM_RE = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:(?P<agg>aggTrade)|kline_(?P<iv>\w+)|(?P<depth>depth)(?:@(?P<dms>\d+)ms)?"
    r"|depth(?P<levels>5|10|20)(?:@(?P<pms>\d+)ms)?|(?P<trade>trade)|(?P<ticker>ticker)"
    r"|(?P<mark>markPrice)(?:@(?P<mark1s>1s))?)$"
)


def stream_events(
    mk: BinanceMarket, stream: str, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    """Payloads of one stream for events in ``(start_ms, end_ms]`` (empty if unknown)."""
    m = _STREAM_RE.match(stream)
    if m is None:
        return []
    sym = m["sym"].upper()
    if sym not in mk.specs or end_ms < mk.start_ms:
        return []
    if m["agg"]:
        return mk.agg_trade_events(sym, start_ms, end_ms)
    if m["iv"]:
        if m["iv"] not in INTERVALS_MS:
            return []
        return mk.kline_events(sym, m["iv"], start_ms, end_ms)
    if m["depth"]:
        every = int(m["dms"]) if m["dms"] else 250
        every = every if every in (100, 250, 500) else 100
        return mk.depth_events(sym, max(start_ms, mk.start_ms), end_ms, every)
    if m["levels"]:  # partial book depth: <symbol>@depth<levels>[@100ms|@500ms], default 250 ms
        every = int(m["pms"]) if m["pms"] else 250
        every = every if every in (100, 250, 500) else 100
        levels = int(m["levels"])
        return mk.partial_depth_events(sym, max(start_ms, mk.start_ms), end_ms, levels, every)
    if m["trade"]:
        return mk.trade_events(sym, start_ms, end_ms)
    if m["ticker"]:
        return mk.ticker_events(sym, start_ms, end_ms)
    every = 1000 if m["mark1s"] else 3000
    first = max(start_ms, mk.start_ms) // every + 1
    return [mk.mark_price_event(sym, s * every) for s in range(first, end_ms // every + 1)]


@dataclass(eq=False)
class BinanceSession(WireSession):
    """One ``/ws/...`` or ``/stream?...`` connection."""

    market: BinanceMarket = field(kw_only=True)
    recording: Recording | None = field(kw_only=True)
    combined: bool = field(kw_only=True)
    #: subscribed name -> normalised key
    streams: dict[str, str] = field(kw_only=True)
    max_streams: int = field(kw_only=True)

    malformed = MALFORMED_SAMPLES

    def on_message(self, message: str | bytes) -> tuple[list[bytes], list[bytes]]:
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})], []
        if not isinstance(req, dict):
            req = {}
        req_id = req.get("id")
        try:
            result = self._control(req)
        except ApiError as err:
            reply = {"error": {"code": err.code, "msg": err.msg}, "id": req_id}
            return [orjson.dumps(reply)], []
        return [orjson.dumps({"result": result, "id": req_id})], []

    def _control(self, req: dict[str, Any]) -> Any:
        """Answer one control frame (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ...)."""
        req_id, method, params = req.get("id"), req.get("method"), req.get("params", [])
        if not isinstance(req_id, int) or req_id < 0:
            raise ApiError(2, "Invalid request: request ID must be an unsigned integer")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not (
            isinstance(params, list) and all(isinstance(p, str) for p in params)
        ):
            raise ApiError(2, "Invalid request: params must be a list of strings")
        if method == "SUBSCRIBE":
            if len(self.streams) + len(params) > self.max_streams:
                raise ApiError(2, "Invalid request: too many streams")
            self.streams.update({p: stream_key(p) for p in params})
            return None
        if method == "UNSUBSCRIBE":
            for p in params:
                self.streams.pop(p, None)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return list(self.streams)
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return None if method == "SET_PROPERTY" else self.combined
        raise ApiError(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
            "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
        )

    def live_frames(self, start_ms: int, end_ms: int) -> list[bytes]:
        events: list[tuple[int, str, dict[str, Any]]] = []
        for name in list(self.streams):
            events.extend(
                (d["E"], name, d) for d in stream_events(self.market, name, start_ms, end_ms)
            )
        events.sort(key=lambda e: e[0])
        return [
            orjson.dumps({"stream": name, "data": data} if self.combined else data)
            for _, name, data in events
        ]

    @property
    def replays(self) -> bool:
        return self.recording is not None

    def replay_frame(self, frame: RecordedFrame) -> bytes | None:
        name = next((n for n, k in self.streams.items() if k == frame.key), None)
        if name is None or self.recording is None:
            return None
        return self.recording.frame_bytes(frame, name, self.combined)

    def trade_key(self, payload: bytes) -> tuple[str, int] | None:
        if b'"aggTrade"' not in payload:
            return None
        try:
            frame = orjson.loads(payload)
            data = frame.get("data", frame)
            return str(frame.get("stream", data["s"])), int(data["T"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return None


def open_session(
    conn: ServerConnection,
    path: str,
    query: dict[str, str],
    generation: int,
    opened: float,
    *,
    market: BinanceMarket,
    recording: Recording | None,
    max_streams: int,
) -> BinanceSession | None:
    """The session of a new connection; None when it asks for more than ``max_streams``."""
    if path == "/stream":
        combined = True
        streams = [s for s in query.get("streams", "").split("/") if s]
    else:
        combined = False
        streams = [s for s in path[len("/ws") :].split("/") if s]
    if len(streams) > max_streams:
        return None
    return BinanceSession(
        conn,
        generation,
        opened,
        market=market,
        recording=recording,
        combined=combined,
        streams={s: stream_key(s) for s in streams},
        max_streams=max_streams,
    )
