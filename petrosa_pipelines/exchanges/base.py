"""The exchange adapter interface and the normalised records every adapter produces.

Everything downstream of an adapter (landing, partitioned assets, checks, analytics) sees only
these records and the dataset frames built from them, never an exchange's own field names.
Adding an exchange means one module under ``exchanges/`` and one line in ``EXCHANGES``.

Two records are parsed but not (yet) subscribed by the ingest: ``RawTradeRecord`` (individual
trades, Binance ``@trade``, as in hftbacktest-style captures) and ``BookTickerRecord`` (best bid
and ask, ``@bookTicker``). A raw trade keeps its print type (``trade_type``, Binance ``X``):
only ``MARKET`` prints are market trades (Binance's klines and aggTrades exclude insurance-fund
and ADL prints), so candles and trade statistics take ``frames.market_trades_frame`` while
``frames.raw_trades_to_frame`` keeps every print visible as its own row. Both records are the
foundation for consuming those streams live (landing them is a later issue's).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

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
    """One aggregate trade. Natural key: (exchange, symbol, agg_trade_id)."""

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
    """A full book snapshot from REST (levels best first)."""

    exchange: str
    symbol: str
    last_update_id: int
    event_time: int | None
    transaction_time: int | None
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    received_at: int | None = None


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
)


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


class ExchangeAdapter(abc.ABC):
    """One exchange: its endpoints, its stream names and its message parsers.

    Subclasses are mostly declarative (the channel map and default URLs); the parsing hot path
    is one ``parse`` method that turns raw websocket bytes into records.
    """

    name: ClassVar[str]
    #: dataset -> stream name template (``{symbol}`` lowercased, ``{interval}``)
    channels: ClassVar[dict[str, str]]

    @abc.abstractmethod
    def stream_names(self, symbols: Sequence[str], datasets: Iterable[str]) -> list[str]:
        """The exchange's stream names for these symbols and datasets."""

    @abc.abstractmethod
    def combined_stream_url(self, ws_base_url: str, streams: Sequence[str]) -> str:
        """One websocket URL subscribing to all ``streams`` at once."""

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

    @abc.abstractmethod
    def rest_client(self, settings: Any) -> Any:
        """A REST history client for this exchange configured from ``settings``."""

    @abc.abstractmethod
    def archive_client(self, settings: Any) -> Any:
        """A client for the exchange's bulk history archives (None when it has none)."""

    def history_frame(self, dataset: str, frame: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover
        """Hook for exchange-specific clean-up of history frames (default: unchanged)."""
        return frame
