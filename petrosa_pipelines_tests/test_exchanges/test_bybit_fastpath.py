"""Bybit's ingest fast path (``exchanges/bybit/fastpath.py``) on the real recorded v5 frames.

It vouches only for what the full parser accepts, with the full parser's values (levels as
``float(Decimal)``, signs included), over every recorded delta (the websocket capture and
Bybit's own history download, fixtures/bybit/PROVENANCE.md), over frames mutated into what the
full parser rejects, and over every single-byte edit of a real delta. The engine then lands,
books and dead-letters the capture the same with the fast path as without it, and the depth
rebuild from the landing zone gives the same samples.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest

from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MessageError,
)
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.exchanges.bybit.fastpath import WIRE_FIELDS, BybitFastPath
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn
from petrosa_pipelines.landing import LandingStore, LandingWriter
from petrosa_pipelines.landing.book import BookSample
from petrosa_pipelines.lib.timeutil import DAY_MS
from petrosa_pipelines_tests.test_ingest.bybit_capture import (
    BYBIT_SYMBOLS,
    bybit_frames,
    receipts,
)

pytestmark = pytest.mark.playback

EX = "bybit-linear"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit"
WS = FIXTURES / "ws" / "cryptofeed_2026-08-09"
HISTORY = FIXTURES / "historical_orderbook" / "2024-12-01_XRPUSDT_ob500.data"


def _lines(name: str) -> list[bytes]:
    return (WS / f"linear_{name}.jsonl").read_bytes().splitlines()


BOOK = _lines("orderbook")
#: Bybit's history download: the same messages as the live topic, CRLF (stripped here)
HISTORY_LINES = [line.strip() for line in HISTORY.read_bytes().splitlines()]
#: a real BTCUSDT delta (6 bids, 16 asks, deletes among them) and the shortest real delta
DELTA = BOOK[1]
SHORT = BOOK[33]
assert b'"type":"delta"' in DELTA and SHORT.startswith(b'{"topic":"orderbook.200.SOLUSDT"')


def _expected(rec: DepthUpdateRecord, topic: str) -> tuple:
    """What the fast path must give for a delta the full parser made ``rec`` of."""
    return (
        DepthUpdateRecord,
        topic,
        rec.event_time,
        rec.first_update_id,
        rec.final_update_id,
        rec.prev_final_update_id,
        tuple((float(p), float(q)) for p, q in rec.bids),
        tuple((float(p), float(q)) for p, q in rec.asks),
    )


def _same(got: tuple, want: tuple) -> bool:
    """Equal, and ``repr`` equal too: ``-0.0 == 0.0`` but a book must not see a sign flip."""
    return got == want and repr(got) == repr(want)


def _full(raw: bytes) -> list:
    return BybitLinearAdapter().parse_frame(raw, 7)


# -- every real frame ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["websocket", "history"])
def test_every_real_delta_takes_the_fast_path_with_the_full_parsers_values(source):
    lines = BOOK if source == "websocket" else HISTORY_LINES
    full, fast_adapter = BybitLinearAdapter(), BybitLinearAdapter()
    fast = fast_adapter.fast_path()
    kinds = {DepthUpdateRecord: 0, DepthSnapshotRecord: 0}
    for line in lines:
        (rec,) = full.parse_frame(line, 7)
        got = fast.decode(line, 7)
        kinds[type(rec)] += 1
        if type(rec) is DepthSnapshotRecord:
            assert got is None  # the full parser builds the snapshot that replaces the book
            fast_adapter.parse_frame(line, 7)  # as the engine then does
            continue
        assert _same(got, _expected(rec, json.loads(line)["topic"])), line[:80]
    want = {"websocket": (1594, 4), "history": (49, 1)}[source]
    assert (kinds[DepthUpdateRecord], kinds[DepthSnapshotRecord]) == want
    # the adapter ends in the state its full parser leaves (``seq`` of each symbol's last frame)
    assert fast_adapter.book_seq == full.book_seq and full.book_seq


def test_other_topics_and_control_frames_take_the_full_parser():
    fast = BybitLinearAdapter().fast_path()
    others = [*_lines("publicTrade"), *_lines("kline"), *_lines("tickers"), *_lines("control")]
    assert len(others) > 900
    assert all(fast.decode(line, 7) is None for line in others)
    assert fast.decode(DELTA.decode(), 7) is None  # str: the full parser's business


# -- frames the full parser rejects ---------------------------------------------------------------

BID = b'["65095.30","0.005"]'
REJECTED_BY_FULL_PARSER = {
    "price abc": DELTA.replace(b'"65095.30"', b'"abc"'),
    "price NaN": DELTA.replace(b'"65095.30"', b'"NaN"'),
    "price zero": DELTA.replace(b'"65095.30"', b'"0"'),
    "price 1e18": DELTA.replace(b'"65095.30"', b'"1000000000000000000"'),
    # below the full parser's 1e-12, but its nearest double is 1e-12's
    "price just below 1e-12": DELTA.replace(b'"65095.30"', b'"0.00000000000099999999999999999999"'),
    "price empty": DELTA.replace(b'"65095.30"', b'""'),
    "price two dots": DELTA.replace(b'"65095.30"', b'"65.095.30"'),
    "negative qty": DELTA.replace(b'"0.005"', b'"-0.005"'),
    # a lax float makes this -0.0, which passes ">= 0"; Decimal says it is below zero
    "tiny negative qty": DELTA.replace(b'"0.005"', b'"-1e-400"'),
    "escaped tiny negative qty": DELTA.replace(b'"0.005"', b'"\\u002d1e\\u002d400"'),
    "qty 1e18": DELTA.replace(b'"0.005"', b'"1000000000000000000"'),
    "level of three": DELTA.replace(BID, b'["65095.30","0.005","1"]'),
    "level of one": DELTA.replace(BID, b'["65095.30"]'),
    "level as object": DELTA.replace(BID, b'{"p":"65095.30","q":"0.005"}'),
    "symbol mismatch": DELTA.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'),
    "topic without symbol": DELTA.replace(b'"orderbook.200.BTCUSDT"', b'"orderbook.200."'),
    "topic and data without symbol": DELTA.replace(b"BTCUSDT", b""),
    "u zero": DELTA.replace(b'"u":15076953', b'"u":0'),
    "u negative": DELTA.replace(b'"u":15076953', b'"u":-15076953'),
    "u a string": DELTA.replace(b'"u":15076953', b'"u":"15076953"'),
    "u a float": DELTA.replace(b'"u":15076953', b'"u":15076953.0'),
    "u above 2**53": DELTA.replace(b'"u":15076953', b'"u":9007199254740993'),
    "ts a string": DELTA.replace(b'"ts":1786310818130', b'"ts":"1786310818130"'),
    "ts after 2100": DELTA.replace(b'"ts":1786310818130', b'"ts":4102444800001'),
    "type partial": DELTA.replace(b'"type":"delta"', b'"type":"partial"'),
    "no u": DELTA.replace(b',"u":15076953', b""),
    "no s": DELTA.replace(b'"s":"BTCUSDT",', b""),
    "no b": DELTA.replace(b'"b":[', b'"x":['),
    "no ts": DELTA.replace(b'"ts":1786310818130,', b""),
    "duplicate b, first invalid": DELTA.replace(b'"b":[', b'"b":[["x","1"]],"b":[', 1),
    "duplicate ts, first a string": DELTA.replace(b'"ts":', b'"ts":"1","ts":'),
    "duplicate u, first negative": DELTA.replace(b',"u":', b',"u":-1,"u":'),
    "invalid UTF-8": DELTA.replace(b'"s":"BTCUSDT"', b'"s":"BTC\xffUSDT"'),
    "truncated": DELTA[:-1],
}
ACCEPTED_BY_FULL_PARSER_ONLY = {  # valid, but not what the fast path vouches for
    "snapshot": DELTA.replace(b'"type":"delta"', b'"type":"snapshot"'),
    "spot key order": DELTA.replace(
        b'"type":"delta","ts":1786310818130', b'"ts":1786310818130,"type":"delta"'
    ),
    "spaces": DELTA.replace(b'"b":', b'"b": '),
    "space inside the levels": DELTA.replace(BID, b'["65095.30", "0.005"]'),
    "escaped key": DELTA.replace(b'"seq":', b'"\\u0073eq":'),
    "escaped digit": DELTA.replace(b'"65095.30"', b'"\\u00365095.30"'),
    "no seq": DELTA.replace(b',"seq":753843913870', b""),
    "seq null": DELTA.replace(b'"seq":753843913870', b'"seq":null'),
    "no cts": DELTA.replace(b',"cts":1786310818129', b""),
    "extra key": DELTA.replace(b',"seq":', b',"x":1,"seq":'),
    "exponent": DELTA.replace(b'"65095.30"', b'"6.509530e4"'),
    "underscore decimal": DELTA.replace(b'"65095.30"', b'"65_095.30"'),
    "leading plus": DELTA.replace(b'"65095.30"', b'"+65095.30"'),
    "negative zero qty": DELTA.replace(b'"0.005"', b'"-0"'),
    "short decimal": DELTA.replace(b'"65095.30"', b'".5"'),
    "leading zero": DELTA.replace(b'"65095.30"', b'"065095.30"'),
    "price 1e-12": DELTA.replace(b'"65095.30"', b'"0.000000000001"'),
    # below the full parser's 1e18, but its nearest double is 1e18
    "price just below 1e18": DELTA.replace(b'"65095.30"', b'"999999999999999999.9"'),
}
#: unusual but canonical: the fast path takes them, with the full parser's values
VOUCHED_WITH_THE_SAME_VALUES = {
    "bare numbers": DELTA.replace(BID, b"[65095.30,0.005]"),
    "empty sides": DELTA.replace(
        DELTA[DELTA.index(b'"b":') : DELTA.index(b',"u":')], b'"b":[],"a":[]'
    ),
    "topic without depth": DELTA.replace(b'"orderbook.200.BTCUSDT"', b'"orderbook.BTCUSDT"'),
    "long decimal": DELTA.replace(b'"0.005"', b'"0.1000000000000000055511151231257827021181"'),
    "u one": DELTA.replace(b'"u":15076953', b'"u":1'),
    "non-ASCII symbol": DELTA.replace(b"BTCUSDT", "BTCÜSDT".encode()),
}


@pytest.mark.parametrize("name", sorted(REJECTED_BY_FULL_PARSER))
def test_the_fast_path_declines_what_the_full_parser_rejects(name):
    frame = REJECTED_BY_FULL_PARSER[name]
    assert frame != DELTA
    with pytest.raises(MessageError):
        _full(frame)
    assert BybitLinearAdapter().fast_path().decode(frame, 7) is None


@pytest.mark.parametrize("name", sorted(ACCEPTED_BY_FULL_PARSER_ONLY))
def test_unusual_but_valid_frames_take_the_full_parser(name):
    frame = ACCEPTED_BY_FULL_PARSER_ONLY[name]
    assert frame != DELTA
    assert len(_full(frame)) == 1
    assert BybitLinearAdapter().fast_path().decode(frame, 7) is None


@pytest.mark.parametrize("name", sorted(VOUCHED_WITH_THE_SAME_VALUES))
def test_unusual_canonical_frames_give_the_full_parsers_values(name):
    frame = VOUCHED_WITH_THE_SAME_VALUES[name]
    assert frame != DELTA
    (rec,) = _full(frame)
    got = BybitLinearAdapter().fast_path().decode(frame, 7)
    assert _same(got, _expected(rec, json.loads(frame)["topic"]))


def byte_edits(frame: bytes) -> list[bytes]:
    """Every single-byte replacement (by bytes that matter to JSON and numbers) and deletion
    (also the Bybit archive reader's tests)."""
    out = []
    for i in range(len(frame)):
        for b in (b" ", b"0", b"9", b".", b'"', b"\\", b"e", b"-", b",", b"[", b"]", b"{"):
            out.append(frame[:i] + b + frame[i + 1 :])
        out.append(frame[:i] + frame[i + 1 :])
    return out


@pytest.mark.parametrize("frame", [SHORT, DELTA], ids=["short", "btc"])
def test_no_single_byte_edit_makes_the_fast_path_disagree_with_the_full_parser(frame):
    fast = BybitLinearAdapter().fast_path()
    taken = declined_valid = 0
    for mutated in byte_edits(frame):
        got = fast.decode(mutated, 7)
        try:
            recs = _full(mutated)
        except MessageError:
            assert got is None, mutated  # vouched for a frame the full parser rejects
            continue
        if got is None:
            declined_valid += 1
            continue
        taken += 1
        (rec,) = recs
        assert type(rec) is DepthUpdateRecord
        assert _same(got, _expected(rec, json.loads(mutated)["topic"])), mutated
    # harmless edits (other digits, another symbol in both places...) still go fast, and
    # some valid spellings (spaces) take the full parser
    assert taken > 100 and declined_valid > 10


def _decimal_text(rnd: random.Random) -> str:
    """A plain decimal of 1 to 400 digits, a dot anywhere (or none), leading zeros at times."""
    n = rnd.choice([1, 2, 3, 5, 8, 12, 15, 16, 17, 18, 19, 20, 25, 40, 400])
    digits = "".join(rnd.choice("0123456789") for _ in range(n))
    cut = rnd.randint(0, n)
    return digits[:cut] + "." + digits[cut:] if cut < n and rnd.random() < 0.8 else digits


def test_random_decimals_decode_as_the_full_parser_converts_them():
    """The float each level gets is ``float(Decimal)`` of the same text, for strings and for
    bare JSON numbers, long ones included (correct rounding), and the fast path takes a level
    only where the full parser does."""
    rnd = random.Random(20260809)
    fast = BybitLinearAdapter().fast_path()
    taken = 0
    for n in range(3000):
        p, q = _decimal_text(rnd), _decimal_text(rnd)
        level = b'["%b","%b"]' % (p.encode(), q.encode())
        if n % 2:
            level = level.replace(b'"', b"")
        frame = DELTA.replace(BID, level)
        got = fast.decode(frame, 7)
        try:
            (rec,) = _full(frame)
        except MessageError:
            assert got is None, frame[:200]
            continue
        if got is not None:
            taken += 1
            assert _same(got, _expected(rec, "orderbook.200.BTCUSDT")), level
            assert got[6][0] == (float(Decimal(p)), float(Decimal(q)))
    assert taken > 1000


# -- the engine's interface -----------------------------------------------------------------------


def test_routable_stream_of_and_wire_fields():
    fast = BybitLinearAdapter().fast_path()
    assert isinstance(fast, BybitFastPath)
    for symbol in ("BTCUSDT", "1000PEPEUSDT", "BTCPERP", "BTCUSDT-25DEC26"):
        assert fast.routable(symbol)
    for symbol in ("btcusdt", "BTC/USDT", "B", ""):
        assert not fast.routable(symbol)
    assert fast.stream_of(DELTA) == "orderbook.200.BTCUSDT"
    assert fast.stream_of(_lines("publicTrade")[0]) == "publicTrade.BTCUSDT"
    # malformed frames still count against the stream they name (the adapter reads it so too)
    for bad in REJECTED_BY_FULL_PARSER.values():
        if b'"orderbook.200.BTCUSDT"' in bad:
            assert fast.stream_of(bad) == "orderbook.200.BTCUSDT"
    assert fast.stream_of(_lines("control")[0]) is None
    assert fast.stream_of(b'{"topic":"') is None and fast.stream_of(b"\xff") is None
    # dead letters name the fields as Bybit sends them
    wire = json.loads(DELTA)
    assert WIRE_FIELDS["event_time"] in wire and WIRE_FIELDS["symbol"] in wire
    assert WIRE_FIELDS["final_update_id"] == "data.u" and "u" in wire["data"]


# -- the engine with and without the fast path ----------------------------------------------------


class NoRest:
    def depth_snapshot(self, *args):
        raise AssertionError("an in-stream venue needs no REST snapshot")


#: frames fed among the capture's: rejected ones (dead letters), valid ones the fast path
#: declines (a re-spelled copy of a delta already seen: a duplicate), and a delta whose time is
#: implausible (the engine rejects it after the fast path vouched for its spelling)
FUTURE = DELTA.replace(b'"ts":1786310818130', b'"ts":1786320818130')
INJECTED = [
    *REJECTED_BY_FULL_PARSER.values(),
    ACCEPTED_BY_FULL_PARSER_ONLY["spaces"],
    ACCEPTED_BY_FULL_PARSER_ONLY["escaped key"],
    FUTURE,
]


@dataclasses.dataclass
class Run:
    landed: list[tuple[int, bytes]]
    samples: list[BookSample]
    dead: list[tuple[int, bytes, str, str]]
    stats: dict
    full_parsed: list[bytes]
    book_seq: dict
    books: dict


def _ingest(root: Path, fast: str) -> Run:
    """The capture with ``INJECTED`` through one engine; ``fast``: ``on``, ``off`` (no fast
    decode; routes, ``stream_of`` and wire names kept) or ``none`` (no fast path at all)."""
    adapter = BybitLinearAdapter(depth=200)  # the capture's topics: orderbook.200.<symbol>
    if fast == "none":
        adapter.fast_path = lambda: None  # type: ignore[method-assign]
    cfg = IngestConfig(group="by", symbols=BYBIT_SYMBOLS, landing_path=str(root), exchange=EX,
                       rest_base_url="http://127.0.0.1:9")  # fmt: skip
    engine = IngestEngine(cfg, rest_client=NoRest(), adapter=adapter)
    if fast == "off":
        engine._fast_decode = None
    samples: list[BookSample] = []
    keep_samples, keep_full = engine._samples, engine._on_frame_full
    full_parsed: list[bytes] = []

    def collect(batch: list[BookSample]) -> None:
        samples.extend(batch)
        keep_samples(batch)

    def full_path(conn, raw: bytes, recv: int) -> None:
        full_parsed.append(raw)
        keep_full(conn, raw, recv)

    engine._samples = collect  # type: ignore[method-assign]
    engine._on_frame_full = full_path  # type: ignore[method-assign]
    engine._primary = conn = Conn(1, "t")
    for st in engine._streams.values():
        st.source = 1
    engine.writer.start()
    fed = receipts(bybit_frames())
    for n, (recv, f) in enumerate(fed):
        engine._on_frame(conn, f, recv)
        if n % 40 == 20 and INJECTED:
            bad = INJECTED[(n // 40) % len(INJECTED)]
            engine._on_frame(conn, bad, recv)
    for bad in INJECTED:  # every one at least once
        engine._on_frame(conn, bad, fed[-1][0])
    engine.flush_landing()
    engine.writer.close()
    store, books = LandingStore(root), engine._books
    lo, hi = fed[0][0] - DAY_MS, fed[-1][0] + DAY_MS
    day = dt.datetime.fromtimestamp(fed[0][0] / 1000, dt.UTC).date()
    return Run(
        landed=list(store.iter_lines(EX, lo, hi)),
        samples=samples,
        dead=[(d.received_at, d.raw, d.reason, d.field) for d in store.dead_letters(EX, day)],
        stats=dataclasses.asdict(engine.stats),
        full_parsed=full_parsed,
        book_seq=dict(adapter.book_seq),
        books={s: (b.book.synced, b.breaks, b.book.last_update_id) for s, b in books.items()},
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    return {f: _ingest(tmp_path_factory.mktemp(f"bybit_{f}"), f) for f in ("on", "off", "none")}


def test_the_engine_takes_every_real_delta_fast(runs):
    deltas = {f for f in bybit_frames() if f.startswith(b'{"topic":"orderbook.') and
              b'"type":"delta"' in f}  # fmt: skip
    assert len(deltas) == 1594
    on, off = runs["on"], runs["off"]
    assert not deltas & set(on.full_parsed)  # not one reached the full parser
    assert deltas <= set(off.full_parsed)
    assert set(INJECTED) - {FUTURE} <= set(on.full_parsed)  # what it declines: the full parser
    assert FUTURE not in on.full_parsed  # vouched for, then found implausible by the engine


@pytest.mark.parametrize("other", ["off", "none"])
def test_the_engine_lands_and_books_the_same_with_the_fast_path(runs, other):
    on, ref = runs["on"], runs[other]
    assert on.landed == ref.landed
    # every book frame of the capture once (the re-spelled copy was a duplicate)
    assert sum(p.startswith(b'{"topic":"orderbook.') for _, p in on.landed) == 1594 + 4
    assert len(on.samples) > 120 and on.samples == ref.samples
    assert on.book_seq == ref.book_seq and len(on.book_seq) == len(BYBIT_SYMBOLS)
    assert on.books == ref.books and all(s and b == 0 for s, b, _ in on.books.values())
    # dead letters: the same frames, with the full parser's reasons
    assert len(on.dead) > len(INJECTED) and all(d[3] for d in on.dead)
    assert [d[:3] for d in on.dead] == [d[:3] for d in ref.dead]
    assert {d[1] for d in on.dead} == set(REJECTED_BY_FULL_PARSER.values()) | {FUTURE}
    if other == "off":  # the same wire names and stream attribution: everything equal
        assert on.dead == ref.dead and on.stats == ref.stats
    else:  # without a fast path, the engine has no wire names and no stream for a bad frame
        assert [d[3] for d in on.dead if d[1] != FUTURE] == [
            d[3] for d in ref.dead if d[1] != FUTURE
        ]
        assert {d[3] for d in on.dead if d[1] == FUTURE} == {"ts"}
        assert {d[3] for d in ref.dead if d[1] == FUTURE} == {"event_time"}
        assert on.stats["unknown_stream_failures"] < ref.stats["unknown_stream_failures"]


# -- the depth rebuild from the landing zone ------------------------------------------------------


def test_the_depth_rebuild_takes_deltas_fast_and_gives_the_same_samples(tmp_path, monkeypatch):
    fed = receipts(bybit_frames())
    with LandingWriter(tmp_path, EX, "by") as w:
        for recv, f in fed:
            assert w.put(recv, f)
    lo, hi = fed[0][0] - DAY_MS, fed[-1][0] + DAY_MS
    parsed: list[bytes] = []
    parse_frame = BybitLinearAdapter.parse_frame

    def counting(self, raw, received_at=None):
        parsed.append(raw)
        return parse_frame(self, raw, received_at)

    monkeypatch.setattr(BybitLinearAdapter, "parse_frame", counting)
    fast = {s: list(LandingStore(tmp_path).depth_samples(EX, s, lo, hi)) for s in BYBIT_SYMBOLS}
    assert all(b'"type":"snapshot"' in p for p in parsed)  # only the 4 snapshots were parsed
    assert len(parsed) == len(BYBIT_SYMBOLS)
    monkeypatch.setattr(BybitLinearAdapter, "fast_path", lambda self: None)
    full = {s: list(LandingStore(tmp_path).depth_samples(EX, s, lo, hi)) for s in BYBIT_SYMBOLS}
    assert len(parsed) > 1594
    assert all(len(fast[s]) >= 30 for s in BYBIT_SYMBOLS) and fast == full
