"""Binance USD-M's wire: which paths are Binance's and who answers them; and the Petrosa
socket-client's NATS envelope around a combined-stream frame (``socket_client_envelope``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from petrosa_pipelines.lib.endpoints import ExchangeEndpoints
from petrosa_pipelines.local_exchange.venues.base import SessionRefused, VenueWire, websocket_url
from petrosa_pipelines.local_exchange.venues.binance import stream
from petrosa_pipelines.local_exchange.venues.binance.rest import BinanceHost, BinanceRest
from petrosa_pipelines.local_exchange.venues.binance.vision import VisionArchive


class BinanceWire(VenueWire):
    """``/fapi/v1/*`` REST, ``/vision/*`` archives, ``/ws/<streams>`` and ``/stream`` websockets."""

    venue: ClassVar[str] = "binance-usdm"

    @classmethod
    def endpoints(cls, base_url: str) -> ExchangeEndpoints:
        """REST at the root, websockets at ``/ws`` and ``/stream``, Vision under ``/vision``."""
        base = base_url.rstrip("/")
        return ExchangeEndpoints(base, websocket_url(base), f"{base}/vision")

    def __init__(self, host: BinanceHost):
        super().__init__(host)
        self.host: BinanceHost = host
        self.rest = BinanceRest(host)

    @property
    def archive(self) -> VisionArchive:
        return self.rest.archive

    def owns_http(self, path: str) -> bool:
        return path.startswith("/fapi/") or path == "/vision" or path.startswith("/vision/")

    def owns_websocket(self, path: str) -> bool:
        return path == "/stream" or path == "/ws" or path.startswith("/ws/")

    def http(self, ip: str, method: str, path: str, query: dict[str, str]) -> Response:
        if path == "/vision" or path.startswith("/vision/"):
            return self.rest.vision(path[len("/vision") :].lstrip("/"), query)
        return self.rest.rest(ip, method, path, query)

    def open_session(
        self,
        conn: ServerConnection,
        path: str,
        query: dict[str, str],
        generation: int,
        opened: float,
    ) -> stream.BinanceSession:
        session = stream.open_session(
            conn,
            path,
            query,
            generation,
            opened,
            market=self.host.market,
            recording=self.host.recording,
            max_streams=self.host.max_streams_per_connection,
        )
        if session is None:
            raise SessionRefused(1008, "too many streams")
        return session


def socket_client_envelope(
    frame: bytes,
    receipt_ms: int,
    *,
    message_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    stream_first: bool = True,
) -> bytes:
    """A combined-stream frame wrapped as the Petrosa socket-client publishes it on NATS.

    ``{"stream": ..., "data": {...}, "timestamp": "<ISO-8601>Z", "message_id": ...,
    "source": "binance-websocket", "version": "1.0"}`` (PetroSa2/petrosa-socket-client,
    ``socket_client/models/message.py``); ``receipt_ms`` becomes ``timestamp`` (microsecond
    precision, as Python's ``isoformat`` writes it), ``extra`` adds keys such as trace context
    (``{"traceparent": ...}``) and ``stream_first=False`` puts ``stream`` last, to test readers
    against other key orders. The payload ``data`` is kept byte for byte.
    """
    head = orjson.loads(frame)
    if not isinstance(head, dict) or "stream" not in head or "data" not in head:
        raise ValueError('frame must be a combined-stream frame {"stream": ..., "data": ...}')
    data = _data_bytes(frame)
    stamp = _EPOCH + dt.timedelta(milliseconds=receipt_ms)
    meta: dict[str, Any] = {
        "timestamp": stamp.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",
        "message_id": message_id,
        "source": "binance-websocket",
        "version": "1.0",
        **(extra or {}),
    }
    rest = orjson.dumps(meta)[1:-1]
    stream = orjson.dumps(head["stream"])
    if stream_first:
        return b'{"stream":%b,"data":%b,%b}' % (stream, data, rest)
    return b'{"data":%b,%b,"stream":%b}' % (data, rest, stream)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Data(msgspec.Struct):
    data: msgspec.Raw


def _data_bytes(frame: bytes) -> bytes:
    """The ``data`` value of a combined-stream frame exactly as sent."""
    return bytes(msgspec.json.decode(frame, type=_Data).data)
