"""Binance frames wrapped in the Petrosa socket-client's NATS envelope, for the NATS source tests.

The envelope is the socket-client's ``WebSocketMessage.to_json`` shape
(``socket_client/models/message.py`` of https://github.com/PetroSa2/petrosa-socket-client):
``{"stream", "data", "timestamp" (ISO-8601 with Z), "message_id", "source", "version"}``,
serialised by Python's ``json.dumps`` (spaces after separators), plus a trace-context key as
its OpenTelemetry propagation adds.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(stream: str, data: dict, sent_ms: int | None = None) -> bytes:
    """The socket-client's message for one raw Binance payload."""
    sent = dt.datetime.fromtimestamp((sent_ms or now_ms()) / 1000, dt.UTC)
    return json.dumps(
        {
            "stream": stream,
            "data": data,
            "timestamp": sent.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "message_id": uuid.uuid4().hex,
            "source": "binance-websocket",
            "version": "1.0",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
    ).encode()


def agg_trade(symbol: str, agg_id: int, t: int) -> bytes:
    """An ``@aggTrade`` payload (trade time ``t``, pushed 20 ms later) in its envelope."""
    data = {
        "e": "aggTrade", "E": t + 20, "a": agg_id, "s": symbol, "p": "100.5", "q": "0.01",
        "f": agg_id * 2, "l": agg_id * 2 + 1, "T": t, "m": False,
    }  # fmt: skip
    return envelope(f"{symbol.lower()}@aggTrade", data, t + 25)


def mark_price(symbol: str, t: int) -> bytes:
    """A ``@markPrice@1s`` payload in its envelope."""
    data = {
        "e": "markPriceUpdate", "E": t, "s": symbol, "p": "100.0", "i": "100.1", "P": "100.2",
        "r": "0.0001", "T": t - t % 28_800_000 + 28_800_000,
    }  # fmt: skip
    return envelope(f"{symbol.lower()}@markPrice@1s", data, t + 5)
