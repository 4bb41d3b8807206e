"""The Redis side of the live outputs' worker (``worker.py``): the coalesced latest state
written at most once per key per interval, retried with backoff while Redis is down.

A mixin: it uses the worker's ``settings``, ``_state``, ``_writing``, ``_redis_state``,
``_redis_streak``, ``_lock``, counters, ``_error``, ``_closing``/``_late`` and ``_intake``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from petrosa_pipelines.live.latest import write_commands
from petrosa_pipelines.live.nats_output import BACKOFF_MAX_S, BACKOFF_MIN_S


class RedisOutput:
    """Latest-state writes of the worker (see the module docstring)."""

    async def _redis_loop(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        client = aioredis.Redis.from_url(
            s.redis_url,  # type: ignore[arg-type]
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        wait = s.redis_interval_s
        try:
            while True:
                await asyncio.sleep(wait)
                final = self._closing and not self._intake
                batch = self._state.take()
                if batch:
                    self._writing = len(batch)
                    wait = await self._write_redis(client, batch)
                    self._writing = 0
                if final and (not self._state.dirty or self._late()):
                    break
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            self._redis_state = "closed"

    async def _write_redis(self, client: Any, batch: dict[str, dict[str, str]]) -> float:
        """Write one batch; the wait before the next (the interval, or a growing backoff)."""
        s = self.settings
        try:
            pipe = client.pipeline(transaction=False)
            write_commands(pipe, batch, time.time_ns() // 1_000_000, s.redis_ttl_s,
                           s.redis_health_ttl_s)  # fmt: skip
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down never stops anything
            self._state.restore(batch)
            with self._lock:
                self._counts["redis_failures"] += 1
            self._error("redis", exc)
            self._redis_state = "down"
            self._redis_streak += 1
            n = self._redis_streak
            return min(BACKOFF_MAX_S, max(s.redis_interval_s, BACKOFF_MIN_S * 2 ** min(n, 6)))
        with self._lock:
            self._counts["redis_writes"] += len(batch)
        self._redis_state, self._redis_streak = "connected", 0
        return s.redis_interval_s
