"""Column schemas of the curated datasets, versioned.

Prices and quantities are stored as float64 in the lake: Binance sends at most 8 decimals and
fewer than 16 significant digits, so the shortest float repr gives back the exact decimal string
(tested on the real recordings). The records the adapters produce keep ``Decimal``.
A change that removes, renames or retypes a column must raise ``version``.

Trades v2 added ``trade_id``, the venue's own trade id as text and the natural key: Bybit's ids
are UUIDs with no order, so ``agg_trade_id`` cannot identify a Bybit trade across sources. On
Binance the aggregate id is the venue's id, so its ``trade_id`` is that id's decimal text.
``conform`` fills the column where a frame lacks it (v1 lake files, Binance frames built
without it), so a v1 partition reads as v2 with the same rows, and re-materialising it gives
the same rows again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from petrosa_pipelines.catalog.depth_layout import as_float_lists, from_long, is_long

TS = pa.timestamp("ms", tz="UTC")
#: a side's levels in one cell (depth v2): float64 values, best price first
LEVELS = pa.list_(pa.float64())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = False
    #: ``conform`` derives it where a frame lacks it (trades' ``trade_id``), so a builder of
    #: frames may leave it out
    derived: bool = False


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    version: int
    description: str
    natural_key: tuple[str, ...]
    time_column: str
    columns: tuple[Column, ...]
    #: row order of a partition after the time column (default: the natural key); trades keep
    #: the numeric aggregate id first so Binance partitions keep their v1 order
    order_after_time: tuple[str, ...] | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def sort_columns(self) -> list[str]:
        """The columns a partition is sorted by: time, then ``order_after_time`` or the key."""
        rest = self.order_after_time or self.natural_key
        return [self.time_column, *[k for k in rest if k != self.time_column]]

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
    version=2,
    description=(
        "Trades, one row per (aggregate) trade: Binance aggTrades, Bybit publicTrade fills. "
        "Keyed by the venue's own trade id (`trade_id`)."
    ),
    natural_key=("exchange", "symbol", "trade_id"),
    time_column="trade_time",
    order_after_time=("exchange", "symbol", "agg_trade_id", "trade_id"),
    columns=(
        *_COMMON_HEAD,
        Column(
            "agg_trade_id",
            pa.int64(),
            "Aggregate trade id. Consecutive per symbol only where the venue says so "
            "(Binance: a missing id is a lost trade); Bybit: seq * 1000 + position in its "
            "message when the source has seq (ws, REST), else 0 (archive).",
        ),
        Column("price", pa.float64(), "Trade price in quote asset."),
        Column("quantity", pa.float64(), "Trade quantity in base asset."),
        Column("first_trade_id", pa.int64(), "First underlying trade id."),
        Column("last_trade_id", pa.int64(), "Last underlying trade id."),
        Column("trade_time", TS, "Matching-engine time of the trade (UTC)."),
        Column("is_buyer_maker", pa.bool_(), "True when the buyer was the maker (a sell print)."),
        *_PROVENANCE,
        Column(
            "trade_id",
            pa.string(),
            "The venue's own trade id as text, the natural key: Binance the aggregate id's "
            "decimal text (filled on read for v1 files), Bybit the trade's UUID (`i`, the "
            "archive's `trdMatchID`). Last column so v1 tables gain it in place.",
            derived=True,
        ),
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
    version=2,
    description=(
        "Top-N order-book snapshots sampled at a fixed cadence from a book kept in sync with "
        "the venue's book stream; one row per snapshot, each side's levels as lists (best "
        "price first). Version 1 had one row per (snapshot, side, level), 40x the rows at "
        "top 20; its files are read as version 2 (`catalog/depth_layout.py`), and "
        "`api.load_depth(layout='long')` gives that layout back. **Backfillable only "
        "where the venue keeps book history**: Bybit publishes daily order-book files, so a "
        "Bybit day is filled from them where the ingest did not land it (`source` archive); "
        "Binance serves no order-book history (no REST endpoint, no archive), so a Binance "
        "partition holds only what the websocket ingest landed that day. Materialising a day "
        "no source covers succeeds with an empty partition whose metadata says "
        "`history_available: false` and `depth_coverage: none`, with a note."
    ),
    natural_key=("exchange", "symbol", "snapshot_time"),
    time_column="snapshot_time",
    columns=(
        *_COMMON_HEAD,
        Column("snapshot_time", TS, "Sample time of the book (UTC)."),
        Column("last_update_id", pa.int64(), "The venue's book update id the sample reflects."),
        Column("bid_price", LEVELS, "Bid prices, best (highest) first; level i is index i."),
        Column("bid_quantity", LEVELS, "Resting quantity at each bid price."),
        Column("ask_price", LEVELS, "Ask prices, best (lowest) first; level i is index i."),
        Column("ask_quantity", LEVELS, "Resting quantity at each ask price."),
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


def with_trade_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """A trades frame whose ``trade_id`` is filled: absent or null ids become the decimal text
    of ``agg_trade_id`` (Binance's own id; v1 lake files have no ``trade_id``).

    Frames without ``agg_trade_id`` (other datasets) are returned unchanged, so every reader of
    the lake may call this on whatever it read. Adapters of venues whose ids are not their
    aggregate ids (Bybit) always set ``trade_id``.
    """
    if "agg_trade_id" not in frame.columns:
        return frame
    if "trade_id" in frame.columns:
        ids = frame["trade_id"]
        holes = ids.isna().to_numpy()
        if not holes.any():
            return frame
        frame = frame.copy()
        filled = ids.astype("object").to_numpy(copy=True)
        filled[holes] = frame["agg_trade_id"].to_numpy()[holes].astype("int64").astype(str)
        frame["trade_id"] = filled
        return frame
    frame = frame.copy(deep=False)  # copy-on-write: the other columns are shared, not copied
    frame["trade_id"] = id_text(frame["agg_trade_id"].to_numpy().astype("int64", copy=False))
    return frame


#: rows per shared block of a constant text column (``constant_chunks``)
CONSTANT_BLOCK = 1 << 16


def constant_chunks(value: str, n: int, type_: pa.DataType | None = None) -> pa.ChunkedArray:
    """``n`` rows of ``value`` (``type_``, large_string by default) as chunks that all reference
    one block of ``CONSTANT_BLOCK`` values (zero-copy slices): what a column of one exchange,
    symbol or source is, at the memory of a few thousand rows."""
    type_ = type_ or pa.large_string()
    block = pa.repeat(pa.scalar(value, type_), min(n, CONSTANT_BLOCK))
    full, rest = divmod(n, CONSTANT_BLOCK) if n > CONSTANT_BLOCK else (0, n)
    chunks = [block] * full + ([block.slice(0, rest)] if rest else [])
    return pa.chunked_array(chunks, type=type_)


def id_text(ids: np.ndarray) -> pd.arrays.ArrowStringArray:
    """Integer ids as their decimal text (``str`` dtype, as ``ndarray.astype(str)`` gives),
    cast by arrow: no fixed-width unicode array of 80 bytes a row on the way."""
    text = pc.cast(pa.array(ids), pa.large_string())
    return pd.arrays.ArrowStringArray(
        pa.chunked_array([text]), dtype=pd.StringDtype("pyarrow", na_value=np.nan)
    )


def conform(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Select and order the schema's columns and give each its declared dtype (depth in the
    version 1 layout is turned into version 2 first)."""
    if schema.name == "trades":
        frame = with_trade_ids(frame)
    elif schema.name == "depth" and is_long(frame):
        frame = from_long(frame)
    missing = [c for c in schema.column_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{schema.name}: frame lacks columns {missing}")
    # copy-on-write: a column already of its dtype is shared, the others are replaced
    out = frame.loc[:, schema.column_names].copy(deep=False)
    for col in schema.columns:
        if col.type == TS:
            if str(out[col.name].dtype) == "datetime64[ms, UTC]":
                continue  # already so: a day's column is not copied again
            out[col.name] = pd.to_datetime(out[col.name], utc=True).astype("datetime64[ms, UTC]")
        elif col.type == LEVELS:
            out[col.name] = as_float_lists(out[col.name])
        elif col.nullable and col.type == pa.float64():
            out[col.name] = pd.to_numeric(out[col.name], errors="raise").astype("float64")
        else:
            out[col.name] = out[col.name].astype(_PANDAS_TYPES[col.type])
    return out.reset_index(drop=True)
