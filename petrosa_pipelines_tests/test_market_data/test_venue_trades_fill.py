"""The trades contract across venues (issue 12): rows are keyed by the venue's own trade id.

Bybit-shaped trades (UUID ids, aggregate ids from ``seq`` in ws/REST and 0 in the archive)
merge across sources by ``trade_id``; ids prove no coverage, so a closed day needs a source
that confirms it. Binance partitions keep their rows: a v1 lake file without ``trade_id``
reads with it filled, and materialising it twice gives the same rows.
"""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from petrosa_pipelines.catalog.schemas import TRADES, conform, with_trade_ids
from petrosa_pipelines.exchanges.base import Source, TradeRecord
from petrosa_pipelines.exchanges.frames import records_to_frame
from petrosa_pipelines.lake import LocalLake
from petrosa_pipelines.lib.timeutil import MINUTE_MS, day_window_ms
from petrosa_pipelines.market_data.datasets import TradesSpec, trades_spec
from petrosa_pipelines.market_data.fill import (
    HistorySource,
    PartitionWindow,
    SourceAnswer,
    fill_partition,
)
from petrosa_pipelines.market_data.sources import (
    ArchiveSource,
    LandingSource,
    PreviousPartitionSource,
    RestSource,
    sources_for,
)
from petrosa_pipelines.market_data.validate import split_valid
from petrosa_pipelines_tests.bybit_shaped import (
    STANDIN,
    SYMBOL,
    as_archive,
    bybit_trades,
    register_standin,
)
from petrosa_pipelines_tests.test_storage import frames as storage_frames

DAY = dt.date(2026, 8, 9)
START, END = day_window_ms(DAY)
CLOSED = PartitionWindow(DAY, SYMBOL, now_ms=END + 3_600_000)


@pytest.fixture(autouse=True)
def _standin(monkeypatch):
    register_standin(monkeypatch)


class Given(HistorySource):
    """A source that answers with fixed rows (and confirms what it is told)."""

    def __init__(self, name, frame, confirmed=()):
        self.name, self.frame, self.confirmed = name, frame, list(confirmed)

    def fetch(self, window, missing):
        return SourceAnswer(frame=self.frame, confirmed=self.confirmed)


def _rest_rows(trades):
    return conform(trades.assign(source="rest", received_at=pd.NaT), TRADES)


def test_ws_archive_and_rest_rows_merge_by_trade_id():
    trades = bybit_trades(START, 1440, per_minute=4, seed=3)
    n = len(trades)
    ws = trades.iloc[: n // 2]  # the ingest ran the first half of the day
    archive = as_archive(trades)  # the whole day, ids 0
    rest = _rest_rows(trades.iloc[n // 2 - 100 : n // 2 + 100])  # overlaps both
    sources = [
        Given("ws", ws),
        Given("archive", archive, [(START, END)]),
        Given("rest", rest),
    ]
    result = fill_partition(trades_spec(STANDIN), CLOSED, sources)
    out = result.frame
    assert len(out) == n and out["trade_id"].is_unique
    assert set(out["trade_id"]) == set(trades["trade_id"])
    assert result.source_mix() == {"archive": n - n // 2, "ws": n // 2}  # first source wins
    ws_rows = out[out["source"] == "ws"].set_index("trade_id")["agg_trade_id"]
    assert (ws_rows == trades.set_index("trade_id").loc[ws_rows.index, "agg_trade_id"]).all()
    assert result.missing == []
    # time order, then id: the same input gives the same rows
    again = fill_partition(trades_spec(STANDIN), CLOSED, sources)
    pd.testing.assert_frame_equal(again.frame, out)
    assert out["trade_time"].is_monotonic_increasing


def test_archive_ids_of_zero_are_not_one_trade():
    trades = bybit_trades(START, 10, per_minute=5, seed=4)
    archive = as_archive(trades)
    result = fill_partition(trades_spec(STANDIN), CLOSED, [Given("archive", archive)])
    assert len(result.frame) == len(trades)  # keyed by agg_trade_id they would be one row


def test_ids_prove_nothing_so_a_closed_day_needs_a_confirming_source():
    trades = bybit_trades(START, 1440, per_minute=4, seed=5)
    spec = trades_spec(STANDIN)
    assert isinstance(spec, TradesSpec) and not spec.consecutive_ids
    alone = fill_partition(spec, CLOSED, [Given("ws", trades)])
    assert alone.missing == [(START, END)]
    confirmed = fill_partition(
        spec, CLOSED, [Given("ws", trades), Given("archive", as_archive(trades), [(START, END)])]
    )
    assert confirmed.missing == [] and confirmed.source_mix() == {"ws": len(trades)}


def test_the_open_day_is_covered_where_trades_are_dense_and_a_silence_stays_missing():
    trades = bybit_trades(START, 600, per_minute=30, seed=6)
    ms = trades["trade_time"].astype("datetime64[ms, UTC]").astype("int64")
    hole = (START + 200 * MINUTE_MS, START + 230 * MINUTE_MS)
    gappy = trades[(ms < hole[0]) | (ms >= hole[1])]
    now = START + 600 * MINUTE_MS
    window = PartitionWindow(DAY, SYMBOL, now_ms=now)
    spec = trades_spec(STANDIN)
    assert fill_partition(spec, window, [Given("ws", trades)]).missing == []
    missing = fill_partition(spec, window, [Given("ws", gappy)]).missing
    assert len(missing) == 1
    lo, hi = missing[0]
    assert lo <= hole[0] + 2_000 and hi >= hole[1] - 2_000 and hi - lo < 31 * MINUTE_MS


def test_binance_keeps_id_rules():
    spec = trades_spec("binance")
    assert spec.consecutive_ids
    assert trades_spec("no-such-venue").consecutive_ids  # unknown: Binance's rules


def test_sources_follow_what_the_venue_declares():
    present = object()
    names = [s.name for s in sources_for("trades", present, present, present, STANDIN)]
    assert names == ["ws", "archive"]  # Bybit: no REST history of trades
    candles = sources_for("candles", present, present, present, STANDIN)
    assert [type(s) for s in candles] == [LandingSource, RestSource]  # no candle archive
    assert candles[1].reach_ms is None
    binance = sources_for("trades", present, present, present, "binance")
    assert [type(s) for s in binance] == [LandingSource, ArchiveSource, RestSource]
    assert binance[2].reach_ms == 365 * 86_400_000 and binance[2].repair_by_id


def test_rows_without_a_trade_id_are_rejected():
    trades = bybit_trades(START, 2, per_minute=3, seed=8)
    trades.loc[1, "trade_id"] = ""
    valid, bad, reasons = split_valid(trades, "trades")
    assert len(valid) == len(trades) - 1 and reasons == {"trade_id missing": 1}


# -- Binance: v1 partitions and records ----------------------------------------------------------


def test_binance_records_get_the_aggregate_id_as_trade_id_and_bybit_keeps_its_uuid():
    common = dict(
        symbol=SYMBOL,
        price=1,
        quantity=1,
        trade_time=START,
        is_buyer_maker=True,
        source=Source.WS,
    )
    binance = TradeRecord(
        exchange="binance", agg_trade_id=42, first_trade_id=1, last_trade_id=2, **common
    )
    uuid = "a9188a0a-82bc-50de-be60-03eedbe3cdd7"
    bybit = TradeRecord(
        exchange=STANDIN,
        agg_trade_id=753843954913000,
        first_trade_id=753843954913000,
        last_trade_id=753843954913000,
        trade_id=uuid,
        **common,
    )
    frame = records_to_frame("trades", [binance, bybit])
    assert frame["trade_id"].tolist() == ["42", uuid]
    assert str(frame["trade_id"].dtype) == "string"


def _v1(frame):
    """A frame as v1 of the trades schema wrote it: no trade_id column."""
    return frame.drop(columns=["trade_id"])


def test_a_v1_lake_file_reads_with_trade_ids_filled(tmp_path):
    current = storage_frames.trades(n=500, first_id=7_000_000_000)
    lake = LocalLake(tmp_path)
    lake.write_frame("market_data/trades/binance/BTCUSDT/2024-01-02.parquet", _v1(current))
    path = "market_data/trades/binance/BTCUSDT/2024-01-02.parquet"
    raw = pq.read_table(io.BytesIO(lake.read_bytes(path))).to_pandas()
    assert "trade_id" not in raw.columns  # the file is v1
    assert with_trade_ids(raw)["trade_id"].tolist() == [str(i) for i in raw["agg_trade_id"]]
    # every reader of the lake (complete-partition checks, warehouse loads) gets it as v2
    old = lake.read_frame(path)
    assert old["trade_id"].tolist() == [str(i) for i in old["agg_trade_id"]]
    pd.testing.assert_frame_equal(conform(old, TRADES), current)


def test_materialising_a_v1_binance_partition_twice_gives_the_same_rows():
    current = storage_frames.trades(n=800, first_id=1_000_000, step_ms=50)
    day = dt.date(2024, 1, 2)
    window = PartitionWindow(day, SYMBOL, now_ms=day_window_ms(day)[1] + 3_600_000)
    landed = current.iloc[100:700]  # what the landing zone still has
    first = fill_partition(
        TradesSpec(),
        window,
        [Given("ws", landed), PreviousPartitionSource(_v1(current), "trades")],
    )
    pd.testing.assert_frame_equal(first.frame, current)
    second = fill_partition(
        TradesSpec(),
        window,
        [Given("ws", landed), PreviousPartitionSource(first.frame, "trades")],
    )
    pd.testing.assert_frame_equal(second.frame, first.frame)
    assert first.added_by("previous") == second.added_by("previous") == 200


def test_binance_partitions_keep_numeric_id_order_within_a_millisecond():
    frame = storage_frames.trades(n=4, first_id=98)
    frame["trade_time"] = frame["trade_time"].iloc[0]  # one millisecond: ids 98, 99, 100, 101
    shuffled = frame.iloc[[3, 0, 2, 1]]
    day = dt.date(2024, 1, 2)
    window = PartitionWindow(day, SYMBOL, now_ms=day_window_ms(day)[1])
    out = fill_partition(TradesSpec(), window, [Given("ws", shuffled)]).frame
    assert out["agg_trade_id"].tolist() == [98, 99, 100, 101]  # not "100" < "101" < "98"
    assert np.array_equal(out["trade_id"].to_numpy(dtype=object), ["98", "99", "100", "101"])


def test_the_trades_asset_fills_by_its_partitions_venue():
    """The asset's spec follows the partition's storage name: Bybit's ids prove nothing."""
    from petrosa_pipelines.market_data.assets import MarketDataConfig, _spec

    cfg = MarketDataConfig()
    assert _spec("trades", cfg, "bybit-linear").consecutive_ids is False
    assert _spec("trades", cfg, "binance").consecutive_ids is True
    assert _spec("depth", cfg, "bybit-linear").cadence_ms == cfg.depth_cadence_ms
