"""The Python API: lake -> landing (today) -> warehouse, quality reported, clear errors."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from petrosa_pipelines import api
from petrosa_pipelines.catalog.depth_layout import LONG_COLUMNS, to_long
from petrosa_pipelines.lake import LocalLake, S3Lake, lake_path
from petrosa_pipelines.serving.warehouse import Warehouse
from petrosa_pipelines_tests.test_storage import frames

D1, D2, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)
UTC = dt.UTC
NOW = dt.datetime(2024, 1, 10, 12, tzinfo=UTC)


def put(lake, dataset, frame, day, symbol="BTCUSDT"):
    lake.write_frame(lake_path(f"market_data/{dataset}", "binance", symbol, day.isoformat()), frame)


@pytest.fixture
def lake(tmp_path):
    return LocalLake(tmp_path / "lake")


def sources(lake, **kw):
    return api.DataSources(lake=lake, symbols=("BTCUSDT", "ETHUSDT"), now=lambda: NOW, **kw)


def test_candles_roundtrip_across_days_and_symbols(lake):
    for day in (D1, D2):
        put(lake, "candles", frames.candles(day=day), day)
        put(lake, "candles", frames.candles("ETHUSDT", day=day), day, "ETHUSDT")
    r = api.load_candles(["btcusdt", "ETHUSDT"], D1, D3, sources=sources(lake))
    assert r.complete and r.missing_partitions == [] and r.failed_checks == []
    assert len(r.frame) == 4 * 1440
    assert r.frame["open_time"].is_monotonic_increasing
    assert {p.source for p in r.partitions} == {"lake"}
    one = r.frame[(r.frame.symbol == "BTCUSDT") & (r.frame.open_time.dt.date == D2)]
    pd.testing.assert_frame_equal(one.reset_index(drop=True), frames.candles(day=D2))
    assert r.frame.attrs["petrosa_quality"]["complete"] is True


def test_range_is_half_open_and_trimmed(lake):
    put(lake, "candles", frames.candles(day=D1), D1)
    start = dt.datetime(2024, 1, 2, 1, tzinfo=UTC)
    r = api.load_candles("BTCUSDT", start, start + dt.timedelta(minutes=30), sources=sources(lake))
    assert len(r.frame) == 30 and r.frame.open_time.iloc[0] == pd.Timestamp(start)


def test_missing_partitions_are_reported_warned_or_raised(lake):
    put(lake, "candles", frames.candles(day=D1), D1)
    with pytest.warns(api.IncompleteDataWarning, match="2024-01-03|binance-usdm:BTCUSDT"):
        r = api.load_candles("BTCUSDT", D1, D3, sources=sources(lake))
    # partitions are named by instrument id; a bare symbol is Binance USD-M's
    assert r.missing_partitions == ["2024-01-03|binance-usdm:BTCUSDT"] and not r.complete
    assert len(r.frame) == 1440
    with pytest.raises(api.IncompleteDataError):
        api.load_candles("BTCUSDT", D1, D3, sources=sources(lake), strict=True)
    with pytest.raises(api.MissingDataError, match="materialize_partitions"):
        api.load_candles("BTCUSDT", D2, D3, sources=sources(lake))


def test_failed_checks_are_reported(lake):
    put(lake, "candles", frames.candles(day=D1, skip=(5, 6, 7)), D1)
    trades = frames.trades(n=100)
    put(lake, "trades", trades[trades.agg_trade_id != 50], D1)
    c = api.load_candles("BTCUSDT", D1, D2, sources=sources(lake))
    assert [(f.check, f.detail) for f in c.failed_checks] == [
        ("completeness", "1437 of 1440 1m candles")
    ]
    t = api.load_trades("BTCUSDT", D1, D2, sources=sources(lake))
    assert [f.check for f in t.failed_checks] == ["trade_id_continuity"] and not t.complete


def test_higher_intervals_are_resampled_exactly(lake):
    put(lake, "candles", frames.candles(day=D1, skip=(70,)), D1)
    r = api.load_candles("BTCUSDT", D1, D2, interval="1h", sources=sources(lake))
    one_m = frames.candles(day=D1, skip=(70,))
    assert len(r.frame) == 24 and set(r.frame["interval"]) == {"1h"}
    first = r.frame.iloc[0]
    hour = one_m.iloc[:60]
    assert (first.open, first.close) == (hour.open.iloc[0], hour.close.iloc[-1])
    assert (first.high, first.low, first.trade_count) == (
        hour.high.max(),
        hour.low.min(),
        hour.trade_count.sum(),
    )
    assert first.close_time == pd.Timestamp("2024-01-02T00:59:59.999Z")
    assert [f.check for f in r.failed_checks] == ["completeness", "incomplete_bar"]
    with pytest.raises(api.DataError, match="interval"):
        api.load_candles("BTCUSDT", D1, D2, interval="7m", sources=sources(lake))


def test_arrow_on_request(lake):
    put(lake, "funding", frames.funding(), D1)
    r = api.load_funding("BTCUSDT", D1, D2, sources=sources(lake), as_arrow=True)
    assert isinstance(r.frame, pa.Table) and r.frame.num_rows == 3
    assert b"petrosa_quality" in r.frame.schema.metadata


@pytest.mark.parametrize(
    "start, end, error, match",
    [
        (
            dt.datetime(2024, 1, 2),
            dt.datetime(2024, 1, 3, tzinfo=UTC),
            api.InvalidRangeError,
            "naive",
        ),
        ("2024-01-02T05:00", "2024-01-03", api.InvalidRangeError, "naive"),
        (D2, D1, api.InvalidRangeError, "not after start"),
        (D1, D1, api.InvalidRangeError, "not after start"),
        ("yesterday", D1, api.InvalidRangeError, "not an ISO"),
    ],
)
def test_bad_ranges(lake, start, end, error, match):
    with pytest.raises(error, match=match):
        api.load_candles("BTCUSDT", start, end, sources=sources(lake))


def test_unknown_symbols(lake):
    with pytest.raises(
        api.UnknownSymbolError, match=r"unknown symbols \['binance-usdm:DOGEUSDT'\]"
    ):
        api.load_trades(["BTCUSDT", "DOGEUSDT"], D1, D2, sources=sources(lake))
    with pytest.raises(api.UnknownSymbolError, match="not a symbol"):
        api.load_trades("BTC/USDT", D1, D2, sources=sources(lake))
    put(lake, "trades", frames.trades("XRPUSDT", n=3), D1, "XRPUSDT")  # found in the lake
    assert len(api.load_trades("XRPUSDT", D1, D2, sources=sources(lake)).frame) == 3


class FakeLanding:
    """Stands in for LandingStore: today's trades for whatever window is asked."""

    def __init__(self, frame):
        self.frame, self.calls = frame, []

    def read_frame(self, exchange, dataset, symbol, start_ms, end_ms):
        self.calls.append((exchange, dataset, symbol, start_ms, end_ms))
        t = (self.frame.trade_time - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        return self.frame[(t >= start_ms) & (t < end_ms)].reset_index(drop=True)


def test_today_comes_from_the_landing_zone(lake):
    today = NOW.date()
    landing = FakeLanding(frames.trades(day=today, n=2000, first_id=500))
    put(
        lake,
        "trades",
        frames.trades(day=today - dt.timedelta(days=1), n=10),
        today - dt.timedelta(days=1),
    )
    r = api.load_trades(
        "BTCUSDT",
        today - dt.timedelta(days=1),
        NOW + dt.timedelta(hours=5),
        sources=sources(lake, landing=landing),
    )
    assert [p.source for p in r.partitions] == ["lake", "landing"]
    assert landing.calls[0][4] == int(NOW.timestamp() * 1000)  # never past now
    assert r.frame.trade_time.max() < pd.Timestamp(NOW)
    assert r.complete
    assert len(r.frame) == 10 + int((landing.frame.trade_time < pd.Timestamp(NOW)).sum())


def test_warehouse_fills_what_the_lake_lacks(lake, postgres_db):
    wh = Warehouse(postgres_db)
    try:
        wh.migrate()
        put(lake, "candles", frames.candles(day=D1), D1)
        wh.load_partition(
            "candles", frames.candles(day=D2), exchange="binance", symbol="BTCUSDT", day=D2
        )
        ts = pd.date_range("2024-01-02", periods=3, freq="h", tz="UTC")
        wh.load_analytics(
            "volatility",
            pd.DataFrame({"ts": ts, "parkinson": [0.1, 0.2, 0.3]}),
            exchange="binance",
            symbol="BTCUSDT",
            day=D1,
        )
        src = sources(lake, warehouse=wh)
        r = api.load_candles("BTCUSDT", D1, D3, sources=src)
        assert [p.source for p in r.partitions] == ["lake", "warehouse"] and r.complete
        pd.testing.assert_frame_equal(
            r.frame.iloc[1440:].reset_index(drop=True), frames.candles(day=D2)
        )
        a = api.load_analytics("volatility", "BTCUSDT", D1, D2, sources=src)
        assert a.frame["parkinson"].tolist() == [0.1, 0.2, 0.3]
        assert "binance-usdm:BTCUSDT" in src.known_symbols("market_data/depth")
    finally:
        wh.dispose()


# -- depth: stored one row per snapshot, served long by default -----------------------------------
def test_depth_is_long_by_default_and_wide_on_request(lake):
    """``layout="long"`` keeps the v1 rows (a row per snapshot, side and level) for existing
    notebooks; ``"wide"`` gives the stored snapshots; both from one lake partition."""
    book = frames.depth(snapshots=4, levels=3)
    put(lake, "depth", book, D1)
    long = api.load_depth("BTCUSDT", D1, D2, sources=sources(lake))
    assert list(long.frame.columns) == list(LONG_COLUMNS)
    assert len(long.frame) == 4 * 2 * 3 and long.complete
    pd.testing.assert_frame_equal(long.frame, to_long(book), check_exact=True)
    first = long.frame[long.frame.snapshot_time == book.snapshot_time[0]]
    assert first[["side", "level"]].values.tolist() == [
        ["ask", 0], ["ask", 1], ["ask", 2], ["bid", 0], ["bid", 1], ["bid", 2],
    ]  # fmt: skip
    assert first.price.tolist() == [42000.1, 42000.2, 42000.3, 41999.9, 41999.8, 41999.7]
    wide = api.load_depth("BTCUSDT", D1, D2, layout="wide", sources=sources(lake))
    frames.assert_depth_equal(wide.frame, book)
    # partition row counts are snapshots in both layouts
    assert [p.rows for p in long.partitions] == [p.rows for p in wide.partitions] == [4]
    for bad in ("LONG", "v1", None):
        with pytest.raises(ValueError, match="layout"):
            api.load_depth("BTCUSDT", D1, D2, layout=bad, sources=sources(lake))


def test_depth_as_arrow_keeps_the_levels_as_lists(lake):
    put(lake, "depth", frames.depth(snapshots=2, levels=3), D1)
    wide = api.load_depth("BTCUSDT", D1, D2, layout="wide", sources=sources(lake), as_arrow=True)
    assert wide.frame.num_rows == 2
    assert wide.frame.schema.field("ask_price").type == pa.list_(pa.float64())
    assert wide.frame.column("ask_price").to_pylist()[0] == [42000.1, 42000.2, 42000.3]
    long = api.load_depth("BTCUSDT", D1, D2, sources=sources(lake), as_arrow=True)
    assert long.frame.num_rows == 12 and long.frame.schema.field("price").type == pa.float64()


def _v1_depth_findings(long):
    """The API's depth checks as version 1 ran them, on a row per level (the reference)."""
    out = []
    bad = (long["price"] <= 0) | (long["quantity"] <= 0)
    if bad.any():
        out.append(("positive_values", f"{int(bad.sum())} levels with price or quantity <= 0"))
    best = long[long["level"] == 0].pivot_table(
        index="snapshot_time", columns="side", values="price", aggfunc="first"
    )
    if {"bid", "ask"} <= set(best.columns):
        crossed = int((best["bid"] >= best["ask"]).sum())
        if crossed:
            out.append(("crossed_book", f"{crossed} snapshots with best bid >= best ask"))
    return out


def test_depth_checks_find_what_version_1_found(lake):
    """Same book, same findings: non-positive levels counted per level, crossed snapshots per
    snapshot (a repeated snapshot time once), thin and empty sides included."""
    book = frames.depth(snapshots=30, levels=5)
    for i in (0, 4, 11, 17, 23, 29):  # crossed: the best bid at (odd) or above the best ask
        book.at[i, "bid_price"] = book.at[i, "bid_price"].copy()
        book.at[i, "bid_price"][0] = 42000.1 if i % 2 else 42000.5
    book.at[2, "bid_quantity"] = np.array([1.0, 0.0, 3.0, -1.0, 5.0])
    book.at[7, "ask_price"] = np.array([42000.1, 0.0])
    book.at[7, "ask_quantity"] = np.array([1.0, 2.0])
    book.at[9, "ask_price"], book.at[9, "ask_quantity"] = np.empty(0), np.empty(0)
    book.at[9, "bid_price"] = book.at[9, "bid_price"] + 1.0  # above 42000, but no ask to cross
    put(lake, "depth", book, D1)
    r = api.load_depth("BTCUSDT", D1, D2, layout="wide", sources=sources(lake))
    found = [(f.check, f.detail) for f in r.failed_checks]
    assert found == [
        ("positive_values", "3 levels with price or quantity <= 0"),
        ("crossed_book", "6 snapshots with best bid >= best ask"),
    ]
    assert found == _v1_depth_findings(to_long(book))
    dup = pd.concat([book, book.iloc[:2]], ignore_index=True)
    put(lake, "depth", dup.assign(snapshot_time=dup.snapshot_time + pd.Timedelta(days=1)), D2)
    r2 = api.load_depth("BTCUSDT", D2, D3, layout="wide", sources=sources(lake))
    found2 = [(f.check, f.detail) for f in r2.failed_checks]
    assert found2[0] == ("duplicates", "2 rows repeat a natural key")  # snapshots, not levels
    assert found2[1:] == found


def test_depth_from_the_warehouse_in_both_layouts(lake, postgres_db):
    wh = Warehouse(postgres_db)
    try:
        wh.migrate()
        book = frames.depth(day=D2, snapshots=5, levels=4)
        wh.load_partition("depth", book, exchange="binance", symbol="BTCUSDT", day=D2)
        put(lake, "depth", frames.depth(snapshots=3, levels=4), D1)
        src = sources(lake, warehouse=wh)
        wide = api.load_depth("BTCUSDT", D1, D3, layout="wide", sources=src)
        assert [p.source for p in wide.partitions] == ["lake", "warehouse"] and wide.complete
        frames.assert_depth_equal(wide.frame.iloc[3:].reset_index(drop=True), book)
        long = api.load_depth("BTCUSDT", D2, D3, sources=src)
        pd.testing.assert_frame_equal(long.frame, to_long(book), check_exact=True)
    finally:
        wh.dispose()


def test_health_from_the_lake(lake):
    health = pd.DataFrame(
        {
            "dataset": ["trades"],
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "day": pd.Timestamp("2024-01-02", tz="UTC"),
            "score": [0.97],
        }
    )
    lake.write_frame(lake_path(api.HEALTH_LAKE_DATASET, "binance", "BTCUSDT", "2024-01-02"), health)
    r = api.load_health("BTCUSDT", D1, D2, sources=sources(lake))
    assert r.frame["score"].tolist() == [0.97] and r.complete


def test_s3_lake_by_settings(monkeypatch):
    """PETROSA_LAKE_PATH=s3://bucket/prefix + AWS_ENDPOINT_URL: the API reads a local S3."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PETROSA_LAKE_PATH": "s3://petrosa-lake/lake",
            "PETROSA_SYMBOLS": "BTCUSDT",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv(api.WAREHOUSE_URL_VAR, raising=False)
        src = api.DataSources.from_settings()
        assert isinstance(src.lake, S3Lake)
        src.lake.client.create_bucket(Bucket="petrosa-lake")
        put(src.lake, "candles", frames.candles(day=D1), D1)
        r = api.load_candles("BTCUSDT", D1, D2)  # default sources: from the settings
        assert r.complete and len(r.frame) == 1440
        assert src.lake.uri("x") == "s3://petrosa-lake/lake/x"
    finally:
        server.stop()
