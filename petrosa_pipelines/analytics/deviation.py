"""Deviation of price from its rolling mean: z-score and Bollinger %b.

* z_t = (C_t - mean_n) / sd_n over the last n closes (including C_t).
* Bollinger bands: mean_n +- k sd_n; %b = (C - lower) / (upper - lower) (Bollinger,
  *Bollinger on Bollinger Bands* (2001), ch. 7 and 8). Bollinger specifies the population
  standard deviation (ddof = 0), which both measures use, so %b = 0.5 + z / (2k) exactly.
NaN until n closes, and where the window is flat (sd = 0).
"""

from __future__ import annotations

import pandas as pd


def rolling_mean_sd(close: pd.Series, n: int) -> tuple[pd.Series, pd.Series]:
    """Rolling mean and population standard deviation over n closes."""
    roll = close.astype("float64").rolling(n, min_periods=n)
    return roll.mean(), roll.std(ddof=0)


def zscore(close: pd.Series, n: int) -> pd.Series:
    """(close - rolling mean) / rolling population sd."""
    mean, sd = rolling_mean_sd(close, n)
    return (close - mean) / sd.where(sd > 0)


def bollinger(close: pd.Series, n: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Bands and %b: columns bb_mid, bb_upper, bb_lower, percent_b."""
    mean, sd = rolling_mean_sd(close, n)
    upper, lower = mean + k * sd, mean - k * sd
    width = (upper - lower).where(sd > 0)
    return pd.DataFrame(
        {"bb_mid": mean, "bb_upper": upper, "bb_lower": lower, "percent_b": (close - lower) / width}
    )
