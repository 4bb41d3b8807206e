"""The depth dataset's two layouts: wide (v2, stored) and long (v1, one row per level).

Why wide: at a 1 s cadence and top 20 levels a day of one instrument was 86,400 x 40 =
3,456,000 long rows, each repeating exchange, symbol, time, update id, source and receive time
(issue 13, item 3). Version 2 stores one row per snapshot with the levels as list columns
(``bid_price``, ``bid_quantity``, ``ask_price``, ``ask_quantity``, best price first), 40x fewer
rows, as in tardis' ``book_snapshot_N`` files (https://docs.tardis.dev/downloadable-csv-files)
and nautilus_trader's ``OrderBookDepth10`` (https://nautilustrader.io/docs/latest/concepts/data).

In pandas a list cell is a float64 ``ndarray`` (what ``pyarrow``'s ``to_pandas`` gives); code
that computes over levels takes them as a matrix (:func:`side_matrix`: one row per snapshot,
NaN where a side holds fewer levels). Version 1 files are read as version 2
(:func:`from_long`, called by ``lake.read_parquet_frame``), and :func:`to_long` gives the old
rows to readers that want them (``api.load_depth(layout="long")``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

#: the sides in their stored order, and their level columns (price, quantity)
SIDES: tuple[str, ...] = ("bid", "ask")
LEVEL_COLUMNS: dict[str, tuple[str, str]] = {
    "bid": ("bid_price", "bid_quantity"),
    "ask": ("ask_price", "ask_quantity"),
}
ALL_LEVEL_COLUMNS: tuple[str, ...] = tuple(c for s in SIDES for c in LEVEL_COLUMNS[s])
#: the per-snapshot columns both layouts share
HEAD_COLUMNS: tuple[str, ...] = ("exchange", "symbol", "snapshot_time", "last_update_id")
TAIL_COLUMNS: tuple[str, ...] = ("source", "received_at")
#: the version 1 (long) columns, in their order
LONG_COLUMNS: tuple[str, ...] = (*HEAD_COLUMNS, "side", "level", "price", "quantity", *TAIL_COLUMNS)

_EMPTY = np.empty(0, dtype=np.float64)


def is_long(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` is depth in the version 1 layout (one row per level)."""
    return "level" in frame.columns and "side" in frame.columns


def as_float_lists(values: Sequence | pd.Series) -> np.ndarray:
    """List cells (sequences or arrays; None = no level) as an object array of float64
    ``ndarray``: the pandas form of a level column."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    f64 = np.dtype(np.float64)
    for i, v in enumerate(values):
        if type(v) is np.ndarray and v.dtype is f64 and v.ndim == 1:
            out[i] = v
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = _EMPTY
        else:
            out[i] = np.asarray(v, dtype=np.float64).reshape(-1)
    return out


def level_counts(frame: pd.DataFrame, side: str) -> np.ndarray:
    """How many levels each snapshot holds on ``side`` (int64, one per row)."""
    col = frame[LEVEL_COLUMNS[side][0]].to_numpy(dtype=object)
    return np.fromiter(map(len, col), dtype=np.int64, count=len(col))


def side_matrix(
    frame: pd.DataFrame, side: str, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(prices, quantities) of ``side`` as float64 matrices, one row per snapshot and one
    column per level (0 = best); NaN where a snapshot holds fewer levels. ``width``: the number
    of columns (default: the most levels any snapshot holds)."""
    price_col, qty_col = LEVEL_COLUMNS[side]
    counts = level_counts(frame, side)
    n = len(frame)
    w = int(counts.max()) if width is None and n else int(width or 0)
    if n and w and (counts == w).all():  # every snapshot holds w levels: one reshape
        return tuple(
            np.concatenate(frame[c].to_numpy(dtype=object)).astype(np.float64).reshape(n, w)
            for c in (price_col, qty_col)
        )
    prices = np.full((n, w), np.nan)
    qtys = np.full((n, w), np.nan)
    if n == 0 or w == 0:
        return prices, qtys
    kept = np.minimum(counts, w)
    mask = np.arange(w) < kept[:, None]
    whole = bool((kept == counts).all())
    prices[mask] = _flat(frame[price_col], kept, whole)
    qtys[mask] = _flat(frame[qty_col], kept, whole)
    return prices, qtys


def _flat(column: pd.Series, kept: np.ndarray, whole: bool = False) -> np.ndarray:
    """The cells' first ``kept`` values, concatenated (``whole``: no cell is cut)."""
    cells = column.to_numpy(dtype=object)
    if whole:
        return np.concatenate(cells).astype(np.float64, copy=False) if len(cells) else _EMPTY
    parts = [c[:k] for c, k in zip(cells, kept, strict=True) if k]
    return np.concatenate(parts) if parts else _EMPTY


def from_matrix(prices: np.ndarray, qtys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level cells from (n, w) matrices, each row cut at its first NaN price."""
    n = prices.shape[0]
    counts = np.argmax(np.isnan(prices), axis=1) if prices.shape[1] else np.zeros(n, dtype=np.int64)
    full = ~np.isnan(prices).any(axis=1) if prices.shape[1] else np.ones(n, dtype=bool)
    counts = np.where(full, prices.shape[1], counts)
    p = np.empty(n, dtype=object)
    q = np.empty(n, dtype=object)
    for i in range(n):
        p[i] = prices[i, : counts[i]].copy()
        q[i] = qtys[i, : counts[i]].copy()
    return p, q


def to_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Version 2 depth as version 1 rows: one per (snapshot, side, level), ordered as v1
    partitions were (time, then ``ask`` before ``bid``, then level)."""
    if is_long(frame):
        return frame
    n = len(frame)
    ca, cb = level_counts(frame, "ask"), level_counts(frame, "bid")
    per_row = ca + cb
    total = int(per_row.sum())
    start = np.cumsum(per_row) - per_row
    idx = np.repeat(np.arange(n), per_row)
    pos = np.arange(total) - np.repeat(start, per_row)
    is_ask = pos < ca[idx]
    level = np.where(is_ask, pos, pos - ca[idx])
    price, qty = np.empty(total), np.empty(total)
    for side, mask in (("ask", is_ask), ("bid", ~is_ask)):
        counts = ca if side == "ask" else cb
        price[mask] = _flat(frame[LEVEL_COLUMNS[side][0]], counts, whole=True)
        qty[mask] = _flat(frame[LEVEL_COLUMNS[side][1]], counts, whole=True)
    out = {c: _repeat(frame[c], idx) for c in (*HEAD_COLUMNS, *TAIL_COLUMNS)}
    sides = pa.DictionaryArray.from_arrays(pa.array(is_ask.astype(np.int8)), ["bid", "ask"])
    out["side"] = pd.Series(
        pd.arrays.ArrowStringArray(pa.chunked_array([sides.cast(pa.large_string())]))
    )
    out["level"] = level.astype(np.int64)
    out["price"] = price
    out["quantity"] = qty
    return pd.DataFrame({c: out[c] for c in LONG_COLUMNS})


def _repeat(column: pd.Series, idx: np.ndarray) -> pd.Series:
    """``column``'s values at ``idx``, text through arrow (no Python string per row)."""
    if isinstance(column.dtype, pd.StringDtype) or column.dtype == object:
        arr = pa.array(column.to_numpy(dtype=object), type=pa.large_string())
        taken = pa.chunked_array([arr.take(pa.array(idx))])
        return pd.Series(pd.arrays.ArrowStringArray(taken))
    return column.take(idx).reset_index(drop=True)


def from_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Version 1 depth rows as version 2: one row per snapshot (exchange, symbol, time), its
    levels ordered by ``level``. Not conformed (the caller's schema decides dtypes)."""
    if not is_long(frame):
        return frame
    key = ["exchange", "symbol", "snapshot_time"]
    if frame.empty:
        return pd.DataFrame(
            {
                **{c: frame[c] for c in (*HEAD_COLUMNS, *TAIL_COLUMNS)},
                **{c: pd.Series([], dtype=object) for c in ALL_LEVEL_COLUMNS},
            }
        )
    f = frame.sort_values([*key, "side", "level"], kind="stable").reset_index(drop=True)
    codes = f.groupby(key, sort=False).ngroup().to_numpy()
    n = int(codes.max()) + 1
    first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    head = f.iloc[first][[*HEAD_COLUMNS, *TAIL_COLUMNS]].reset_index(drop=True)
    side = f["side"].astype(str).to_numpy()
    price = f["price"].to_numpy(dtype=np.float64)
    qty = f["quantity"].to_numpy(dtype=np.float64)
    for s in SIDES:
        mask = side == s
        rows = codes[mask]
        counts = np.bincount(rows, minlength=n)
        bounds = np.r_[0, np.cumsum(counts)]
        p, q = price[mask], qty[mask]
        pc_, qc_ = np.empty(n, dtype=object), np.empty(n, dtype=object)
        for i in range(n):
            pc_[i] = p[bounds[i] : bounds[i + 1]]
            qc_[i] = q[bounds[i] : bounds[i + 1]]
        head[LEVEL_COLUMNS[s][0]] = pc_
        head[LEVEL_COLUMNS[s][1]] = qc_
    return head
