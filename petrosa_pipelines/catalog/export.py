"""The data catalog, exported from the asset graph itself (JSON or Markdown).

Why from the graph: descriptions, owners, groups, kinds, tags, column schemas and column lineage
already live on the asset definitions, and the graph's edges are the lineage. Reading them back
means the catalog cannot drift from the code. With a Dagster instance, each entry also gets the
row count and time range of its latest materialisation.

``petrosa catalog [--format json|markdown]`` calls ``export_catalog(defs, fmt)``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

import dagster as dg

from petrosa_pipelines.instruments import KEY_SEP, parse_partition_key
from petrosa_pipelines.market_data.partitions import SYMBOL_DIM

Format = Literal["json", "markdown"]


def _meta_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _columns(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _meta_value(metadata.get("dagster/column_schema"))
    if not isinstance(schema, dg.TableSchema):
        return []
    return [
        {
            "name": c.name,
            "type": c.type,
            "description": c.description,
            "nullable": c.constraints.nullable if c.constraints else True,
        }
        for c in schema.columns
    ]


def _lineage(metadata: dict[str, Any]) -> dict[str, list[str]]:
    lineage = _meta_value(metadata.get("dagster/column_lineage"))
    if not isinstance(lineage, dg.TableColumnLineage):
        return {}
    return {
        col: [f"{d.asset_key.to_user_string()}.{d.column_name}" for d in deps]
        for col, deps in sorted(lineage.deps_by_column.items())
    }


def _partitions(spec: dg.AssetSpec) -> str | None:
    pdef = spec.partitions_def
    if pdef is None:
        return None
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        dims = [
            f"{d.name}: {type(d.partitions_def).__name__}"
            + (" of instrument ids" if d.name == SYMBOL_DIM else "")
            for d in pdef.partitions_defs
        ]
        return "multi(" + ", ".join(dims) + ")"
    return type(pdef).__name__


def _latest(instance: dg.DagsterInstance | None, key: dg.AssetKey) -> dict[str, Any]:
    if instance is None:
        return {}
    records = instance.fetch_materializations(key, limit=1).records
    if not records:
        return {"materialized": False}
    event = records[0]
    meta = event.asset_materialization.metadata if event.asset_materialization else {}
    out: dict[str, Any] = {"materialized": True, "last_partition": event.partition_key}
    if event.partition_key and KEY_SEP in event.partition_key:
        with contextlib.suppress(ValueError):  # a junk partition added through the UI
            out["last_instrument"] = parse_partition_key(event.partition_key)[1].id
    for src, dst in (
        ("dagster/row_count", "row_count"),
        ("first_time", "first_time"),
        ("last_time", "last_time"),
    ):
        if src in meta:
            out[dst] = _meta_value(meta[src])
    return out


def catalog_entries(
    defs: dg.Definitions, instance: dg.DagsterInstance | None = None
) -> list[dict[str, Any]]:
    """One dict per asset, sorted by key: what the catalog knows about it."""
    graph = defs.resolve_asset_graph()
    checks: dict[dg.AssetKey, list[dict[str, Any]]] = {}
    for ck in graph.asset_check_keys:
        spec = graph.get_check_spec(ck)
        checks.setdefault(ck.asset_key, []).append(
            {"name": ck.name, "blocking": bool(spec.blocking), "description": spec.description}
        )
    entries = []
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        meta = dict(spec.metadata or {})
        entry: dict[str, Any] = {
            "key": spec.key.to_user_string(),
            "description": spec.description,
            "group": spec.group_name,
            "owners": list(spec.owners or []),
            "kinds": sorted(spec.kinds or []),
            "tags": {
                k: v
                for k, v in sorted((spec.tags or {}).items())
                if not k.startswith("dagster/kind/")  # kinds are listed on their own
            },
            "partitions": _partitions(spec),
            "upstream": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "downstream": sorted(k.to_user_string() for k in graph.get(spec.key).child_keys),
            "columns": _columns(meta),
            "column_lineage": _lineage(meta),
            "schema_version": _meta_value(meta.get("schema_version")),
            "checks": sorted(checks.get(spec.key, []), key=lambda c: c["name"]),
            "automation": spec.automation_condition.get_label()
            if spec.automation_condition
            else None,
        }
        entry.update(_latest(instance, spec.key))
        entries.append(entry)
    return entries


def _md_escape(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def to_markdown(entries: list[dict[str, Any]]) -> str:
    """Markdown: an index table, then one section per asset with its columns and lineage."""
    lines = [
        "# petrosa_pipelines data catalog",
        "",
        "| asset | group | owners | partitions |",
        "|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| `{e['key']}` | {e['group']} | {', '.join(e['owners'])} | "
            f"{_md_escape(e['partitions'])} |"
        )
    for e in entries:
        lines += ["", f"## {e['key']}", "", _md_escape(e["description"]), ""]
        lines.append(
            f"- group: {e['group']}; owners: {', '.join(e['owners'])}; kinds: "
            f"{', '.join(e['kinds'])}"
        )
        lines.append("- tags: " + ", ".join(f"{k}={v}" for k, v in e["tags"].items()))
        lines.append(f"- partitions: {e['partitions']}; automation: {e['automation']}")
        lines.append("- upstream: " + (", ".join(f"`{u}`" for u in e["upstream"]) or "none"))
        if e.get("schema_version") is not None:
            lines.append(f"- schema version: {e['schema_version']}")
        if "row_count" in e:
            lines.append(
                f"- latest: {e['row_count']} rows, {e.get('first_time')} .. "
                f"{e.get('last_time')} (partition {e.get('last_partition')})"
            )
        for check in e["checks"]:
            lines.append(f"- check `{check['name']}`{' (blocking)' if check['blocking'] else ''}")
        if e["columns"]:
            lines += [
                "",
                "| column | type | nullable | description | from |",
                "|---|---|---|---|---|",
            ]
            for c in e["columns"]:
                src = ", ".join(f"`{s}`" for s in e["column_lineage"].get(c["name"], []))
                lines.append(
                    f"| {c['name']} | {c['type']} | {c['nullable']} | "
                    f"{_md_escape(c['description'])} | {src} |"
                )
    return "\n".join(lines) + "\n"


def export_catalog(
    defs: dg.Definitions, fmt: Format = "json", instance: dg.DagsterInstance | None = None
) -> str:
    """The catalog of every asset in ``defs`` as JSON or Markdown text."""
    entries = catalog_entries(defs, instance)
    if fmt == "json":
        return json.dumps({"assets": entries}, indent=2, sort_keys=True, default=str) + "\n"
    if fmt in ("markdown", "md"):
        return to_markdown(entries)
    raise ValueError(f"unknown catalog format {fmt!r}; use json or markdown")
