"""The local exchange server: every venue's REST, websockets and archives on one port.

One ``websockets`` asyncio server answers both protocols: ``process_request`` serves plain HTTP
GETs and lets websocket upgrades through, each routed by path to the venue wire module that claims
it (``venues/``: Binance USD-M's ``/fapi``, ``/vision``, ``/ws``, ``/stream``, ...). The server
owns what is the same for every venue: the clock, the pacing of live data, connection lifetimes and
the fault switches (``faults.py``), applied to each venue's frames and answers alike. It runs in a
background thread with its own event loop, so tests and the demo use it as a context manager::

    with LocalExchange(market=MarketConfig(seed=7)) as ex:
        requests.get(ex.rest_base_url + "/fapi/v1/klines", params={...})
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from petrosa_pipelines.local_exchange.clock import Clock, WallClock
from petrosa_pipelines.local_exchange.config import MarketConfig
from petrosa_pipelines.local_exchange.faults import Faults
from petrosa_pipelines.local_exchange.market import Market
from petrosa_pipelines.local_exchange.replay import Recording
from petrosa_pipelines.local_exchange.responses import (
    CoalescingConnection,
    response,
    send_frame,
    send_frames,
    send_text,
)
from petrosa_pipelines.local_exchange.venues import WIRES
from petrosa_pipelines.local_exchange.venues.base import SessionRefused, VenueWire, WireSession
from petrosa_pipelines.local_exchange.venues.binance import stream as binance_stream
from petrosa_pipelines.local_exchange.venues.binance.vision import VisionArchive

MAX_CATCHUP_MS = 60_000  # a clock jump larger than this skips data, like an outage would
#: a plain GET is answered inside the websocket handshake, whose timeout (websockets' default
#: 10 s) would cut an answer still being built: a Bybit book day can take longer on a busy machine
OPEN_TIMEOUT_S = 300.0


class LocalExchange:
    """Every registered venue, locally: REST + websocket + archives on one port."""

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
        max_catchup_ms: int = MAX_CATCHUP_MS,
    ) -> None:
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
        #: how far a connection's sender catches up after falling behind (a clock jump, or a
        #: stall on a loaded machine) before it skips, recorded in ``skipped``
        self.max_catchup_ms = max_catchup_ms
        #: (from, to] exchange-clock ranges a connection never got because its sender fell more
        #: than ``max_catchup_ms`` behind (a clock jump, or a stall), as an outage would lose them
        self.skipped: list[tuple[int, int]] = []
        #: (path, query dict, weight, status) of every HTTP request, for tests
        self.request_log: list[tuple[str, dict[str, str], int, int]] = []
        self._sessions: set[WireSession] = set()
        #: the clock at each websocket handshake until its session starts (weak: a handshake
        #: that fails leaves nothing behind)
        self._accepted_ms: weakref.WeakKeyDictionary[ServerConnection, int] = (
            weakref.WeakKeyDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: one wire module per venue (``venues/__init__.py``), all on this one port
        self.wires: dict[str, VenueWire] = {v: cls(self) for v, cls in WIRES.items()}

    def log_request(self, entry: tuple[str, dict[str, str], int, int]) -> None:
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
            create_connection=CoalescingConnection,
            open_timeout=OPEN_TIMEOUT_S,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
            server_header=None,
            max_size=2**16,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # -- routing -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return self.clock.now_ms()

    @property
    def archive(self) -> VisionArchive:
        """Binance's Vision archive tree (the venue the local exchange began with)."""
        return self.wires["binance-usdm"].archive  # type: ignore[attr-defined]

    def _wire_for(self, path: str, websocket: bool) -> VenueWire | None:
        for wire in self.wires.values():
            if wire.owns_websocket(path) if websocket else wire.owns_http(path):
                return wire
        return None

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if self._wire_for(path, websocket=True) is not None:
            # the stream starts at the handshake: the client may see itself connected (and a
            # stepping clock move on) before the connection's sender first runs
            self._accepted_ms[conn] = self.now_ms()
            return None  # websocket upgrade; websockets answers 426 to a plain GET
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if self.faults.slow_response_seconds > 0:
            await asyncio.sleep(self.faults.slow_response_seconds)
        wire = self._wire_for(path, websocket=False)
        if wire is None:
            self.log_request((path, query, 0, 404))
            return response(404, b"", "text/html", {})
        ip = str(conn.remote_address[0]) if conn.remote_address else "?"
        answer = wire.http(ip, request.method, path, query)
        if inspect.isawaitable(answer):  # built off the loop (Bybit's daily book files)
            answer = await answer
        return answer

    def stream_events(self, stream: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Payloads of one Binance stream in ``(start_ms, end_ms]`` (empty if unknown)."""
        return binance_stream.stream_events(self.market, stream, start_ms, end_ms)

    # -- websocket -----------------------------------------------------------------------------

    async def _ws_handler(self, conn: ServerConnection) -> None:
        accepted_ms = self._accepted_ms.pop(conn, None)
        url = urlsplit(conn.request.path if conn.request else "")
        wire = self._wire_for(url.path, websocket=True)
        assert wire is not None  # _process_request let only claimed paths through
        try:
            session = wire.open_session(
                conn,
                url.path,
                dict(parse_qsl(url.query)),
                self.faults.disconnect_generation,
                time.monotonic(),
            )
        except SessionRefused as refused:
            await conn.close(refused.code, refused.reason)
            return
        self._sessions.add(session)
        tasks = [
            asyncio.create_task(self._produce_replay(session))
            if self.recording is not None and session.replays
            else asyncio.create_task(self._produce_live(session, accepted_ms)),
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

    async def _watchdog(self, session: WireSession) -> None:
        """Enforce ``max_connection_seconds`` (Binance: 24 h) and ``disconnect_now``."""
        while True:
            await asyncio.sleep(0.05)
            if self.faults.disconnect_generation != session.generation:
                await session.conn.close(1001, "disconnect injected")
                return
            if time.monotonic() - session.opened >= self.max_connection_seconds:
                await session.conn.close(1001, "connection lifetime exceeded")
                return

    async def _on_client_message(self, session: WireSession, message: str | bytes) -> None:
        now = time.monotonic()
        session.incoming = [t for t in session.incoming if t > now - 1.0]
        session.incoming.append(now)
        if len(session.incoming) > self.max_incoming_per_second:
            await session.conn.close(1008, "too many incoming messages")
            return
        replies, data = session.on_message(message)
        for reply in replies:
            if session.conn.state is State.OPEN:
                await send_text(session.conn, reply)
        for payload in data:
            if not await self._send(session, payload):
                return

    async def _produce_live(self, session: WireSession, since_ms: int | None = None) -> None:
        """Emit what the deterministic market does between successive clock readings, from
        ``since_ms`` (the handshake's clock reading; else now) on.

        On a stepped clock a sender that read "now" only when it first ran could start after
        the step the client was waiting for and never send it (the demo's stream day hung at
        its first second, intermittently, under load). A tick's frames go out in one socket
        write unless a per-frame fault switch is on (``_send_all``)."""
        cursor = self.now_ms() if since_ms is None else since_ms
        while True:
            await asyncio.sleep(self.tick_seconds)
            now = self.now_ms()
            if now <= cursor:
                continue
            lo = max(cursor, now - self.max_catchup_ms)
            if lo > cursor:
                self.skipped.append((cursor, lo))
            cursor = now
            payloads = session.live_frames(lo, now)
            if not self._per_frame_faults():
                if not await self._send_all(session, payloads):
                    return
                continue
            for payload in payloads:
                if not await self._send(session, payload):
                    return

    async def _produce_replay(self, session: WireSession) -> None:
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
            payload = session.replay_frame(frame)
            if payload is not None and not await self._send(session, payload):
                return

    def _per_frame_faults(self) -> bool:
        """Whether a fault switch that ``_send`` applies frame by frame is on (else a tick's
        frames go out in one write, see ``_send_all``)."""
        f = self.faults
        return (
            f.cut_same_ms_probability > 0
            or f.drop_probability > 0
            or f.malformed_probability > 0
            or f.duplicate_probability > 0
            or f.disconnect_every_n_messages > 0
        )

    async def _send_all(self, session: WireSession, payloads: list[bytes]) -> bool:
        """What ``_send`` does to each of ``payloads`` with every per-frame fault off (no
        switch draws from the fault RNG then), in one socket write; False once the connection
        is done."""
        try:
            await send_frames(session.conn, payloads)
        except ConnectionClosed:
            return False
        session.sent += len(payloads)
        return True

    async def _send(self, session: WireSession, payload: bytes) -> bool:
        """Send one data frame through the fault switches; False once the connection is done."""
        faults = self.faults
        if faults.cut_same_ms_probability > 0:
            key = session.trade_key(payload)
            if key is not None and faults.cut_between(session.trade_ms, *key):
                await session.conn.close(1001, "cut injected inside a millisecond")
                return False
        if faults.chance(faults.drop_probability):
            return True
        if faults.chance(faults.malformed_probability) and session.malformed:
            payload = session.malformed[faults.choice(len(session.malformed))]
        copies = 2 if faults.chance(faults.duplicate_probability) else 1
        try:
            for _ in range(copies):
                await send_frame(session.conn, payload)
                session.sent += 1
        except ConnectionClosed:
            return False
        n = faults.disconnect_every_n_messages
        if n > 0 and session.sent >= n:
            await session.conn.close(1001, "disconnect injected")
            return False
        return True
