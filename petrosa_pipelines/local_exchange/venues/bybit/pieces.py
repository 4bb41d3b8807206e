"""Text made from arrays: integers as exact decimals, and joins of byte pieces, all in numpy.

A day of Bybit book history is millions of ``["price","size"]`` pairs; made one Python string at
a time, the formatting and the final ``b"".join`` were most of the file's cost, and each such
C call holds the GIL for its whole length (the server's event loop thread then waits). Here the
distinct numbers are formatted as digit columns and every line is a gather of byte ranges: no
Python object per level. Venue-neutral; it lives with its one user.
"""

from __future__ import annotations

import numpy as np

#: 1, 10, ..., 10**18 (int64)
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_ZERO, _DOT = ord("0"), ord(".")


def decimal_texts(values: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """``units.fmt_fixed`` of many non-negative integers (``123, 2 -> "1.23"``, ``5, 3 ->
    "0.005"``): their texts end to end (uint8) and each one's length."""
    v = np.asarray(values, dtype=np.int64)
    if not len(v):
        return np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.int64)
    if v.min() < 0:
        raise ValueError("decimal_texts takes non-negative integers")
    digits = np.maximum(np.searchsorted(_POW10, v, side="right"), decimals + 1)
    length = digits + (1 if decimals else 0)
    width = int(length.max())
    grid = np.empty((len(v), width), dtype=np.uint8)
    col = width - 1
    for k in range(int(digits.max())):  # right to left: the k-th digit from the right
        if decimals and k == decimals:
            grid[:, col] = _DOT
            col -= 1
        grid[:, col] = (v // _POW10[k]) % 10 + _ZERO
        col -= 1
    keep = np.arange(width) >= (width - length)[:, None]
    return grid[keep], length


class Pieces:
    """Byte strings held end to end in one buffer, addressed by index; :meth:`join` is
    ``b"".join`` of them in any order, any number of times each, as one numpy gather."""

    def __init__(self) -> None:
        self._bufs: list[np.ndarray] = []
        self._lens: list[np.ndarray] = []
        self.count = 0

    def add(self, buf: np.ndarray, lens: np.ndarray) -> int:
        """The pieces ``buf`` holds end to end (``lens`` bytes each); the first one's index."""
        first = self.count
        self._bufs.append(np.asarray(buf, dtype=np.uint8))
        self._lens.append(np.asarray(lens, dtype=np.int64))
        self.count += len(lens)
        return first

    def add_bytes(self, *texts: bytes) -> int:
        """Constant pieces, consecutive indices; the first one's."""
        buf = np.frombuffer(b"".join(texts), dtype=np.uint8)
        return self.add(buf, np.array([len(t) for t in texts], dtype=np.int64))

    def add_decorated(self, buf: np.ndarray, lens: np.ndarray, prefix: bytes, suffix: bytes) -> int:
        """Each piece of (``buf``, ``lens``) as ``prefix + piece + suffix``; the first index."""
        inner = Pieces()
        pre, core = inner.add_bytes(prefix, suffix), inner.add(buf, lens)
        order = np.empty((len(lens), 3), dtype=np.int64)
        order[:, 0], order[:, 1], order[:, 2] = pre, core + np.arange(len(lens)), pre + 1
        return self.add(inner.join(order.ravel()), lens + len(prefix) + len(suffix))

    def join(self, order: np.ndarray) -> np.ndarray:
        """The pieces at ``order``, end to end (uint8)."""
        buf = np.concatenate(self._bufs) if self._bufs else np.empty(0, dtype=np.uint8)
        lens = np.concatenate(self._lens) if self._lens else np.empty(0, dtype=np.int64)
        take = lens[order]
        total = int(take.sum())
        # int32 positions when they fit: the gather moves half the bytes
        kind = np.int32 if max(total, len(buf)) < 2**31 else np.int64
        starts = (np.cumsum(lens) - lens).astype(kind)
        take = take.astype(kind)
        shift = starts[order] - (np.cumsum(take, dtype=kind) - take)
        index = np.repeat(shift, take)
        index += np.arange(total, dtype=kind)
        return buf[index]


__all__ = ["Pieces", "decimal_texts"]
