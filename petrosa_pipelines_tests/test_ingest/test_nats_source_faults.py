"""Faults of the NATS ingest source through a real server (issue 14, items 1, 2 and 5).

* a malformed envelope is exactly one dead letter with its reason; the good messages around it
  land, once each, with no gap;
* a slow-consumer drop (nats-py discards messages our reader did not take in time) is a
  ``nats_slow_consumer`` entry in the gap ledger of every stream of the group;
* the socket-client's ``@ticker`` lands raw and feeds no dataset, which the engine says once
  per stream in its log;
* the servers these tests need: a missing ``nats-server`` / ``redis-server`` binary is installed
  from Debian's packages once per session (root + apt-get), else the test fails naming the
  packages (``servers.ensure_server_binaries``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest

from petrosa_pipelines.ingest import IngestEngine
from petrosa_pipelines.ingest.nats_source import DROP_SLACK_MS
from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines_tests import servers
from petrosa_pipelines_tests.servers import nats_subject as _nats_subject  # noqa: F401
from petrosa_pipelines_tests.servers import nats_url as _nats_url  # noqa: F401
from petrosa_pipelines_tests.test_ingest.nats_frames import agg_trade, envelope, now_ms
from petrosa_pipelines_tests.test_ingest.test_nats_source import (
    landed_payloads,
    nats_config,
    processed,
    run_with_publisher,
    wait_for,
)
from petrosa_pipelines_tests.test_ingest.test_nats_source_socket_client import ticker, trade

BTC, ETH = "BTCUSDT", "ETHUSDT"


def _days(*ms: int) -> list[dt.date]:
    """The UTC receipt days around ``ms`` (a test running across midnight reads both)."""
    return sorted({dt.datetime.fromtimestamp(m / 1000, dt.UTC).date() for m in ms})


# -- a malformed envelope ------------------------------------------------------------------------
def test_a_malformed_envelope_is_one_dead_letter_and_harms_nothing_else(
    tmp_path, nats_url, nats_subject
):
    t0 = now_ms() - 5_000
    good = [agg_trade(BTC, i, t0 + i) for i in range(1, 41)]
    # an envelope the socket-client could send for a payload Binance garbled: no price
    data = {"e": "aggTrade", "E": t0 + 520, "a": 20_000, "s": BTC, "q": "0.01",
            "f": 40_000, "l": 40_001, "T": t0 + 500, "m": False}  # fmt: skip
    bad = envelope(f"{BTC.lower()}@aggTrade", data, t0 + 525)
    engine = IngestEngine(nats_config(tmp_path, nats_url, nats_subject))
    began = now_ms()

    async def scenario(engine, nc) -> None:
        for f in good[:20] + [bad] + good[20:]:
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: engine._nats.stats.messages == len(good) + 1, "every message")
        await wait_for(lambda: processed(engine) == len(good), "the good trades")

    run_with_publisher(engine, nats_url, scenario)
    store = LandingStore(tmp_path)
    dead = [d for day in _days(began, now_ms()) for d in store.dead_letters("binance", day)]
    assert len(dead) == 1 and engine.stats.dead_letters == 1
    (letter,) = dead
    assert letter.raw == bad  # the envelope bytes as received, for a replay once fixed
    assert letter.reason and letter.field, letter
    assert "p" in letter.reason or letter.field.endswith("p"), letter
    # nothing else harmed: every good envelope landed once, no gap, the stream still healthy
    assert sorted(landed_payloads(tmp_path)) == sorted(good)
    assert engine.stats.gaps_recorded == 0
    st = engine.stats.streams["btcusdt@aggTrade"]
    assert st.processed == len(good) and st.duplicates == 0


# -- a slow-consumer drop ------------------------------------------------------------------------
def test_a_slow_consumer_drop_is_ledgered_on_every_stream(
    tmp_path, nats_url, nats_subject, monkeypatch
):
    """A real drop: nats-py's pending queue for the subscription holds 5 messages and our reader
    is made slow, so a burst overflows it and the client reports ``SlowConsumerError``."""
    cfg = nats_config(
        tmp_path, nats_url, nats_subject, datasets=("trades", "funding"),
        nats_pending_msgs_limit=5,
    )  # fmt: skip
    engine = IngestEngine(cfg)
    src = engine._nats
    handle = src._handle

    def slow_handle(raw: bytes) -> None:
        handle(raw)
        time.sleep(0.002)  # the loop (and so the callback) falls behind the socket reader

    monkeypatch.setattr(src, "_handle", slow_handle)
    t0 = now_ms() - 5_000
    first = [agg_trade(s, i, t0 + i) for i in range(1, 3) for s in (BTC, ETH)]  # < the limit
    burst = [agg_trade(s, i, t0 + i) for i in range(3, 1_003) for s in (BTC, ETH)]
    marks: dict[str, int] = {}

    async def scenario(engine, nc) -> None:
        for f in first:
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: processed(engine) == len(first), "the first trades")
        marks["before"] = now_ms()
        for f in burst:  # one write: the reader gets them faster than the callback takes them
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(lambda: src.stats.slow_consumer_drops > 0, "a slow-consumer drop")
        await wait_for(lambda: engine.stats.gaps_recorded > 0, "the drop ledgered")

    run_with_publisher(engine, nats_url, scenario)
    marks["after"] = now_ms()  # later bursts of drops may follow the first until the stop
    assert src.stats.slow_consumer_drops > 0
    assert src.stats.messages < len(first) + len(burst)  # some really were dropped
    store = LandingStore(tmp_path)
    window = (t0 - 3_600_000, marks["after"] + 3_600_000)
    drops = [g for g in store.gaps("binance", *window) if g.cause == "nats_slow_consumer"]
    # every stream of the group (the trades and the mark prices of both symbols), each with as
    # many entries as there were bursts of drops (at least one), none for a stream outside it
    streams = {(st.stats.dataset, st.stats.symbol) for st in engine._streams.values()}
    assert streams == {(d, s) for d in ("trades", "funding") for s in (BTC, ETH)}
    per_stream = {key: sum((g.dataset, g.symbol) == key for g in drops) for key in streams}
    assert len(set(per_stream.values())) == 1 and min(per_stream.values()) >= 1, per_stream
    assert len(drops) == sum(per_stream.values())
    for g in drops:
        assert g.detail == "messages dropped" and g.group == "natsg"
        # from the stream's last data (or the drop, for a stream with none yet) to past it
        assert g.start_ms <= marks["after"] and g.end_ms >= marks["before"] + DROP_SLACK_MS
    trades = [g for g in drops if g.dataset == "trades"]
    assert all(g.start_ms >= t0 for g in trades)  # not before the data it follows


def test_one_ledger_entry_per_burst_of_drops(tmp_path):
    """``_on_drop`` is called once per dropped message: a burst of them is one entry per
    stream, and the next message read closes the burst."""
    engine = IngestEngine(nats_config(tmp_path, "nats://127.0.0.1:1", "test.unused"))
    src = engine._nats
    n_streams = len(engine._streams)
    for _ in range(50):
        src._on_drop()
    assert src.stats.slow_consumer_drops == 50
    assert engine.stats.gaps_recorded == n_streams >= 2
    src._drop_open = False  # what reading the next message does (``_read_core``)
    src._on_drop()
    assert engine.stats.gaps_recorded == 2 * n_streams
    assert {st.stats.gaps for st in engine._streams.values()} == {2}


# -- the @ticker stream --------------------------------------------------------------------------
def test_ticker_lands_raw_feeds_no_dataset_and_says_so(tmp_path, nats_url, nats_subject, caplog):
    caplog.set_level(logging.INFO, logger="petrosa_pipelines.ingest")
    engine = IngestEngine(
        nats_config(
            tmp_path, nats_url, nats_subject, datasets=("trades",), stream_profile="socket-client"
        )
    )
    t0 = now_ms() - 5_000
    tickers = [ticker(s, t0 + 100 * k) for k in range(5) for s in (BTC, ETH)]
    trades = [trade(BTC, 1000 + k, t0 + 100 * k + 1) for k in range(5)]

    async def scenario(engine, nc) -> None:
        for f in tickers + trades:
            await nc.publish(nats_subject, f)
        await nc.flush()
        await wait_for(
            lambda: engine._nats.stats.messages == len(tickers) + len(trades), "every message"
        )
        await wait_for(lambda: processed(engine) == len(tickers) + len(trades), "processed")

    run_with_publisher(engine, nats_url, scenario)
    # said once per stream (when the stream is set up), not once per message
    said = [r.getMessage() for r in caplog.records if "feeds no dataset" in r.getMessage()]
    assert sorted(said) == sorted(
        f"binance {s.lower()}@ticker: landed raw, feeds no dataset (liveness probe, latest price)"
        for s in (BTC, ETH)
    )
    assert sorted(landed_payloads(tmp_path)) == sorted(tickers + trades)  # kept raw
    assert engine.stats.dead_letters == 0 and engine.stats.gaps_recorded == 0
    for s in (BTC, ETH):
        st = engine.stats.streams[f"{s.lower()}@ticker"]
        assert st.processed == 5 and st.dataset not in DATASETS  # no dataset of the catalog


# -- the servers' binaries -----------------------------------------------------------------------
@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """``servers`` pointed at binaries that do not exist, a state dir of the test's own, root
    and an apt-get whose ``install`` creates the binaries it is asked for (after a pause, so
    that concurrent callers overlap); records every call."""
    bins = {"nats-server": tmp_path / "bin" / "nats-server",
            "redis-server": tmp_path / "bin" / "redis-server"}  # fmt: skip
    monkeypatch.setattr(servers, "NATS_SERVER_BIN", str(bins["nats-server"]))
    monkeypatch.setattr(servers, "REDIS_SERVER_BIN", str(bins["redis-server"]))
    monkeypatch.setattr(servers, "APT_STATE_DIR", tmp_path / "state")
    monkeypatch.setattr(servers, "_apt_tried", set())
    monkeypatch.setattr(servers.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(servers.os, "geteuid", lambda: 0)
    state = {"calls": [], "works": True}

    def run(cmd, **kw):
        state["calls"].append(list(cmd))
        assert kw.get("env", {}).get("DEBIAN_FRONTEND") == "noninteractive"
        if cmd[1] == "install" and state["works"]:
            time.sleep(0.2)
            for pkg in cmd[2:]:
                if pkg in bins:
                    bins[pkg].parent.mkdir(parents=True, exist_ok=True)
                    bins[pkg].touch()
            return _Done(0)
        return _Done(0 if cmd[1] == "update" else 100, "E: Unable to locate package")

    monkeypatch.setattr(servers.subprocess, "run", run)
    return state


class _Done:
    def __init__(self, code: int, err: str = "") -> None:
        self.returncode, self.stderr, self.stdout = code, err, ""


def _installs(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[1] == "install"]


def test_missing_binaries_are_installed_once_even_by_concurrent_callers(fake_apt):
    got: list[object] = []

    def call(*packages: str) -> None:
        try:
            got.append(servers.ensure_server_binaries(*packages))
        except Exception as exc:  # noqa: BLE001 - recorded, asserted below
            got.append(exc)

    # callers wanting one server or the other: one apt-get for both, by whoever comes first
    asks = [("nats-server",), ("redis-server",), (), ("nats-server",)]
    threads = [threading.Thread(target=call, args=a) for a in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(g, dict) for g in got) and len(got) == 4, got
    (install,) = _installs(fake_apt["calls"])
    assert install[0] == "/usr/bin/apt-get" and "-y" in install
    assert install[-2:] == ["nats-server", "redis-server"]
    assert servers.ensure_server_binaries("redis-server") == {
        "redis-server": servers.REDIS_SERVER_BIN
    }
    assert len(_installs(fake_apt["calls"])) == 1


def test_a_failed_install_fails_clearly_and_is_not_retried_in_the_session(fake_apt):
    fake_apt["works"] = False
    with pytest.raises(servers.MissingServerBinaryError) as err:
        servers.ensure_server_binaries()
    text = str(err.value)
    assert "apt-get install -y nats-server redis-server" in text
    assert "Unable to locate package" in text
    # install, update, install again: then never again in this session (another worker of the
    # same run finds the failure marker under the lock)
    assert [c[1] for c in fake_apt["calls"]] == ["install", "update", "install"]
    servers._apt_tried.clear()  # as a fresh xdist worker of the same run
    with pytest.raises(servers.MissingServerBinaryError, match="failed earlier in this run"):
        servers.ensure_server_binaries("nats-server")
    assert len(fake_apt["calls"]) == 3


@pytest.mark.parametrize("why", ["not root", "no apt-get"])
def test_without_root_or_apt_the_test_fails_naming_the_packages(fake_apt, monkeypatch, why):
    if why == "not root":
        monkeypatch.setattr(servers.os, "geteuid", lambda: 1000)
    else:
        monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    with pytest.raises(servers.MissingServerBinaryError) as err:
        with servers.throwaway_redis():
            pass
    text = str(err.value)
    assert "redis-server" in text and "sudo apt-get install -y redis-server" in text
    assert ("not running as root" if why == "not root" else "apt-get is not available") in text
    assert fake_apt["calls"] == []  # nothing was attempted


def test_present_binaries_need_no_apt(fake_apt):
    for path in (servers.NATS_SERVER_BIN, servers.REDIS_SERVER_BIN):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    assert set(servers.ensure_server_binaries()) == {"nats-server", "redis-server"}
    assert fake_apt["calls"] == []


# -- the documented example ----------------------------------------------------------------------
def test_the_env_example_documents_a_valid_nats_sourced_group():
    """The commented ``PETROSA_INGEST_GROUPS`` example of ``.env.example`` is a group the
    settings accept: the socket-client's subject and profile, through a JetStream durable."""
    from petrosa_pipelines.ingest.config import parse_ingest_groups

    text = (Path(__file__).parents[2] / ".env.example").read_text()
    examples = [
        line.split("=", 1)[1]
        for line in text.splitlines()
        if line.startswith("# PETROSA_INGEST_GROUPS=")
    ]
    groups = [g for raw in examples for g in parse_ingest_groups(raw)]
    nats_groups = [g for g in groups if g["source"] == "nats"]
    assert len(nats_groups) == 1, examples
    (g,) = nats_groups
    assert g["stream_profile"] == "socket-client"
    assert g["nats_subject"] == "binance.futures.websocket.data"
    assert g["nats_stream"] and g["nats_durable"]
    assert set(g["datasets"]) == {"trades", "depth"}
