"""The local exchange's "now": wall clock (optionally faster) or a test-controlled clock."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    """Wall-clock time, optionally running ``speed`` times faster from the moment of creation."""

    def __init__(self, speed: float = 1.0):
        self.speed = speed
        self._wall0 = time.time()

    def now_ms(self) -> int:
        now = time.time()
        return int((self._wall0 + (now - self._wall0) * self.speed) * 1000)


class SimulatedClock:
    """A test-controlled "now": frozen at ``now_ms`` (``speed=0``) or running ``speed``x from it.

    REST never returns data after ``now``; archives exist only for days before now's UTC day;
    live websocket streams emit what happens between successive readings of the clock.
    """

    def __init__(self, now_ms: int | str | dt.datetime, speed: float = 0.0):
        self._lock = threading.Lock()
        self._base = _to_ms(now_ms)
        self._mono0 = time.monotonic()
        self.speed = speed

    def now_ms(self) -> int:
        with self._lock:
            return self._base + int((time.monotonic() - self._mono0) * 1000 * self.speed)

    def set(self, now_ms: int | str | dt.datetime) -> None:
        with self._lock:
            self._base, self._mono0 = _to_ms(now_ms), time.monotonic()

    def advance(self, ms: int) -> None:
        self.set(self.now_ms() + ms)

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on without a jump (``0`` freezes the clock)."""
        with self._lock:
            now = self._base + int((time.monotonic() - self._mono0) * 1000 * self.speed)
            self._base, self._mono0, self.speed = now, time.monotonic(), speed


def _to_ms(value: int | str | dt.datetime) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)
