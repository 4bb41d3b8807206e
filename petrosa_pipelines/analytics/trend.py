"""Trend measures on a close series: moving averages and slopes, regression slope, ADX.

* SMA_n = mean of the last n closes; EMA with alpha = 2 / (n + 1) seeded at the first close
  (Murphy, *Technical Analysis of the Financial Markets* (1999), ch. 9). The slope of an MA is
  its change per bar relative to its level, in bps per bar: (MA_t / MA_{t-1} - 1) x 10^4.
* Regression slope: the OLS slope of close on the bar index over the last n bars,
  cov(i, y) / var(i), expressed in bps of the window's mean price per bar, and its R^2.
* ADX, Wilder (1978), *New Concepts in Technical Trading Systems*: TR_t = max(H-L, |H-C'|, |L-C'|);
  +DM = H - H' when it exceeds L' - L and is positive, else 0 (and symmetrically -DM);
  Wilder smoothing S_t = S_{t-1} (1 - 1/n) + x_t/n seeded with the mean of the first n values;
  +DI = 100 S(+DM) / S(TR); DX = 100 |+DI - -DI| / (+DI + -DI); ADX = Wilder smoothing of DX
  seeded with the mean of the first n DX.
Everything at bar t uses bars <= t only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def sma(close: pd.Series, n: int) -> pd.Series:
    """Simple moving average (NaN until n closes)."""
    return close.rolling(n, min_periods=n).mean()


def ema(close: pd.Series, n: int) -> pd.Series:
    """Exponential moving average, alpha = 2 / (n + 1)."""
    return close.ewm(alpha=2.0 / (n + 1), adjust=False).mean()


def slope_bps(series: pd.Series) -> pd.Series:
    """Change per bar relative to the level, in basis points."""
    return (series / series.shift(1) - 1.0) * 1e4


def regression_slope(close: pd.Series, n: int) -> tuple[pd.Series, pd.Series]:
    """(slope in bps of the window mean per bar, R^2) of OLS close ~ index over n bars."""
    y = close.astype("float64")
    x = pd.Series(np.arange(len(y), dtype="float64"), index=y.index)
    cov = x.rolling(n, min_periods=n).cov(y, ddof=0)
    var_x = (n * n - 1) / 12.0  # variance of 0..n-1, ddof 0
    var_y = y.rolling(n, min_periods=n).var(ddof=0)
    mean_y = y.rolling(n, min_periods=n).mean()
    slope = cov / var_x
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = (cov * cov) / (var_x * var_y)
    return slope / mean_y * 1e4, r2.where(var_y > 0)


def wilder(values: np.ndarray, n: int, first: int) -> np.ndarray:
    """Wilder smoothing from index ``first``: seeded with mean(values[first:first+n])."""
    out = np.full(len(values), np.nan)
    seed_at = first + n - 1
    if seed_at >= len(values):
        return out
    out[seed_at] = np.mean(values[first : seed_at + 1])
    for i in range(seed_at + 1, len(values)):
        out[i] = out[i - 1] + (values[i] - out[i - 1]) / n
    return out


def adx(bars: pd.DataFrame, n: int = 14) -> pd.DataFrame:
    """+DI, -DI and ADX (Wilder) per bar; columns plus_di, minus_di, adx."""
    h, l_, c = (bars[k].to_numpy("float64") for k in ("high", "low", "close"))
    ph, pl, pc = (np.concatenate([[np.nan], a[:-1]]) for a in (h, l_, c))
    tr = np.fmax(h - l_, np.fmax(np.abs(h - pc), np.abs(l_ - pc)))
    up, down = h - ph, pl - l_
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    s_tr, s_p, s_m = (wilder(v, n, first=1) for v in (tr, plus_dm, minus_dm))
    with np.errstate(invalid="ignore", divide="ignore"):
        plus_di = 100.0 * s_p / s_tr
        minus_di = 100.0 * s_m / s_tr
        dx = 100.0 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    first_dx = n  # first index where s_tr exists
    # a flat window has no directional movement: DX 0/0 counts as 0 (no trend)
    adx_values = wilder(np.nan_to_num(dx, nan=0.0), n, first=first_dx)
    return pd.DataFrame(
        {"plus_di": plus_di, "minus_di": minus_di, "adx": adx_values}, index=bars.index
    )
