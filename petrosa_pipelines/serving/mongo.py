"""MongoDB time-series sink: document mapping, index specs and queries, plus the sink itself.

Time-series collections have no unique indexes and no multi-document transactions, so a
partition cannot be swapped atomically in place. Instead every document carries its load id
in ``meta``; a regular ``partitions`` collection (unique per partition) points at the current
load. A replace inserts the new load, moves the pointer (one atomic single-document update),
then deletes the old load. Readers resolve the pointers first and query only current loads,
so they see the old partition or the new one, never half. Every delete filters on ``meta``
only, which time-series collections allow from MongoDB 5.1. Upserts by natural key
(``upsert``) need MongoDB 7.0+ (arbitrary updates on time-series collections).

A replace never publishes fewer documents than the partition holds unless asked to
(``never_fewer``, the rule the warehouse follows too): a re-run on a shrunken lake partition
must not hide rows that were served before. Documents are inserted in chunks of
``INSERT_CHUNK`` so a day of trades is never one list of millions of dicts.

Depth (catalog v2) is one document per snapshot, each side's prices and quantities as arrays
(best price first). Loads written before it hold a document per level (``side``, ``level``,
``price``, ``quantity``): they are read as snapshots (``documents_to_frame``), and counted in
snapshots when a replace compares sizes, until a replace swaps them for the new layout.

Collections: one time-series collection per dataset (``trades``, ``candles``, ``depth``,
``funding``) with the series identity in ``meta``, rather than the seed's one collection per
symbol (``candles_BTCUSDT_1m``): MongoDB buckets a time-series collection by ``meta`` anyway,
and one collection per dataset keeps a symbol list out of the schema.

The pure functions (everything but ``MongoSink``) are unit-tested without a server, and the
sink itself against a fake client that evaluates the filters it is sent
(``petrosa_pipelines_tests/test_storage/fake_mongo.py``).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.depth_layout import ALL_LEVEL_COLUMNS, from_long
from petrosa_pipelines.catalog.schemas import LEVELS, TS, conform, dataset_schema
from petrosa_pipelines.instruments import DATASETS

META = "meta"
PARTITIONS = "partitions"
_GRANULARITY = {"trades": "seconds", "depth": "seconds", "candles": "minutes", "funding": "hours"}
#: columns that go into ``meta`` (identify the series) rather than the measurement
_META_COLUMNS = {"exchange", "symbol", "interval"}
#: the natural-key index of a dataset whose key changed carries the key's version: MongoDB
#: refuses to create an index under an existing name with other keys (IndexKeySpecsConflict),
#: so trades v2 (keyed by ``trade_id``, was ``agg_trade_id``) needs a new name
_NATURAL_KEY_INDEX = {"trades": "trades_natural_key_v2", "depth": "depth_natural_key_v2"}
#: index names earlier versions created, dropped by ``MongoSink.ensure`` (depth v1 was keyed
#: by side and level too)
RETIRED_INDEXES: dict[str, tuple[str, ...]] = {
    "trades": ("trades_natural_key",),
    "depth": ("depth_natural_key",),
}
#: the fields only a depth document of version 1 (one per level) has
_V1_DEPTH_FIELDS = ("side", "level", "price", "quantity")
#: documents per ``insert_many`` (bounds the memory of a replace: a trades day is millions)
INSERT_CHUNK = 50_000


class MongoSinkError(RuntimeError):
    """A sink operation that cannot proceed; the message says why."""


class ShrinkRefusedError(MongoSinkError):
    """A replace would publish fewer documents than the partition holds (``never_fewer``)."""


@dataclass(frozen=True)
class MongoLoad:
    """What one partition replace did."""

    partition: str
    rows: int
    replaced_rows: int
    load_id: str
    seconds: float


def timeseries_options(dataset: str) -> dict[str, str]:
    """``create_collection(timeseries=...)`` options of a dataset's collection."""
    schema = dataset_schema(dataset)
    return {
        "timeField": schema.time_column,
        "metaField": META,
        "granularity": _GRANULARITY[dataset],
    }


def natural_key_index(dataset: str) -> str:
    """The name of a dataset's natural-key index (versioned where its keys changed)."""
    return _NATURAL_KEY_INDEX.get(dataset, f"{dataset}_natural_key")


def index_specs(dataset: str) -> list[tuple[list[tuple[str, int]], dict[str, Any]]]:
    """(keys, options) of each secondary index: partition lookup and natural-key lookup.

    Not unique: time-series collections cannot enforce it; the load-id scheme does.
    """
    schema = dataset_schema(dataset)
    series = [f"{META}.{c}" for c in schema.natural_key if c in _META_COLUMNS]
    rest = [c for c in schema.natural_key if c not in _META_COLUMNS]
    return [
        (
            [(f"{META}.load", 1), *((k, 1) for k in series), (schema.time_column, 1)],
            {"name": f"{dataset}_load_series_time"},
        ),
        (
            [*((k, 1) for k in series), *((k, 1) for k in rest)],
            {"name": natural_key_index(dataset)},
        ),
    ]


def partition_id(
    dataset: str, exchange: str, symbol: str, day: dt.date, qualifier: str = ""
) -> str:
    """The ``_id`` of a partition's pointer document."""
    return f"{dataset}|{exchange}|{symbol}|{qualifier}|{day.isoformat()}"


def _day(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%d")


def frame_to_documents(dataset: str, frame: pd.DataFrame, load_id: str) -> list[dict[str, Any]]:
    """One document per row: identity, partition day and load in ``meta``, the rest flat.

    Nulls (NaN in nullable float columns, NaT) are left out of the document, which is how
    MongoDB spells "no value" and what ``documents_to_frame`` turns back into NaN/NaT.
    """
    schema = dataset_schema(dataset)
    frame = conform(frame, schema)
    n = len(frame)
    if n == 0:
        return []
    time_col = schema.time_column
    days = _day(frame[time_col]).to_numpy()
    meta_cols = [c for c in schema.column_names if c in _META_COLUMNS]
    metas = frame[meta_cols].to_dict("records")
    body: dict[str, np.ndarray] = {}
    for col in schema.columns:
        if col.name in _META_COLUMNS:
            continue
        series = frame[col.name]
        if col.type == TS:
            values = np.array(series.dt.to_pydatetime(), dtype=object)
            values[series.isna().to_numpy()] = None
        elif col.type == LEVELS:  # BSON arrays of doubles (pymongo cannot encode ndarray)
            values = np.empty(n, dtype=object)
            values[:] = [cell.tolist() for cell in series.to_numpy(dtype=object)]
        else:
            values = series.astype(object).to_numpy(copy=True)
            if col.nullable:
                values[series.isna().to_numpy()] = None
        body[col.name] = values
    docs = []
    names = list(body)
    for i, row in enumerate(zip(*(body[c] for c in names), strict=True)):
        meta = metas[i]
        meta["day"] = days[i]
        meta["load"] = load_id
        doc = {k: v for k, v in zip(names, row, strict=True) if v is not None}
        doc[META] = meta
        docs.append(doc)
    return docs


def documents_to_frame(dataset: str, documents: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Documents read back as a frame conforming to the catalog (``_id``, day, load dropped)."""
    schema = dataset_schema(dataset)
    rows = []
    for doc in documents:
        row = {k: v for k, v in doc.items() if k not in ("_id", META)}
        row.update({k: v for k, v in doc.get(META, {}).items() if k in _META_COLUMNS})
        rows.append(row)
    if not rows:
        return schema.empty_frame()
    frame = pd.DataFrame.from_records(rows)
    if dataset == "depth":
        frame = _depth_as_snapshots(frame)
    for col in schema.columns:
        if col.name not in frame.columns:
            frame[col.name] = pd.NaT if col.type == TS else np.nan
        elif col.type == TS:
            # pymongo returns naive datetimes in UTC unless the client is tz_aware
            frame[col.name] = pd.to_datetime(frame[col.name], utc=True)
    out = conform(frame, schema)
    return out.sort_values([schema.time_column, "symbol"], kind="stable").reset_index(drop=True)


def _depth_as_snapshots(frame: pd.DataFrame) -> pd.DataFrame:
    """Depth documents of any load as snapshot rows: the documents of version 1 loads (one per
    level, with ``level``) are grouped into snapshots, the others are kept as they are."""
    if "level" not in frame.columns:
        return frame
    per_level = frame["level"].notna().to_numpy()
    long = from_long(frame[per_level].drop(columns=list(ALL_LEVEL_COLUMNS), errors="ignore"))
    if per_level.all():
        return long
    wide = frame[~per_level].drop(columns=list(_V1_DEPTH_FIELDS), errors="ignore")
    return pd.concat([wide, long], ignore_index=True)


def partition_filter(
    dataset: str, exchange: str, symbol: str, day: dt.date, qualifier: str = ""
) -> dict[str, Any]:
    """Documents of one partition, every load (meta-only, so deletes work from MongoDB 5.1)."""
    flt: dict[str, Any] = {
        f"{META}.exchange": exchange,
        f"{META}.symbol": symbol,
        f"{META}.day": day.isoformat(),
    }
    if qualifier:
        flt[f"{META}.interval"] = qualifier
    return flt


def read_query(
    dataset: str,
    exchange: str,
    symbols: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    loads: Sequence[str],
) -> dict[str, Any]:
    """The find() filter for current loads of ``symbols`` with start <= time < end."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("read_query needs timezone-aware start and end")
    time_col = dataset_schema(dataset).time_column
    return {
        f"{META}.load": {"$in": list(loads)},
        f"{META}.exchange": exchange,
        f"{META}.symbol": {"$in": list(symbols)},
        time_col: {"$gte": start, "$lt": end},
    }


def natural_key_filter(dataset: str, document: dict[str, Any]) -> dict[str, Any]:
    """The filter that finds ``document``'s row in its partition's current load."""
    schema = dataset_schema(dataset)
    meta = document[META]
    flt: dict[str, Any] = {f"{META}.load": meta["load"]}
    for key in schema.natural_key:
        flt[f"{META}.{key}" if key in _META_COLUMNS else key] = (
            meta[key] if key in _META_COLUMNS else document[key]
        )
    return flt


def check_partition_frame(
    dataset: str, frame: pd.DataFrame, *, exchange: str, symbol: str, day: dt.date
) -> None:
    """Refuse a (conformed) frame with rows of another exchange, symbol or UTC day.

    Vectorised and before any write, so a bad frame leaves the partition untouched.
    """
    if frame.empty:
        return
    for col, want in (("exchange", exchange), ("symbol", symbol)):
        bad = frame[col].ne(want).fillna(True).to_numpy(dtype=bool)
        if bad.any():
            raise MongoSinkError(
                f"{dataset} partition {symbol} {day}: {int(bad.sum())} rows have "
                f"{col}={frame[col][bad].iloc[0]!r}, not {want!r}"
            )
    times = frame[dataset_schema(dataset).time_column]
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    outside = (times < start) | (times >= start + pd.Timedelta(days=1)) | times.isna()
    if outside.any():
        raise MongoSinkError(
            f"{dataset} partition {symbol} {day}: {int(outside.sum())} rows are outside the "
            f"day (first: {times[outside].iloc[0]})"
        )


def document_chunks(
    dataset: str, frame: pd.DataFrame, load_id: str, chunk: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """``frame_to_documents`` ``chunk`` rows (default ``INSERT_CHUNK``) at a time: what one
    ``insert_many`` sends."""
    chunk = chunk or INSERT_CHUNK
    for lo in range(0, len(frame), chunk):
        yield frame_to_documents(dataset, frame.iloc[lo : lo + chunk], load_id)


def upsert_operations(dataset: str, documents: Iterable[dict[str, Any]]) -> list[Any]:
    """pymongo ``ReplaceOne(upsert=True)`` per document, matched on its natural key."""
    from pymongo import ReplaceOne

    return [ReplaceOne(natural_key_filter(dataset, d), d, upsert=True) for d in documents]


class MongoSink:
    """The time-series sink in one database; ``ensure()`` once, then replace, upsert, read."""

    def __init__(self, client: Any, database: str = "petrosa"):
        self.client = client
        self.db = client[database]

    @classmethod
    def from_url(cls, url: str, database: str = "petrosa") -> MongoSink:
        from pymongo import MongoClient

        return cls(MongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000), database)

    def ensure(self, datasets: Iterable[str] = DATASETS) -> None:
        """Create missing time-series collections and their indexes, and drop the indexes
        earlier versions created (``RETIRED_INDEXES``); idempotent."""
        existing = set(self.db.list_collection_names())
        for dataset in datasets:
            if dataset not in existing:
                self.db.create_collection(dataset, timeseries=timeseries_options(dataset))
            coll = self.db[dataset]
            present = set(coll.index_information())
            for name in RETIRED_INDEXES.get(dataset, ()):
                if name in present:
                    coll.drop_index(name)
            for keys, options in index_specs(dataset):
                coll.create_index(keys, **options)

    def _qualifier(self, dataset: str, frame: pd.DataFrame, qualifier: str | None) -> str:
        if dataset != "candles":
            return ""
        if qualifier:
            return qualifier
        values = frame["interval"].unique() if len(frame) else ["1m"]
        if len(values) != 1:
            raise ValueError(f"candles frame mixes intervals {list(values)}; pass qualifier=")
        return str(values[0])

    def _held(self, dataset: str, pid: str, flt: dict[str, Any]) -> tuple[str | None, int]:
        """(current load id, its row count) of a partition; (None, 0) if never loaded. Rows are
        documents, except in a depth load of version 1, where they are its snapshots."""
        pointer = self.db[PARTITIONS].find_one({"_id": pid})
        if pointer is None:
            return None, 0
        load = pointer["load"]
        current = {**flt, f"{META}.load": load}
        if dataset == "depth":  # a version 1 load holds a document per level: count snapshots
            sample = self.db[dataset].find_one(current)
            if sample is not None and "level" in sample:
                return load, len(self.db[dataset].distinct("snapshot_time", current))
        return load, int(self.db[dataset].count_documents(current))

    def replace_partition(
        self,
        dataset: str,
        frame: pd.DataFrame,
        *,
        exchange: str,
        symbol: str,
        day: dt.date,
        qualifier: str | None = None,
        never_fewer: bool = False,
    ) -> MongoLoad:
        """Make ``frame`` the partition's content (insert new load, move pointer, drop old).

        Rows outside the partition are refused before anything is written. With
        ``never_fewer`` a frame with fewer rows than the partition's current load holds is
        refused (``ShrinkRefusedError``) and the partition keeps its documents.
        """
        started = time.perf_counter()
        qual = self._qualifier(dataset, frame, qualifier)
        frame = conform(frame, dataset_schema(dataset))
        check_partition_frame(dataset, frame, exchange=exchange, symbol=symbol, day=day)
        pid = partition_id(dataset, exchange, symbol, day, qual)
        flt = partition_filter(dataset, exchange, symbol, day, qual)
        _, held = self._held(dataset, pid, flt)
        if never_fewer and len(frame) < held:
            raise ShrinkRefusedError(
                f"{dataset} partition {pid}: refusing to replace {held} documents with "
                f"{len(frame)}; the sink keeps its documents"
            )
        load_id = uuid.uuid4().hex
        rows = 0
        for docs in document_chunks(dataset, frame, load_id):
            self.db[dataset].insert_many(docs, ordered=False)
            rows += len(docs)
        self.db[PARTITIONS].update_one(
            {"_id": pid},
            {"$set": {"load": load_id, "rows": rows, "loaded_at": dt.datetime.now(tz=dt.UTC)}},
            upsert=True,
        )
        stale = dict(flt)
        stale[f"{META}.load"] = {"$ne": load_id}  # the old load and any crashed attempt
        self.db[dataset].delete_many(stale)
        return MongoLoad(pid, rows, held, load_id, time.perf_counter() - started)

    def _current_loads(
        self,
        dataset: str,
        exchange: str,
        symbols: Sequence[str],
        days: Sequence[dt.date],
        qualifier: str,
    ) -> dict[str, str]:
        ids = [partition_id(dataset, exchange, s, d, qualifier) for s in symbols for d in days]
        return {p["_id"]: p["load"] for p in self.db[PARTITIONS].find({"_id": {"$in": ids}})}

    def upsert(
        self, dataset: str, frame: pd.DataFrame, *, exchange: str, qualifier: str | None = None
    ) -> int:
        """Insert or replace rows by natural key in their partitions' current loads.

        For incremental writes (today's rows as they arrive). Needs MongoDB 7.0+.
        """
        if frame.empty:
            return 0
        qual = self._qualifier(dataset, frame, qualifier)
        schema = dataset_schema(dataset)
        frame = conform(frame, schema)
        days = _day(frame[schema.time_column])
        total = 0
        for (symbol, day_s), part in frame.groupby([frame["symbol"], days], sort=True):
            day = dt.date.fromisoformat(day_s)
            pid = partition_id(dataset, exchange, symbol, day, qual)
            pointer = self.db[PARTITIONS].find_one_and_update(
                {"_id": pid},
                {"$setOnInsert": {"load": uuid.uuid4().hex, "rows": 0}},
                upsert=True,
                return_document=True,
            )
            docs = frame_to_documents(dataset, part, pointer["load"])
            result = self.db[dataset].bulk_write(upsert_operations(dataset, docs), ordered=False)
            total += result.upserted_count + result.modified_count
        return total

    def read(
        self,
        dataset: str,
        *,
        exchange: str,
        symbols: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        qualifier: str = "",
    ) -> pd.DataFrame:
        """Current-load rows of ``symbols`` with start <= time < end."""
        days = list(pd.date_range(start.date(), (end - dt.timedelta(microseconds=1)).date()).date)
        loads = self._current_loads(
            dataset, exchange, symbols, days, qualifier if dataset == "candles" else ""
        )
        query = read_query(dataset, exchange, symbols, start, end, list(loads.values()))
        return documents_to_frame(dataset, self.db[dataset].find(query))
