"""WeightBudget and RestTransport: budget windows, header sync, 429/418/5xx/4xx handling.

The transport is venue-neutral; these tests drive it with Binance's ``rate_model`` (so they
also pin Binance's behaviour: 429/418, the used-weight header, ``code``/``msg`` bodies) and
with small models of their own for what Binance does not use (rolling windows, requests-left
and reset headers, errors in 2xx bodies).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import multiprocessing
import socket
import threading
import zipfile
import zlib

import pytest
import requests

from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.exchanges.binance.rest import USED_WEIGHT_HEADER, rate_model
from petrosa_pipelines.exchanges.http import TransportError, fetch
from petrosa_pipelines.exchanges.ratelimit import (
    MAX_BAN_SECONDS,
    RateLimitedError,
    RateModel,
    WeightBudget,
    backoff_delay,
    retry_after_seconds,
)
from petrosa_pipelines.exchanges.transport import RestTransport
from petrosa_pipelines.settings import RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeClock, FakeServer, Reply

pytestmark = pytest.mark.unit

REST = RestSettings(max_retries=3, backoff_base_seconds=0.5, backoff_max_seconds=4.0)


BINANCE = rate_model()


def _budget(clock: FakeClock, limit: int = 100, fraction: float = 0.5, **kw) -> WeightBudget:
    return WeightBudget(rate_model(limit), fraction, clock=clock.time, sleep=clock.sleep, **kw)


# ---------------------------------------------------------------------------------------------
# WeightBudget
# ---------------------------------------------------------------------------------------------


def test_budget_is_fraction_of_limit_and_waits_for_next_window():
    clock = FakeClock(start=6000.0 + 10.0)  # 10 s into a minute window
    budget = _budget(clock)
    assert budget.budget_per_window == 50
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
    budget = WeightBudget.from_settings(rest, rate_model(1000))
    assert budget.budget_per_window == 250
    budget.set_limit(2400)
    assert budget.limit == 2400 and budget.budget_per_window == 600
    budget.set_limit(0)  # nonsense from a broken exchangeInfo is ignored
    assert budget.limit == 2400
    with pytest.raises(ValueError):
        WeightBudget(rate_model(100), 1.5)


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
    WeightBudget.from_settings(rest, BINANCE, clock=clock.time, sleep=clock.sleep).reserve(7)
    other = WeightBudget.from_settings(rest, BINANCE, clock=clock.time, sleep=clock.sleep)
    assert other.used == 7
    assert (tmp_path / "budget" / "binance.weight.json").exists()


def _reserve_many(shared_dir: str, n: int) -> None:
    budget = WeightBudget(rate_model(10_000), 1.0, shared_dir=shared_dir, clock=lambda: 6000.0)
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
    budget = WeightBudget(rate_model(10_000), 1.0, shared_dir=tmp_path, clock=lambda: 6000.0)
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
    return RestTransport(
        server.url, rest, BINANCE, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0
    )


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
        with caplog.at_level(logging.ERROR, logger="petrosa_pipelines.exchanges.transport"):
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
        shared = WeightBudget(rate_model(100), 1.0, clock=clock.time, sleep=clock.sleep)
        t = RestTransport(server.url, REST, BINANCE, shared, clock=clock.time, sleep=lambda s: None)
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
        f"http://127.0.0.1:{port}",
        REST,
        BINANCE,
        clock=clock.time,
        sleep=clock.sleep,
        rng=lambda: 1.0,
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
        budget = WeightBudget(rate_model(100), 0.5, clock=clock.time, sleep=clock.sleep)
        t = RestTransport(server.url, REST, BINANCE, budget, clock=clock.time, sleep=clock.sleep)
        for _ in range(6):
            t.get("/x", weight=10)
    assert budget.sleeps == [pytest.approx(60.0)]  # the sixth request waited for a new window
    assert budget.used == 10


# ---------------------------------------------------------------------------------------------
# Retry-After that cannot be trusted (issue 11 item 11)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["inf", "Infinity", "nan", "-1", "-inf", "soon", ""])
def test_unusable_retry_after_is_ignored(raw):
    assert retry_after_seconds({"Retry-After": raw}, now=6000.0) is None


def test_retry_after_is_clamped_to_the_longest_ban_and_reads_http_dates():
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"Retry-After": "1e9"}) == MAX_BAN_SECONDS == 3 * 86400
    date = "Wed, 21 Oct 2015 07:28:30 GMT"  # RFC 9110 example, 30 s after ``now``
    assert retry_after_seconds({"Retry-After": date}, now=1445412480.0) == 30.0
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize("raw", ["inf", "nan", "-1"])
def test_non_finite_retry_after_never_reaches_the_shared_budget_file(tmp_path, raw):
    """Today ``inf`` writes ``"blocked_until": Infinity`` and every later process fails with
    OverflowError in ``time.sleep``; ``nan``/``-1`` raise ValueError. Now the header is
    ignored (the jittered backoff applies) and the file stays strict JSON."""
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(429, {}, {"Retry-After": raw}), Reply(200, {"ok": 1})]
        budget = _budget(clock, 100, 1.0, shared_dir=tmp_path)
        t = RestTransport(
            server.url, REST, BINANCE, budget, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0
        )
        assert t.get("/x")[0] == {"ok": 1}
    assert t.sleeps == [0.5]  # the backoff, not the header
    state = json.loads(
        (tmp_path / "binance.weight.json").read_text(), parse_constant=_refuse_constant
    )
    assert math.isfinite(state["blocked_until"]) and state["blocked_until"] <= clock.now
    other = _budget(clock, 100, 1.0, shared_dir=tmp_path)
    assert other.reserve(1) == 0.0


def _refuse_constant(name: str) -> float:
    raise AssertionError(f"the budget file holds {name}")


def test_huge_retry_after_fails_the_run_instead_of_sleeping_for_years(tmp_path):
    """``Retry-After: 1e9`` hung every process ~31 years. Now the run fails at once with a
    ``RateLimitedError``, and the (clamped) block is shared so the other processes on the IP
    fail fast too instead of hammering a banned IP."""
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(418, {"code": -1003, "msg": "banned"}, {"Retry-After": "1e9"})]
        budget = _budget(clock, 100, 1.0, shared_dir=tmp_path)
        t = RestTransport(server.url, REST, BINANCE, budget, clock=clock.time, sleep=clock.sleep)
        with pytest.raises(RateLimitedError, match="failing instead of sleeping") as info:
            t.get("/x")
    assert info.value.status == 418 and info.value.wait_seconds == MAX_BAN_SECONDS
    assert clock.sleeps == [] and len(server.requests) == 1
    blocked = json.loads((tmp_path / "binance.weight.json").read_text())["blocked_until"]
    assert blocked == pytest.approx(clock.now + MAX_BAN_SECONDS)
    other = _budget(clock, 100, 1.0, shared_dir=tmp_path)
    with pytest.raises(RateLimitedError):
        other.reserve(1)
    assert clock.sleeps == []


def test_retry_after_within_the_allowed_wait_is_still_honoured():
    clock = FakeClock(start=6000.0)
    rest = RestSettings(max_retries=3, max_wait_seconds=600.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(429, {}, {"Retry-After": "600"}), Reply(200, {})]
        t = _transport(server, clock, rest)
        t.get("/x")
    assert t.sleeps == [600.0]


@pytest.mark.parametrize(
    "content",
    [
        '{"window": 100, "used": 5, "blocked_until": Infinity}',
        '{"window": 100, "used": 5, "blocked_until": NaN}',
        '{"window": 1e400, "used": 5}',
        '{"window": 100, "used": 5, "blocked_until": 1e15}',
        '{"window": 100, "used": -3}',
        '{"window": "x", "used": 5}',
        "[1, 2]",
        "\x00\x01garbage",
        "",
    ],
)
def test_a_corrupt_shared_budget_file_is_survived_and_repaired(tmp_path, content):
    clock = FakeClock(start=6000.0)
    path = tmp_path / "binance.weight.json"
    path.write_text(content)
    budget = _budget(clock, 100, 1.0, shared_dir=tmp_path)
    assert budget.reserve(1) == 0.0
    assert json.loads(path.read_text(), parse_constant=_refuse_constant)["used"] == 1


def test_block_until_refuses_non_finite_and_clamps():
    clock = FakeClock(start=6000.0)
    budget = _budget(clock)
    with pytest.raises(ValueError, match="finite"):
        budget.block_until(math.inf)
    budget.block_until(6000.0 + 1e12)
    with pytest.raises(RateLimitedError) as info:
        budget.reserve(1)
    assert info.value.wait_seconds == pytest.approx(MAX_BAN_SECONDS)


# ---------------------------------------------------------------------------------------------
# Typed transport failures and a total deadline (issue 11 item 13), on a loopback socket server
# ---------------------------------------------------------------------------------------------


class RawServer:
    """Answers each connection with the next scripted handler ``(socket) -> None`` (the last
    repeats): raw bytes on 127.0.0.1, for what an HTTP library will not send (cut bodies,
    corrupt encodings, a byte at a time)."""

    def __init__(self, *handlers) -> None:
        self.handlers = list(handlers)
        self.connections = 0
        self.stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn, handler), daemon=True).start()

    def _answer(self, conn: socket.socket, handler) -> None:
        with conn:
            try:
                conn.recv(65536)
                handler(conn, self.stop)
            except OSError:
                pass

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(5)
        self._sock.close()


def _ok(conn: socket.socket, stop: threading.Event) -> None:
    body = b'{"ok": 1}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def _truncated_chunked(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n[1,2,\r\n"
    )


def _truncated_length(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,2")


def _corrupt_deflate(conn: socket.socket, stop: threading.Event) -> None:
    body = zlib.compress(b'{"a": 1}' * 100)[:20] + b"\xff" * 40
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _drip_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while not stop.wait(0.3):
        conn.sendall(b" ")


def _drip_headers(conn: socket.socket, stop: threading.Event) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000:
        if stop.wait(0.3):
            return
        conn.sendall(bytes([byte]))


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (_truncated_chunked, "truncated"),
        (_truncated_length, "truncated"),
        (_corrupt_deflate, "decode"),
    ],
)
def test_transport_failures_are_typed_and_retried(handler, kind):
    """A cut body was a raw ChunkedEncodingError (not retried), a corrupt deflate a raw
    ContentDecodingError: now both are a ``TransportError`` retried within the budget."""
    clock = FakeClock(start=6000.0)
    with RawServer(handler, _ok) as server:
        t = _transport(server, clock)
        assert t.get("/x")[0] == {"ok": 1}
    assert t.sleeps == [0.5] and server.connections == 2
    with RawServer(handler) as server:
        t = _transport(server, clock)
        with pytest.raises(TransportError, match="giving up") as info:
            t.get("/x")
    assert info.value.kind == kind
    assert isinstance(info.value, ExchangeError)
    assert server.connections == REST.max_retries + 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("handler", [_drip_body, _drip_headers])
def test_a_dripping_server_hits_the_total_deadline(handler):
    """One byte every 0.3 s never trips the 5 s per-read timeout (it used to hang forever):
    the per-request deadline ends each attempt, and the retries give up."""
    clock = FakeClock(start=6000.0)
    rest = RestSettings(max_retries=1, timeout_seconds=5.0, deadline_seconds=1.0)
    with RawServer(handler) as server:
        t = _transport(server, clock, rest)
        with pytest.raises(TransportError) as info:
            t.get("/x")
    assert info.value.kind == "deadline"
    assert server.connections == 2


def test_fetch_reports_refused_connections_as_transport_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError) as info:
        fetch(requests.Session(), f"http://127.0.0.1:{port}/x", timeout=2.0, deadline=5.0)
    assert info.value.kind == "connection"


def test_corrupt_deflate_inside_an_archive_is_a_message_error():
    """A zip whose deflate stream is corrupt raised a raw ``zlib.error`` from the archive
    client; now a ``MessageError`` like any other bad archive."""
    from petrosa_pipelines.exchanges.binance.vision import extract_csv

    buf = io.BytesIO()
    rows = "".join(f"{i},{i * 7 % 13}.5,{i * 31 % 97}\n" for i in range(3000))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-aggTrades-2024-01-02.csv", rows)
    data = bytearray(buf.getvalue())
    start = 30 + len("BTCUSDT-aggTrades-2024-01-02.csv")  # local header, then deflate data
    data[start + 5 : start + 40] = b"\xff" * 35
    with pytest.raises(MessageError, match="BTCUSDT"):
        extract_csv(bytes(data), "BTCUSDT-aggTrades-2024-01-02.zip")


def test_vision_client_ignores_an_infinite_retry_after():
    """The archive client slept ``float(Retry-After)``: ``inf`` -> OverflowError, ``-1`` ->
    ValueError. Now the same checked value as the REST transport."""
    from petrosa_pipelines.exchanges.binance.vision import VisionArchiveClient

    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/a.zip"] = [
            Reply(429, b"", {"Retry-After": "inf"}),
            Reply(503, b"", {"Retry-After": "-1"}),
            Reply(200, b"zipbytes"),
        ]
        client = VisionArchiveClient(server.url, REST, sleep=clock.sleep, rng=lambda: 1.0)
        assert client._fetch(server.url + "/a.zip") == b"zipbytes"
    assert client.sleeps == [0.5, 1.0]


# ---------------------------------------------------------------------------------------------
# The venue's RateModel: what Binance's model does not exercise
# ---------------------------------------------------------------------------------------------


def _ret(body):
    return body.get("ret") if isinstance(body, dict) and body.get("ret") else None


#: a venue that counts requests in any 5 s, reports requests left and the reset time, bans
#: with 403 and puts its errors in 200 bodies (``ret``): Bybit's shape, in neutral names
ROLLING = RateModel(
    name="rolling-venue",
    limit=10,
    window_seconds=5.0,
    rolling=True,
    remaining_header="X-Left",
    reset_header="X-Reset-Ms",
    rate_limit_statuses=frozenset({403}),
    ban_seconds={403: 600.0},
    error_code=_ret,
    error_message=lambda body: body.get("why") if isinstance(body, dict) else None,
    body_error=_ret,
    rate_limit_codes=frozenset({7}),
    retry_codes=frozenset({8}),
)


def _rolling(server: FakeServer, clock: FakeClock, rest: RestSettings = REST) -> RestTransport:
    return RestTransport(
        server.url, rest, ROLLING, clock=clock.time, sleep=clock.sleep, rng=lambda: 1.0
    )


def test_a_rolling_window_keeps_half_per_aligned_window_and_rolls_at_its_own_length():
    clock = FakeClock(start=6002.5)  # 2.5 s into an aligned 5 s window
    budget = WeightBudget(ROLLING, 1.0, clock=clock.time, sleep=clock.sleep)
    assert budget.budget_per_window == 5
    assert [budget.reserve(1) for _ in range(5)] == [0.0] * 5
    assert budget.reserve(1) == pytest.approx(2.5)  # the next aligned 5 s window
    fixed = WeightBudget(dataclasses.replace(ROLLING, rolling=False), 1.0, clock=clock.time)
    assert fixed.budget_per_window == 10


def test_each_venue_limit_has_its_own_shared_file(tmp_path):
    clock = FakeClock(start=6000.0)
    mine = WeightBudget(ROLLING, 1.0, shared_dir=tmp_path, clock=clock.time, sleep=clock.sleep)
    binance = _budget(clock, 100, 1.0, shared_dir=tmp_path)
    mine.reserve(4)
    binance.reserve(60)
    assert (mine.used, binance.used) == (4, 60)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "binance.weight.json",
        "rolling-venue.weight.json",
    ]


def test_a_transport_refuses_another_venues_budget():
    clock = FakeClock(start=6000.0)
    with pytest.raises(ValueError, match="cannot spend"):
        RestTransport("http://127.0.0.1:9", REST, ROLLING, _budget(clock))


@pytest.mark.parametrize("name", ["", "../up", ".hidden"])
def test_a_rate_model_name_must_be_a_plain_file_name(name):
    with pytest.raises(ValueError, match="file name"):
        dataclasses.replace(ROLLING, name=name)


def test_no_requests_left_blocks_every_user_until_the_reset():
    clock = FakeClock(start=6000.0)
    reset = str(int((6000.0 + 1.5) * 1000))
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {"ok": 1}, {"X-Left": "0", "X-Reset-Ms": reset})]
        t = _rolling(server, clock)
        t.get("/x")
        assert t.remaining == [0] and t.sleeps == []
        assert t.budget.reserve(1) == pytest.approx(1.5)
        t.get("/x")
    assert t.remaining == [0, 0]


def test_errors_in_2xx_bodies_follow_the_model():
    clock = FakeClock(start=6000.0)
    reset = str(int((6000.0 + 2.0) * 1000))
    with FakeServer() as server:
        server.routes["/x"] = [
            Reply(200, {"ret": 7, "why": "slow down"}, {"X-Reset-Ms": reset}),
            Reply(200, {"ret": 8, "why": "busy"}),
            Reply(200, {"ret": 0, "data": [1]}),
        ]
        server.routes["/bad"] = [Reply(200, {"ret": 3, "why": "no such symbol"})]
        t = _rolling(server, clock)
        assert t.get("/x")[0] == {"ret": 0, "data": [1]}
        assert t.sleeps == [pytest.approx(2.0), 1.0]  # the reset, then backoff 0.5 * 2^1
        with pytest.raises(ExchangeError, match="no such symbol") as info:
            t.get("/bad")
    assert (info.value.status, info.value.code) == (200, 3)
    assert len(server.requests) == 4


def test_a_reset_beyond_the_allowed_wait_fails_instead_of_sleeping():
    clock = FakeClock(start=6000.0)
    reset = str(int((6000.0 + 3600) * 1000))
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {"ret": 7}, {"X-Reset-Ms": reset})]
        t = _rolling(server, clock)
        with pytest.raises(RateLimitedError, match="failing instead of sleeping") as info:
            t.get("/x")
    assert info.value.wait_seconds == pytest.approx(3600) and info.value.code == 7
    assert t.sleeps == []


def test_a_ban_status_waits_the_models_ban_unless_told_otherwise():
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [
            Reply(403, b"access too frequent"),
            Reply(403, b"", {"Retry-After": "30"}),
            Reply(200, {"ret": 0}),
        ]
        t = _rolling(server, clock)
        t.get("/x")
    assert t.sleeps == [600.0, 30.0]


def test_a_2xx_body_with_a_code_is_data_for_a_venue_without_body_errors():
    """Binance's model reads ``code`` only from 4xx bodies, as before venues had models."""
    clock = FakeClock(start=6000.0)
    with FakeServer() as server:
        server.routes["/x"] = [Reply(200, {"code": 200, "msg": "success"})]
        assert _transport(server, clock).get("/x")[0] == {"code": 200, "msg": "success"}
