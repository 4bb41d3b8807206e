"""The ingest engine feeding the live outputs: what is published is what was landed.

The engine runs against the local exchange; its landed frames are offered by ``ingest/sink.py``
and its book samples by ``_offer_samples`` (wired here by a subclass, as ``books.py`` is asked
to in ``docs/live.md``). NATS then holds exactly the landed trades and mark prices, and one
depth message per book sample; Redis the last of each.
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


class Feeding(IngestEngine):
    def _samples(self, samples):
        super()._samples(samples)
        self._offer_samples(samples)


def test_published_records_are_the_landed_records(exchange, tmp_path, nats_url, redis_url,  # noqa: F811
                                                  live_names, monkeypatch):  # fmt: skip
    cfg = make_config(exchange, tmp_path, datasets=("trades", "depth", "funding"), depth_top_n=5)
    engine = Feeding(cfg, clock_ms=exchange.clock.now_ms)
    # an intake that holds the whole run: the worker runs niced, and a loaded machine may starve
    # it until the feed stops; this test is about what is published, not about the bound
    s = settings(live_names, nats_url=nats_url, redis_url=redis_url, buffer_messages=1_000_000)
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
