"""HTTP answers and websocket sends shared by every venue's wire module."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
from collections.abc import Sequence
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


def is_text(payload: bytes) -> bool:
    """Whether ``payload`` goes out as a text frame: valid UTF-8 (garbage that is not goes out
    binary, a hostile client-side case)."""
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


async def send_frame(conn: ServerConnection, payload: bytes) -> None:
    if not is_text(payload):
        await conn.send(payload)  # binary frame: a hostile client-side case
        return
    await conn.send(payload, text=True)


async def send_frames(conn: ServerConnection, payloads: Sequence[bytes]) -> None:
    """Send ``payloads`` as the frames :func:`send_frame` sends one by one, in order, with one
    socket write (see :class:`CoalescingConnection`) instead of one per frame: in the demo the
    exchange shares a process with the ingest, and every write let the other thread take the
    GIL, so per-frame sends were most of the exchange's time. Raises ``ConnectionClosed``
    like ``conn.send``."""
    if not payloads:
        return
    while conn.send_in_progress is not None:  # as conn.send: a fragmented message goes first
        await asyncio.shield(conn.send_in_progress)
    async with conn.send_context():
        protocol = conn.protocol
        for payload in payloads:
            if is_text(payload):
                protocol.send_text(payload)
            else:
                protocol.send_binary(payload)


async def send_text(conn: ServerConnection, payload: bytes) -> None:
    """Send a control reply; a connection closed meanwhile is not an error."""
    with contextlib.suppress(ConnectionClosed):
        await conn.send(payload, text=True)


class CoalescingConnection(ServerConnection):
    """A server connection that hands what is pending to the socket in one write.

    websockets writes every frame with its own ``transport.write`` (a ``send`` syscall each
    while the socket keeps up); joining the pending frames first sends the same bytes in the
    same order with one syscall per batch (:func:`send_frames`)."""

    def send_data(self) -> None:
        run: list[bytes] = []
        for data in self.protocol.data_to_send():
            if data:
                run.append(data)
                continue
            # SEND_EOF (empty): what is pending goes first, then the half-close, as upstream
            if run:
                self.transport.write(b"".join(run))
                run = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):  # upstream: write_eof may raise anything
                    self.transport.write_eof()
            else:
                self.transport.close()
        if len(run) == 1:
            self.transport.write(run[0])
        elif run:
            self.transport.write(b"".join(run))
