"""Volatility estimators on OHLC bars, annualised on a 365-day calendar.

Crypto trades every day, so a year is 365 x 86,400 seconds (not 252 trading days); a bar of
``bar_seconds`` is annualised by ``365 * 86400 / bar_seconds``. Every estimator gives a
variance *per bar*; ``annualised`` turns it into a volatility.

With o, h, l, c the logs of open, high, low, close of bar t and c' the previous close:

* ``close_to_close``: sample variance (ddof=1) of r_t = c_t - c'_t. The textbook estimator
  (e.g. Hull, *Options, Futures and Other Derivatives*, ch. 15).
* ``parkinson``: mean((h - l)^2) / (4 ln 2). Parkinson (1980), "The Extreme Value Method for
  Estimating the Variance of the Rate of Return", J. Business 53(1).
* ``garman_klass``: mean(0.5 (h - l)^2 - (2 ln 2 - 1)(c - o)^2). Garman & Klass (1980), "On the
  Estimation of Security Price Volatilities from Historical Data", J. Business 53(1).
* ``rogers_satchell``: mean((h - c)(h - o) + (l - c)(l - o)); unbiased under drift. Rogers &
  Satchell (1991), "Estimating Variance from High, Low and Closing Prices", Ann. Appl. Prob. 1(4).
* ``yang_zhang``: V_O + k V_C + (1 - k) V_RS with V_O the sample variance of the opening jump
  o - c', V_C that of c - o, V_RS the Rogers-Satchell mean, k = 0.34 / (1.34 + (n+1)/(n-1)).
  Yang & Zhang (2000), "Drift-Independent Volatility Estimation Based on High, Low, Open, and
  Close Prices", J. Business 73(3).
* ``realized``: mean(r_t^2), no demeaning; on 1m bars over a day, 1440 x this is the realised
  variance sum(r^2) of Andersen, Bollerslev, Diebold & Labys (2003), Econometrica 71(2).

Estimators needing the previous close (close_to_close, yang_zhang, realized) drop the first bar.
Zero-volume maintenance bars are flat and contribute zero, as they should.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

METHODS = (
    "close_to_close",
    "parkinson",
    "garman_klass",
    "rogers_satchell",
    "yang_zhang",
    "realized",
)
SECONDS_PER_YEAR = 365 * 86_400
_LN2 = math.log(2.0)


def bars_per_year(bar_seconds: float) -> float:
    """Bars in a 365-day year."""
    if bar_seconds <= 0:
        raise ValueError("bar_seconds must be > 0")
    return SECONDS_PER_YEAR / bar_seconds


def _logs(bars: pd.DataFrame) -> tuple[np.ndarray, ...]:
    o, h, l_, c = (np.log(bars[k].to_numpy("float64")) for k in ("open", "high", "low", "close"))
    prev_c = np.concatenate([[np.nan], c[:-1]])
    return o, h, l_, c, prev_c


def bar_terms(bars: pd.DataFrame, method: str) -> np.ndarray:
    """Per-bar contribution whose mean is the per-bar variance (not for yang_zhang)."""
    o, h, l_, c, prev_c = _logs(bars)
    if method == "parkinson":
        return (h - l_) ** 2 / (4.0 * _LN2)
    if method == "garman_klass":
        return 0.5 * (h - l_) ** 2 - (2.0 * _LN2 - 1.0) * (c - o) ** 2
    if method == "rogers_satchell":
        return (h - c) * (h - o) + (l_ - c) * (l_ - o)
    if method == "realized":
        return (c - prev_c) ** 2
    raise ValueError(f"{method!r} has no per-bar form; use variance_per_bar")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown volatility method {method!r}; known: {list(METHODS)}")


def variance_per_bar(bars: pd.DataFrame, method: str) -> float:
    """Variance of one bar's log return by ``method`` (NaN when too few bars)."""
    _check_method(method)
    if method == "close_to_close":
        _, _, _, c, prev_c = _logs(bars)
        r = (c - prev_c)[1:]
        return float(np.var(r, ddof=1)) if r.size >= 2 else math.nan
    if method == "yang_zhang":
        return _yang_zhang(bars)
    terms = bar_terms(bars, method)
    terms = terms[~np.isnan(terms)]
    return float(terms.mean()) if terms.size else math.nan


def _yang_zhang(bars: pd.DataFrame) -> float:
    o, h, l_, c, prev_c = _logs(bars)
    jump, body = (o - prev_c)[1:], (c - o)[1:]
    n = jump.size
    if n < 2:
        return math.nan
    rs = ((h - c) * (h - o) + (l_ - c) * (l_ - o))[1:]
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    return float(np.var(jump, ddof=1) + k * np.var(body, ddof=1) + (1 - k) * rs.mean())


def annualised(variance: float, bar_seconds: float) -> float:
    """sqrt(variance per bar x bars per 365-day year)."""
    if math.isnan(variance):
        return math.nan
    return math.sqrt(max(variance, 0.0) * bars_per_year(bar_seconds))


def annualised_volatility(bars: pd.DataFrame, method: str, bar_seconds: float = 60) -> float:
    """Annualised volatility of ``bars`` (one symbol, time-ordered) by ``method``."""
    return annualised(variance_per_bar(bars, method), bar_seconds)


def rolling_volatility(
    bars: pd.DataFrame, method: str, window: int, bar_seconds: float = 60
) -> pd.Series:
    """Annualised volatility over the trailing ``window`` bars, one value per bar.

    Uses only bars up to and including t (no look-ahead); NaN until the window is full.
    """
    _check_method(method)
    if method == "close_to_close":
        _, _, _, c, prev_c = _logs(bars)
        var = pd.Series(c - prev_c).rolling(window, min_periods=window).var(ddof=1)
    elif method == "yang_zhang":
        var = pd.Series(
            [
                _yang_zhang(bars.iloc[max(0, i - window) : i + 1]) if i >= window else math.nan
                for i in range(len(bars))
            ]
        )
    else:
        var = pd.Series(bar_terms(bars, method)).rolling(window, min_periods=window).mean()
    out = np.sqrt(var.clip(lower=0.0) * bars_per_year(bar_seconds))
    out.index = bars.index
    return out
