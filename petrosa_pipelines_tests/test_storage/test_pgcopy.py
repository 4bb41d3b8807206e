"""Binary COPY encoding: bit-exact through a real PostgreSQL, both encoder paths."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import psycopg
import pytest

from petrosa_pipelines.serving.pgcopy import HEADER, TRAILER, CopyColumn, encode_frame

COLS = [
    CopyColumn("s", "text"),
    CopyColumn("i", "int8"),
    CopyColumn("f", "float8"),
    CopyColumn("fn", "float8", nullable=True),
    CopyColumn("b", "bool"),
    CopyColumn("t", "timestamptz"),
    CopyColumn("tn", "timestamptz", nullable=True),
    CopyColumn("d", "date"),
    CopyColumn("j", "jsonb", nullable=True),
]
DDL = (
    "create temp table t (s text, i int8, f float8, fn float8, b bool, t timestamptz, "
    "tn timestamptz, d date, j jsonb)"
)


def sample():
    return pd.DataFrame(
        {
            "s": ["binance", "ws", "", "ünï", "ws"],
            "i": [0, -1, 2**62, -(2**63), 5],
            "f": [0.1, 42_000.12345678, float("nan"), 1e-300, -0.0],
            "fn": [1.5, np.nan, 2.5, np.nan, 3.0],
            "b": [True, False, True, False, True],
            "t": pd.to_datetime(
                [0, 1_704_153_600_123, 1, 2_000_000_000_000, 946_684_800_000], unit="ms", utc=True
            ),
            "tn": pd.to_datetime([5, None, 7, None, 9], unit="ms", utc=True),
            "d": pd.to_datetime(
                ["2024-01-02", "1999-12-31", "2000-01-01", "2038-01-20", "1970-01-01"]
            ),
            "j": ['{"a": 1}', None, "[1, 2]", '{"k": "v"}', None],
        }
    )


def copy_and_read(url, frame, **kw):
    with psycopg.connect(url) as conn:
        conn.execute(DDL)
        with conn.cursor() as cur:
            with cur.copy("copy t from stdin (format binary)") as cp:
                for chunk in encode_frame(frame, COLS, **kw):
                    cp.write(chunk)
            return cur.execute("select * from t order by i").fetchall()


@pytest.mark.parametrize("kw", [{}, {"max_layouts": 0}, {"chunk_rows": 2}])
def test_roundtrip_is_exact(postgres_server_url, kw):
    frame = sample()
    rows = copy_and_read(postgres_server_url, frame, **kw)
    expected = frame.sort_values("i").reset_index(drop=True)
    assert len(rows) == len(frame)
    for got, (_, exp) in zip(rows, expected.iterrows(), strict=True):
        assert got[0] == exp.s and got[1] == exp.i and got[4] == exp.b
        if math.isnan(exp.f):
            assert math.isnan(got[2])
        else:
            assert got[2] == exp.f and math.copysign(1, got[2]) == math.copysign(1, exp.f)
        assert (got[3] is None) == bool(np.isnan(exp.fn)) and (got[3] is None or got[3] == exp.fn)
        assert got[5] == exp.t.to_pydatetime()
        assert (got[6] is None) == pd.isna(exp.tn)
        assert got[7] == exp.d.date()
        assert (got[8] is None) == pd.isna(exp.j)
        assert got[8] is None or got[8] == __import__("json").loads(exp.j)


def test_stream_has_header_and_trailer_and_both_paths_agree_on_content():
    frame = sample()
    fast = b"".join(bytes(c) for c in encode_frame(frame, COLS))
    slow = b"".join(bytes(c) for c in encode_frame(frame, COLS, max_layouts=0))
    assert fast.startswith(HEADER) and fast.endswith(TRAILER)
    assert len(fast) == len(slow) and sorted(fast) == sorted(slow)


def test_nulls_in_not_null_columns_are_refused():
    frame = sample()
    frame.loc[0, "t"] = pd.NaT
    with pytest.raises(ValueError, match="column t holds nulls"):
        list(encode_frame(frame, COLS))


def test_empty_frame_is_header_and_trailer():
    assert b"".join(bytes(c) for c in encode_frame(sample().head(0), COLS)) == HEADER + TRAILER


def test_naive_timestamps_are_taken_as_utc():
    frame = sample()
    frame["t"] = frame["t"].dt.tz_localize(None)
    aware = b"".join(bytes(c) for c in encode_frame(sample(), COLS))
    assert b"".join(bytes(c) for c in encode_frame(frame, COLS)) == aware
    assert dt.UTC  # documented behaviour: the warehouse itself only passes aware frames


def _copy_then_select(url, table, frame, cols, kw, select):
    """COPY ``frame`` (``encode_frame(frame, cols, **kw)``) into a temp ``table``, then run
    ``select`` on it."""
    with psycopg.connect(url) as conn:
        conn.execute(f"create temp table {table}")
        name = table.split()[0]
        with conn.cursor() as cur:
            with cur.copy(f"copy {name} from stdin (format binary)") as cp:
                for chunk in encode_frame(frame, cols, **kw):
                    cp.write(chunk)
            return cur.execute(select).fetchall()


def _ids_frame(n=1_000):
    """Unique ids of a few lengths (Binance decimal texts, Bybit UUIDs), one non-ASCII, a null."""
    ids = [
        str(10**6 + i * 997) if i % 3 else f"{i:08x}-82bc-50de-be60-03eedbe3cdd7" for i in range(n)
    ]
    ids[7], ids[8] = "ïd-ünï", None
    return pd.DataFrame({"s": ids, "i": np.arange(n, dtype=np.int64)})


def test_unique_text_is_laid_out_by_length_and_roundtrips(postgres_server_url):
    from petrosa_pipelines.serving.pgcopy import _encode_column, _layout_keys

    frame = _ids_frame()
    cols = [CopyColumn("s", "text", nullable=True), CopyColumn("i", "int8")]
    encoded = [_encode_column(c, frame[c.name]) for c in cols]
    assert encoded[0].lengths is not None  # not 1,000 layouts of one row each
    assert _layout_keys(encoded, len(frame))[1] == frame["s"].str.len().nunique(dropna=False)
    fast = b"".join(bytes(c) for c in encode_frame(frame, cols))
    slow = b"".join(bytes(c) for c in encode_frame(frame, cols, max_layouts=0))
    assert len(fast) == len(slow) and sorted(fast) == sorted(slow)
    for kw in ({}, {"max_layouts": 0}, {"chunk_rows": 7}):
        got = _copy_then_select(
            postgres_server_url, "u (s text, i int8)", frame, cols, kw, "select s from u order by i"
        )
        assert [r[0] for r in got] == [None if pd.isna(v) else v for v in frame["s"]], kw


def _arrays_frame():
    """float8[] cells of several lengths (0 = an empty side), a NaN and a -0.0 among them, in
    every cell form a frame may hold (ndarray, list, tuple, None = empty)."""
    cells = [
        np.array([42_000.1, 41_999.9, 41_999.8]),
        [0.1],
        (),
        np.array([1e-300, float("nan"), -0.0]),
        None,
        np.array([5.0, 4.0]),
        [2.5, 2.0, 1.5],
    ]
    return pd.DataFrame({"i": np.arange(len(cells), dtype=np.int64), "a": cells})


def test_float8_arrays_roundtrip_bit_exact_on_both_paths(postgres_server_url):
    """Depth's levels: one float8[] per row, rows of one element count laid out together."""
    from petrosa_pipelines.serving.pgcopy import _encode_column, _layout_keys

    frame = _arrays_frame()
    cols = [CopyColumn("i", "int8"), CopyColumn("a", "float8[]")]
    encoded = [_encode_column(c, frame[c.name]) for c in cols]
    assert encoded[1].counts.tolist() == [3, 1, 0, 3, 0, 2, 3]
    assert _layout_keys(encoded, len(frame))[1] == 4  # counts 0, 1, 2, 3
    fast = b"".join(bytes(c) for c in encode_frame(frame, cols))
    slow = b"".join(bytes(c) for c in encode_frame(frame, cols, max_layouts=0))
    assert len(fast) == len(slow) and sorted(fast) == sorted(slow)
    for kw in ({}, {"max_layouts": 0}, {"chunk_rows": 2}):
        got = _copy_then_select(
            postgres_server_url, "v (i int8, a float8[])", frame, cols, kw,
            "select a, cardinality(a), array_ndims(a) from v order by i",
        )  # fmt: skip
        for (arr, card, ndims), cell in zip(got, frame["a"], strict=True):
            want = np.asarray(cell if cell is not None else [], dtype=np.float64)
            assert card == len(want) and ndims == (1 if len(want) else None), kw
            back = np.asarray(arr, dtype=np.float64)
            # bit for bit: NaN stays NaN, -0.0 keeps its sign
            assert back.view(np.int64).tolist() == want.view(np.int64).tolist(), kw


def test_binary_float8_arrays_decode_bit_exact_and_refuse_other_arrays(postgres_server_url):
    """What the warehouse reads: ``array_send`` payloads decoded by numpy, not psycopg."""
    from petrosa_pipelines.serving.pgcopy import float8_array_cells

    frame = _arrays_frame()
    cols = [CopyColumn("i", "int8"), CopyColumn("a", "float8[]")]
    with psycopg.connect(postgres_server_url) as conn:
        conn.execute("create temp table w (i int8, a float8[])")
        with conn.cursor() as cur:
            with cur.copy("copy w from stdin (format binary)") as cp:
                for chunk in encode_frame(frame, cols):
                    cp.write(chunk)
            payloads = [r[0] for r in cur.execute("select array_send(a) from w order by i")]
            others = {
                sql: cur.execute(f"select array_send({sql})").fetchone()[0]
                for sql in (
                    "array[1, 2]::int8[]",
                    "array[[1.0, 2.0], [3.0, 4.0]]::float8[]",
                    "array[1.0, null]::float8[]",
                )
            }
    cells = float8_array_cells(payloads)
    assert float8_array_cells([]).shape == (0,)
    for got, cell in zip(cells, frame["a"], strict=True):
        want = np.asarray(cell if cell is not None else [], dtype=np.float64)
        assert got.dtype == np.float64
        assert got.view(np.int64).tolist() == want.view(np.int64).tolist()
    for payload in others.values():  # int8[], 2-D, a NULL element
        with pytest.raises(ValueError, match="value 1 is not a one-dimensional float8"):
            float8_array_cells([payloads[0], payload])
