"""Bybit v5 linear perpetuals adapter: topics, subscribe/ping protocol and the websocket parser.

Bybit differs from Binance in ways every layer sees through ``capabilities``:

* one endpoint (``{ws_base}/v5/public/linear``), topics subscribed in-band after connecting
  (``initial_messages``), and an application ping every 20 s (``{"op":"ping"}``;
  https://bybit-exchange.github.io/docs/v5/ws/connect);
* **a frame can carry several records** (every fill of a taker order in one ``publicTrade``
  frame; the closed and the new candle in one ``kline`` frame). ``parse_frame`` returns them
  all and is what the ingest and the landing reader must call. ``parse`` keeps the one-record
  contract of ``ExchangeAdapter``: it returns the record of a one-record frame and raises
  ``MultiRecordFrameError`` (a ``MessageError`` holding ``records``) for the others, so a
  caller that has not switched to ``parse_frame`` loses nothing silently;
* the book comes as an in-stream snapshot then deltas (``book_snapshot_in_stream``);
* ``tickers`` deltas carry only changed fields: the adapter instance keeps each symbol's last
  full ticker and emits a complete ``MarkPriceRecord`` whenever mark price, index price,
  funding rate or next funding time changes (other deltas yield nothing). A reader replaying
  landed frames must therefore start from the symbol's ``tickers`` snapshot with a fresh
  adapter, as the live connection does.

Whatever the bytes, the parser raises nothing but ``MessageError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import msgspec
import orjson

from petrosa_pipelines.exchanges.base import (
    ArchiveSpec,
    Capabilities,
    Dataset,
    ExchangeAdapter,
    MarkPriceRecord,
    MessageError,
    Record,
    Source,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.bybit.fastpath import BybitFastPath
from petrosa_pipelines.exchanges.bybit.schemas import (
    BYBIT_INTERVALS,
    DECODERS,
    EXCHANGE,
    PROBE_DECODER,
    BybitTickerMsg,
    optional_decimal,
    optional_ms,
    to_book,
    to_candles,
    to_trades,
    topic_symbol,
    validation_error,
)
from petrosa_pipelines.lib.endpoints import ExchangeEndpoints

#: Bybit's documented limit for spot, applied to linear too: "Spot can input up to 10 args for
#: each subscription request" and, for every public connection, "you cannot have length of
#: args array over 21,000 characters" (https://bybit-exchange.github.io/docs/v5/ws/connect)
MAX_ARGS_PER_REQUEST = 10
MAX_ARGS_CHARS = 21_000
#: "we recommend that you send the ping heartbeat packet every 20 seconds" (same page)
PING_INTERVAL_S = 20.0
PING = b'{"op":"ping"}'
#: linear orderbook depths (https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook)
BOOK_DEPTHS = (1, 50, 200, 1000)
DEFAULT_DEPTH = 50
DEFAULT_INTERVAL = "1m"
PUBLIC_TRADING = "https://public.bybit.com/trading/"
BOOK_HISTORY = "https://quote-saver.bycsi.com/orderbook/linear/"
WS_PATH = "/v5/public/linear"
#: live Bybit: REST v5, public websocket, and the public archive host (``vision_base_url`` is
#: the endpoints' archive slot; https://bybit-exchange.github.io/docs/v5/guide)
LIVE_ENDPOINTS = ExchangeEndpoints(
    rest_base_url="https://api.bybit.com",
    ws_base_url="wss://stream.bybit.com",
    vision_base_url="https://public.bybit.com",
)


class MultiRecordFrameError(MessageError):
    """``parse`` was given a frame holding several records: call ``parse_frame``.

    ``records`` holds them all, so a caller catching ``MessageError`` can still keep them.
    """

    def __init__(self, records: list[Record], raw: bytes | str | None = None) -> None:
        self.records = records
        super().__init__(
            f"frame carries {len(records)} records; use parse_frame", field="data", raw=raw
        )


def _as_bytes(raw: bytes | str) -> bytes:
    if type(raw) is bytes:
        return raw
    if isinstance(raw, str):
        try:
            return raw.encode()
        except UnicodeEncodeError as exc:  # lone surrogates
            raise MessageError(f"not encodable as UTF-8: {exc}") from None
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    raise MessageError(f"expected bytes or str, got {type(raw).__name__}")


def _undecodable(exc: BaseException, raw: bytes | None) -> MessageError:
    if isinstance(exc, RecursionError):
        reason = "nested too deeply to decode"
    elif isinstance(exc, ArithmeticError):
        reason = f"number out of range: {type(exc).__name__}"
    else:
        reason = f"undecodable: {type(exc).__name__}: {str(exc)[:120]}"
    return MessageError(reason, raw=raw)


_TOPIC_KEY = b'"topic":"'
#: topic kind -> the dataset its frames parse into (``stream_dataset``)
_TOPIC_DATASETS = {
    "orderbook": "depth",
    "publicTrade": "trades",
    "kline": "candles",
    "tickers": "funding",
}
_KINDS: dict[bytes, str] = {k.encode(): k for k in DECODERS}
#: the ticker fields a ``MarkPriceRecord`` is made of
_FUNDING_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")


class BybitLinearAdapter(ExchangeAdapter):
    """Bybit USDT/USDC linear contracts (stream.bybit.com/v5/public/linear, api.bybit.com)."""

    venue: ClassVar[str] = "bybit-linear"
    name: ClassVar[str] = EXCHANGE
    capabilities: ClassVar[Capabilities] = Capabilities(
        datasets=frozenset(Dataset),
        # klines and funding history page back to the listing; /v5/market/recent-trade only
        # returns the latest 1000 trades, so trades have no REST history (absent)
        rest_reach_ms={Dataset.CANDLES: None, Dataset.FUNDING: None},
        # the daily trades CSVs, and the order-book downloads (history-data page: daily
        # orderbook.500, later .200, snapshot + deltas per symbol), which the partition fill
        # replays into depth samples (``market_data.sources.BookArchiveSource`` on
        # ``BybitArchiveClient.daily_book_records``); neither has published checksums
        archives=(
            ArchiveSpec(Dataset.TRADES, "daily", False, PUBLIC_TRADING),
            ArchiveSpec(Dataset.DEPTH, "daily", False, BOOK_HISTORY),
        ),
        trade_ids_consecutive=False,
        depth_history=True,
        book_snapshot_in_stream=True,
        book_checksum=False,
        # ``tickers`` carries markPrice; the REST funding history (symbol, fundingRate,
        # fundingRateTimestamp: https://bybit-exchange.github.io/docs/v5/market/history-fund-rate)
        # has none
        funding_mark_price_sources=frozenset({Source.WS}),
        ping_interval_s=PING_INTERVAL_S,
        # tickers deltas carry only changed fields (see the module docstring): a replay
        # starts at a snapshot, which ``frame_stream`` marks
        stateful_replay=frozenset({Dataset.FUNDING}),
    )
    #: perpetuals (BTCUSDT, 1000PEPEUSDT, USDC ones like BTCPERP) and dated linear futures
    #: (BTCUSDT-25DEC26), as instruments-info lists them
    symbol_pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"[A-Z0-9]{2,30}(?:-[0-9]{2}[A-Z]{3}[0-9]{2})?"
    )
    channels: ClassVar[dict[str, str]] = {
        Dataset.TRADES: "publicTrade.{symbol}",
        Dataset.CANDLES: "kline.{interval}.{symbol}",
        Dataset.DEPTH: "orderbook.{depth}.{symbol}",
        # tickers carry the predicted funding rate, next funding time, mark and index price
        Dataset.FUNDING: "tickers.{symbol}",
    }

    #: where live Bybit is (the settings' endpoints for this venue default to these)
    default_endpoints: ClassVar[ExchangeEndpoints] = LIVE_ENDPOINTS

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth not in BOOK_DEPTHS:
            raise ValueError(f"linear orderbook depth must be one of {BOOK_DEPTHS}, got {depth}")
        self.depth = depth
        #: symbol -> the last full ticker (field -> text), merged from snapshot and deltas
        self.tickers: dict[str, dict[str, str]] = {}
        #: symbol -> ``seq`` of the last book frame (cross sequence, orders trades vs book)
        self.book_seq: dict[str, int | None] = {}
        self._convert: dict[str, Callable[[Any, int | None], list[Record]]] = {
            "publicTrade": to_trades,  # type: ignore[dict-item]
            "kline": to_candles,  # type: ignore[dict-item]
            "orderbook": self._book,
            "tickers": self._ticker,
        }

    # -- streams and protocol ---------------------------------------------------------------

    def stream_names(
        self,
        symbols: Sequence[str],
        datasets: Iterable[str],
        *,
        interval: str = DEFAULT_INTERVAL,
    ) -> list[str]:
        """Topics per symbol and dataset, e.g. ``publicTrade.BTCUSDT``, ``orderbook.50.BTCUSDT``."""
        datasets = list(datasets)
        unknown = [d for d in datasets if d not in self.channels]
        if unknown:
            raise ValueError(f"no Bybit topic for {unknown}; known {list(self.channels)}")
        bybit_interval = BYBIT_INTERVALS.get(interval)
        if bybit_interval is None:
            raise ValueError(f"unknown interval {interval!r}; known {list(BYBIT_INTERVALS)}")
        names: dict[str, None] = {}
        for symbol in symbols:
            if not self.symbol_pattern.fullmatch(symbol):
                raise ValueError(f"not a Bybit linear symbol: {symbol!r}")
            for dataset in datasets:
                template = self.channels[dataset]
                names[template.format(symbol=symbol, interval=bybit_interval, depth=self.depth)] = (
                    None
                )
        return list(names)

    def combined_stream_url(self, ws_base_url: str, streams: Sequence[str]) -> str:
        """``{base}/v5/public/linear``: topics are subscribed in-band (``initial_messages``)."""
        _check_topics(streams)
        return ws_base_url.rstrip("/") + WS_PATH

    def initial_messages(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """Subscribe frames of at most ``MAX_ARGS_PER_REQUEST`` topics, ``req_id`` counting up
        from ``request_id``."""
        return self.subscribe_messages(streams, request_id)

    def ping_message(self) -> bytes | None:
        return PING

    def subscribe_messages(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """``subscribe`` frames for any number of topics, chunked."""
        _check_topics(streams)
        return [
            _control("subscribe", streams[i : i + MAX_ARGS_PER_REQUEST], request_id + n)
            for n, i in enumerate(range(0, len(streams), MAX_ARGS_PER_REQUEST))
        ]

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """One ``{"op":"subscribe","args":[...],"req_id":"n"}`` frame (at most 10 topics)."""
        return _control("subscribe", streams, request_id)

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """One ``{"op":"unsubscribe","args":[...],"req_id":"n"}`` frame (at most 10 topics)."""
        return _control("unsubscribe", streams, request_id)

    # -- parsing ----------------------------------------------------------------------------

    def parse_frame(self, raw: bytes | str, received_at: int | None = None) -> list[Record]:
        """Every record of one websocket frame; ``[]`` for control frames (acks, pongs) and for
        ticker deltas that change nothing a ``MarkPriceRecord`` holds.

        ``MessageError`` naming the field for anything malformed (``UnknownMessageError`` for
        topics we do not handle, e.g. ``allLiquidation``), and for an error reply.
        """
        data: bytes | None = None
        try:
            data = raw if type(raw) is bytes else _as_bytes(raw)
            i = data.find(_TOPIC_KEY)
            if i >= 0:
                j = i + 9
                kind = _KINDS.get(data[j : data.find(b".", j, j + 16)])
                if kind is not None:
                    return self._convert[kind](DECODERS[kind].decode(data), received_at)
            return self._parse_slow(data, received_at)
        except MessageError as exc:
            if exc.raw is None:
                exc.raw = data
            raise
        except msgspec.ValidationError as exc:
            raise validation_error(exc, data) from None  # type: ignore[arg-type]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MessageError(f"not valid JSON: {exc}", raw=data) from None
        except Exception as exc:  # noqa: BLE001 - RecursionError, decimal.Overflow, ...
            raise _undecodable(exc, data) from None

    def parse(self, raw: bytes | str, received_at: int | None = None) -> Record | None:
        """The record of a one-record frame, None for a frame with none (control frames).

        Raises ``MultiRecordFrameError`` (holding ``records``) for a frame with several:
        callers that can take several records per frame call ``parse_frame``.
        """
        records = self.parse_frame(raw, received_at)
        if not records:
            return None
        if len(records) == 1:
            return records[0]
        raise MultiRecordFrameError(records, raw if isinstance(raw, bytes) else None)

    def parse_many(
        self, frames: Iterable[bytes | str | tuple[bytes | str, int | None]]
    ) -> tuple[list[Record], list[MessageError]]:
        """Every record of a batch of frames, errors collected instead of raised."""
        records: list[Record] = []
        errors: list[MessageError] = []
        parse_frame = self.parse_frame
        for frame in frames:
            raw, received_at = frame if isinstance(frame, tuple) else (frame, None)
            try:
                records.extend(parse_frame(raw, received_at))
            except MessageError as exc:
                errors.append(exc)
        return records, errors

    def frame_stream(self, payload: bytes) -> tuple[str, str, bool] | None:
        """(symbol, topic, replay starts here) of a landed frame, read from its bytes unparsed.

        The landing reader filters frames by symbol and topic with it, and starts a replay of
        a topic only at a frame a fresh adapter parses exactly as the live one did: every frame
        of a stateless topic, and a ``tickers`` frame only when it is the ``snapshot`` (its
        deltas are merged into the state the snapshot began). None when the frame names no
        topic (control frames): the reader then parses it.
        """
        i = payload.find(_TOPIC_KEY)
        if i < 0:
            return None
        j = i + len(_TOPIC_KEY)
        end = payload.find(b'"', j, j + 96)
        if end < 0:
            return None
        topic = payload[j:end].decode("ascii", "replace")
        kind, _, rest = topic.partition(".")
        if not rest:
            return None
        starts = kind != "tickers" or b'"type":"snapshot"' in payload
        return rest.rpartition(".")[2], topic, starts

    def stream_dataset(self, stream: str) -> str | None:
        """By the topic's kind: ``orderbook`` is depth, ``publicTrade`` trades, ``kline``
        candles, ``tickers`` funding (mark prices); anything else is unknown."""
        return _TOPIC_DATASETS.get(stream.partition(".")[0])

    def _parse_slow(self, data: bytes, received_at: int | None) -> list[Record]:
        """Control replies, error replies, unknown topics and re-serialised frames."""
        probe = PROBE_DECODER.decode(data)
        topic = probe.topic
        if topic is not None:
            if not isinstance(topic, str):
                raise MessageError("topic is not a string", field="topic")
            kind = topic.partition(".")[0]
            if kind not in DECODERS:
                raise UnknownMessageError(f"topic we do not handle: {topic[:64]!r}", field="topic")
            return self._convert[kind](DECODERS[kind].decode(data), received_at)
        if probe.op is not None:
            if probe.success is False:
                raise MessageError(f"exchange error reply: {probe.ret_msg!r}", field="success")
            return []  # subscribe ack, pong
        raise UnknownMessageError("neither a topic message nor a control reply")

    def _book(self, msg: Any, received_at: int | None) -> list[Record]:
        rec = to_book(msg, received_at)
        self.book_seq[rec.symbol] = msg.data.seq
        return [rec]

    def _ticker(self, msg: BybitTickerMsg, received_at: int | None) -> list[Record]:
        """Merge a tickers frame into the symbol's state; a record when funding fields moved."""
        symbol = topic_symbol(msg.topic, "tickers")
        d = msg.data
        if d.symbol != symbol:
            raise MessageError(
                f"topic symbol {symbol!r} but data is about {d.symbol!r}", field="data.symbol"
            )
        changed = {f: v for f in _FUNDING_FIELDS if (v := getattr(d, f)) is not None}
        if msg.type == "snapshot":
            state = self.tickers[symbol] = changed
        else:
            state = self.tickers.setdefault(symbol, {})
            if not changed:
                return []
            state.update(changed)
        mark = state.get("markPrice")
        if not mark:
            return []  # a delta before any snapshot told us the mark price
        return [
            MarkPriceRecord(
                exchange=EXCHANGE,
                symbol=symbol,
                event_time=msg.ts,
                mark_price=optional_decimal("data.markPrice", mark),  # type: ignore[arg-type]
                index_price=optional_decimal("data.indexPrice", state.get("indexPrice")),
                estimated_settle_price=None,
                funding_rate=optional_decimal(
                    "data.fundingRate", state.get("fundingRate"), rate=True
                ),
                next_funding_time=optional_ms("data.nextFundingTime", state.get("nextFundingTime")),
                received_at=received_at,
            )
        ]

    def fast_path(self) -> BybitFastPath:
        """The ingest's per-frame shortcut for order-book deltas (``exchanges/bybit/fastpath.py``);
        it keeps this adapter's ``book_seq`` as the full parser does."""
        return BybitFastPath(self.symbol_pattern, self.book_seq)

    # -- clients ----------------------------------------------------------------------------

    def rest_client(self, settings: Any) -> Any:
        """A ``BybitRestClient`` on ``settings.endpoints.rest_base_url`` with ``settings.rest``."""
        from petrosa_pipelines.exchanges.bybit.rest import BybitRestClient

        return BybitRestClient(settings.endpoints.rest_base_url, settings.rest)

    def archive_client(self, settings: Any) -> Any:
        """A ``BybitArchiveClient`` on ``settings.endpoints.vision_base_url`` (the archive host:
        ``https://public.bybit.com`` live; the book history host follows from it)."""
        from petrosa_pipelines.exchanges.bybit.archive import BybitArchiveClient

        return BybitArchiveClient(settings.endpoints.vision_base_url, settings.rest)


def _check_topics(streams: Sequence[str]) -> None:
    if not streams:
        raise ValueError("at least one topic is needed")
    if any(not isinstance(s, str) or s.count(".") < 1 for s in streams):
        raise ValueError(f"not Bybit topics: {list(streams)[:5]!r}")
    chars = sum(len(s) for s in streams)
    if chars > MAX_ARGS_CHARS:
        raise ValueError(f"{chars} characters of topics > {MAX_ARGS_CHARS} per connection")


def _control(op: str, streams: Sequence[str], request_id: int) -> bytes:
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
        raise ValueError(f"request id must be a non-negative int, got {request_id!r}")
    _check_topics(streams)
    if len(streams) > MAX_ARGS_PER_REQUEST:
        raise ValueError(
            f"{len(streams)} topics > {MAX_ARGS_PER_REQUEST} per request; use subscribe_messages"
        )
    return orjson.dumps({"op": op, "args": list(streams), "req_id": str(request_id)})
