"""A single frame must never hurt other data (issue 11, items 8, 10 and 14, and the hostile suite).

* item 8: an implausible id or time is dead-lettered with its reason; it never becomes a stream's
  de-duplication floor (which dropped 1,904 of the next 6,000 trades as duplicates).
* item 10: undecodable frames (invalid UTF-8 inside a string, deep nesting, a rate overflowing
  ``decimal``) are dead letters, not exceptions that end the connection.
* item 14: a frame whose stream name is about another symbol than its data is dead-lettered.
* the hostile suite: 10,000 generated hostile frames interleaved with the real recorded
  2021-04-17 USD-M frames (fixtures/binance/PROVENANCE.md), sent over a real websocket into the
  engine's real message path: no exception escapes (the one connection survives), every hostile
  frame is a dead letter with a reason, every good frame lands once, de-duplication still holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import serve

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn as _Conn
from petrosa_pipelines.ingest.streams import DEDUP_WINDOW, MAX_FUTURE_MS, MAX_PAST_MS
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines_tests.test_ingest.conftest import run_engine
from petrosa_pipelines_tests.test_landing import binance_frames as bf

T0 = 1_704_240_000_000  # 2024-01-03
DAY = dt.date(2024, 1, 3)
S = "BTCUSDT"
LAG = 40  # ms from a trade to our receipt


@pytest.fixture
def engine(tmp_path):
    cfg = IngestConfig(group="hostile", symbols=(S, "ETHUSDT"), landing_path=str(tmp_path))
    eng = IngestEngine(cfg)
    conn = _Conn(1, "t")
    eng._primary = conn
    for st in eng._streams.values():
        st.source = conn.id
    eng.writer.start()
    yield eng
    if eng.writer.alive:
        eng.writer.close()


def _close(engine: IngestEngine, tmp_path: Path) -> LandingStore:
    engine.flush_landing()
    engine.writer.close()
    return LandingStore(tmp_path)


def _landed(store: LandingStore) -> list[bytes]:
    return [p for _, p in store.iter_lines("binance", T0 - 86_400_000, T0 + 86_400_000)]


def _trade(agg_id: int, t: int, **over) -> bytes:
    data = orjson.loads(bf.agg_trade(S, agg_id, t))["data"]
    return bf._frame(f"{S.lower()}@aggTrade", {**data, **over})


# -- item 8 ------------------------------------------------------------------------------------


def test_an_implausible_id_or_time_is_dead_lettered_and_dedup_survives(engine, tmp_path):
    conn = engine._primary
    good = [_trade(1000 + i, T0 + i) for i in range(100)]
    for i, f in enumerate(good):
        engine._on_frame(conn, f, T0 + i + LAG)
    recv = T0 + 100 + LAG
    poison = {
        # a legal int64, never a Binance id: rejected by the parser
        _trade(2**63 - 1, T0 + 100): "data.a",
        # within the parser's range but 1e12 away from this stream's ids
        _trade(1099 + 10**12, T0 + 100): "data.a",
        # times far from the receipt
        _trade(1100, T0 + 100, E=2**63 - 1): "data.E",
        _trade(1100, T0 + 100, E=recv + MAX_FUTURE_MS + 1): "data.E",
        _trade(1100, T0 - MAX_PAST_MS - 1000, E=T0 + 100): "data.T",
        bf.mark_price(S, 2**63 - 1, "0.0001", T0 + 3_600_000): "data.E",
        bf.mark_price(S, recv + 86_400_000, "0.0001", T0 + 3_600_000): "data.E",
        bf.kline(S, 0, True, recv): "data.k.t",
    }
    for f in poison:
        engine._on_frame(conn, f, recv)
    after = [_trade(1100 + i, T0 + 100 + i) for i in range(6000)]
    for i, f in enumerate(after):
        engine._on_frame(conn, f, T0 + 100 + i + LAG)
    store = _close(engine, tmp_path)
    assert _landed(store) == good + after  # the issue: 1,904 of these 6,000 were dropped
    dead = {d.raw: d for d in store.dead_letters("binance", DAY)}
    assert set(dead) == set(poison)
    for raw, fld in poison.items():
        assert dead[raw].field == fld and dead[raw].reason, dead[raw]
    st = engine._streams[(type(engine.adapter.parse(good[0])), S)]
    assert st.stats.duplicates == 0 and len(after) > DEDUP_WINDOW
    # de-duplication still works: a replay of recent trades lands nothing
    assert st.floor is not None and st.floor < 1100 + 6000


def test_an_outlier_first_message_disables_neither_dedup_nor_gap_detection(engine, tmp_path):
    """The first message of a stream has no range to be judged by; an outlier there is landed,
    but it becomes neither the de-duplication floor nor the stream's highest trade id."""
    conn = engine._primary
    engine._on_frame(conn, _trade(10**15, T0), T0 + LAG)  # corrupt, but cannot be known yet
    after = [_trade(1000 + i, T0 + 1 + i) for i in range(6000)]
    for i, f in enumerate(after):
        engine._on_frame(conn, f, T0 + 1 + i + LAG)
    # a real id gap after the outlier is still detected and ledgered
    engine._on_frame(conn, _trade(7002, T0 + 7000), T0 + 7000 + LAG)
    engine._on_frame(conn, _trade(7003, T0 + 12_000), T0 + 12_000 + LAG)
    store = _close(engine, tmp_path)
    landed = _landed(store)
    assert landed[1:6001] == after  # none dropped as duplicates
    gaps = store.gaps("binance", T0 - 60_000, T0 + 60_000, "trades", S)
    assert [g.detail for g in gaps if g.cause == "id_gap"] == ["agg_trade_id 7000..7001"]
    assert engine._streams[(type(engine.adapter.parse(after[0])), S)].top == 7003


# -- item 10 -----------------------------------------------------------------------------------


UNDECODABLE = {
    "invalid UTF-8 in a string": _trade(1, T0).replace(b'"s":"BTCUSDT"', b'"s":"BTC\xffUSDT"'),
    "invalid UTF-8 in the stream": _trade(1, T0).replace(b"btcusdt@", b"btc\xc3\x28usdt@"),
    "1,000 nested arrays": b'{"stream":"btcusdt@aggTrade","data":' + b"[" * 1000 + b"]" * 1000
    + b"}",
    "deep object in an extra field": _trade(1, T0).replace(
        b'"m":', b'"z":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b',"m":'
    ),
    "rate overflowing decimal": bf.mark_price(S, T0, "1e999999999", T0 + 3_600_000),
    "tiny exponent price": _trade(1, T0, p="1e-999999999"),
    "40-digit price": _trade(1, T0, p="9" * 40),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_frames_are_dead_letters_not_exceptions(engine, tmp_path, name):
    conn = engine._primary
    engine._on_frame(conn, _trade(99, T0 - 1), T0 + LAG)
    engine._on_frame(conn, UNDECODABLE[name], T0 + LAG)  # raised before: ended the connection
    engine._on_frame(conn, _trade(100, T0), T0 + LAG)
    store = _close(engine, tmp_path)
    (dead,) = store.dead_letters("binance", DAY)
    assert dead.raw == UNDECODABLE[name] and dead.reason and dead.field
    assert _landed(store) == [_trade(99, T0 - 1), _trade(100, T0)]


def test_parse_many_does_not_abort_a_batch_on_a_bad_frame():
    adapter = IngestEngine(IngestConfig(group="x", symbols=(S,))).adapter
    good = [_trade(1, T0), _trade(2, T0)]
    records, errors = adapter.parse_many([good[0], *UNDECODABLE.values(), good[1]])
    assert [r.agg_trade_id for r in records] == [1, 2]
    assert len(errors) == len(UNDECODABLE) and all(e.reason for e in errors)


# -- item 14 -----------------------------------------------------------------------------------


def _retag(frame: bytes, stream: str) -> bytes:
    return bf._frame(stream, orjson.loads(frame)["data"])


MISMATCHED = [
    _retag(_trade(5, T0), "ethusdt@aggTrade"),  # the fast path routed this by "s" to ETHUSDT
    _retag(bf.kline(S, T0 - 60_000, True, T0), "ethusdt@kline_1m"),
    _retag(bf.mark_price(S, T0, "0.0001", T0 + 3_600_000), "ethusdt@markPrice@1s"),
    _retag(bf.depth_update(S, 10, 12, 9, T0, bids=[("100.1", "1.5")]), "ethusdt@depth@100ms"),
]


def test_a_frame_whose_stream_and_symbol_disagree_is_dead_lettered(engine, tmp_path):
    conn = engine._primary
    for f in MISMATCHED:
        engine._on_frame(conn, f, T0 + LAG)
    store = _close(engine, tmp_path)
    assert _landed(store) == []  # before: landed, and unreadable under either symbol
    dead = store.dead_letters("binance", DAY)
    assert sorted(d.raw for d in dead) == sorted(MISMATCHED)
    assert {d.field for d in dead} == {"stream"}


# -- the hostile suite -------------------------------------------------------------------------

REC = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "ws" / "cryptofeed_2021-04-17"
SYMBOLS = ("DENTUSDT", "KSMUSDT", "XMRUSDT", "YFIUSDT")
N_HOSTILE = 10_000
SEED = 20_110_008


def _recorded() -> list[bytes]:
    """The real frames of the four symbols, in event-time order (stable per stream)."""
    frames = [
        line for name in ("aggTrade", "kline", "depthUpdate")
        for line in (REC / f"{name}.jsonl").read_bytes().splitlines()
    ]  # fmt: skip
    return sorted(frames, key=lambda f: orjson.loads(f)["data"]["E"])


RECV = max(orjson.loads(f)["data"]["E"] for f in _recorded()) + 500
WRONG_TYPES = ['"12"', "true", "null", "1.5", "[]", "{}", '"x"', "-1"]
JUNK_DECIMALS = [
    "NaN", "-Infinity", "Infinity", "sNaN", "-1", "0", "1e30", "1e999999999", "1e-999999999",
    "1" + "0" * 39, "9" * 40, "2.8e-20", "abc", "", "1.2.3", "1E+30", "-0.0",
]  # fmt: skip


def _dumps(stream: str, data: dict) -> bytes:
    import msgspec  # encodes integers beyond 64 bits, unlike orjson

    return msgspec.json.encode({"stream": stream, "data": data})


class _Hostile:
    """Deterministic hostile frames built from a real frame (``rng`` seeded once)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def truncated(self, f: bytes) -> bytes:
        return f[: self.rng.randrange(len(f) - 1)]

    def wrong_type(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        d = msg["data"]
        key = self.rng.choice(
            {"aggTrade": "EaspqflTm", "depthUpdate": "EsUuba", "kline": "Esk"}[d["e"]]
        )
        value = self.rng.choice(WRONG_TYPES)
        if key in "pq" and value in ('"12"', "1.5"):  # fine prices (a number is one too)
            value = "null"
        if key in "bak" and value == "[]":  # a level list may be empty
            value = "true"
        if key == "m" and value == "true":
            value = '"true"'
        body = orjson.dumps(msg).replace(
            b'"%b":%b' % (key.encode(), orjson.dumps(d[key])), b'"%b":%b' % (key.encode(),
                                                                            value.encode()), 1
        )  # fmt: skip
        return body

    def bad_number(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        d = msg["data"]
        if d["e"] == "aggTrade":
            if self.rng.random() < 0.5:
                d[self.rng.choice("pq")] = self.rng.choice(JUNK_DECIMALS)
            else:
                d[self.rng.choice("aflET")] = self.rng.choice([2**63 - 1, 2**64, 2**70, -5])
        elif d["e"] == "depthUpdate":
            side = "b" if d["b"] else "a"
            if not d[side]:
                d["b"] = [["1", "1"]]
                side = "b"
            lvl = self.rng.randrange(len(d[side]))
            d[side][lvl][0] = self.rng.choice(JUNK_DECIMALS)
        else:
            d["k"][self.rng.choice("ochl")] = self.rng.choice(JUNK_DECIMALS)
        return _dumps(msg["stream"], d)

    def invalid_utf8(self, f: bytes) -> bytes:
        at = f.index(b'"s":"') + 5
        bad = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])
        return f[:at] + bad + f[at:]

    def deep(self, f: bytes) -> bytes:
        n = self.rng.randrange(1000, 3000)
        if self.rng.random() < 0.5:
            return b'{"stream":"yfiusdt@aggTrade","data":' + b"[" * n + b"]" * n + b"}"
        return f[:-2] + b',"z":' + b'{"a":' * n + b"0" + b"}" * n + b"}}"

    def unknown_event(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        sym = msg["data"]["s"]
        e = self.rng.choice(["forceOrder", "ORDER_TRADE_UPDATE", "", "aggtrade", "24hrTicker"])
        return _dumps(f"{sym.lower()}@{e}", {"e": e, "E": RECV - 10, "s": sym})

    def unsubscribed(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        d = {**msg["data"], "s": "BTCUSDT"}
        if "k" in d:
            d["k"] = {**d["k"], "s": "BTCUSDT"}
        return _dumps("btcusdt@" + msg["stream"].split("@", 1)[1], d)

    def mismatch(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        other = self.rng.choice([s for s in SYMBOLS if s != msg["data"]["s"]])
        return _dumps(other.lower() + "@" + msg["stream"].split("@", 1)[1], msg["data"])

    def implausible_time(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        d = msg["data"]
        far = self.rng.choice([RECV + MAX_FUTURE_MS + 1 + self.rng.randrange(10**9),
                               RECV - MAX_PAST_MS - 1 - self.rng.randrange(10**9)])  # fmt: skip
        d["E"] = far
        return _dumps(msg["stream"], d)

    def implausible_id(self, f: bytes) -> bytes:
        msg = orjson.loads(f)
        d = msg["data"]
        key = "a" if d["e"] == "aggTrade" else "u"
        jump = self.rng.choice([1, -1]) * self.rng.randrange(10**9, 10**12)
        d[key] = d[key] + jump if d[key] + jump >= 0 else d[key] - jump
        if key == "a":
            d["f"] = d["l"] = d["a"]
        else:
            d["U"] = d["u"]
        return _dumps(msg["stream"], d)


def _scenario(rng: random.Random) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
    """(frames to send, good frames expected landed, hostile frames, duplicates sent)."""
    good = _recorded()
    first, second = good[: len(good) * 3 // 4], good[len(good) * 3 // 4 :]
    h = _Hostile(rng)
    kinds = [h.truncated, h.wrong_type, h.bad_number, h.invalid_utf8, h.deep, h.unknown_event,
             h.unsubscribed, h.mismatch, h.implausible_time]  # fmt: skip
    per_stream: Counter[str] = Counter()
    sent: list[bytes] = []
    hostile: list[bytes] = []
    n_good = 0
    for i in range(N_HOSTILE):
        if i % 8 == 0 and n_good < len(first):
            sent.append(first[n_good])
            per_stream[orjson.loads(first[n_good])["stream"]] += 1
            n_good += 1
        base = rng.choice(first[max(n_good - 50, 0) : max(n_good, 5)])
        stream = orjson.loads(base)["stream"]
        kind = rng.choice(kinds)
        # a stream's range is known once two of its messages agree (before, nothing can judge)
        if per_stream[stream] >= 2 and b'"e":"kline"' not in base and rng.random() < 0.12:
            kind = h.implausible_id
        bad = kind(base)
        hostile.append(bad)
        sent.append(bad)
    sent += first[n_good:]
    duplicates = list(first)  # everything landed once already: must land nothing now
    sent += duplicates
    sent += second
    return sent, first + second, hostile, duplicates


class _NoRest:
    def depth_snapshot(self, symbol: str, limit: int):
        raise ConnectionError("no REST in this test")


def test_ten_thousand_hostile_frames_among_real_ones(tmp_path):
    sent, good, hostile, duplicates = _scenario(random.Random(SEED))
    assert len(hostile) >= 10_000 and len(good) == 1300

    async def handler(ws) -> None:
        for f in sent:
            try:
                f.decode()
            except UnicodeDecodeError:
                await ws.send(f)  # binary frame
            else:
                await ws.send(f, text=True)
        await ws.wait_closed()

    async def scenario(engine: IngestEngine) -> None:
        for _ in range(1200):  # the condition, not a speed: at most 60 s
            c = engine._primary
            if c is not None and c.messages >= len(sent):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"engine saw {engine._primary and engine._primary.messages} frames")

    async def main() -> IngestEngine:
        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            cfg = IngestConfig(
                group="hostile", symbols=SYMBOLS, landing_path=str(tmp_path),
                ws_base_url=f"ws://127.0.0.1:{port}", rest_base_url=f"http://127.0.0.1:{port}",
                heartbeat_interval_s=5.0,
            )  # fmt: skip
            engine = IngestEngine(cfg, clock_ms=lambda: RECV, rest_client=_NoRest())
            await asyncio.to_thread(run_engine, engine, scenario)
            return engine

    engine = asyncio.run(main())
    st = engine.stats
    # no exception escaped the message path: the one connection carried every frame
    assert (st.connections_opened, st.disconnects, st.reconnects) == (1, 0, 0)
    store = LandingStore(tmp_path)
    landed = [p for _, p in store.iter_lines("binance", RECV - 3_600_000, RECV + 3_600_000)]
    assert landed == good  # every good frame once, in order; no hostile frame
    dead = store.dead_letters("binance", dt.datetime.fromtimestamp(RECV / 1000, dt.UTC).date())
    assert Counter(d.raw for d in dead) == Counter(hostile)
    assert all(d.reason and d.field for d in dead)
    assert st.dead_letters == len(hostile)
    # de-duplication intact: the replay of everything landed counted as duplicates only
    assert sum(s.duplicates for s in st.streams.values()) == len(duplicates)
