"""Bybit v5 linear's public websocket (``/v5/public/linear``): ops, topics, snapshots and deltas.

Protocol as in https://bybit-exchange.github.io/docs/v5/ws/connect and the real replies in
petrosa_pipelines_tests/fixtures/bybit/ws/cryptofeed_2026-08-09/linear_control.jsonl:
``{"op":"subscribe","args":[...],"req_id":..}`` answers
``{"success":true,"ret_msg":"","conn_id":..,"req_id":..,"op":"subscribe"}``; one unknown topic
fails the whole request (``"error:handler not found,topic:<topic>"``); ``{"op":"ping"}`` answers
``{"success":true,"ret_msg":"pong",..,"op":"ping"}``. Topics: ``publicTrade.<S>``,
``orderbook.<depth>.<S>`` (a snapshot at subscribe, then deltas with ``u`` +1 per message; depth
1 is all snapshots; after ``Faults.restart_book_service`` a snapshot with ``u`` = 1, as after a
Bybit service restart), ``kline.<interval>.<S>`` (an update a second, the closed candle with
``confirm: true`` and the new one in one message at the close) and ``tickers.<S>`` (a snapshot,
then deltas of the changed fields only).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from petrosa_pipelines.local_exchange.faults import Faults
from petrosa_pipelines.local_exchange.generator import MarketGenerator
from petrosa_pipelines.local_exchange.units import INTERVALS_MS, mix_int, stable_hash
from petrosa_pipelines.local_exchange.venues.base import WireSession
from petrosa_pipelines.local_exchange.venues.bybit.frames import (
    KLINE_INTERVALS,
    TICKER_SLOT,
    BybitFormats,
)

BOOK_DEPTHS = (1, 50, 200, 500)
_CONN_IDS = itertools.count(1)

MALFORMED: tuple[bytes, ...] = (
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,',  # truncated
    b"not json at all",
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":"soon","data":[{"T":"x",'
    b'"s":"BTCUSDT","S":"Maybe","v":null,"p":12.5,"L":"PlusTick","i":5,"BT":"no","RPI":false,'
    b'"seq":"x"}]}',  # wrong types
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT",'
    b'"S":"Buy","v":"1e999","p":"NaN","L":"PlusTick","i":"x","BT":false,"RPI":false,"seq":1}]}',
    b'{"topic":"publicTrade.NOSUCHUSDT","type":"snapshot","ts":1,"data":[{"T":1,'
    b'"s":"NOSUCHUSDT","S":"Buy","v":"1","p":"1.0","L":"PlusTick","i":"x","BT":false,'
    b'"RPI":false,"seq":1}]}',  # unknown symbol
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT",'
    b'"b":[["x","1"]],"a":"none","u":"one","seq":1},"cts":1}',  # a broken book delta
    b"\xff\xfe\x00garbage",  # not UTF-8
)


@dataclass
class _Topic:
    """One subscribed topic and what this connection has sent of it."""

    kind: str  # publicTrade | orderbook | kline | tickers
    symbol: str
    depth: int = 0
    interval: str = ""
    #: orderbook: the last book step sent
    step: int = -1
    #: tickers: the fields as last sent
    ticker: dict[str, str] = field(default_factory=dict)
    #: subscribed at (ms): nothing older is sent
    since: int = 0


def parse_topic(topic: str, symbols: dict[str, Any]) -> _Topic | None:
    """The topic, or None when Bybit would answer "handler not found"."""
    parts = topic.split(".")
    if len(parts) == 2 and parts[0] in ("publicTrade", "tickers") and parts[1] in symbols:
        return _Topic(parts[0], parts[1])
    if len(parts) == 3 and parts[2] in symbols:
        if parts[0] == "orderbook" and parts[1].isdigit() and int(parts[1]) in BOOK_DEPTHS:
            return _Topic("orderbook", parts[2], depth=int(parts[1]))
        if parts[0] == "kline" and parts[1] in KLINE_INTERVALS:
            return _Topic("kline", parts[2], interval=parts[1])
    return None


@dataclass(eq=False)
class BybitSession(WireSession):
    """One ``/v5/public/linear`` connection."""

    formats: BybitFormats = field(kw_only=True)
    faults: Faults = field(kw_only=True)
    now_ms: Callable[[], int] = field(kw_only=True)
    #: the book step at which the book service (re)started, per restart generation
    book_origin: Callable[[int, int], int] = field(kw_only=True)
    topics: dict[str, _Topic] = field(default_factory=dict, kw_only=True)
    conn_id: str = field(default="", kw_only=True)
    restart_seen: int = field(default=0, kw_only=True)

    malformed = MALFORMED

    def __post_init__(self) -> None:
        n = next(_CONN_IDS)
        self.conn_id = f"local{n:015d}-{mix_int(n) % 36**5:05x}"
        self.restart_seen = self.faults.book_restart_generation

    @property
    def market(self) -> MarketGenerator:
        return self.formats.market

    # -- control ----------------------------------------------------------------------------

    def _reply(self, op: str, success: bool, msg: str, req_id: Any) -> bytes:
        return orjson.dumps(
            {
                "success": success,
                "ret_msg": msg,
                "conn_id": self.conn_id,
                "req_id": req_id if isinstance(req_id, str) else "",
                "op": op,
            }
        )

    def on_message(self, message: str | bytes) -> tuple[list[bytes], list[bytes]]:
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [self._reply("", False, "error:invalid json", "")], []
        if not isinstance(req, dict):
            req = {}
        op, args, req_id = req.get("op"), req.get("args", []), req.get("req_id", "")
        if op == "ping":
            return [self._reply("ping", True, "pong", req_id)], []
        if op not in ("subscribe", "unsubscribe"):
            return [self._reply(str(op or ""), False, f"error:unsupported op {op!r}", req_id)], []
        if not (isinstance(args, list) and args and all(isinstance(a, str) for a in args)):
            return [self._reply(op, False, "error:args must be a list of topics", req_id)], []
        if op == "unsubscribe":
            for a in args:
                self.topics.pop(a, None)
            return [self._reply(op, True, "", req_id)], []
        return self._subscribe(args, req_id)

    def _subscribe(self, args: list[str], req_id: Any) -> tuple[list[bytes], list[bytes]]:
        """All topics or none (one unknown topic fails the request); snapshots of the new book
        and ticker topics follow the ack."""
        parsed = {a: parse_topic(a, self.market.specs) for a in args}
        bad = next((a for a, t in parsed.items() if t is None), None)
        if bad is not None:
            reply = self._reply("subscribe", False, f"error:handler not found,topic:{bad}", req_id)
            return [reply], []
        now, data = self.now_ms(), []
        for name, topic in parsed.items():
            if name in self.topics or topic is None:
                continue
            self.topics[name] = topic
            topic.since = now
            if topic.kind == "orderbook":
                data.append(self._book_snapshot(name, topic, now // self.market.book_step_ms))
            elif topic.kind == "tickers":
                topic.ticker = self.formats.ticker(topic.symbol, now)
                data.append(self._ticker_frame(name, topic, "snapshot", topic.ticker, now))
        return [self._reply("subscribe", True, "", req_id)], data

    # -- live data --------------------------------------------------------------------------

    def live_frames(self, start_ms: int, end_ms: int) -> list[bytes]:
        events: list[tuple[int, int, bytes]] = []
        restart = self.faults.book_restart_generation
        if restart != self.restart_seen:  # the book service restarted: u starts again at 1
            self.restart_seen = restart
            bs = self.market.book_step_ms
            step = self.book_origin(restart, min(start_ms // bs + 1, end_ms // bs))
            for name, topic in self.topics.items():
                if topic.kind == "orderbook":
                    at = max(step, topic.step + 1)
                    events.append((at * bs, 0, self._book_snapshot(name, topic, at)))
        for order, (name, topic) in enumerate(list(self.topics.items()), 1):
            make = getattr(self, f"_{topic.kind}_events")
            lo = max(start_ms, topic.since)
            events.extend((ts, order, payload) for ts, payload in make(name, topic, lo, end_ms))
        events.sort(key=lambda e: (e[0], e[1]))
        return [payload for _, _, payload in events]

    def _publicTrade_events(  # noqa: N802 - named after the topic
        self, name: str, topic: _Topic, start_ms: int, end_ms: int
    ) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        rows = self.formats.trade_rows(topic.symbol, start_ms, end_ms)
        for _, group in itertools.groupby(rows, key=lambda r: r["seq"]):
            data = list(group)
            ts = data[0]["T"] + 1
            frame = {"topic": name, "type": "snapshot", "ts": ts, "data": data}
            out.append((ts, orjson.dumps(frame)))
        return out

    def _u(self, step: int) -> int:
        return step - self.book_origin(self.restart_seen, step) + 1

    def _book_frame(self, name: str, topic: _Topic, kind: str, step: int, b: Any, a: Any) -> bytes:
        return self.formats.book_message(name, topic.symbol, kind, step, self._u(step), b, a)

    def _book_snapshot(self, name: str, topic: _Topic, step: int) -> bytes:
        st = self.market.book_state(topic.symbol, step)
        n = topic.depth
        topic.step = step
        fmt = self.formats.levels
        b = fmt(topic.symbol, st.bid_ticks[:n], st.bid_qty[:n])
        a = fmt(topic.symbol, st.ask_ticks[:n], st.ask_qty[:n])
        return self._book_frame(name, topic, "snapshot", step, b, a)

    def _orderbook_events(
        self, name: str, topic: _Topic, start_ms: int, end_ms: int
    ) -> list[tuple[int, bytes]]:
        bs = self.market.book_step_ms
        first = max(topic.step + 1, start_ms // bs + 1)
        last = end_ms // bs
        if last < first:
            return []
        if topic.depth == 1:  # level-1 depth is always a snapshot
            out = [(s * bs, self._book_snapshot(name, topic, s)) for s in range(first, last + 1)]
            return [(ts + 1, payload) for ts, payload in out]
        out = [
            (step * bs + 1, self._book_frame(name, topic, "delta", step, b, a))
            for step, b, a in self.formats.book_deltas(topic.symbol, first, last, topic.depth)
        ]
        topic.step = last
        return out

    def _kline_events(
        self, name: str, topic: _Topic, start_ms: int, end_ms: int
    ) -> list[tuple[int, bytes]]:
        interval = KLINE_INTERVALS[topic.interval]
        iv = INTERVALS_MS[interval]
        off = 100 + stable_hash(topic.symbol, "kline") % 500  # recordings: 0.1-0.7 s late
        out = []
        fmt = self.formats
        for second in range((start_ms - off) // 1000 + 1, (end_ms - off) // 1000 + 1):
            at, ts = second * 1000, second * 1000 + off
            if at < self.market.start_ms:
                continue
            data = []
            if at % iv == 0 and at - iv >= self.market.start_ms:
                closed = self.market.closed_candle(topic.symbol, interval, at - iv)
                data.append(fmt.kline_object(topic.symbol, topic.interval, closed, 0, True, ts))
            k = fmt.candle(topic.symbol, interval, at // iv * iv, ts)
            data.append(fmt.kline_object(topic.symbol, topic.interval, k, 0, False, ts))
            frame = {"topic": name, "data": data, "ts": ts, "type": "snapshot"}
            out.append((ts, orjson.dumps(frame)))
        return out

    def _ticker_frame(
        self, name: str, topic: _Topic, kind: str, data: dict[str, str], ms: int
    ) -> bytes:
        cs = self.formats.seq(topic.symbol, ms, TICKER_SLOT)
        return orjson.dumps({"topic": name, "type": kind, "data": data, "cs": cs, "ts": ms})

    def _tickers_events(
        self, name: str, topic: _Topic, start_ms: int, end_ms: int
    ) -> list[tuple[int, bytes]]:
        every = max(100, self.market.book_step_ms)
        out = []
        for slot in range(start_ms // every + 1, end_ms // every + 1):
            ms = slot * every
            now = self.formats.ticker(topic.symbol, ms)
            changed = {k: v for k, v in now.items() if k != "symbol" and topic.ticker.get(k) != v}
            topic.ticker = now
            if changed:
                delta = {"symbol": topic.symbol, **changed}
                out.append((ms, self._ticker_frame(name, topic, "delta", delta, ms)))
        return out

    def trade_key(self, payload: bytes) -> tuple[str, int] | None:
        if not payload.startswith(b'{"topic":"publicTrade.'):
            return None
        try:
            frame = orjson.loads(payload)
            return str(frame["topic"]), int(frame["data"][0]["T"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            return None


def open_session(
    conn: ServerConnection,
    generation: int,
    opened: float,
    *,
    formats: BybitFormats,
    faults: Faults,
    now_ms: Callable[[], int],
    book_origin: Callable[[int, int], int],
) -> BybitSession:
    return BybitSession(
        conn,
        generation,
        opened,
        formats=formats,
        faults=faults,
        now_ms=now_ms,
        book_origin=book_origin,
    )
