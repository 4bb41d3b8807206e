"""The exchange adapter interface and the normalised records every adapter produces.

Everything downstream of an adapter (landing, partitioned assets, checks, analytics) sees only
these records and the dataset frames built from them, never an exchange's own field names.
Adding an exchange means one package under ``exchanges/`` and one line in ``EXCHANGES``; its
adapter declares where the live venue is (``default_endpoints``), so settings need no edit.

``RawTradeRecord`` (individual trades, Binance ``@trade``, the Petrosa socket-client's trade
stream) and ``TickerRecord`` (``@ticker``) are streamed by the ingest under the socket-client
stream profile (``exchanges/binance/adapter.py``); ``BookTickerRecord`` (best bid and ask,
``@bookTicker``) is parsed only. A raw trade keeps its print type (``trade_type``, Binance ``X``):
only ``MARKET`` prints are market trades (Binance's klines and aggTrades exclude insurance-fund
and ADL prints), so candles and trade statistics take ``frames.market_trades_frame`` while
``frames.raw_trades_to_frame`` keeps every print visible as its own row.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from petrosa_pipelines.lib.endpoints import ExchangeEndpoints

if TYPE_CHECKING:
    import pandas as pd


class Dataset(enum.StrEnum):
    """The four curated datasets; each is one partitioned asset."""

    TRADES = "trades"
    CANDLES = "candles"
    DEPTH = "depth"
    FUNDING = "funding"


class Source(enum.StrEnum):
    """Where a row came from (provenance per row)."""

    WS = "ws"
    REST = "rest"
    ARCHIVE = "archive"


class MessageError(ValueError):
    """A websocket or REST payload we cannot turn into a record.

    ``field`` names the offending field (or ``"<message>"`` for undecodable bytes), ``reason``
    says what was wrong, ``raw`` keeps the original bytes for the dead-letter store.
    """

    def __init__(self, reason: str, *, field: str = "<message>", raw: bytes | str | None = None):
        self.field = field
        self.reason = reason
        self.raw = raw
        super().__init__(f"{field}: {reason}")


class UnknownMessageError(MessageError):
    """A well-formed message of a type or stream we do not handle."""


class ExchangeError(RuntimeError):
    """An exchange answered with an error we cannot recover from by retrying."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# Normalised records. Times are integer milliseconds since the Unix epoch, UTC (Binance's own
# unit; no naive datetimes anywhere). Prices and quantities are Decimal: parsed from the
# exchange's decimal strings without rounding. ``received_at`` is our receipt time in ms.
# ---------------------------------------------------------------------------------------------


class TradeRecord(msgspec.Struct, frozen=True, gc=False):
    """One (aggregate) trade. Natural key: (exchange, symbol, trade_id or agg_trade_id)."""

    exchange: str
    symbol: str
    agg_trade_id: int
    price: Decimal
    quantity: Decimal
    first_trade_id: int
    last_trade_id: int
    trade_time: int
    is_buyer_maker: bool
    event_time: int | None = None
    source: str = Source.WS
    received_at: int | None = None
    #: the venue's own trade id as text, the natural key where ids are not consecutive
    #: integers (Bybit: a UUID); None where ``agg_trade_id`` is the venue's id (Binance)
    trade_id: str | None = None


class CandleRecord(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV candle. Natural key: (exchange, symbol, interval, open_time)."""

    exchange: str
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    is_closed: bool = True
    event_time: int | None = None
    source: str = Source.WS
    received_at: int | None = None


class DepthUpdateRecord(msgspec.Struct, frozen=True, gc=False):
    """One order-book diff. ``prev_final_update_id`` is Binance's ``pu`` (None where absent)."""

    exchange: str
    symbol: str
    event_time: int
    transaction_time: int | None
    first_update_id: int
    final_update_id: int
    prev_final_update_id: int | None
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    received_at: int | None = None


class DepthSnapshotRecord(msgspec.Struct, frozen=True, gc=False):
    """A book snapshot (levels best first): from REST, a checkpoint of our own book, or sent
    by the venue in its stream.

    ``in_stream``: the venue sent it in the stream (Binance partial depth ``@depth20@100ms``:
    the top levels every 100 ms), so it replaces the book in its place among the stream's
    messages whatever the venue's ``book_snapshot_in_stream`` capability says about its diff
    stream. ``prev_update_id`` is the ``pu`` of such a snapshot (the ``u`` of the stream's
    previous message): a snapshot whose ``pu`` is not the book's last ``u`` follows missed
    messages (a sequence break, ``landing.book.BookSync``). None where the venue sends none.
    """

    exchange: str
    symbol: str
    last_update_id: int
    event_time: int | None
    transaction_time: int | None
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    received_at: int | None = None
    prev_update_id: int | None = None
    in_stream: bool = False


class MarkPriceRecord(msgspec.Struct, frozen=True, gc=False):
    """A mark-price sample (``markPriceUpdate``): carries the predicted funding rate."""

    exchange: str
    symbol: str
    event_time: int
    mark_price: Decimal
    index_price: Decimal | None
    estimated_settle_price: Decimal | None
    funding_rate: Decimal | None
    next_funding_time: int | None
    received_at: int | None = None


class TradeType(enum.StrEnum):
    """What kind of print a raw trade is (Binance's ``X`` on the futures ``@trade`` stream).

    Only ``MARKET`` prints are market trades: Binance's klines and aggTrades leave the others
    out, so candles and trade statistics must too. Values outside this list are kept as sent.
    """

    MARKET = "MARKET"
    INSURANCE_FUND = "INSURANCE_FUND"  # the insurance fund taking over a liquidated position
    ADL = "ADL"  # auto-deleveraging
    NA = "NA"


class RawTradeRecord(msgspec.Struct, frozen=True, gc=False):
    """One individual trade (``@trade``). Natural key: (exchange, symbol, trade_id).

    ``trade_type`` is Binance's ``X``: every print is kept with its type, and only
    ``TradeType.MARKET`` ones may enter candles or trade statistics (``is_market``).
    """

    exchange: str
    symbol: str
    trade_id: int
    price: Decimal
    quantity: Decimal
    trade_time: int
    is_buyer_maker: bool
    trade_type: str = TradeType.MARKET
    event_time: int | None = None
    source: str = Source.WS
    received_at: int | None = None

    @property
    def is_market(self) -> bool:
        return self.trade_type == TradeType.MARKET


class BookTickerRecord(msgspec.Struct, frozen=True, gc=False):
    """Best bid and ask (``@bookTicker``): the cheapest exact top of book.

    ``update_id`` is the order book's update id (same sequence as depth diffs' ``u``), so a
    book ticker can be ordered against diffs. Natural key: (exchange, symbol, update_id).
    """

    exchange: str
    symbol: str
    update_id: int
    bid_price: Decimal
    bid_quantity: Decimal
    ask_price: Decimal
    ask_quantity: Decimal
    transaction_time: int | None
    event_time: int | None
    received_at: int | None = None


class TickerRecord(msgspec.Struct, frozen=True, gc=False):
    """24-hour rolling statistics of one instrument (Binance ``@ticker``, ``24hrTicker``).

    Feeds no dataset: it is landed (the raw frame is kept), tells the ingest the feed is alive
    and gives the latest traded price to whoever wants it (a cache). Natural key: (exchange,
    symbol, event_time).
    """

    exchange: str
    symbol: str
    event_time: int
    last_price: Decimal
    last_quantity: Decimal
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    volume: Decimal
    quote_volume: Decimal
    open_time: int
    close_time: int
    first_trade_id: int
    last_trade_id: int
    trade_count: int
    received_at: int | None = None


class FundingRecord(msgspec.Struct, frozen=True, gc=False):
    """A settled funding event. Natural key: (exchange, symbol, funding_time)."""

    exchange: str
    symbol: str
    funding_time: int
    funding_rate: Decimal
    mark_price: Decimal | None
    source: str = Source.REST
    received_at: int | None = None


Record = (
    TradeRecord
    | CandleRecord
    | DepthUpdateRecord
    | DepthSnapshotRecord
    | MarkPriceRecord
    | FundingRecord
    | RawTradeRecord
    | BookTickerRecord
    | TickerRecord
)


#: the record type of each dataset's usual stream (``ExchangeAdapter.stream_record_type``)
STREAM_RECORD_TYPES: dict[str, type] = {
    "trades": TradeRecord,
    "candles": CandleRecord,
    "depth": DepthUpdateRecord,
    "funding": MarkPriceRecord,
}


@dataclass(frozen=True)
class SymbolInfo:
    """What the exchange says about one instrument (from exchangeInfo)."""

    symbol: str
    base_asset: str
    quote_asset: str
    contract_type: str
    status: str
    tick_size: Decimal
    step_size: Decimal
    onboard_time: int | None = None
    #: base units per contract (1 for linear USDT perpetuals quoted in the base asset)
    contract_size: Decimal = Decimal(1)
    #: how often funding settles for this instrument (Bybit varies it per symbol), None: unknown
    funding_interval_ms: int | None = None

    @property
    def is_trading_perpetual(self) -> bool:
        return self.contract_type == "PERPETUAL" and self.status == "TRADING"


@dataclass(frozen=True)
class RateLimit:
    """One entry of exchangeInfo ``rateLimits``."""

    kind: str  # REQUEST_WEIGHT / ORDERS / RAW_REQUESTS
    interval: str  # SECOND / MINUTE / DAY
    interval_num: int
    limit: int


@dataclass(frozen=True)
class ExchangeInfo:
    server_time: int | None
    symbols: tuple[SymbolInfo, ...]
    rate_limits: tuple[RateLimit, ...]

    def perpetual_symbols(self) -> list[str]:
        return sorted(s.symbol for s in self.symbols if s.is_trading_perpetual)

    def weight_limit_per_minute(self, default: int = 2400) -> int:
        for r in self.rate_limits:
            if r.kind == "REQUEST_WEIGHT" and r.interval == "MINUTE":
                return r.limit // max(r.interval_num, 1)
        return default


@dataclass(frozen=True)
class ArchiveSpec:
    """One bulk-history archive a venue publishes for a dataset."""

    dataset: str
    #: "daily" or "monthly" files
    granularity: str
    #: whether each file has a published checksum (Binance Vision: ``.CHECKSUM``; Bybit: none)
    checksums: bool
    #: where the files live, for humans (e.g. ``https://public.bybit.com/trading/``)
    url: str


@dataclass(frozen=True)
class Capabilities:
    """What a venue guarantees, declared once by its adapter and asked by every layer.

    The ingest, landing, the partition fill, the checks and the local exchange read these
    instead of assuming Binance: e.g. a trade-id gap is evidence of a lost trade only where
    ``trade_ids_consecutive``; a depth partition before the ingest started is unrecoverable
    unless ``depth_history``.
    """

    #: the datasets the venue serves (``Dataset`` values)
    datasets: frozenset[str]
    #: dataset -> how far back REST answers in ms (None: from the listing on); absent: no REST
    rest_reach_ms: Mapping[str, int | None]
    #: the bulk archives, if any
    archives: tuple[ArchiveSpec, ...] = ()
    #: trade ids are consecutive integers per symbol, so a missing id is a lost trade
    trade_ids_consecutive: bool = False
    #: book history exists somewhere (REST or archive), so old depth partitions can be filled
    depth_history: bool = False
    #: the websocket sends book snapshots itself (Bybit ``type: snapshot``), so no REST
    #: snapshot is needed and an in-stream snapshot replaces the book
    book_snapshot_in_stream: bool = False
    #: the funding sources (``Source`` values) whose settlements carry a mark price; rows
    #: from any other source are not held to having one (Binance's Vision archive has none,
    #: Bybit's REST funding history has none)
    funding_mark_price_sources: frozenset[str] = frozenset()
    #: the venue sends a book checksum to verify against (OKX ``checksum``)
    book_checksum: bool = False
    #: the client must send application pings this often (None: the server pings us)
    ping_interval_s: float | None = None
    #: datasets whose landed frames only parse as they did live after an earlier start frame
    #: (Bybit ``tickers`` deltas merge into their snapshot): a landing replay of them starts
    #: far enough back to find one (``ExchangeAdapter.frame_stream`` says which frame starts)
    stateful_replay: frozenset[str] = frozenset()

    def archive_for(self, dataset: str) -> ArchiveSpec | None:
        return next((a for a in self.archives if a.dataset == dataset), None)


class ExchangeAdapter(abc.ABC):
    """One exchange: its endpoints, its stream names and its message parsers.

    Subclasses are mostly declarative (the channel map and default URLs); the parsing hot path
    is one ``parse`` method that turns raw websocket bytes into records.

    ``venue`` is the instrument namespace (``binance-usdm``, ``bybit-linear``: exchange and
    market), the first part of every instrument id (``petrosa_pipelines.instruments``).
    ``name`` is the venue's directory in the lake, landing zone and warehouse rows (the
    ``exchange`` of every record); Binance USD-M keeps its historic ``binance`` so existing
    lakes are read unchanged.
    """

    venue: ClassVar[str]
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: a symbol as the venue spells it (validated per venue, not by one regex for all)
    symbol_pattern: ClassVar[re.Pattern[str]]
    #: dataset -> stream name template (``{symbol}`` lowercased, ``{interval}``)
    channels: ClassVar[dict[str, str]]
    #: the stream kind (a key of ``channels``) the ingest always carries, whatever datasets a
    #: group streams: its regular ticks tell a live feed from a dead one (Binance's 1 s mark
    #: price; the socket-client profile's ``@ticker``)
    liveness_stream: ClassVar[str] = "funding"
    #: where the live venue is (REST, websocket, archive base URLs): the settings' endpoints of
    #: this venue until ``PETROSA_<VENUE>_{REST,WS,ARCHIVE}_BASE_URL`` override them
    #: (``settings.endpoints_for``). None: no live default, those variables must be set
    #: (``settings.live_endpoints`` raises an error naming them). Read it through
    #: ``declared_endpoints``: a subclass naming another venue does not inherit it
    default_endpoints: ClassVar[ExchangeEndpoints | None] = None

    @classmethod
    def declared_endpoints(cls) -> ExchangeEndpoints | None:
        """``default_endpoints`` as declared for this venue (``declared_endpoints`` below)."""
        return declared_endpoints(cls)

    def stream_dataset(self, stream: str) -> str | None:
        """The channel (a key of ``channels``: a dataset, or a liveness stream such as
        ``ticker``) whose frames ``stream`` (as ``frame_stream`` names it) carries. A landing
        read of one dataset skips the others' frames unparsed (a day of trades is a tenth of
        the day's frames; the book diffs are most of the rest and the dearest to parse), and
        a NATS group drops the streams of channels it does not carry (``StreamFilter``).
        None, the default, is "unknown": the frame is parsed and handed on as any other."""
        return None

    def feeds_book(self, stream: str) -> bool | None:
        """Whether frames of ``stream`` can carry order-book data (``stream_dataset``):
        False lets a book replay skip them unparsed; None is "unknown"."""
        dataset = self.stream_dataset(stream)
        return None if dataset is None else dataset == "depth"

    def stream_record_type(self, kind: str) -> type:
        """The record type the stream of a dataset (or ``liveness_stream``) parses into; the
        ingest keys its per-stream state by it (``ingest/subscriptions.py``)."""
        return STREAM_RECORD_TYPES[kind]

    @abc.abstractmethod
    def stream_names(self, symbols: Sequence[str], datasets: Iterable[str]) -> list[str]:
        """The exchange's stream names for these symbols and datasets."""

    @abc.abstractmethod
    def combined_stream_url(self, ws_base_url: str, streams: Sequence[str]) -> str:
        """One websocket URL subscribing to all ``streams`` at once."""

    def initial_messages(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """Frames to send right after connecting (venues that subscribe in-band, like Bybit)."""
        return []

    def ping_message(self) -> bytes | None:
        """The application ping to send every ``capabilities.ping_interval_s`` (None: none)."""
        return None

    @abc.abstractmethod
    def subscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """The frame that subscribes an open connection to more streams."""

    @abc.abstractmethod
    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        """The frame that unsubscribes an open connection from streams."""

    @abc.abstractmethod
    def parse(self, raw: bytes | str, received_at: int | None = None) -> Record | None:
        """Decode one websocket frame into a record.

        Returns None for control frames (subscription acks). Raises ``MessageError`` (or
        ``UnknownMessageError``) naming the field for anything malformed or unknown.
        """

    def parse_frame(self, raw: bytes | str, received_at: int | None = None) -> list[Record]:
        """Every record in one websocket frame (empty for control frames).

        Venues that batch several events in one frame (Bybit ``publicTrade``: every fill of a
        taker order) override this; the ingest and the landing replay call it, never assume
        one record per frame.
        """
        record = self.parse(raw, received_at)
        return [] if record is None else [record]

    def frame_stream(self, payload: bytes) -> tuple[str, str, bool] | None:
        """(symbol, stream, a replay of the stream may start here) of a landed frame, read
        from its bytes without parsing; None: the frame names none, the reader parses it.

        The landing reader filters frames by symbol with it and lists a day's symbols, so a
        venue reads its own framing (Binance ``{"stream":"btcusdt@aggTrade"``, Bybit
        ``"topic":"publicTrade.BTCUSDT"``) and the reader knows none. The flag is False only
        for frames of a ``capabilities.stateful_replay`` dataset that a fresh adapter cannot
        parse as the live one did (Bybit ticker deltas before their snapshot). Default: None
        for every frame (the reader parses each one).
        """
        return None

    def fast_path(self) -> Any:
        """An optional per-frame shortcut for the ingest's hot path (None: parse every frame).

        Its interface is described in ``ingest/hotpath.py``; Binance's is
        ``exchanges/binance/fastpath.py``.
        """
        return None

    @abc.abstractmethod
    def rest_client(self, settings: Any) -> Any:
        """A REST history client for this exchange configured from ``settings``."""

    @abc.abstractmethod
    def archive_client(self, settings: Any) -> Any:
        """A client for the exchange's bulk history archives (None when it has none)."""

    def history_frame(self, dataset: str, frame: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover
        """Hook for exchange-specific clean-up of history frames (default: unchanged)."""
        return frame


def declared_endpoints(adapter: type) -> ExchangeEndpoints | None:
    """The live endpoints ``adapter`` (a registered class) declares for its own venue: its
    ``default_endpoints``, set by the class or by a base class of the same ``venue``. A subclass
    that names another venue (an adapter reused for a new venue) must declare its own:
    inheriting would point it at the other venue's hosts. None: no live default."""
    venue = getattr(adapter, "venue", None)
    for klass in getattr(adapter, "__mro__", (adapter,)):
        if "default_endpoints" in vars(klass):
            same_venue = getattr(klass, "venue", None) == venue
            return klass.default_endpoints if same_venue else None
    return None
