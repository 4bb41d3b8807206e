"""The memory of a trades day at its peak: scans in blocks, one lake read, a re-run by id.

Issue 13: a 10 M-trade materialisation under 1.5 GB peak RSS. The whole-day scans of the fill
(validation, coverage by id, the window count, the archive's day and edges) work on blocks of
``CHECK_BLOCK`` / ``BLOCK_ROWS`` rows, so what they allocate beside the day is bounded by the
block, not by the day: the tests shrink the blocks and count ``tracemalloc``'s peak (numpy's
allocations) per row. Each block-wise result is held to the whole-day computation it replaced.
The peak RSS of a whole asset step (archive parse, fill, lake write) is measured by the bench
in a process of its own, per trade, with a wide margin: never a speed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey

from petrosa_pipelines.catalog.schemas import CANDLES, FUNDING, TRADES, with_trade_ids
from petrosa_pipelines.lake import LakeFile, LocalLake, lake_path, read_parquet_frame
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data import fill, validate
from petrosa_pipelines.market_data.assets import refuse_to_shrink
from petrosa_pipelines.market_data.datasets import TradesSpec
from petrosa_pipelines.market_data.fill import PartitionWindow, fill_partition
from petrosa_pipelines.market_data.sources import (
    ArchiveSource,
    PreviousPartitionSource,
    check_day,
    trade_edges_reached,
)
from petrosa_pipelines_tests.test_market_data.test_trades_memory import DAY, _Archive, archive_day
from resources import LakeIOManager

REPO = Path(__file__).resolve().parents[2]
N = 200_000
BLOCK = 1 << 13
CLOSED = PartitionWindow(DAY, "BTCUSDT", now_ms=day_window_ms(DAY)[1] + 1)


@pytest.fixture(scope="module")
def day() -> pd.DataFrame:
    return archive_day(N, seed=11)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(fill, "CHECK_BLOCK", BLOCK)
    monkeypatch.setattr(validate, "BLOCK_ROWS", BLOCK)


def traced_peak(fn):
    """(result, numpy/Python bytes allocated at ``fn``'s peak beyond what was live before)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ the scans hold a block


def test_the_fills_scans_of_a_day_hold_a_block_not_a_day(day, small_blocks):
    """Beside the day, a scan holds a byte or two per row (a mask, the reasons' codes) and a
    few arrays of one block; the whole-day versions held 5 to 41 bytes per row (measured)."""
    spec = TradesSpec()
    scans = {  # name: (scan, bytes per row it may hold beside the block's arrays)
        "split_valid": (lambda: validate.split_valid(day, "trades"), 4),
        "implied_coverage": (lambda: spec.implied_coverage(day, CLOSED), 2),
        "intrinsic_gaps": (lambda: spec.intrinsic_gaps(day, CLOSED), 2),
        "missing": (lambda: spec.missing(day, CLOSED, []), 2),
        "count_in_window": (lambda: spec.count_in_window(day, CLOSED), 2),
        "check_day": (lambda: check_day(day, "trades", CLOSED, "archive"), 2),
        # the edges need the gaps' median: one int64 array of the day, partitioned in place
        "trade_edges_reached": (lambda: trade_edges_reached(day, CLOSED), 9),
    }
    for name, (scan, per_row) in scans.items():
        _, peak = traced_peak(scan)
        assert peak <= per_row * N + 48 * BLOCK, f"{name} held {peak / N:.1f} bytes per row"


def with_bad_rows(day: pd.DataFrame) -> pd.DataFrame:
    """The day with rows breaking each rule (some breaking two: the first rule names them)."""
    bad = day.copy()
    rng = np.random.default_rng(3)
    rows = rng.choice(N, 600, replace=False)
    edits = [
        ("price", 0.0),
        ("quantity", -1.0),
        ("agg_trade_id", -5),
        ("first_trade_id", 10**15),
        ("trade_time", pd.NaT),
        ("trade_id", ""),
    ]
    for i, (col, value) in enumerate(edits):
        bad.loc[rows[i * 100 : (i + 1) * 100], col] = value
    bad.loc[rows[:20], "quantity"] = np.nan  # price too: "price not > 0" wins
    return bad


def test_rows_judged_in_blocks_are_judged_as_the_whole_day(day, monkeypatch):
    bad = with_bad_rows(day)
    whole = validate.invalid_reasons(bad, "trades")
    valid_whole, rejected_whole, counts_whole = validate.split_valid(bad, "trades")
    monkeypatch.setattr(validate, "BLOCK_ROWS", 777)  # blocks cut anywhere
    pd.testing.assert_series_equal(validate.invalid_reasons(bad, "trades"), whole)
    valid, rejected, counts = validate.split_valid(bad, "trades")
    pd.testing.assert_frame_equal(valid, valid_whole)
    pd.testing.assert_frame_equal(rejected, rejected_whole)
    assert counts == counts_whole
    # the same counts the per-row reasons give, sorted by reason
    expected = whole[whole != ""].value_counts().sort_index()
    assert counts == {str(k): int(v) for k, v in expected.items()}
    assert list(counts) == sorted(counts)
    assert counts["price not > 0"] == 100 and len(rejected) == 600
    # a day without a bad row is handed back as is: no copy of it
    assert validate.split_valid(day, "trades")[0] is day


def test_candles_and_funding_rows_are_judged_in_blocks_too(monkeypatch):
    n = 3000
    opens = pd.Timestamp("2024-03-02", tz="UTC") + pd.to_timedelta(np.arange(n), unit="min")
    candles = CANDLES.empty_frame().reindex(range(n))
    candles = candles.assign(
        exchange="binance",
        symbol="BTCUSDT",
        interval="1m",
        open_time=opens,
        close_time=opens + pd.Timedelta(seconds=59.999),
        open=10.0,
        high=np.where(np.arange(n) % 97 == 0, 9.0, 11.0),
        low=9.5,
        close=10.5,
        volume=np.where(np.arange(n) % 89 == 0, -1.0, 1.0),
    )
    funding = FUNDING.empty_frame().reindex(range(n))
    funding = funding.assign(
        funding_time=opens, funding_rate=np.where(np.arange(n) % 7 == 0, 2.0, 1e-4)
    )
    for frame, dataset in ((candles, "candles"), (funding, "funding")):
        whole = validate.split_valid(frame, dataset)
        monkeypatch.setattr(validate, "BLOCK_ROWS", 100)
        blocked = validate.split_valid(frame, dataset)
        monkeypatch.setattr(validate, "BLOCK_ROWS", 1 << 20)
        pd.testing.assert_frame_equal(blocked[0], whole[0])
        pd.testing.assert_frame_equal(blocked[1], whole[1])
        assert blocked[2] == whole[2] and whole[2], dataset


# --------------------------------------------------------------- coverage without a sort


def sorted_coverage(frame: pd.DataFrame, spec: TradesSpec) -> tuple[list, list]:
    """(implied coverage, intrinsic gaps) as computed before: through a sort of the frame."""
    from petrosa_pipelines.lib.timeutil import merge_ranges

    def ms(s: pd.Series) -> np.ndarray:
        return s.astype("datetime64[ms, UTC]").astype("int64").to_numpy()

    ordered = frame.sort_values("agg_trade_id", kind="stable")
    ids, times = ordered["agg_trade_id"].to_numpy(), ms(ordered["trade_time"])
    breaks = np.flatnonzero(np.diff(ids) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(ids) - 1]])
    covered = merge_ranges(
        [(int(times[a]) + 1, int(times[b])) for a, b in zip(starts, ends, strict=True) if b > a]
    )
    holes = np.flatnonzero(np.diff(ids) > 1)
    gaps = merge_ranges([(int(times[i]), int(times[i + 1]) + 1) for i in holes])
    return covered, gaps


def test_coverage_by_id_is_the_sorted_frames_coverage(day, small_blocks):
    spec = TradesSpec()
    rng = np.random.default_rng(5)
    holed = day.drop(index=rng.choice(N, 50, replace=False)).reset_index(drop=True)
    shuffled = holed.iloc[rng.permutation(len(holed))].reset_index(drop=True)
    for frame in (day, holed, shuffled):
        covered, gaps = sorted_coverage(frame, spec)
        assert spec.implied_coverage(frame, CLOSED) == covered
        assert spec.intrinsic_gaps(frame, CLOSED) == gaps
    assert spec.intrinsic_gaps(holed, CLOSED) and not spec.intrinsic_gaps(day, CLOSED)


# ------------------------------------------------------------------ a re-run, keyed by id


def kept_by_text_key(previous: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """The kept partition's rows whose (exchange, symbol, trade_id) ``held`` lacks, as the
    previous source found them before: an index of the key's texts."""
    key = list(TRADES.natural_key)
    old = previous.set_index(key).index
    return previous[~old.isin(pd.MultiIndex.from_frame(held[key]))]


def test_a_rerun_finds_the_kept_rows_it_lacks_by_aggregate_id(day, small_blocks):
    rng = np.random.default_rng(9)
    cases = [
        (day, day),  # the usual re-run: every kept row given again
        (day, day.iloc[::-1].reset_index(drop=True)),  # held in another order
        (day.iloc[rng.permutation(N)[: N // 2]].reset_index(drop=True), day.iloc[::3]),
        (day, day.iloc[N // 2 :].reset_index(drop=True)),
        (day, day.assign(symbol="ETHUSDT")),  # another instrument: no key shared
        (day.assign(trade_id=day["trade_id"].where(day.index != 4, "x")), day),  # a text key
    ]
    for previous, held in cases:
        got = PreviousPartitionSource(previous, "trades").fetch_for(CLOSED, [], held).frame
        expected = kept_by_text_key(previous, held)
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
        )


def test_a_rerun_of_a_whole_day_holds_no_index_of_its_keys(day, small_blocks):
    source = PreviousPartitionSource(day, "trades")
    answer, peak = traced_peak(lambda: source.fetch_for(CLOSED, [], day))
    assert answer.frame.empty and list(answer.frame.dtypes) == list(day.dtypes)
    # the index of (exchange, symbol, trade_id) texts held 176 bytes per row (measured)
    assert peak <= 3 * N + 48 * BLOCK, f"the previous source held {peak / N:.1f} bytes per row"


#: the columns a re-run reads of the kept file to find the trades it lacks
KEYS = ("exchange", "symbol", "agg_trade_id", "trade_id")


class _CountedFile(LakeFile):
    """A lake file recording which columns each read asked for (None: all)."""

    reads: list

    def read(self, columns=None):
        self.reads.append(None if columns is None else tuple(columns))
        return super().read(columns)


def test_a_kept_lake_file_is_read_only_as_far_as_the_rerun_needs(day, tmp_path, small_blocks):
    """The kept partition as its unread lake file (``kept_partition``) gives the fill the same
    answer as the kept frame; a re-run that gives every kept trade again reads its keys only."""
    io_manager = LakeIOManager(base_path=str(tmp_path))
    key, partition = AssetKey(["market_data", "trades"]), "2024-03-02|binance-usdm:BTCUSDT"
    assert io_manager.kept_partition(key, partition) is None
    relpath = lake_path("market_data/trades", "binance", "BTCUSDT", "2024-03-02")
    LocalLake(tmp_path).write_frame(relpath, day)
    kept = io_manager.kept_partition(key, partition)
    assert len(kept) == N and not kept.empty
    rng = np.random.default_rng(4)
    some = day.iloc[np.sort(rng.choice(N, N // 3, replace=False))].reset_index(drop=True)
    for held, reads in (
        (day, [KEYS]),  # the whole day given again: its keys only
        (some, [KEYS, None]),  # the rows it lacks: the keys, then the file
        (day.assign(symbol="ETHUSDT"), [KEYS, None]),  # no key shared: the file
    ):
        counted = _CountedFile(kept.lake, kept.relpath, kept.rows)
        object.__setattr__(counted, "reads", [])
        answer = PreviousPartitionSource(counted, "trades").fetch_for(CLOSED, [], held).frame
        expected = PreviousPartitionSource(day, "trades").fetch_for(CLOSED, [], held).frame
        assert len(answer) == len(expected) and counted.reads == reads
        if len(expected):
            pd.testing.assert_frame_equal(
                answer.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
            )


class _DownArchive:
    def daily_agg_trades(self, symbol: str, day: dt.date) -> pd.DataFrame:
        raise ConnectionError("archive unreachable")


def test_a_rerun_over_the_kept_file_fills_and_guards_as_over_the_kept_frame(day, tmp_path):
    """The same result, attempts and shrink verdict whether the kept day is a frame or its
    lake file: a re-run giving the day again, one giving half of it (the kept half is kept)
    and one whose archive is down (refused: the partition is kept as it is)."""
    relpath = lake_path("market_data/trades", "binance", "BTCUSDT", "2024-03-02")
    LocalLake(tmp_path).write_frame(relpath, day)
    kept = LocalLake(tmp_path).file(relpath)
    partition = "2024-03-02|binance-usdm:BTCUSDT"
    verdicts, added = [], []
    for archive in (
        _Archive(day),
        _Archive(day.iloc[: N // 2].reset_index(drop=True)),
        _DownArchive(),
    ):
        results = []
        for previous in (day, kept):
            sources = [
                ArchiveSource(archive, "trades"),
                PreviousPartitionSource(previous, "trades"),
            ]
            result = fill_partition(TradesSpec(), CLOSED, sources)
            results.append((result, refuse_to_shrink("trades", partition, result, previous)))
        (by_frame, verdict), (by_file, file_verdict) = results
        pd.testing.assert_frame_equal(by_file.frame, by_frame.frame, check_exact=True)
        assert by_file.attempts == by_frame.attempts and by_file.missing == by_frame.missing
        assert file_verdict == verdict
        verdicts.append(verdict)
        added.append(by_frame.added_by("previous"))
    assert added == [0, N - N // 2, N]
    assert verdicts[:2] == [None, None] and "sources failed" in verdicts[2]


# ------------------------------------------------------------------------- the lake read


def whole_table_frame(path: Path) -> pd.DataFrame:
    """The file as the whole table converts (the read before it went column by column)."""
    return with_trade_ids(pq.read_table(path).to_pandas(split_blocks=True, self_destruct=True))


def test_a_lake_file_reads_back_column_by_column_as_the_whole_table(day, tmp_path):
    """Trades (v2 and v1), funding with nulls, an empty file, a file keeping its index."""
    lake = LocalLake(tmp_path)
    v1 = pa.Table.from_pandas(day.drop(columns=["trade_id"]).iloc[:5000], preserve_index=False)
    pq.write_table(v1, tmp_path / "v1.parquet")
    funding = FUNDING.empty_frame().reindex(range(3))
    funding = funding.assign(
        exchange="binance",
        symbol="BTCUSDT",
        funding_time=pd.date_range("2024-03-02", periods=3, freq="8h", tz="UTC"),
        funding_rate=1e-4,
        mark_price=[np.nan, 60_000.0, np.nan],
        source="archive",
    )
    lake.write_frame("trades.parquet", day)
    lake.write_frame("funding.parquet", funding)
    lake.write_frame("empty.parquet", TRADES.empty_frame())
    # a file written with its index keeps the whole-table read (the index is restored)
    pq.write_table(
        pa.Table.from_pandas(day.iloc[:100].set_index("agg_trade_id")), tmp_path / "i.parquet"
    )
    for name in ("trades", "v1", "funding", "empty", "i"):
        path = tmp_path / f"{name}.parquet"
        got, expected = read_parquet_frame(path), whole_table_frame(path)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert list(got.dtypes) == list(expected.dtypes), name
    pd.testing.assert_frame_equal(lake.read_frame("trades.parquet"), day, check_exact=True)


# --------------------------------------------------------------- a process of its own


def test_arrow_allocates_from_a_pool_that_returns_freed_pages():
    code = (
        "import petrosa_pipelines.lake, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    expected = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else None
    if expected is None:
        pytest.skip("this pyarrow has no jemalloc")
    assert out.stdout.split()[-1] == expected, out.stderr[-500:]
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # an operator's choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split()[-1] == "system", out.stderr[-500:]


#: what the asset step of a trades day may hold at its peak beyond the process it starts in,
#: per trade (the day's frame is about 80 bytes per trade): measured 150 at 2 M trades (220
#: before the fill's scans went block-wise, the lake's allocator returned freed pages and the
#: read went column by column)
MAX_ASSET_STEP_BYTES_PER_TRADE = 185
BENCH_TRADES = 2_000_000


@pytest.mark.slow  # a 2 M-trade day parsed, filled, written, read and audited: tens of seconds
def test_the_asset_step_of_a_day_peaks_under_a_bound_per_trade(tmp_path):
    bench = REPO / "benchmarks" / "trades_memory_bench.py"
    cmd = [sys.executable, str(bench), "--trades", str(BENCH_TRADES), "--cache", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["rows_written"] == BENCH_TRADES
    asset = res["phase_peak_mb"]["asset_step"]
    if asset is None:
        pytest.skip("this kernel does not let a process reset its RSS high-water mark")
    per_trade = (asset - res["base_rss_mb"]) * 2**20 / BENCH_TRADES
    assert per_trade <= MAX_ASSET_STEP_BYTES_PER_TRADE, res
