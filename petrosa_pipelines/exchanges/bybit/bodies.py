"""Bybit v5 REST bodies -> records: pure parsers, a malformed body raises ``MessageError``
naming the field (``result.list[3][2]``).

Shapes per https://bybit-exchange.github.io/docs/v5/market/kline (and ``recent-trade``,
``orderbook``, ``history-fund-rate``, ``instrument``): every body is
``{"retCode", "retMsg", "result", "retExtInfo", "time"}``; times and ids come as decimal
strings; kline and funding lists are newest first (returned here oldest first).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    FundingRecord,
    MessageError,
    Source,
    SymbolInfo,
    TradeRecord,
)
from petrosa_pipelines.exchanges.bybit.schemas import EXCHANGE, MAX_TIME_MS, TRADES_PER_SEQ
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS

INTERVAL_MS = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": 24 * HOUR_MS,
    "1w": 168 * HOUR_MS,
    "1M": 31 * 24 * HOUR_MS,  # upper bound: a month counts as closed only 31 days after it opened
}


# ---------------------------------------------------------------------------------------------
# Body parsers (pure; a malformed body raises MessageError naming the field)
# ---------------------------------------------------------------------------------------------


def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(f"expected an object, got {type(value).__name__}", field=field)
    return value


def _get(obj: Any, key: str, field: str) -> Any:
    try:
        return _obj(obj, field.rpartition(".")[0] or "<message>")[key]
    except KeyError:
        raise MessageError("missing", field=field) from None


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise MessageError(f"expected an array, got {type(value).__name__}", field=field)
    return value


def _dec(value: Any, field: str, *, positive: bool = True) -> Decimal:
    if not isinstance(value, str):
        raise MessageError(f"expected a decimal string, got {value!r:.48}", field=field)
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise MessageError(f"not a decimal: {value[:48]!r}", field=field) from None
    if not out.is_finite() or out < 0 or (positive and out == 0):
        raise MessageError(f"not a plausible {'positive' if positive else ''} value", field=field)
    return out


def _ms(value: Any, field: str) -> int:
    """Times come as decimal strings (``"1670608800000"``) or integers."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 13:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME_MS:
        raise MessageError(f"not an epoch-ms time: {value!r:.48}", field=field)
    return value


def _id(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MessageError(f"not a non-negative integer: {value!r:.48}", field=field)
    return value


def result_of(body: Any) -> tuple[int, str, Any]:
    """(retCode, retMsg, result) of a v5 body."""
    code = _get(body, "retCode", "retCode")
    if isinstance(code, str) and code.lstrip("-").isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        raise MessageError(f"expected an integer, got {code!r:.48}", field="retCode")
    return code, str(body.get("retMsg", ""))[:200], body.get("result")


def parse_klines(
    result: Any, symbol: str, interval: str, server_now: int, received_at: int | None = None
) -> list[CandleRecord]:
    """A ``/v5/market/kline`` result -> candles, oldest first; closed once ``end < now``.

    Rows are ``[startTime, open, high, low, close, volume, turnover]`` strings, newest first.
    Bybit gives no trade count or taker-buy volumes: 0 (``schemas.UNSUPPLIED_CANDLE_FIELDS``).
    """
    rows = _list(_get(result, "list", "result.list"), "result.list")
    step = INTERVAL_MS[interval]
    out: list[CandleRecord] = []
    for n, row in enumerate(reversed(rows)):
        i = len(rows) - 1 - n
        f = f"result.list[{i}]"
        if not isinstance(row, list) or len(row) < 7:
            raise MessageError(f"expected a 7-field array, got {row!r:.80}", field=f)
        start = _ms(row[0], f + "[0]")
        o, h, lo, c = (_dec(row[k], f"{f}[{k}]") for k in (1, 2, 3, 4))
        volume = _dec(row[5], f + "[5]", positive=False)
        turnover = _dec(row[6], f + "[6]", positive=False)
        zero = Decimal(0)
        out.append(
            CandleRecord(
                EXCHANGE, symbol, interval, start, start + step - 1, o, h, lo, c, volume,
                turnover, 0, zero, zero, start + step <= server_now, None, str(Source.REST),
                received_at,
            )
        )  # fmt: skip
    return out


def parse_funding(result: Any, symbol: str, received_at: int | None = None) -> list[FundingRecord]:
    """A ``/v5/market/funding/history`` result -> settlements, oldest first (no mark price)."""
    rows = _list(_get(result, "list", "result.list"), "result.list")
    out = []
    for i in range(len(rows) - 1, -1, -1):
        row, f = rows[i], f"result.list[{i}]."
        rate_text = _get(row, "fundingRate", f + "fundingRate")
        try:
            rate = Decimal(rate_text)
        except (InvalidOperation, TypeError):
            raise MessageError(
                f"not a decimal: {rate_text!r:.48}", field=f + "fundingRate"
            ) from None
        if not (rate.is_finite() and -1 < rate < 1):
            raise MessageError(f"not a plausible rate: {rate_text!r:.48}", field=f + "fundingRate")
        when = _ms(
            _get(row, "fundingRateTimestamp", f + "fundingRateTimestamp"),
            f + "fundingRateTimestamp",
        )
        out.append(FundingRecord(EXCHANGE, symbol, when, rate, None, str(Source.REST), received_at))
    return out


def parse_recent_trades(
    result: Any, symbol: str, received_at: int | None = None
) -> list[TradeRecord]:
    """A ``/v5/market/recent-trade`` result -> trades, oldest first.

    ``agg_trade_id = seq * 1000 + index`` within the ``seq`` (the shared contract; rows come
    newest first, so fills of one ``seq`` are numbered in ascending order after reversing, as
    the websocket sends them); 0 where a row has no ``seq``. ``trade_id`` is ``execId``.
    """
    rows = _list(_get(result, "list", "result.list"), "result.list")
    out: list[TradeRecord] = []
    last_seq, index = None, 0
    for i in range(len(rows) - 1, -1, -1):
        row, f = rows[i], f"result.list[{i}]."
        seq_raw = _obj(row, f.rstrip(".")).get("seq")
        seq = None if seq_raw in (None, "") else _id(seq_raw, f + "seq")
        index = index + 1 if seq is not None and seq == last_seq else 0
        last_seq = seq
        agg = 0 if seq is None else seq * TRADES_PER_SEQ + index
        side = _get(row, "side", f + "side")
        if side not in ("Buy", "Sell"):
            raise MessageError(f"not a side: {side!r:.20}", field=f + "side")
        exec_id = _get(row, "execId", f + "execId")
        if not isinstance(exec_id, str) or not exec_id:
            raise MessageError("expected a non-empty string", field=f + "execId")
        out.append(
            TradeRecord(
                EXCHANGE, symbol, agg, _dec(_get(row, "price", f + "price"), f + "price"),
                _dec(_get(row, "size", f + "size"), f + "size"), agg, agg,
                _ms(_get(row, "time", f + "time"), f + "time"), side == "Sell", None,
                str(Source.REST), received_at, exec_id,
            )
        )  # fmt: skip
    return out


def parse_orderbook(
    result: Any, symbol: str, received_at: int | None = None
) -> DepthSnapshotRecord:
    """A ``/v5/market/orderbook`` result -> snapshot (``u`` is the websocket's ``u``)."""

    def side(name: str) -> tuple[tuple[Decimal, Decimal], ...]:
        levels = _list(_get(result, name, f"result.{name}"), f"result.{name}")
        out = []
        for i, lv in enumerate(levels):
            f = f"result.{name}[{i}]"
            if not isinstance(lv, list) or len(lv) < 2:
                raise MessageError(f"expected [price, size], got {lv!r:.60}", field=f)
            out.append((_dec(lv[0], f + "[0]"), _dec(lv[1], f + "[1]")))
        return tuple(out)

    s = _get(result, "s", "result.s")
    if s != symbol:
        raise MessageError(f"asked for {symbol!r}, got {s!r:.40}", field="result.s")
    cts = result.get("cts")
    return DepthSnapshotRecord(
        exchange=EXCHANGE,
        symbol=symbol,
        last_update_id=_id(_get(result, "u", "result.u"), "result.u"),
        event_time=_ms(_get(result, "ts", "result.ts"), "result.ts"),
        transaction_time=None if cts is None else _ms(cts, "result.cts"),
        bids=side("b"),
        asks=side("a"),
        received_at=received_at,
    )


def _filter(row: Any, prefix: str, name: str, key: str) -> Decimal:
    """``row[name][key]`` as a positive decimal (``priceFilter.tickSize``, ...)."""
    field = f"{prefix}{name}.{key}"
    return _dec(_get(_get(row, name, prefix + name), key, field), field)


_CONTRACT_TYPES = {"LinearPerpetual": "PERPETUAL", "LinearFutures": "DELIVERY"}


def parse_instruments(result: Any) -> tuple[list[SymbolInfo], str]:
    """One ``/v5/market/instruments-info`` page -> (symbols, next cursor or "").

    Normalised to the ``SymbolInfo`` vocabulary: ``LinearPerpetual`` -> ``PERPETUAL``,
    ``LinearFutures`` -> ``DELIVERY``, status upper-cased (``Trading`` -> ``TRADING``);
    ``fundingInterval`` (minutes, 0 for futures) -> ``funding_interval_ms``.
    """
    rows = _list(_get(result, "list", "result.list"), "result.list")
    out = []
    for i, row in enumerate(rows):
        f = f"result.list[{i}]."
        kind = _get(row, "contractType", f + "contractType")
        interval = row.get("fundingInterval") or 0
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise MessageError(f"not minutes: {interval!r:.20}", field=f + "fundingInterval")
        launch = row.get("launchTime")
        out.append(
            SymbolInfo(
                symbol=_get(row, "symbol", f + "symbol"),
                base_asset=_get(row, "baseCoin", f + "baseCoin"),
                quote_asset=_get(row, "quoteCoin", f + "quoteCoin"),
                contract_type=_CONTRACT_TYPES.get(kind, str(kind).upper()),
                status=str(_get(row, "status", f + "status")).upper(),
                tick_size=_filter(row, f, "priceFilter", "tickSize"),
                step_size=_filter(row, f, "lotSizeFilter", "qtyStep"),
                onboard_time=None if launch in (None, "", "0") else _ms(launch, f + "launchTime"),
                contract_size=Decimal(1),
                funding_interval_ms=interval * MINUTE_MS or None,
            )
        )  # fmt: skip
    cursor = result.get("nextPageCursor") or ""
    if not isinstance(cursor, str):
        raise MessageError("expected a string", field="result.nextPageCursor")
    return out, cursor
