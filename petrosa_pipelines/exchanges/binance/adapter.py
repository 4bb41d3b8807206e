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

**The Petrosa socket-client's envelope.** The socket-client (https://github.com/PetroSa2/
petrosa-socket-client) republishes each combined-stream frame on NATS as ``{"stream", "data",
"timestamp", "message_id", "source", "version"}`` plus trace-context keys, in any key order. The
decoders ignore undeclared keys in any order, so ``parse`` and ``frame_stream`` take an envelope
as they take the frame it wraps, and ``sender_received_at`` reads its ``timestamp`` (the
socket-client's receipt time). Landing the envelope bytes keeps both receipt times.

**Stream profiles** (``STREAM_PROFILES``): which Binance streams carry a group's datasets.
``"exchange"`` (the default) is what this project subscribes itself: ``aggTrade``, diff depth
``@depth@100ms`` with REST snapshots, ``kline_1m`` and ``markPrice@1s`` (the liveness probe).
``"socket-client"`` is what the socket-client sends: raw ``@trade`` (``RawTradeRecord``),
partial depth ``@depth20@100ms`` (in-stream snapshots) and ``@ticker`` (``TickerRecord``, the
liveness probe, feeds no dataset); a websocket group with it subscribes exactly those streams.
The parser reads every stream whatever the profile, so a landing replay needs none.

How the socket-client's streams meet the datasets:

* **trades** stays Binance's aggregate trades (``agg_trade_id`` consecutive, ``first_trade_id``
  /``last_trade_id`` the raw ids). A raw trade is not an aggregate trade (an aggTrade groups the
  fills of one taker order at one price, and its id cannot be derived from raw trades), so raw
  trades are never turned into or mixed with aggTrade rows: the landing's trades frame reads
  only ``TradeRecord`` rows, and a partition of a socket-client group takes its aggTrades from
  the archive and REST (the partition fill). Raw trades are landed and checked live: their ids
  ``t`` are consecutive per symbol, so a missing id is an ``id_gap`` in the trades ledger
  (``ingest/hotpath.py``); non-market prints (``X`` other than ``MARKET``) are kept and marked
  (``RawTradeRecord.trade_type``), never dropped.
* **depth**: each partial depth message replaces the book (no REST snapshot); a ``pu`` that is
  not the previous ``u`` is a sequence break in the depth ledger, healed by that very message.
* **@ticker** feeds no dataset; it is landed (raw kept) and its last price serves caches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import msgspec
import orjson

from petrosa_pipelines.exchanges.base import (
    STREAM_RECORD_TYPES,
    ArchiveSpec,
    Capabilities,
    Dataset,
    DepthUpdateRecord,
    ExchangeAdapter,
    MessageError,
    RawTradeRecord,
    Record,
    Source,
    TickerRecord,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.binance.fastpath import BinanceFastPath
from petrosa_pipelines.exchanges.binance.rest import HISTORY_REACH_MS
from petrosa_pipelines.exchanges.binance.schemas import (
    COMBINED_DECODER,
    ENVELOPE_DECODER,
    EVENT_DECODER,
    EXCHANGE,
    PROBE_DECODER,
    STREAM_KEYS,
    STREAM_ONLY_DECODER,
    BinanceAggTradeData,
    check_stream,
    convert_on,
    iso_to_ms,
    to_trade,
)
from petrosa_pipelines.lib.endpoints import ExchangeEndpoints

#: Binance closes a connection that asks for more streams than this
MAX_STREAMS_PER_CONNECTION = 1024
DEFAULT_INTERVAL = "1m"
_VISION = "https://data.binance.vision/?prefix=data/futures/um/"

#: how every combined-stream frame begins (``{"stream":"btcusdt@aggTrade","data":{...}}``;
#: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams)
_STREAM_HEAD = b'{"stream":"'
_HEAD_LEN = len(_STREAM_HEAD)
#: stream name bytes -> ``frame_stream``'s answer: a landed day repeats a few hundred stream
#: names millions of times, and a dict hit is cheaper than decoding each one (bounded)
_FRAME_STREAMS: dict[bytes, tuple[str, str, bool]] = {}
_FRAME_STREAMS_MAX = 4096
#: stream kind prefixes (after ``@``) and the channel their frames belong to
#: (``stream_dataset``: a dataset, or ``ticker``, the socket-client's liveness probe)
_KIND_DATASETS = (
    ("depth", "depth"),
    ("aggTrade", "trades"),
    ("trade", "trades"),
    ("kline_", "candles"),
    ("markPrice", "funding"),
    ("ticker", "ticker"),
)

#: stream profile name -> (stream kind -> stream name template); see the module docstring
EXCHANGE_PROFILE = "exchange"
SOCKET_CLIENT_PROFILE = "socket-client"
STREAM_PROFILES: dict[str, dict[str, str]] = {
    EXCHANGE_PROFILE: {
        "trades": "{symbol}@aggTrade",
        "candles": "{symbol}@kline_{interval}",
        "depth": "{symbol}@depth@100ms",
        # markPrice carries the predicted funding rate and next funding time (cryptofeed does
        # the same); settled events are derived by frames.mark_prices_to_funding
        "funding": "{symbol}@markPrice@1s",
    },
    # the socket-client's defaults (socket_client/constants.py, ``BINANCE_STREAMS``)
    SOCKET_CLIENT_PROFILE: {
        "trades": "{symbol}@trade",
        "depth": "{symbol}@depth20@100ms",
        "ticker": "{symbol}@ticker",
    },
}
#: stream kind -> record type, where a profile's stream parses into another type than usual
_PROFILE_RECORD_TYPES: dict[str, dict[str, type]] = {
    EXCHANGE_PROFILE: {},
    SOCKET_CLIENT_PROFILE: {
        "trades": RawTradeRecord,
        # partial depth parses into in-stream snapshots, which travel on the depth stream's
        # state (``ingest.streams.STREAM_TYPE``)
        "depth": DepthUpdateRecord,
        "ticker": TickerRecord,
    },
}
#: the stream each profile always carries (``ExchangeAdapter.liveness_stream``)
_PROFILE_LIVENESS = {EXCHANGE_PROFILE: "funding", SOCKET_CLIENT_PROFILE: "ticker"}

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


def _convert(
    event: Any, prefix: str, raw: bytes, received_at: int | None, stream: str = ""
) -> Record:
    try:
        return convert_on(stream, event, received_at)
    except MessageError as exc:
        raise _prefixed(exc, prefix, raw) from None


def _decode_event(
    raw: bytes, prefix: str, received_at: int | None, frame: bytes, stream: str = ""
) -> Record:
    try:
        event = EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _from_validation(exc, frame, prefix) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 inside a string
        raise MessageError(
            f"not valid JSON: {exc}", field=prefix.rstrip(".") or "<message>", raw=frame
        ) from None
    return _convert(event, prefix, frame, received_at, stream)


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
        rec = _decode_event(bytes(probe.data), "data.", received_at, raw, stream or "")
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

    venue: ClassVar[str] = "binance-usdm"
    name: ClassVar[str] = EXCHANGE
    capabilities: ClassVar[Capabilities] = Capabilities(
        datasets=frozenset(Dataset),
        rest_reach_ms=HISTORY_REACH_MS,
        archives=(
            ArchiveSpec(Dataset.TRADES, "daily", True, f"{_VISION}daily/aggTrades/"),
            ArchiveSpec(Dataset.CANDLES, "daily", True, f"{_VISION}daily/klines/"),
            ArchiveSpec(Dataset.FUNDING, "monthly", True, f"{_VISION}monthly/fundingRate/"),
        ),
        trade_ids_consecutive=True,
        # the REST snapshot is the present book only; Binance publishes no depth history
        depth_history=False,
        book_snapshot_in_stream=False,
        # fundingRate answers carry markPrice and markPriceUpdate carries it; the Vision
        # fundingRate CSV (calc_time, funding_interval_hours, last_funding_rate) does not
        funding_mark_price_sources=frozenset({Source.WS, Source.REST}),
    )
    symbol_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Z0-9]{2,30}")
    #: the default profile's streams (an instance with another profile has its own)
    channels: ClassVar[dict[str, str]] = STREAM_PROFILES[EXCHANGE_PROFILE]
    #: the profiles a group may name (``IngestConfig`` validates against this)
    stream_profiles: ClassVar[tuple[str, ...]] = tuple(STREAM_PROFILES)
    #: where live Binance USD-M is (fapi, fstream, data.binance.vision); the settings read
    #: them as ``PETROSA_REST_BASE_URL``, ``_WS_BASE_URL``, ``_VISION_BASE_URL`` (the legacy names)
    default_endpoints: ClassVar[ExchangeEndpoints] = ExchangeEndpoints()

    @classmethod
    def profile_datasets(cls, stream_profile: str) -> frozenset[str]:
        """The datasets a group with this stream profile can stream (socket-client: trades and
        depth; its ``ticker`` feeds none)."""
        if stream_profile not in STREAM_PROFILES:
            raise ValueError(
                f"stream_profile {stream_profile!r} is not a Binance stream profile; "
                f"known {sorted(STREAM_PROFILES)}"
            )
        return frozenset(STREAM_PROFILES[stream_profile]) & frozenset(Dataset)

    def __init__(self, stream_profile: str = EXCHANGE_PROFILE) -> None:
        """``stream_profile``: which streams carry the datasets (``STREAM_PROFILES``)."""
        if stream_profile not in STREAM_PROFILES:
            raise ValueError(
                f"stream_profile {stream_profile!r} is not a Binance stream profile; "
                f"known {sorted(STREAM_PROFILES)}"
            )
        self.stream_profile = stream_profile
        self.channels = STREAM_PROFILES[stream_profile]  # type: ignore[misc]
        self.liveness_stream = _PROFILE_LIVENESS[stream_profile]  # type: ignore[misc]
        self._record_types = {**STREAM_RECORD_TYPES, **_PROFILE_RECORD_TYPES[stream_profile]}

    def stream_record_type(self, kind: str) -> type:
        """The record type a stream kind of this profile parses into (raw trades and tickers
        under the socket-client profile)."""
        return self._record_types[kind]

    def stream_names(
        self, symbols: Sequence[str], datasets: Iterable[str], *, interval: str = DEFAULT_INTERVAL
    ) -> list[str]:
        """Stream names per symbol and dataset (or stream kind such as ``ticker``) under this
        adapter's stream profile, symbol lowercased as Binance requires."""
        datasets = list(datasets)
        unknown = [d for d in datasets if d not in self.channels]
        if unknown:
            raise ValueError(
                f"no Binance stream for {unknown} in stream profile {self.stream_profile!r}; "
                f"known {list(self.channels)}"
            )
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
                return convert_on(msg.stream, event, received_at)
            rec = convert_on(msg.stream, event, received_at)
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

    def frame_stream(self, payload: bytes) -> tuple[str, str, bool] | None:
        """(SYMBOL, stream, True) of a combined-stream frame, read from its head unparsed
        (``{"stream":"btcusdt@aggTrade"`` -> ``("BTCUSDT", "btcusdt@aggTrade", True)``).

        Every Binance stream is stateless (a frame parses alone), so a replay may start at
        any frame. A frame whose ``stream`` is not its first key (a socket-client envelope in
        another key order) is read by a decoder that skips everything but ``stream``. None for
        anything else (raw ``/ws`` events, acks): the reader parses it.
        """
        if payload[:_HEAD_LEN] != _STREAM_HEAD:
            return _enveloped_stream(payload)
        name = payload[_HEAD_LEN : payload.find(b'"', _HEAD_LEN)]
        info = _FRAME_STREAMS.get(name)
        if info is None:
            at = name.find(b"@")
            if at < 0:
                return None
            info = (
                name[:at].decode("ascii", "replace").upper(),
                name.decode("ascii", "replace"),
                True,
            )
            if len(_FRAME_STREAMS) >= _FRAME_STREAMS_MAX:
                _FRAME_STREAMS.clear()
            _FRAME_STREAMS[name] = info
        return info

    def stream_dataset(self, stream: str) -> str | None:
        """By the stream's kind: ``@depth...`` (diffs, partial depth) is depth, ``@aggTrade``
        and raw ``@trade`` trades, ``@kline_`` candles, ``@markPrice`` funding, ``@ticker``
        the liveness ticker; anything else is unknown."""
        kind = stream.partition("@")[2]
        return next((ds for prefix, ds in _KIND_DATASETS if kind.startswith(prefix)), None)

    @staticmethod
    def sender_received_at(payload: bytes) -> int | None:
        """The socket-client's receipt time (epoch ms) of an enveloped frame, read from the
        envelope's ``timestamp``; None for a plain frame or an envelope without a valid one."""
        return envelope_received_at(payload)

    def fast_path(self) -> BinanceFastPath:
        """The ingest's per-frame shortcut (``exchanges/binance/fastpath.py``)."""
        return BinanceFastPath()

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


def envelope_received_at(payload: bytes | str) -> int | None:
    """The ``timestamp`` of a socket-client envelope as epoch ms (None: not an envelope, or no
    valid ISO-8601 time in it)."""
    try:
        env = ENVELOPE_DECODER.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    return iso_to_ms(env.timestamp) if env.timestamp is not None else None


def _enveloped_stream(payload: bytes) -> tuple[str, str, bool] | None:
    """``frame_stream`` of a frame whose ``stream`` key is not first (an envelope)."""
    try:
        stream = STREAM_ONLY_DECODER.decode(payload).stream
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    symbol, at, rest = stream.partition("@")
    if not at or not symbol:
        return None
    return symbol.upper(), stream, True


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
