"""Venue-neutral HTTP below the status line: one GET whose every failure is a typed
``TransportError`` and whose whole answer must arrive within a total deadline.

Retries, rate limits and what a status means are ``transport.py``'s, following each venue's
declared ``RateModel`` (``ratelimit.py``).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import zlib
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from petrosa_pipelines.exchanges.base import ExchangeError


class TransportError(ExchangeError):
    """A request that failed below HTTP: connect, timeout, truncated body, undecodable
    content-encoding, or the request's total deadline. Transient: worth a retry.

    ``kind`` is one of ``connection``, ``timeout``, ``truncated``, ``decode``, ``deadline``.
    """

    def __init__(self, message: str, *, kind: str):
        self.kind = kind
        super().__init__(message)


# -- transport: typed failures and a total deadline per request -----------------------------------

_ACTIVE = threading.local()


class _Deadline:
    """Shuts the request's socket down when the deadline passes.

    Per-read timeouts never fire against a server that drips a byte every few hundred ms (the
    header phase included), so a watchdog timer ends the request: ``shutdown`` wakes the
    blocked ``recv`` in the requesting thread, which then fails and is reported as a deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _ACTIVE.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # a connection back in the pool must never be shut down late
            self._done = True
        self._timer.cancel()
        _ACTIVE.deadline = None

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.expired:
                _shutdown(conn)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._conn is not None:
                _shutdown(self._conn)


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _attach(conn: HTTPConnection) -> None:
    deadline = getattr(_ACTIVE, "deadline", None)
    if deadline is not None:
        deadline.attach(conn)


class _DeadlineMixin:
    """Hands each (re)used connection to the active request's deadline timer."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections obey the per-request deadline of ``fetch``."""

    _POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._POOLS)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(self._POOLS)
        return manager


def _with_deadline_adapters(session: requests.Session) -> None:
    """Mount ``DeadlineAdapter`` for http(s) unless the session carries custom adapters."""
    for prefix in ("http://", "https://"):
        current = session.adapters.get(prefix)
        if current is None or type(current) is HTTPAdapter:
            session.mount(prefix, DeadlineAdapter())


def fetch(
    session: requests.Session,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    timeout: float,
    deadline: float,
) -> requests.Response:
    """GET ``url`` and read the whole body within ``deadline`` seconds (``timeout`` per read).

    Every failure below HTTP becomes a ``TransportError`` with its ``kind``: a body cut short
    (``ChunkedEncodingError``, ``IncompleteRead``), a content-encoding that does not decode
    (corrupt gzip/deflate), timeouts, refused or reset connections, and the deadline. Callers
    retry those within their budget; HTTP statuses are theirs to judge.
    """
    _with_deadline_adapters(session)
    what = f"GET {url}"
    late = f"{what}: no complete answer within the {deadline:g}s deadline"
    guard = _Deadline(deadline)
    resp: requests.Response | None = None
    try:
        with guard:
            resp = session.get(url, params=params, timeout=min(timeout, deadline), stream=True)
            _ = resp.content  # the whole body, decoded, while the deadline watches
    except (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
        zlib.error,
    ) as exc:
        if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
            raise
        _drop_idle_connections(session, url)
        if guard.expired:
            raise TransportError(late, kind="deadline") from None
        raise TransportError(f"{what}: {_describe(exc)}", kind=_kind(exc)) from None
    finally:
        if resp is not None:  # after the guard: a pooled connection is never shut down late
            resp.close()
    if guard.expired:  # the socket may have been shut down before EOF: never trust the body
        raise TransportError(late, kind="deadline")
    return resp


def _drop_idle_connections(session: requests.Session, url: str) -> None:
    """Close the pooled connections of ``url``'s adapter after a failed answer.

    A body read to its ``Content-Length`` puts the connection back in the pool before the body
    turns out undecodable, and the server may be closing it: the retry then took that socket and
    failed again with a reset (seen 3 times in 200 under load). The retry must start afresh."""
    with contextlib.suppress(Exception):
        session.get_adapter(url).poolmanager.clear()


def _kind(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ContentDecodingError | zlib.error):
        return "decode"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | http.client.IncompleteRead):
        return "truncated"
    if isinstance(exc, requests.Timeout | TimeoutError | urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, requests.ConnectionError) and isinstance(
        exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError
    ):
        return "timeout"
    return "connection"


def _describe(exc: BaseException) -> str:
    kind = _kind(exc)
    text = {
        "decode": "the body's content-encoding does not decode (corrupt gzip/deflate)",
        "truncated": "the body ended before it was complete",
        "timeout": "timed out",
    }.get(kind, "connection failed")
    return f"{text} ({type(exc).__name__}: {str(exc)[:200]})"
