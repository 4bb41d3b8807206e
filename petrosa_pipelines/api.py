"""The Python API for consumers: market data and analytics as DataFrames, with their quality.

Every ``load_*`` returns a ``LoadResult``: ``.frame`` (pandas, or Arrow with
``as_arrow=True``), ``.partitions`` (where each symbol-day came from), ``.missing_partitions``
and ``.failed_checks``. Nothing silently returns less: a range with no data at all raises
``MissingDataError``; a partly missing range warns with ``IncompleteDataWarning`` (or raises
``IncompleteDataError`` with ``strict=True``). The quality summary is also in
``frame.attrs["petrosa_quality"]`` for code that only keeps the frame.

Sources, per symbol-day, first hit wins: the curated lake, today's landing zone (for the
current UTC day only), then the warehouse when ``PETROSA_WAREHOUSE_URL`` is set.
Times are half-open ``[start, end)``, timezone-aware; a bare date means 00:00 UTC.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from petrosa_pipelines.catalog.depth_layout import to_long
from petrosa_pipelines.catalog.schemas import DATASETS, conform
from petrosa_pipelines.checks.definitions import HEALTH_KEY
from petrosa_pipelines.exchanges import EXCHANGES, venue_of
from petrosa_pipelines.instruments import Instrument, partition_key_str, storage_name
from petrosa_pipelines.lake import Lake, lake_from_path, lake_path
from petrosa_pipelines.serving.arguments import (  # noqa: F401 - part of the API
    MAX_RANGE_DAYS,
    DataError,
    InvalidRangeError,
    UnknownSymbolError,
    days_between,
    instruments_of,
    symbol_names,
    to_utc,
)
from petrosa_pipelines.serving.arguments import checked_range as _range
from petrosa_pipelines.serving.launch import launch_backfill, materialize_partitions
from petrosa_pipelines.serving.quality import FailedCheck, check_partition
from petrosa_pipelines.serving.warehouse import Warehouse, analytics_to_wide

WAREHOUSE_URL_VAR = "PETROSA_WAREHOUSE_URL"
#: lake layer of the health scores (one file per symbol-day, a row per dataset): where the
#: ``checks/health`` asset's IO manager writes them (its asset key is the lake path)
HEALTH_LAKE_DATASET = "/".join(HEALTH_KEY.path)
#: candle intervals derivable from 1m candles, in minutes
INTERVAL_MINUTES = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}


class MissingDataError(DataError):
    pass


class IncompleteDataError(DataError):
    pass


class IncompleteDataWarning(UserWarning):
    pass


@dataclass(frozen=True)
class PartitionStatus:
    """Where one symbol-day came from: lake, landing, warehouse, or missing."""

    partition: str
    source: str
    rows: int


@dataclass
class LoadResult:
    dataset: str
    frame: Any  # pd.DataFrame, or pa.Table with as_arrow=True
    partitions: list[PartitionStatus]
    failed_checks: list[FailedCheck] = field(default_factory=list)

    @property
    def missing_partitions(self) -> list[str]:
        return [p.partition for p in self.partitions if p.source == "missing"]

    @property
    def complete(self) -> bool:
        """True when no partition is missing and no check failed."""
        return not self.missing_partitions and not self.failed_checks

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "complete": self.complete,
            "sources": {p.partition: p.source for p in self.partitions},
            "missing_partitions": self.missing_partitions,
            "failed_checks": [vars(c) for c in self.failed_checks],
        }


# -- where data lives ----------------------------------------------------------------------------
@dataclass
class DataSources:
    """The lake, the landing zone and the warehouse one API call reads from."""

    lake: Lake
    landing: Any = None  # petrosa_pipelines.landing.LandingStore
    warehouse: Warehouse | None = None
    #: the venue (id or storage name) of bare symbols in calls (``PETROSA_EXCHANGE``)
    exchange: str = "binance"
    #: instruments always accepted (the settings' allow-list: ids or bare symbols of
    #: ``exchange``), on top of those found in storage
    symbols: tuple[str, ...] = ()
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(tz=dt.UTC)

    @classmethod
    def from_settings(cls, environ: dict[str, str] | None = None) -> DataSources:
        """Sources from ``PETROSA_*`` settings; ``s3://bucket/prefix`` lakes go through dagster-aws.

        An S3-compatible endpoint (MinIO, moto) comes from ``AWS_ENDPOINT_URL``, which boto3
        reads itself.
        """
        from petrosa_pipelines import settings as settings_mod
        from petrosa_pipelines.landing import LandingStore

        env = os.environ if environ is None else environ
        settings = settings_mod.from_env(env)
        url = env.get(WAREHOUSE_URL_VAR, "").strip()
        if url:  # checked here: the driver's own parse errors are untyped and echo the password
            url = settings_mod.check_database_url(WAREHOUSE_URL_VAR, url, "postgresql")
        return cls(
            lake=lake_from_path(settings.lake_path),
            landing=LandingStore(settings.landing_path),
            warehouse=_shared_warehouse(url) if url else None,
            exchange=settings.exchange,
            symbols=settings.symbols,
        )

    @property
    def venue(self) -> str:
        return venue_of(self.exchange)

    def known_symbols(self, dataset_dir: str) -> set[str]:
        """Instrument ids accepted for ``dataset_dir``: the allow-list's, and every venue's
        found in the lake or the warehouse (bare allow-list entries count for ``exchange``)."""
        known = self._allowed()
        for venue in sorted(EXCHANGES):
            name = storage_name(venue)
            prefix = f"{dataset_dir}/{name}/"
            # stored files, not days: a symbol's folder is the same for its day and month files
            found = {p[len(prefix) :].split("/", 1)[0] for p in self.lake.list_files(prefix)}
            if self.warehouse is not None:
                found |= self.warehouse.known_symbols(name)
            known |= {Instrument(venue, s).id for s in found}
        return known

    def _allowed(self) -> set[str]:
        entries = [s for s in self.symbols if not s.strip().endswith("*")]
        return {i.id for i in instruments_of(entries, self.venue)} if entries else set()


_WAREHOUSES: dict[str, Warehouse] = {}


def _shared_warehouse(url: str) -> Warehouse:
    if url not in _WAREHOUSES:
        _WAREHOUSES[url] = Warehouse(url)
    return _WAREHOUSES[url]


# -- argument checking ---------------------------------------------------------------------------
def _symbols(
    symbols: str | Iterable[str], known: Callable[[], set[str]], default_venue: str
) -> list[Instrument]:
    """The asked instruments (ids, or bare symbols of ``default_venue``), each known."""
    out = instruments_of(symbols, default_venue)
    have = known()
    unknown = [i.id for i in out if i.id not in have]
    if unknown:
        raise UnknownSymbolError(f"unknown symbols {unknown}; known: {sorted(have)}")
    return out


# -- the read ------------------------------------------------------------------------------------
def _read_one(
    src: DataSources,
    dataset: str,
    lake_dir: str,
    inst: Instrument,
    day: dt.date,
    qualifier: str,
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[pd.DataFrame | None, str]:
    """One instrument-day from the first source that has it (its venue's directory in each)."""
    exchange, symbol = inst.exchange, inst.symbol
    try:
        return src.lake.read_frame(lake_path(lake_dir, exchange, symbol, day.isoformat())), "lake"
    except FileNotFoundError:
        pass
    now = src.now()
    if src.landing is not None and dataset in DATASETS and day == now.date():
        lo = max(start, dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
        hi = min(end, now)
        frame = src.landing.read_frame(
            exchange, dataset, symbol, int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)
        )
        if len(frame):
            return frame, "landing"
    if src.warehouse is not None:
        table = dataset if dataset in DATASETS or dataset == "health" else "analytics"
        loaded = src.warehouse.loaded(
            table, exchange=exchange, symbols=[symbol], days=[day], qualifier=qualifier
        )
        if (symbol, day) in loaded:
            lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            frame = src.warehouse.read(
                table,
                exchange=exchange,
                symbols=[symbol],
                start=lo,
                end=lo + dt.timedelta(days=1),
                qualifier=qualifier or None,
            )
            if table == "analytics":
                frame = analytics_to_wide(frame)
            return frame, "warehouse"
    return None, "missing"


def _time_column(dataset: str, frame: pd.DataFrame) -> str | None:
    if dataset in DATASETS:
        return DATASETS[dataset].time_column
    for col in ("ts", "time", "open_time", "timestamp", "window_start", "day", "date"):
        if col in frame.columns:
            return col
    return None


def _load(
    dataset: str,
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    *,
    lake_dir: str,
    qualifier: str = "",
    sources: DataSources | None,
    strict: bool,
) -> LoadResult:
    lo, hi = _range(start, end)
    src = sources or DataSources.from_settings()
    syms = _symbols(symbols, lambda: src.known_symbols(lake_dir), src.venue)
    today = src.now().date()
    frames, statuses, failed = [], [], []
    for day in days_between(lo, hi):
        for inst in syms:
            key = partition_key_str(day, inst)
            frame, source = _read_one(src, dataset, lake_dir, inst, day, qualifier, lo, hi)
            statuses.append(PartitionStatus(key, source, 0 if frame is None else len(frame)))
            if frame is None:
                continue
            if dataset in DATASETS:
                frame = conform(frame, DATASETS[dataset])
                failed += check_partition(dataset, frame, partition=key, day_closed=day < today)
            frames.append(frame)
    if not frames:
        raise MissingDataError(
            f"no {dataset} for {[i.id for i in syms]} in [{lo.isoformat()}, {hi.isoformat()}): "
            "every partition "
            "is missing from the lake, the landing zone and the warehouse; materialise them "
            "with petrosa_pipelines.api.materialize_partitions"
        )
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    tcol = _time_column(dataset, out)
    if tcol is not None:
        times = pd.to_datetime(out[tcol], utc=True)
        out = out[(times >= lo) & (times < hi)]
        sort = [tcol, *(["symbol"] if "symbol" in out.columns else [])]
        out = out.sort_values(sort, kind="stable")
    result = LoadResult(dataset, out.reset_index(drop=True), statuses, failed)
    if result.missing_partitions:
        msg = f"{dataset}: partitions missing from every source: {result.missing_partitions}"
        if strict:
            raise IncompleteDataError(msg)
        warnings.warn(msg, IncompleteDataWarning, stacklevel=3)
    return result


def _finish(result: LoadResult, as_arrow: bool) -> LoadResult:
    result.frame.attrs["petrosa_quality"] = result.summary()
    if as_arrow:
        table = pa.Table.from_pandas(result.frame, preserve_index=False)
        result.frame = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"petrosa_quality": repr(result.summary()).encode()}
        )
    return result


def resample_candles(frame: pd.DataFrame, interval: str) -> tuple[pd.DataFrame, pd.Series]:
    """1m candles -> ``interval`` candles, and how many 1m candles each bar was built from.

    The project's one resampler, ``analytics.resample.resample_candles`` (the one behind
    ``analytics/candles_from_1m``): bars start on UTC multiples of the interval like Binance's,
    and volumes are decimal-exact sums per UTC day, so a bar is bit for bit the exchange's own
    and the asset's. Incomplete bars are kept (the count says how many minutes they hold);
    provenance is the first minute's ``source`` and the latest ``received_at``.
    """
    # imported here: the analytics package builds its Dagster definitions on import
    from petrosa_pipelines.analytics import resample as exact

    if interval not in INTERVAL_MINUTES:
        raise DataError(f"interval {interval!r} not supported; one of {list(INTERVAL_MINUTES)}")
    schema = DATASETS["candles"]
    if frame.empty:
        return schema.empty_frame(), pd.Series(dtype="int64")
    f = frame.sort_values(["exchange", "symbol", "open_time"], kind="stable")
    keys = ["exchange", "symbol", "open_time"]
    bar = f["open_time"].dt.floor(f"{INTERVAL_MINUTES[interval]}min")
    provenance = (
        f.groupby([f["exchange"], f["symbol"], bar], sort=False)
        .agg(source=("source", "first"), received_at=("received_at", "max"))
        .reset_index()
    )
    parts = [
        exact.resample_candles(one, interval, include_partial=True)
        for _, one in f.groupby([f["exchange"], f["symbol"]], sort=True, observed=True)
    ]
    bars = pd.concat(parts, ignore_index=True)
    for k in ("exchange", "symbol"):
        bars[k] = bars[k].astype("string")
        provenance[k] = provenance[k].astype("string")
    out = bars.merge(provenance, on=keys, how="left", validate="one_to_one")
    return conform(out, schema), out["source_rows"].astype("int64").rename(None)


# -- public functions ----------------------------------------------------------------------------
def load_candles(
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    interval: str = "1m",
    *,
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Closed candles of any Binance interval up to 1d (derived from 1m), with quality."""
    if not isinstance(interval, str) or interval not in INTERVAL_MINUTES:
        raise DataError(f"interval {interval!r} not supported; one of {list(INTERVAL_MINUTES)}")
    result = _load(
        "candles",
        symbols,
        start,
        end,
        lake_dir="market_data/candles",
        qualifier="1m",
        sources=sources,
        strict=strict,
    )
    if interval != "1m":
        bars, counts = resample_candles(result.frame, interval)
        want = INTERVAL_MINUTES[interval]
        for (_, row), n in zip(bars.iterrows(), counts, strict=True):
            if n != want:
                result.failed_checks.append(
                    FailedCheck(
                        partition_key_str(
                            row.open_time.date(), Instrument(venue_of(row.exchange), row.symbol)
                        ),
                        "incomplete_bar",
                        f"{interval} bar at {row.open_time.isoformat()} built from {n} of "
                        f"{want} 1m candles",
                    )
                )
        result.frame = bars
    return _finish(result, as_arrow)


def load_trades(
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    *,
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Aggregate trades, with quality (trade-id continuity, duplicates)."""
    r = _load(
        "trades", symbols, start, end, lake_dir="market_data/trades", sources=sources, strict=strict
    )
    return _finish(r, as_arrow)


#: what ``load_depth(layout=...)`` accepts
DEPTH_LAYOUTS = ("long", "wide")


def load_depth(
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    *,
    layout: str = "long",
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Top-N order-book snapshots, with quality (checked on the snapshots).

    ``layout``: ``"long"`` (default) gives one row per (snapshot, side, level) with ``side``,
    ``level``, ``price``, ``quantity``, as depth version 1 did, so notebooks written for it
    keep working; ``"wide"`` gives the stored version 2 rows, one per snapshot with the levels
    as arrays (``bid_price``, ``bid_quantity``, ``ask_price``, ``ask_quantity``, best price
    first), 40x fewer rows at top 20: use it for new code, with
    ``catalog.depth_layout.side_matrix`` for (snapshots x levels) matrices. Any other value
    raises ``ValueError``. ``partitions[].rows`` count snapshots in both layouts.
    """
    if not isinstance(layout, str) or layout not in DEPTH_LAYOUTS:
        raise DataError(f"layout {layout!r} not supported; one of {list(DEPTH_LAYOUTS)}")
    r = _load(
        "depth", symbols, start, end, lake_dir="market_data/depth", sources=sources, strict=strict
    )
    if layout == "long":
        r.frame = to_long(r.frame)
    return _finish(r, as_arrow)


def load_funding(
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    *,
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Settled funding-rate events, with quality."""
    r = _load(
        "funding",
        symbols,
        start,
        end,
        lake_dir="market_data/funding",
        sources=sources,
        strict=strict,
    )
    return _finish(r, as_arrow)


def load_analytics(
    name: str,
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    *,
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """One analytics asset (``analytics/<name>`` in the lake) as its wide frame."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
        raise DataError(f"analytics name {name!r} must be lower-case letters, digits, _")
    r = _load(
        name,
        symbols,
        start,
        end,
        lake_dir=f"analytics/{name}",
        qualifier=name,
        sources=sources,
        strict=strict,
    )
    return _finish(r, as_arrow)


def load_health(
    symbols: str | Sequence[str],
    start: Any,
    end: Any,
    *,
    sources: DataSources | None = None,
    as_arrow: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Per-partition health scores (completeness, validity, consistency, freshness)."""
    r = _load(
        "health", symbols, start, end, lake_dir=HEALTH_LAKE_DATASET, sources=sources, strict=strict
    )
    return _finish(r, as_arrow)


# -- the latest live state (Redis) -----------------------------------------------------------------
class LatestUnavailableError(DataError):
    """The latest state cannot be read: ``PETROSA_REDIS_URL`` unset or Redis not answering."""


@dataclass(frozen=True)
class Latest:
    """The latest state of one instrument as the live outputs keep it in Redis (docs/live.md).

    ``values[field]``: the field's hash (numbers as numbers, ``as_of`` ms) or None when it was
    never written or expired; ``age_s[field]``: seconds between its ``as_of`` and ``read_at``
    (None when absent).
    """

    instrument: str
    read_at: int
    values: dict[str, dict[str, Any] | None]
    age_s: dict[str, float | None]

    def __getitem__(self, name: str) -> dict[str, Any] | None:
        return self.values[name]


def latest(
    instrument: str | Instrument,
    fields: Sequence[str] | None = None,
    *,
    redis_url: str | None = None,
    now_ms: int | None = None,
) -> Latest:
    """Last trade, best bid/ask, open candle, funding and mark price, and health of
    ``instrument`` (``binance-usdm:BTCUSDT`` or a bare symbol of the default venue), each with
    its age. ``fields``: a subset of ``trade``, ``book``, ``candle``, ``funding``, ``health``.

    Raises ``LatestUnavailableError`` when no Redis is configured or it does not answer (a
    dashboard must tell "unknown" from "old"), ``InstrumentError`` for a malformed instrument.
    """
    import redis

    from petrosa_pipelines import settings as settings_mod
    from petrosa_pipelines.instruments import parse_instrument
    from petrosa_pipelines.live.latest import FIELDS, read_latest

    if isinstance(instrument, Instrument):
        inst = instrument
    elif ":" in str(instrument):
        inst = parse_instrument(str(instrument))
    else:  # a bare symbol trades on the default venue (PETROSA_EXCHANGE)
        inst = parse_instrument(str(instrument), venue_of(settings_mod.from_env().exchange))
    wanted = tuple(fields) if fields is not None else FIELDS
    unknown = [f for f in wanted if f not in FIELDS]
    if unknown or not wanted:
        raise ValueError(f"fields {list(wanted)!r}: each one of {list(FIELDS)}")
    live = settings_mod.live_settings_from_env()
    url = redis_url or live.redis_url
    if not url:
        raise LatestUnavailableError(
            "the latest state lives in Redis: set PETROSA_REDIS_URL (or pass redis_url=)"
        )
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        values, ages, read_at = read_latest(
            client, live.redis_prefix, inst.venue, inst.symbol, wanted, now_ms
        )
    except redis.RedisError as exc:
        text = settings_mod.redact(f"{type(exc).__name__}: {exc}", [url])
        raise LatestUnavailableError(
            f"Redis at {settings_mod.mask_url(url, hide_path=True)} did not answer: {text}"
        ) from None
    finally:
        client.close()
    return Latest(inst.id, read_at, values, ages)


__all__ = [
    "DataError",
    "DataSources",
    "FailedCheck",
    "IncompleteDataError",
    "IncompleteDataWarning",
    "InvalidRangeError",
    "Latest",
    "LatestUnavailableError",
    "LoadResult",
    "MissingDataError",
    "PartitionStatus",
    "UnknownSymbolError",
    "latest",
    "launch_backfill",
    "load_analytics",
    "load_candles",
    "load_depth",
    "load_funding",
    "load_health",
    "load_trades",
    "materialize_partitions",
    "resample_candles",
]
