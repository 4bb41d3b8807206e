"""NATS JetStream as an ingest source: acknowledged only after durable landing, so a kill -9
and a restart land every published message exactly once (issue 14, item 1).

The kill test runs the engine as a child process (``nats_ingest_child``) so it dies the hard
way (no flush, the writer's queue lost, acknowledgements in flight lost), as the websocket
chaos tests do (``test_chaos_kill``). Each test has its own JetStream stream and subject on the
shared server (``servers.jetstream_stream``), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from petrosa_pipelines.ingest import IngestEngine
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines_tests.servers import jetstream_stream as _jetstream_stream  # noqa: F401
from petrosa_pipelines_tests.servers import nats_subject as _nats_subject  # noqa: F401
from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401
from petrosa_pipelines_tests.test_ingest.nats_frames import agg_trade, now_ms
from petrosa_pipelines_tests.test_ingest.nats_ingest_child import GROUP, config
from petrosa_pipelines_tests.test_ingest.test_nats_source import landed_payloads, wait_for

pytestmark = pytest.mark.slow  # child processes killed with SIGKILL, a real NATS server

SYMBOL = "BTCUSDT"
DEADLINE_S = 120.0


async def publish(url: str, subject: str, stream: str, frames: list[bytes]) -> None:
    """Publish on the subject (core publishes, captured by the stream); wait until stored."""
    nc = await nats.connect(url)
    try:
        for f in frames:
            await nc.publish(subject, f)
        await nc.flush()
        js = nc.jetstream()
        deadline = time.monotonic() + DEADLINE_S
        while (await js.stream_info(stream)).state.messages < len(frames):
            if time.monotonic() > deadline:
                raise TimeoutError("the stream did not store every message")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def consumer_state(url: str, stream: str, durable: str) -> tuple[int, int, int]:
    """(ack floor stream sequence, delivered but unacknowledged, not yet delivered)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return info.ack_floor.stream_seq, info.num_ack_pending, info.num_pending
    finally:
        await nc.close()


def state(url: str, stream: str, durable: str = f"petrosa-{GROUP}") -> tuple[int, int, int]:
    return asyncio.run(consumer_state(url, stream, durable))


def trade_ids(payloads: list[bytes]) -> collections.Counter:
    return collections.Counter(json.loads(p)["data"]["a"] for p in payloads)


def _wait(cond: Callable[[], object], what: str, limit_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {limit_s} s")
        time.sleep(0.02)


class Child:
    """One ingest process on the JetStream stream."""

    def __init__(self, root: Path, url: str, subject: str, stream: str) -> None:
        cmd = [sys.executable, "-m", "petrosa_pipelines_tests.test_ingest.nats_ingest_child",
               str(root), subject, stream, SYMBOL]  # fmt: skip
        # the URL is the source's; publishing (on by default where a NATS URL is set) stays
        # off, or the child's landed trades go into the shared server's PETROSA_LIVE stream
        env = {**os.environ, "PETROSA_NATS_URL": url, "PETROSA_LIVE_PUBLISH": "false"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"started\n":
            self.proc.kill()
            raise AssertionError(f"child did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE_S)
        finally:
            self.proc.stderr.close()
            self.proc.stdout.close()


def test_kill_9_mid_stream_and_restart_lands_every_message_exactly_once(
    tmp_path, nats_url, jetstream_stream
):
    stream, subject = jetstream_stream
    n = 30_000
    t0 = now_ms() - 120_000
    frames = [agg_trade(SYMBOL, i, t0 + i * 3) for i in range(1, n + 1)]
    asyncio.run(publish(nats_url, subject, stream, frames))

    kills = []
    for _ in range(2):
        child = Child(tmp_path, nats_url, subject, stream)
        before = kills[-1][0] if kills else 0
        # kill once this process acknowledged something (so landed it durably), long before
        # the end: the kill lands between a batch's landing and its acknowledgement or in a
        # batch not yet durable, both of which must come again and be dropped or landed once
        _wait(lambda b=before: state(nats_url, stream)[0] > b + 1000, "1000 more acknowledged")
        child.kill()
        floor, pending, todo = state(nats_url, stream)
        kills.append((floor, pending, todo))
        assert floor < n, "the child finished before it was killed: raise n"

    child = Child(tmp_path, nats_url, subject, stream)
    _wait(lambda: state(nats_url, stream) == (n, 0, 0), "every message acknowledged")
    assert child.stop() == 0

    landed = landed_payloads(tmp_path, GROUP)
    ids = trade_ids(landed)
    assert sorted(ids) == list(range(1, n + 1)), "a published message did not land"
    assert [i for i, c in ids.items() if c > 1] == [], "a message landed twice"
    assert sorted(landed) == sorted(frames)  # the envelope bytes as published
    store = LandingStore(tmp_path)
    assert store.gaps("binance", t0 - 60_000, t0 + 3 * n + 60_000, "trades") == []
    assert store.dead_letters("binance", _day(t0)) == []
    print(f"kills at (ack floor, unacknowledged, undelivered): {kills}")


def _day(ms: int):
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def test_messages_landed_but_not_acknowledged_come_again_and_are_dropped(
    tmp_path, nats_url, jetstream_stream, monkeypatch
):
    """The window a kill can hit between durable landing and the acknowledgement, made
    deterministic: the first engine never acknowledges; the second is redelivered all of it,
    reads back what landed, and drops every message as a duplicate."""
    import dataclasses

    stream, subject = jetstream_stream
    n = 500
    t0 = now_ms() - 60_000
    frames = [agg_trade(SYMBOL, i, t0 + i * 10) for i in range(1, n + 1)]
    asyncio.run(publish(nats_url, subject, stream, frames))
    monkeypatch.setenv("PETROSA_NATS_URL", nats_url)
    monkeypatch.setenv("PETROSA_LIVE_PUBLISH", "false")  # the source's URL, no publishing
    # every message in flight at once: the first engine acknowledges none of them
    cfg = dataclasses.replace(
        config(str(tmp_path), subject, stream, SYMBOL), nats_max_ack_pending=2 * n
    )

    async def run(engine: IngestEngine, done: Callable[[], bool]) -> None:
        task = asyncio.create_task(engine.run())
        try:
            await wait_for(done, "the engine's part", DEADLINE_S)
        finally:
            engine.stop()
            await asyncio.wait_for(task, 60)

    first = IngestEngine(cfg)

    async def never_ack() -> None:
        return None

    first._nats._ack_durable = never_ack
    asyncio.run(run(first, lambda: first.writer.durable_mark >= n))
    assert state(nats_url, stream) == (0, n, 0)
    assert sorted(landed_payloads(tmp_path, GROUP)) == sorted(frames)

    second = IngestEngine(cfg)
    asyncio.run(run(second, lambda: second._nats.stats.acked >= n))
    assert state(nats_url, stream) == (n, 0, 0)
    st = second.stats.streams["btcusdt@aggTrade"]
    assert second._nats.stats.seeded_lines == n
    assert (st.received, st.duplicates, st.processed) == (n, n, 0)
    assert sorted(landed_payloads(tmp_path, GROUP)) == sorted(frames)
    assert second.stats.gaps_recorded == 0


def test_the_ingest_job_runs_a_nats_group_and_reports_its_source(
    tmp_path, nats_url, jetstream_stream, dagster_instance, monkeypatch
):
    """The Dagster job path the supervisor launches: run config names the subject and stream,
    the URL comes from ``PETROSA_NATS_URL`` inside the run, the metadata says source nats."""
    from petrosa_pipelines.ingest.job import GROUP_TAG, ingest_job, run_config_for

    stream, subject = jetstream_stream
    n = 300
    t0 = now_ms() - 60_000
    frames = [agg_trade(SYMBOL, i, t0 + i * 10) for i in range(1, n + 1)]
    asyncio.run(publish(nats_url, subject, stream, frames))
    monkeypatch.setenv("PETROSA_NATS_URL", nats_url)
    monkeypatch.setenv("PETROSA_LIVE_PUBLISH", "false")  # the source's URL, no publishing
    rc = run_config_for(
        "jobnats", [SYMBOL], ["trades"], landing_path=str(tmp_path), source="nats",
        nats_subject=subject, nats_stream=stream, max_messages=n, max_runtime_s=120.0,
        heartbeat_interval_s=0.3,
    )  # fmt: skip
    result = ingest_job.execute_in_process(
        run_config=rc, instance=dagster_instance, tags={GROUP_TAG: "jobnats"}
    )
    assert result.success
    (out,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = out.event_specific_data.metadata
    assert md["source"].value == "nats" and md["messages_processed"].value == n
    nats_md = md["nats"].value
    assert nats_md["subject"] == subject and nats_md["jetstream_stream"] == stream
    assert nats_md["acked"] == n and nats_url.removeprefix("nats://") == nats_md["hosts"]
    assert sorted(landed_payloads(tmp_path, "jobnats")) == sorted(frames)
    assert state(nats_url, stream, "petrosa-jobnats") == (n, 0, 0)
