"""The live outputs' worker is a process of its own: what the ingest sees when it stops, hangs,
dies or is closed.

The ingest side (``offer*``) must never wait on the worker, and every item offered must end up
published, or counted: refused by the bounded intake (``intake_dropped``), dropped by the NATS
buffer, or lost with a worker that died (``stats()["worker"]``). A stopped worker (SIGSTOP)
stands for one that hangs or cannot keep up: it reads nothing, so its pipe fills.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import orjson
import pytest

from petrosa_pipelines.exchanges import get_adapter
from petrosa_pipelines.live import LiveOutputs
from petrosa_pipelines.live import publisher as publisher_mod
from petrosa_pipelines.live.wire import PIPE_BYTES
from petrosa_pipelines.settings import LiveSettings
from petrosa_pipelines_tests.test_live.conftest import (
    DEADLINE_S,
    closed_port_url,
    settings,
    stream_messages,
    trade,
    wait_for,
)

VENUE = "binance-usdm"


def started(s: LiveSettings, adapter=None) -> LiveOutputs:
    out = LiveOutputs(s, venue=VENUE, exchange="binance", adapter=adapter)
    out.start()
    wait_for(lambda: out.stats()["worker"]["state"] == "running", "the worker's first report")
    return out


def reaped(pid: int) -> bool:
    """``pid`` is no child of ours any more (reaped: no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def agg_frame(i: int, t0: int = 1_767_000_000_000) -> bytes:
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": t0 + i, "a": i, "s": "BTCUSDT", "p": f"87000.{i % 100:02d}",
        "q": "0.013", "f": 3 * i, "l": 3 * i + 2, "T": t0 + i, "m": bool(i % 2)}})  # fmt: skip


def in_thread(fn, what: str) -> None:
    """Run ``fn`` on a thread; a call that blocks never returns and fails the test here."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    assert not t.is_alive(), f"{what} blocked"
    if err:
        raise err[0]


def test_a_killed_worker_is_replaced_offers_go_on_and_its_loss_is_counted(nats_url, live_names):
    s = settings(live_names, nats_url=nats_url, buffer_messages=100_000)
    out = started(s)
    try:
        for i in range(100):
            out.offer(trade(i))
        wait_for(out.idle, "the first trades published")
        first = out.stats()["worker"]["pid"]
        os.kill(first, signal.SIGSTOP)  # mid-stream: what it is sent now it never reads
        for i in range(100, 5100):
            out.offer(trade(i))
        wait_for(lambda: out.stats()["intake"] == 5000, "the trades handed to the pipe")
        os.kill(first, signal.SIGKILL)

        def more() -> None:  # while the worker dies and its death is not seen yet
            for i in range(5100, 8100):
                out.offer(trade(i))

        in_thread(more, "offering while the worker dies")
        wait_for(lambda: out.stats()["worker"]["restarts"] == 1, "the death seen")
        for i in range(8100, 9100):  # while it is being replaced
            out.offer(trade(i))
        wait_for(lambda: out.stats()["worker"]["state"] == "running", "a new worker")
        for i in range(9100, 9200):  # once it runs
            out.offer(trade(i))
        wait_for(out.idle, "the new worker caught up")
        stats = out.stats()
    finally:
        out.close()
    worker = stats["worker"]
    assert worker["pid"] not in (None, first) and worker["last_exit"] == -signal.SIGKILL
    assert reaped(first)
    msgs = asyncio.run(stream_messages(nats_url, s.stream))
    ids = [orjson.loads(p)["agg_trade_id"] for _, p, _ in msgs]
    assert len(ids) == len(set(ids)) == stats["nats"]["published"]
    # before the stop, and once the new worker runs: everything published (what was offered
    # while the death was being handled may have gone to the dying pipe: counted below)
    assert set(range(100)) | set(range(9100, 9200)) <= set(ids)
    # what the dead worker never read, or was written to it as it died, is counted exactly
    assert worker["lost_items"] >= 1 and not set(range(100, 5100)) <= set(ids)
    assert worker["lost_messages"] == 0 and stats["intake_dropped"] == 0
    assert stats["offered"] == 9200 == len(ids) + worker["lost_items"]


def test_a_saturating_offer_loop_never_waits_for_a_stopped_worker(live_names):
    """The worker stops reading: its pipe fills, then the intake; offers keep returning and
    what they refuse is counted. Frames are the ingest's raw bytes, parsed by the worker."""
    s = settings(live_names, nats_url=closed_port_url(), buffer_messages=2000)
    out = started(s, adapter=get_adapter(VENUE))
    n = 100_000
    frames = [agg_frame(i) for i in range(n)]
    pid = out.stats()["worker"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:

        def saturate() -> None:
            for i, f in enumerate(frames):
                out.offer_frame(f, i)

        in_thread(saturate, "the offer loop")
        stats = out.stats()
        assert stats["offered"] == n and stats["intake_dropped"] > 0
        # the worker took nothing: the rest waits in the intake and the pipe, bounded by both
        assert stats["intake"] + stats["intake_dropped"] == n
        assert stats["intake"] <= 2000 + PIPE_BYTES // len(frames[0]) + publisher_mod.MAX_BATCH
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: out.stats()["intake"] == 0, "the worker parsed what waited")
    out.close(timeout=0.5)
    final = out.stats()
    published, dropped = final["nats"]["published"], final["nats"]["dropped"]
    assert published == 0 and final["parse_failures"] == 0
    assert final["intake_dropped"] + dropped + final["worker"]["lost_items"] == n
    assert final["worker"]["lost_items"] == 0 and final["worker"]["state"] == "closed"
    assert reaped(pid)


def test_close_is_bounded_when_the_worker_hangs(live_names, monkeypatch):
    monkeypatch.setattr(publisher_mod, "CLOSE_GRACE_S", 1.0)
    out = started(settings(live_names, nats_url=closed_port_url(), buffer_messages=10_000))
    pid = out.stats()["worker"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # hangs: it never answers the close
    for i in range(1000):
        out.offer(trade(i))
    wait_for(lambda: out.stats()["intake"] == 1000, "the trades handed to the pipe")
    done = threading.Event()
    closer = threading.Thread(target=lambda: (out.close(timeout=0.5), done.set()), daemon=True)
    closer.start()
    # bounded: the close timeout, the grace, the kill and the reaping; generous for a busy machine
    assert done.wait(0.5 + 1.0 + DEADLINE_S), "close() did not return"
    stats = out.stats()
    worker = stats["worker"]
    assert worker["state"] == "closed" and worker["last_exit"] == -signal.SIGKILL
    assert reaped(pid)
    assert worker["lost_items"] + stats["intake_dropped"] == 1000 and worker["restarts"] == 0


def test_a_silent_worker_is_killed_and_replaced(nats_url, live_names, monkeypatch):
    monkeypatch.setattr(publisher_mod, "WATCHDOG_S", 1.0)
    s = settings(live_names, nats_url=nats_url)
    out = started(s)
    try:
        first = out.stats()["worker"]["pid"]
        os.kill(first, signal.SIGSTOP)
        wait_for(lambda: out.stats()["worker"]["restarts"] == 1, "the hung worker replaced")
        wait_for(lambda: out.stats()["worker"]["state"] == "running", "a new worker")
        out.offer(trade(1))
        wait_for(out.idle, "published by the new worker")
        assert out.stats()["nats"]["published"] == 1
    finally:
        out.close()
    assert reaped(first)


def test_clean_close_secrets_kept_from_the_worker_process_and_the_logs(
    live_names, monkeypatch, capfd, caplog
):
    secret = "hunter2secret"
    url = closed_port_url().replace("nats://", f"nats://petrosa:{secret}@")
    monkeypatch.setenv("PETROSA_NATS_URL", url)
    monkeypatch.setenv("PETROSA_LIVE_SUBJECT_PREFIX", live_names["prefix"])
    monkeypatch.setenv("PETROSA_LIVE_STREAM", live_names["stream"])
    out = LiveOutputs.from_env(get_adapter(VENUE))
    assert out is not None
    wait_for(lambda: out.stats()["nats"]["errors"] >= 1, "a failed connection")
    pid = out.stats()["worker"]["pid"]
    proc = Path(f"/proc/{pid}")
    argv = (proc / "cmdline").read_bytes().split(b"\0")
    assert b"petrosa_pipelines.live.worker" in argv and secret.encode() not in b" ".join(argv)
    assert secret.encode() not in (proc / "environ").read_bytes()
    out.offer_frame(agg_frame(1), 1)
    out.close(timeout=0.2)
    stats = out.stats()
    assert stats["worker"]["state"] == "closed" and stats["worker"]["last_exit"] == 0
    # dropped at close by the buffer, or unparsed at a deadline already past: counted either way
    assert stats["nats"]["dropped"] + stats["intake_dropped"] == 1
    assert stats["nats"]["state"] == "closed"
    assert secret not in str(stats) and stats["nats"]["last_error"]
    assert reaped(pid)
    err = capfd.readouterr().err  # the worker writes to the same stderr
    assert "Traceback" not in err and secret not in err
    assert secret not in caplog.text


def test_off_outputs_start_no_process_and_forget_offers():
    out = LiveOutputs(LiveSettings(), venue=VENUE)
    out.start()
    out.offer(trade(1))
    out.offer_frame(agg_frame(1), 1)
    assert out.idle()
    stats = out.stats()
    assert stats["offered"] == 2 and stats["intake"] == 0 and stats["intake_dropped"] == 0
    assert stats["worker"]["state"] == "off" and stats["worker"]["pid"] is None
    out.close()
    assert out.stats()["worker"]["state"] == "off"


@pytest.mark.parametrize("kind", ["items", "close"])
def test_wire_messages_survive_any_split(kind):
    from petrosa_pipelines.live.wire import Decoder, encode

    data = [(agg_frame(i), i) for i in range(50)] if kind == "items" else 12.5
    blob = encode(kind, data) + encode("close", 1.0)
    for step in (1, 7, 1000, len(blob)):
        d, got = Decoder(), []
        for at in range(0, len(blob), step):
            got += d.feed(blob[at : at + step])
        assert got == [(kind, data), ("close", 1.0)]


def test_depth_diff_streams_are_parsed_once_and_still_counted():
    """The worker parses a depth-diff stream once, then only counts its frames (nothing of
    them is published or kept), while every other frame is parsed as before."""
    from petrosa_pipelines.live.worker import Worker

    ws = Path(__file__).parents[1] / "fixtures" / "binance" / "ws" / "cryptofeed_2021-04-17"
    depth = (ws / "depthUpdate.jsonl").read_bytes().splitlines()[:40]
    trades = (ws / "aggTrade.jsonl").read_bytes().splitlines()[:40]
    streams = {orjson.loads(f)["stream"] for f in depth}

    class Counting(type(get_adapter(VENUE))):
        parsed: list[bytes] = []

        def parse_frame(self, raw, received_at=None):
            self.parsed.append(raw)
            return super().parse_frame(raw, received_at)

    parser = Counting()
    s = LiveSettings(nats_url="nats://127.0.0.1:1", subject_prefix="ptest", stream="PTEST")
    w = Worker(s, VENUE, "binance", parser)
    w.take([(f, i) for i, f in enumerate(depth + trades + depth)])
    assert w.drain(10_000) == 120
    report = w.report()
    assert report["unpublished"] == {"DepthUpdateRecord": 80}  # every depth frame, counted
    assert report["parse_failures"] == 0
    assert sum(1 for f in parser.parsed if f in set(depth)) == len(streams)  # once a stream
    assert [f for f in parser.parsed if f not in set(depth)] == trades
    assert report["nats"]["pending"] == 40  # every trade buffered for NATS
