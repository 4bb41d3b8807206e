"""The local exchange server: Binance USD-M REST, websocket streams and Vision archives on one port.

One ``websockets`` asyncio server answers both protocols: ``process_request`` serves plain HTTP
GETs (``/fapi/v1/...`` and ``/vision/...``) and lets websocket upgrades on ``/stream`` and
``/ws/<stream>`` through. It runs in a background thread with its own event loop, so tests and
the demo use it as a context manager::

    with LocalExchange(market=MarketConfig(seed=7)) as ex:
        requests.get(ex.rest_base_url + "/fapi/v1/klines", params={...})

Weights, limits, headers and error bodies follow Binance so a client written against the local
exchange behaves the same against the real one (and vice versa).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import email.utils
import http
import math
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from petrosa_pipelines.local_exchange.archives import VisionArchive
from petrosa_pipelines.local_exchange.faults import MALFORMED_SAMPLES, Faults
from petrosa_pipelines.local_exchange.market import (
    DAY_MS,
    INTERVALS_MS,
    Market,
    MarketConfig,
    fmt_fixed,
)
from petrosa_pipelines.local_exchange.replay import Recording, stream_key

HOUR_MS = 3_600_000
MAX_CATCHUP_MS = 60_000  # a clock jump larger than this skips data, like an outage would
DEPTH_LIMIT_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
MAX_BAN_SECONDS = 3 * 24 * 3600


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    """Wall-clock time, optionally running ``speed`` times faster from the moment of creation."""

    def __init__(self, speed: float = 1.0):
        self.speed = speed
        self._wall0 = time.time()

    def now_ms(self) -> int:
        now = time.time()
        return int((self._wall0 + (now - self._wall0) * self.speed) * 1000)


class SimulatedClock:
    """A test-controlled "now": frozen at ``now_ms`` (``speed=0``) or running ``speed``x from it.

    REST never returns data after ``now``; archives exist only for days before now's UTC day;
    live websocket streams emit what happens between successive readings of the clock.
    """

    def __init__(self, now_ms: int | str | dt.datetime, speed: float = 0.0):
        self._lock = threading.Lock()
        self._base = _to_ms(now_ms)
        self._mono0 = time.monotonic()
        self.speed = speed

    def now_ms(self) -> int:
        with self._lock:
            return self._base + int((time.monotonic() - self._mono0) * 1000 * self.speed)

    def set(self, now_ms: int | str | dt.datetime) -> None:
        with self._lock:
            self._base, self._mono0 = _to_ms(now_ms), time.monotonic()

    def advance(self, ms: int) -> None:
        self.set(self.now_ms() + ms)

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on without a jump (``0`` freezes the clock)."""
        with self._lock:
            now = self._base + int((time.monotonic() - self._mono0) * 1000 * self.speed)
            self._base, self._mono0, self.speed = now, time.monotonic(), speed


def _to_ms(value: int | str | dt.datetime) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str, status: int = 400):
        self.code, self.msg, self.status = code, msg, status
        super().__init__(msg)


@dataclass
class _IpState:
    minute: int = -1
    used: int = 0
    blocked_until: float = 0.0  # wall time until which a 429 told the client to wait
    banned_until: float = 0.0
    ban_seconds: float = 0.0
    funding_window: list[float] = field(default_factory=list)


@dataclass(eq=False)
class _Session:
    conn: ServerConnection
    combined: bool
    streams: dict[str, str]  # subscribed name -> normalised key
    generation: int
    opened: float
    sent: int = 0
    incoming: list[float] = field(default_factory=list)
    #: stream -> trade time of the last aggTrade sent (``Faults.cut_before``)
    trade_ms: dict[str, int] = field(default_factory=dict)


_STREAM_RE = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:(?P<agg>aggTrade)|kline_(?P<iv>\w+)|(?P<depth>depth)(?:@(?P<dms>\d+)ms)?"
    r"|(?P<mark>markPrice)(?:@(?P<mark1s>1s))?)$"
)


class LocalExchange:
    """Binance USD-M futures, locally: REST + websocket + Vision archives on one port."""

    def __init__(
        self,
        market: MarketConfig | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        *,
        speed: float = 1.0,
        replay: str | Path | Recording | None = None,
        replay_speed: float | None = None,
        weight_limit_per_minute: int = 2400,
        ban_seconds: float = 120.0,
        # Binance: aggTrades "support querying futures trade histories that are not older than
        # one year" (https://developers.binance.com/docs/derivatives/usds-margined-futures/
        # market-data/rest-api/Compressed-Aggregate-Trades-List)
        aggtrades_recent_hours: float = 365 * 24.0,
        ping_interval: float | None = 180.0,
        ping_timeout: float | None = 600.0,
        max_connection_seconds: float = 24 * 3600.0,
        max_incoming_per_second: int = 10,
        max_streams_per_connection: int = 1024,
        tick_seconds: float = 0.02,
    ):
        self.config = market or MarketConfig()
        self.market = Market(self.config)
        self.faults = faults or Faults(seed=self.config.seed)
        self.host = host
        self.port = port
        self.clock: Clock = clock or WallClock(speed)
        if isinstance(replay, Recording) or replay is None:
            self.recording = replay
        else:
            self.recording = Recording.load(replay)
        self.replay_speed = replay_speed if replay_speed is not None else speed
        self.weight_limit_per_minute = weight_limit_per_minute
        self.ban_seconds = ban_seconds
        self.aggtrades_recent_hours = aggtrades_recent_hours
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_connection_seconds = max_connection_seconds
        self.max_incoming_per_second = max_incoming_per_second
        self.max_streams_per_connection = max_streams_per_connection
        self.tick_seconds = tick_seconds
        self.archive = VisionArchive(self.market, self.clock.now_ms, self.faults)
        #: (path, query dict, weight, status) of every HTTP request, for tests
        self.request_log: list[tuple[str, dict[str, str], int, int]] = []
        self._ips: dict[str, _IpState] = {}
        self._sessions: set[_Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._routes: dict[str, Callable[[dict[str, str]], tuple[int, Any]]] = {
            "/fapi/v1/ping": self._ping,
            "/fapi/v1/time": self._time,
            "/fapi/v1/exchangeInfo": self._exchange_info,
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/aggTrades": self._agg_trades,
            "/fapi/v1/fundingRate": self._funding_rate,
            "/fapi/v1/depth": self._depth,
            "/fapi/v1/premiumIndex": self._premium_index,
        }

    def _log(self, entry: tuple[str, dict[str, str], int, int]) -> None:
        """Append to ``request_log``, dropping the oldest half past 200k entries (long demos)."""
        if len(self.request_log) >= 200_000:
            del self.request_log[:100_000]
        self.request_log.append(entry)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def _url_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104

    @property
    def rest_base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_base_url(self) -> str:
        return f"ws://{self._url_host}:{self.port}"

    @property
    def vision_base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}/vision"

    def start(self) -> LocalExchange:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="local-exchange", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"local exchange failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket, then join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def disconnect_all(self) -> None:
        """Close every open websocket connection (the same as ``faults.disconnect_now()``)."""
        self.faults.disconnect_now()

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._ws_handler,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
            server_header=None,
            max_size=2**16,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # -- HTTP ----------------------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == "/stream" or path == "/ws" or path.startswith("/ws/"):
            return None  # websocket upgrade; websockets answers 426 to a plain GET
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if self.faults.slow_response_seconds > 0:
            await asyncio.sleep(self.faults.slow_response_seconds)
        if path == "/vision" or path.startswith("/vision/"):
            return self._vision(path[len("/vision") :].lstrip("/"), query)
        ip = str(conn.remote_address[0]) if conn.remote_address else "?"
        return self._rest(ip, request.method, path, query)

    def _vision(self, key: str, query: dict[str, str]) -> Response:
        if not key:
            try:
                max_keys = max(1, min(int(query.get("max-keys", "1000")), 1000))
            except ValueError:
                max_keys = 1000
            body = self.archive.list_objects(
                query.get("prefix", ""),
                query.get("delimiter", ""),
                query.get("marker", query.get("start-after", "")),
                max_keys,
            )
            status, ctype = 200, "application/xml"
        else:
            status, body, ctype = self.archive.get(key)
        self._log(("/vision/" + key, query, 0, status))
        return _response(status, body, ctype, {})

    def _rest(self, ip: str, method: str, path: str, query: dict[str, str]) -> Response:
        route = self._routes.get(path)
        if route is None:
            self._log((path, query, 0, 404))
            return _response(404, b"", "text/html", {})
        if method != "GET":
            self._log((path, query, 0, 405))
            return _json(405, {"code": -1101, "msg": "Method not allowed."}, {})
        weight = self._weight(path, query)
        wall = time.time()
        st = self._ips.setdefault(ip, _IpState())
        minute = int(wall // 60)
        if st.minute != minute:
            st.minute, st.used = minute, 0
        st.used += weight
        headers = {"X-MBX-USED-WEIGHT-1M": str(st.used)}
        status, body = self._limits(ip, st, wall, path)
        if status == 200:
            try:
                status, body = route(query)
            except ApiError as err:
                status, body = err.status, {"code": err.code, "msg": err.msg}
        if status in (418, 429):
            headers["Retry-After"] = str(body.pop("retry_after"))
        self._log((path, query, weight, status))
        return _json(status, body, headers)

    def _limits(self, ip: str, st: _IpState, wall: float, path: str) -> tuple[int, Any]:
        """Injected bursts, bans and the per-minute weight limit, in Binance's order."""
        if st.banned_until > wall:
            return 418, _ban_body(ip, st.banned_until)
        if self.faults.take_rate_limit():
            return 429, _too_many(ip, self.weight_limit_per_minute, self.faults.retry_after_seconds)
        if st.used > self.weight_limit_per_minute:
            if st.blocked_until > wall:  # kept hammering after a 429: ban, doubling each time
                st.ban_seconds = min(
                    st.ban_seconds * 2 if st.ban_seconds else self.ban_seconds, MAX_BAN_SECONDS
                )
                st.banned_until = wall + st.ban_seconds
                return 418, _ban_body(ip, st.banned_until)
            st.blocked_until = (math.floor(wall / 60) + 1) * 60
            wait = max(1, math.ceil(st.blocked_until - wall))
            return 429, _too_many(ip, self.weight_limit_per_minute, wait)
        if path == "/fapi/v1/fundingRate":  # 500 requests / 5 min / IP, shared with fundingInfo
            st.funding_window = [t for t in st.funding_window if t > wall - 300]
            if len(st.funding_window) >= 500:
                wait = max(1, math.ceil(st.funding_window[0] + 300 - wall))
                return 429, _too_many(ip, 500, wait)
            st.funding_window.append(wall)
        return 200, None

    def _weight(self, path: str, query: dict[str, str]) -> int:
        if path == "/fapi/v1/klines":
            limit = _safe_int(query.get("limit"), 500)
            return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        if path == "/fapi/v1/aggTrades":
            return 20
        if path == "/fapi/v1/depth":
            return DEPTH_LIMIT_WEIGHTS.get(_safe_int(query.get("limit"), 500), 20)
        if path == "/fapi/v1/premiumIndex":
            return 1 if query.get("symbol") else 10
        return 1

    # -- REST endpoints ------------------------------------------------------------------------

    def _now(self) -> int:
        return self.clock.now_ms()

    def _ping(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, set())
        return 200, {}

    def _time(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, set())
        return 200, {"serverTime": self._now()}

    def _exchange_info(self, q: dict[str, str]) -> tuple[int, Any]:
        return 200, exchange_info(self.market, self._now(), self.weight_limit_per_minute)

    def _symbol(self, q: dict[str, str]) -> str:
        sym = q.get("symbol", "")
        if not sym:
            raise ApiError(-1102, _mandatory("symbol"))
        if sym.upper() not in self.market.specs or sym != sym.upper():
            raise ApiError(-1121, "Invalid symbol.")
        return sym

    def _klines(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "interval", "startTime", "endTime", "limit"})
        sym = self._symbol(q)
        interval = q.get("interval", "")
        if not interval:
            raise ApiError(-1102, _mandatory("interval"))
        if interval not in INTERVALS_MS:
            raise ApiError(-1120, "Invalid interval.")
        limit = _limit(q, 500, 1500)
        start, end = _int(q, "startTime"), _int(q, "endTime")
        _order(start, end)
        iv, now = INTERVALS_MS[interval], self._now()
        if start is not None:  # before the listing, Binance answers from the first candle
            first = -(-max(start, self.market.start_ms) // iv) * iv
            last = min(first + (limit - 1) * iv, end if end is not None else now)
        else:
            last = (min(end, now) if end is not None else now) // iv * iv
            first = last - (limit - 1) * iv
        return 200, self.market.kline_rows(sym, interval, first, last, now_ms=now)[:limit]

    def _agg_trades(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "fromId", "startTime", "endTime", "limit"})
        sym = self._symbol(q)
        limit = _limit(q, 500, 1000)
        from_id, start, end = _int(q, "fromId"), _int(q, "startTime"), _int(q, "endTime")
        now = self._now()
        if from_id is not None:
            if start is not None or end is not None:
                raise ApiError(-1128, "Combination of optional parameters invalid.")
            t = self.market.trades_from_id(sym, from_id, limit, now)
        else:
            _order(start, end)
            if start is not None and end is not None and end - start > HOUR_MS:
                raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
            oldest = now - int(self.aggtrades_recent_hours * HOUR_MS)
            if start is None and end is None:
                t = self.market.trades_between(sym, max(now - HOUR_MS, oldest), now)
                t = t.slice(max(len(t) - limit, 0), len(t))
            else:
                start = start if start is not None else end - HOUR_MS  # type: ignore[operator]
                end = end if end is not None else start + HOUR_MS
                # time-window queries reach one year back, like Binance's (older: Vision)
                t = self.market.trades_between(sym, max(start, oldest), min(end, now))
                t = t.slice(0, limit)
        spec = self.market.spec(sym)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return 200, [
            {
                "a": a,
                "p": fmt_fixed(p, pd_),
                "q": fmt_fixed(qq, qd),
                "f": f,
                "l": last,
                "T": tt,
                "m": m,
            }
            for a, p, qq, f, last, tt, m in t.rows()
        ]

    def _funding_rate(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "startTime", "endTime", "limit"})
        symbols = [self._symbol(q)] if "symbol" in q else sorted(self.market.specs)
        limit = _limit(q, 100, 1000)
        start, end = _int(q, "startTime"), _int(q, "endTime")
        _order(start, end)
        now = self._now()
        hi = min(end, now) if end is not None else now
        span = limit * 8 * HOUR_MS
        rows = []
        if start is not None:
            start = max(start, self.market.start_ms)
        for sym in symbols:
            if start is not None:
                rows += self.market.funding_rows(sym, start, min(hi, start + span))
            else:
                rows += self.market.funding_rows(sym, max(hi - span, 0), hi)
        rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
        return 200, rows[:limit] if start is not None else rows[-limit:]

    def _depth(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "limit"})
        sym = self._symbol(q)
        limit = _limit(q, 500, 1000)
        if limit not in DEPTH_LIMIT_WEIGHTS:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        return 200, self.market.book(sym, self._now(), limit)

    def _premium_index(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol"})
        symbols = [self._symbol(q)] if "symbol" in q else sorted(self.market.specs)
        now = self._now()
        out = []
        for sym in symbols:
            ev = self.market.mark_price_event(sym, now // 1000 * 1000)
            out.append(
                {
                    "symbol": sym,
                    "markPrice": ev["p"],
                    "indexPrice": ev["i"],
                    "estimatedSettlePrice": ev["P"],
                    "lastFundingRate": ev["r"],
                    "interestRate": "0.00010000",
                    "nextFundingTime": ev["T"],
                    "time": now,
                }
            )
        return 200, out[0] if "symbol" in q else out

    # -- websocket -----------------------------------------------------------------------------

    async def _ws_handler(self, conn: ServerConnection) -> None:
        url = urlsplit(conn.request.path if conn.request else "")
        if url.path == "/stream":
            combined = True
            names = dict(parse_qsl(url.query)).get("streams", "")
            streams = [s for s in names.split("/") if s]
        else:
            combined = False
            streams = [s for s in url.path[len("/ws") :].split("/") if s]
        if len(streams) > self.max_streams_per_connection:
            await conn.close(1008, "too many streams")
            return
        session = _Session(
            conn,
            combined,
            {s: stream_key(s) for s in streams},
            self.faults.disconnect_generation,
            time.monotonic(),
        )
        self._sessions.add(session)
        tasks = [
            asyncio.create_task(self._produce_replay(session))
            if self.recording is not None
            else asyncio.create_task(self._produce_live(session)),
            asyncio.create_task(self._watchdog(session)),
        ]
        try:
            async for message in conn:
                await self._on_client_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            self._sessions.discard(session)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watchdog(self, session: _Session) -> None:
        """Enforce ``max_connection_seconds`` (Binance: 24 h) and ``disconnect_now``."""
        while True:
            await asyncio.sleep(0.05)
            if self.faults.disconnect_generation != session.generation:
                await session.conn.close(1001, "disconnect injected")
                return
            if time.monotonic() - session.opened >= self.max_connection_seconds:
                await session.conn.close(1001, "connection lifetime exceeded")
                return

    async def _on_client_message(self, session: _Session, message: str | bytes) -> None:
        now = time.monotonic()
        session.incoming = [t for t in session.incoming if t > now - 1.0]
        session.incoming.append(now)
        if len(session.incoming) > self.max_incoming_per_second:
            await session.conn.close(1008, "too many incoming messages")
            return
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            await _send_json(session, {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        if not isinstance(req, dict):
            req = {}
        req_id = req.get("id")
        try:
            result = self._control(session, req)
        except ApiError as err:
            await _send_json(session, {"error": {"code": err.code, "msg": err.msg}, "id": req_id})
            return
        if session.conn.state is State.OPEN:
            await _send_json(session, {"result": result, "id": req_id})

    def _control(self, session: _Session, req: dict[str, Any]) -> Any:
        """Answer one control frame (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ...)."""
        req_id, method, params = req.get("id"), req.get("method"), req.get("params", [])
        if not isinstance(req_id, int) or req_id < 0:
            raise ApiError(2, "Invalid request: request ID must be an unsigned integer")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not (
            isinstance(params, list) and all(isinstance(p, str) for p in params)
        ):
            raise ApiError(2, "Invalid request: params must be a list of strings")
        if method == "SUBSCRIBE":
            if len(session.streams) + len(params) > self.max_streams_per_connection:
                raise ApiError(2, "Invalid request: too many streams")
            session.streams.update({p: stream_key(p) for p in params})
            return None
        if method == "UNSUBSCRIBE":
            for p in params:
                session.streams.pop(p, None)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return list(session.streams)
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return None if method == "SET_PROPERTY" else session.combined
        raise ApiError(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
            "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
        )

    async def _produce_live(self, session: _Session) -> None:
        """Emit what the deterministic market does between successive clock readings."""
        cursor = self._now()
        while True:
            await asyncio.sleep(self.tick_seconds)
            now = self._now()
            if now <= cursor:
                continue
            lo = max(cursor, now - MAX_CATCHUP_MS)
            cursor = now
            events: list[tuple[int, str, dict[str, Any]]] = []
            for name in list(session.streams):
                events.extend((d["E"], name, d) for d in self.stream_events(name, lo, now))
            events.sort(key=lambda e: e[0])
            for _, name, data in events:
                frame = {"stream": name, "data": data} if session.combined else data
                if not await self._send(session, orjson.dumps(frame)):
                    return

    async def _produce_replay(self, session: _Session) -> None:
        """Pace the recording's frames by their event times divided by the replay speed."""
        rec = self.recording
        assert rec is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        speed = max(self.replay_speed, 1e-9)
        for frame in rec.frames:
            delay = t0 + (frame.event_ms - rec.start_ms) / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            name = next((n for n, k in session.streams.items() if k == frame.key), None)
            if name is not None and not await self._send(
                session, rec.frame_bytes(frame, name, session.combined)
            ):
                return

    async def _send(self, session: _Session, payload: bytes) -> bool:
        """Send one data frame through the fault switches; False once the connection is done."""
        faults = self.faults
        if faults.cut_same_ms_probability > 0 and faults.cut_before(session.trade_ms, payload):
            await session.conn.close(1001, "cut injected inside a millisecond")
            return False
        if faults.chance(faults.drop_probability):
            return True
        if faults.chance(faults.malformed_probability):
            payload = MALFORMED_SAMPLES[faults.choice(len(MALFORMED_SAMPLES))]
        copies = 2 if faults.chance(faults.duplicate_probability) else 1
        try:
            for _ in range(copies):
                await _send_frame(session.conn, payload)
                session.sent += 1
        except ConnectionClosed:
            return False
        n = faults.disconnect_every_n_messages
        if n > 0 and session.sent >= n:
            await session.conn.close(1001, "disconnect injected")
            return False
        return True

    def stream_events(self, stream: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Payloads of one stream for events in ``(start_ms, end_ms]`` (empty if unknown)."""
        m = _STREAM_RE.match(stream)
        if m is None:
            return []
        sym = m["sym"].upper()
        if sym not in self.market.specs or end_ms < self.market.start_ms:
            return []
        mk = self.market
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
        every = 1000 if m["mark1s"] else 3000
        first = max(start_ms, mk.start_ms) // every + 1
        return [mk.mark_price_event(sym, s * every) for s in range(first, end_ms // every + 1)]


# -- helpers ------------------------------------------------------------------------------------


def exchange_info(market: Market, now_ms: int, weight_limit: int = 2400) -> dict[str, Any]:
    """``/fapi/v1/exchangeInfo`` shaped like the real one (rateLimits, assets, symbol filters)."""
    symbols = []
    for sym, spec in market.specs.items():
        base = sym[:-4] if sym.endswith("USDT") else sym[:-3]
        tick, step = str(spec.tick_size), str(spec.step_size)
        symbols.append(
            {
                "symbol": sym,
                "pair": sym,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": market.start_ms,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": base,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": spec.price_decimals,
                "quantityPrecision": spec.qty_decimals,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "filters": [
                    {
                        "minPrice": tick,
                        "maxPrice": "4529764",
                        "filterType": "PRICE_FILTER",
                        "tickSize": tick,
                    },
                    {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step},
                    {
                        "stepSize": step,
                        "filterType": "MARKET_LOT_SIZE",
                        "maxQty": "120",
                        "minQty": step,
                    },
                    {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                    {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                    {"notional": "5", "filterType": "MIN_NOTIONAL"},
                    {
                        "multiplierDown": "0.9500",
                        "multiplierUp": "1.0500",
                        "multiplierDecimal": "4",
                        "filterType": "PERCENT_PRICE",
                    },
                ],
                "orderTypes": [
                    "LIMIT",
                    "MARKET",
                    "STOP",
                    "STOP_MARKET",
                    "TAKE_PROFIT",
                    "TAKE_PROFIT_MARKET",
                    "TRAILING_STOP_MARKET",
                ],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.10000000"},
        ],
        "symbols": symbols,
    }


def _response(status: int, body: bytes, ctype: str, extra: dict[str, str]) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *extra.items(),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _json(status: int, body: Any, extra: dict[str, str]) -> Response:
    return _response(status, orjson.dumps(body), "application/json", extra)


async def _send_frame(conn: ServerConnection, payload: bytes) -> None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        await conn.send(payload)  # binary frame: a hostile client-side case
        return
    await conn.send(payload, text=True)


async def _send_json(session: _Session, obj: Any) -> None:
    with contextlib.suppress(ConnectionClosed):
        await session.conn.send(orjson.dumps(obj), text=True)


def _too_many(ip: str, limit: int, retry_after: int) -> dict[str, Any]:
    return {
        "code": -1003,
        "msg": f"Too many requests; current limit of IP({ip}) is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        "retry_after": retry_after,
    }


def _ban_body(ip: str, until: float) -> dict[str, Any]:
    return {
        "code": -1003,
        "msg": f"Way too many requests; IP({ip}) banned until {int(until * 1000)}. "
        "Please use the websocket for live updates to avoid bans.",
        "retry_after": max(1, math.ceil(until - time.time())),
    }


def _mandatory(name: str) -> str:
    return f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."


def _safe_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _int(q: dict[str, str], name: str) -> int | None:
    raw = q.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,20}", raw):
        legal = "'^[0-9]{1,20}$'"
        raise ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is {legal}."
        )
    return int(raw)


def _limit(q: dict[str, str], default: int, maximum: int) -> int:
    value = _int(q, "limit")
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


def _order(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise ApiError(-1023, "Start time is greater than end time.")


def _only(q: dict[str, str], allowed: set[str]) -> None:
    extra = set(q) - allowed
    if extra:
        raise ApiError(
            -1104,
            f"Not all sent parameters were read; read '{len(set(q) & allowed)}' parameter(s) "
            f"but was sent '{len(q)}'.",
        )


# -- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is checked by its argparse ``type`` (a bad value exits with
    ``argument --port: -1 is not between 0 and 65535``, never a traceback)."""
    from petrosa_pipelines.lib.argtypes import float_in, int_in, iso_date, iso_time, symbol_list

    parser = argparse.ArgumentParser(
        prog="python -m petrosa_pipelines.local_exchange",
        description="A local Binance USD-M futures exchange (REST, websocket, Vision archives).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve until Ctrl-C / SIGTERM")
    probability = float_in(0.0, 1.0)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int_in(0, 65535), default=8765)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--symbols", type=symbol_list, default=("BTCUSDT", "ETHUSDT"))
    s.add_argument("--trades-per-day", type=int_in(1), default=20_000)
    s.add_argument("--start-date", type=iso_date, default="2024-01-01")
    s.add_argument(
        "--now", type=iso_time, help="simulated start time (ISO, UTC); default: wall clock"
    )
    s.add_argument(
        "--speed",
        type=float_in(0.0, lo_open=True),
        default=1.0,
        help="market/replay time per real second",
    )
    s.add_argument("--replay", help="a .jsonl recording or a directory of them")
    s.add_argument("--vision-headers", choices=("always", "never", "mixed"), default="always")
    s.add_argument("--weight-limit", type=int_in(1), default=2400)
    s.add_argument("--ping-interval", type=float_in(0.0, lo_open=True), default=180.0)
    s.add_argument(
        "--max-connection-seconds", type=float_in(0.0, lo_open=True), default=24 * 3600.0
    )
    s.add_argument("--fault-seed", type=int, default=0)
    s.add_argument("--fault-disconnect-every", type=int_in(0), default=0)
    s.add_argument("--fault-duplicate", type=probability, default=0.0)
    s.add_argument("--fault-drop", type=probability, default=0.0)
    s.add_argument("--fault-malformed", type=probability, default=0.0)
    s.add_argument("--fault-rate-limit-burst", type=int_in(0), default=0)
    s.add_argument("--fault-slow", type=float_in(0.0), default=0.0)
    s.add_argument("--fault-bad-checksum", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``python -m petrosa_pipelines.local_exchange serve ...``; returns an exit code."""
    args = build_parser().parse_args(argv)
    market = MarketConfig(
        seed=args.seed,
        symbols=tuple(args.symbols),
        trades_per_day=args.trades_per_day,
        start_date=args.start_date,
        vision_headers=args.vision_headers,
    )
    faults = Faults(
        seed=args.fault_seed,
        disconnect_every_n_messages=args.fault_disconnect_every,
        duplicate_probability=args.fault_duplicate,
        drop_probability=args.fault_drop,
        malformed_probability=args.fault_malformed,
        rate_limit_burst=args.fault_rate_limit_burst,
        slow_response_seconds=args.fault_slow,
        bad_checksum=args.fault_bad_checksum,
    )
    clock = SimulatedClock(args.now, speed=args.speed) if args.now else None
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalExchange(
            market=market,
            faults=faults,
            host=args.host,
            port=args.port,
            clock=clock,
            speed=args.speed,
            replay=args.replay,
            weight_limit_per_minute=args.weight_limit,
            ping_interval=args.ping_interval,
            max_connection_seconds=args.max_connection_seconds,
        ) as ex:
            print(f"rest   {ex.rest_base_url}", flush=True)
            print(f"ws     {ex.ws_base_url}", flush=True)
            print(f"vision {ex.vision_base_url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = [
    "DAY_MS",
    "ApiError",
    "LocalExchange",
    "SimulatedClock",
    "WallClock",
    "exchange_info",
    "main",
]
