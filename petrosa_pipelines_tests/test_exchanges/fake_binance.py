"""A tiny stdlib HTTP server that plays scripted responses, plus a fake clock.

Used for exact 429/418/Retry-After/5xx/backoff sequences that a realistic simulator would make
awkward to provoke, and for Vision archive files. Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class FakeClock:
    """Seconds clock whose ``sleep`` advances time instead of waiting; records every sleep."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as-is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds to stall before answering (timeouts)


@dataclass
class Request:
    path: str
    query: dict[str, str]


Handler = Callable[[Request], Reply]


class FakeServer:
    """``routes`` maps a path to a handler, or to a list of replies played in order (the last
    one repeats). Every request is appended to ``requests``."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler | list[Reply]] = {}
        self.requests: list[Request] = []
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                parts = urlsplit(self.path)
                req = Request(parts.path, dict(parse_qsl(parts.query)))
                server.requests.append(req)
                reply = server._reply(req)
                if reply.delay:
                    threading.Event().wait(reply.delay)
                body = reply.body
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def _reply(self, req: Request) -> Reply:
        route = self.routes.get(req.path)
        if route is None:
            return Reply(404, {"code": -1, "msg": "not found"})
        if callable(route):
            return route(req)
        return route.pop(0) if len(route) > 1 else route[0]

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
