"""The ingest's fast path accepts only what the full parser accepts; the rest is dead-lettered.

A differential check over mutated frames (the fast path must never vouch for a frame the full
parser rejects), and the frames a lax decoder *would* take but the full parser rejects
(duplicate keys whose first value is invalid, odd spellings) end in the dead-letter store.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from petrosa_pipelines.exchanges.base import MessageError
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.connection import Conn as _Conn
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines_tests.test_landing import binance_frames as bf

T0 = 1_704_240_000_000
S = "BTCUSDT"
TRADE = bf.agg_trade(S, 100, T0)
DEPTH = bf.depth_update(S, 10, 12, 9, T0, bids=[("100.10", "1.5")], asks=[("101.0", "0.000")])

# a lax decoder keeps the *last* value of a duplicated key; the full parser decodes every one
DUP_P = TRADE.replace(b'"p":"100.5"', b'"p":"abc","p":"100.5"')
DUP_B = DEPTH.replace(b'"b":[', b'"b":[["x","1"]],"b":[')
REJECTED_BY_FULL_PARSER = {
    "duplicate p, first invalid": DUP_P,
    "duplicate b, first invalid": DUP_B,
    "price NaN": DEPTH.replace(b'"100.10"', b'"NaN"'),
    "price too big": DEPTH.replace(b'"100.10"', b'"1e18"'),
    "negative qty": DEPTH.replace(b'"1.5"', b'"-1.5"'),
    # a lenient float decode reads these as -0.0, which passes ">= 0"; Decimal does not
    "tiny negative qty": DEPTH.replace(b'"1.5"', b'"-1e-400"'),
    "escaped tiny negative qty": DEPTH.replace(b'"1.5"', b'"\\u002d1e\\u002d400"'),
    "U > u": DEPTH.replace(b'"U":10', b'"U":13'),
    "first > last trade id": TRADE.replace(b'"f":200', b'"f":999'),
    "zero trade qty": TRADE.replace(b'"q":"0.01"', b'"q":"0"'),
    "level of three": DEPTH.replace(b'["100.10","1.5"]', b'["100.10","1.5","1"]'),
}
ACCEPTED_BY_FULL_PARSER_ONLY = {  # valid, but not the canonical form: the fast path declines
    "spaces": DEPTH.replace(b'"b":', b'"b": '),
    "escaped key": DEPTH.replace(b'"pu":', b'"\\u0070u":'),
    "underscore decimal": DEPTH.replace(b'"100.10"', b'"1_00.10"'),
    "no pu": DEPTH.replace(b',"pu":9', b""),
    "lower-case symbol": TRADE.replace(b'"s":"BTCUSDT"', b'"s":"btcusdt"'),
}


def _mutations(frame: bytes) -> list[bytes]:
    """Single-byte edits and token swaps around a valid frame."""
    out = []
    for i in range(0, len(frame), 3):
        for b in (b" ", b"0", b'"', b"\\", b"e", b"-", b"."):
            out.append(frame[:i] + b + frame[i + 1 :])
        out.append(frame[:i] + frame[i + 1 :])
    return out


@pytest.fixture
def engine(tmp_path):
    cfg = IngestConfig(group="fp", symbols=(S,), landing_path=str(tmp_path))
    eng = IngestEngine(cfg)
    for st in eng._streams.values():
        st.source = 1
    eng.writer.start()
    yield eng
    if eng.writer.alive:
        eng.writer.close()


def _fast_accepts(engine: IngestEngine, frame: bytes) -> bool:
    """Feed ``frame``; True if the fast path took it without asking the full parser."""
    calls = []
    full = engine._on_frame_full
    engine._on_frame_full = lambda *a: calls.append(a)  # type: ignore[method-assign]
    try:
        engine._on_frame(_Conn(1, "t"), frame, T0)
    finally:
        engine._on_frame_full = full  # type: ignore[method-assign]
    return not calls


def test_canonical_frames_take_the_fast_path(engine):
    assert _fast_accepts(engine, TRADE)
    assert _fast_accepts(engine, DEPTH)


@pytest.mark.parametrize("name", sorted(REJECTED_BY_FULL_PARSER))
def test_fast_path_declines_what_the_full_parser_rejects(engine, name):
    frame = REJECTED_BY_FULL_PARSER[name]
    with pytest.raises(MessageError):
        BinanceUsdmAdapter().parse(frame)
    assert not _fast_accepts(engine, frame)


@pytest.mark.parametrize("name", sorted(ACCEPTED_BY_FULL_PARSER_ONLY))
def test_unusual_but_valid_frames_take_the_full_parser(engine, name):
    frame = ACCEPTED_BY_FULL_PARSER_ONLY[name]
    assert BinanceUsdmAdapter().parse(frame) is not None
    assert not _fast_accepts(engine, frame)


def test_fast_path_never_accepts_what_the_full_parser_rejects(engine):
    parse = BinanceUsdmAdapter().parse
    frames = _mutations(TRADE) + _mutations(DEPTH) + list(REJECTED_BY_FULL_PARSER.values())
    fast = 0
    for frame in frames:
        if _fast_accepts(engine, frame):
            fast += 1
            parse(frame)  # raises if the fast path vouched for a bad frame
    assert fast > 50  # harmless edits (e.g. other digits) still take the fast path


def test_rejected_frames_land_as_dead_letters_not_data(engine, tmp_path):
    conn = _Conn(1, "t")
    bad = list(REJECTED_BY_FULL_PARSER.values())
    for i, frame in enumerate(bad):
        engine._on_frame(conn, frame, T0 + i)
    engine._on_frame(conn, bf.agg_trade(S, 101, T0 + 5), T0 + 50)  # one good frame
    engine.flush_landing()
    engine.writer.close()
    store = LandingStore(tmp_path)
    dead = store.dead_letters("binance", dt.date(2024, 1, 3))
    assert sorted(d.raw for d in dead) == sorted(bad)
    by_raw = {d.raw: d for d in dead}
    assert by_raw[DUP_P].field == "data.p" and "decimal" in by_raw[DUP_P].reason.lower()
    assert by_raw[DUP_B].field.startswith("data.b")
    landed = [p for _, p in store.iter_lines("binance", T0 - 1, T0 + 100)]
    assert [orjson.loads(p)["data"]["a"] for p in landed] == [101]
