"""Volatility, trend and deviation: textbook answers, simulations with a known sigma, and
independent plain-Python computations on real Binance 1m klines."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.analytics import deviation, trend, volatility
from petrosa_pipelines_tests.test_analytics import realdata

LN2 = math.log(2)


def bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"])


def test_single_bar_textbook_values():
    e = math.e
    one = bars([(1.0, e, 1 / e, 1.0)])  # ln(H/L) = 2, open = close
    assert volatility.variance_per_bar(one, "parkinson") == pytest.approx(4 / (4 * LN2))
    assert volatility.variance_per_bar(one, "garman_klass") == pytest.approx(0.5 * 4)
    # RS: ln(H/C) ln(H/O) + ln(L/C) ln(L/O) = 1 + 1
    assert volatility.variance_per_bar(one, "rogers_satchell") == pytest.approx(2.0)


def test_flat_prices_have_zero_volatility():
    flat = bars([(100.0, 100.0, 100.0, 100.0)] * 50)
    for method in volatility.METHODS:
        assert volatility.annualised_volatility(flat, method) == 0.0


def test_annualisation_uses_a_365_day_year():
    assert volatility.bars_per_year(60) == 525_600
    assert volatility.annualised(1e-6, 60) == pytest.approx(math.sqrt(0.5256))


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown volatility method"):
        volatility.annualised_volatility(bars([(1, 1, 1, 1)] * 3), "garch")


def simulate_gbm(sigma_annual: float, n_bars: int, steps: int, seed: int = 7) -> pd.DataFrame:
    """1m bars from a driftless Brownian log-price sampled ``steps`` times per bar."""
    rng = np.random.default_rng(seed)
    sd = sigma_annual / math.sqrt(525_600 * steps)
    path = np.cumsum(rng.normal(0.0, sd, n_bars * steps)).reshape(n_bars, steps)
    start = np.concatenate([[0.0], path[:-1, -1]])
    full = np.column_stack([start, path])
    return (
        pd.DataFrame(
            {
                "open": np.exp(full[:, 0]),
                "high": np.exp(full.max(axis=1)),
                "low": np.exp(full.min(axis=1)),
                "close": np.exp(full[:, -1]),
            }
        )
        * 100
    )


@pytest.mark.parametrize("method", volatility.METHODS)
def test_estimators_recover_a_known_sigma(method):
    sim = simulate_gbm(0.8, n_bars=3000, steps=400)
    got = volatility.annualised_volatility(sim, method)
    # range estimators read a discretely sampled high/low, slightly inside the true range
    tolerance = 0.05 if method in ("close_to_close", "realized") else 0.08
    assert got == pytest.approx(0.8, rel=tolerance)


def reference_terms(rows, method):
    """Per-bar terms in plain Python math from the Decimal strings (independent code path)."""
    out = []
    prev_close = None
    for r in rows:
        o, h, lo, c = (math.log(float(r[k])) for k in ("open", "high", "low", "close"))
        if method == "parkinson":
            out.append((h - lo) ** 2 / (4 * LN2))
        elif method == "garman_klass":
            out.append(0.5 * (h - lo) ** 2 - (2 * LN2 - 1) * (c - o) ** 2)
        elif method == "rogers_satchell":
            out.append((h - c) * (h - o) + (lo - c) * (lo - o))
        elif prev_close is not None:
            out.append(
                (o - prev_close, c - o, (h - c) * (h - o) + (lo - c) * (lo - o), c - prev_close)
            )
        prev_close = c
    return out


@pytest.mark.parametrize("method", volatility.METHODS)
def test_estimators_match_plain_python_on_real_klines(method):
    rows = realdata.vision_rows("BTCUSDT", "2022-01-01")
    frame = realdata.candles_frame(rows, "BTCUSDT")
    terms = reference_terms(rows, method)
    if method in ("parkinson", "garman_klass", "rogers_satchell"):
        variance = statistics.fmean(terms)
    elif method == "close_to_close":
        variance = statistics.variance([t[3] for t in terms])
    elif method == "realized":
        variance = statistics.fmean([t[3] ** 2 for t in terms])
    else:
        n = len(terms)
        k = 0.34 / (1.34 + (n + 1) / (n - 1))
        variance = (
            statistics.variance([t[0] for t in terms])
            + k * statistics.variance([t[1] for t in terms])
            + (1 - k) * statistics.fmean([t[2] for t in terms])
        )
    expected = math.sqrt(variance * 365 * 1440)
    got = volatility.annualised_volatility(frame, method)
    assert got == pytest.approx(expected, rel=1e-10)
    assert 0.05 < got < 2.0  # a sane crypto volatility


@pytest.mark.parametrize("method", volatility.METHODS)
def test_rolling_volatility_has_no_look_ahead(method):
    frame = realdata.vision_candles("ETHUSDT", "2022-01-01")
    window = 60
    rolled = volatility.rolling_volatility(frame, method, window)
    i = 500
    # estimators that need the previous close read one bar more than the window
    per_bar = method in ("parkinson", "garman_klass", "rogers_satchell")
    start = i - window + 1 if per_bar else i - window
    direct = volatility.annualised_volatility(frame.iloc[start : i + 1], method)
    assert rolled.iloc[i] == pytest.approx(direct, rel=1e-9)
    changed = frame.copy()
    changed.loc[i + 1 :, ["open", "high", "low", "close"]] *= 1.5
    again = volatility.rolling_volatility(changed, method, window)
    assert again.iloc[: i + 1].equals(rolled.iloc[: i + 1])
    assert rolled.iloc[: window - 1].isna().all()


def test_moving_averages_match_loops_on_real_closes():
    close = realdata.vision_candles("BTCUSDT", "2023-11-14")["close"]
    values = close.tolist()
    sma = trend.sma(close, 20)
    assert sma.iloc[19] == pytest.approx(statistics.fmean(values[:20]), rel=1e-12)
    assert sma.iloc[:19].isna().all()
    alpha, e = 2 / 21, values[0]
    for v in values[1:300]:
        e = alpha * v + (1 - alpha) * e
    assert trend.ema(close, 20).iloc[299] == pytest.approx(e, rel=1e-12)


def test_regression_slope_of_a_line_is_exact():
    line = pd.Series(100.0 + 0.5 * np.arange(50))
    slope, r2 = trend.regression_slope(line, 10)
    # slope 0.5 per bar relative to the window mean (100 + 0.5 * 4.5 at the first window)
    assert slope.iloc[9] == pytest.approx(0.5 / 102.25 * 1e4)
    assert r2.iloc[9:].to_numpy() == pytest.approx(1.0)
    assert slope.iloc[:9].isna().all()


def reference_adx(h, lo, c, n):
    """Wilder's ADX written as he describes it, with running sums (an independent path)."""
    tr, pdm, mdm = [], [], []
    for i in range(1, len(c)):
        tr.append(max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])))
        up, down = h[i] - h[i - 1], lo[i - 1] - lo[i]
        pdm.append(up if up > down and up > 0 else 0.0)
        mdm.append(down if down > up and down > 0 else 0.0)
    s_tr, s_p, s_m = sum(tr[:n]), sum(pdm[:n]), sum(mdm[:n])
    dxs = []
    for i in range(n, len(tr) + 1):
        if i > n:
            s_tr = s_tr - s_tr / n + tr[i - 1]
            s_p = s_p - s_p / n + pdm[i - 1]
            s_m = s_m - s_m / n + mdm[i - 1]
        pdi, mdi = 100 * s_p / s_tr, 100 * s_m / s_tr
        dxs.append(100 * abs(pdi - mdi) / (pdi + mdi))
    adx = [statistics.fmean(dxs[:n])]
    for dx in dxs[n:]:
        adx.append((adx[-1] * (n - 1) + dx) / n)
    return adx  # adx[0] belongs to bar 2n - 1


def test_adx_matches_wilders_running_sums_on_real_klines():
    frame = realdata.vision_candles("ETHUSDT", "2022-05-01").iloc[:400]
    n = 14
    ours = trend.adx(frame, n)["adx"].to_numpy()
    ref = reference_adx(frame["high"].tolist(), frame["low"].tolist(), frame["close"].tolist(), n)
    assert np.isnan(ours[: 2 * n - 1]).all()
    assert ours[2 * n - 1 :] == pytest.approx(ref, rel=1e-9)


def test_adx_of_a_steady_uptrend_tends_to_100():
    up = np.arange(100, dtype=float)
    out = trend.adx(pd.DataFrame({"high": up + 1, "low": up, "close": up + 0.5}), 14)
    assert out["minus_di"].iloc[-1] == 0
    assert out["adx"].iloc[-1] == pytest.approx(100.0)


def test_zscore_and_percent_b_on_real_closes():
    close = realdata.vision_candles("BTCUSDT", "2022-05-01")["close"]
    n, k = 20, 2.0
    window = close.iloc[100 - n + 1 : 101].tolist()
    z = (close.iloc[100] - statistics.fmean(window)) / statistics.pstdev(window)
    assert deviation.zscore(close, n).iloc[100] == pytest.approx(z, rel=1e-9)
    bb = deviation.bollinger(close, n, k)
    valid = bb["percent_b"].notna()
    # Bollinger's identity with the population sd: %b = 0.5 + z / (2k)
    assert bb["percent_b"][valid].to_numpy() == pytest.approx(
        (0.5 + deviation.zscore(close, n) / (2 * k))[valid].to_numpy(), rel=1e-9
    )
    # the maintenance window (flat closes) has sd = 0: NaN, never inf
    assert not np.isinf(bb["percent_b"]).any()
    assert bb["percent_b"].isna().sum() > n - 1


def test_percent_b_textbook_points():
    close = pd.Series([1.0, 3.0, 1.0, 3.0])  # mean 2, population sd 1 over the last 4
    bb = deviation.bollinger(close, 4, 2.0)
    assert bb["bb_upper"].iloc[-1] == 4.0 and bb["bb_lower"].iloc[-1] == 0.0
    assert bb["percent_b"].iloc[-1] == 0.75
    assert deviation.zscore(close, 4).iloc[-1] == 1.0
