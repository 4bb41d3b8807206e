"""Hour-of-day and day-of-week profiles of returns, volume and volatility.

Intraday seasonality of volume and volatility (the U- or W-shape around market opens and funding
settlements) is documented since Wood, McInish & Ord (1985), "An Investigation of Transactions
Data for NYSE Stocks", J. Finance 40(3); for crypto see Eross, McGroarty, Urquhart & Wolfe
(2019), "The intraday dynamics of bitcoin", Res. Int. Bus. Finance 49.

Per bucket (UTC hour 0-23, or ISO weekday 0=Monday..6) over the bars of the window:
mean 1m log return (bps), mean volume per bar, realised volatility sqrt(mean(r^2) x bars per
365-day year), and the number of bars. Each return is attributed to the bucket of the bar it
ends in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics.volatility import bars_per_year

PROFILES = {"hour_of_day": 24, "day_of_week": 7}
COLUMNS = ["profile", "bucket", "mean_return_bps", "mean_volume", "volatility", "bars"]


def profiles(candles: pd.DataFrame, bar_seconds: float = 60) -> pd.DataFrame:
    """Both profiles stacked: 24 hour rows then 7 weekday rows (empty buckets have bars=0)."""
    c = candles.sort_values("open_time", kind="stable")
    close = c["close"].astype("float64").to_numpy()
    ret = np.log(close[1:] / close[:-1]) if len(close) > 1 else np.array([])
    times = pd.DatetimeIndex(c["open_time"].iloc[1:])
    vol = c["volume"].astype("float64").to_numpy()[1:]
    parts = []
    for name, size in PROFILES.items():
        key = (times.hour if name == "hour_of_day" else times.day_of_week).to_numpy()
        n = np.bincount(key, minlength=size)
        sum_r = np.bincount(key, weights=ret, minlength=size)
        sum_r2 = np.bincount(key, weights=ret * ret, minlength=size)
        sum_v = np.bincount(key, weights=vol, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(
                pd.DataFrame(
                    {
                        "profile": name,
                        "bucket": np.arange(size, dtype="int64"),
                        "mean_return_bps": sum_r / n * 1e4,
                        "mean_volume": sum_v / n,
                        "volatility": np.sqrt(sum_r2 / n * bars_per_year(bar_seconds)),
                        "bars": n.astype("int64"),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)[COLUMNS]
