"""What each analytics asset computes from its loaded inputs: plain functions, no Dagster context.

Every function takes the input frames (already concatenated over the partition window and sorted
by time by the lake IO manager), the partition being built and the run settings, and returns the
output frame restricted to that partition. Tests call them directly; ``assets.py`` only wires
them. Rolling inputs reach back through partition mappings, and the output keeps only rows of
the partition's own day, so a day's analytics never depend on a later day (no look-ahead).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from petrosa_pipelines.analytics import (
    correlation,
    deviation,
    funding,
    liquidity,
    resample,
    seasonality,
    trend,
    volatility,
    volume,
)


class AnalyticsConfig(dg.Config):
    """Run settings of the analytics assets (each asset reads the fields it needs)."""

    #: volatility estimators to compute (see analytics/volatility.py METHODS)
    volatility_methods: list[str] = list(volatility.METHODS)
    #: keep incomplete intervals (flagged is_complete=False) in the multi-timeframe candles
    include_partial: bool = False
    #: half-width of the band around mid within which depth is summed, bps
    depth_band_bps: float = 10.0
    heatmap_minutes: int = 5
    heatmap_price_buckets: int = 40
    profile_buckets: int = 50
    sma_fast: int = 20
    sma_slow: int = 240
    regression_window: int = 60
    adx_period: int = 14
    zscore_window: int = 60
    bollinger_window: int = 20
    bollinger_k: float = 2.0


@dataclass(frozen=True)
class Part:
    """The partition being built: a UTC day, one symbol or all (None), and the current time."""

    day: dt.date
    symbol: str | None
    now: pd.Timestamp

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.day, tz="UTC")

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=1)

    @property
    def closed(self) -> bool:
        return self.now >= self.end


def in_day(frame: pd.DataFrame, column: str, part: Part) -> pd.DataFrame:
    """Rows of ``frame`` whose ``column`` falls in the partition's day."""
    if frame.empty or column not in frame.columns:
        return frame.iloc[0:0]
    t = pd.to_datetime(frame[column], utc=True)
    return frame[(t >= part.start) & (t < part.end)].reset_index(drop=True)


def _stamp(frame: pd.DataFrame, part: Part) -> pd.DataFrame:
    out = frame.reset_index(drop=True).copy()
    out.insert(0, "date", pd.Series([part.start] * len(out), dtype="datetime64[ms, UTC]"))
    if part.symbol is not None:
        out.insert(1, "symbol", pd.Series([part.symbol] * len(out), dtype="string"))
    return out


def candles_from_trades(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    as_of = part.end if part.closed else None
    return resample.multi_timeframe(
        inputs["trades"],
        resample.TRADE_INTERVALS,
        from_trades=True,
        as_of=as_of,
        include_partial=cfg.include_partial,
    )


def candles_from_1m(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    return resample.multi_timeframe(
        in_day(inputs["candles"], "open_time", part),
        resample.CANDLE_INTERVALS,
        from_trades=False,
        as_of=part.end if part.closed else part.now,
        include_partial=cfg.include_partial,
    )


def volatility_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    window = inputs["candles"]
    window = (
        window[pd.to_datetime(window["open_time"], utc=True) < part.end] if len(window) else window
    )
    day = in_day(window, "open_time", part)
    if day.empty:
        return _stamp(pd.DataFrame({c: [] for c in VOLATILITY_COLUMNS}), part)
    days = pd.to_datetime(window["open_time"], utc=True).dt.floor("D").nunique()
    rows = [
        {
            "method": m,
            "volatility_day": volatility.annualised_volatility(day, m),
            "volatility_window": volatility.annualised_volatility(window, m),
            "bars_day": len(day),
            "bars_window": len(window),
            "window_days": int(days),
        }
        for m in cfg.volatility_methods
    ]
    return _stamp(pd.DataFrame(rows, columns=VOLATILITY_COLUMNS), part)


VOLATILITY_COLUMNS = [
    "method",
    "volatility_day",
    "volatility_window",
    "bars_day",
    "bars_window",
    "window_days",
]


def volume_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    trades = inputs["trades"]
    hourly = volume.volume_stats(trades, "1h")
    daily = volume.volume_stats(trades, "1d")
    return _stamp(pd.concat([hourly, daily], ignore_index=True), part)


def volume_profile_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    return _stamp(volume.volume_profile(inputs["trades"], target_buckets=cfg.profile_buckets), part)


def trade_sizes_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    return _stamp(volume.trade_size_distribution(inputs["trades"]), part)


def liquidity_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    """Book metrics for the minutes that have book snapshots, with the minute's Amihud term.

    A minute without depth has no spread or depth to report, so it has no row (rows of NaN
    read as data; the asset notes a day without any depth instead).
    """
    book = liquidity.per_interval(liquidity.book_metrics(inputs["depth"], cfg.depth_band_bps))
    candles = inputs["candles"].sort_values("open_time") if len(inputs["candles"]) else None
    if candles is not None and len(book):
        illiq = pd.DataFrame(
            {
                "bucket_start": candles["open_time"].astype("datetime64[ms, UTC]").to_numpy(),
                "amihud": liquidity.amihud_terms(candles).to_numpy(),
            }
        ).drop_duplicates("bucket_start")
        book = book.merge(illiq, on="bucket_start", how="left")
    else:
        book["amihud"] = np.nan
    book["snapshots"] = book["snapshots"].astype("int64")
    book["band_bps"] = float(cfg.depth_band_bps)
    book["bucket_start"] = pd.to_datetime(book["bucket_start"], utc=True).astype(
        "datetime64[ms, UTC]"
    )
    book = in_day(book.sort_values("bucket_start"), "bucket_start", part)
    return _stamp(book[LIQUIDITY_COLUMNS], part)


LIQUIDITY_COLUMNS = [*liquidity.INTERVAL_COLUMNS, "band_bps", "amihud"]


def heatmap_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    heat = liquidity.liquidity_heatmap(
        inputs["depth"],
        cfg.heatmap_minutes * 60_000,
        target_price_buckets=cfg.heatmap_price_buckets,
    )
    return _stamp(heat, part)


def trend_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    bars = inputs["candles"]
    bars = bars[pd.to_datetime(bars["open_time"], utc=True) < part.end] if len(bars) else bars
    bars = bars.reset_index(drop=True)
    close = bars["close"].astype("float64") if len(bars) else pd.Series(dtype="float64")
    out = pd.DataFrame(
        {"open_time": bars.get("open_time", pd.Series(dtype="datetime64[ms, UTC]")), "close": close}
    )
    out["sma_fast"] = trend.sma(close, cfg.sma_fast)
    out["sma_slow"] = trend.sma(close, cfg.sma_slow)
    out["ema_fast"] = trend.ema(close, cfg.sma_fast)
    out["sma_fast_slope_bps"] = trend.slope_bps(out["sma_fast"])
    out["sma_slow_slope_bps"] = trend.slope_bps(out["sma_slow"])
    out["regression_slope_bps"], out["regression_r2"] = trend.regression_slope(
        close, cfg.regression_window
    )
    if len(bars):
        out = out.join(trend.adx(bars, cfg.adx_period))
    else:
        out = out.assign(plus_di=np.nan, minus_di=np.nan, adx=np.nan)
    return _stamp(in_day(out, "open_time", part), part)


def deviation_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    bars = inputs["candles"]
    bars = bars[pd.to_datetime(bars["open_time"], utc=True) < part.end] if len(bars) else bars
    bars = bars.reset_index(drop=True)
    close = bars["close"].astype("float64") if len(bars) else pd.Series(dtype="float64")
    out = pd.DataFrame(
        {"open_time": bars.get("open_time", pd.Series(dtype="datetime64[ms, UTC]")), "close": close}
    )
    out["zscore"] = deviation.zscore(close, cfg.zscore_window)
    out = out.join(deviation.bollinger(close, cfg.bollinger_window, cfg.bollinger_k))
    return _stamp(in_day(out, "open_time", part), part)


def seasonality_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    bars = inputs["candles"]
    bars = bars[pd.to_datetime(bars["open_time"], utc=True) < part.end] if len(bars) else bars
    if bars.empty:
        return _stamp(pd.DataFrame({c: [] for c in seasonality.COLUMNS}), part)
    return _stamp(seasonality.profiles(bars), part)


def funding_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    events = inputs["funding"]
    if len(events):
        events = events[pd.to_datetime(events["funding_time"], utc=True) < part.end]
    return _stamp(in_day(funding.funding_analytics(events), "funding_time", part), part)


def correlation_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    candles = in_day(inputs["candles"], "open_time", part)
    if candles.empty:
        return _stamp(pd.DataFrame(columns=correlation.PAIR_COLUMNS), part)
    return _stamp(correlation.pair_statistics(correlation.returns_wide(candles)), part)


def correlation_rolling_table(inputs: dict, part: Part, cfg: AnalyticsConfig) -> pd.DataFrame:
    days = inputs["correlation"]
    if len(days):
        days = days[pd.to_datetime(days["date"], utc=True) < part.end]
    return _stamp(correlation.pool(days), part)
