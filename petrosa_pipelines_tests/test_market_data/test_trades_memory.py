"""Memory of a trades day, as ratios to the day's own size (never absolute bytes or speed).

A day of 10 M trades is over a GB as a frame, so the fill must not hold several copies of it
(issue: a 10 M-trade materialisation under 1.5 GB peak RSS). ``tracemalloc`` counts what
Python and numpy allocate (arrow's own pool is not traced), which is where the fill's copies
were: each copy of the frame copies its numeric columns. The day is built as the archive
parser builds it (``bodies.build_frame``) before tracing starts, so only the fill is counted.
"""

from __future__ import annotations

import datetime as dt
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from petrosa_pipelines.catalog.schemas import TRADES
from petrosa_pipelines.exchanges.binance.bodies import build_frame
from petrosa_pipelines.lake import LocalLake, frame_to_parquet_bytes
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data.datasets import TradesSpec
from petrosa_pipelines.market_data.fill import PartitionWindow, already_deduped, fill_partition
from petrosa_pipelines.market_data.sources import ArchiveSource

DAY = dt.date(2024, 3, 2)
N = 1_000_000
#: the fill may hold this many copies of the day's numeric columns at its peak (masks, the
#: validation's arrays, one sort by id): measured 1.7; before it held 4.6 (a conform copy, a
#: concat copy, the dedup's hashing and sort, the window filters, a receipt-time copy)
MAX_COPIES = 2.5


def archive_day(n: int, seed: int = 5) -> pd.DataFrame:
    """``n`` consecutive aggregate trades of ``DAY``, shaped as a Vision archive parse gives."""
    rng = np.random.default_rng(seed)
    start, end = day_window_ms(DAY)
    last = 3_000_000_000 + np.cumsum(rng.integers(1, 4, n))
    return build_frame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_trade_id": np.arange(1_000_000_000, 1_000_000_000 + n, dtype=np.int64),
            "price": np.round(60_000 + np.cumsum(rng.normal(0, 0.5, n)), 1),
            "quantity": np.round(rng.exponential(0.05, n) + 0.001, 3),
            "first_trade_id": last - rng.integers(0, 2, n),
            "last_trade_id": last,
            "trade_time": np.sort(rng.integers(start, end, n)),
            "is_buyer_maker": rng.random(n) < 0.5,
            "source": "archive",
            "received_at": None,
        },
        TRADES,
    )


def numeric_bytes(frame: pd.DataFrame) -> int:
    return int(
        sum(frame[c].to_numpy().nbytes for c in frame.columns if frame[c].dtype.kind in "iufbM")
    )


class _Archive:
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def daily_agg_trades(self, symbol: str, day: dt.date) -> pd.DataFrame:
        return self.frame


def traced_peak(fn):
    """(result, bytes allocated at the peak of ``fn`` beyond what was live before it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def day() -> pd.DataFrame:
    return archive_day(N)


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_filling_a_day_from_its_archive_holds_no_more_than_a_few_copies(day):
    window = PartitionWindow(DAY, "BTCUSDT", now_ms=day_window_ms(DAY)[1] + 1)
    source = ArchiveSource(_Archive(day), "trades")
    result, peak = traced_peak(lambda: fill_partition(TradesSpec(), window, [source]))
    # every row kept, unchanged, in the same order: the day was already its own dedup
    pd.testing.assert_frame_equal(result.frame, day, check_exact=True)
    assert result.missing == []
    copies = peak / numeric_bytes(day)
    assert copies <= MAX_COPIES, f"the fill held {copies:.2f} copies of the day's columns"


def test_the_dedup_shortcut_is_taken_only_where_dedup_would_change_nothing(day):
    head = day.iloc[:1000].reset_index(drop=True)
    assert already_deduped(head, TRADES)
    swapped = head.iloc[[1, 0, *range(2, 1000)]].reset_index(drop=True)
    repeated = pd.concat([head, head.iloc[[999]]], ignore_index=True)
    other_id = head.assign(trade_id=head["trade_id"].where(head.index != 5, "x"))
    two_symbols = head.assign(symbol=head["symbol"].where(head.index != 7, "ETHUSDT"))
    for frame in (swapped, repeated, other_id, two_symbols):
        assert not already_deduped(frame, TRADES)


def test_writing_a_lake_file_never_holds_its_bytes_in_python(day, tmp_path):
    lake = LocalLake(tmp_path)
    rel = "market_data/trades/binance/BTCUSDT/2024-03-02.parquet"
    _, peak = traced_peak(lambda: lake.write_frame(rel, day))
    size = (tmp_path / rel).stat().st_size
    # a write through bytes held the whole file in Python (measured 1.06 times it; now 0.03)
    assert peak < size / 4, f"the write held {peak / size:.2f} times the file's bytes"
    assert (tmp_path / rel).read_bytes() == frame_to_parquet_bytes(day)
    assert pq.read_table(tmp_path / rel).num_rows == N
    pd.testing.assert_frame_equal(lake.read_frame(rel), day, check_exact=True)
