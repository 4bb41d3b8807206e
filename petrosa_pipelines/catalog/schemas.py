"""Column schemas of the curated datasets, versioned.

Prices and quantities are stored as float64 in the lake: Binance sends at most 8 decimals and
fewer than 16 significant digits, so the shortest float repr gives back the exact decimal string
(tested on the real recordings). The records the adapters produce keep ``Decimal``.
A change that removes, renames or retypes a column must raise ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    version: int
    description: str
    natural_key: tuple[str, ...]
    time_column: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def empty_frame(self) -> pd.DataFrame:
        return conform(self.arrow_schema().empty_table().to_pandas(), self)


_COMMON_HEAD = (
    Column("exchange", pa.string(), "Exchange adapter name, e.g. binance (USD-M futures)."),
    Column("symbol", pa.string(), "Exchange symbol in upper case, e.g. BTCUSDT."),
)
_PROVENANCE = (
    Column("source", pa.string(), "Where the row came from: ws, rest or archive."),
    Column("received_at", TS, "When we received the row (ws/rest); null for archives.", True),
)

TRADES = DatasetSchema(
    name="trades",
    version=1,
    description="Aggregate trades (Binance aggTrade), one row per aggregate trade.",
    natural_key=("exchange", "symbol", "agg_trade_id"),
    time_column="trade_time",
    columns=(
        *_COMMON_HEAD,
        Column("agg_trade_id", pa.int64(), "Aggregate trade id; consecutive per symbol."),
        Column("price", pa.float64(), "Trade price in quote asset."),
        Column("quantity", pa.float64(), "Trade quantity in base asset."),
        Column("first_trade_id", pa.int64(), "First underlying trade id."),
        Column("last_trade_id", pa.int64(), "Last underlying trade id."),
        Column("trade_time", TS, "Matching-engine time of the trade (UTC)."),
        Column("is_buyer_maker", pa.bool_(), "True when the buyer was the maker (a sell print)."),
        *_PROVENANCE,
    ),
)

CANDLES = DatasetSchema(
    name="candles",
    version=1,
    description="Closed OHLCV candles (1m in the base dataset); 1440 rows per symbol-day.",
    natural_key=("exchange", "symbol", "interval", "open_time"),
    time_column="open_time",
    columns=(
        *_COMMON_HEAD,
        Column("interval", pa.string(), "Candle interval, e.g. 1m."),
        Column("open_time", TS, "Start of the interval (inclusive, UTC)."),
        Column("close_time", TS, "End of the interval (Binance: open_time + interval - 1 ms)."),
        Column("open", pa.float64(), "First trade price of the interval."),
        Column("high", pa.float64(), "Highest trade price."),
        Column("low", pa.float64(), "Lowest trade price."),
        Column("close", pa.float64(), "Last trade price."),
        Column("volume", pa.float64(), "Traded base-asset volume."),
        Column("quote_volume", pa.float64(), "Traded quote-asset volume."),
        Column("trade_count", pa.int64(), "Number of trades."),
        Column("taker_buy_volume", pa.float64(), "Base volume bought by takers."),
        Column("taker_buy_quote_volume", pa.float64(), "Quote volume bought by takers."),
        *_PROVENANCE,
    ),
)

DEPTH = DatasetSchema(
    name="depth",
    version=1,
    description=(
        "Top-N order-book snapshots sampled at a fixed cadence from a book kept in sync with "
        "Binance's diff stream; one row per (snapshot, side, level). **Cannot be backfilled**: "
        "no exchange serves order-book history (no REST endpoint, no archive), so a partition "
        "holds only what the websocket ingest landed that day. Materialising a day the ingest "
        "did not cover succeeds with an empty partition whose metadata says "
        "`history_available: false` and `depth_coverage: none`, with a note."
    ),
    natural_key=("exchange", "symbol", "snapshot_time", "side", "level"),
    time_column="snapshot_time",
    columns=(
        *_COMMON_HEAD,
        Column("snapshot_time", TS, "Sample time of the book (UTC)."),
        Column("last_update_id", pa.int64(), "Binance update id the book reflects."),
        Column("side", pa.string(), "bid or ask."),
        Column("level", pa.int64(), "0 = best price on that side."),
        Column("price", pa.float64(), "Level price."),
        Column("quantity", pa.float64(), "Resting quantity at that price."),
        *_PROVENANCE,
    ),
)

FUNDING = DatasetSchema(
    name="funding",
    version=1,
    description="Settled funding-rate events (every 8 h on most Binance perpetuals).",
    natural_key=("exchange", "symbol", "funding_time"),
    time_column="funding_time",
    columns=(
        *_COMMON_HEAD,
        Column("funding_time", TS, "Settlement time (UTC)."),
        Column("funding_rate", pa.float64(), "Funding rate paid by longs to shorts."),
        Column("mark_price", pa.float64(), "Mark price at settlement (null when unknown).", True),
        *_PROVENANCE,
    ),
)

DATASETS: dict[str, DatasetSchema] = {s.name: s for s in (TRADES, CANDLES, DEPTH, FUNDING)}

#: Individual trades of Binance's ``@trade`` stream (hftbacktest-style captures; the NATS feed
#: of a later issue). Not a partitioned asset (yet), so not in ``DATASETS``: frames are built by
#: ``exchanges.frames.raw_trades_to_frame``. Every print is a row, its type in ``trade_type``;
#: only ``MARKET`` prints may feed candles and trade statistics
#: (``exchanges.frames.market_trades_frame``), as in Binance's own klines.
RAW_TRADES = DatasetSchema(
    name="raw_trades",
    version=1,
    description="Individual trades (Binance trade stream), every print with its type (X).",
    natural_key=("exchange", "symbol", "trade_id"),
    time_column="trade_time",
    columns=(
        *_COMMON_HEAD,
        Column("trade_id", pa.int64(), "Trade id; consecutive per symbol."),
        Column("price", pa.float64(), "Trade price in quote asset."),
        Column("quantity", pa.float64(), "Trade quantity in base asset."),
        Column("trade_time", TS, "Matching-engine time of the trade (UTC)."),
        Column("is_buyer_maker", pa.bool_(), "True when the buyer was the maker (a sell print)."),
        Column(
            "trade_type",
            pa.string(),
            "Print type (Binance X): MARKET, or INSURANCE_FUND / ADL / NA, which Binance's "
            "klines leave out.",
        ),
        *_PROVENANCE,
    ),
)


def dataset_schema(name: str) -> DatasetSchema:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


_PANDAS_TYPES = {
    pa.string(): "string",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.bool_(): "bool",
}


def conform(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Select and order the schema's columns and give each its declared dtype."""
    missing = [c for c in schema.column_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{schema.name}: frame lacks columns {missing}")
    out = frame.loc[:, schema.column_names].copy()
    for col in schema.columns:
        if col.type == TS:
            out[col.name] = pd.to_datetime(out[col.name], utc=True).astype("datetime64[ms, UTC]")
        elif col.nullable and col.type == pa.float64():
            out[col.name] = pd.to_numeric(out[col.name], errors="raise").astype("float64")
        else:
            out[col.name] = out[col.name].astype(_PANDAS_TYPES[col.type])
    return out.reset_index(drop=True)
