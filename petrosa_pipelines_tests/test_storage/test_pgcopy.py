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
        with psycopg.connect(postgres_server_url) as conn:
            conn.execute("create temp table u (s text, i int8)")
            with conn.cursor() as cur:
                with cur.copy("copy u from stdin (format binary)") as cp:
                    for chunk in encode_frame(frame, cols, **kw):
                        cp.write(chunk)
                got = cur.execute("select s from u order by i").fetchall()
        assert [r[0] for r in got] == [None if pd.isna(v) else v for v in frame["s"]], kw
