"""The deterministic market: the single source of truth every local endpoint serves from."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.local_exchange import Market, MarketConfig
from petrosa_pipelines.local_exchange.market import (
    DAY_MS,
    INTERVALS_MS,
    day_start_ms,
    fmt_fixed,
    to_date,
)

pytestmark = pytest.mark.unit

CFG = MarketConfig(seed=7, symbols=("BTCUSDT", "ETHUSDT", "DOGEUSDT"), trades_per_day=5_000)
D1 = dt.date(2024, 1, 2)
T1 = day_start_ms(D1)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(CFG)


def test_same_seed_same_data_and_days_are_independent(market: Market) -> None:
    # a fresh market computing day 5 alone equals one that walked days 1..5 first
    fresh = Market(CFG)
    for d in range(5):
        market.trades("BTCUSDT", D1 + dt.timedelta(days=d))
    day5 = D1 + dt.timedelta(days=4)
    pd.testing.assert_frame_equal(fresh.trades("BTCUSDT", day5), market.trades("BTCUSDT", day5))
    other = Market(MarketConfig(seed=8, symbols=CFG.symbols, trades_per_day=5_000))
    assert not np.array_equal(other.trades("BTCUSDT", D1).price, market.trades("BTCUSDT", D1).price)


def test_trades_shape_sorted_and_on_the_grid(market: Market) -> None:
    df = market.trades("BTCUSDT", D1)
    assert list(df.columns) == [
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "trade_time",
        "is_buyer_maker",
    ]
    assert len(df) == CFG.trades_per_day
    assert df.trade_time.is_monotonic_increasing
    assert df.trade_time.between(T1, T1 + DAY_MS - 1).all()
    assert df.trade_time.duplicated().any(), "bursts share a millisecond"
    assert (df.last_trade_id >= df.first_trade_id).all()
    assert (df.last_trade_id > df.first_trade_id).any(), "some aggTrades span several trades"
    prices = [Decimal(str(p)) for p in df.price[:500]]
    assert all(p % Decimal("0.10") == 0 for p in prices)
    assert all(Decimal(str(q)) % Decimal("0.001") == 0 for q in df.quantity[:500])
    assert market.spec("ETHUSDT").tick_size == Decimal("0.01")


def test_ids_continuous_across_days(market: Market) -> None:
    days = [market.trades("ETHUSDT", D1 + dt.timedelta(days=i)) for i in range(3)]
    df = pd.concat(days, ignore_index=True)
    assert (np.diff(df.agg_trade_id) == 1).all()
    assert (
        df.first_trade_id.iloc[1:].to_numpy() == df.last_trade_id.iloc[:-1].to_numpy() + 1
    ).all()
    # the id of the first trade of any day is a formula of the day alone
    day10 = Market(CFG).trades("ETHUSDT", D1 + dt.timedelta(days=10))
    assert day10.agg_trade_id.iloc[0] == days[0].agg_trade_id.iloc[0] + 10 * CFG.trades_per_day


def test_price_continuous_at_midnight(market: Market) -> None:
    for sym in CFG.symbols:
        for d in range(4):
            a = market.trades(sym, D1 + dt.timedelta(days=d)).price.iloc[-1]
            b = market.trades(sym, D1 + dt.timedelta(days=d + 1)).price.iloc[0]
            assert abs(b / a - 1) < 0.01, (sym, d, a, b)


def _aggregate_in_python(df: pd.DataFrame, iv_ms: int, pd_: int, qd: int) -> dict[int, list]:
    out: dict[int, list] = defaultdict(list)
    for row in df.itertuples():
        out[row.trade_time // iv_ms * iv_ms].append(row)
    result = {}
    for t, rows in out.items():
        price = [Decimal(str(r.price)) for r in rows]
        qty = [Decimal(str(r.quantity)) for r in rows]
        taker = [not r.is_buyer_maker for r in rows]
        result[t] = [
            price[0],
            max(price),
            min(price),
            price[-1],
            sum(qty),
            sum(p * q for p, q in zip(price, qty, strict=True)),
            sum(r.last_trade_id - r.first_trade_id + 1 for r in rows),
            sum(q for q, tk in zip(qty, taker, strict=True) if tk),
            sum(p * q for p, q, tk in zip(price, qty, taker, strict=True) if tk),
        ]
    return result


@pytest.mark.parametrize("interval", ["1m", "15m", "1h", "1d"])
def test_klines_are_exactly_the_aggregation_of_trades(market: Market, interval: str) -> None:
    trades = market.trades("BTCUSDT", D1)
    spec = market.spec("BTCUSDT")
    expected = _aggregate_in_python(
        trades, INTERVALS_MS[interval], spec.price_decimals, spec.qty_decimals
    )
    rows = market.kline_rows("BTCUSDT", interval, T1, T1 + DAY_MS - 1)
    assert len(rows) == DAY_MS // INTERVALS_MS[interval]
    prev_close = None
    for row in rows:
        assert len(row) == 12 and row[6] == row[0] + INTERVALS_MS[interval] - 1
        o, h, lo, c, v, qv, n, tv, tq = (
            Decimal(x) for x in (*row[1:6], row[7], row[8], *row[9:11])
        )
        if row[0] in expected:
            assert [o, h, lo, c, v, qv, n, tv, tq] == expected[row[0]]
        else:  # no trades: a flat candle at the previous close, zero volume
            assert o == h == lo == c == prev_close and v == qv == n == 0
        prev_close = c
    # decimals are exactly the symbol's precision, never float noise
    assert rows[0][1] == fmt_fixed(round(Decimal(rows[0][1]) * 100), 2)
    assert len(rows[0][7].split(".")[1]) == spec.price_decimals + spec.qty_decimals


def test_sparse_market_has_flat_candles_and_1440_minutes() -> None:
    m = Market(MarketConfig(symbols=("BTCUSDT",), trades_per_day=300))
    k = m.kline_arrays("BTCUSDT", "1m", T1, T1 + DAY_MS - 1)
    assert len(k.open_time) == 1440
    empty = k.count == 0
    assert empty.sum() > 1000
    assert (k.open[empty] == k.close[empty]).all() and (k.volume[empty] == 0).all()
    assert (k.first_id[empty] == -1).all()
    # the first candle of a day continues the previous day's last price
    prev_last = m.day_trades("BTCUSDT", D1 - dt.timedelta(days=1)).price[-1]
    if k.count[0] == 0:
        assert k.open[0] == prev_last


def test_klines_stop_at_now_and_partial_candle(market: Market) -> None:
    now = T1 + 10 * 60_000 + 30_000  # 00:10:30
    k = market.kline_arrays("BTCUSDT", "1m", T1, T1 + DAY_MS, now_ms=now)
    assert len(k.open_time) == 11 and k.open_time[-1] == T1 + 600_000
    t = market.day_trades("BTCUSDT", D1)
    in_last = (t.time >= T1 + 600_000) & (t.time <= now)
    assert k.volume[-1] == t.qty[in_last].sum()


def test_funding_every_8h_within_caps(market: Market) -> None:
    df = market.funding("BTCUSDT", T1, T1 + 3 * DAY_MS - 1)
    assert len(df) == 9
    assert set(pd.to_datetime(df.funding_time, unit="ms").dt.hour) == {0, 8, 16}
    rates = df.funding_rate.map(Decimal)
    assert rates.between(Decimal("-0.0075"), Decimal("0.0075")).all()
    assert abs(float(np.median(rates.astype(float))) - 0.0001) < 0.0001
    for _, row in df.iterrows():
        price = market.price_at("BTCUSDT", row.funding_time) / 100
        assert abs(float(row.mark_price) / price - 1) < 0.001


def test_book_consistent_with_price(market: Market) -> None:
    at = T1 + 5 * 3_600_000 + 1234
    book = market.book("BTCUSDT", at, 1000)
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert len(bids) == len(asks) == 1000
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    last = Decimal(market.price_at("BTCUSDT", at // 100 * 100)) / 100
    assert bids[0] <= last < asks[0]
    assert all(Decimal(q) > 0 for _, q in book["bids"] + book["asks"])


def _apply(book: dict[str, dict[Decimal, Decimal]], event: dict) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for p, q in event[key]:
            if Decimal(q) == 0:
                book[side].pop(Decimal(p), None)
            else:
                book[side][Decimal(p)] = Decimal(q)


@pytest.mark.parametrize(("every", "step"), [(100, 100), (250, 100), (500, 100), (100, 1000)])
def test_depth_diffs_chain_and_sync_with_snapshot(market: Market, every: int, step: int) -> None:
    if step != 100:  # a coarser book (the demo's): a diff only when the book stepped
        market = Market(MarketConfig(seed=7, symbols=CFG.symbols, book_step_ms=step))
    t0 = T1 + 7_200_000
    events = market.depth_events("BTCUSDT", t0, t0 + 20_000, every)
    assert len(events) == 20_000 // max(every, step)
    assert all(e["b"] or e["a"] for e in events)
    for prev, ev in zip(events, events[1:], strict=False):
        assert ev["pu"] == prev["u"] and ev["U"] > prev["u"] and ev["u"] >= ev["U"]
        assert ev["U"] != prev["u"] + 1  # one global sequence over symbols, like Binance
    other = market.depth_events("ETHUSDT", t0, t0 + 1_000, every)
    assert not {e["u"] for e in other} & {e["u"] for e in events}

    # the official procedure: snapshot mid-stream, drop u < lastUpdateId, first U<=id<=u
    snap = market.book("BTCUSDT", t0 + 5_050, 1000)
    book = {
        "bids": {Decimal(p): Decimal(q) for p, q in snap["bids"]},
        "asks": {Decimal(p): Decimal(q) for p, q in snap["asks"]},
    }
    usable = [e for e in events if e["u"] >= snap["lastUpdateId"]]
    assert usable[0]["U"] <= snap["lastUpdateId"] <= usable[0]["u"]
    for ev in usable:
        _apply(book, ev)
    final = market.book("BTCUSDT", events[-1]["T"], 1000)
    assert final["lastUpdateId"] == events[-1]["u"]
    assert book["bids"] == {Decimal(p): Decimal(q) for p, q in final["bids"]}
    assert book["asks"] == {Decimal(p): Decimal(q) for p, q in final["asks"]}


def test_ws_payload_layouts(market: Market) -> None:
    t0 = T1 + 3_600_000
    trades = market.agg_trade_events("BTCUSDT", t0, t0 + 60_000)
    assert trades and list(trades[0]) == ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"]
    assert all(t0 < e["T"] <= t0 + 60_000 and e["E"] >= e["T"] for e in trades)
    klines = market.kline_events("BTCUSDT", "1m", t0, t0 + 60_000)
    closed = [k for k in klines if k["k"]["x"]]
    assert len(closed) == 1 and list(closed[0]["k"]) == list("tTsifLochlvnxqVQB")
    row = market.kline_rows("BTCUSDT", "1m", t0, t0)[0]
    k = closed[0]["k"]
    assert [k["o"], k["h"], k["l"], k["c"], k["v"], k["q"]] == [*row[1:6], row[7]]
    mark = market.mark_price_event("BTCUSDT", t0 + 1000)
    assert list(mark) == ["e", "E", "s", "p", "P", "i", "r", "T"]
    assert mark["T"] == T1 + 8 * 3_600_000 and isinstance(mark["p"], str)


def test_to_date_accepts_common_forms() -> None:
    assert to_date("2024-01-02") == to_date(T1 + 5) == to_date(D1) == D1


def test_book_step_must_be_a_multiple_of_100_ms_dividing_a_day() -> None:
    with pytest.raises(ValueError, match="book_step_ms=150"):
        MarketConfig(book_step_ms=150)
    assert MarketConfig(book_step_ms=1000).book_step_ms == 1000


def _minute_returns(market: Market, symbol: str, day: dt.date) -> np.ndarray:
    t0 = day_start_ms(day)
    close = market.kline_arrays(symbol, "1m", t0, t0 + DAY_MS - 1).close.astype("float64")
    return np.diff(np.log(close))


def test_symbols_move_together_like_crypto_majors() -> None:
    """BTC and ETH 1m returns correlate like the real ones (0.86-0.89 on the three real days in
    fixtures/analytics), not independently; still a pure function of the seed."""
    cfg = MarketConfig(seed=7, symbols=("BTCUSDT", "ETHUSDT", "DOGEUSDT"), trades_per_day=20_000)
    market = Market(cfg)
    for d in range(3):
        day = D1 + dt.timedelta(days=d)
        btc, eth, doge = (_minute_returns(market, s, day) for s in cfg.symbols)
        rho = np.corrcoef(btc, eth)[0, 1]
        assert 0.7 <= rho <= 0.9, (day, rho)
        assert 0.4 <= np.corrcoef(btc, doge)[0, 1] < rho  # a minor follows less closely
    again = Market(cfg).trades("ETHUSDT", D1)
    pd.testing.assert_frame_equal(again, market.trades("ETHUSDT", D1))
    # each symbol keeps its own path too: never the same returns
    assert not np.allclose(
        _minute_returns(market, "BTCUSDT", D1), _minute_returns(market, "ETHUSDT", D1)
    )
