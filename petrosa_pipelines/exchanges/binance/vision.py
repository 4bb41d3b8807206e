"""Binance Vision (data.binance.vision) archive client for USD-M futures.

Deep history (aggTrades older than a day or two, years of klines) only exists here. Every zip is
verified against its ``.CHECKSUM`` before use because archives get re-published (binance-public-
data "Updates"), and the CSVs are parsed defensively: header row present or not, number formats
varying within a file, microsecond timestamps in newer (spot) files (PROVENANCE.md quirks 15-17).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import random
import re
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import ExchangeError, MessageError, Source
from petrosa_pipelines.exchanges.binance.bodies import EXCHANGE, KLINE_FIELDS, build_frame
from petrosa_pipelines.exchanges.transport import download
from petrosa_pipelines.lib.endpoints import RestSettings
from petrosa_pipelines.lib.timeutil import day_window_ms

log = logging.getLogger(__name__)

#: statuses worth a retry besides 5xx: 429 and 418, as on the REST API (``rest.rate_model``)
RETRY_STATUSES = frozenset({429, 418})

#: timestamps above this are microseconds (ms stay below it until the year 5138)
MICROSECONDS_THRESHOLD = 10**14
_UM = "data/futures/um"


class ChecksumMismatchError(ExchangeError):
    """A downloaded archive does not match its published SHA-256 ``.CHECKSUM``."""


# ---------------------------------------------------------------------------------------------
# Pure CSV parsers (tests call these directly).
# ---------------------------------------------------------------------------------------------

_AGG_COLUMNS = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "trade_time",
    "is_buyer_maker",
)
_FUNDING_COLUMNS = ("funding_time", "funding_interval_hours", "funding_rate")
_INT_COLUMNS = {
    "open_time",
    "close_time",
    "trade_count",
    "agg_trade_id",
    "first_trade_id",
    "last_trade_id",
    "trade_time",
    "funding_time",
    "funding_interval_hours",
}
_TIME_COLUMNS = ("open_time", "close_time", "trade_time", "funding_time")
_ARROW_COLUMN = re.compile(r"column #(\d+)")


def _first_line(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0].rstrip(b"\r")


_HEADER_FIELD = re.compile(rb"^[A-Za-z_][A-Za-z0-9_ ]*$")


def has_header(data: bytes) -> bool:
    """True when the first line is a header: every field a column name such as ``open_time``
    (Vision files come both ways, quirk 15). A garbage first row is not a header: it stays a
    row and fails parsing, instead of being dropped silently."""
    fields = [f.strip().strip(b'"') for f in _first_line(data).split(b",")]
    return all(_HEADER_FIELD.match(f) for f in fields)


def _csv_source(data: bytes | IO[bytes]) -> tuple[bytes, Any]:
    """(the first bytes, what arrow reads) of CSV bytes or of a stream (``csv_stream``),
    without a BOM: a stream's head is peeked, the rest is never held whole."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).removeprefix(b"\xef\xbb\xbf")
        return data, io.BytesIO(data)
    if data.peek(3)[:3] == b"\xef\xbb\xbf":
        data.read(3)
    return data.peek(4096), data


def _read_csv(data: bytes | IO[bytes], names: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """CSV bytes -> numpy columns named ``names`` (extra trailing fields such as ``ignore`` are
    dropped). Arrow parses decimals with correct rounding whatever their formatting."""
    data, source = _csv_source(data)
    if not data.strip():
        return {name: np.array([], dtype=_dtype(name)) for name in names}
    line = _first_line(data)
    n_fields = line.count(b",") + 1
    if n_fields < len(names):
        raise MessageError(
            f"{what}: expected {len(names)} fields, first line has {n_fields}",
            field="<csv>",
            raw=line,
        )
    column_names = list(names) + [f"_extra{i}" for i in range(n_fields - len(names))]
    types = {n: (pa.int64() if n in _INT_COLUMNS else pa.float64()) for n in names}
    if "is_buyer_maker" in types:
        types["is_buyer_maker"] = pa.bool_()
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=column_names, skip_rows=1 if has_header(data) else 0
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(names),
                true_values=["true", "True", "TRUE"],
                false_values=["false", "False", "FALSE"],
                strings_can_be_null=False,
            ),
        )
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a stream's corrupt deflate
        raise MessageError(f"{what}: {exc}", field="<zip>") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        match = _ARROW_COLUMN.search(str(exc))
        field = "<csv>"
        if match and int(match.group(1)) < len(column_names):
            field = column_names[int(match.group(1))]
        raise MessageError(f"{what}: {exc}", field=field) from None
    out: dict[str, np.ndarray] = {}
    for name in names:
        column = table.column(name)
        if column.null_count:
            raise MessageError(f"{what}: {column.null_count} empty values", field=name)
        out[name] = column.to_numpy()
        # release the arrow column once it is numpy: the table and the arrays are never
        # both held whole (10 M trades are over half a GB each way)
        table = table.drop_columns([name])
        del column
    for name in _TIME_COLUMNS:
        if name in out:
            out[name] = normalise_ms(out[name])
    return out


def _dtype(name: str) -> Any:
    if name in _INT_COLUMNS:
        return np.int64
    if name == "is_buyer_maker":
        return np.bool_
    return np.float64


def normalise_ms(values: np.ndarray) -> np.ndarray:
    """Epoch times to ms: values above 1e14 are microseconds (spot archives from 2025)."""
    values = np.asarray(values, dtype=np.int64)
    if not (values > MICROSECONDS_THRESHOLD).any():
        return values  # all ms already: no second array
    return np.where(values > MICROSECONDS_THRESHOLD, values // 1000, values)


def _archive_frame(
    cols: dict[str, Any], schema: schemas.DatasetSchema, symbol: str, **extra: Any
) -> pd.DataFrame:
    data = dict(cols)
    data.update(exchange=EXCHANGE, symbol=symbol, source=str(Source.ARCHIVE), received_at=None)
    data.update(extra)
    return build_frame(data, schema)


def parse_klines_csv(data: bytes, symbol: str, interval: str) -> pd.DataFrame:
    """A Vision klines CSV -> CANDLES frame (source=archive, received_at null)."""
    cols = _read_csv(data, KLINE_FIELDS, f"{symbol}-{interval} klines")
    return _archive_frame(cols, schemas.CANDLES, symbol, interval=interval)


def parse_agg_trades_csv(data: bytes | IO[bytes], symbol: str) -> pd.DataFrame:
    """A Vision aggTrades CSV (bytes, or a stream: ``csv_stream``) -> TRADES frame
    (source=archive, received_at null)."""
    cols = _read_csv(data, _AGG_COLUMNS, f"{symbol} aggTrades")
    return _archive_frame(cols, schemas.TRADES, symbol)


def parse_funding_csv(data: bytes, symbol: str) -> pd.DataFrame:
    """A Vision fundingRate CSV (calc_time,funding_interval_hours,last_funding_rate) -> FUNDING
    frame; the archive has no mark price, so ``mark_price`` is null."""
    cols = _read_csv(data, _FUNDING_COLUMNS, f"{symbol} fundingRate")
    del cols["funding_interval_hours"]
    n = len(cols["funding_time"])
    return _archive_frame(
        cols, schemas.FUNDING, symbol, mark_price=np.full(n, np.nan, dtype=np.float64)
    )


def parse_checksum(text: str) -> str:
    """The hex digest of a ``sha256sum`` line ``"<hex>  <name>"``."""
    digest = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ExchangeError(f"malformed CHECKSUM file: {text[:100]!r}")
    return digest


@contextlib.contextmanager
def csv_stream(zip_bytes: bytes, name: str) -> Iterator[IO[bytes]]:
    """The (single) CSV inside a Vision zip as a stream: a day of 10 M trades is 600 MB of
    CSV, which ``extract_csv`` would hold (twice while joining) before parsing."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if not members:
                raise MessageError(f"{name}: no CSV inside", field="<zip>")
            with zf.open(members[0]) as stream:
                yield stream
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # zlib.error: corrupt deflate
        raise MessageError(f"{name}: {exc}", field="<zip>") from None


def extract_csv(zip_bytes: bytes, name: str) -> bytes:
    """The (single) CSV inside a Vision zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if not members:
                raise MessageError(f"{name}: no CSV inside", field="<zip>")
            return zf.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # zlib.error: corrupt deflate
        raise MessageError(f"{name}: {exc}", field="<zip>") from None


def parse_listing(xml_bytes: bytes) -> tuple[list[str], list[str], str | None]:
    """An S3 ListBucketResult -> (keys, common prefixes, next marker or None)."""
    if b"<!DOCTYPE" in xml_bytes or b"<!ENTITY" in xml_bytes:
        raise MessageError("DTDs are not allowed in a bucket listing", field="<xml>")
    try:
        root = ElementTree.fromstring(xml_bytes)  # noqa: S314 - DTD/entities rejected above
    except ElementTree.ParseError as exc:
        raise MessageError(f"bucket listing is not XML: {exc}", field="<xml>") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def child_text(elem: ElementTree.Element, name: str) -> str | None:
        for child in elem:
            if local(child.tag) == name:
                return child.text or ""
        return None

    keys: list[str] = []
    prefixes: list[str] = []
    for elem in root:
        tag = local(elem.tag)
        if tag == "Contents" and (key := child_text(elem, "Key")):
            keys.append(key)
        elif tag == "CommonPrefixes" and (prefix := child_text(elem, "Prefix")):
            prefixes.append(prefix)
    truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
    next_marker = None
    if truncated:
        next_marker = child_text(root, "NextMarker") or (keys[-1] if keys else None)
    return keys, prefixes, next_marker


# ---------------------------------------------------------------------------------------------
# Client.
# ---------------------------------------------------------------------------------------------


def klines_path(symbol: str, day: dt.date, interval: str = "1m") -> str:
    return f"{_UM}/daily/klines/{symbol}/{interval}/{symbol}-{interval}-{day.isoformat()}.zip"


def agg_trades_path(symbol: str, day: dt.date) -> str:
    return f"{_UM}/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day.isoformat()}.zip"


def monthly_funding_path(symbol: str, year: int, month: int) -> str:
    return f"{_UM}/monthly/fundingRate/{symbol}/{symbol}-fundingRate-{year:04d}-{month:02d}.zip"


def daily_funding_path(symbol: str, day: dt.date) -> str:
    return f"{_UM}/daily/fundingRate/{symbol}/{symbol}-fundingRate-{day.isoformat()}.zip"


class VisionArchiveClient:
    """Verified downloads of Binance Vision USD-M archives, parsed into lake frames.

    Methods return None when the archive does not exist (HTTP 404: not yet published, or the
    symbol was not listed then). ``cache_dir`` keeps verified zips under their archive path; a
    cached zip is reused only while it still matches the published CHECKSUM.
    """

    def __init__(
        self,
        base_url: str,
        rest: RestSettings,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rest = rest
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.session = session or requests.Session()
        self._sleep = sleep
        self._rng = rng
        #: archive paths served from the cache (no zip download)
        self.cache_hits: list[str] = []
        #: every (seconds) slept for backoff or Retry-After
        self.sleeps: list[float] = []

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> VisionArchiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- datasets ---------------------------------------------------------------------------

    def daily_klines(self, symbol: str, day: dt.date, interval: str = "1m") -> pd.DataFrame | None:
        """One day of klines (CANDLES frame), None if the archive does not exist."""
        csv = self._csv(klines_path(symbol, day, interval))
        return None if csv is None else parse_klines_csv(csv, symbol, interval)

    def daily_agg_trades(self, symbol: str, day: dt.date) -> pd.DataFrame | None:
        """One day of aggregate trades (TRADES frame), None if the archive does not exist."""
        path = agg_trades_path(symbol, day)
        data = self.fetch_verified(path)
        if data is None:
            return None
        with csv_stream(data, path) as csv:
            cols = _read_csv(csv, _AGG_COLUMNS, f"{symbol} aggTrades")
        del data  # the zip is not held while the frame is built (165 MB of 10 M trades)
        return _archive_frame(cols, schemas.TRADES, symbol)

    def monthly_funding(self, symbol: str, year: int, month: int) -> pd.DataFrame | None:
        """One month of settled funding (FUNDING frame, mark_price null)."""
        csv = self._csv(monthly_funding_path(symbol, year, month))
        return None if csv is None else parse_funding_csv(csv, symbol)

    def daily_funding(self, symbol: str, day: dt.date) -> pd.DataFrame | None:
        """One day of funding: the daily archive (a local-exchange extension; Binance publishes
        funding monthly) or else the monthly archive filtered to the day."""
        csv = self._csv(daily_funding_path(symbol, day))
        if csv is not None:
            return parse_funding_csv(csv, symbol)
        month = self.monthly_funding(symbol, day.year, day.month)
        if month is None:
            return None
        first_day = dt.date(day.year, day.month, 1)
        next_month = (first_day + dt.timedelta(days=32)).replace(day=1)
        lo, hi = day_window_ms(first_day)[0], day_window_ms(next_month)[0]
        times = month["funding_time"].astype("datetime64[ms, UTC]").astype("int64")
        if len(month) and (times.min() < lo or times.max() >= hi):
            raise MessageError(
                f"{monthly_funding_path(symbol, day.year, day.month)} holds settlements outside "
                f"{first_day:%Y-%m}: not that month's archive",
                field="funding_time",
            )
        start, end = (pd.Timestamp(ms, unit="ms", tz="UTC") for ms in day_window_ms(day))
        in_day = (month["funding_time"] >= start) & (month["funding_time"] < end)
        return month[in_day].reset_index(drop=True)

    def list_archives(self, prefix: str) -> list[str]:
        """Keys and sub-prefixes (ending in ``/``) directly under ``prefix``, following markers."""
        out: list[str] = []
        marker: str | None = None
        while True:
            query: dict[str, str] = {"prefix": prefix, "delimiter": "/"}
            if marker:
                query["marker"] = marker
            body = self._fetch(f"{self.base_url}/?{urlencode(query)}")
            if body is None:
                return out
            keys, prefixes, next_marker = parse_listing(body)
            out.extend(prefixes)
            out.extend(keys)
            if not next_marker or next_marker == marker:
                return out
            marker = next_marker

    # -- download + verify ------------------------------------------------------------------

    def fetch_verified(self, path: str) -> bytes | None:
        """The zip at ``path`` checked against ``<zip>.CHECKSUM``; None when it does not exist."""
        url = f"{self.base_url}/{path}"
        cached = self._read_cache(path)
        if cached is not None:
            checksum = self._fetch(url + ".CHECKSUM")
            if checksum is None:
                return None
            expected = parse_checksum(checksum.decode("utf-8", "replace"))
            if hashlib.sha256(cached).hexdigest() == expected:
                self.cache_hits.append(path)
                return cached
            log.info("cached %s no longer matches its CHECKSUM (re-published); downloading", path)
            data = self._fetch(url)
        else:
            data = self._fetch(url)
            if data is None:
                return None
            checksum = self._fetch(url + ".CHECKSUM")
            if checksum is None:
                raise ExchangeError(f"{path}: archive has no CHECKSUM; refusing unverified data")
            expected = parse_checksum(checksum.decode("utf-8", "replace"))
        if data is None:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(
                f"{path}: sha256 {actual} != published {expected}", status=None, code=None
            )
        self._write_cache(path, data)
        return data

    def _csv(self, path: str) -> bytes | None:
        data = self.fetch_verified(path)
        return None if data is None else extract_csv(data, path)

    def _fetch(self, url: str) -> bytes | None:
        """GET bytes; None on 404; transient failures retried (``transport.download``)."""
        return download(
            self.session,
            url,
            self.rest,
            retry_statuses=RETRY_STATUSES,
            sleep=self._sleep,
            rng=self._rng,
            sleeps=self.sleeps,
        )

    # -- cache ------------------------------------------------------------------------------

    def _cache_file(self, path: str) -> str | None:
        if self.cache_dir is None:
            return None
        return os.path.join(self.cache_dir, *path.split("/"))

    def _read_cache(self, path: str) -> bytes | None:
        target = self._cache_file(path)
        if target is None or not os.path.exists(target):
            return None
        with open(target, "rb") as f:
            return f.read()

    def _write_cache(self, path: str, data: bytes) -> None:
        target = self._cache_file(path)
        if target is None:
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
