"""The live streams' shortcuts give exactly what the general array paths give."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from petrosa_pipelines.local_exchange import Market, MarketConfig
from petrosa_pipelines.local_exchange.market import DAY_MS, INTERVALS_MS, day_start_ms, fmt_fixed
from petrosa_pipelines.local_exchange.units import LevelFormats

pytestmark = pytest.mark.unit

CFG = MarketConfig(
    seed=7, symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=3_000, book_levels=20, book_step_ms=1_000
)
#: the market's first day (no day before it) and a later one
T0 = day_start_ms(dt.date(2024, 1, 1))
T5 = T0 + 5 * DAY_MS


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(CFG)


def _rows(k: object) -> list[list[int]]:
    return [[int(v) for v in col] for col in k]  # type: ignore[attr-defined]


@pytest.mark.parametrize("start", [T0, T5])
@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "1d"])
def test_live_and_closed_candles_equal_kline_arrays(
    market: Market, start: int, interval: str
) -> None:
    iv = INTERVALS_MS[interval]
    rng = np.random.default_rng(1)
    for sym in CFG.symbols:
        for at in (start + rng.integers(0, DAY_MS, 40)).tolist() + [start, start + DAY_MS - 1]:
            open_time = at // iv * iv
            want = market.kline_arrays(sym, interval, open_time, open_time, at)
            assert _rows(market.live_candle(sym, interval, open_time, at)) == _rows(want)
            opened = market.open_candle(sym, open_time, iv, at)
            if opened is not None:
                assert _rows(opened) == _rows(want)
            full = market.kline_arrays(sym, interval, open_time, open_time)
            assert _rows(market.closed_candle(sym, interval, open_time)) == _rows(full)


def test_top_of_book_is_the_books_first_level(market: Market) -> None:
    for sym in CFG.symbols:
        for step in range(T5 // 1_000, T5 // 1_000 + 300):
            st = market.book_state(sym, step)
            want = (st.bid_ticks[0], st.bid_qty[0], st.ask_ticks[0], st.ask_qty[0])
            assert market.top_of_book(sym, step) == tuple(int(v) for v in want)


def test_level_memo_is_fmt_fixed() -> None:
    formats = LevelFormats()
    values = [0, 1, 9, 10, 99, 100, 123_456, -5, -1_234, 10**18]
    for decimals in (0, 1, 2, 3, 8):
        memo = formats.memo(decimals)
        assert [memo[v] for v in values] == [fmt_fixed(v, decimals) for v in values]
        assert formats.many(values, decimals) == [fmt_fixed(v, decimals) for v in values]
