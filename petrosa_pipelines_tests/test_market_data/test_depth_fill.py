"""The depth fill counts snapshots (depth v2: one row per snapshot).

A partition the lake holds in the version 1 layout (one row per level) is read as snapshots,
so the never-shrink rule compares snapshots with snapshots: re-filling the same book is not
"fewer rows", and an outage that leaves only the kept rows is still refused. Sources meet on
the natural key (exchange, symbol, snapshot_time): where two give the same tick, the first
source's snapshot is kept whole.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from petrosa_pipelines.catalog.depth_layout import to_long
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.exchanges.frames import depth_snapshots_to_frame
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data.assets import refuse_to_shrink
from petrosa_pipelines.market_data.datasets import DepthSpec
from petrosa_pipelines.market_data.fill import PartitionWindow, fill_partition
from petrosa_pipelines.market_data.sources import PreviousPartitionSource
from petrosa_pipelines_tests.test_market_data.test_fill import FakeSource

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 1, 2)
START, END = day_window_ms(DAY)
WINDOW = PartitionWindow(day=DAY, symbol="BTCUSDT", now_ms=END + 60_000)
TOP_N = 3


def _book(ticks: range, source: str, shift: str = "0") -> pd.DataFrame:
    """A 3-level book sampled at each second of ``ticks``; ``shift`` moves every price."""
    d = Decimal

    def snap(i: int) -> DepthSnapshotRecord:
        base = d(100) + d(i) / 10 + d(shift)
        return DepthSnapshotRecord(
            exchange="bybit-linear",
            symbol="BTCUSDT",
            last_update_id=1_000 + i,
            event_time=None,
            transaction_time=None,
            bids=tuple((base - d(k) / 10, d("1.5") + k) for k in range(TOP_N)),
            asks=tuple((base + d(k + 1) / 10, d("0.25") * (k + 1)) for k in range(TOP_N)),
        )

    return depth_snapshots_to_frame(
        [(START + i * 1000, snap(i)) for i in ticks], TOP_N, source=source
    )


def _v1_partition(tmp_path, frame):
    """``frame`` written as a version 1 (long) lake file, read back through the lake."""
    lake = LocalLake(tmp_path / "lake")
    rel = lake_path("market_data/depth", "bybit-linear", "BTCUSDT", DAY.isoformat())
    path = tmp_path / "lake" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(to_long(frame), preserve_index=False), path)
    return lake.read_frame(rel)


def test_a_v1_partition_refilled_with_the_same_book_is_not_a_shrink(tmp_path):
    book = _book(range(60), "ws")
    previous = _v1_partition(tmp_path, book)
    assert len(previous) == 60  # snapshots, not the 360 level rows of the file
    landing = FakeSource("ws", book, confirms=False)
    result = fill_partition(
        DepthSpec(1000), WINDOW, [landing, PreviousPartitionSource(previous, "depth")]
    )
    assert len(result.frame) == 60 and result.added_by("previous") == 0
    assert refuse_to_shrink("depth", f"{DAY}|BTCUSDT", result, previous) is None


def test_an_outage_that_leaves_only_the_kept_snapshots_is_refused(tmp_path):
    previous = _v1_partition(tmp_path, _book(range(60), "ws"))
    down = FakeSource("archive", _book(range(0), "archive"), error=ConnectionError("down"))
    landing = FakeSource("ws", _book(range(10), "ws"), confirms=False)
    result = fill_partition(
        DepthSpec(1000),
        WINDOW,
        [landing, down, PreviousPartitionSource(previous, "depth")],
    )
    assert len(result.frame) == 60 and result.added_by("previous") == 50
    refusal = refuse_to_shrink("depth", f"{DAY}|BTCUSDT", result, previous)
    assert refusal and "archive: ConnectionError: down" in refusal and "60 rows" in refusal


def test_sources_meet_on_the_snapshot_and_the_first_keeps_it_whole():
    ws = _book(range(0, 40), "ws")
    archive = _book(range(20, 60), "archive", shift="0.05")
    result = fill_partition(
        DepthSpec(1000),
        WINDOW,
        [FakeSource("ws", ws, confirms=False), FakeSource("archive", archive)],
    )
    frame = result.frame
    assert len(frame) == 60 and not frame.duplicated(["snapshot_time"]).any()
    assert result.source_mix() == {"archive": 20, "ws": 40}
    for src, want in (("ws", ws), ("archive", archive.iloc[20:])):
        got = frame[frame["source"] == src].reset_index(drop=True)
        want = want.reset_index(drop=True)
        assert got["snapshot_time"].equals(want["snapshot_time"])
        for col in ("bid_price", "bid_quantity", "ask_price", "ask_quantity"):
            assert all(np.array_equal(a, b) for a, b in zip(got[col], want[col], strict=True))
