"""Bybit v5 linear's wire: which paths are Bybit's, and the state every connection shares."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from petrosa_pipelines.lib.endpoints import ExchangeEndpoints
from petrosa_pipelines.local_exchange.venues.base import Host, VenueWire, websocket_url
from petrosa_pipelines.local_exchange.venues.bybit import stream
from petrosa_pipelines.local_exchange.venues.bybit.frames import BybitFormats
from petrosa_pipelines.local_exchange.venues.bybit.rest import BybitRest

WS_PATH = "/v5/public/linear"


class BybitWire(VenueWire):
    """``/v5/market/*`` REST, ``/trading/*`` and ``/orderbook/*`` archives and the
    ``/v5/public/linear`` websocket."""

    venue: ClassVar[str] = "bybit-linear"

    @classmethod
    def endpoints(cls, base_url: str) -> ExchangeEndpoints:
        """Bybit v5 on the same port: REST and archives at the root, websocket at ``WS_PATH``
        (the adapter appends the path to the websocket base URL)."""
        base = base_url.rstrip("/")
        return ExchangeEndpoints(base, websocket_url(base), base)

    def __init__(self, host: Host):
        super().__init__(host)
        self.formats = BybitFormats(host.market)
        #: restart generation -> the book step the book service (re)started at
        self._origins: dict[int, int] = {0: host.market.start_ms // host.market.book_step_ms - 1}
        self.rest = BybitRest(
            host, self.formats, self.book_u, self.archive_book_u, self.book_restarts
        )

    def book_origin(self, generation: int, step: int) -> int:
        """The first noticer of a restart fixes its step, so every connection agrees on ``u``."""
        return self._origins.setdefault(generation, step)

    def book_u(self, step: int) -> int:
        """``u`` of the book on ``step`` (+1 per book step since the last service start)."""
        gen = self.host.faults.book_restart_generation
        return step - self.book_origin(gen, step) + 1

    def book_restarts(self) -> list[int]:
        """The steps the book service restarted at (``u`` = 1 there), as noticed so far."""
        return sorted(o for g, o in self._origins.items() if g)

    def archive_book_u(self, step: int) -> int:
        """``u`` of the book on a past ``step``, as the websocket numbered it then: counted from
        the last (re)start of the book service at or before it (the daily history files)."""
        # a snapshot of the origins: a book file's worker thread asks while the loop adds some
        origins = tuple(self._origins.values())
        origin = max((o for o in origins if o <= step), default=self._origins[0])
        return step - origin + 1

    def owns_http(self, path: str) -> bool:
        return (
            path.startswith("/v5/")
            or path == "/trading"
            or path.startswith(("/trading/", "/orderbook/"))
        )

    def owns_websocket(self, path: str) -> bool:
        return path == WS_PATH

    def http(
        self, ip: str, method: str, path: str, query: dict[str, str]
    ) -> Response | Awaitable[Response]:
        return self.rest.http(ip, method, path, query)

    def open_session(
        self,
        conn: ServerConnection,
        path: str,
        query: dict[str, str],
        generation: int,
        opened: float,
    ) -> stream.BybitSession:
        return stream.open_session(
            conn,
            generation,
            opened,
            formats=self.formats,
            faults=self.host.faults,
            now_ms=self.host.now_ms,
            book_origin=self.book_origin,
        )
