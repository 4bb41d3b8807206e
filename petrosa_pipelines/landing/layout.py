"""Where everything in the landing zone lives: the one place that knows the directory layout.

::

    {root}/{exchange}/{group}/{YYYY-MM-DD}/{HH}/seg-<first_recv_ms>-<writer>-<seq>.jsonl
    {root}/{exchange}/{group}/{YYYY-MM-DD}/{HH}/.seg-<...>.jsonl.tmp          (still open)
    {root}/{exchange}/_deadletter/{group}/{YYYY-MM-DD}/{HH}/seg-....jsonl
    {root}/{exchange}/_gaps/{group}/gap-<recorded_ms>-<writer>-<seq>.jsonl  (an entry a line)
    {root}/{exchange}/_heartbeat/{group}.json
    {root}/{exchange}/{group}/.lock                                  (held by the live writer)

Segments are filed by *receipt* hour (UTC), so a writer never reopens an old directory and a
reader of one event-time window only has to look at the receipt hours around it. Names start
with the receipt time of their first line, so sorting names sorts segments in time. Group names
may not start with ``_`` or ``.``: those prefixes are reserved for the stores beside the data.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from petrosa_pipelines.lib.timeutil import HOUR_MS

SEGMENT_SUFFIX = ".jsonl"
TEMP_SUFFIX = ".tmp"
DEAD_LETTER_DIR = "_deadletter"
GAP_DIR = "_gaps"
HEARTBEAT_DIR = "_heartbeat"
LOCK_NAME = ".lock"

_SEGMENT_RE = re.compile(r"^seg-(\d+)-([0-9A-Za-z]+)-(\d+)\.jsonl$")
_NAME_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.=-]*$")


def check_name(kind: str, name: str) -> str:
    """Reject names that would escape the root or collide with the reserved stores."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"{kind} name {name!r}: use letters, digits, _ . = - (not first: _ . -)")
    return name


@dataclass(frozen=True, order=True)
class SegmentName:
    """The parts of a closed segment's file name."""

    first_recv_ms: int
    writer: str
    seq: int

    @property
    def file_name(self) -> str:
        return f"seg-{self.first_recv_ms}-{self.writer}-{self.seq}{SEGMENT_SUFFIX}"

    @property
    def temp_name(self) -> str:
        return f".{self.file_name}{TEMP_SUFFIX}"

    @classmethod
    def parse(cls, file_name: str) -> SegmentName | None:
        """The name of a closed segment, or None for anything else (temp files included)."""
        m = _SEGMENT_RE.match(file_name)
        if m is None:
            return None
        return cls(int(m.group(1)), m.group(2), int(m.group(3)))

    @classmethod
    def parse_temp(cls, file_name: str) -> SegmentName | None:
        """The name a leftover temp file would have had once closed."""
        if not (file_name.startswith(".") and file_name.endswith(TEMP_SUFFIX)):
            return None
        return cls.parse(file_name[1 : -len(TEMP_SUFFIX)])


def hour_floor(ms: int) -> int:
    return ms - ms % HOUR_MS


def hour_parts(ms: int) -> tuple[str, str]:
    """(``YYYY-MM-DD``, ``HH``) of the UTC hour holding ``ms``."""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def exchange_dir(root: Path, exchange: str) -> Path:
    return root / check_name("exchange", exchange)


def group_dir(root: Path, exchange: str, group: str) -> Path:
    return exchange_dir(root, exchange) / check_name("group", group)


def data_hour_dir(root: Path, exchange: str, group: str, recv_ms: int) -> Path:
    day, hour = hour_parts(recv_ms)
    return group_dir(root, exchange, group) / day / hour


def dead_letter_group_dir(root: Path, exchange: str, group: str) -> Path:
    return exchange_dir(root, exchange) / DEAD_LETTER_DIR / check_name("group", group)


def dead_letter_hour_dir(root: Path, exchange: str, group: str, recv_ms: int) -> Path:
    day, hour = hour_parts(recv_ms)
    return dead_letter_group_dir(root, exchange, group) / day / hour


def gap_dir(root: Path, exchange: str, group: str) -> Path:
    return exchange_dir(root, exchange) / GAP_DIR / check_name("group", group)


def heartbeat_path(root: Path, exchange: str, group: str) -> Path:
    return exchange_dir(root, exchange) / HEARTBEAT_DIR / f"{check_name('group', group)}.json"


def lock_path(root: Path, exchange: str, group: str) -> Path:
    return group_dir(root, exchange, group) / LOCK_NAME


def data_groups(root: Path, exchange: str) -> list[str]:
    """Groups that have landed data for ``exchange`` (reserved stores excluded)."""
    base = exchange_dir(root, exchange)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name[0] not in "_.")


def closed_segments_in(directory: Path) -> list[tuple[SegmentName, Path]]:
    """Closed segments of one hour directory, oldest first; temp files are invisible."""
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        name = SegmentName.parse(p.name)
        if name is not None:
            out.append((name, p))
    out.sort()
    return out


def hour_dirs_between(base: Path, start_ms: int, end_ms: int) -> list[Path]:
    """Existing ``{base}/{YYYY-MM-DD}/{HH}`` directories of hours touching [start_ms, end_ms).

    Lists what exists instead of enumerating hours, so a window of years costs what it holds.
    """
    if end_ms <= start_ms or not base.is_dir():
        return []
    lo_day, lo_hour = hour_parts(hour_floor(start_ms))
    hi_day, hi_hour = hour_parts(hour_floor(end_ms - 1))
    out = []
    for day in sorted(p.name for p in base.iterdir() if p.is_dir() and p.name[0].isdigit()):
        if not lo_day <= day <= hi_day:
            continue
        for hour in sorted(p.name for p in (base / day).iterdir() if p.is_dir()):
            if (day, hour) < (lo_day, lo_hour) or (day, hour) > (hi_day, hi_hour):
                continue
            out.append(base / day / hour)
    return out


def hour_dirs_newest_first(base: Path) -> list[Path]:
    """Every existing ``{base}/{YYYY-MM-DD}/{HH}`` directory, newest hour first."""
    if not base.is_dir():
        return []
    out = []
    for day in sorted((p for p in base.iterdir() if p.is_dir() and p.name[0].isdigit()),
                      reverse=True):  # fmt: skip
        out.extend(sorted((p for p in day.iterdir() if p.is_dir()), reverse=True))
    return out


def segments_for_receipt_window(
    root: Path, exchange: str, start_ms: int, end_ms: int, *, slack_ms: int = HOUR_MS
) -> list[tuple[SegmentName, Path]]:
    """Closed data segments of every group whose receipt hour may hold events of the window.

    Receipt lags event time (and a skewed clock may lead it), so a reader of [start, end) also
    reads the hour before and the hour after: the previous day's last and the next day's first
    hour for a whole day.
    """
    out: list[tuple[SegmentName, Path]] = []
    for group in data_groups(root, exchange):
        base = group_dir(root, exchange, group)
        for d in hour_dirs_between(base, start_ms - slack_ms, end_ms + slack_ms):
            out.extend(closed_segments_in(d))
    out.sort()
    return out
