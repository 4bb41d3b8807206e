"""The Bybit daily order-book file is the websocket's own book messages, byte for byte.

``venues/bybit/book_file.py`` builds a day's lines in array passes instead of one
``orjson.dumps`` per line; here each day is also built the way the file was built before (and
the way the websocket builds its messages now): ``BybitFormats.book_deltas`` then
``book_message`` per line, batched into the same zip member. The two zips must be the same
bytes, on days that reach every branch: blocks of steps across the chunk size, book-service
restarts (at a block's start, inside one, on the day's last step), a market deeper than the file's
200 levels and one of a single level, books that move on every step and books that stand still,
distinct sizes spanning little (a presence table) or a lot (a sort), and steps where nothing
changed (Bybit restates the best bid then)."""

from __future__ import annotations

import datetime as dt
import io
import random
import zipfile
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from petrosa_pipelines.local_exchange import Market, MarketConfig
from petrosa_pipelines.local_exchange.units import DAY_MS, day_start_ms, fmt_fixed
from petrosa_pipelines.local_exchange.venues.bybit.book_file import (
    CHUNK_STEPS,
    DEPTH,
    book_history_zip,
    member_name,
)
from petrosa_pipelines.local_exchange.venues.bybit.frames import BybitFormats
from petrosa_pipelines.local_exchange.venues.bybit.pieces import Pieces, decimal_texts

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 1, 2)


def websocket_zip(
    formats: BybitFormats,
    symbol: str,
    day: dt.date,
    u_of: Callable[[int], int],
    restarts: Iterable[int] = (),
) -> bytes:
    """The day's file made of the websocket's messages, one at a time (the builder as it was)."""
    bs = formats.market.book_step_ms
    first, last = day_start_ms(day) // bs, (day_start_ms(day) + DAY_MS) // bs - 1
    topic = f"orderbook.{DEPTH}.{symbol}"
    snaps = sorted({first, *(s for s in restarts if first < s <= last)})
    lines = []
    for n, at in enumerate(snaps):
        st = formats.market.book_state(symbol, at)
        b = formats.levels(symbol, st.bid_ticks[:DEPTH], st.bid_qty[:DEPTH])
        a = formats.levels(symbol, st.ask_ticks[:DEPTH], st.ask_qty[:DEPTH])
        lines.append(formats.book_message(topic, symbol, "snapshot", at, u_of(at), b, a))
        until = snaps[n + 1] - 1 if n + 1 < len(snaps) else last
        for lo in range(at + 1, until + 1, CHUNK_STEPS):
            hi = min(lo + CHUNK_STEPS - 1, until)
            for step, b, a in formats.book_deltas(symbol, lo, hi, DEPTH):
                lines.append(formats.book_message(topic, symbol, "delta", step, u_of(step), b, a))
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open(member_name(symbol, day), "w") as f,
    ):
        for i in range(0, len(lines), CHUNK_STEPS):
            f.write(b"\r\n".join(lines[i : i + CHUNK_STEPS]) + b"\r\n")
    return buf.getvalue()


class StillBook(Market):
    """Every level rests the same quantity: a step whose price did not move changes nothing."""

    def _level_qty(self, symbol, side, ticks, step, top):  # noqa: ANN001, ANN202
        return np.full(np.shape(ticks), 7 * self.spec(symbol).step_units, dtype=np.int64)


def _u_of(origins: tuple[int, ...]) -> Callable[[int], int]:
    """``u`` as the book service numbers it: from its last (re)start at or before the step."""
    return lambda step: step - max(o for o in origins if o <= step) + 1


CASES = {
    # 20 levels, a 60 s step: the price moves on most steps; two blocks, the second short
    "moving": (dict(book_levels=20, book_step_ms=60_000), Market, "BTCUSDT", ()),
    # few trades: the price stands still for many steps; restarts at a block's start, inside
    # the first block, and on the day's last step
    "still_with_restarts": (
        dict(book_levels=20, book_step_ms=60_000, trades_per_day=300),
        Market,
        "ETHUSDT",
        (1, 1_001, 1_439),
    ),
    # deeper than the file (300 > 200 levels), sizes that are nearly all distinct
    "deep_xrp": (dict(book_levels=300, book_step_ms=120_000), Market, "XRPUSDT", (700,)),
    # a one-level book, an unknown symbol (default filters, whole-unit sizes)
    "one_level": (dict(book_levels=1, book_step_ms=30_000), Market, "FOOUSDT", ()),
    # nothing changes on most steps: the best bid restated, as on the websocket
    "restated": (
        dict(book_levels=5, book_step_ms=60_000, trades_per_day=200),
        StillBook,
        "BTCUSDT",
        (500,),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_day_file_is_the_websocket_messages_byte_for_byte(case: str) -> None:
    knobs, market_cls, symbol, restart_offsets = CASES[case]
    config = MarketConfig(seed=11, symbols=(symbol,), **{"trades_per_day": 4_000, **knobs})
    formats = BybitFormats(market_cls(config))
    first = day_start_ms(DAY) // config.book_step_ms
    restarts = tuple(first + k for k in restart_offsets)
    u_of = _u_of((formats.market.start_ms // config.book_step_ms - 1, *restarts))
    expected = websocket_zip(formats, symbol, DAY, u_of, restarts)
    assert book_history_zip(formats, symbol, DAY, u_of, restarts) == expected
    with zipfile.ZipFile(io.BytesIO(expected)) as zf:
        lines = zf.read(member_name(symbol, DAY)).split(b"\r\n")
    assert len(lines) - 1 == DAY_MS // config.book_step_ms and lines[-1] == b""
    snapshots = [x for x in lines if b'"type":"snapshot"' in x]
    assert len(snapshots) == 1 + len(restarts)
    if case == "restated":  # the branch is reached: a delta of one bid and no ask
        assert any(b'"a":[]' in x and x.count(b'["') == 1 for x in lines if b"delta" in x)


def test_decimal_texts_is_fmt_fixed() -> None:
    rng = random.Random(3)
    edges = [0, 1, 9, 10, 99, 100, 10**17, 10**18 - 1, 10**18, 2**63 - 1]
    values = edges + [rng.randrange(0, 10 ** rng.randrange(1, 19)) for _ in range(3_000)]
    for decimals in (0, 1, 2, 3, 4, 8, 12):
        buf, lens = decimal_texts(np.array(values, dtype=np.int64), decimals)
        texts = bytes(buf).decode()
        ends = np.cumsum(lens).tolist()
        got = [texts[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        assert got == [fmt_fixed(v, decimals) for v in values]
    assert [len(x) for x in decimal_texts(np.array([], dtype=np.int64), 2)] == [0, 0]
    with pytest.raises(ValueError):
        decimal_texts(np.array([-1]), 2)


def test_pieces_join_is_bytes_join() -> None:
    rng = random.Random(5)
    consts = [b"", b"a", b'{"topic":', b"\r\n", bytes(range(256))]
    p = Pieces()
    first = p.add_bytes(*consts)
    buf, lens = decimal_texts(np.arange(0, 5_000, 7, dtype=np.int64), 3)
    nums = p.add_decorated(buf, lens, b',["', b'","')
    texts = [f',["{fmt_fixed(v, 3)}","'.encode() for v in range(0, 5_000, 7)]
    table = consts + texts
    assert p.count == len(table) and nums == first + len(consts)
    order = [rng.randrange(len(table)) for _ in range(20_000)]
    assert p.join(np.array(order, dtype=np.int64)).tobytes() == b"".join(table[i] for i in order)
