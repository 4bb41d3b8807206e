"""What a venue's wire module is to the local exchange server, and what the server is to it.

The server (``exchange.py``) owns the sockets, the clock, the fault switches and the pacing of live
data; a wire module owns everything one venue defines on the wire: which paths it answers, its REST
bodies, limits and error codes, its archive tree, its websocket subscribe/ping protocol and its
stream payloads. The server routes each request and connection to the first wire that claims the
path, and applies the same fault switches (drop, duplicate, garbage, disconnects, cuts, 429 bursts,
slow answers) to every venue through the hooks below.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from petrosa_pipelines.lib.endpoints import ExchangeEndpoints
from petrosa_pipelines.local_exchange.faults import Faults

if TYPE_CHECKING:
    from petrosa_pipelines.local_exchange.market import Market
    from petrosa_pipelines.local_exchange.replay import RecordedFrame, Recording


class Host(Protocol):
    """The server as a wire module sees it."""

    market: Market
    faults: Faults
    recording: Recording | None
    max_streams_per_connection: int

    def now_ms(self) -> int: ...

    def log_request(self, entry: tuple[str, dict[str, str], int, int]) -> None: ...


class SessionRefused(Exception):
    """A websocket connection the venue refuses right after the handshake (close code, reason)."""

    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, reason
        super().__init__(reason)


@dataclass(eq=False)
class WireSession(abc.ABC):
    """One websocket connection: the server's bookkeeping plus the venue's protocol hooks."""

    conn: ServerConnection
    generation: int
    opened: float
    sent: int = field(default=0, init=False)
    incoming: list[float] = field(default_factory=list, init=False)
    #: stream -> trade time of the last trade message sent (``Faults.cut_between``)
    trade_ms: dict[str, int] = field(default_factory=dict, init=False)

    #: what ``Faults.malformed_probability`` sends instead of a data frame: this venue's garbage
    malformed: ClassVar[tuple[bytes, ...]] = ()

    @abc.abstractmethod
    def on_message(self, message: str | bytes) -> tuple[list[bytes], list[bytes]]:
        """(control replies, data frames) for one client message; data goes through the faults."""

    @abc.abstractmethod
    def live_frames(self, start_ms: int, end_ms: int) -> list[bytes]:
        """The data frames of what happens in ``(start_ms, end_ms]`` here, in send order."""

    def trade_key(self, payload: bytes) -> tuple[str, int] | None:
        """(stream, trade time) when ``payload`` is a trade message (for the same-ms cut fault)."""
        return None

    def replay_frame(self, frame: RecordedFrame) -> bytes | None:
        """The bytes of a recorded frame for this connection; None: not subscribed / no replay."""
        return None

    @property
    def replays(self) -> bool:
        """Whether this connection is fed from the recording when the server has one."""
        return False


def websocket_url(base_url: str) -> str:
    """The server's websocket base URL for its HTTP one (``http://h:p`` -> ``ws://h:p``)."""
    scheme, sep, rest = base_url.rstrip("/").partition("://")
    if not sep:
        return base_url
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"


class VenueWire(abc.ABC):
    """One venue's wire formats, bound to a server."""

    #: venue id, as in ``petrosa_pipelines.exchanges.EXCHANGES``
    venue: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def endpoints(cls, base_url: str) -> ExchangeEndpoints:
        """This venue's REST, websocket and archive base URLs on a local exchange serving at
        ``base_url`` (``http://host:port``): what the demo and the local stack point the venue's
        clients at (``settings.endpoint_env`` names the variables that carry them)."""

    def __init__(self, host: Host):
        self.host = host

    @abc.abstractmethod
    def owns_http(self, path: str) -> bool:
        """Whether a plain HTTP GET of ``path`` is this venue's (REST or archive)."""

    @abc.abstractmethod
    def owns_websocket(self, path: str) -> bool:
        """Whether a websocket upgrade on ``path`` is this venue's."""

    @abc.abstractmethod
    def http(
        self, ip: str, method: str, path: str, query: dict[str, str]
    ) -> Response | Awaitable[Response]:
        """The answer to one HTTP request this venue owns; an awaitable one is awaited by the
        server (work kept off its event loop, e.g. building an archive file)."""

    @abc.abstractmethod
    def open_session(
        self,
        conn: ServerConnection,
        path: str,
        query: dict[str, str],
        generation: int,
        opened: float,
    ) -> WireSession:
        """A session for a new connection (raise :class:`SessionRefused` to close it)."""
