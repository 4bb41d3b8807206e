"""Days of correlation written before the move, under
``analytics/correlation/binance/ALL`` with bare Binance symbols, still pool into the rolling
correlation with days written since under ``all-venues``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import correlation
from petrosa_pipelines.lake import lake_path
from petrosa_pipelines_tests.test_analytics.test_correlation_venues import (
    DAYS,
    INSTRUMENTS,
    candles,
    lake,  # noqa: F401 - the fixture
    read,
    run,
)


def test_rolling_reads_a_day_left_at_the_former_path(lake):  # noqa: F811
    io, instance = lake
    for day in DAYS:
        run(io, instance, "correlation", day)
    # day 1 as the old code left it: Binance's rows only, bare symbols, under binance/ALL
    new = lake_path("analytics/correlation", "all-venues", "ALL", DAYS[0])
    first = io.lake().read_frame(new)
    binance = first[
        first["symbol_a"].str.startswith("binance-usdm:")
        & first["symbol_b"].str.startswith("binance-usdm:")
    ]
    old = binance.assign(
        symbol_a=binance["symbol_a"].str.split(":").str[1],
        symbol_b=binance["symbol_b"].str.split(":").str[1],
    )
    io.lake().write_frame(lake_path("analytics/correlation", "binance", "ALL", DAYS[0]), old)
    io.lake().delete(new)
    run(io, instance, "correlation_rolling", DAYS[1])
    rolling = read(io, "correlation_rolling", DAYS[1], "all-venues").set_index(
        ["symbol_a", "symbol_b"]
    )
    pair = ("binance-usdm:BTCUSDT", "binance-usdm:ETHUSDT")
    assert rolling.loc[pair, "days"] == 2  # the legacy day pooled with the new one
    both = pd.concat(
        [correlation.returns_wide(pd.concat([candles(i, d) for i in INSTRUMENTS])) for d in (0, 1)]
    )
    want = np.corrcoef(both[pair[0]], both[pair[1]])[0, 1]
    assert rolling.loc[pair, "correlation"] == pytest.approx(want, rel=1e-9)
    assert rolling.loc[("binance-usdm:BTCUSDT", "bybit-linear:BTCUSDT"), "days"] == 1
