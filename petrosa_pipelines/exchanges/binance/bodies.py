"""Binance USD-M REST bodies -> validated columns, records and lake frames (pure, no I/O).

Shapes per https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api
(klines arrays, aggTrades objects, fundingRate, depth, exchangeInfo). ``build_frame`` is shared
with the Vision archive client, whose CSVs carry the same columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    ExchangeInfo,
    MessageError,
    RateLimit,
    SymbolInfo,
)

EXCHANGE = "binance"


# ---------------------------------------------------------------------------------------------
# Frame helpers shared with the Vision archive client.
# ---------------------------------------------------------------------------------------------


def decimals_to_float64(values: Sequence[Any], field: str, *, nullable: bool = False) -> np.ndarray:
    """Decimal strings -> float64, correctly rounded by Arrow's parser.

    Binance sends every price and quantity as a string; anything else (and None unless
    ``nullable``) is malformed and raises ``MessageError`` naming ``field`` and the first bad row.
    """
    if not nullable and None in values:
        bad = list(values).index(None)
        raise MessageError(f"row {bad}: missing value", field=field)
    try:
        arr = pa.array(values, type=pa.string())
        out = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        out = None
    bad = None
    if out is None:
        bad = next((i for i, v in enumerate(values) if not _is_decimal_string(v)), 0)
    else:
        nonfinite = ~np.isfinite(out) & ~pd.isna(pd.Series(values, dtype=object)).to_numpy()
        if nonfinite.any():
            bad = int(np.flatnonzero(nonfinite)[0])
    if bad is not None:
        raise MessageError(f"row {bad}: not a decimal string: {values[bad]!r}", field=field)
    return out


def _is_decimal_string(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def ms_to_timestamps(values: Sequence[int | None] | np.ndarray) -> pd.Series:
    """Integer ms (None allowed) -> UTC ``datetime64[ms]`` series."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        # a view as ms (int64's minimum is NaT), not a trip through nanoseconds
        return pd.Series(values.view("datetime64[ms]"), copy=False).dt.tz_localize("UTC")
    arr = pd.array(list(values) if not isinstance(values, np.ndarray) else values, dtype="Int64")
    return pd.Series(pd.to_datetime(arr, unit="ms", utc=True)).astype("datetime64[ms, UTC]")


def build_frame(columns: Mapping[str, Any], schema: schemas.DatasetSchema) -> pd.DataFrame:
    """A conformed lake frame from column arrays (scalars are broadcast); timestamp columns
    are given as integer ms."""
    n = max((len(v) for v in columns.values() if _is_column(v)), default=0)
    out: dict[str, Any] = {}
    for col in schema.columns:
        if col.derived and col.name not in columns:
            continue  # ``conform`` derives it (trades' ``trade_id``: the aggregate id's text)
        values = columns[col.name]
        if isinstance(values, str) and col.type == pa.string():
            values = constant_text(values, n)  # one value for every row: arrow, not objects
        elif values is None and col.type == schemas.TS:
            # NaT in every row, allocated once (not an int64 array, then its UTC copy)
            values = pd.Series(pd.NaT, index=pd.RangeIndex(n), dtype="datetime64[ms, UTC]")
        else:
            if not _is_column(values):
                values = [values] * n
            if col.type == schemas.TS:
                values = ms_to_timestamps(values)
        out[col.name] = values
    return schemas.conform(pd.DataFrame(out, copy=False), schema)


def constant_text(value: str, n: int) -> pd.arrays.ArrowStringArray:
    """``n`` rows of ``value`` as arrow text (``string`` dtype): every chunk is the same block
    of ``value``s, so a column of 10 M exchange names holds one block, not 10 M strings."""
    return pd.arrays.ArrowStringArray(schemas.constant_chunks(value, n))


def _is_column(values: Any) -> bool:
    return isinstance(values, list | tuple | np.ndarray | pd.Series)


def _int(value: Any, field: str, row: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"row {row}: expected an integer, got {value!r}", field=field)
    return value


def _decimal(value: Any, field: str) -> Decimal:
    if not isinstance(value, str):
        raise MessageError(f"expected a decimal string, got {value!r}", field=field)
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise MessageError(f"not a decimal: {value!r}", field=field) from None
    if not out.is_finite():
        raise MessageError(f"not a finite decimal: {value!r}", field=field)
    return out


def _field(obj: Any, key: str, field: str) -> Any:
    if not isinstance(obj, dict):
        raise MessageError(f"expected an object, got {type(obj).__name__}", field=field)
    try:
        return obj[key]
    except KeyError:
        raise MessageError("missing", field=field) from None


def _list(body: Any, field: str) -> list[Any]:
    if not isinstance(body, list):
        raise MessageError(f"expected a JSON array, got {type(body).__name__}", field=field)
    return body


#: the columns of a Binance kline row, in order (REST arrays and Vision CSV alike)
KLINE_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
KLINE_DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume")
KLINE_DECIMALS += ("taker_buy_quote_volume",)


def parse_klines(body: Any) -> dict[str, list[Any]]:
    """REST kline rows (12-element arrays) -> columns of raw values, validated."""
    rows = _list(body, "klines")
    cols: dict[str, list[Any]] = {f: [] for f in KLINE_FIELDS}
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < len(KLINE_FIELDS):
            raise MessageError(f"row {i}: expected a 12-field array, got {row!r}", field="klines")
        for name, value in zip(KLINE_FIELDS, row, strict=False):
            if name in ("open_time", "close_time", "trade_count"):
                value = _int(value, name, i)
            cols[name].append(value)
    return cols


_AGG_FIELDS = (("a", "agg_trade_id"), ("f", "first_trade_id"), ("l", "last_trade_id"))


def parse_agg_trades(body: Any) -> dict[str, list[Any]]:
    """REST aggTrades objects -> columns of raw values, validated."""
    rows = _list(body, "aggTrades")
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "agg_trade_id",
            "price",
            "quantity",
            "first_trade_id",
            "last_trade_id",
            "trade_time",
            "is_buyer_maker",
        )
    }
    for i, row in enumerate(rows):
        for key, name in _AGG_FIELDS:
            cols[name].append(_int(_field(row, key, key), key, i))
        cols["trade_time"].append(_int(_field(row, "T", "T"), "T", i))
        cols["price"].append(_field(row, "p", "p"))
        cols["quantity"].append(_field(row, "q", "q"))
        maker = _field(row, "m", "m")
        if not isinstance(maker, bool):
            raise MessageError(f"row {i}: expected a boolean, got {maker!r}", field="m")
        cols["is_buyer_maker"].append(maker)
    return cols


def parse_funding(body: Any) -> dict[str, list[Any]]:
    """REST fundingRate objects -> columns; ``markPrice`` "" or absent -> None."""
    rows = _list(body, "fundingRate")
    cols: dict[str, list[Any]] = {"funding_time": [], "funding_rate": [], "mark_price": []}
    for i, row in enumerate(rows):
        cols["funding_time"].append(
            _int(_field(row, "fundingTime", "fundingTime"), "fundingTime", i)
        )
        cols["funding_rate"].append(_field(row, "fundingRate", "fundingRate"))
        mark = row.get("markPrice")
        cols["mark_price"].append(None if mark in ("", None) else mark)
    return cols


def parse_depth(body: Any, symbol: str, received_at: int | None = None) -> DepthSnapshotRecord:
    """A ``/fapi/v1/depth`` body -> ``DepthSnapshotRecord`` with exact Decimals."""

    def side(name: str) -> tuple[tuple[Decimal, Decimal], ...]:
        levels = _field(body, name, name)
        if not isinstance(levels, list):
            raise MessageError("expected an array of [price, qty]", field=name)
        out = []
        for i, level in enumerate(levels):
            if not isinstance(level, list) or len(level) < 2:
                raise MessageError(f"level {i}: expected [price, qty], got {level!r}", field=name)
            out.append(
                (_decimal(level[0], f"{name}[{i}].price"), _decimal(level[1], f"{name}[{i}].qty"))
            )
        return tuple(out)

    last_update_id = _field(body, "lastUpdateId", "lastUpdateId")
    event_time = body.get("E")
    transaction_time = body.get("T")
    return DepthSnapshotRecord(
        exchange=EXCHANGE,
        symbol=symbol,
        last_update_id=_int(last_update_id, "lastUpdateId", 0),
        event_time=None if event_time is None else _int(event_time, "E", 0),
        transaction_time=None if transaction_time is None else _int(transaction_time, "T", 0),
        bids=side("bids"),
        asks=side("asks"),
        received_at=received_at,
    )


def _filters(sym: dict[str, Any]) -> dict[str, dict[str, Any]]:
    filters = sym.get("filters", [])
    if not isinstance(filters, list):
        raise MessageError("expected an array", field="filters")
    return {f.get("filterType"): f for f in filters if isinstance(f, dict)}


def parse_exchange_info(body: Any) -> ExchangeInfo:
    """``/fapi/v1/exchangeInfo`` -> ExchangeInfo (all symbols; ``perpetual_symbols()`` filters)."""
    symbols = []
    for raw in _list(_field(body, "symbols", "symbols"), "symbols"):
        filters = _filters(raw)
        price_filter = filters.get("PRICE_FILTER")
        lot_size = filters.get("LOT_SIZE")
        if price_filter is None or lot_size is None:
            raise MessageError(
                f"{raw.get('symbol')}: missing PRICE_FILTER or LOT_SIZE", field="filters"
            )
        onboard = raw.get("onboardDate")
        symbols.append(
            SymbolInfo(
                symbol=_field(raw, "symbol", "symbol"),
                base_asset=_field(raw, "baseAsset", "baseAsset"),
                quote_asset=_field(raw, "quoteAsset", "quoteAsset"),
                contract_type=_field(raw, "contractType", "contractType"),
                status=_field(raw, "status", "status"),
                tick_size=_decimal(_field(price_filter, "tickSize", "tickSize"), "tickSize"),
                step_size=_decimal(_field(lot_size, "stepSize", "stepSize"), "stepSize"),
                onboard_time=onboard if isinstance(onboard, int) else None,
            )
        )
    limits = []
    for raw in _list(body.get("rateLimits", []), "rateLimits"):
        limits.append(
            RateLimit(
                kind=_field(raw, "rateLimitType", "rateLimitType"),
                interval=_field(raw, "interval", "interval"),
                interval_num=_int(_field(raw, "intervalNum", "intervalNum"), "intervalNum", 0),
                limit=_int(_field(raw, "limit", "limit"), "limit", 0),
            )
        )
    server_time = body.get("serverTime")
    return ExchangeInfo(
        server_time=server_time if isinstance(server_time, int) else None,
        symbols=tuple(symbols),
        rate_limits=tuple(limits),
    )


def parse_server_time(body: Any) -> int:
    """``/fapi/v1/time`` -> the exchange's clock in ms."""
    return _int(_field(body, "serverTime", "serverTime"), "serverTime", 0)


def frame_from(
    cols: dict[str, list[Any]],
    decimals: Sequence[str],
    schema: schemas.DatasetSchema,
    extra: Mapping[str, Any],
) -> pd.DataFrame:
    data: dict[str, Any] = dict(cols)
    nullable = {c.name for c in schema.columns if c.nullable}
    for name in decimals:
        data[name] = decimals_to_float64(cols[name], name, nullable=name in nullable)
    data.update(extra)
    return build_frame(data, schema)


def concat_pages(
    parts: list[pd.DataFrame], schema: schemas.DatasetSchema, key: tuple[str, ...]
) -> pd.DataFrame:
    """Pages -> one frame, sorted by ``key`` with duplicates (page overlaps) removed."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return schema.empty_frame()
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.drop_duplicates(subset=list(key), keep="first").sort_values(list(key))
    return schemas.conform(frame, schema)
