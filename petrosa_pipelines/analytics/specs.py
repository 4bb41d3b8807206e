"""The analytics assets declared as data: inputs and windows, columns, lineage, chart.

One ``AnalyticSpec`` per asset. ``assets.py`` turns each into a Dagster asset, and the catalog
export reads the same column descriptions and lineage back from the asset graph, so the docs
cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from petrosa_pipelines.analytics import charts, compute, correlation
from petrosa_pipelines.catalog.depth_layout import LEVEL_COLUMNS, level_counts
from petrosa_pipelines.catalog.schemas import TS, Column
from petrosa_pipelines.instruments import market_data_path

#: rolling windows, in days including the partition's own day (fixed: they are partition mappings)
VOLATILITY_WINDOW_DAYS = 7
WARMUP_DAYS = 2
SEASONALITY_WINDOW_DAYS = 28
FUNDING_WINDOW_DAYS = 30
CORRELATION_WINDOW_DAYS = 7


def holds_data(frame: pd.DataFrame | None) -> bool:
    """Whether an input frame has anything to compute from. Depth snapshots whose books hold
    no level count as none: in version 1 (one row per level) they were no rows at all."""
    if frame is None or len(frame) == 0:
        return False
    if LEVEL_COLUMNS["bid"][0] in frame.columns:
        return bool((level_counts(frame, "bid") + level_counts(frame, "ask")).any())
    return True


@dataclass(frozen=True)
class InputSpec:
    """An upstream dataset and how many days (including this one) the asset reads."""

    key: tuple[str, ...]
    window_days: int = 1
    all_symbols: bool = False


@dataclass(frozen=True)
class AnalyticSpec:
    name: str
    description: str
    inputs: Mapping[str, InputSpec]
    columns: tuple[Column, ...]
    #: output column -> (input name, upstream column) it is computed from
    lineage: Mapping[str, tuple[tuple[str, str], ...]]
    time_column: str
    compute: Callable[[dict, compute.Part, compute.AnalyticsConfig], pd.DataFrame]
    #: the chart's metadata entries (``summary`` and ``chart: <what>``) for an output frame
    chart: Callable[[pd.DataFrame, charts.ChartContext], dict[str, object]]
    per_symbol: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)
    #: inputs without which there is nothing to compute (default: every input); when one is
    #: empty the asset writes 0 rows and says so instead of a frame of NaN
    required: tuple[str, ...] | None = None

    def missing_inputs(self, inputs: Mapping[str, pd.DataFrame]) -> list[str]:
        """The required inputs holding no data (:func:`holds_data`), as upstream dataset names
        (e.g. depth)."""
        names = self.required if self.required is not None else tuple(self.inputs)
        return [self.inputs[n].key[-1] for n in names if not holds_data(inputs.get(n))]

    @property
    def rolling(self) -> bool:
        return any(i.window_days > 1 or i.all_symbols for i in self.inputs.values())


TRADES = tuple(market_data_path("trades"))
CANDLES = tuple(market_data_path("candles"))
DEPTH = tuple(market_data_path("depth"))
FUNDING = tuple(market_data_path("funding"))
F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()

DATE = Column("date", TS, "The partition's UTC day (00:00).")
SYMBOL = Column("symbol", STR, "Exchange symbol, e.g. BTCUSDT.")


def _c(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> Column:
    return Column(name, type_, description, nullable)


def _candle_columns(source: str) -> tuple[Column, ...]:
    return (
        Column("exchange", STR, "Exchange adapter name."),
        SYMBOL,
        Column("interval", STR, "Candle interval, e.g. 1h."),
        Column("open_time", TS, "Interval start, inclusive, aligned to the UTC epoch."),
        Column("close_time", TS, "Interval end: open_time + interval - 1 ms (Binance's rule)."),
        Column("open", F64, f"First price of the interval ({source})."),
        Column("high", F64, "Highest price."),
        Column("low", F64, "Lowest price."),
        Column("close", F64, "Last price."),
        Column("volume", F64, "Base volume, a decimal-exact sum."),
        Column("quote_volume", F64, "Quote volume, a decimal-exact sum."),
        Column("trade_count", I64, "Underlying trades."),
        Column("taker_buy_volume", F64, "Base volume bought by takers."),
        Column("taker_buy_quote_volume", F64, "Quote volume bought by takers."),
        Column("source_rows", I64, f"{source} rows aggregated (0 for a flat filled interval)."),
        Column("is_complete", BOOL, "Whole interval known (all inputs present, interval ended)."),
    )


def _same(inp: str, *cols: str) -> dict[str, tuple[tuple[str, str], ...]]:
    return {c: ((inp, c),) for c in cols}


def _from(inp: str, outputs: tuple[str, ...], sources: tuple[str, ...]) -> dict:
    return {o: tuple((inp, s) for s in sources) for o in outputs}


ChartFn = Callable[[pd.DataFrame, charts.ChartContext], dict[str, object]]


def _entries(ctx: charts.ChartContext, what: str, md: object, facts: list[str]) -> dict:
    """``summary`` (inline in the UI) and ``chart: <what>`` (the figure; the key titles the
    dialog it opens in) for one materialisation; see analytics/charts.py."""
    return {"summary": charts.summary(f"{ctx.label}: {what}", facts), f"chart: {what}": md}


def _stats(values: pd.Series, unit: str, scale: float = 1.0) -> list[str]:
    v = values.astype("float64").dropna() * scale
    if v.empty:
        return ["no values"]
    return [f"min {v.min():.4g}", f"mean {v.mean():.4g}", f"max {v.max():.4g} {unit}".rstrip()]


def _line(
    x: str,
    ys: tuple[str, ...],
    what: str,
    ylabel: str,
    unit: str,
    where: Callable | None = None,
    scale: float = 1.0,
) -> ChartFn:
    """A line chart of ``ys`` against ``x``; ``ylabel``/``unit`` may name {quote} and {base}."""

    def chart(frame: pd.DataFrame, ctx: charts.ChartContext) -> dict:
        f = where(frame) if where else frame
        u = unit.format(quote=ctx.quote, base=ctx.base)
        if f.empty:
            return {"summary": charts.summary(f"{ctx.label}: {what}", ["no rows to plot"])}
        title = f"{ctx.label}: {what}"
        series = {y: f[y].astype("float64") * scale for y in ys}
        label = ylabel.format(quote=ctx.quote, base=ctx.base)
        md = charts.line_chart(f[x], series, title, ylabel=label)
        facts = [f"{len(f):,} points", *_stats(f[ys[0]], u, scale)]
        return _entries(ctx, what, md, facts)

    return chart


def _bars(
    label: str,
    value: str,
    what: str,
    value_label: str,
    label_label: str,
    where: Callable | None = None,
    h: bool = False,
    scale: float = 1.0,
) -> ChartFn:
    """Bars of ``value`` per ``label``; axis labels may name {quote} and {base}."""

    def chart(frame: pd.DataFrame, ctx: charts.ChartContext) -> dict:
        f = where(frame) if where else frame
        if f.empty:
            return {"summary": charts.summary(f"{ctx.label}: {what}", ["no rows to plot"])}
        title = f"{ctx.label}: {what}"
        vl = value_label.format(quote=ctx.quote, base=ctx.base)
        ll = label_label.format(quote=ctx.quote, base=ctx.base)
        labels = [round(v, 6) if isinstance(v, float) else v for v in f[label].tolist()]
        values = (f[value].astype("float64") * scale).tolist()
        md = charts.bar_chart(
            labels,
            values,
            title,
            ylabel=ll if h else vl,
            xlabel=vl if h else ll,
            horizontal=h,
        )
        top = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
        facts = [f"{len(f):,} bars", f"largest: {labels[top]} ({values[top]:.4g} {vl})"]
        return _entries(ctx, what, md, facts)

    return chart


def _heat(x: str, y: str, v: str, what: str) -> ChartFn:
    def chart(frame: pd.DataFrame, ctx: charts.ChartContext) -> dict:
        if frame.empty:
            return {"summary": charts.summary(f"{ctx.label}: {what}", ["no rows to plot"])}
        title = f"{ctx.label}: {what}"
        md = charts.heatmap_chart(
            frame,
            x,
            y,
            v,
            title,
            xlabel="time (UTC)",
            ylabel=f"price bucket ({ctx.quote})",
            colorbar_label=f"mean resting quantity, bids + asks ({ctx.base})",
        )
        times = pd.to_datetime(frame[x], utc=True)
        facts = [
            f"{times.nunique():,} time buckets {times.min():%H:%M}-{times.max():%H:%M} UTC",
            f"prices {frame[y].min():.6g}-{frame[y].max():.6g} {ctx.quote}",
            f"largest cell {frame[v].max():.4g} {ctx.base}",
        ]
        return _entries(ctx, what, md, facts)

    return chart


def _interval(name: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda f: f[f["interval"] == name] if len(f) else f


_OHLC = ("open", "high", "low", "close")
_TRADE_CANDLE_LINEAGE = {
    **_from("trades", ("open", "high", "low", "close"), ("price", "trade_time")),
    **_from("trades", ("volume", "taker_buy_volume"), ("quantity", "is_buyer_maker")),
    **_from(
        "trades",
        ("quote_volume", "taker_buy_quote_volume"),
        ("price", "quantity", "is_buyer_maker"),
    ),
    **_from("trades", ("trade_count",), ("first_trade_id", "last_trade_id")),
    **_from("trades", ("open_time", "close_time", "is_complete", "source_rows"), ("trade_time",)),
    **_same("trades", "exchange", "symbol"),
}
_CANDLE_LINEAGE = {
    **_same(
        "candles",
        "exchange",
        "symbol",
        *_OHLC,
        "volume",
        "quote_volume",
        "trade_count",
        "taker_buy_volume",
        "taker_buy_quote_volume",
    ),
    **_from("candles", ("open_time", "close_time", "is_complete", "source_rows"), ("open_time",)),
}
_OHLCV = ("open", "high", "low", "close", "volume")
#: depth (version 2): each side's levels are list columns, best price first
_BEST = ("bid_price", "ask_price")
_LEVELS = ("bid_price", "bid_quantity", "ask_price", "ask_quantity")
_BOOK = (*_LEVELS, "snapshot_time")

SPECS: tuple[AnalyticSpec, ...] = (
    AnalyticSpec(
        name="candles_from_trades",
        description=(
            "1s, 5s, 15s and 30s candles built from the day's aggregate trades. Only complete "
            "intervals are kept (a trade at or after an interval's end has been seen, or the day "
            "is closed); quiet seconds are flat zero-volume candles at the previous close."
        ),
        inputs={"trades": InputSpec(TRADES)},
        columns=_candle_columns("trades"),
        lineage=_TRADE_CANDLE_LINEAGE,
        time_column="open_time",
        compute=compute.candles_from_trades,
        chart=_line(
            "open_time",
            ("close",),
            "30-second close",
            "price ({quote})",
            "{quote}",
            _interval("30s"),
        ),
        tags={"timeframe": "1s-30s"},
    ),
    AnalyticSpec(
        name="candles_from_1m",
        description=(
            "5m, 15m, 1h, 4h and 1d candles aggregated from the day's 1m candles exactly as the "
            "exchange builds its own longer klines (first open, max high, min low, last close, "
            "decimal-exact sums). An interval is kept only when all its minutes are present."
        ),
        inputs={"candles": InputSpec(CANDLES)},
        columns=_candle_columns("1m candles"),
        lineage=_CANDLE_LINEAGE,
        time_column="open_time",
        compute=compute.candles_from_1m,
        chart=_line(
            "open_time",
            ("close",),
            "1-hour close",
            "price ({quote})",
            "{quote}",
            _interval("1h"),
        ),
        tags={"timeframe": "5m-1d"},
    ),
    AnalyticSpec(
        name="volatility",
        description=(
            "Annualised volatility (365-day year) of the day and of the trailing "
            f"{VOLATILITY_WINDOW_DAYS} days from 1m bars, by estimator: close-to-close, "
            "Parkinson, Garman-Klass, Rogers-Satchell, Yang-Zhang and realised volatility."
        ),
        inputs={"candles": InputSpec(CANDLES, VOLATILITY_WINDOW_DAYS)},
        columns=(
            DATE,
            SYMBOL,
            Column("method", STR, "Estimator (analytics/volatility.py METHODS)."),
            _c("volatility_day", F64, "Annualised volatility from the day's 1m bars."),
            _c(
                "volatility_window",
                F64,
                f"Annualised volatility from the 1m bars of the last {VOLATILITY_WINDOW_DAYS} "
                "days.",
            ),
            Column("bars_day", I64, "1m bars of the day used."),
            Column("bars_window", I64, "1m bars of the window used."),
            Column("window_days", I64, "Days of the window that had data."),
        ),
        lineage=_from("candles", ("volatility_day", "volatility_window"), _OHLCV[:4])
        | _from("candles", ("bars_day", "bars_window", "window_days"), ("open_time",)),
        time_column="date",
        compute=compute.volatility_table,
        chart=_bars(
            "method",
            "volatility_day",
            "annualised volatility of the day by estimator",
            "annualised volatility (%)",
            "estimator",
            scale=100.0,
        ),
    ),
    AnalyticSpec(
        name="volume",
        description=(
            "Hourly and daily volume, quote volume, VWAP, taker buy and sell volume and the "
            "taker imbalance (B - S) / (B + S), from aggregate trades."
        ),
        inputs={"trades": InputSpec(TRADES)},
        columns=(
            DATE,
            SYMBOL,
            Column("interval", STR, "1h rows and one 1d row."),
            Column("bucket_start", TS, "Interval start (UTC)."),
            Column("volume", F64, "Base volume."),
            Column("quote_volume", F64, "Quote volume (sum of price x quantity)."),
            _c("vwap", F64, "Volume-weighted average price."),
            Column("taker_buy_volume", F64, "Base volume bought by takers."),
            Column("taker_sell_volume", F64, "Base volume sold by takers."),
            _c("taker_imbalance", F64, "(buy - sell) / (buy + sell), in [-1, 1]."),
            Column("trade_count", I64, "Aggregate trades."),
        ),
        lineage=_from(
            "trades",
            ("volume", "taker_buy_volume", "taker_sell_volume", "taker_imbalance"),
            ("quantity", "is_buyer_maker"),
        )
        | _from("trades", ("quote_volume", "vwap"), ("price", "quantity"))
        | _from("trades", ("bucket_start", "trade_count"), ("trade_time",)),
        time_column="bucket_start",
        compute=compute.volume_table,
        chart=_line(
            "bucket_start",
            ("taker_imbalance",),
            "hourly taker imbalance",
            "taker imbalance (buy - sell) / (buy + sell)",
            "",
            _interval("1h"),
        ),
    ),
    AnalyticSpec(
        name="volume_profile",
        description=(
            "Volume per price bucket of the day (1-2-5 bucket width, about 50 buckets) with the "
            "taker buy/sell split and the point of control (the bucket of largest volume)."
        ),
        inputs={"trades": InputSpec(TRADES)},
        columns=(
            DATE,
            SYMBOL,
            Column("price_low", F64, "Bucket lower edge, inclusive."),
            Column("price_high", F64, "Bucket upper edge, exclusive."),
            Column("volume", F64, "Base volume traded in the bucket."),
            Column("taker_buy_volume", F64, "Of which bought by takers."),
            Column("taker_sell_volume", F64, "Of which sold by takers."),
            Column("trade_count", I64, "Aggregate trades in the bucket."),
            _c("volume_share", F64, "Share of the day's volume."),
            Column("is_poc", BOOL, "Point of control: the bucket with the most volume."),
        ),
        lineage=_from("trades", ("price_low", "price_high", "is_poc"), ("price",))
        | _from(
            "trades",
            ("volume", "volume_share", "taker_buy_volume", "taker_sell_volume"),
            ("price", "quantity", "is_buyer_maker"),
        )
        | _from("trades", ("trade_count",), ("price",)),
        time_column="date",
        compute=compute.volume_profile_table,
        chart=_bars(
            "price_low",
            "volume",
            "volume profile (volume per price bucket)",
            "volume ({base})",
            "price bucket low ({quote})",
            h=True,
        ),
    ),
    AnalyticSpec(
        name="trade_sizes",
        description=(
            "Trade-size distribution of the day: aggregate trades per notional bucket with "
            "decade edges (10, 100, ... 1,000,000 quote units), counts, volumes and shares."
        ),
        inputs={"trades": InputSpec(TRADES)},
        columns=(
            DATE,
            SYMBOL,
            Column("notional_low", F64, "Bucket lower edge in quote units, inclusive."),
            Column("notional_high", F64, "Bucket upper edge, exclusive (inf for the last)."),
            Column("trade_count", I64, "Aggregate trades in the bucket."),
            Column("volume", F64, "Base volume of those trades."),
            Column("quote_volume", F64, "Quote volume of those trades."),
            _c("count_share", F64, "Share of the day's trades."),
            _c("quote_share", F64, "Share of the day's quote volume."),
        ),
        lineage=_from(
            "trades",
            (
                "notional_low",
                "notional_high",
                "trade_count",
                "volume",
                "quote_volume",
                "count_share",
                "quote_share",
            ),
            ("price", "quantity"),
        ),
        time_column="date",
        compute=compute.trade_sizes_table,
        chart=_bars(
            "notional_low",
            "quote_share",
            "share of quote volume by trade size",
            "share of quote volume (%)",
            "trade notional from ({quote})",
            scale=100.0,
        ),
    ),
    AnalyticSpec(
        name="liquidity",
        description=(
            "Per minute: quoted spread in bps, resting depth within +-N bps of mid on each side, "
            "depth and top-of-book imbalance (from 1 s book snapshots), and Amihud illiquidity "
            "|R| per million quote volume (from 1m candles)."
        ),
        inputs={"depth": InputSpec(DEPTH), "candles": InputSpec(CANDLES)},
        columns=(
            DATE,
            SYMBOL,
            Column("bucket_start", TS, "Minute start (UTC)."),
            _c("mid", F64, "Last mid price of the minute."),
            _c("spread_bps", F64, "Mean quoted spread (ask - bid) / mid, bps."),
            _c("bid_depth", F64, "Mean bid quantity within band_bps below mid."),
            _c("ask_depth", F64, "Mean ask quantity within band_bps above mid."),
            _c("depth_imbalance", F64, "Mean (bid_depth - ask_depth) / (bid_depth + ask_depth)."),
            _c("top_imbalance", F64, "Mean level-0 size imbalance."),
            Column("snapshots", I64, "Book snapshots in the minute (always >= 1)."),
            Column("band_bps", F64, "Half-width N of the depth band, bps."),
            _c("amihud", F64, "|simple return| / quote volume x 1e6 for the minute."),
        ),
        lineage=_from("depth", ("mid", "spread_bps"), _BEST)
        | _from("depth", ("top_imbalance",), _LEVELS)
        | _from("depth", ("bid_depth", "ask_depth", "depth_imbalance"), _BOOK)
        | _from("depth", ("snapshots",), ("snapshot_time",))
        | _from("candles", ("amihud",), ("close", "quote_volume"))
        | {"bucket_start": (("depth", "snapshot_time"), ("candles", "open_time"))},
        time_column="bucket_start",
        compute=compute.liquidity_table,
        required=("depth",),
        chart=_line(
            "bucket_start",
            ("spread_bps",),
            "quoted spread per minute",
            "quoted spread (bps)",
            "bps",
        ),
    ),
    AnalyticSpec(
        name="liquidity_heatmap",
        description=(
            "Heatmap of resting liquidity: mean resting quantity per 5-minute bucket, price "
            "bucket and side over the day's book snapshots (seed 002's price buckets)."
        ),
        inputs={"depth": InputSpec(DEPTH)},
        columns=(
            DATE,
            SYMBOL,
            Column("bucket_start", TS, "Time bucket start (UTC)."),
            Column("price_low", F64, "Price bucket lower edge, inclusive."),
            Column("price_high", F64, "Price bucket upper edge, exclusive."),
            Column("side", STR, "bid or ask."),
            Column("quantity", F64, "Mean resting base quantity per snapshot."),
        ),
        lineage=_from("depth", ("bucket_start",), ("snapshot_time",))
        | _from("depth", ("price_low", "price_high", "side"), _BEST)
        | _from("depth", ("quantity",), ("bid_quantity", "ask_quantity", "snapshot_time")),
        time_column="bucket_start",
        compute=compute.heatmap_table,
        chart=_heat("bucket_start", "price_low", "quantity", "resting liquidity heatmap"),
    ),
    AnalyticSpec(
        name="trend",
        description=(
            "Per 1m bar: simple and exponential moving averages and their slopes (bps per bar), "
            "OLS regression slope and R^2, and Wilder's +DI, -DI and ADX; the previous day "
            "warms the windows up."
        ),
        inputs={"candles": InputSpec(CANDLES, WARMUP_DAYS)},
        columns=(
            DATE,
            SYMBOL,
            Column("open_time", TS, "Bar start (UTC)."),
            Column("close", F64, "Bar close."),
            _c("sma_fast", F64, "SMA over sma_fast bars."),
            _c("sma_slow", F64, "SMA over sma_slow bars."),
            _c("ema_fast", F64, "EMA, alpha = 2 / (sma_fast + 1)."),
            _c("sma_fast_slope_bps", F64, "Change of sma_fast per bar, bps."),
            _c("sma_slow_slope_bps", F64, "Change of sma_slow per bar, bps."),
            _c("regression_slope_bps", F64, "OLS slope over regression_window bars, bps/bar."),
            _c("regression_r2", F64, "R^2 of that regression."),
            _c("plus_di", F64, "Wilder +DI."),
            _c("minus_di", F64, "Wilder -DI."),
            _c("adx", F64, "Wilder ADX."),
        ),
        lineage=_same("candles", "open_time", "close")
        | _from(
            "candles",
            (
                "sma_fast",
                "sma_slow",
                "ema_fast",
                "sma_fast_slope_bps",
                "sma_slow_slope_bps",
                "regression_slope_bps",
                "regression_r2",
            ),
            ("close",),
        )
        | _from("candles", ("plus_di", "minus_di", "adx"), ("high", "low", "close")),
        time_column="open_time",
        compute=compute.trend_table,
        chart=_line(
            "open_time",
            ("close", "sma_fast", "sma_slow"),
            "1m close and moving averages",
            "price ({quote})",
            "{quote}",
        ),
    ),
    AnalyticSpec(
        name="deviation",
        description=(
            "Per 1m bar: z-score of the close against its rolling mean and Bollinger bands with "
            "%b (population standard deviation, so %b = 0.5 + z / 2k for equal windows)."
        ),
        inputs={"candles": InputSpec(CANDLES, WARMUP_DAYS)},
        columns=(
            DATE,
            SYMBOL,
            Column("open_time", TS, "Bar start (UTC)."),
            Column("close", F64, "Bar close."),
            _c("zscore", F64, "(close - mean) / sd over zscore_window bars."),
            _c("bb_mid", F64, "Bollinger middle band (SMA)."),
            _c("bb_upper", F64, "Middle + k sd."),
            _c("bb_lower", F64, "Middle - k sd."),
            _c("percent_b", F64, "(close - lower) / (upper - lower)."),
        ),
        lineage=_same("candles", "open_time", "close")
        | _from("candles", ("zscore", "bb_mid", "bb_upper", "bb_lower", "percent_b"), ("close",)),
        time_column="open_time",
        compute=compute.deviation_table,
        chart=_line(
            "open_time",
            ("zscore",),
            "z-score of the 1m close",
            "z-score (standard deviations)",
            "sd",
        ),
    ),
    AnalyticSpec(
        name="seasonality",
        description=(
            "Hour-of-day (UTC) and day-of-week profiles of mean 1m return, mean volume and "
            f"annualised volatility over the trailing {SEASONALITY_WINDOW_DAYS} days."
        ),
        inputs={"candles": InputSpec(CANDLES, SEASONALITY_WINDOW_DAYS)},
        columns=(
            DATE,
            SYMBOL,
            Column("profile", STR, "hour_of_day or day_of_week."),
            Column("bucket", I64, "Hour 0-23 or weekday 0 (Monday) - 6."),
            _c("mean_return_bps", F64, "Mean 1m log return, bps."),
            _c("mean_volume", F64, "Mean base volume per 1m bar."),
            _c("volatility", F64, "sqrt(mean r^2 x bars per year)."),
            Column("bars", I64, "Bars in the bucket."),
        ),
        lineage=_from("candles", ("profile", "bucket", "bars"), ("open_time",))
        | _from("candles", ("mean_return_bps", "volatility"), ("close", "open_time"))
        | _from("candles", ("mean_volume",), ("volume", "open_time")),
        time_column="date",
        compute=compute.seasonality_table,
        chart=_bars(
            "bucket",
            "volatility",
            f"annualised volatility by hour of day ({SEASONALITY_WINDOW_DAYS} days)",
            "annualised volatility (%)",
            "hour of day (UTC)",
            lambda f: f[f["profile"] == "hour_of_day"] if len(f) else f,
            scale=100.0,
        ),
    ),
    AnalyticSpec(
        name="funding",
        description=(
            "Per settlement of the day: funding rate, simple annualised rate (365-day year) and "
            f"the cumulative cost of a long of notional 1 over the trailing {FUNDING_WINDOW_DAYS} "
            "days, simple and compounded."
        ),
        inputs={"funding": InputSpec(FUNDING, FUNDING_WINDOW_DAYS)},
        columns=(
            DATE,
            SYMBOL,
            Column("funding_time", TS, "Settlement time (UTC)."),
            Column("funding_rate", F64, "Rate paid by longs to shorts."),
            Column("interval_hours", F64, "Settlement interval inferred from the window."),
            Column("annualised_rate", F64, "rate x 365 x 24 / interval_hours."),
            Column("cumulative_rate", F64, "Sum of rates since the window start."),
            Column("cumulative_compounded", F64, "prod(1 + rate) - 1 since the window start."),
        ),
        lineage=_same("funding", "funding_time", "funding_rate")
        | _from("funding", ("interval_hours",), ("funding_time",))
        | _from(
            "funding",
            ("annualised_rate", "cumulative_rate", "cumulative_compounded"),
            ("funding_rate", "funding_time"),
        ),
        time_column="funding_time",
        compute=compute.funding_table,
        chart=_line(
            "funding_time",
            ("cumulative_rate",),
            f"cumulative funding paid by a long ({FUNDING_WINDOW_DAYS}-day window)",
            "cumulative funding rate (%)",
            "%",
            scale=100.0,
        ),
    ),
)

_PAIR_COLUMNS = (
    DATE,
    Column("symbol_a", STR, "First symbol of the pair (alphabetical)."),
    Column("symbol_b", STR, "Second symbol of the pair."),
    _c("correlation", F64, "Pearson correlation of 1m log returns on common minutes."),
    Column("n", I64, "Common minutes."),
    Column("sum_x", F64, "Sum of symbol_a returns (pools into rolling correlations)."),
    Column("sum_y", F64, "Sum of symbol_b returns."),
    Column("sum_xx", F64, "Sum of squared symbol_a returns."),
    Column("sum_yy", F64, "Sum of squared symbol_b returns."),
    Column("sum_xy", F64, "Sum of return products."),
)


def _corr_matrix(what: str) -> ChartFn:
    def chart(frame: pd.DataFrame, ctx: charts.ChartContext) -> dict:
        if frame.empty:
            note = "no symbol pair with common minutes (needs two or more symbols)"
            return {"summary": charts.summary(f"{ctx.label}: {what}", [note])}
        title = f"{ctx.label}: {what}"
        md = charts.correlation_chart(correlation.matrix(frame), title)
        facts = [
            f"{a}/{b} {rho:.2f} (n={n:,})"
            for a, b, rho, n in frame[["symbol_a", "symbol_b", "correlation", "n"]].itertuples(
                index=False
            )
        ]
        return _entries(ctx, what, md, facts)

    return chart


CROSS_SPECS: tuple[AnalyticSpec, ...] = (
    AnalyticSpec(
        name="correlation",
        description=(
            "Cross-symbol correlation matrix of the day's 1m log returns (one row per pair), "
            "with the sufficient statistics that pool exactly into rolling correlations."
        ),
        inputs={"candles": InputSpec(CANDLES, all_symbols=True)},
        columns=_PAIR_COLUMNS,
        lineage=_from("candles", ("symbol_a", "symbol_b"), ("symbol",))
        | _from(
            "candles",
            ("correlation", "n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"),
            ("close", "open_time", "symbol"),
        ),
        time_column="date",
        compute=compute.correlation_table,
        chart=_corr_matrix("correlation of 1m log returns"),
        per_symbol=False,
    ),
    AnalyticSpec(
        name="correlation_rolling",
        description=(
            f"Cross-symbol return correlation over the trailing {CORRELATION_WINDOW_DAYS} days, "
            "pooled exactly from the daily sufficient statistics."
        ),
        inputs={"correlation": InputSpec(("analytics", "correlation"), CORRELATION_WINDOW_DAYS)},
        columns=(*_PAIR_COLUMNS, Column("days", I64, "Days of the window with data.")),
        lineage={c.name: (("correlation", c.name),) for c in _PAIR_COLUMNS[1:]}
        | {"days": (("correlation", "date"),)},
        time_column="date",
        compute=compute.correlation_rolling_table,
        chart=_corr_matrix(f"correlation of 1m log returns, {CORRELATION_WINDOW_DAYS} days"),
        per_symbol=False,
    ),
)

ALL_SPECS = SPECS + CROSS_SPECS
