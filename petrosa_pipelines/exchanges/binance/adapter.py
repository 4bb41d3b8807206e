"""Binance USD-M futures adapter: stream names, subscription frames and the websocket parser.

``parse`` is the ingest hot path. A combined-stream frame is decoded by one msgspec decoder
(envelope + union tagged on ``"e"``, decimals straight to ``Decimal``), a few comparisons reject
impossible values, and one normalised record is built. Anything unusual takes a slower path that
still ends in a record, None (control frames) or a ``MessageError`` naming the field.

Whatever the bytes, ``parse`` raises nothing but ``MessageError``: invalid UTF-8 inside a string,
nesting deep enough to exhaust the decoder's recursion (``RecursionError``) and numbers that
overflow ``decimal`` arithmetic all become a ``MessageError`` with their reason, so one frame can
never take down a connection or a batch (``parse_many``). A combined-stream frame whose stream
name is about another symbol than its data is rejected too (field ``stream``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import msgspec
import orjson

from petrosa_pipelines.exchanges.base import (
    ExchangeAdapter,
    MessageError,
    Record,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.binance.schemas import (
    COMBINED_DECODER,
    CONVERTERS,
    EVENT_DECODER,
    EXCHANGE,
    PROBE_DECODER,
    STREAM_KEYS,
    BinanceAggTradeData,
    check_stream,
    to_trade,
)

#: Binance closes a connection that asks for more streams than this
MAX_STREAMS_PER_CONNECTION = 1024
DEFAULT_INTERVAL = "1m"

_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


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
        return CONVERTERS[type(event)](event, received_at)
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
        stream = probe.stream
        if stream is not None and type(stream) is not str:
            raise MessageError("stream name is not a string", field="stream", raw=raw)
        rec = _decode_event(bytes(probe.data), "data.", received_at, raw)
        if stream is not None:
            _check_stream(stream, None, rec, raw)
        return rec
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


def _check_stream(stream: str, s: str | None, rec: Record, raw: bytes | str) -> None:
    """``check_stream`` with the raw frame attached to its error."""
    try:
        check_stream(stream, s, rec.symbol)
    except MessageError as exc:
        exc.raw = _as_bytes(raw)
        raise


def _undecodable(exc: BaseException, raw: bytes | str) -> MessageError:
    """A ``MessageError`` for what the decoders and ``decimal`` raise on hostile bytes."""
    if isinstance(exc, RecursionError):
        reason = "nested too deeply to decode"
    elif isinstance(exc, ArithmeticError):  # decimal.Overflow, InvalidOperation, ...
        reason = f"number out of range: {type(exc).__name__}"
    else:
        reason = f"undecodable: {type(exc).__name__}: {str(exc)[:120]}"
    try:
        data = _as_bytes(raw)
    except MessageError:
        data = raw if isinstance(raw, bytes) else None
    return MessageError(reason, raw=data)


def _as_bytes(raw: bytes | str) -> bytes:
    if type(raw) is bytes:
        return raw
    if isinstance(raw, str):
        try:
            return raw.encode()
        except UnicodeEncodeError as exc:  # lone surrogates
            raise MessageError(f"not encodable as UTF-8: {exc}", raw=raw) from None
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
        (forceOrder, ...); ``MessageError`` naming the field for anything malformed, and for
        anything the decoders choke on (never another exception).
        """
        try:
            # Hot path: a combined-stream frame as Binance sends it (msgspec takes bytes, str or
            # any buffer). Anything else, malformed or not, falls through to the slow path,
            # which handles raw /ws events and acks and names the bad field.
            msg = _decode_combined(raw)
            event = msg.data
            known = STREAM_KEYS.get(msg.stream)
            if known is not None and known[0] == event.s:  # the stream is about this symbol
                if type(event) is BinanceAggTradeData:  # by far the busiest stream
                    return to_trade(event, received_at, known[1])
                return CONVERTERS[type(event)](event, received_at)
            rec = CONVERTERS[type(event)](event, received_at)
        except MessageError as exc:  # a converter rejected a value of "data"
            raise _prefixed(exc, "data.", _as_bytes(raw)) from None
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError, TypeError):
            try:
                return _parse_slow(_as_bytes(raw), received_at)
            except MessageError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on deep nesting
                raise _undecodable(exc, raw) from None
        except Exception as exc:  # noqa: BLE001 - RecursionError, decimal.Overflow, ...
            raise _undecodable(exc, raw) from None
        _check_stream(msg.stream, event.s, rec, raw)  # a stream not seen with this symbol yet
        return rec

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
            except Exception as exc:  # noqa: BLE001 - one frame never aborts the batch
                errors.append(_undecodable(exc, raw))
                continue
            if record is not None:
                records.append(record)
        return records, errors

    def rest_client(self, settings: Any) -> Any:
        """A ``BinanceRestClient`` on ``settings.endpoints`` with ``settings.rest`` limits
        (``settings``: a ``petrosa_pipelines.settings.Settings``; the exchange layer does not
        import the settings, which validate against this registry)."""
        from petrosa_pipelines.exchanges.binance.rest import BinanceRestClient

        return BinanceRestClient(settings.endpoints, settings.rest)

    def archive_client(self, settings: Any) -> Any:
        """A ``VisionArchiveClient`` on ``settings.endpoints.vision_base_url``."""
        from petrosa_pipelines.exchanges.binance.vision import VisionArchiveClient

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
