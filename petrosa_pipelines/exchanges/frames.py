"""Normalised records -> lake frames (catalog schemas), and settled funding from mark prices.

Frames are built column by column (one C-level transpose of the records, then numpy arrays),
never as per-row dicts: a day of BTCUSDT aggTrades is millions of records. Decimal becomes
float64 here and only here; the catalog explains why that is lossless for Binance's decimals.

Raw trades (``@trade``, ``RawTradeRecord``) reach frames two ways, by design:

* ``raw_trades_to_frame``: every print, its type in ``trade_type`` (catalog ``RAW_TRADES``), so an
  insurance-fund or ADL print stays visible as its own row;
* ``market_trades_frame``: only ``MARKET`` prints, in the aggTrade ``TRADES`` layout (each trade
  its own aggregate), the input of candles-from-trades and trade statistics. Binance's klines
  and aggTrades leave the other prints out: on 2023-04-05 00:01 an ``INSURANCE_FUND`` print at
  28722.50 (the market traded 28141-28154) would otherwise be the candle's high.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from petrosa_pipelines.catalog.depth_layout import LEVEL_COLUMNS
from petrosa_pipelines.catalog.schemas import (
    DEPTH,
    RAW_TRADES,
    TRADES,
    TS,
    DatasetSchema,
    conform,
    dataset_schema,
)
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    Dataset,
    DepthSnapshotRecord,
    FundingRecord,
    MarkPriceRecord,
    RawTradeRecord,
    Record,
    Source,
    TradeRecord,
)

_NAT = np.iinfo(np.int64).min  # datetime64's NaT as an int64

_RECORD_TYPES: dict[str, type] = {
    Dataset.TRADES: TradeRecord,
    Dataset.CANDLES: CandleRecord,
    Dataset.FUNDING: FundingRecord,
}


def _ms_to_utc(values: Sequence[int | None]) -> pd.Series:
    """Epoch milliseconds (None -> NaT) as a ``datetime64[ms, UTC]`` series."""
    try:
        ints = np.fromiter(values, np.int64, len(values))
    except TypeError:  # some None
        ints = np.fromiter((_NAT if v is None else v for v in values), np.int64, len(values))
    return pd.Series(ints.astype("datetime64[ms]")).dt.tz_localize("UTC")


def _to_float(values: Sequence[Decimal | None]) -> np.ndarray:
    """Decimals -> float64 (None -> NaN); float(Decimal) is correctly rounded."""
    try:
        return np.fromiter(map(float, values), np.float64, len(values))
    except TypeError:  # some None
        return np.fromiter(
            (np.nan if v is None else float(v) for v in values), np.float64, len(values)
        )


def _columns(records: Sequence[Any], record_type: type) -> dict[str, list[Any]]:
    """One list per field, each gathered by a C-level attrgetter map."""
    stray = set(map(type, records)) - {record_type}
    if stray:
        names = sorted(t.__name__ for t in stray)
        raise TypeError(f"expected only {record_type.__name__}, got {names}")
    return {f: list(map(attrgetter(f), records)) for f in record_type.__struct_fields__}


def records_to_frame(dataset: str, records: Sequence[Record]) -> pd.DataFrame:
    """Trades, candles or funding records as a frame conforming to the catalog schema.

    Candles that are not closed (``is_closed`` False, in-progress kline updates) are dropped:
    only closed candles enter the lake, and the lake schema cannot tell them apart. Depth
    has its own layout: use ``depth_snapshots_to_frame``. A trade without ``trade_id``
    (Binance, whose aggregate id is its id) gets the aggregate id's text (``conform``).
    """
    if dataset == Dataset.DEPTH:
        raise ValueError("depth frames are built from snapshots: use depth_snapshots_to_frame")
    schema = dataset_schema(dataset)
    if dataset == Dataset.CANDLES:
        records = [r for r in records if getattr(r, "is_closed", True)]
    if not records:
        return schema.empty_frame()
    return _frame(schema, _columns(records, _RECORD_TYPES[dataset]))


def _frame(schema: DatasetSchema, cols: dict[str, list[Any]]) -> pd.DataFrame:
    """Columns gathered from records (one list per schema column) as a conforming frame."""
    out: dict[str, Any] = {}
    for col in schema.columns:
        values = cols[col.name]
        if col.type == TS:
            out[col.name] = _ms_to_utc(values)
        elif col.type == pa.float64():
            out[col.name] = _to_float(values)
        elif col.type == pa.int64():
            out[col.name] = np.fromiter(values, np.int64, len(values))
        elif col.type == pa.bool_():
            out[col.name] = np.fromiter(values, np.bool_, len(values))
        else:
            out[col.name] = values
    return conform(pd.DataFrame(out), schema)


def raw_trades_to_frame(records: Sequence[RawTradeRecord]) -> pd.DataFrame:
    """Every raw trade as a catalog ``RAW_TRADES`` row, whatever its print type."""
    if not records:
        return RAW_TRADES.empty_frame()
    return _frame(RAW_TRADES, _columns(records, RawTradeRecord))


def market_trades_frame(records: Sequence[RawTradeRecord]) -> pd.DataFrame:
    """The ``MARKET`` prints of ``records`` as ``TRADES`` rows, each trade its own aggregate.

    What candles-from-trades and trade statistics take from raw trades: ``agg_trade_id``,
    ``first_trade_id`` and ``last_trade_id`` are all the trade id (so ``trade_count`` counts
    trades, as Binance's klines do). Those ids are trade ids, not aggregate trade ids: never mix
    these rows with aggTrade rows of the same symbol.
    """
    market = [r for r in records if r.is_market]
    if not market:
        return TRADES.empty_frame()
    cols = _columns(market, RawTradeRecord)
    ids = cols["trade_id"]
    cols.update(
        agg_trade_id=ids, first_trade_id=ids, last_trade_id=ids, trade_id=list(map(str, ids))
    )
    return _frame(TRADES, cols)


def depth_snapshots_to_frame(
    snapshots_with_time: Iterable[tuple[int, DepthSnapshotRecord]],
    top_n: int,
    *,
    source: str = Source.WS,
) -> pd.DataFrame:
    """Top-``top_n`` levels of each ``(snapshot_time_ms, snapshot)`` as catalog DEPTH rows.

    One row per snapshot, each side's levels best first (the DepthSnapshotRecord contract, so
    no sorting happens here); a snapshot with no level on either side gives no row.
    """
    return depth_rows_to_frame(
        (
            (s.exchange, s.symbol, t, s.last_update_id, s.received_at, s.bids, s.asks)
            for t, s in snapshots_with_time
        ),
        top_n,
        source=source,
    )


#: one book snapshot for ``depth_rows_to_frame``: exchange, symbol, snapshot time (ms), last
#: update id, receipt time (ms or None), bids and asks as (price, quantity) pairs, best first
DepthRow = tuple[str, str, int, int, int | None, Sequence[Any], Sequence[Any]]


def depth_rows_to_frame(
    rows: Iterable[DepthRow], top_n: int, *, source: str = Source.WS
) -> pd.DataFrame:
    """Book snapshots as catalog DEPTH rows (version 2: one row per snapshot, the top
    ``top_n`` levels of each side as float64 arrays).

    Built for a day of 86,400 snapshots: the levels of every snapshot are gathered into one
    flat list per side and converted by a single ``np.fromiter`` (``Decimal`` or float levels
    alike; ``float(Decimal)`` is correctly rounded, so venue decimals stay exact), and each
    cell is a view of that one buffer; no per-level Python object is made on the way.
    """
    if top_n <= 0:
        raise ValueError(f"top_n must be positive, got {top_n}")
    exchange: list[str] = []
    symbol: list[str] = []
    times: list[int] = []
    update_ids: list[int] = []
    received: list[int | None] = []
    bid_levels: list[Any] = []
    ask_levels: list[Any] = []
    bid_counts: list[int] = []
    ask_counts: list[int] = []
    for ex, sym, t, uid, recv, bids, asks in rows:
        bids, asks = bids[:top_n], asks[:top_n]
        if not bids and not asks:
            continue
        exchange.append(ex)
        symbol.append(sym)
        times.append(t)
        update_ids.append(uid)
        received.append(recv)
        bid_levels += bids
        ask_levels += asks
        bid_counts.append(len(bids))
        ask_counts.append(len(asks))
    if not times:
        return DEPTH.empty_frame()
    out: dict[str, Any] = {
        "exchange": exchange,
        "symbol": symbol,
        "snapshot_time": _ms_to_utc(times),
        "last_update_id": np.fromiter(update_ids, np.int64, len(update_ids)),
    }
    for side, levels, counts in (("bid", bid_levels, bid_counts), ("ask", ask_levels, ask_counts)):
        price_col, qty_col = LEVEL_COLUMNS[side]
        out[price_col], out[qty_col] = _level_cells(levels, counts)
    out["source"] = [str(source)] * len(times)
    out["received_at"] = _ms_to_utc(received)
    return conform(pd.DataFrame(out), DEPTH)


def _level_cells(levels: list[Any], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(price cells, quantity cells) of one side: ``levels`` is every snapshot's (price,
    quantity) pairs in a row, ``counts`` how many each snapshot has. Each cell is a view of
    one flat array per column (a copy per cell would double the build's memory)."""
    n = len(levels)
    flat = np.fromiter(itertools.chain.from_iterable(levels), np.float64, 2 * n).reshape(n, 2)
    bounds = list(itertools.accumulate(counts, initial=0))
    # pairs made lazily: a list of 86,400 (start, end) tuples sets off the cyclic collector
    # over every object the caller holds (a day's samples), a third of the build's time
    prices, qtys = (
        np.fromiter((col[a:b] for a, b in itertools.pairwise(bounds)), object, len(counts))
        for col in (flat[:, 0].copy(), flat[:, 1].copy())
    )
    return prices, qtys


def mark_prices_to_funding(
    records: Iterable[MarkPriceRecord], *, max_gap_ms: int = 10_000
) -> list[FundingRecord]:
    """Settled funding events implied by ``markPriceUpdate`` samples.

    ``r`` in a mark-price sample is the *predicted* rate for the settlement at ``T``; the rate
    that settles is the one in force at the last sample strictly before ``T``. A settlement is
    only reported once a later sample proves time passed ``T`` (``E >= T``), and only when the
    last pre-settlement sample is at most ``max_gap_ms`` older than ``T``: a recorder that was
    down around settlement must not invent a rate. Trigger on ``E >= T``, not on ``T`` changing:
    the first post-settlement message may still carry the old ``T`` and already the *next*
    predicted rate (seen on BTCUSDT at 2023-04-05 00:00Z). ``mark_price`` is the mark price of
    that last pre-settlement sample (REST reports the mark at settlement, which can differ a
    little). Output is sorted by (symbol, funding_time), one event per settlement.
    """
    by_symbol: dict[tuple[str, str], list[MarkPriceRecord]] = {}
    for r in records:
        by_symbol.setdefault((r.exchange, r.symbol), []).append(r)
    out: list[FundingRecord] = []
    for key in sorted(by_symbol):
        last_pre: MarkPriceRecord | None = None
        for rec in sorted(by_symbol[key], key=lambda r: r.event_time):
            if last_pre is not None and rec.event_time >= last_pre.next_funding_time:
                settle = last_pre.next_funding_time
                if settle - last_pre.event_time <= max_gap_ms:
                    out.append(
                        FundingRecord(
                            exchange=last_pre.exchange,
                            symbol=last_pre.symbol,
                            funding_time=settle,
                            funding_rate=last_pre.funding_rate,
                            mark_price=last_pre.mark_price,
                            source=Source.WS,
                            received_at=rec.received_at,
                        )
                    )
                last_pre = None
            t = rec.next_funding_time
            if t is not None and rec.funding_rate is not None and rec.event_time < t:
                # a T that moved before settling (funding-interval change) simply replaces it
                last_pre = rec
    return out
