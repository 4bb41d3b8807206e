"""One Bybit daily order-book history file, built from the market: the bytes, no serving.

The file is the websocket's ``orderbook.200`` messages of the day (``book_archive.py`` says what
Bybit publishes and how it is served): the snapshot of the day's first book step, then a delta
per step, and a snapshot at each book-service restart. A 100-level, 1 s-step day is 86,400
lines and about four million levels, so the deltas are not made as the websocket makes its few
per tick (``BybitFormats.book_deltas`` then ``book_message``: a dict and an ``orjson.dumps`` per
line, a Python string per level, 13 s of CPU for that day). A block of steps is instead a few
array passes: the books of all its steps, the levels that changed (compared in place where the
price did not move, on a narrow band of ticks where it did), each distinct number formatted
once, and the block's text one gather of byte pieces in the order ``orjson`` writes them
(``pieces.py``); the zip is written by a second thread meanwhile. Same bytes, about a third of
the CPU (``benchmarks/book_archive_bench.py``);
``petrosa_pipelines_tests/test_local_exchange/test_bybit_book_file.py`` holds the file to the
websocket's own messages byte for byte.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from petrosa_pipelines.local_exchange.units import DAY_MS, day_start_ms
from petrosa_pipelines.local_exchange.venues.bybit.frames import BOOK_SLOT, BybitFormats
from petrosa_pipelines.local_exchange.venues.bybit.pieces import Pieces, decimal_texts

#: the depth of the newer files (and the topic their lines name)
DEPTH = 200
#: book steps per block: bounds a block's arrays (steps x levels) and each array call's length
#: (numpy and zlib let other threads run, but not for all of a call)
CHUNK_STEPS = 1_000
#: deflate level of the zip member: the files have always been written at 1, and a different
#: level would change their bytes (level 6 is ~3x slower for ~10% smaller files)
COMPRESS_LEVEL = 1
LINE_END = b"\r\n"
#: (line index in the block, tick, quantity) of changed levels, by line then tick
Levels = tuple[np.ndarray, np.ndarray, np.ndarray]


def member_name(symbol: str, day: dt.date) -> str:
    return f"{day.isoformat()}_{symbol}_ob{DEPTH}.data"


def book_history_blocks(
    formats: BybitFormats,
    symbol: str,
    day: dt.date,
    u_of: Callable[[int], int],
    restarts: Iterable[int] = (),
) -> Iterator[bytes]:
    """The day's file in blocks of whole CRLF-ended lines: the snapshot of the day's first
    step, then a delta per step up to the day's last (``u_of``: ``u`` of a step), and a
    snapshot instead of the delta at each book-service restart step in ``restarts`` (``u``
    counts from 1 again there, as on the websocket)."""
    bs = formats.market.book_step_ms
    first, last = day_start_ms(day) // bs, (day_start_ms(day) + DAY_MS) // bs - 1
    topic = f"orderbook.{DEPTH}.{symbol}"
    snaps = sorted({first, *(s for s in restarts if first < s <= last)})
    for n, at in enumerate(snaps):
        yield _snapshot_line(formats, topic, symbol, at, u_of(at))
        until = snaps[n + 1] - 1 if n + 1 < len(snaps) else last
        for lo in range(at + 1, until + 1, CHUNK_STEPS):
            yield delta_block(formats, symbol, lo, min(lo + CHUNK_STEPS - 1, until), u_of)


def book_history_zip(
    formats: BybitFormats,
    symbol: str,
    day: dt.date,
    u_of: Callable[[int], int],
    restarts: Iterable[int] = (),
) -> bytes:
    """The day's zip: one deflated member, a block per write (deflate's output does not depend
    on how its input is split), each written by a second thread while the next block is made
    (zlib lets go of the GIL: the two overlap on two cores)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as zf,
        zf.open(member_name(symbol, day), "w") as f,
        ThreadPoolExecutor(1, thread_name_prefix="bybit-book-zip") as writer,
    ):
        written: Future[int] | None = None
        for block in book_history_blocks(formats, symbol, day, u_of, restarts):
            if written is not None:
                written.result()
            written = writer.submit(f.write, block)
        if written is not None:
            written.result()
    return buf.getvalue()


def _snapshot_line(formats: BybitFormats, topic: str, symbol: str, step: int, u: int) -> bytes:
    st = formats.market.book_state(symbol, step)
    b = formats.levels(symbol, st.bid_ticks[:DEPTH], st.bid_qty[:DEPTH])
    a = formats.levels(symbol, st.ask_ticks[:DEPTH], st.ask_qty[:DEPTH])
    return formats.book_message(topic, symbol, "snapshot", step, u, b, a) + LINE_END


def _changes(ticks: np.ndarray, qty: np.ndarray) -> Levels:
    """(row, tick, quantity) of every level of row ``i + 1`` that differs from row ``i`` (0: it
    left), rows ascending, ticks ascending within a row (``MarketGenerator.book_changes``'
    order). Each row is a run of consecutive ticks: where the run did not move (most steps),
    the levels compare in place; elsewhere both runs are laid on the ticks they span."""
    if ticks.shape[1] > 1 and ticks[0, 0] > ticks[0, 1]:  # bids, best first: ticks ascending
        ticks, qty = ticks[:, ::-1], qty[:, ::-1]
    still = ticks[:-1, 0] == ticks[1:, 0]
    row, col = np.nonzero(still[:, None] & (qty[:-1] != qty[1:]))
    moved = np.flatnonzero(~still)
    if not len(moved):
        return row, ticks[1:][row, col], qty[1:][row, col]
    m_row, m_tick, m_qty = _laid_out_changes(
        ticks[moved], qty[moved], ticks[moved + 1], qty[moved + 1]
    )
    rows = np.concatenate([row, moved[m_row]])
    order = np.argsort(rows, kind="stable")  # each part is by (row, tick); rows are disjoint
    return (
        rows[order],
        np.concatenate([ticks[1:][row, col], m_tick])[order],
        np.concatenate([qty[1:][row, col], m_qty])[order],
    )


def _laid_out_changes(
    old_t: np.ndarray, old_q: np.ndarray, new_t: np.ndarray, new_q: np.ndarray
) -> Levels:
    """:func:`_changes` of rows ``old -> new`` whose ticks differ: both on the ticks they span."""
    lo = np.minimum(old_t.min(axis=1), new_t.min(axis=1))
    width = int((np.maximum(old_t.max(axis=1), new_t.max(axis=1)) - lo).max()) + 1
    rows = np.arange(len(lo))[:, None]
    before = np.zeros((len(lo), width), dtype=np.int64)
    after = np.zeros_like(before)
    before[rows, old_t - lo[:, None]] = old_q
    after[rows, new_t - lo[:, None]] = new_q
    row, col = np.nonzero(before != after)
    return row, col + lo[row], after[row, col]


def _restate_best_bid(
    formats: BybitFormats, symbol: str, lo: int, bids: Levels, asks: Levels, n: int
) -> Levels:
    """Bybit never sends both sides empty (quirk 23): a step where nothing changed restates the
    best bid, as ``BybitFormats.book_deltas`` does."""
    row, tick, qty = bids
    empty = np.flatnonzero(
        (np.bincount(row, minlength=n) == 0) & (np.bincount(asks[0], minlength=n) == 0)
    )
    if not len(empty):
        return bids
    best = [formats.market.top_of_book(symbol, lo + int(e))[:2] for e in empty]
    at = np.searchsorted(row, empty)
    return (
        np.insert(row, at, empty),
        np.insert(tick, at, [b for b, _ in best]),
        np.insert(qty, at, [q for _, q in best]),
    )


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, each value's index into them); a presence table instead of
    ``np.unique``'s sort when the values span little more than their count."""
    if not len(values):
        return values, values
    lo = int(values.min())
    span = int(values.max()) - lo + 1
    if span > 4 * len(values) + 4096:
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq, inverse.reshape(-1)
    present = np.zeros(span, dtype=bool)
    present[values - lo] = True
    return np.flatnonzero(present) + lo, (np.cumsum(present) - 1)[values - lo]


def delta_block(
    formats: BybitFormats, symbol: str, lo: int, hi: int, u_of: Callable[[int], int]
) -> bytes:
    """The delta lines of steps ``lo..hi`` (each CRLF-ended), exactly as ``orjson.dumps`` of
    ``BybitFormats.book_message`` writes them: keys ``topic,type,ts,data{s,b,a,u,seq},cts``,
    no spaces, ``[price, size]`` string pairs, ticks ascending."""
    market, spec = formats.market, formats.market.spec(symbol)
    n = hi - lo + 1
    steps = np.arange(lo - 1, hi + 1, dtype=np.int64)
    # the top DEPTH levels of each step; not ``_book_grid``'s tick axis, as wide as the price's
    # whole drift over the block (~1,100 ticks for 200 levels)
    bid_t, bid_q, ask_t, ask_q = market.book_levels(symbol, steps, DEPTH)
    asks = _changes(ask_t, ask_q)
    bids = _restate_best_bid(formats, symbol, lo, _changes(bid_t, bid_q), asks, n)
    nb, na = np.bincount(bids[0], minlength=n), np.bincount(asks[0], minlength=n)

    # the pieces: the lines' constant parts, their numbers, and each distinct price (opening
    # a level: ``["p","`` first in its list, ``,["p","`` after) and size (``q"]``) once
    cts = steps[1:] * market.book_step_ms
    sym = symbol.encode()
    p = Pieces()
    const = p.add_bytes(
        b'{"topic":"orderbook.%d.%s","type":"delta","ts":' % (DEPTH, sym),
        b',"data":{"s":"%s","b":[' % sym,
        b'],"a":[',
        b'],"u":',
        b',"seq":',
        b'},"cts":',
        b"}" + LINE_END,
    )
    ts = p.add(*decimal_texts(formats.book_ts_many(steps[1:]), 0))
    u = p.add(*decimal_texts(np.array([u_of(s) for s in range(lo, hi + 1)]), 0))
    seq = p.add(*decimal_texts(formats.seq(symbol, cts, BOOK_SLOT), 0))
    cts_at = p.add(*decimal_texts(cts, 0))
    prices, p_idx = _distinct(np.concatenate([bids[1], asks[1]]) * spec.tick_units)
    sizes, s_idx = _distinct(np.concatenate([bids[2], asks[2]]))
    price_text = decimal_texts(prices, spec.price_decimals)
    opening = p.add_decorated(*price_text, b'["', b'","')
    continuing = p.add_decorated(*price_text, b',["', b'","')
    size = p.add_decorated(*decimal_texts(sizes, spec.qty_decimals), b"", b'"]')

    # where each piece goes: a line is 3 pieces, 2 per bid, 1, 2 per ask, 7
    count = 11 + 2 * (nb + na)
    start = np.cumsum(count) - count
    line = np.arange(n)
    order = np.empty(int(count.sum()), dtype=np.int64)
    order[start], order[start + 1], order[start + 2] = const, ts + line, const + 1
    order[start + 3 + 2 * nb] = const + 2
    tail = start + 4 + 2 * (nb + na)
    for i, piece in enumerate((const + 3, u + line, const + 4, seq + line, const + 5)):
        order[tail + i] = piece
    order[tail + 5], order[tail + 6] = cts_at + line, const + 6
    k = len(bids[0])
    for row, per_line, offset, pi, si in (
        (bids[0], nb, start + 3, p_idx[:k], s_idx[:k]),
        (asks[0], na, start + 4 + 2 * nb, p_idx[k:], s_idx[k:]),
    ):
        rank = np.arange(len(row)) - (np.cumsum(per_line) - per_line)[row]
        at = offset[row] + 2 * rank
        order[at] = np.where(rank == 0, opening, continuing) + pi
        order[at + 1] = size + si
    return p.join(order).tobytes()


__all__ = [
    "CHUNK_STEPS",
    "DEPTH",
    "book_history_blocks",
    "book_history_zip",
    "delta_block",
    "member_name",
]
