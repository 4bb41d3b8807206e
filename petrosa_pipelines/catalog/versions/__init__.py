"""The versioned schema of each dataset, stored as JSON next to this file, and the rules of change.

Why: readers of the lake (the Python API, the warehouse loaders, quants' notebooks) rely on
column names and types. ``catalog/schemas.py`` is the live definition; ``<dataset>/v<N>.json``
records what version N promised. The rules (the schema-registry "backward" mode, as in
Confluent Schema Registry's compatibility types):

* removing a column, renaming one (a removal plus an addition) or changing its type is
  BREAKING: allowed only together with a raised ``version`` and a new stored snapshot;
* adding a nullable column, relaxing nullability or editing a description is compatible;
  adding a non-nullable column breaks readers of old partitions, so it is breaking too;
* whatever the change, the stored snapshot of the current version must equal the live schema,
  so the registry never lies (``write_snapshot`` refreshes it).

``python -m petrosa_pipelines.catalog.versions`` writes the snapshot of every dataset whose
version has no file yet and reports every problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petrosa_pipelines.catalog.schemas import DATASETS, DatasetSchema

VERSIONS_DIR = Path(__file__).resolve().parent


def snapshot(schema: DatasetSchema) -> dict[str, Any]:
    """The JSON-able record of one schema version."""
    return {
        "dataset": schema.name,
        "version": schema.version,
        "natural_key": list(schema.natural_key),
        "time_column": schema.time_column,
        "columns": [
            {
                "name": c.name,
                "type": str(c.type),
                "nullable": c.nullable,
                "description": c.description,
            }
            for c in schema.columns
        ],
    }


def stored_versions(dataset: str, root: Path = VERSIONS_DIR) -> dict[int, dict[str, Any]]:
    """Every stored version of ``dataset``: {version: snapshot}."""
    out = {}
    for path in sorted((root / dataset).glob("v*.json")):
        data = json.loads(path.read_text())
        out[int(data["version"])] = data
    return out


def write_snapshot(schema: DatasetSchema, root: Path = VERSIONS_DIR) -> Path:
    """Store the live schema as ``<dataset>/v<version>.json``."""
    path = root / schema.name / f"v{schema.version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(snapshot(schema), indent=2) + "\n")
    return path


@dataclass
class Compatibility:
    """Differences between an old and a new snapshot, split by whether they break readers."""

    breaking: list[str] = field(default_factory=list)
    compatible: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaking


def compare(old: dict[str, Any], new: dict[str, Any]) -> Compatibility:
    """What changed from ``old`` to ``new`` columns (renames show as removed + added)."""
    result = Compatibility()
    before = {c["name"]: c for c in old["columns"]}
    after = {c["name"]: c for c in new["columns"]}
    removed = [n for n in before if n not in after]
    added = [n for n in after if n not in before]
    for name in removed:
        same_type = [a for a in added if after[a]["type"] == before[name]["type"]]
        hint = f" (renamed to {same_type[0]!r}?)" if same_type else ""
        result.breaking.append(f"column {name!r} removed{hint}")
    for name in added:
        if after[name]["nullable"]:
            result.compatible.append(f"nullable column {name!r} added")
        else:
            result.breaking.append(f"non-nullable column {name!r} added (old data lacks it)")
    for name in before.keys() & after.keys():
        b, a = before[name], after[name]
        if b["type"] != a["type"]:
            result.breaking.append(f"column {name!r} retyped {b['type']} -> {a['type']}")
        if b["nullable"] and not a["nullable"]:
            result.breaking.append(f"column {name!r} became non-nullable")
        elif a["nullable"] and not b["nullable"]:
            result.compatible.append(f"column {name!r} became nullable")
        if b["description"] != a["description"]:
            result.compatible.append(f"column {name!r} description changed")
    if list(old.get("natural_key", [])) != list(new.get("natural_key", [])):
        result.breaking.append(f"natural key {old.get('natural_key')} -> {new.get('natural_key')}")
    return result


def check_schema(schema: DatasetSchema, root: Path = VERSIONS_DIR) -> list[str]:
    """Problems of the live ``schema`` against the registry; empty when all is well."""
    versions = stored_versions(schema.name, root)
    live = snapshot(schema)
    if not versions:
        return [f"{schema.name}: no stored version; run write_snapshot (v{schema.version})"]
    latest = max(versions)
    if schema.version < latest:
        return [f"{schema.name}: version {schema.version} is older than stored v{latest}"]
    if schema.version > latest:
        problems = [f"{schema.name}: v{schema.version} is not stored yet; run write_snapshot"]
        return problems if schema.version not in versions else []
    diff = compare(versions[latest], live)
    problems = [f"{schema.name} v{latest}: {b} without raising the version" for b in diff.breaking]
    if not problems and versions[latest] != live:
        problems.append(
            f"{schema.name} v{latest}: stored snapshot is stale ({'; '.join(diff.compatible)}); "
            "run write_snapshot"
        )
    return problems


def check_all(root: Path = VERSIONS_DIR) -> dict[str, list[str]]:
    """Problems per dataset of ``catalog.schemas.DATASETS``."""
    return {name: check_schema(s, root) for name, s in sorted(DATASETS.items())}


def main() -> int:
    """Store missing snapshots, then print remaining problems; exit status 1 if any."""
    for schema in DATASETS.values():
        if schema.version not in stored_versions(schema.name):
            print(f"wrote {write_snapshot(schema)}")
    problems = [p for ps in check_all().values() for p in ps]
    for p in problems:
        print(p)
    return 1 if problems else 0


__all__ = [
    "Compatibility",
    "check_all",
    "check_schema",
    "compare",
    "snapshot",
    "stored_versions",
    "write_snapshot",
]
