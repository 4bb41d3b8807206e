"""LiveOutputs against real NATS JetStream: subjects, schemas, retention, outages.

The buffer drops the *oldest* messages past its bound and counts them per subject; a message
leaves the buffer only once JetStream acknowledged it, and is re-sent with the same
``Nats-Msg-Id`` otherwise, so an outage loses only what the bound dropped (counted) and
doubles nothing.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from decimal import Decimal

import jsonschema
import orjson

from petrosa_pipelines.exchanges.base import MarkPriceRecord
from petrosa_pipelines.landing.book import BookSample
from petrosa_pipelines.live import LiveOutputs, schema_for_subject
from petrosa_pipelines_tests.test_live.conftest import (
    blackhole,
    closed_port_url,
    settings,
    stream_info,
    stream_messages,
    trade,
    wait_for,
)

VENUE = "binance-usdm"


def outputs(s) -> LiveOutputs:
    out = LiveOutputs(s, venue=VENUE, exchange="binance")
    out.start()
    return out


def test_records_land_in_the_stream_on_their_subjects_schema_valid(nats_url, live_names):
    s = settings(live_names, nats_url=nats_url, max_age_s=600, max_bytes=8 << 20)
    out = outputs(s)
    try:
        for i in range(50):
            out.offer(trade(i, "BTCUSDT"))
            out.offer(trade(i, "ETHUSDT"))
        t0 = 1_767_000_000_000
        out.offer_samples([BookSample("BTCUSDT", t0, 9, [(1.5, 2.0)], [(1.6, 3.0)], t0 + 1)])
        out.offer(MarkPriceRecord("binance", "BTCUSDT", t0, Decimal("87000"), None, None,
                                  Decimal("0.0001"), t0 + 1000))  # fmt: skip
        out.offer(MarkPriceRecord("binance", "BTCUSDT", t0 + 1500, Decimal("87001"), None, None,
                                  Decimal("0.0002"), t0 + 1000))  # fmt: skip
        out.offer(trade(7, "BTCUSDT"))  # a repeat: same Nats-Msg-Id, not stored twice
        wait_for(out.idle, "everything published")
        stats = out.stats()
    finally:
        out.close()
    msgs = asyncio.run(stream_messages(nats_url, s.stream))
    by_subject = collections.Counter(subject for subject, _, _ in msgs)
    p = live_names["prefix"]
    assert by_subject == {
        f"{p}.{VENUE}.trades.BTCUSDT": 50,
        f"{p}.{VENUE}.trades.ETHUSDT": 50,
        f"{p}.{VENUE}.depth.BTCUSDT": 1,
        f"{p}.{VENUE}.mark_price.BTCUSDT": 2,
        f"{p}.{VENUE}.funding.BTCUSDT": 1,
    }
    for subject, payload, headers in msgs:
        schema = schema_for_subject(subject, p)
        jsonschema.Draft202012Validator(schema).validate(orjson.loads(payload))
        assert headers["Nats-Msg-Id"].startswith(f"{VENUE}:")
    ids = [orjson.loads(d)["agg_trade_id"] for s_, d, _ in msgs if s_.endswith("trades.BTCUSDT")]
    assert ids == list(range(50))  # in order, the repeat not stored
    assert stats["nats"]["published"] == 105 and stats["nats"]["acked_duplicates"] == 1
    assert stats["nats"]["dropped"] == 0 and stats["intake_dropped"] == 0
    info = asyncio.run(stream_info(nats_url, s.stream))
    assert info.config.subjects == [f"{p}.>"]
    assert (info.config.max_age, info.config.max_bytes) == (600, 8 << 20)


def test_stream_is_created_once_and_updated_to_new_retention(nats_url, live_names):
    for max_age in (600, 600, 1200):
        out = outputs(settings(live_names, nats_url=nats_url, max_age_s=max_age))
        out.offer(trade(max_age))
        wait_for(out.idle, "published")
        out.close()
        assert out.stats()["nats"]["published"] == 1
    info = asyncio.run(stream_info(nats_url, live_names["stream"]))
    assert info.config.max_age == 1200 and info.state.messages == 2


def test_offers_never_wait_for_a_stuck_server(live_names):
    """The worker hangs in connect on a server that never answers; offering goes on."""
    with blackhole() as url:
        out = outputs(settings(live_names, nats_url=url, buffer_messages=1000))
        try:
            n, started = 100_000, time.perf_counter()
            records = [trade(i) for i in range(n)]
            for r in records:
                out.offer(r)
            elapsed = time.perf_counter() - started
            stats = out.stats()
            # the publisher never got a connection, and every offer returned
            assert stats["offered"] == n and stats["nats"]["published"] == 0
            assert stats["nats"]["state"] in ("connecting", "down")
            wait_for(lambda: out.stats()["intake"] == 0, "intake drained")
            stats = out.stats()
            assert stats["nats"]["pending"] == 1000
            assert (
                stats["nats"]["dropped"] + stats["nats"]["pending"] + stats["intake_dropped"] == n
            )
            print(f"{n} offers with the publisher stuck: {elapsed:.3f}s "
                  f"({elapsed / n * 1e6:.2f} us/offer)")  # fmt: skip
        finally:
            out.close(timeout=0.2)


def test_nats_down_drops_exactly_the_oldest_beyond_the_buffer(live_names):
    s = settings(live_names, nats_url=closed_port_url(), buffer_messages=100)
    out = outputs(s)
    try:
        order = []
        for i in range(300):  # interleaved: 3 BTC for each ETH
            sym = "ETHUSDT" if i % 4 == 3 else "BTCUSDT"
            order.append(sym)
            out.offer(trade(i, sym))
            if i % 50 == 49:  # let the worker drain: the intake never overflows
                wait_for(lambda: out.stats()["intake"] == 0, "intake drained")
        wait_for(lambda: out.stats()["intake"] == 0, "intake drained")
        wait_for(lambda: out.stats()["nats"]["state"] == "down", "the failed connection seen")
        stats = out.stats()
    finally:
        out.close(timeout=0.1)
    p = live_names["prefix"]
    expected = collections.Counter(f"{p}.{VENUE}.trades.{sym}" for sym in order[:200])
    assert stats["intake_dropped"] == 0
    assert stats["nats"]["dropped_by_subject"] == dict(expected)
    assert stats["nats"]["pending"] == 100 and stats["nats"]["state"] == "down"
    # at close what was still buffered is counted as dropped too: nothing vanishes uncounted
    final = out.stats()["nats"]
    assert final["dropped"] == 300 and final["pending"] == 0 and final["published"] == 0


def test_nats_outage_is_survived_caught_up_nothing_lost_or_doubled(own_nats, live_names):
    s = settings(live_names, nats_url=own_nats.url, buffer_messages=10_000)
    out = outputs(s)
    try:
        for i in range(300):  # NATS not started yet
            out.offer(trade(i))
        wait_for(lambda: out.stats()["nats"]["errors"] >= 2, "connection retried")
        assert out.stats()["nats"]["pending"] == 300
        own_nats.start()
        wait_for(out.idle, "caught up after NATS came up")
        assert out.stats()["nats"]["published"] == 300
        own_nats.stop()  # an outage mid-stream: offers keep going
        for i in range(300, 600):
            out.offer(trade(i))
        wait_for(lambda: out.stats()["nats"]["state"] == "down", "outage seen")
        own_nats.start()  # same store: the stream and its 300 messages are back
        wait_for(out.idle, "caught up after the outage")
        stats = out.stats()["nats"]
    finally:
        out.close()
    assert stats["dropped"] == 0
    msgs = asyncio.run(stream_messages(own_nats.url, s.stream))
    ids = [orjson.loads(d)["agg_trade_id"] for _, d, _ in msgs]
    assert sorted(ids) == list(range(600))  # nothing lost, nothing doubled
    assert stats["published"] - stats["acked_duplicates"] == 600


def test_close_publishes_what_is_buffered(nats_url, live_names):
    out = outputs(settings(live_names, nats_url=nats_url))
    for i in range(2000):
        out.offer(trade(i))
    out.close(timeout=30)
    stats = out.stats()["nats"]
    assert stats["published"] == 2000 and stats["dropped"] == 0 and stats["state"] == "closed"
    assert asyncio.run(stream_info(nats_url, live_names["stream"])).state.messages == 2000


def test_from_env_is_off_without_urls_and_parses_frames_with_its_own_adapter(nats_url, live_names):
    from petrosa_pipelines.exchanges import get_adapter

    adapter = get_adapter("binance-usdm")
    assert LiveOutputs.from_env(adapter, {}) is None
    env = {"PETROSA_NATS_URL": nats_url, "PETROSA_LIVE_SUBJECT_PREFIX": live_names["prefix"],
           "PETROSA_LIVE_STREAM": live_names["stream"]}  # fmt: skip
    out = LiveOutputs.from_env(adapter, env)
    assert out is not None
    frame = orjson.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1767000000001, "a": 5, "s": "BTCUSDT", "p": "87000.10",
        "q": "0.002", "f": 9, "l": 9, "T": 1767000000000, "m": False}})  # fmt: skip
    try:
        out.offer_frame(frame, 1767000000009)
        out.offer_frame(b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"}}', 1)
        wait_for(out.idle, "published")
        worker_pid = out.stats()["worker"]["pid"]
    finally:
        out.close()
    stats = out.stats()
    # parsed by the adapter's copy in a process of its own, not in the ingest's
    assert worker_pid not in (None, os.getpid())
    assert stats["nats"]["published"] == 1 and stats["parse_failures"] == 1
    ((subject, payload, _),) = asyncio.run(stream_messages(nats_url, live_names["stream"]))
    doc = orjson.loads(payload)
    assert subject == f"{live_names['prefix']}.binance-usdm.trades.BTCUSDT"
    assert (doc["price"], doc["received_at"], doc["trade_id"]) == (87000.1, 1767000000009, "5")


def test_socket_client_envelopes_publish_raw_trades_every_print_type(
    nats_url, redis_url, live_names, monkeypatch
):
    """Real recorded ``@trade`` frames in the socket-client's envelope (what the NATS source
    lands), parsed by a copy of the engine's socket-client adapter."""
    from pathlib import Path

    from petrosa_pipelines.api import latest
    from petrosa_pipelines.ingest.config import make_adapter
    from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope

    fixtures = Path(__file__).parents[1] / "fixtures" / "binance_socket"
    lines = [
        line.encode()
        for name in ("trade_2023-04-05_insurance_fund.jsonl", "ticker_docs_example.jsonl")
        for line in (fixtures / name).read_text().splitlines()
    ]
    adapter = make_adapter("binance-usdm", "socket-client")
    s = settings(live_names, nats_url=nats_url, redis_url=redis_url)
    out = LiveOutputs(s, venue=adapter.venue, exchange=adapter.name, adapter=adapter)
    out.start()
    try:
        for i, frame in enumerate(lines):
            recv = 1_680_652_800_000 + i
            out.offer_frame(socket_client_envelope(frame, recv), recv)
        wait_for(out.idle, "published")
    finally:
        out.close()
    msgs = asyncio.run(stream_messages(nats_url, s.stream))
    docs = [orjson.loads(p) for _, p, _ in msgs]
    assert {m[0] for m in msgs} == {f"{live_names['prefix']}.binance-usdm.raw_trades.BTCUSDT"}
    assert [d["trade_id"] for d in docs] == [3535191079, 3535191080, 3535191081]
    assert [d["trade_type"] for d in docs] == ["MARKET", "INSURANCE_FUND", "MARKET"]
    for subject, payload, _ in msgs:
        jsonschema.Draft202012Validator(schema_for_subject(subject, live_names["prefix"])).validate(
            orjson.loads(payload)
        )
    assert out.stats()["unpublished"] == {"TickerRecord": 1}
    monkeypatch.setenv("PETROSA_LIVE_REDIS_PREFIX", live_names["redis"])
    got = latest("binance-usdm:BTCUSDT", ["trade", "candle"], redis_url=redis_url)
    assert got["trade"]["trade_id"] == "3535191081"
    assert got["candle"]["trade_count"] == 2  # the insurance-fund print is no market trade


def test_an_odd_record_is_counted_and_the_worker_goes_on(nats_url, live_names):
    out = outputs(settings(live_names, nats_url=nats_url))
    try:
        out.offer(object())  # no type the outputs know: counted, not published
        out.offer(trade(1, "BTC.USDT"))  # a symbol that cannot be a subject token
        out.offer(trade(2))
        wait_for(out.idle, "published")
    finally:
        out.close()
    stats = out.stats()
    assert stats["nats"]["published"] == 1
    assert stats["unpublished"] == {"object": 1, "invalid_subject:BTC.USDT": 1}
