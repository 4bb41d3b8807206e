"""WeightBudget and RestTransport: budget windows, header sync, 429/418/5xx/4xx handling."""

from __future__ import annotations

import logging
import multiprocessing
import socket

import pytest

from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.exchanges.http import (
    USED_WEIGHT_HEADER,
    RestTransport,
    WeightBudget,
    backoff_delay,
)
from petrosa_pipelines.settings import RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeClock, FakeServer, Reply

pytestmark = pytest.mark.unit

REST = RestSettings(max_retries=3, backoff_base_seconds=0.5, backoff_max_seconds=4.0)


def _budget(clock: FakeClock, limit: int = 100, fraction: float = 0.5, **kw) -> WeightBudget:
    return WeightBudget(limit, fraction, clock=clock.time, sleep=clock.sleep, **kw)


# ---------------------------------------------------------------------------------------------
# WeightBudget
# ---------------------------------------------------------------------------------------------


def test_budget_is_fraction_of_limit_and_waits_for_next_window():
    clock = FakeClock(start=6000.0 + 10.0)  # 10 s into a minute window
    budget = _budget(clock)
    assert budget.budget_per_minute == 50
    for _ in range(5):
        assert budget.reserve(10) == 0.0
    assert budget.used == 50
    slept = budget.reserve(1)  # does not fit: wait for the next minute window
    assert slept == pytest.approx(50.0)
    assert clock.sleeps == [pytest.approx(50.0)]
    assert budget.used == 1


def test_budget_sync_adopts_header_but_never_lowers():
    clock = FakeClock(start=6000.0)
    budget = _budget(clock)
    budget.reserve(5)
    budget.sync(40)  # other processes on the IP spent weight too
    assert budget.used == 40
    budget.sync(3)  # stale/lower header must not forget our own reservations
    assert budget.used == 40
    assert budget.max_seen_used == 40
    assert budget.reserve(20) > 0  # 40 + 20 > 50: waits


def test_budget_request_heavier_than_budget_goes_alone_in_fresh_window():
    clock = FakeClock(start=6000.0)
    budget = _budget(clock, limit=10, fraction=0.5)
    assert budget.reserve(20) == 0.0  # fresh window: allowed alone
    assert budget.reserve(1) == pytest.approx(60.0)


def test_budget_block_until_delays_reservations():
    clock = FakeClock(start=6000.0)
    budget = _budget(clock)
    budget.block_until(6000.0 + 7.5)
    assert budget.reserve(1) == pytest.approx(7.5)


def test_budget_set_limit_and_from_settings(tmp_path):
    rest = RestSettings(weight_limit_per_minute=1000, weight_budget_fraction=0.25)
    budget = WeightBudget.from_settings(rest)
    assert budget.budget_per_minute == 250
    budget.set_limit(2400)
    assert budget.limit_per_minute == 2400 and budget.budget_per_minute == 600
    budget.set_limit(0)  # nonsense from a broken exchangeInfo is ignored
    assert budget.limit_per_minute == 2400
    with pytest.raises(ValueError):
        WeightBudget(100, 1.5)


def test_shared_budget_file_is_seen_by_other_instances(tmp_path):
    clock = FakeClock(start=6000.0)
    a = _budget(clock, shared_dir=tmp_path)
    b = _budget(clock, shared_dir=tmp_path)
    a.reserve(30)
    assert b.used == 30
    assert b.reserve(30) == pytest.approx(60.0)  # 60 > 50: b waits although b spent nothing
    assert (tmp_path / "binance.weight.json").exists()


def test_from_settings_uses_weight_budget_dir(tmp_path):
    rest = RestSettings(weight_budget_dir=str(tmp_path / "budget"))
    clock = FakeClock(start=6000.0)
    WeightBudget.from_settings(rest, clock=clock.time, sleep=clock.sleep).reserve(7)
    other = WeightBudget.from_settings(rest, clock=clock.time, sleep=clock.sleep)
    assert other.used == 7
    assert (tmp_path / "budget" / "binance.weight.json").exists()


def _reserve_many(shared_dir: str, n: int) -> None:
    budget = WeightBudget(10_000, 1.0, shared_dir=shared_dir, clock=lambda: 6000.0)
    for _ in range(n):
        budget.reserve(1)


def test_shared_budget_survives_concurrent_processes(tmp_path):
    """Without the fcntl lock, read-modify-write races would lose reservations."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_reserve_many, args=(str(tmp_path), 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    budget = WeightBudget(10_000, 1.0, shared_dir=tmp_path, clock=lambda: 6000.0)
    assert budget.used == 600


def test_backoff_delay_is_full_jitter_and_capped():
    assert backoff_delay(0, 0.5, 4.0, lambda: 1.0) == 0.5
    assert backoff_delay(2, 0.5, 4.0, lambda: 1.0) == 2.0
    assert backoff_delay(10, 0.5, 4.0, lambda: 1.0) == 4.0
    assert backoff_delay(3, 0.5, 4.0, lambda: 0.25) == 1.0
    assert backoff_delay(3, 0.5, 4.0, lambda: 0.0) == 0.0


# ---------------------------------------------------------------------------------------------
# RestTransport against scripted replies
# ---------------------------------------------------------------------------------------------


def _transport(server: FakeServer, clock: FakeClock, rest: RestSettings = REST) -> RestTransport:
    return RestTransport(server.url, rest, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0)


def test_success_returns_json_and_syncs_used_weight_header():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {"ok": 1}, {USED_WEIGHT_HEADER: "37"})]
        t = _transport(server, clock)
        body, headers = t.get("/x", {"a": "b"}, weight=2)
    assert body == {"ok": 1}
    assert headers[USED_WEIGHT_HEADER] == "37"
    assert t.used_weights == [37]
    assert t.budget.used == 37
    assert server.requests[0].query == {"a": "b"}


def test_429_honours_retry_after_then_succeeds():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [
            Reply(429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": "7"}),
            Reply(200, [1, 2]),
        ]
        t = _transport(server, clock)
        body, _ = t.get("/x")
    assert body == [1, 2]
    assert t.sleeps == [7.0]
    assert clock.sleeps == [7.0]  # the budget did not wait again on top
    assert len(server.requests) == 2


def test_418_ban_waits_full_retry_after_and_logs(caplog):
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [
            Reply(
                418,
                {"code": -1003, "msg": "Way too much request weight used; IP banned"},
                {"Retry-After": "300"},
            ),
            Reply(200, {"ok": True}),
        ]
        t = _transport(server, clock)
        with caplog.at_level(logging.ERROR, logger="petrosa_pipelines.exchanges.http"):
            t.get("/x")
    assert t.sleeps == [300.0]
    assert any("banned" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_418_without_retry_after_waits_minimum_ban():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(418, {"code": -1003, "msg": "banned"}), Reply(200, {})]
        t = _transport(server, clock)
        t.get("/x")
    assert t.sleeps == [120.0]


def test_429_retry_after_blocks_other_users_of_the_budget():
    """The Retry-After is written into the budget, so every user of it waits (here the
    transport's own sleep is a no-op, so only the budget's wait moves the clock)."""
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(429, {}, {"Retry-After": "30"}), Reply(200, {})]
        shared = WeightBudget(100, 1.0, clock=clock.time, sleep=clock.sleep)
        t = RestTransport(server.url, REST, shared, clock=clock.time, sleep=lambda s: None)
        t.get("/x")
    assert t.sleeps == [30.0]
    assert shared.sleeps == [pytest.approx(30.0)]
    assert clock.now == pytest.approx(6030.0)


def test_5xx_retries_with_exponential_backoff_then_succeeds():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(502, b"bad gateway"), Reply(503, b"x"), Reply(200, {"ok": 1})]
        t = _transport(server, clock)
        body, _ = t.get("/x")
    assert body == {"ok": 1}
    assert t.sleeps == [0.5, 1.0]  # base * 2^n with rng() = 1


def test_5xx_gives_up_after_max_retries():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(500, {"code": -1000, "msg": "unknown"})]
        t = _transport(server, clock)
        with pytest.raises(ExchangeError, match="giving up"):
            t.get("/x")
    assert len(server.requests) == REST.max_retries + 1
    assert t.sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped():
    clock = FakeClock(start=6000.0)
    rest = RestSettings(max_retries=6, backoff_base_seconds=1.0, backoff_max_seconds=3.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(503, b"")] * 5 + [Reply(200, {})]
        t = _transport(server, clock, rest)
        t.get("/x")
    assert t.sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_4xx_with_binance_code_raises_immediately():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(400, {"code": -1121, "msg": "Invalid symbol."})]
        t = _transport(server, clock)
        with pytest.raises(ExchangeError) as info:
            t.get("/x")
    assert info.value.status == 400
    assert info.value.code == -1121
    assert "Invalid symbol" in str(info.value)
    assert len(server.requests) == 1
    assert t.sleeps == []


def test_429_gives_up_after_max_retries_with_status():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(429, {"code": -1003, "msg": "x"}, {"Retry-After": "1"})]
        t = _transport(server, clock)
        with pytest.raises(ExchangeError) as info:
            t.get("/x")
    assert info.value.status == 429 and info.value.code == -1003
    assert t.sleeps == [1.0] * REST.max_retries


def test_connection_errors_retry_then_raise():
    clock = FakeClock(start=6000.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = RestTransport(
        f"http://127.0.0.1:{port}", REST, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0
    )
    with pytest.raises(ExchangeError, match="giving up"):
        t.get("/x")
    assert t.sleeps == [0.5, 1.0, 2.0]


def test_timeout_is_transient():
    clock = FakeClock(start=6000.0)
    rest = RestSettings(max_retries=2, backoff_base_seconds=0.5, timeout_seconds=0.2)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {}, delay=1.0), Reply(200, {"ok": 1})]
        t = _transport(server, clock, rest)
        body, _ = t.get("/x")
    assert body == {"ok": 1}
    assert t.sleeps == [0.5]


def test_non_json_success_body_is_a_message_error():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, b"<html>maintenance</html>")]
        t = _transport(server, clock)
        with pytest.raises(MessageError):
            t.get("/x")


def test_budget_reserved_before_each_request_and_waits_when_full():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {})]
        budget = WeightBudget(100, 0.5, clock=clock.time, sleep=clock.sleep)
        t = RestTransport(server.url, REST, budget, clock=clock.time, sleep=clock.sleep)
        for _ in range(6):
            t.get("/x", weight=10)
    assert budget.sleeps == [pytest.approx(60.0)]  # the sixth request waited for a new window
    assert budget.used == 10
