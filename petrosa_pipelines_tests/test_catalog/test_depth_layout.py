"""Depth v2 (one row per snapshot) against v1 (one row per level): lossless both ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petrosa_pipelines.catalog import depth_layout as dl
from petrosa_pipelines.catalog.schemas import DEPTH, conform
from petrosa_pipelines.lake import read_parquet_frame, write_parquet


def wide(books: list[tuple[list[float], list[float]]], start_ms: int = 0) -> pd.DataFrame:
    """A v2 frame of ``books`` (bid prices, ask prices), one second apart; quantity = level+1."""
    n = len(books)
    t = pd.to_datetime(start_ms + np.arange(n) * 1000, unit="ms", utc=True)
    cells = {c: [] for c in dl.ALL_LEVEL_COLUMNS}
    for bids, asks in books:
        cells["bid_price"].append(np.asarray(bids, dtype=float))
        cells["bid_quantity"].append(np.arange(1.0, len(bids) + 1))
        cells["ask_price"].append(np.asarray(asks, dtype=float))
        cells["ask_quantity"].append(np.arange(1.0, len(asks) + 1))
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "snapshot_time": t,
            "last_update_id": np.arange(n, dtype=np.int64) + 7,
            **cells,
            "source": "ws",
            "received_at": t,
        }
    )
    return conform(frame, DEPTH)


def same_levels(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return all(
        len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a[c], b[c], strict=True))
        for c in dl.ALL_LEVEL_COLUMNS
    )


BOOKS = [([100.0, 99.5, 99.0], [100.5, 101.0]), ([100.1], []), ([], [100.7, 100.8, 100.9])]


def test_long_rows_are_v1_rows_in_v1_order():
    long = dl.to_long(wide(BOOKS))
    assert list(long.columns) == list(dl.LONG_COLUMNS)
    assert len(long) == 3 + 2 + 1 + 0 + 0 + 3
    first = long[long["snapshot_time"] == long["snapshot_time"].iloc[0]]
    assert list(first["side"]) == ["ask", "ask", "bid", "bid", "bid"]
    assert list(first["level"]) == [0, 1, 0, 1, 2]
    assert list(first["price"]) == [100.5, 101.0, 100.0, 99.5, 99.0]
    assert list(first["quantity"]) == [1.0, 2.0, 1.0, 2.0, 3.0]
    assert (long["last_update_id"].to_numpy() == [7] * 5 + [8] + [9] * 3).all()


def test_side_matrix_pads_with_nan_and_cuts_at_width():
    frame = wide(BOOKS)
    prices, qtys = dl.side_matrix(frame, "bid")
    assert prices.shape == (3, 3)
    assert np.array_equal(prices[0], [100.0, 99.5, 99.0])
    assert prices[1, 0] == 100.1 and np.isnan(prices[1, 1:]).all()
    assert np.isnan(prices[2]).all() and np.isnan(qtys[2]).all()
    top, _ = dl.side_matrix(frame, "ask", width=1)
    assert top.shape == (3, 1) and np.isnan(top[1, 0]) and top[2, 0] == 100.7
    cells, _ = dl.from_matrix(prices, qtys)
    assert [len(c) for c in cells] == [3, 1, 0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(1, 1e6, allow_nan=False), max_size=6),
            st.lists(st.floats(1, 1e6, allow_nan=False), max_size=6),
        ),
        max_size=12,
    )
)
def test_v1_and_v2_round_trip_losslessly(books):
    frame = wide(books)
    long = dl.to_long(frame)
    back = conform(long, DEPTH)
    # v1 has no row for a snapshot with no level on either side: only those cannot come back
    kept = frame.loc[np.array([bool(len(b) or len(a)) for b, a in books], dtype=bool)]
    kept = kept.reset_index(drop=True)
    assert same_levels(kept, back)
    assert back["snapshot_time"].tolist() == kept["snapshot_time"].tolist()
    assert len(long) == sum(len(b) + len(a) for b, a in books)


def test_a_v1_file_reads_as_v2(tmp_path):
    frame = wide(BOOKS)
    write_parquet(dl.to_long(frame), tmp_path / "v1.parquet")
    got = read_parquet_frame(tmp_path / "v1.parquet")
    assert list(got.columns) == DEPTH.column_names
    assert same_levels(got, frame)
    assert got["last_update_id"].tolist() == [7, 8, 9]


def test_a_v2_file_keeps_its_lists(tmp_path):
    frame = wide(BOOKS)
    write_parquet(frame, tmp_path / "v2.parquet")
    got = read_parquet_frame(tmp_path / "v2.parquet")
    assert same_levels(got, frame)
    assert all(c.dtype == np.float64 for c in got["ask_price"])


def test_a_v1_frame_without_rows_conforms_to_an_empty_v2_frame():
    empty = dl.to_long(wide([]))
    assert len(empty) == 0
    out = conform(empty, DEPTH)
    assert list(out.columns) == DEPTH.column_names and len(out) == 0


@pytest.mark.parametrize("cell", [None, [], (1.0, 2.0), np.array([3.0])])
def test_level_cells_take_sequences_and_none(cell):
    (out,) = dl.as_float_lists([cell])
    assert out.dtype == np.float64
    assert len(out) == (0 if cell is None else len(cell))
