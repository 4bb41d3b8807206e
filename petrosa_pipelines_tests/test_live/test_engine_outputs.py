"""The ingest engine feeding the live outputs: what is published is what was landed.

The production engine runs against the local exchange; its landed frames are offered by
``ingest/sink.py`` and its book samples by ``books.py`` (``_samples`` -> ``_offer_samples``),
nothing wired by the test. NATS then holds exactly the landed trades and mark prices, and one
depth message per book sample, each offered once: JetStream's de-duplication (``Nats-Msg-Id``)
must have had nothing to drop (``acked_duplicates == 0``), so a sample offered twice fails here
instead of being hidden by the stream; Redis holds the last of each.
"""

from __future__ import annotations

import asyncio
import collections

import orjson

from petrosa_pipelines.ingest import IngestEngine
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.live import LiveOutputs
from petrosa_pipelines_tests.test_ingest.conftest import (  # noqa: F401 - fixture
    exchange,
    make_config,
    run_engine,
)
from petrosa_pipelines_tests.test_live.conftest import settings, stream_messages, wait_for


def test_published_records_are_the_landed_records(exchange, tmp_path, nats_url, redis_url,  # noqa: F811
                                                  live_names, monkeypatch):  # fmt: skip
    cfg = make_config(exchange, tmp_path, datasets=("trades", "depth", "funding"), depth_top_n=5)
    for var in ("PETROSA_NATS_URL", "PETROSA_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)  # no outputs from the environment: ours below
    engine = IngestEngine(cfg, clock_ms=exchange.clock.now_ms)
    assert engine.live is None
    # an intake that holds the whole run: the worker runs niced, and a loaded machine may starve
    # it until the feed stops; this test is about what is published, not about the bound.
    # A publish timeout far beyond a loaded machine's ack delay: a batch re-sent after a lost
    # ack would be acknowledged as a duplicate, and this test counts duplicates
    s = settings(live_names, nats_url=nats_url, redis_url=redis_url, buffer_messages=1_000_000,
                 publish_timeout_s=60.0)  # fmt: skip
    engine.live = LiveOutputs(s, venue=engine.adapter.venue, exchange=engine.exchange,
                              adapter=engine.adapter)  # fmt: skip
    engine.live.start()

    async def scenario(e):
        # conditions, not wall-clock speed: a few book samples and a second more of the feed
        for _ in range(2400):  # 120 s at most
            if e.samples_emitted >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

    run_engine(engine, scenario)
    wait_for(engine.live.idle, "the live outputs caught up")
    engine.live.close()
    stats = engine.live.stats()
    assert stats["nats"]["dropped"] == 0 and stats["intake_dropped"] == 0
    assert stats["parse_failures"] == 0
    # each record and book sample offered once: nothing for JetStream to de-duplicate, and
    # the worker published (acknowledged) exactly one depth message per sample
    assert stats["nats"]["acked_duplicates"] == 0, stats["nats"]
    assert stats["nats"]["errors"] == 0, stats["nats"]
    acked_depth = sum(
        n for subj, n in stats["nats"]["published_by_subject"].items() if ".depth." in subj
    )
    assert acked_depth == engine.samples_emitted > 0

    landed = collections.defaultdict(set)
    marks = collections.Counter()
    now = exchange.clock.now_ms()
    for r in LandingStore(tmp_path).read_records("binance", now - 86_400_000, now + 3_600_000):
        kind = type(r).__name__
        if kind == "TradeRecord":
            landed[r.symbol].add(r.agg_trade_id)
        elif kind == "MarkPriceRecord":
            marks[r.symbol] += 1
    msgs = asyncio.run(stream_messages(nats_url, s.stream))
    published = collections.defaultdict(list)
    kinds = collections.Counter()
    for subject, payload, _ in msgs:
        _, venue, dataset, symbol = subject.split(".")
        assert venue == "binance-usdm"
        kinds[(dataset, symbol)] += 1
        if dataset == "trades":
            published[symbol].append(orjson.loads(payload)["agg_trade_id"])
    assert set(published) == set(landed) == {"BTCUSDT", "ETHUSDT"}
    for sym, ids in published.items():
        assert len(ids) == len(set(ids)), "a trade published twice"
        assert set(ids) == landed[sym] and len(ids) > 10
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert kinds[("mark_price", sym)] == marks[sym] > 0
    assert sum(n for (d, _), n in kinds.items() if d == "depth") == engine.samples_emitted > 0

    monkeypatch.setenv("PETROSA_LIVE_REDIS_PREFIX", live_names["redis"])
    from petrosa_pipelines.api import latest

    got = latest("binance-usdm:BTCUSDT", redis_url=redis_url)
    assert got["trade"]["trade_id"] == str(max(landed["BTCUSDT"]))
    last = engine.latest_samples["BTCUSDT"]
    assert got["book"]["bid_price"] == last.bid_floats[0][0]
    assert got["book"]["as_of"] == last.snapshot_time
    assert got["funding"]["mark_price"] is not None and got["candle"]["trade_count"] > 0
