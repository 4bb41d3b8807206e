"""Real NATS (JetStream) and Redis for the live-output tests (``servers.py``), and helpers.

Each test gets its own subject prefix, stream name and Redis key prefix, so tests share the
local servers without seeing each other; streams and keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from petrosa_pipelines.exchanges.base import TradeRecord
from petrosa_pipelines.settings import LiveSettings
from petrosa_pipelines_tests.servers import (  # noqa: F401 - fixtures
    NATS_SERVER_BIN,
    REDIS_SERVER_BIN,
    delete_stream,
    ensure_server_binaries,
    free_port,
    nats_answers,
    nats_url,
    redis_answers,
    redis_prefix,
    redis_url,
)

#: generous: the machine has 2 shared cores and other tests run at the same time
DEADLINE_S = 60.0


def wait_for(cond: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def live_names(nats_url: str, redis_url: str) -> Iterator[dict[str, str]]:  # noqa: F811
    """Unique subject prefix, stream name and Redis key prefix; cleaned up afterwards."""
    u = uuid.uuid4().hex[:12]
    names = {"prefix": f"ptest_{u}", "stream": f"PTEST_LIVE_{u}", "redis": f"petrosa-test:{u}"}
    yield names
    asyncio.run(delete_stream(nats_url, names["stream"]))
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{names['redis']}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def settings(names: dict[str, str], **kw) -> LiveSettings:
    base = dict(
        subject_prefix=names["prefix"],
        stream=names["stream"],
        redis_prefix=names["redis"],
        redis_interval_s=0.05,
        publish_timeout_s=2.0,
    )
    base.update(kw)
    return LiveSettings(**base)


def trade(i: int, symbol: str = "BTCUSDT", t0: int = 1_767_000_000_000) -> TradeRecord:
    return TradeRecord(
        exchange="binance",
        symbol=symbol,
        agg_trade_id=i,
        price=Decimal("87000.10") + i,
        quantity=Decimal("0.002"),
        first_trade_id=10 * i,
        last_trade_id=10 * i + 1,
        trade_time=t0 + i,
        is_buyer_maker=bool(i % 2),
        event_time=t0 + i + 1,
        received_at=t0 + i + 5,
    )


async def stream_messages(url: str, stream: str) -> list[tuple[str, bytes, dict]]:
    """(subject, payload, headers) of every message in ``stream``, in order."""
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await js.get_msg(stream, seq)
            out.append((m.subject, m.data, dict(m.headers or {})))
        return out
    finally:
        await nc.close()


async def stream_info(url: str, stream: str):
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


class Restartable:
    """A server of ours on a fixed port that a test stops and starts (same store)."""

    def __init__(self, cmd: Callable[[int, str], list[str]], answers, url: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="petrosa-live-")
        self.cmd, self.answers = cmd, answers
        self.url = url.format(port=self.port)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = self.cmd(self.port, self.dir)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.answers(self.url), f"{cmd[0]} on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_nats() -> Iterator[Restartable]:
    """A JetStream server of the test's own, not started yet (``.start()``/``.stop()``)."""
    ensure_server_binaries("nats-server")  # installs with apt-get in CI, else fails clearly
    srv = Restartable(
        lambda port, d: [NATS_SERVER_BIN, "-js", "-sd", d, "-a", "127.0.0.1", "-p", str(port)],
        nats_answers,
        "nats://127.0.0.1:{port}",
    )
    yield srv
    srv.cleanup()


@pytest.fixture
def own_redis() -> Iterator[Restartable]:
    """A Redis server of the test's own, not started yet."""
    ensure_server_binaries("redis-server")
    srv = Restartable(
        lambda port, d: [
            REDIS_SERVER_BIN,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--dir",
            d,
        ],  # fmt: skip
        redis_answers,
        "redis://127.0.0.1:{port}/0",
    )
    yield srv
    srv.cleanup()


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a stuck server)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        srv.close()


def closed_port_url(scheme: str = "nats") -> str:
    """A URL nothing listens on (the port was free a moment ago)."""
    return f"{scheme}://127.0.0.1:{free_port()}"
