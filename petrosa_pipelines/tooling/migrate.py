"""``petrosa migrate-instruments``: rename legacy bare-symbol partitions to instrument ids.

Before venues had ids, the ``symbols`` dynamic partitions held bare Binance USD-M symbols
(``BTCUSDT``), so keys were ``2024-05-01|BTCUSDT``. Those keys keep working (a bare symbol
reads as ``binance-usdm:BTCUSDT``, same lake and landing files: ``petrosa_pipelines.instruments``);
this migration makes the instance say so, without rebuilding anything:

1. for every registered bare value, the qualified id is planned (``BTCUSDT`` ->
   ``binance-usdm:BTCUSDT``);
2. every materialised partition ``day|BARE`` of every asset (market data, analytics, the health
   asset, the serving stores) gets a runless ``AssetMaterialization`` on ``day|<id>`` that copies
   the latest materialisation's metadata and tags (data and code versions, so nothing looks stale)
   plus ``migrated_from``; the files it describes are the same files;
3. the ids are added to the ``symbols`` partitions, then the bare values removed (their history
   stays in the event log, under the old keys).

Materialisations are recorded before the partitions appear, so automation never sees a new
partition as missing. Check results are not copied: their history stays on the old keys (copies
would re-fire the alert and health sensors); the daily batched re-audit re-checks the recent days.
Idempotent: a partition already materialised under its id is left alone, and a second run finds
no bare value. ``dry_run`` only reports the plan.

Dagster 1.13: ``DagsterInstance.report_runless_asset_event`` records a materialisation outside a
run (https://docs.dagster.io/api/dagster/internals#dagster.DagsterInstance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from petrosa_pipelines.instruments import (
    InstrumentError,
    instrument_id,
    is_legacy_key,
    partition_key_str,
    split_key,
)
from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME

#: metadata key naming the partition a copied materialisation came from
MIGRATED_FROM = "migrated_from"


@dataclass(frozen=True)
class Copy:
    """One materialisation to record: ``asset`` partition ``old`` as ``new``."""

    asset: dg.AssetKey
    old: str
    new: str


@dataclass
class MigrationPlan:
    """What the migration does (or did): renames, copies, and values it cannot read."""

    #: registered bare value -> instrument id
    renames: dict[str, str] = field(default_factory=dict)
    #: materialisations to copy onto the qualified keys
    copies: list[Copy] = field(default_factory=list)
    #: partitions already materialised under their id (left alone)
    already: list[Copy] = field(default_factory=list)
    #: registered bare values that are no instrument (junk added in the UI): left untouched
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.renames

    def lines(self) -> list[str]:
        """The plan as text, one action per line."""
        out = [f"partition {old} -> {new}" for old, new in sorted(self.renames.items())]
        out += [
            f"materialisation {c.asset.to_user_string()} {c.old} -> {c.new}" for c in self.copies
        ]
        out += [f"already migrated: {c.asset.to_user_string()} {c.new}" for c in self.already]
        out += [f"left alone (not an instrument): {v}: {why}" for v, why in self.unreadable.items()]
        return out


def _renames(instance: dg.DagsterInstance) -> tuple[dict[str, str], dict[str, str]]:
    renames, unreadable = {}, {}
    for value in instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME):
        if not is_legacy_key(value):
            continue
        try:
            renames[value] = instrument_id(value)
        except InstrumentError as exc:
            unreadable[value] = str(exc)
    return renames, unreadable


def _legacy_partitions(
    instance: dg.DagsterInstance, asset: dg.AssetKey, renames: dict[str, str]
) -> list[tuple[str, str]]:
    """(old key, new key) of the asset's materialised partitions of a renamed bare value."""
    out = []
    for pk in instance.get_materialized_partitions(asset):
        try:
            day, value = split_key(pk)
        except ValueError:
            continue  # a date-only partition (cross-symbol analytics)
        if value in renames:
            out.append((str(pk), partition_key_str(day, renames[value])))
    return sorted(out)


def plan_migration(instance: dg.DagsterInstance) -> MigrationPlan:
    """What ``migrate`` would do on ``instance`` (reads only)."""
    renames, unreadable = _renames(instance)
    plan = MigrationPlan(renames=renames, unreadable=unreadable)
    if not renames:
        return plan
    for asset in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
        pairs = _legacy_partitions(instance, asset, renames)
        if not pairs:
            continue
        done = set(instance.get_materialized_partitions(asset))
        for old, new in pairs:
            (plan.already if new in done else plan.copies).append(Copy(asset, old, new))
    return plan


def _version_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """The data and code version tags of a materialisation (so the copy is as fresh as the
    original), without its partition tags, which name the old key."""
    return {
        k: v
        for k, v in (tags or {}).items()
        if k.startswith(("dagster/data_version", "dagster/code_version", "dagster/input_"))
    }


def _copy(instance: dg.DagsterInstance, c: Copy) -> None:
    """Record ``c.new`` as materialised with the latest materialisation of ``c.old``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=c.asset, asset_partitions=[c.old]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return
    latest = records[0].asset_materialization
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=c.asset,
            partition=c.new,
            description=latest.description,
            metadata={**latest.metadata, MIGRATED_FROM: c.old},
            tags=_version_tags(latest.tags),
        )
    )


def migrate(
    instance: dg.DagsterInstance,
    *,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> MigrationPlan:
    """Rename the instance's bare-symbol partitions to instrument ids (see the module text)."""
    plan = plan_migration(instance)
    if plan.empty:
        log("nothing to migrate: every symbols partition is an instrument id")
        for line in plan.lines():
            log(line)
        return plan
    for line in plan.lines():
        log(("would: " if dry_run else "") + line)
    if dry_run:
        return plan
    for c in plan.copies:
        _copy(instance, c)
    registered = set(instance.get_dynamic_partitions(SYMBOLS_PARTITIONS_NAME))
    new = sorted(set(plan.renames.values()) - registered)
    if new:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, new)
    for old in sorted(plan.renames):
        instance.delete_dynamic_partition(SYMBOLS_PARTITIONS_NAME, old)
    log(
        f"migrated {len(plan.renames)} instruments: {len(plan.copies)} materialisations "
        f"recorded under their ids, {len(plan.already)} already there; nothing rebuilt"
    )
    return plan


def main(dry_run: bool = False) -> int:
    """The CLI entry: migrate the instance at ``$DAGSTER_HOME``."""
    with dg.DagsterInstance.get() as instance:
        migrate(instance, dry_run=dry_run)
    return 0


__all__ = ["MIGRATED_FROM", "Copy", "MigrationPlan", "main", "migrate", "plan_migration"]
