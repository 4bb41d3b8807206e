"""Funding of perpetual futures: annualised rate and cumulative cost of holding a position.

Binance USD-M perpetuals settle funding every 8 h on most symbols (some 4 h or 1 h): a long
position of notional N pays N x r at each settlement when the rate r is positive and receives it
when negative (Binance, "Introduction to Binance Futures Funding Rates").

* Annualised rate = r x settlements per 365-day year = r x 365 x 24 / interval_hours (simple,
  not compounded - the convention of exchange dashboards). The interval is inferred from the
  median spacing of funding times, rounded to whole hours (8 when it cannot be inferred).
* Cumulative cost for a long of notional 1 over the rows so far: simple sum(r), and
  compounded prod(1 + r) - 1 (the cost when the position is rebalanced to constant notional).
  A short's cost is the negative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_INTERVAL_HOURS = 8.0


def infer_interval_hours(funding_time: pd.Series) -> float:
    """Median spacing of settlements in whole hours (default 8)."""
    t = pd.DatetimeIndex(funding_time).sort_values()
    if len(t) < 2:
        return DEFAULT_INTERVAL_HOURS
    # Binance funding times can sit a few ms off the hour: round the spacing
    hours = round(float(np.median(np.diff(t.asi8))) / 3.6e12, 0)
    return hours if hours > 0 else DEFAULT_INTERVAL_HOURS


def _scale_to_ns(funding_time: pd.Series) -> pd.Series:
    return pd.to_datetime(funding_time, utc=True).astype("datetime64[ns, UTC]")


def annualised_rate(rate: pd.Series | float, interval_hours: float) -> pd.Series | float:
    """Simple annualisation: rate x 365 x 24 / interval_hours."""
    return rate * (365.0 * 24.0 / interval_hours)


def funding_analytics(funding: pd.DataFrame, interval_hours: float | None = None) -> pd.DataFrame:
    """Per settlement: rate, annualised rate, cumulative simple and compounded cost (long, N=1)."""
    cols = [
        "funding_time",
        "funding_rate",
        "interval_hours",
        "annualised_rate",
        "cumulative_rate",
        "cumulative_compounded",
    ]
    if funding.empty:
        return pd.DataFrame({c: [] for c in cols})
    f = funding.sort_values("funding_time", kind="stable").reset_index(drop=True)
    hours = interval_hours or infer_interval_hours(_scale_to_ns(f["funding_time"]))
    r = f["funding_rate"].astype("float64")
    out = pd.DataFrame(
        {
            "funding_time": f["funding_time"],
            "funding_rate": r,
            "interval_hours": float(hours),
            "annualised_rate": annualised_rate(r, hours),
            "cumulative_rate": r.cumsum(),
            "cumulative_compounded": np.exp(np.log1p(r).cumsum()) - 1.0,
        }
    )
    return out[cols]
