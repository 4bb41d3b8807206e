"""``petrosa compact-lake``: compact the closed quiet months an install already holds.

The history roll compacts a month when it records it (``market_data/history.py``); months
recorded before compaction existed, or kept as day files while ``PETROSA_LAKE_COMPACT_MAX_MB``
was 0, are compacted by this command (``market_data/compaction.py`` says how and why nothing is
lost). Only months before the rolling window (``PETROSA_DAILY_WINDOW_DAYS``) and before today are
touched. Each month's days are hashed by their rows before and after (``rows_digest``); a
missing or different day fails the command. Idempotent: a compacted month is left alone.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from petrosa_pipelines.instruments import DATASETS
from petrosa_pipelines.lake import Lake, is_month_file
from petrosa_pipelines.market_data.compaction import (
    COMPACTED,
    MonthCompaction,
    compact_month,
    month_closed,
)
from petrosa_pipelines.tooling.migrate_partitions import rows_digest


@dataclass
class LakeCompaction:
    """What the command did (or would do)."""

    months: list[MonthCompaction] = field(default_factory=list)
    #: (folder, month) of the months with day files that a run would compact
    candidates: list[tuple[str, str]] = field(default_factory=list)
    #: day paths whose rows changed or vanished (must stay empty)
    changed: list[str] = field(default_factory=list)

    @property
    def files_removed(self) -> int:
        return sum(m.files_before - m.files_after for m in self.months)


def candidate_months(lake: Lake, window_start: str, today: dt.date) -> list[tuple[str, str]]:
    """Closed months of market-data folders that still hold day files, oldest first."""
    found = set()
    for dataset in DATASETS:
        for relpath in lake.list_files(f"market_data/{dataset}/"):
            folder, name = relpath.rsplit("/", 1)
            if is_month_file(relpath) or not month_closed(name[:7], window_start, today):
                continue
            found.add((folder, name[:7]))
    return sorted(found, key=lambda fm: (fm[1], fm[0]))


def _digests(lake: Lake, folder: str, month: str) -> dict[str, str]:
    return {
        p: rows_digest(lake.read_table(p))
        for p in lake.list(folder + "/")
        if p.rsplit("/", 1)[1].startswith(month + "-")
    }


def compact_lake(
    lake: Lake,
    window_start: str,
    max_bytes: int,
    *,
    dry_run: bool = False,
    today: dt.date | None = None,
    log: Callable[[str], None] = print,
) -> LakeCompaction:
    """Compact every closed month holding day files (``dry_run``: only list them)."""
    today = today or dt.datetime.now(tz=dt.UTC).date()
    out = LakeCompaction(candidates=candidate_months(lake, window_start, today))
    if dry_run:
        return out
    for folder, month in out.candidates:
        before = _digests(lake, folder, month)
        done = compact_month(lake, folder, month, max_bytes)
        after = _digests(lake, folder, month)
        out.changed += sorted(p for p, h in before.items() if after.get(p) != h)
        out.months.append(done)
        if done.status == COMPACTED:
            log(f"{folder} {month}: {done.summary()}")
    return out


def main(dry_run: bool = False) -> int:
    """The CLI entry: the lake of ``PETROSA_LAKE_PATH``."""
    from petrosa_pipelines.lake import lake_from_path
    from petrosa_pipelines.market_data.compaction import compact_max_bytes
    from petrosa_pipelines.market_data.partitions import PARTITIONS_START
    from petrosa_pipelines.settings import from_env

    lake = lake_from_path(from_env().lake_path)
    done = compact_lake(lake, PARTITIONS_START, compact_max_bytes(), dry_run=dry_run)
    if dry_run:
        print(f"closed months before {PARTITIONS_START} holding day files: {len(done.candidates)}")
        return 0
    compacted = sum(m.status == COMPACTED for m in done.months)
    print(
        f"closed months before {PARTITIONS_START}: {len(done.candidates)} with day files, "
        f"{compacted} compacted, {done.files_removed} files fewer; changed days: "
        f"{len(done.changed)}"
    )
    for path in done.changed:
        print(f"CHANGED: {path}")
    return 1 if done.changed else 0


__all__ = ["LakeCompaction", "candidate_months", "compact_lake", "main"]
