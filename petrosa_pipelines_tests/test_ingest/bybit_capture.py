"""The recorded Bybit linear capture (fixtures/bybit/PROVENANCE.md) as the live ingest sees it."""

from __future__ import annotations

import heapq
from pathlib import Path

import orjson

BYBIT_WS = Path(__file__).parents[1] / "fixtures" / "bybit" / "ws" / "cryptofeed_2026-08-09"
BYBIT_SYMBOLS = ("BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT")
TOPIC_FILES = ("orderbook", "publicTrade", "kline", "tickers")
#: receipt = message time + this (what the engine is fed with in these tests)
RECEIPT_LAG_MS = 50


def topic_lines(name: str) -> list[bytes]:
    """One recorded topic file's frames, in recorded order."""
    return (BYBIT_WS / f"linear_{name}.jsonl").read_bytes().splitlines()


def bybit_frames() -> list[bytes]:
    """The four topic files merged by message time; each file keeps its own order
    (``heapq.merge`` only takes heads)."""
    lines = [topic_lines(f) for f in TOPIC_FILES]
    return list(heapq.merge(*lines, key=lambda f: orjson.loads(f)["ts"]))


def receipts(frames: list[bytes]) -> list[tuple[int, bytes]]:
    """(receipt ms, frame): message time plus a lag, never going backwards (the engine's
    receipt clock)."""
    out: list[tuple[int, bytes]] = []
    recv = 0
    for f in frames:
        recv = max(recv, orjson.loads(f)["ts"] + RECEIPT_LAG_MS)
        out.append((recv, f))
    return out
