"""Replay of recorded websocket messages over the local exchange's real wire protocol.

Recordings are JSON-lines files, one websocket frame per line, either combined-stream frames
(``{"stream":...,"data":...}``, like ``petrosa_pipelines_tests/fixtures/binance/ws/*/*.jsonl``)
or bare payloads. A connection receives the frames of the streams it subscribed to, paced by the
recorded event times divided by ``speed``. Frames are sent byte-identical to the recording when
the stream name matches, so replays exercise the same parser paths as production.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

_EVENT_STREAM = {
    "aggtrade": "aggtrade",
    "trade": "trade",
    "depthupdate": "depth",
    "markpriceupdate": "markprice",
    "bookticker": "bookticker",
    "forceorder": "forceorder",
}


def stream_key(stream: str) -> str:
    """Normalise a stream name so speed variants match (``btcusdt@depth@100ms`` -> ``..@depth``).

    Keeps the kline interval (``btcusdt@kline_1m``) since different intervals are different data.
    """
    name = stream.lower()
    name = re.sub(r"@(\d+ms|1s|3s)$", "", name)
    return name


@dataclass(frozen=True)
class RecordedFrame:
    """One recorded frame: when it happened, which stream, and its exact bytes."""

    event_ms: int
    stream: str
    key: str
    combined: bytes  # the frame as a combined-stream message
    payload: bytes  # the bare ``data`` object


def _frame(line: bytes) -> RecordedFrame | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if "stream" in doc and "data" in doc and isinstance(doc["data"], dict):
        stream, data = str(doc["stream"]), doc["data"]
        prefix = b'{"stream":"' + stream.encode() + b'","data":'
        payload = line[len(prefix) : -1] if line.startswith(prefix) else orjson.dumps(data)
        combined = line
    else:
        data = doc
        event = str(data.get("e", "")).lower()
        kind = _EVENT_STREAM.get(event)
        symbol = str(data.get("s", "")).lower()
        if kind is None or not symbol:
            return None
        if event == "kline":
            kind = f"kline_{data.get('k', {}).get('i', '1m')}"
        stream = f"{symbol}@{kind}"
        payload = line
        combined = b'{"stream":"' + stream.encode() + b'","data":' + line + b"}"
    if data.get("e") == "kline" and "kline" not in stream:
        return None
    event_ms = data.get("E") or data.get("T") or 0
    if not isinstance(event_ms, int):
        return None
    return RecordedFrame(event_ms, stream, stream_key(stream), combined, payload)


class Recording:
    """Frames of one or more jsonl files, ordered by event time (stable within a file)."""

    def __init__(self, frames: Iterable[RecordedFrame]):
        self.frames = sorted(frames, key=lambda f: f.event_ms)
        self.start_ms = self.frames[0].event_ms if self.frames else 0

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Load a ``.jsonl`` file or every ``*.jsonl`` in a directory (recursively)."""
        p = Path(path)
        files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(f"no .jsonl recordings under {p}")
        frames = []
        for f in files:
            for line in f.read_bytes().splitlines():
                line = line.strip()
                if line:
                    fr = _frame(line)
                    if fr is not None:
                        frames.append(fr)
        return cls(frames)

    def streams(self) -> list[str]:
        return sorted({f.stream for f in self.frames})

    def __len__(self) -> int:
        return len(self.frames)

    def frame_bytes(self, frame: RecordedFrame, subscribed: str, combined: bool) -> bytes:
        """The frame as sent to a client that subscribed under the name ``subscribed``."""
        if not combined:
            return frame.payload
        if subscribed == frame.stream:
            return frame.combined
        return b'{"stream":"' + subscribed.encode() + b'","data":' + frame.payload + b"}"
