"""PostgreSQL binary COPY encoding of DataFrames, vectorised with numpy.

Why binary: float8 goes over the wire as its IEEE bits and timestamps as integer
microseconds, so what lands in PostgreSQL is bit-for-bit the frame (text COPY would print and
re-parse every float). Why vectorised: psycopg's ``Copy.write_row`` costs a Python call per
field; here rows that share a *layout* (same text values, same null pattern) become one numpy
structured array filled column by column, and its memory goes to the server as is. Market
data has few layouts per partition (one exchange, one symbol, a handful of sources), so a
million trades encode in a few numpy assignments. A text column of (nearly) unique values, like
trades' ``trade_id``, joins a layout by its *length*, not its value: the bytes are laid out
column-wise like a number (a day of Bybit UUIDs is one layout, of Binance ids two or three).
Frames with many layouts (free text, JSON) take the exact but slower per-row path.
A ``float8[]`` column (depth's levels) joins a layout by its element count, the same way: a
day of top-20 books is a handful of layouts, each written as one (rows, levels) matrix.

Format: https://www.postgresql.org/docs/current/sql-copy.html ("Binary Format").
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import as_float_lists

Kind = Literal["text", "int8", "float8", "bool", "timestamptz", "date", "jsonb", "float8[]"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: PostgreSQL's epoch (2000-01-01 UTC) in Unix microseconds and days
PG_EPOCH_US = 946_684_800_000_000
PG_EPOCH_DAYS = 10_957
#: above this many distinct layouts the per-row path is used
MAX_LAYOUTS = 512
#: rows per chunk handed to the server (bounds the encoder's extra memory)
CHUNK_ROWS = 65_536
#: a text column with more distinct values than this is laid out by length, not by value
BY_VALUE_MAX = 64
#: PostgreSQL's type oid of float8, named in every float8[] value
FLOAT8_OID = 701
#: one array element: its length (8) and its big-endian value
_ELEMENT = np.dtype([("l", ">i4"), ("v", ">f8")])

_FIXED: dict[str, tuple[str, int]] = {
    "int8": (">i8", 8),
    "float8": (">f8", 8),
    "bool": ("u1", 1),
    "timestamptz": (">i8", 8),
    "date": (">i4", 4),
}


@dataclass(frozen=True)
class CopyColumn:
    """One column of a COPY: its name, PostgreSQL kind and whether NULL is allowed."""

    name: str
    kind: Kind
    nullable: bool = False


@dataclass
class _Encoded:
    """A column ready to lay out: fixed values or text codes, plus its null mask."""

    column: CopyColumn
    values: np.ndarray | None = None  # fixed kinds: big-endian values
    codes: np.ndarray | None = None  # varlen kinds: index into ``texts`` (-1 = NULL)
    texts: list[bytes] | None = None
    nulls: np.ndarray | None = None  # fixed kinds: True where NULL
    raw: np.ndarray | None = None  # text by length: each row's bytes (``S`` dtype)
    lengths: np.ndarray | None = None  # text by length: bytes per row (-1 = NULL)
    matrix: np.ndarray | None = None  # float8[]: (rows, most elements) float64, NaN-padded
    counts: np.ndarray | None = None  # float8[]: elements per row


def _timestamps_us(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)  # naive values are taken as UTC
    naive = np.asarray(series.dt.tz_convert(None))  # UTC wall time, no copy for UTC
    nulls = np.isnat(naive)
    us = naive.astype("datetime64[us]").view("i8")
    return np.where(nulls, 0, us - PG_EPOCH_US), nulls


def _utf8(values: np.ndarray) -> np.ndarray:
    """Strings -> fixed-width bytes (``S``), ASCII at C speed, anything else per value."""
    text = values.astype(str)
    try:
        return text.astype("S")
    except UnicodeEncodeError:
        return np.array([v.encode() for v in text], dtype="S")


def _by_length(col: CopyColumn, series: pd.Series) -> _Encoded:
    """A high-cardinality text column: raw bytes per row, grouped by their length."""
    obj = series.to_numpy(dtype=object)
    nulls = pd.isna(obj)
    raw = _utf8(np.where(nulls, "", obj))
    lengths = np.char.str_len(raw).astype(np.int64) if raw.size else np.zeros(0, np.int64)
    lengths[nulls] = -1
    if not col.nullable and nulls.any():
        raise ValueError(f"column {col.name} holds nulls but is NOT NULL")
    return _Encoded(col, raw=raw, lengths=lengths)


def _by_count(col: CopyColumn, series: pd.Series) -> _Encoded:
    """A ``float8[]`` column: its cells (sequences of floats; None = empty) as one padded
    matrix and their element counts (a layout is rows of one count)."""
    cells = as_float_lists(series)
    counts = np.fromiter((len(c) for c in cells), dtype=np.int64, count=len(cells))
    width = int(counts.max(initial=0))
    matrix = np.full((len(cells), width), np.nan)
    if width:
        rows = np.repeat(np.arange(len(cells)), counts)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        matrix[rows, cols] = np.concatenate([c for c in cells if len(c)])
    return _Encoded(col, matrix=matrix, counts=counts)


def _array_header(count: int) -> tuple[int, ...]:
    """The int32 words before a float8[] value's elements: one dimension of ``count`` (lower
    bound 1), or no dimension for an empty array (how PostgreSQL itself sends ``'{}'``)."""
    return (1, 0, FLOAT8_OID, count, 1) if count else (0, 0, FLOAT8_OID)


def _encode_column(col: CopyColumn, series: pd.Series) -> _Encoded:
    if col.kind == "float8[]":
        return _by_count(col, series)
    if col.kind in ("text", "jsonb"):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        if col.kind == "text" and len(uniques) > BY_VALUE_MAX:
            return _by_length(col, series)
        prefix = b"\x01" if col.kind == "jsonb" else b""  # jsonb binary format version 1
        texts = [prefix + str(u).encode() for u in uniques]
        enc = _Encoded(col, codes=codes.astype(np.int64), texts=texts)
        if not col.nullable and (codes < 0).any():
            raise ValueError(f"column {col.name} holds nulls but is NOT NULL")
        return enc
    if col.kind == "timestamptz":
        values, nulls = _timestamps_us(series)
    elif col.kind == "date":
        stamps = pd.to_datetime(series)
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            stamps = stamps.dt.tz_convert(None)
        days = np.asarray(stamps).astype("datetime64[D]")
        nulls = np.isnat(days)
        values = np.where(nulls, 0, days.view("i8") - PG_EPOCH_DAYS)
    else:
        nulls = series.isna().to_numpy()
        fill = {"int8": 0, "float8": np.nan, "bool": False}[col.kind]
        if col.kind == "float8" and not col.nullable:
            nulls = np.zeros(len(series), bool)  # NaN is a value of float8, not NULL
        dtype = {"int8": np.int64, "float8": np.float64, "bool": np.bool_}[col.kind]
        values = series.to_numpy(dtype=dtype, na_value=fill)
    if not col.nullable and nulls.any():
        raise ValueError(f"column {col.name} holds nulls but is NOT NULL")
    be, _ = _FIXED[col.kind]
    return _Encoded(col, values=np.asarray(values).astype(be), nulls=nulls if nulls.any() else None)


def _layout_keys(encoded: Sequence[_Encoded], n: int) -> tuple[np.ndarray, int]:
    """One int64 per row identifying its layout (text values + null pattern)."""
    key = np.zeros(n, np.int64)
    radix = 1
    for enc in encoded:
        if enc.lengths is not None:
            key += (enc.lengths + 1) * radix
            radix *= int(enc.lengths.max(initial=0)) + 2
        elif enc.counts is not None:
            key += enc.counts * radix
            radix *= int(enc.counts.max(initial=0)) + 1
        elif enc.codes is not None:
            key += (enc.codes + 1) * radix
            radix *= len(enc.texts or []) + 1
        elif enc.nulls is not None:
            key += enc.nulls.astype(np.int64) * radix
            radix *= 2
        if radix > 2**40:
            return key, MAX_LAYOUTS + 1  # too many combinations to group
    if n == 0:
        return key, 0
    return key, int(np.unique(key).size) if key.min() != key.max() else 1


def _group_bytes(
    encoded: Sequence[_Encoded], rows: np.ndarray | slice, first: int, count: int
) -> memoryview:
    """All rows of one layout (row ``first`` tells which) as COPY tuples."""
    fields: list[tuple] = [("n", ">i2")]
    setters: list[tuple[str, object]] = []
    elements: list[tuple[str, np.ndarray]] = []
    for i, enc in enumerate(encoded):
        fields.append((f"l{i}", ">i4"))
        if enc.counts is not None:
            width = int(enc.counts[first])
            header = _array_header(width)
            setters.append((f"l{i}", 4 * len(header) + _ELEMENT.itemsize * width))
            fields.append((f"h{i}", ">i4", (len(header),)))
            setters.append((f"h{i}", header))
            if width:
                fields.append((f"e{i}", _ELEMENT, (width,)))
                elements.append((f"e{i}", enc.matrix[rows, :width]))  # type: ignore[index]
            continue
        if enc.lengths is not None:
            size = int(enc.lengths[first])
            setters.append((f"l{i}", size))
            if size > 0:
                fields.append((f"v{i}", f"S{size}"))
                setters.append((f"v{i}", enc.raw[rows]))  # type: ignore[index]
            continue
        if enc.codes is not None:
            code = int(enc.codes[first])
            if code < 0:
                setters.append((f"l{i}", -1))
                continue
            text = (enc.texts or [])[code]
            setters.append((f"l{i}", len(text)))
            if text:
                fields.append((f"v{i}", f"S{len(text)}"))
                setters.append((f"v{i}", text))
            continue
        if enc.nulls is not None and enc.nulls[first]:
            setters.append((f"l{i}", -1))
            continue
        be, width = _FIXED[enc.column.kind]
        fields.append((f"v{i}", be))
        setters.append((f"l{i}", width))
        setters.append((f"v{i}", enc.values[rows]))  # type: ignore[index]
    arr = np.empty(count, dtype=np.dtype(fields))
    arr["n"] = len(encoded)
    for name, value in setters:
        arr[name] = value
    for name, values in elements:
        arr[name]["l"] = 8
        arr[name]["v"] = values
    return memoryview(arr.view(np.uint8))


def _python_value(enc: _Encoded, row: int) -> bytes | None:
    """One field's binary payload (None for NULL): the per-row path."""
    if enc.counts is not None:
        count = int(enc.counts[row])
        elements = np.empty(count, dtype=_ELEMENT)
        elements["l"] = 8
        elements["v"] = enc.matrix[row, :count]  # type: ignore[index]
        return np.array(_array_header(count), ">i4").tobytes() + elements.tobytes()
    if enc.lengths is not None:
        return None if enc.lengths[row] < 0 else bytes(enc.raw[row])  # type: ignore[index]
    if enc.codes is not None:
        code = int(enc.codes[row])
        return None if code < 0 else (enc.texts or [])[code]
    if enc.nulls is not None and enc.nulls[row]:
        return None
    return enc.values[row : row + 1].tobytes()  # type: ignore[index]  # keeps big-endian


def _per_row(encoded: Sequence[_Encoded], start: int, stop: int) -> bytes:
    out = bytearray()
    count = len(encoded).to_bytes(2, "big")
    for r in range(start, stop):
        out += count
        for enc in encoded:
            payload = _python_value(enc, r)
            if payload is None:
                out += b"\xff\xff\xff\xff"
            else:
                out += len(payload).to_bytes(4, "big") + payload
    return bytes(out)


def encode_frame(
    frame: pd.DataFrame,
    columns: Sequence[CopyColumn],
    *,
    max_layouts: int = MAX_LAYOUTS,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[bytes | memoryview]:
    """The frame as a binary COPY stream (header, tuples, trailer), in chunks.

    Row order is not kept across layouts (a table has none); within a layout it is.
    """
    n = len(frame)
    encoded = [_encode_column(c, frame[c.name]) for c in columns]
    yield HEADER
    key, layouts = _layout_keys(encoded, n) if encoded else (np.zeros(n, np.int64), 1)
    if n and layouts > max_layouts:
        for start in range(0, n, chunk_rows):
            yield _per_row(encoded, start, min(n, start + chunk_rows))
    elif layouts == 1:
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            yield _group_bytes(encoded, slice(start, stop), start, stop - start)
    elif n:
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for group in np.split(order, bounds):
            for start in range(0, group.size, chunk_rows):
                rows = group[start : start + chunk_rows]
                yield _group_bytes(encoded, rows, int(rows[0]), rows.size)
    yield TRAILER


def float8_array_cells(payloads: Sequence[bytes]) -> np.ndarray:
    """float8[] values in PostgreSQL's binary form (what ``array_send`` returns) as an object
    array of float64 ``ndarray``, views of one buffer.

    Why: psycopg turns a text ``{...}`` array into a list of Python floats, about 5 s for a
    day of top-20 depth (345,600 arrays); the binary payloads decode here in a few numpy
    operations. Refuses anything but one-dimensional float8 arrays without NULL elements.
    """
    n = len(payloads)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    words = buf[np.minimum(starts[:, None] + np.arange(16), buf.size - 1)]
    ndim, flags, oid, dim = words.copy().view(">i4").astype(np.int64).T
    counts = np.where(ndim == 1, dim, 0)
    header = np.where(ndim == 1, 20, 12)
    bad = (ndim > 1) | (flags != 0) | (oid != FLOAT8_OID) | (lengths != header + 12 * counts)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"value {i} is not a one-dimensional float8[] without NULLs "
            f"(ndim {ndim[i]}, has-null flag {flags[i]}, element oid {oid[i]})"
        )
    keep = np.ones(buf.size, dtype=bool)
    keep[
        np.repeat(starts, header)
        + np.arange(header.sum())
        - np.repeat(np.cumsum(header) - header, header)
    ] = False
    elements = buf[keep].view(_ELEMENT)
    if (elements["l"] != 8).any():
        raise ValueError("a float8[] element is not 8 bytes long (a NULL element)")
    flat = elements["v"].astype(np.float64)
    bounds = np.r_[0, np.cumsum(counts)]
    for i in range(n):
        out[i] = flat[bounds[i] : bounds[i + 1]]
    return out


def to_jsonb_text(value: object) -> str:
    """Canonical JSON text for a jsonb field (sorted keys, no NaN)."""
    return json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
