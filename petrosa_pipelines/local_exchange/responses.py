"""HTTP answers and websocket sends shared by every venue's wire module."""

from __future__ import annotations

import contextlib
import email.utils
import http
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response


def response(status: int, body: bytes, ctype: str, extra: dict[str, str]) -> Response:
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


def json_response(status: int, body: Any, extra: dict[str, str]) -> Response:
    return response(status, orjson.dumps(body), "application/json", extra)


async def send_frame(conn: ServerConnection, payload: bytes) -> None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        await conn.send(payload)  # binary frame: a hostile client-side case
        return
    await conn.send(payload, text=True)


async def send_text(conn: ServerConnection, payload: bytes) -> None:
    """Send a control reply; a connection closed meanwhile is not an error."""
    with contextlib.suppress(ConnectionClosed):
        await conn.send(payload, text=True)
