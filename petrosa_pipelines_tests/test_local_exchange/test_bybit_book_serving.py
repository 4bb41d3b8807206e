"""The local exchange keeps answering while it builds a Bybit daily order-book file.

A day's file takes seconds to build; built on the server's event loop, it froze every websocket
and REST answer for that long. Here the build is held on purpose (the archive's builder waits
for the test's signal before building), so the order of events does not depend on any machine's
speed: while the build is held, REST answers, a websocket subscribes, pings and streams book
deltas, and the file's request is still waiting; once released, the file arrives, the same bytes
as a direct build. Concurrent requests for one file share one build; built files stay in memory
within their bounds; a failed build is not kept.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.local_exchange.venues.bybit.book_archive import BookArchive
from petrosa_pipelines.local_exchange.venues.bybit.book_file import book_history_zip

pytestmark = pytest.mark.integration

SYM = "BTCUSDT"
#: two closed days (the clock stands on the third)
NOW = "2024-01-03T00:00:30+00:00"
DAYS = ("2024-01-01", "2024-01-02")
#: generous: a loaded 2-core machine
DEADLINE_S = 120.0


def _path(day: str, sym: str = SYM, depth: int = 200) -> str:
    return f"/orderbook/linear/{sym}/{day}_{sym}_ob{depth}.data.zip"


class HeldBuilder:
    """The archive's builder, held until released; counts the builds it was asked for."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[str, str]] = []
        self.fail = False

    def __call__(self, formats: Any, symbol: str, day: Any, u_of: Any, restarts: Any) -> bytes:
        self.calls.append((symbol, day.isoformat()))
        self.started.set()
        assert self.release.wait(DEADLINE_S), "never released"
        if self.fail:
            raise RuntimeError("the build failed")
        return book_history_zip(formats, symbol, day, u_of, restarts)


@pytest.fixture
def ex() -> Iterator[LocalExchange]:
    cfg = MarketConfig(
        seed=7,
        symbols=(SYM,),
        start_date="2024-01-01",
        trades_per_day=2_000,
        book_levels=50,
        book_step_ms=60_000,
    )
    clock = SimulatedClock(NOW, speed=0.0)
    with LocalExchange(market=cfg, clock=clock, faults=Faults(), tick_seconds=0.01) as exchange:
        yield exchange


@pytest.fixture
def held(ex: LocalExchange) -> Iterator[HeldBuilder]:
    builder = HeldBuilder()
    _books(ex).build = builder
    yield builder
    builder.release.set()  # never leave a worker waiting


def _books(ex: LocalExchange) -> BookArchive:
    return ex.wires["bybit-linear"].rest.books  # type: ignore[attr-defined]


def _get(ex: LocalExchange, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(ex.rest_base_url + path, timeout=DEADLINE_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _in_background(ex: LocalExchange, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(answer=_get(ex, path)), daemon=True)
    thread.start()
    return thread, out


def _direct(ex: LocalExchange, day: str) -> bytes:
    books = _books(ex)
    date = dt.date.fromisoformat(day)
    return book_history_zip(books.formats, SYM, date, books.u_of, tuple(books.restarts()))


def _wait(condition: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_rest_and_websocket_answer_while_a_book_day_is_built(
    ex: LocalExchange, held: HeldBuilder
) -> None:
    thread, out = _in_background(ex, _path(DAYS[1]))
    assert held.started.wait(DEADLINE_S)
    # the build is under way, and stays so until released below: the server answers anyway
    status, body = _get(ex, "/v5/market/time")
    assert status == 200 and json.loads(body)["retCode"] == 0
    with connect(ex.ws_base_url + "/v5/public/linear") as ws:
        ws.send(json.dumps({"op": "subscribe", "args": [f"orderbook.50.{SYM}"], "req_id": "1"}))
        assert json.loads(ws.recv(timeout=DEADLINE_S))["success"] is True
        assert json.loads(ws.recv(timeout=DEADLINE_S))["type"] == "snapshot"
        ws.send('{"op":"ping","req_id":"p"}')
        assert json.loads(ws.recv(timeout=DEADLINE_S))["ret_msg"] == "pong"
        deltas = []
        for _ in range(3):  # a book step at a time (a larger jump skips data, as an outage)
            ex.clock.advance(60_000)  # type: ignore[attr-defined]
            deltas.append(json.loads(ws.recv(timeout=DEADLINE_S)))
        assert [d["type"] for d in deltas] == ["delta"] * 3
    assert thread.is_alive() and "answer" not in out  # the file's request is still waiting
    held.release.set()
    thread.join(DEADLINE_S)
    assert out["answer"] == (200, _direct(ex, DAYS[1]))
    assert held.calls == [(SYM, DAYS[1])]


def test_requests_for_one_file_share_one_build_and_it_is_kept(
    ex: LocalExchange, held: HeldBuilder
) -> None:
    books = _books(ex)
    fetch, entered = books.fetch, []

    async def counted(path: str) -> bytes | None:
        entered.append(path)
        return await fetch(path)

    books.fetch = counted  # type: ignore[method-assign]
    first = _in_background(ex, _path(DAYS[0]))
    assert held.started.wait(DEADLINE_S)
    second = _in_background(ex, _path(DAYS[0]))
    _wait(lambda: len(entered) == 2, "the second request to reach the archive")
    held.release.set()
    for thread, out in (first, second):
        thread.join(DEADLINE_S)
        assert out["answer"] == (200, _direct(ex, DAYS[0]))
    assert held.calls == [(SYM, DAYS[0])]  # one build for both
    assert _get(ex, _path(DAYS[0]))[0] == 200 and held.calls == [(SYM, DAYS[0])]  # kept
    # files that do not exist are answered at once, nothing built
    for path in (_path("2024-01-03"), _path(DAYS[0], depth=500), _path(DAYS[0], sym="ETHUSDT")):
        assert _get(ex, path)[0] == 404
    assert held.calls == [(SYM, DAYS[0])]


def test_kept_files_are_bounded_and_a_failed_build_is_not_kept(
    ex: LocalExchange, held: HeldBuilder
) -> None:
    books = _books(ex)
    books.max_files = 1
    held.release.set()
    for day in (DAYS[0], DAYS[1], DAYS[1], DAYS[0]):
        assert _get(ex, _path(day)) == (200, _direct(ex, day))
    # the second day pushed the first out; asked again, it is built again
    assert held.calls == [(SYM, DAYS[0]), (SYM, DAYS[1]), (SYM, DAYS[0])]
    assert list(books.files) == [(SYM, dt.date.fromisoformat(DAYS[0]))]
    books.max_bytes = 1_000  # smaller than any file: each is served, none kept
    assert _get(ex, _path(DAYS[1]))[0] == 200 and _get(ex, _path(DAYS[1]))[0] == 200
    assert held.calls[3:] == [(SYM, DAYS[1])] * 2 and not books.files
    held.fail = True
    assert _get(ex, _path(DAYS[0]))[0] == 500  # the server's answer to a failed handshake
    held.fail = False
    assert _get(ex, _path(DAYS[0])) == (200, _direct(ex, DAYS[0]))
    assert held.calls[5:] == [(SYM, DAYS[0])] * 2
