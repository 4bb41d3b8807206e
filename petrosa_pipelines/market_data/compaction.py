"""Compaction: a closed history month of a quiet instrument is one lake file, not 30.

One file per instrument-day is 1,500 instruments x 60 months x 30 days x 4 datasets = 10.8 M
files, most of them a few KB (a quiet instrument's candles or funding): every listing, open
and footer read pays per file, on a disk as on S3. A closed month (every day before the rolling
window) whose day files total at most ``PETROSA_LAKE_COMPACT_MAX_MB`` is rewritten as one
month file, ``{YYYY-MM}.parquet`` beside the days, one row group per day and the days listed
in its footer (``lake.py`` reads a day from it as from its own file). A busy instrument's days
are big files already and stay as they are.

Nothing is lost on the way (``compact_month``):

1. the month file is built in memory from every day file of the month and the days of an
   earlier month file that no day file replaces (a repaired day's file is the newer copy);
2. every day is read back from the new month file and compared with its source, column by
   column and row by row (arrow equality), before the month file is stored, atomically;
3. a day file is deleted only if it is still the file that was copied (``Lake.signature``:
   a repair writing it meanwhile replaces the inode), so a day written during a compaction
   stays a day file, and is what readers see.

A day whose schema differs from the month's (a file from an earlier layout) stays a day file,
as does a version-1 depth file (``petrosa migrate-depth`` rewrites those first). Repairing one
history day writes its day file, and the month's next materialisation folds it back in.
"""

import datetime as dt
import io
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from petrosa_pipelines.lake import (
    MONTH_INDEX_KEY,
    Lake,
    is_month_file,
    month_index,
)

COMPACT_SETTING = "PETROSA_LAKE_COMPACT_MAX_MB"
#: outcomes of ``compact_month``
COMPACTED, ALREADY, TOO_BIG, NOTHING, OPEN = (
    "compacted",
    "already compacted",
    "day files: over the size limit",
    "no files",
    "day files: the month is not closed (some of its days are in the window or today)",
)


def compact_max_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``PETROSA_LAKE_COMPACT_MAX_MB`` in bytes (validated by ``settings``; 0: never)."""
    from petrosa_pipelines.settings import from_env

    env = os.environ if environ is None else environ
    mb = from_env({k: env[k] for k in (COMPACT_SETTING,) if k in env}).lake_compact_max_mb
    return int(mb * 1024 * 1024)


def month_closed(month: str, window_start: str, today: dt.date | None = None) -> bool:
    """Whether every day of ``month`` (``YYYY-MM``...) is before the window and before today:
    no day partition or open day can write one of its days."""
    first = dt.date.fromisoformat(month[:7] + "-01")
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    today = today or dt.datetime.now(tz=dt.UTC).date()
    return nxt <= dt.date.fromisoformat(window_start) and nxt <= today


@dataclass
class MonthCompaction:
    """What ``compact_month`` did to one month of one folder (dataset/exchange/symbol)."""

    folder: str
    month: str
    status: str = NOTHING
    #: days in the month file after the run
    days: list[str] = field(default_factory=list)
    #: day -> why it stays a day file
    kept: dict[str, str] = field(default_factory=dict)
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> str:
        if self.status == OPEN:
            return self.status
        text = f"{self.status}: {self.files_before} file(s), {self.bytes_before:,} B"
        if self.status == COMPACTED:
            text += f" -> {self.files_after} file(s), {self.bytes_after:,} B"
        if self.kept:
            text += "; kept as day files: " + ", ".join(
                f"{d} ({why})" for d, why in sorted(self.kept.items())
            )
        return text

    def metadata(self) -> dict[str, Any]:
        if self.status == OPEN:  # not looked at: the files can still change
            return {"lake_layout": self.summary()}
        return {"lake_layout": self.summary(), "lake_file_count": self.files_after}


def _layout(schema: pa.Schema) -> tuple[Any, ...]:
    """What decides how a day's rows read back: the fields, and the pandas conversion of each
    column (not the writer's pandas version); other schema metadata as stored."""
    meta = dict(schema.metadata or {})
    meta.pop(MONTH_INDEX_KEY, None)
    pandas = json.loads(meta.pop(b"pandas", b"{}") or b"{}")
    columns = json.dumps(
        [pandas.get("index_columns"), pandas.get("columns"), pandas.get("column_indexes")],
        sort_keys=True,
    )
    fields = tuple((f.name, str(f.type), f.nullable) for f in schema)
    return fields, columns, tuple(sorted(meta.items()))


def _is_depth_v1(schema: pa.Schema) -> bool:
    return {"side", "level"} <= set(schema.names)


@dataclass(frozen=True)
class _Source:
    """Where a day's rows come from: its own file (with its signature) or the old month file."""

    day: str
    relpath: str | None = None
    signature: Any = None
    group: int | None = None

    def read(self, lake: Lake, old: pq.ParquetFile | None) -> pa.Table:
        if self.relpath is not None:
            return pq.ParquetFile(lake.open(self.relpath)).read()
        assert old is not None and self.group is not None
        return old.read_row_groups([self.group])


def compact_month(lake: Lake, folder: str, month: str, max_bytes: int) -> MonthCompaction:
    """Compact the days of ``month`` (``YYYY-MM``) in ``folder`` into one month file (the
    module text); the caller decides that the month is closed."""
    month = month[:7]
    out = MonthCompaction(folder, month)
    month_rel = f"{folder}/{month}.parquet"
    day_files = [
        p
        for p in lake.list_files(folder + "/")
        if p.rsplit("/", 1)[0] == folder
        and not is_month_file(p)
        and p.rsplit("/", 1)[-1].startswith(month + "-")
    ]
    old = pq.ParquetFile(lake.open(month_rel)) if lake.file_exists(month_rel) else None
    old_days = month_index(old.metadata) if old is not None else {}
    out.files_before = len(day_files) + (old is not None)
    out.bytes_before = sum(lake.file_size(p) for p in day_files)
    out.bytes_before += lake.file_size(month_rel) if old is not None else 0
    if not day_files:
        out.status = ALREADY if old is not None else NOTHING
        out.days = sorted(old_days)
        out.files_after, out.bytes_after = out.files_before, out.bytes_before
        return out
    if max_bytes <= 0 or out.bytes_before > max_bytes:
        out.status = TOO_BIG if max_bytes > 0 else "day files: compaction is off"
        out.files_after, out.bytes_after = out.files_before, out.bytes_before
        return out

    sources: dict[str, _Source] = {d: _Source(d, group=g) for d, (g, _) in old_days.items()}
    schemas: dict[str, pa.Schema] = {d: old.schema_arrow for d in old_days} if old else {}
    for relpath in day_files:
        day = relpath.rsplit("/", 1)[-1][:10]
        sources[day] = _Source(day, relpath=relpath, signature=lake.signature(relpath))
        schemas[day] = pq.ParquetFile(lake.open(relpath)).schema_arrow

    layouts = {d: _layout(s) for d, s in schemas.items()}
    if old is not None:  # days already in the month file set the month's layout
        reference = _layout(old.schema_arrow)
    else:  # the most common layout; a tie goes to the newest day's
        counts = Counter(layouts.values())
        reference = max(layouts.values(), key=lambda lay: (counts[lay], _newest(layouts, lay)))
    keep = {}
    for day, lay in layouts.items():
        if _is_depth_v1(schemas[day]):
            keep[day] = "depth version 1: run petrosa migrate-depth first"
        elif lay != reference:
            keep[day] = "its columns differ from the month file's"
    days = sorted(d for d in sources if d not in keep)
    out.kept = keep
    if not any(sources[d].relpath for d in days):  # only days that must stay day files
        out.status = ALREADY if old is not None else NOTHING
        out.days = sorted(old_days)
        out.files_after, out.bytes_after = out.files_before, out.bytes_before
        return out

    data = _month_bytes(lake, old, [sources[d] for d in days], schemas[days[-1]])
    _verify(lake, old, [sources[d] for d in days], data, month_rel)
    lake.write_bytes(month_rel, data)

    for day in days:
        src = sources[day]
        if src.relpath is None:
            continue
        if lake.signature(src.relpath) == src.signature:
            lake.delete(src.relpath)
        else:  # written while this ran: the newer day file stays and is what readers see
            out.kept[day] = "rewritten during the compaction: the day file is newer"
    out.status = COMPACTED
    out.days = days
    left = [p for p in day_files if lake.file_exists(p)]
    out.files_after = 1 + len(left)
    out.bytes_after = len(data) + sum(lake.file_size(p) for p in left)
    return out


def _newest(layouts: Mapping[str, Any], layout: Any) -> str:
    return max(d for d, lay in layouts.items() if lay == layout)


def _month_bytes(
    lake: Lake, old: pq.ParquetFile | None, sources: list[_Source], schema: pa.Schema
) -> bytes:
    """The month file: one row group per day (one day in memory at a time), its days listed
    in the footer."""
    meta = dict(schema.metadata or {})
    meta.pop(MONTH_INDEX_KEY, None)
    schema = schema.with_metadata(meta)
    buf = io.BytesIO()
    index: dict[str, list[int]] = {}
    with pq.ParquetWriter(buf, schema, compression="zstd") as writer:
        for group, src in enumerate(sources):
            table = src.read(lake, old)
            writer.write_table(table.cast(schema), row_group_size=max(len(table), 1))
            index[src.day] = [group, len(table)]
        writer.add_key_value_metadata({MONTH_INDEX_KEY: json.dumps(index, sort_keys=True)})
    return buf.getvalue()


def _verify(
    lake: Lake, old: pq.ParquetFile | None, sources: list[_Source], data: bytes, where: str
) -> None:
    """Every day of the new month file equals its source (else nothing is stored)."""
    pf = pq.ParquetFile(io.BytesIO(data))
    index = month_index(pf.metadata)
    if sorted(index) != [s.day for s in sources] or pf.metadata.num_row_groups != len(sources):
        raise RuntimeError(f"{where}: the month file does not list the days it was given")
    for src in sources:
        group, rows = index[src.day]
        back = pf.read_row_groups([group])
        want = src.read(lake, old)
        if pf.metadata.row_group(group).num_rows != rows or not back.equals(want):
            raise RuntimeError(
                f"{where}: day {src.day} reads back differently from the month file; "
                "nothing was changed"
            )


__all__ = [
    "COMPACT_SETTING",
    "MonthCompaction",
    "compact_max_bytes",
    "compact_month",
    "month_closed",
]
