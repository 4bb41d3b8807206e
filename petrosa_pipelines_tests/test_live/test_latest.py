"""The latest state in Redis: key layout, TTLs, coalescing, ``latest()`` ages, Redis down."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis

from petrosa_pipelines.api import LatestUnavailableError, latest
from petrosa_pipelines.exchanges.base import BookTickerRecord, CandleRecord, MarkPriceRecord
from petrosa_pipelines.landing.book import BookSample
from petrosa_pipelines.live import LiveOutputs
from petrosa_pipelines_tests.test_live.conftest import closed_port_url, settings, trade, wait_for

VENUE = "binance-usdm"
T0 = 1_767_000_000_000


def outputs(s) -> LiveOutputs:
    out = LiveOutputs(s, venue=VENUE, exchange="binance")
    out.start()
    return out


def read(url: str, names, monkeypatch, **kw):
    monkeypatch.setenv("PETROSA_LIVE_REDIS_PREFIX", names["redis"])
    return latest("binance-usdm:BTCUSDT", redis_url=url, **kw)


def test_latest_state_per_field_with_ttl_and_ages(redis_url, live_names, monkeypatch):
    out = outputs(settings(live_names, redis_url=redis_url, redis_ttl_s=120))
    try:
        for i in range(10):
            out.offer(trade(i))
        out.offer_samples([BookSample("BTCUSDT", T0 + 20, 42, [(87000.1, 1.5), (87000.0, 3.0)],
                                      [(87000.2, 0.25)], T0 + 21)])  # fmt: skip
        out.offer(MarkPriceRecord("binance", "BTCUSDT", T0 + 30, Decimal("87001.5"),
                                  Decimal("87000.9"), None, Decimal("0.00010000"),
                                  T0 + 3_600_000))  # fmt: skip
        out.offer(trade(0, "ETHUSDT"))
        wait_for(out.idle, "written to Redis")
    finally:
        out.close()
    got = read(redis_url, live_names, monkeypatch, now_ms=T0 + 1_530)
    assert got.instrument == "binance-usdm:BTCUSDT" and got.read_at == T0 + 1_530
    assert got["trade"]["price"] == 87009.1 and got["trade"]["trade_id"] == "9"
    assert got["trade"]["as_of"] == T0 + 9 and got.age_s["trade"] == pytest.approx(1.521)
    book = got["book"]
    assert (book["bid_price"], book["bid_quantity"], book["ask_price"], book["ask_quantity"]) == (
        87000.1, 1.5, 87000.2, 0.25,
    )  # fmt: skip
    assert book["last_update_id"] == 42 and got.age_s["book"] == pytest.approx(1.51)
    candle = got["candle"]  # the open 1m candle, built from the trades (no kline stream)
    assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (
        87000.1, 87009.1, 87000.1, 87009.1,
    )  # fmt: skip
    assert candle["trade_count"] == 10 and candle["volume"] == pytest.approx(0.02)
    assert candle["open_time"] == T0 - T0 % 60_000 and candle["closed"] is False
    funding = got["funding"]
    assert (funding["funding_rate"], funding["mark_price"]) == (0.0001, 87001.5)
    assert funding["next_funding_time"] == T0 + 3_600_000 and got.age_s["funding"] == 1.5
    assert got["health"] is None and got.age_s["health"] is None
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{live_names['redis']}:{VENUE}:BTCUSDT:trade"
        assert 0 < client.pttl(key) <= 120_000
        assert client.hget(key, "price") == b"87009.10"  # the venue's decimal, exactly
        assert client.exists(f"{live_names['redis']}:{VENUE}:ETHUSDT:trade")
    finally:
        client.close()
    only = read(redis_url, live_names, monkeypatch, fields=["book"])
    assert list(only.values) == ["book"]


def test_values_expire_after_their_ttl(redis_url, live_names, monkeypatch):
    out = outputs(settings(live_names, redis_url=redis_url, redis_ttl_s=1))
    try:
        out.offer(trade(1))
        wait_for(out.idle, "written")
        assert read(redis_url, live_names, monkeypatch)["trade"] is not None
        wait_for(lambda: read(redis_url, live_names, monkeypatch)["trade"] is None, "expiry")
        assert read(redis_url, live_names, monkeypatch).age_s["trade"] is None
    finally:
        out.close()


def test_kline_candles_replace_the_trade_built_one_and_book_tickers_the_book(
    redis_url, live_names, monkeypatch
):
    out = outputs(settings(live_names, redis_url=redis_url))
    try:
        out.offer(trade(1))
        out.offer(CandleRecord("binance", "BTCUSDT", "1m", T0, T0 + 59_999, Decimal("1"),
                               Decimal("3"), Decimal("0.5"), Decimal("2"), Decimal("10"),
                               Decimal("20"), 7, Decimal("4"), Decimal("8"), is_closed=False,
                               event_time=T0 + 500))  # fmt: skip
        out.offer(trade(2))  # does not overwrite the kline's candle
        out.offer(BookTickerRecord("binance", "BTCUSDT", 77, Decimal("1.1"), Decimal("2"),
                                   Decimal("1.2"), Decimal("3"), T0 + 600, T0 + 601))  # fmt: skip
        wait_for(out.idle, "written")
    finally:
        out.close()
    got = read(redis_url, live_names, monkeypatch, now_ms=T0 + 1_000)
    assert got["candle"]["source"] == "kline" and got["candle"]["trade_count"] == 7
    assert got["book"]["bid_price"] == 1.1 and got["book"]["last_update_id"] == 77
    assert got.age_s["book"] == pytest.approx(0.399)


def test_one_write_per_key_per_interval_latest_value_wins(redis_url, live_names, monkeypatch):
    interval = 0.5
    out = outputs(settings(live_names, redis_url=redis_url, redis_interval_s=interval))
    try:
        started = time.monotonic()
        for i in range(20_000):
            out.offer(trade(i))
        wait_for(out.idle, "written")
        elapsed = time.monotonic() - started
        writes = out.stats()["redis"]["writes"]
    finally:
        out.close()
    # two keys (trade, candle), at most one write each per interval
    assert writes <= 2 * (elapsed / interval + 2), (writes, elapsed)
    assert read(redis_url, live_names, monkeypatch)["trade"]["trade_id"] == "19999"


def test_redis_down_never_raises_and_catches_up(own_redis, live_names, monkeypatch):
    out = outputs(settings(live_names, redis_url=own_redis.url))
    try:
        for i in range(100):
            out.offer(trade(i))  # Redis is not up: nothing raises, nothing waits
        wait_for(lambda: out.stats()["redis"]["failures"] >= 2, "failed writes counted")
        stats = out.stats()["redis"]
        assert stats["state"] == "down" and stats["keys_waiting"] == 2
        own_redis.start()
        wait_for(out.idle, "written once Redis is up")
        assert out.stats()["redis"]["state"] == "connected"
    finally:
        out.close()
    got = read(own_redis.url, live_names, monkeypatch)
    assert got["trade"]["trade_id"] == "99" and got["candle"]["trade_count"] == 100


def test_latest_says_clearly_when_it_cannot_answer(monkeypatch):
    monkeypatch.delenv("PETROSA_REDIS_URL", raising=False)
    with pytest.raises(LatestUnavailableError, match="PETROSA_REDIS_URL"):
        latest("binance-usdm:BTCUSDT")
    url = closed_port_url("redis").replace("redis://", "redis://:hunter2secret@")
    with pytest.raises(LatestUnavailableError, match="did not answer") as err:
        latest("binance-usdm:BTCUSDT", redis_url=url)
    assert "hunter2secret" not in str(err.value)
    with pytest.raises(ValueError, match="fields"):
        latest("binance-usdm:BTCUSDT", fields=["orders"], redis_url=url)
