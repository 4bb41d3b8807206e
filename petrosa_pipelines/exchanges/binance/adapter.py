"""Binance USD-M futures adapter: stream names, subscription frames and the websocket parser.

``parse`` is the ingest hot path. A combined-stream frame is decoded by one msgspec decoder
(envelope + union tagged on ``"e"``, decimals straight to ``Decimal``), a few comparisons reject
impossible values, and one normalised record is built. Anything unusual takes a slower path that
still ends in a record, None (control frames) or a ``MessageError`` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import orjson

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthUpdateRecord,
    ExchangeAdapter,
    MarkPriceRecord,
    MessageError,
    Record,
    Source,
    TradeRecord,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.binance.schemas import (
    COMBINED_DECODER,
    EVENT_DECODER,
    PROBE_DECODER,
    BinanceAggTradeData,
    BinanceDepthUpdateData,
    BinanceKlineData,
    BinanceMarkPriceData,
    Level,
)

if TYPE_CHECKING:
    from petrosa_pipelines.settings import Settings

EXCHANGE = "binance"
#: Binance closes a connection that asks for more streams than this
MAX_STREAMS_PER_CONNECTION = 1024
DEFAULT_INTERVAL = "1m"

_WS = str(Source.WS)
_ZERO = Decimal(0)
#: no Binance price or quantity comes near this; bigger values are corrupt (and overflow float64
#: precision), so they are rejected instead of stored
_MAX = Decimal(10) ** 15
_MAX_RATE = Decimal(1)
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


# ---------------------------------------------------------------------------------------------
# Event -> record. Each takes the decoded event and returns a record; a bad value raises
# MessageError with the field relative to the event (the caller adds "data.").
# ---------------------------------------------------------------------------------------------


def _bad_decimal(field: str, value: Decimal, *, zero_ok: bool) -> MessageError:
    """Explain why ``value`` failed the fast range check (slow path, errors only)."""
    if not value.is_finite():
        return MessageError(f"not a finite decimal: {value}", field=field)
    if value > _MAX:
        return MessageError(f"implausibly large: {value}", field=field)
    return MessageError(f"must be {'>= 0' if zero_ok else '> 0'}, got {value}", field=field)


def _check_positive(*pairs: tuple[str, Decimal]) -> None:
    for field, value in pairs:
        try:
            ok = _ZERO < value < _MAX
        except InvalidOperation:  # NaN / sNaN
            ok = False
        if not ok:
            raise _bad_decimal(field, value, zero_ok=False)


def _check_non_negative(*pairs: tuple[str, Decimal]) -> None:
    for field, value in pairs:
        try:
            ok = _ZERO <= value < _MAX
        except InvalidOperation:
            ok = False
        if not ok:
            raise _bad_decimal(field, value, zero_ok=True)


#: exchange symbol -> normalised symbol; also interns it, so a million records share one str
_SYMBOLS: dict[str, str] = {}
_SYMBOLS_MAX = 10_000  # a stream of garbage symbols must not grow the cache without bound
#: perpetuals like BTCUSDT, delivery contracts like BTCUSDT_230630
_SYMBOL_RE = re.compile(r"[A-Za-z0-9_]{1,40}")


def _symbol(s: str) -> str:
    sym = _SYMBOLS.get(s)
    if sym is None:
        if not _SYMBOL_RE.fullmatch(s):
            raise MessageError(f"not an exchange symbol: {s!r}", field="s")
        sym = s.upper()
        if len(_SYMBOLS) < _SYMBOLS_MAX:
            _SYMBOLS[s] = sym
    return sym


def _trade(d: BinanceAggTradeData, received_at: int | None) -> TradeRecord:
    """aggTrade -> TradeRecord (the hot path: positional fields, no helper calls when valid).

    ``{"e":"aggTrade","E":1618677448238,"a":52599685,"s":"YFIUSDT","p":"49966.7","q":"0.001",
    "f":64902163,"l":64902163,"T":1618677448084,"m":false}``
    """
    p, q = d.p, d.q
    try:
        ok = _ZERO < p < _MAX and _ZERO < q < _MAX
    except InvalidOperation:  # NaN
        ok = False
    if not ok:
        _check_positive(("p", p), ("q", q))
    if d.f > d.l:
        raise MessageError(f"last trade id {d.l} < first trade id {d.f}", field="l")
    symbol = _SYMBOLS.get(d.s) or _symbol(d.s)
    # field order of TradeRecord: exchange, symbol, agg_trade_id, price, quantity,
    # first_trade_id, last_trade_id, trade_time, is_buyer_maker, event_time, source, received_at
    return TradeRecord(EXCHANGE, symbol, d.a, p, q, d.f, d.l, d.T, d.m, d.E, _WS, received_at)


def _candle(d: BinanceKlineData, received_at: int | None) -> CandleRecord:
    """kline -> CandleRecord; ``is_closed`` from ``k.x`` (in-progress updates have x=false).

    ``{"e":"kline","E":1618677448088,"s":"YFIUSDT","k":{"t":1618677420000,"T":1618677479999,
    "s":"YFIUSDT","i":"1m","f":64902095,"L":64902163,"o":"50010.8","c":"49966.7","h":"50044.2",
    "l":"49950.6","v":"0.842","n":69,"x":false,"q":"42099.6830","V":"0.538","Q":"26900.2291",
    "B":"0"}}``
    """
    k = d.k
    _check_positive(("k.o", k.o), ("k.h", k.h), ("k.l", k.l), ("k.c", k.c))
    _check_non_negative(("k.v", k.v), ("k.q", k.q), ("k.V", k.V), ("k.Q", k.Q))
    if k.T < k.t:
        raise MessageError(f"close time {k.T} before open time {k.t}", field="k.T")
    return CandleRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        interval=k.i,
        open_time=k.t,
        close_time=k.T,
        open=k.o,
        high=k.h,
        low=k.l,
        close=k.c,
        volume=k.v,
        quote_volume=k.q,
        trade_count=k.n,
        taker_buy_volume=k.V,
        taker_buy_quote_volume=k.Q,
        is_closed=k.x,
        event_time=d.E,
        source=_WS,
        received_at=received_at,
    )


def _levels_ok(levels: tuple[Level, ...]) -> bool:
    """Fast check: every price > 0, every quantity >= 0, all finite and plausible."""
    try:
        for p, q in levels:
            if not (_ZERO < p < _MAX and _ZERO <= q < _MAX):
                return False
    except InvalidOperation:  # NaN
        return False
    return True


def _check_levels(side: str, levels: tuple[Level, ...]) -> None:
    """Slow path of ``_levels_ok``: raise for the first bad level, naming it."""
    for n, (p, q) in enumerate(levels):
        _check_positive((f"{side}[{n}][0]", p))
        _check_non_negative((f"{side}[{n}][1]", q))


def _depth(d: BinanceDepthUpdateData, received_at: int | None) -> DepthUpdateRecord:
    """depthUpdate -> DepthUpdateRecord; levels stay (price, qty) Decimal tuples, qty 0 = delete.

    ``{"e":"depthUpdate","E":1626992741077,"T":1626992740974,"s":"AKROUSDT","U":600859599831,
    "u":600859599831,"pu":600859598737,"b":[],"a":[["0.01737","437848"]]}``
    """
    if not (_levels_ok(d.b) and _levels_ok(d.a)):
        _check_levels("b", d.b)
        _check_levels("a", d.a)
    if d.U > d.u:
        raise MessageError(f"final update id {d.u} < first update id {d.U}", field="u")
    return DepthUpdateRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        event_time=d.E,
        transaction_time=d.T,
        first_update_id=d.U,
        final_update_id=d.u,
        prev_final_update_id=d.pu,
        bids=d.b,
        asks=d.a,
        received_at=received_at,
    )


def _optional_decimal(field: str, text: str, *, signed: bool = False) -> Decimal | None:
    """A decimal string that Binance may send as ``""`` (-> None)."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MessageError(f"invalid decimal string {text!r}", field=field) from None
    if signed:
        if not value.is_finite() or abs(value) >= _MAX_RATE:
            raise MessageError(f"not a plausible rate: {text!r}", field=field)
    else:
        _check_non_negative((field, value))
    return value


def _mark_price(d: BinanceMarkPriceData, received_at: int | None) -> MarkPriceRecord:
    """markPriceUpdate -> MarkPriceRecord; ``r``/``P``/``i`` of ``""`` and ``T`` of 0 -> None.

    ``{"e":"markPriceUpdate","E":1680652701000,"s":"BTCUSDT","p":"28147.27373413",
    "P":"28142.15563565","i":"28159.75642857","r":"0.00002754","T":1680652800000}``
    """
    _check_positive(("p", d.p))
    return MarkPriceRecord(
        exchange=EXCHANGE,
        symbol=_symbol(d.s),
        event_time=d.E,
        mark_price=d.p,
        index_price=_optional_decimal("i", d.i),
        estimated_settle_price=_optional_decimal("P", d.P),
        funding_rate=_optional_decimal("r", d.r, signed=True),
        next_funding_time=d.T or None,
        received_at=received_at,
    )


_CONVERTERS: dict[type, Callable[[Any, int | None], Record]] = {
    BinanceAggTradeData: _trade,
    BinanceDepthUpdateData: _depth,
    BinanceKlineData: _candle,
    BinanceMarkPriceData: _mark_price,
}


# ---------------------------------------------------------------------------------------------
# Errors: msgspec says "Expected `int`, got `str` - at `$.data.a`"; we say field "data.a".
# ---------------------------------------------------------------------------------------------


def _from_validation(exc: msgspec.ValidationError, raw: bytes, prefix: str) -> MessageError:
    m = _AT.match(str(exc))
    reason = m.group("reason") if m else str(exc)
    path = ((m and m.group("path")) or "").lstrip(".")
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    field = f"{prefix}{path}".rstrip(".") or "<message>"
    if reason.startswith("Invalid value") and field in ("e", "data.e"):
        return UnknownMessageError(f"unknown event type: {reason}", field=field, raw=raw)
    return MessageError(reason, field=field, raw=raw)


def _prefixed(exc: MessageError, prefix: str, raw: bytes) -> MessageError:
    """The converter's error with the field made absolute and the raw frame attached."""
    return type(exc)(exc.reason, field=f"{prefix}{exc.field}", raw=raw)


def _convert(event: Any, prefix: str, raw: bytes, received_at: int | None) -> Record:
    try:
        return _CONVERTERS[type(event)](event, received_at)
    except MessageError as exc:
        raise _prefixed(exc, prefix, raw) from None


def _decode_event(raw: bytes, prefix: str, received_at: int | None, frame: bytes) -> Record:
    try:
        event = EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _from_validation(exc, frame, prefix) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 inside a string
        raise MessageError(
            f"not valid JSON: {exc}", field=prefix.rstrip(".") or "<message>", raw=frame
        ) from None
    return _convert(event, prefix, frame, received_at)


def _parse_slow(raw: bytes, received_at: int | None) -> Record | None:
    """Everything the fast path did not turn into a record: raw ``/ws`` events, acks, error
    replies, other key orders or spacing, and malformed frames (whose field it names)."""
    try:
        probe = PROBE_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _from_validation(exc, raw, "") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MessageError(f"not valid JSON: {exc}", raw=raw) from None
    if len(probe.data):
        return _decode_event(bytes(probe.data), "data.", received_at, raw)
    if probe.e is not None:
        return _decode_event(raw, "", received_at, raw)
    if probe.stream is not None:
        raise MessageError("combined-stream frame without data", field="data", raw=raw)
    if probe.error is not None:
        raise MessageError(f"exchange error reply: {probe.error!r}", field="error", raw=raw)
    if probe.result is not msgspec.UNSET and probe.id is not None:
        return None  # subscription ack / list reply: {"result": null, "id": 1}
    raise UnknownMessageError("neither a stream event nor a control reply", raw=raw)


_decode_combined = COMBINED_DECODER.decode
_S = ord("s")


def _as_bytes(raw: bytes | str) -> bytes:
    if isinstance(raw, str):
        return raw.encode()
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    raise MessageError(f"expected bytes or str, got {type(raw).__name__}")


class BinanceUsdmAdapter(ExchangeAdapter):
    """Binance USD-M perpetual futures (fstream.binance.com / fapi.binance.com)."""

    name: ClassVar[str] = EXCHANGE
    channels: ClassVar[dict[str, str]] = {
        "trades": "{symbol}@aggTrade",
        "candles": "{symbol}@kline_{interval}",
        "depth": "{symbol}@depth@100ms",
        # markPrice carries the predicted funding rate and next funding time (cryptofeed does
        # the same); settled events are derived by frames.mark_prices_to_funding
        "funding": "{symbol}@markPrice@1s",
    }

    def stream_names(
        self, symbols: Sequence[str], datasets: Iterable[str], *, interval: str = DEFAULT_INTERVAL
    ) -> list[str]:
        """Stream names per symbol and dataset, symbol lowercased as Binance requires."""
        datasets = list(datasets)
        unknown = [d for d in datasets if d not in self.channels]
        if unknown:
            raise ValueError(f"no Binance stream for {unknown}; known {list(self.channels)}")
        names: dict[str, None] = {}
        for symbol in symbols:
            for dataset in datasets:
                template = self.channels[dataset]
                names[template.format(symbol=symbol.lower(), interval=interval)] = None
        return list(names)

    def combined_stream_url(self, ws_base_url: str, streams: Sequence[str]) -> str:
        """``{base}/stream?streams=a/b/c``; Binance drops connections asking for > 1024 streams."""
        if not streams:
            raise ValueError("at least one stream is needed")
        if len(streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{len(streams)} streams > {MAX_STREAMS_PER_CONNECTION} allowed per connection"
            )
        return f"{ws_base_url.rstrip('/')}/stream?streams={'/'.join(_norm_streams(streams))}"

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """``{"method":"SUBSCRIBE","params":[...],"id":n}`` as bytes."""
        return _control("SUBSCRIBE", streams, request_id)

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """``{"method":"UNSUBSCRIBE","params":[...],"id":n}`` as bytes."""
        return _control("UNSUBSCRIBE", streams, request_id)

    def parse(self, raw: bytes | str, received_at: int | None = None) -> Record | None:
        """One websocket frame (combined ``{"stream","data"}`` or raw ``/ws``) -> record.

        None for subscription acks; ``UnknownMessageError`` for events we do not handle
        (bookTicker, trade, ...); ``MessageError`` naming the field for anything malformed.
        """
        if type(raw) is not bytes:
            raw = _as_bytes(raw)
        try:
            # Hot path: b'{"stream":...' is a combined-stream frame as Binance sends it. Any
            # decode failure falls through to the slow path, which names the bad field.
            if raw[2] == _S:
                event = _decode_combined(raw).data
                if type(event) is BinanceAggTradeData:  # by far the busiest stream
                    return _trade(event, received_at)
                return _CONVERTERS[type(event)](event, received_at)
        except MessageError as exc:  # a converter rejected a value of "data"
            raise _prefixed(exc, "data.", raw) from None
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, IndexError):
            pass
        return _parse_slow(raw, received_at)

    def parse_many(
        self, frames: Iterable[bytes | str | tuple[bytes | str, int | None]]
    ) -> tuple[list[Record], list[MessageError]]:
        """Parse a batch, collecting errors for the dead-letter store instead of stopping.

        Items are raw frames or ``(raw, received_at)`` pairs (as read back from landing).
        """
        records: list[Record] = []
        errors: list[MessageError] = []
        parse = self.parse
        for frame in frames:
            raw, received_at = frame if isinstance(frame, tuple) else (frame, None)
            try:
                record = parse(raw, received_at)
            except MessageError as exc:
                errors.append(exc)
                continue
            if record is not None:
                records.append(record)
        return records, errors

    def rest_client(self, settings: Settings | None = None) -> Any:
        """A ``BinanceRestClient`` on ``settings.endpoints`` with ``settings.rest`` limits."""
        from petrosa_pipelines.exchanges.binance.rest import BinanceRestClient
        from petrosa_pipelines.settings import Settings

        settings = settings or Settings()
        return BinanceRestClient(settings.endpoints, settings.rest)

    def archive_client(self, settings: Settings | None = None) -> Any:
        """A ``VisionArchiveClient`` on ``settings.endpoints.vision_base_url``."""
        from petrosa_pipelines.exchanges.binance.vision import VisionArchiveClient
        from petrosa_pipelines.settings import Settings

        settings = settings or Settings()
        return VisionArchiveClient(settings.endpoints.vision_base_url, settings.rest)


def _norm_streams(streams: Sequence[str]) -> list[str]:
    """Lowercase the symbol part only: ``BTCUSDT@aggTrade`` -> ``btcusdt@aggTrade``."""
    out = []
    for s in streams:
        symbol, sep, rest = s.partition("@")
        if not symbol or not sep or not rest:
            raise ValueError(f"not a Binance stream name: {s!r}")
        out.append(f"{symbol.lower()}@{rest}")
    return out


def _control(method: str, streams: Sequence[str], request_id: int) -> bytes:
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
        raise ValueError(f"request id must be a non-negative int, got {request_id!r}")
    if not streams:
        raise ValueError("at least one stream is needed")
    return orjson.dumps({"method": method, "params": _norm_streams(streams), "id": request_id})
