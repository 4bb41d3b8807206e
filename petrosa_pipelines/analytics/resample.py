"""Multi-timeframe candles: 1s/5s/15s/30s from trades, 5m/15m/1h/4h/1d from 1m candles.

Why here and not in the collector (seeds 001/003 aggregate on the fly): a candle built from a
closed partition can be rebuilt identically, and the rules are explicit:

* Intervals are aligned to the UTC epoch, as Binance aligns its klines (4h at 00/04/08... UTC,
  1d at 00:00 UTC). ``open_time`` is the inclusive start and ``close_time`` is
  ``open_time + interval - 1 ms``, Binance's own convention.
* OHLCV follows the exchange: open = first open (or first trade), high = max, low = min,
  close = last close, volumes and trade counts are sums. Sums are decimal-exact
  (``_exact.group_sum``), so 1m -> 1h reproduces Binance's 1h kline exactly.
* No look-ahead: an interval is *complete* only when all of it is known - every 1m candle is
  present and, if ``as_of`` is given, the interval ended before it; from trades, only when a
  trade at or after its end has been seen (the stream is time-ordered) or ``as_of`` passed its
  end. Incomplete intervals are dropped unless ``include_partial=True``, which keeps them with
  ``is_complete=False``.
* Seconds without trades get a flat zero-volume candle at the previous close, as Binance
  prints maintenance minutes (flat, zero volume, zero trades) rather than leaving holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics._exact import ExactColumn, blocked_group_sum

#: every interval this module builds; 1m and longer are Binance's kline intervals up to 1d
#: (https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data)
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "5s": 5_000,
    "15s": 15_000,
    "30s": 30_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
_DAY_MS = 86_400_000
TRADE_INTERVALS = ("1s", "5s", "15s", "30s")
CANDLE_INTERVALS = ("5m", "15m", "1h", "4h", "1d")

CANDLE_COLUMNS = [
    "exchange",
    "symbol",
    "interval",
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "source_rows",
    "is_complete",
]
_SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def interval_ms(interval: str) -> int:
    """Length of a named interval in milliseconds."""
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; known: {list(INTERVAL_MS)}") from None


def _ms(series: pd.Series) -> np.ndarray:
    return series.astype("datetime64[ms, UTC]").to_numpy(dtype="datetime64[ms]").view("int64")


def _as_of_ms(as_of: pd.Timestamp | None) -> int | None:
    return None if as_of is None else int(pd.Timestamp(as_of).as_unit("ms").value // 1_000_000)


def _run_starts(buckets: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.flatnonzero(np.diff(buckets)) + 1]).astype("int64")


def _frame(
    exchange: str, symbol: str, interval: str, opens_ms: np.ndarray, cols: dict
) -> pd.DataFrame:
    step = interval_ms(interval)
    open_time = pd.to_datetime(opens_ms, unit="ms", utc=True).astype("datetime64[ms, UTC]")
    close_time = pd.to_datetime(opens_ms + step - 1, unit="ms", utc=True).astype(
        "datetime64[ms, UTC]"
    )
    out = pd.DataFrame(
        {
            "exchange": pd.Series([exchange] * len(opens_ms), dtype="string"),
            "symbol": pd.Series([symbol] * len(opens_ms), dtype="string"),
            "interval": pd.Series([interval] * len(opens_ms), dtype="string"),
            "open_time": open_time,
            "close_time": close_time,
            **cols,
        }
    )
    out["trade_count"] = out["trade_count"].astype("int64")
    out["source_rows"] = out["source_rows"].astype("int64")
    out["is_complete"] = out["is_complete"].astype("bool")
    return out[CANDLE_COLUMNS].reset_index(drop=True)


def _ident(frame: pd.DataFrame, column: str, default: str) -> str:
    if column in frame.columns and len(frame):
        return str(frame[column].iloc[0])
    return default


def empty_candles() -> pd.DataFrame:
    """A frame with the multi-timeframe candle columns and no rows."""
    cols = {c: np.array([], dtype="float64") for c in ("open", "high", "low", "close", *_SUMS)}
    cols.update(trade_count=np.array([], "int64"), source_rows=np.array([], "int64"))
    cols["is_complete"] = np.array([], "bool")
    return _frame("", "", "1m", np.array([], "int64"), cols)


@dataclass(frozen=True)
class TradeArrays:
    """Trades sorted by time with their sums pre-scaled: built once, bucketed per interval."""

    ts: np.ndarray
    price: np.ndarray
    counts: np.ndarray
    sums: dict[str, ExactColumn]
    exchange: str
    symbol: str

    @classmethod
    def of(cls, trades: pd.DataFrame) -> TradeArrays:
        # the lake's row order (catalog TRADES.sort_columns): time, then the numeric id, then the
        # venue's own id, so two sources of one Bybit millisecond order the same way
        order = [c for c in ("trade_time", "agg_trade_id", "trade_id") if c in trades.columns]
        t = trades.sort_values(order, kind="stable")
        price = t["price"].to_numpy("float64")
        qty = ExactColumn.of(t["quantity"].to_numpy("float64"))
        quote = ExactColumn.product(ExactColumn.of(price), qty)
        buy = ~t["is_buyer_maker"].to_numpy("bool")
        if {"first_trade_id", "last_trade_id"} <= set(t.columns):
            counts = (t["last_trade_id"] - t["first_trade_id"] + 1).to_numpy("int64")
        else:
            counts = np.ones(len(t), dtype="int64")
        sums = {
            "volume": qty,
            "quote_volume": quote,
            "taker_buy_volume": qty.where(buy),
            "taker_buy_quote_volume": quote.where(buy),
        }
        return cls(
            _ms(t["trade_time"]),
            price,
            counts,
            sums,
            _ident(t, "exchange", ""),
            _ident(t, "symbol", ""),
        )


def candles_from_trades(
    trades: pd.DataFrame | TradeArrays,
    interval: str,
    *,
    as_of: pd.Timestamp | None = None,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Candles of ``interval`` (1s..30s) from aggregate trades.

    ``trade_count`` counts underlying trades (``last_trade_id - first_trade_id + 1``), as a
    Binance kline does. ``as_of`` is the time up to which the trade stream is known complete
    (e.g. the end of a closed day); without it, only intervals ending at or before the last
    trade seen are complete. Pass ``TradeArrays.of(trades)`` to build several intervals.
    """
    step = interval_ms(interval)
    arrays = trades if isinstance(trades, TradeArrays) else None
    if arrays is None:
        if trades.empty:
            return empty_candles()
        arrays = TradeArrays.of(trades)
    ts, price = arrays.ts, arrays.price
    buckets = ts // step * step
    starts = _run_starts(buckets)
    ends = np.append(starts[1:], len(ts)) - 1
    cols = {
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[ends],
        **{name: col.group_sum(starts) for name, col in arrays.sums.items()},
        "trade_count": np.add.reduceat(arrays.counts, starts),
        "source_rows": np.diff(np.append(starts, len(ts))),
    }
    known_until = _as_of_ms(as_of)
    if known_until is None:
        known_until = int(ts[-1])
    last_open = max(int(buckets[-1]), (known_until - step) // step * step)
    grid = np.arange(int(buckets[0]), last_open + 1, step, dtype="int64")
    filled = _fill_empty(pd.DataFrame(cols, index=buckets[starts]), grid)
    filled["is_complete"] = grid + step <= known_until
    if not include_partial:
        filled = filled[filled["is_complete"].to_numpy()]
    return _frame(
        arrays.exchange,
        arrays.symbol,
        interval,
        filled.index.to_numpy("int64"),
        {c: filled[c].to_numpy() for c in filled.columns},
    )


def _fill_empty(frame: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    """Empty intervals become flat zero-volume candles at the previous close."""
    out = frame.reindex(grid)
    prev_close = out["close"].ffill()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col].fillna(prev_close)
    for col in (*_SUMS, "trade_count", "source_rows"):
        out[col] = out[col].fillna(0)
    return out


def resample_candles(
    candles: pd.DataFrame,
    interval: str,
    *,
    as_of: pd.Timestamp | None = None,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Candles of a longer ``interval`` (3m..1d) from 1m candles of one symbol, one day or many.

    Sums are decimal-exact per UTC day, so a range of days gives each day's bars bit for bit as
    that day alone does (``analytics/candles_from_1m`` works per day, ``api.load_candles`` on
    ranges). Complete means all ``interval / 1m`` candles are present (and, with ``as_of``,
    that the interval ended by then). A day with a missing minute yields a partial 1h and a
    partial 1d, never a silently short one.
    """
    step = interval_ms(interval)
    base = INTERVAL_MS["1m"]
    if step % base:
        raise ValueError(f"{interval} is not a multiple of 1m")
    if candles.empty:
        return empty_candles()
    c = candles.sort_values("open_time", kind="stable").drop_duplicates("open_time")
    opens = _ms(c["open_time"])
    buckets = opens // step * step
    starts = _run_starts(buckets)
    ends = np.append(starts[1:], len(c)) - 1
    # sums per UTC day (every interval here divides a day): a range of days resamples to
    # exactly what each day's partition does
    days = _run_starts(opens // _DAY_MS) if _DAY_MS % step == 0 else np.zeros(1, "int64")
    high = c["high"].to_numpy("float64")
    low = c["low"].to_numpy("float64")
    n = np.diff(np.append(starts, len(c)))
    cols = {
        "open": c["open"].to_numpy("float64")[starts],
        "high": np.maximum.reduceat(high, starts),
        "low": np.minimum.reduceat(low, starts),
        "close": c["close"].to_numpy("float64")[ends],
        **{s: blocked_group_sum(c[s].to_numpy("float64"), starts, days) for s in _SUMS},
        "trade_count": np.add.reduceat(c["trade_count"].to_numpy("int64"), starts),
        "source_rows": n,
    }
    complete = n == step // base
    known_until = _as_of_ms(as_of)
    if known_until is not None:
        complete &= buckets[starts] + step <= known_until
    cols["is_complete"] = complete
    keep = np.ones(len(starts), bool) if include_partial else complete
    return _frame(
        _ident(c, "exchange", ""),
        _ident(c, "symbol", ""),
        interval,
        buckets[starts][keep],
        {k: np.asarray(v)[keep] for k, v in cols.items()},
    )


def multi_timeframe(
    frame: pd.DataFrame,
    intervals: tuple[str, ...],
    *,
    from_trades: bool,
    as_of: pd.Timestamp | None = None,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Several intervals stacked in one long frame (one ``interval`` value per block)."""
    if frame.empty:
        return empty_candles()
    build = candles_from_trades if from_trades else resample_candles
    source = TradeArrays.of(frame) if from_trades else frame
    parts = [build(source, i, as_of=as_of, include_partial=include_partial) for i in intervals]
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_candles()
    return pd.concat(parts, ignore_index=True)
