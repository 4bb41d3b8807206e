"""``petrosa migrate-depth``: rewrite the lake's version 1 depth files as version 2.

Depth v1 stored one row per (snapshot, side, level); v2 one row per snapshot with list columns
(``catalog/depth_layout.py``). Every reader already reads a v1 file as v2, so nothing breaks
before this runs; the migration makes the files small (40x fewer rows at top 20) and their
reads cheap. For each v1 file under ``market_data/depth/``:

1. the file is read as v2, and the v2 frame turned back into v1 rows must equal the file's rows,
   value for value (prices and quantities bitwise), or the file is left alone and reported:
   nothing is rewritten that cannot be proved lossless;
2. the v2 frame replaces the file atomically (``Lake.write_frame``);
3. with an instance, the partition's latest materialisation is recorded again (runless) with the
   new row count, ``schema_version`` 2 and ``migrated_from_schema`` 1, keeping its data and
   code version tags, so the UI's row count and version tell the truth and nothing looks stale.

Idempotent: a v2 file is skipped. ``dry_run`` only reports.

Dagster 1.13: ``DagsterInstance.report_runless_asset_event`` records a materialisation outside a
run (https://docs.dagster.io/api/dagster/internals#dagster.DagsterInstance).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from petrosa_pipelines.catalog.depth_layout import LONG_COLUMNS, to_long
from petrosa_pipelines.catalog.schemas import DEPTH
from petrosa_pipelines.instruments import parse_partition_key
from petrosa_pipelines.lake import Lake, is_month_file, lake_path, read_parquet_frame
from petrosa_pipelines.tooling.migrate import _version_tags

DEPTH_DIR = "market_data/depth"
DEPTH_ASSET = dg.AssetKey(["market_data", "depth"])
MIGRATED_FROM_SCHEMA = "migrated_from_schema"


@dataclass
class DepthMigration:
    """What the migration did (or would do), by lake path."""

    #: path -> (v1 rows, v2 rows)
    rewritten: dict[str, tuple[int, int]] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    #: path -> why it was left alone
    refused: dict[str, str] = field(default_factory=dict)
    #: partitions whose materialisation was recorded again
    recorded: list[str] = field(default_factory=list)


def _is_v1(data: bytes) -> bool:
    names = set(pq.ParquetFile(io.BytesIO(data)).schema_arrow.names)
    return {"side", "level"} <= names


def _same_rows(v1: pd.DataFrame, back: pd.DataFrame) -> str | None:
    """Why ``back`` (v2 turned into v1 rows) differs from the file's ``v1`` rows, None if not."""
    if len(v1) != len(back):
        return f"{len(v1)} rows in the file, {len(back)} after the round trip"
    order = ["snapshot_time", "side", "level"]
    a = v1.sort_values(order, kind="stable").reset_index(drop=True)
    b = back.sort_values(order, kind="stable").reset_index(drop=True)
    for col in LONG_COLUMNS:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if col in ("price", "quantity"):
            same = np.array_equal(x.astype(np.float64), y.astype(np.float64), equal_nan=True)
        elif col == "received_at":
            same = a[col].equals(b[col])
        else:
            same = bool((pd.Series(x).astype(str) == pd.Series(y).astype(str)).all())
        if not same:
            return f"column {col} differs after the round trip"
    return None


def migrate_lake(lake: Lake, *, dry_run: bool = False, log: Callable[[str], None] = print):
    """Rewrite every v1 depth file of ``lake`` as v2 (see the module text)."""
    out = DepthMigration()
    # day files only: a month file is never v1 (``market_data/compaction.py`` refuses them)
    for relpath in sorted(p for p in lake.list_files(DEPTH_DIR) if not is_month_file(p)):
        data = lake.read_bytes(relpath)
        if not _is_v1(data):
            out.already.append(relpath)
            continue
        v1 = pq.read_table(io.BytesIO(data)).to_pandas()
        v2 = read_parquet_frame(io.BytesIO(data))
        why = _same_rows(v1, to_long(v2))
        if why is not None:
            out.refused[relpath] = why
            log(f"left alone: {relpath}: {why}")
            continue
        out.rewritten[relpath] = (len(v1), len(v2))
        verb = "would rewrite" if dry_run else "rewrote"
        log(f"{verb} {relpath}: {len(v1):,} -> {len(v2):,} rows")
        if not dry_run:
            lake.write_frame(relpath, v2)
    return out


def record_in_instance(
    instance: dg.DagsterInstance, migration: DepthMigration, log: Callable[[str], None] = print
) -> list[str]:
    """Record each rewritten partition's latest materialisation again with its v2 row count."""
    done: list[str] = []
    for key in sorted(instance.get_materialized_partitions(DEPTH_ASSET)):
        try:
            day, inst = parse_partition_key(key)
        except ValueError:
            continue
        relpath = lake_path(DEPTH_DIR, inst.exchange, inst.symbol, day.isoformat())
        if relpath not in migration.rewritten:
            continue
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DEPTH_ASSET, asset_partitions=[key]), limit=1
        ).records
        latest = records[0].asset_materialization if records else None
        if latest is None:
            continue
        v1_rows, v2_rows = migration.rewritten[relpath]
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=DEPTH_ASSET,
                partition=key,
                description=latest.description,
                metadata={
                    **latest.metadata,
                    "dagster/row_count": dg.MetadataValue.int(v2_rows),
                    "schema_version": DEPTH.version,
                    MIGRATED_FROM_SCHEMA: 1,
                    "v1_rows": dg.MetadataValue.int(v1_rows),
                },
                tags=_version_tags(latest.tags),
            )
        )
        done.append(key)
        log(f"recorded {DEPTH_ASSET.to_user_string()} {key}: {v1_rows:,} -> {v2_rows:,} rows")
    migration.recorded = done
    return done


def main(dry_run: bool = False) -> int:
    """The CLI entry: the lake of ``PETROSA_LAKE_PATH`` and the instance at ``$DAGSTER_HOME``
    (when set)."""
    import os

    from petrosa_pipelines.lake import lake_from_path
    from petrosa_pipelines.settings import from_env

    lake = lake_from_path(from_env().lake_path)
    migration = migrate_lake(lake, dry_run=dry_run)
    if not dry_run and migration.rewritten and os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            record_in_instance(instance, migration)
    print(
        f"depth files: {len(migration.rewritten)} "
        f"{'to rewrite' if dry_run else 'rewritten'}, {len(migration.already)} already v2, "
        f"{len(migration.refused)} left alone"
    )
    return 1 if migration.refused else 0


__all__ = ["DepthMigration", "main", "migrate_lake", "record_in_instance"]
