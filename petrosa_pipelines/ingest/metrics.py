"""An optional Prometheus endpoint (``GET /metrics``) on the stdlib HTTP server, in a thread.

No client library: the text format is small and the ingest already has every number in its
heartbeat snapshot, which is what is served (so a scrape never touches the event loop's state).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from petrosa_pipelines.ingest.stats import prometheus_text


def serve_metrics(
    port: int, snapshot: Callable[[], dict[str, Any] | None], host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Start serving; ``server.server_address[1]`` is the bound port (``port=0``: any free)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            snap = snapshot()
            body = (prometheus_text(snap) if snap else "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ingest-metrics", daemon=True).start()
    return server
