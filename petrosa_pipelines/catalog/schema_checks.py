"""The schema-change asset check of each dataset: a breaking column change needs a new version.

Why a check on top of the registry test: the test guards the code, the check guards the lake. It
compares the column schema of the asset's two latest materialisations (what was actually
written), and fails with ERROR severity when columns were removed, renamed or retyped while the
recorded ``schema_version`` stayed the same; it also reports the registry problems of the live
schema (``catalog.versions.check_schema``).
"""

from typing import Any

import dagster as dg

from petrosa_pipelines.catalog.schemas import DATASETS
from petrosa_pipelines.catalog.versions import check_schema, compare

CHECK_NAME = "schema_version_compatible"


def _columns(meta: dict[str, Any]) -> dict[str, Any] | None:
    schema = getattr(meta.get("dagster/column_schema"), "value", meta.get("dagster/column_schema"))
    if not isinstance(schema, dg.TableSchema):
        return None
    cols = [
        {
            "name": c.name,
            "type": c.type,
            "description": c.description or "",
            "nullable": c.constraints.nullable if c.constraints else True,
        }
        for c in schema.columns
    ]
    return {"columns": cols}


def _version(meta: dict[str, Any]) -> Any:
    value = meta.get("schema_version")
    return getattr(value, "value", value)


def evaluate(instance: dg.DagsterInstance, asset_key: dg.AssetKey, dataset: str):
    """The check result for ``asset_key`` from its two latest materialisations."""
    problems = list(check_schema(DATASETS[dataset]))
    records = instance.fetch_materializations(asset_key, limit=2).records
    metas = [r.asset_materialization.metadata for r in records if r.asset_materialization]
    breaking: list[str] = []
    if len(metas) == 2:
        new, old = (_columns(m) for m in metas)
        if new and old and _version(metas[0]) == _version(metas[1]):
            breaking = compare(old, new).breaking
    problems += [f"lake: {b} without raising schema_version" for b in breaking]
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "problems": dg.MetadataValue.json(problems),
            "schema_version": DATASETS[dataset].version,
        },
    )


def build_schema_version_checks(
    datasets_by_key: dict[dg.AssetKey, str],
) -> list[dg.AssetChecksDefinition]:
    """One ``schema_version_compatible`` check per dataset asset."""
    return [_build_check(key, dataset) for key, dataset in datasets_by_key.items()]


def _build_check(key: dg.AssetKey, dataset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=CHECK_NAME,
        description=f"Breaking column changes of {dataset} require a new schema version.",
        blocking=False,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate(context.instance, key, dataset)

    return _check
