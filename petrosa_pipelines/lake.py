"""The parquet lake: one file per (layer/dataset, exchange, symbol, date), written atomically.

Layout: ``{base}/{layer}/{dataset}/{exchange}/{symbol}/{YYYY-MM-DD}.parquet``. It lives here
and only here: the IO manager, the Python API and the warehouse loaders all go through
``lake_path``.

A closed month of a quiet instrument may be compacted into one month file beside the days,
``{YYYY-MM}.parquet``, one row group per day and the days listed in its footer
(``market_data/compaction.py`` writes them). Every read here resolves a day path to its day
file if there is one, else to its row group in the month file, so readers keep asking for days:
``list`` names the month's days, ``read_frame``/``num_rows``/``exists`` find them. A day file
written later (a repair) takes precedence over the month's copy until the month is compacted
again. Local writes go to a temporary file that is fsynced and renamed into place, so
a reader sees the old file or the new one, never half of one; S3 ``PutObject`` is atomic.

Files get the mode of any new file (``0666`` less the umask, like ``open()``), so the serving
user of a shared lake can read them. A write killed between the temporary file and the rename
leaves the temporary file behind; the next write to the same directory removes those older than
``STALE_TEMP_SECONDS`` (``LocalLake.clean_temp_files`` does the whole lake).
"""

from __future__ import annotations

import abc
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from petrosa_pipelines.catalog.depth_layout import is_long
from petrosa_pipelines.catalog.schemas import DEPTH, conform, constant_chunks, with_trade_ids

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
log = logging.getLogger(__name__)
#: a temporary file this old is an orphan of a killed write (a write streams its rows and
#: takes seconds), never one in progress
STALE_TEMP_SECONDS = 3600.0
#: our temporary files: ``.<target>.<16 hex>.tmp``, and ``.<target>.<8 chars>.tmp`` from the
#: ``tempfile.mkstemp`` naming of earlier versions
_TEMP_NAME = re.compile(r"^\.[A-Za-z0-9._-]+\.(?:[0-9a-f]{16}|[a-z0-9_]{8})\.tmp$")


#: arrow's allocator unless ``ARROW_DEFAULT_MEMORY_POOL`` names another (``lean_memory_pool``)
LEAN_POOL = "jemalloc"


def lean_memory_pool() -> str:
    """Arrow allocates from jemalloc, returning freed pages to the OS at once; the backend in
    use is returned. A day of 10 M trades is parsed, validated, written and read back in
    column-sized buffers, and arrow's default (mimalloc) kept freed ones resident: parsing
    the day's CSV peaked 360 MB higher (1,153 MB above the process, against 792), reading it
    back from the lake 130 MB higher (957 against 829), measured.

    Arrow's own allocations (its readers' and kernels') take the pool named by
    ``ARROW_DEFAULT_MEMORY_POOL`` when pyarrow loads, so the process should name jemalloc
    before then; this makes it the default of every call from Python too, and sets no decay
    delay for the arenas jemalloc creates from now on. Another backend named there (or a build
    without jemalloc) keeps arrow's own choice."""
    named = os.environ.get("ARROW_DEFAULT_MEMORY_POOL", LEAN_POOL)
    if named != LEAN_POOL:
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool().backend_name
    pa.jemalloc_set_decay_ms(0)  # only arenas created after it: as early as possible
    pa.set_memory_pool(pool)
    return LEAN_POOL


lean_memory_pool()


def lake_path(dataset: str, exchange: str, symbol: str, date: str) -> str:
    """Relative path of one partition file; rejects names that could escape the lake.

    ``dataset`` may have several segments (``market_data/candles``: layer then dataset).
    """
    parts = [("dataset", p) for p in dataset.split("/")]
    for label, part in (*parts, ("exchange", exchange), ("symbol", symbol)):
        if not _SAFE.match(part) or part in {".", ".."}:
            raise ValueError(f"lake {label} {part!r} must match {_SAFE.pattern}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ValueError(f"lake date {date!r} must be YYYY-MM-DD")
    return f"{dataset}/{exchange}/{symbol}/{date}.parquet"


def write_parquet(frame: pd.DataFrame, sink: Any) -> None:
    """``frame`` as zstd parquet into ``sink`` (a path or a binary file object).

    ``Table.from_pandas`` shares the frame's numeric and arrow-backed text buffers and the
    writer encodes one row group at a time, so writing straight into a file holds little more
    than the frame itself (a day of 10 M trades is over a GB as a frame).
    """
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    write_parquet(frame, buf)
    return buf.getvalue()


def read_parquet_frame(
    source: Any, columns: Sequence[str] | None = None, row_groups: Sequence[int] | None = None
) -> pd.DataFrame:
    """A parquet file (path, file object or ``pq.ParquetFile``) as the lake's frame, holding
    about one copy; ``columns``: only those (and what derives them: a v1 trades file's
    ``trade_id`` reads its ``agg_trade_id``); ``row_groups``: only those (a day of a month
    file).

    A text column with one value in every row (a partition's exchange, symbol, often its
    source) is not read: its row groups' statistics prove the value, and the column is built
    from one shared block of it (``constant_chunks``), which a 10 M-row day reads as a few
    hundred KB instead of 150 MB. The rest is read and converted one column at a time, so
    the file's decoded table is never held beside the frame (a 10 M-trade day: peak 130 MB
    lower than converting the whole table, the same frame).
    """
    pf = source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)
    schema = pf.schema_arrow
    groups = list(range(pf.metadata.num_row_groups)) if row_groups is None else list(row_groups)
    constant = constant_text_columns(pf.metadata, schema, groups)
    n = sum(pf.metadata.row_group(g).num_rows for g in groups)
    wanted = _wanted(schema, columns)

    def read(names: list[str]) -> pa.Table:
        if row_groups is None:
            return pf.read(columns=names)
        return pf.read_row_groups(groups, columns=names)

    if not _columnwise(schema):
        table = read([c for c in wanted if c not in constant])
        for i, name in enumerate(wanted):
            if name in constant:
                field = schema.field(name)
                table = table.add_column(i, field, constant_chunks(constant[name], n, field.type))
        frame = table.replace_schema_metadata(schema.metadata).to_pandas(
            split_blocks=True, self_destruct=True
        )
    else:
        out = {}
        for name in wanted:
            if name in constant:
                field = schema.field(name)
                chunks = constant_chunks(constant[name], n, field.type)
                one = pa.table([chunks], schema=pa.schema([field], metadata=schema.metadata))
            else:
                one = read([name])
            out[name] = one.to_pandas(split_blocks=True, self_destruct=True)[name]
            del one
        frame = pd.DataFrame(out, copy=False)
    if is_long(frame) and "snapshot_time" in frame.columns:  # a depth file of version 1
        return conform(frame, DEPTH)
    return with_trade_ids(frame)


def _wanted(schema: pa.Schema, columns: Sequence[str] | None) -> list[str]:
    """The file's columns to read for ``columns`` (None: all), in the file's order."""
    if columns is None:
        return list(schema.names)
    need = set(columns)
    if "trade_id" in need and "trade_id" not in schema.names:
        need.add("agg_trade_id")  # a v1 trades file: ``with_trade_ids`` derives it
    return [name for name in schema.names if name in need]


def _columnwise(schema: pa.Schema) -> bool:
    """Whether each column converts alone as in the whole table: named columns and no stored
    index (a lake file's; a file written with its index keeps the whole-table read)."""
    meta = schema.pandas_metadata or {}
    stored_index = [c for c in meta.get("index_columns", []) if not isinstance(c, dict)]
    return bool(schema.names) and not stored_index and len(set(schema.names)) == len(schema)


#: a statistics value this long may have been truncated by a writer: such a column is read
CONSTANT_MAX_CHARS = 32


def constant_text_columns(
    meta: pq.FileMetaData, schema: pa.Schema, row_groups: Sequence[int] | None = None
) -> dict[str, str]:
    """Text columns whose every row group (of ``row_groups``; None: all) holds one value and
    no null: {name: value}."""
    out: dict[str, str] = {}
    groups = list(range(meta.num_row_groups)) if row_groups is None else list(row_groups)
    if not groups or sum(meta.row_group(g).num_rows for g in groups) == 0:
        return out
    top = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    for field in schema:
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        j = top.get(field.name)
        values = set()
        for g in groups:
            col = meta.row_group(g).column(j) if j is not None else None
            st = col.statistics if col is not None else None
            if (
                st is None
                or not st.has_min_max
                or not st.has_null_count
                or st.null_count != 0
                or st.num_values != meta.row_group(g).num_rows
                or st.min != st.max
            ):
                break
            values.add(st.min)
        else:
            if len(values) == 1:
                value = values.pop()
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                if isinstance(value, str) and len(value) < CONSTANT_MAX_CHARS:
                    out[field.name] = value
    return out


@dataclass(frozen=True)
class LakeFile:
    """One partition file as the lake holds it, read only as far as asked: its row count
    (from the footer), some columns, or the whole frame. What a re-run keeps
    (``market_data/sources.py``: ``PreviousPartitionSource``), so the kept day is not held
    beside the day being built (a 10 M-trade day is over 700 MB as a frame)."""

    lake: Lake
    relpath: str
    rows: int

    def __len__(self) -> int:
        return self.rows

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return self.lake.read_frame(self.relpath, columns)


#: a day file ``<dir>/YYYY-MM-DD.parquet`` and the month file its days may be compacted into
_DAY_FILE = re.compile(r"^(?P<dir>.+)/(?P<day>(?P<month>\d{4}-\d{2})-\d{2})\.parquet$")
_MONTH_NAME = re.compile(r"^\d{4}-\d{2}\.parquet$")
#: month files a lake keeps open (``Lake._month_file``)
MONTH_FILES_OPEN = 8
#: the month file's footer key listing its days: {"YYYY-MM-DD": [row group, rows], ...}
MONTH_INDEX_KEY = b"petrosa.month_days"


def month_path(day_relpath: str) -> str | None:
    """The month file a day file may be compacted into (None: not a day file)."""
    m = _DAY_FILE.match(day_relpath)
    return f"{m['dir']}/{m['month']}.parquet" if m else None


def is_month_file(relpath: str) -> bool:
    return bool(_MONTH_NAME.match(relpath.rsplit("/", 1)[-1]))


def month_index(meta: pq.FileMetaData) -> dict[str, tuple[int, int]]:
    """A month file's days: {day: (row group, rows)}; {} for a file that is not one."""
    raw = (meta.metadata or {}).get(MONTH_INDEX_KEY)
    if raw is None:
        return {}
    return {day: (int(g), int(rows)) for day, (g, rows) in json.loads(raw).items()}


@dataclass(frozen=True)
class MonthDay:
    """One day inside a month file: its row group in the opened file."""

    file: pq.ParquetFile
    group: int
    rows: int


class Lake(abc.ABC):
    """Where partition files live; subclasses for local disk and S3.

    Subclasses store and list files; this class resolves a day to its file or to its row
    group in a compacted month file (the module text)."""

    @abc.abstractmethod
    def write_bytes(self, relpath: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def read_bytes(self, relpath: str) -> bytes:
        """Raise FileNotFoundError when absent (keeps allow_missing_partitions working)."""

    @abc.abstractmethod
    def file_exists(self, relpath: str) -> bool:
        """Whether this file itself exists (a compacted day has no file: see ``exists``)."""

    @abc.abstractmethod
    def delete(self, relpath: str) -> None:
        """Delete this file (a compacted day stays in its month file)."""

    @abc.abstractmethod
    def list_files(self, prefix: str) -> list[str]:
        """Relative paths of the parquet files under ``prefix`` as stored, sorted."""

    @abc.abstractmethod
    def file_size(self, relpath: str) -> int:
        """Bytes of the file (FileNotFoundError when absent)."""

    @abc.abstractmethod
    def signature(self, relpath: str) -> Any:
        """A value that changes whenever the file is replaced (None when absent), so a
        compaction deletes only the day files it copied."""

    @abc.abstractmethod
    def uri(self, relpath: str) -> str: ...

    def open(self, relpath: str) -> Any:
        """What pyarrow reads this file from (FileNotFoundError when absent)."""
        return io.BytesIO(self.read_bytes(relpath))

    def write_frame(self, relpath: str, frame: pd.DataFrame) -> None:
        self.write_bytes(relpath, frame_to_parquet_bytes(frame))

    def month_day(self, relpath: str) -> MonthDay | None:
        """The day's row group in its compacted month file (None: not compacted)."""
        month = month_path(relpath)
        pf = None if month is None else self._month_file(month)
        if pf is None:
            return None
        found = month_index(pf.metadata).get(_DAY_FILE.match(relpath)["day"])
        return None if found is None else MonthDay(pf, *found)

    def _month_file(self, relpath: str) -> pq.ParquetFile | None:
        """The month file, opened once while it is unchanged (``signature``): a warehouse load
        reads its 30 days one by one, and on S3 each open is a download of the month."""
        sig = self.signature(relpath)
        if sig is None:
            return None
        cache: dict[str, tuple[Any, pq.ParquetFile]] = self.__dict__.setdefault("_months", {})
        hit = cache.get(relpath)
        if hit is not None and hit[0] == sig:
            return hit[1]
        try:
            pf = pq.ParquetFile(self.open(relpath))
        except FileNotFoundError:
            return None
        cache.pop(relpath, None)
        cache[relpath] = (sig, pf)
        while len(cache) > MONTH_FILES_OPEN:
            cache.pop(next(iter(cache)))
        return pf

    def read_frame(self, relpath: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The day's frame (``columns``: only those); a v1 trades file (no ``trade_id``)
        reads as v2, so it counts as a complete partition and loads into the warehouse
        (other datasets are unchanged)."""
        try:
            return read_parquet_frame(self.open(relpath), columns)
        except FileNotFoundError:
            day = self.month_day(relpath)
            if day is None:
                raise
        return read_parquet_frame(day.file, columns, row_groups=[day.group])

    def read_table(self, relpath: str) -> pa.Table:
        """The day's rows as stored (its file's, or its row group's), no conversion."""
        try:
            return pq.ParquetFile(self.open(relpath)).read()
        except FileNotFoundError:
            day = self.month_day(relpath)
            if day is None:
                raise
        return day.file.read_row_groups([day.group])

    def num_rows(self, relpath: str) -> int:
        """The day's row count, from its file's footer (or its month file's)."""
        try:
            return pq.ParquetFile(self.open(relpath)).metadata.num_rows
        except FileNotFoundError:
            day = self.month_day(relpath)
            if day is None:
                raise
        return day.rows

    def file(self, relpath: str) -> LakeFile:
        """The day, unread but its row count (FileNotFoundError when absent)."""
        return LakeFile(self, relpath, self.num_rows(relpath))

    def exists(self, relpath: str) -> bool:
        """Whether the lake holds this day (its file, or its row group in a month file)."""
        return self.file_exists(relpath) or self.month_day(relpath) is not None

    def list(self, prefix: str) -> list[str]:
        """The day files under ``prefix``, the compacted ones named as their day files, sorted."""
        out = set()
        for relpath in self.list_files(prefix):
            if not is_month_file(relpath):
                out.add(relpath)
                continue
            folder = relpath.rsplit("/", 1)[0]
            meta = pq.ParquetFile(self.open(relpath)).metadata
            out.update(f"{folder}/{day}.parquet" for day in month_index(meta))
        return sorted(out)


class LocalLake(Lake):
    def __init__(self, base: str | os.PathLike[str]):
        self.base = Path(base)

    def _full(self, relpath: str) -> Path:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"lake path {relpath!r} must be relative and inside the lake")
        return self.base.joinpath(*rel.parts)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        self._write_atomic(relpath, lambda f: f.write(data))

    def write_frame(self, relpath: str, frame: pd.DataFrame) -> None:
        """Parquet written straight into the temporary file: the file's bytes are never held
        in memory besides the frame (``write_parquet``); the same bytes as ``write_bytes``."""
        self._write_atomic(relpath, lambda f: write_parquet(frame, f))

    def open(self, relpath: str) -> Path:
        """The file itself (read in place, not a copy of its bytes)."""
        path = self._full(relpath)
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path

    def _write_atomic(self, relpath: str, write: Callable[[Any], object]) -> None:
        """``write(file)`` into a temporary file, fsynced and renamed over ``relpath``."""
        target = self._full(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 applies the umask like any new file (mkstemp forces 0600)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        remove_stale_temp_files(target.parent)

    def clean_temp_files(self, older_than_s: float = STALE_TEMP_SECONDS) -> list[Path]:
        """Remove orphaned temporary files anywhere in the lake (maintenance)."""
        if not self.base.is_dir():
            return []
        removed = remove_stale_temp_files(self.base, older_than_s)
        for root, dirs, _ in os.walk(self.base):
            for d in dirs:
                removed += remove_stale_temp_files(Path(root, d), older_than_s)
        return removed

    def read_bytes(self, relpath: str) -> bytes:
        return self._full(relpath).read_bytes()

    def file_exists(self, relpath: str) -> bool:
        return self._full(relpath).is_file()

    def delete(self, relpath: str) -> None:
        self._full(relpath).unlink(missing_ok=True)

    def file_size(self, relpath: str) -> int:
        return self.open(relpath).stat().st_size

    def signature(self, relpath: str) -> tuple[int, int, int] | None:
        """Inode, size and mtime: an atomic rewrite (``os.replace``) always changes the inode."""
        try:
            st = self._full(relpath).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def list_files(self, prefix: str) -> list[str]:
        root = self._full(prefix) if prefix else self.base
        if not root.exists():
            return []
        return sorted(
            p.relative_to(self.base).as_posix()
            for p in root.rglob("*.parquet")
            if not p.name.startswith(".")
        )

    def uri(self, relpath: str) -> str:
        return self._full(relpath).resolve().as_uri()


def remove_stale_temp_files(
    directory: str | os.PathLike[str],
    older_than_s: float = STALE_TEMP_SECONDS,
    now: float | None = None,
) -> list[Path]:
    """Delete our temporary files in ``directory`` (not below) last modified more than
    ``older_than_s`` ago; anything else, and a younger write in progress, is left alone."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not _TEMP_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime <= older_than_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # another writer cleaned it first
            continue
        log.info("removed orphaned lake temporary file %s", entry.path)
        removed.append(Path(entry.path))
    return removed


class S3Lake(Lake):
    """The lake in an S3 bucket through a boto3 client (dagster-aws ``S3Resource``)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "lake"):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def write_bytes(self, relpath: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)

    def read_bytes(self, relpath: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.uri(relpath)) from None
        return obj["Body"].read()

    def _head(self, relpath: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(relpath))
        except Exception:  # noqa: BLE001 - botocore raises ClientError(404) here
            return None

    def file_exists(self, relpath: str) -> bool:
        return self._head(relpath) is not None

    def delete(self, relpath: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(relpath))

    def file_size(self, relpath: str) -> int:
        head = self._head(relpath)
        if head is None:
            raise FileNotFoundError(self.uri(relpath))
        return int(head["ContentLength"])

    def signature(self, relpath: str) -> tuple[str, str] | None:
        """ETag and last-modified time of the object (None when absent)."""
        head = self._head(relpath)
        return None if head is None else (str(head.get("ETag")), str(head.get("LastModified")))

    def list_files(self, prefix: str) -> list[str]:
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        start = self._key(prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith(".parquet"):
                    out.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(out)

    def uri(self, relpath: str) -> str:
        return f"s3://{self.bucket}/{self._key(relpath)}"


def lake_from_path(path: str) -> Lake:
    """A LocalLake for a directory, an S3Lake (dagster-aws client) for ``s3://bucket/prefix``.

    The S3 endpoint and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``
    for MinIO or another S3-compatible store), never from this path.
    """
    if path.startswith("s3://"):
        from dagster_aws.s3 import S3Resource

        bucket, _, prefix = path[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"lake path {path!r} must look like s3://bucket/prefix")
        return S3Lake(S3Resource().get_client(), bucket, prefix)
    return LocalLake(path)
