"""The run queue, tag limits and pools are the same on a laptop, in compose and on Kubernetes.

Three files configure them: the repo's `dagster.yaml`, `docker/dagster.yaml` (compose and the
image) and `deploy/helm/values.yaml` (Dagster's Helm chart). The chart writes the instance's
`concurrency:` section only when `concurrency.enabled: true`, else every limit silently vanishes
on Kubernetes (chart PR dagster-io/dagster#33194: `templates/configmap-instance.yaml` includes
`helpers/instance/_concurrency.tpl` under `{{- if .Values.concurrency.enabled }}`).

The `helm_rendered_*` functions mirror the chart's templates so that the three files can be
compared as the instance sees them; Dagster itself then loads each one. The Helm values are also
checked against an excerpt of the chart's `values.schema.json` (deploy/helm/vendor/PROVENANCE.md
says which parts, and what is not validated).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import pytest
import yaml

from petrosa_pipelines.ingest.job import GROUP_TAG
from petrosa_pipelines.market_data.ports import EXCHANGE_POOL

REPO = Path(__file__).resolve().parents[2]
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
CHART_SCHEMA = REPO / "deploy" / "helm" / "vendor" / "dagster-chart-values.schema.excerpt.json"

# chart key -> instance key, as `_concurrency.tpl` writes them
_POOL_KEYS = {
    "defaultLimit": "default_limit",
    "granularity": "granularity",
    "opGranularityRunBuffer": "op_granularity_run_buffer",
}
_RUN_KEYS = {"maxConcurrentRuns", "tagConcurrencyLimits"}
# chart key -> instance key, as `_run-coordinator.tpl` writes them (blockOp... is nested there)
_QUEUE_KEYS = {
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueUseThreads": "dequeue_use_threads",
    "dequeueNumWorkers": "dequeue_num_workers",
}


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _schema() -> dict[str, Any]:
    return json.loads(CHART_SCHEMA.read_text())


def _empty(value: Any) -> bool:
    """Sprig's notion of empty, which `compact` drops: null, false, 0, "" and empty collections."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def helm_rendered_concurrency(values: dict[str, Any]) -> dict[str, Any] | None:
    """The instance `concurrency:` section the chart renders from `values`, None if it renders none.

    Follows `_concurrency.tpl`: only non-null pool settings, `runs` only when it holds a limit,
    tag limits as key / value (when set) / limit. Unknown keys raise: the chart's schema forbids
    them, so a typo would otherwise read as a missing limit.
    """
    block = values.get("concurrency") or {}
    if not block.get("enabled"):
        return None
    pools_in, runs_in = block.get("pools") or {}, block.get("runs") or {}
    for where, given, known in (("pools", pools_in, set(_POOL_KEYS)), ("runs", runs_in, _RUN_KEYS)):
        if set(given) - known:
            raise ValueError(
                f"concurrency.{where} has keys the chart does not know: {set(given) - known}"
            )
    rendered: dict[str, Any] = {}
    pools = {_POOL_KEYS[k]: v for k, v in pools_in.items() if v is not None and v != ""}
    if pools:
        rendered["pools"] = pools
    runs: dict[str, Any] = {}
    if runs_in.get("maxConcurrentRuns") is not None:
        runs["max_concurrent_runs"] = runs_in["maxConcurrentRuns"]
    if runs_in.get("tagConcurrencyLimits"):
        runs["tag_concurrency_limits"] = [
            {
                "key": lim["key"],
                **({"value": lim["value"]} if lim.get("value") else {}),
                "limit": lim["limit"],
            }
            for lim in runs_in["tagConcurrencyLimits"]
        ]
    if runs:
        rendered["runs"] = runs
    return rendered


def helm_rendered_run_coordinator(values: dict[str, Any], queue_keys: set[str]) -> dict[str, Any]:
    """The instance `run_coordinator:` the chart renders, assuming the worst of its defaults.

    `_run-coordinator.tpl` adds a `config:` (with `max_concurrent_runs: -1` when unset) as soon as
    any `queuedRunCoordinator` value is non-empty after Helm merges the chart's defaults with ours.
    We cannot see the 1.13.27 defaults here, so a key of the schema's `QueuedRunCoordinatorConfig`
    that our values leave out counts as non-empty (an explicit null deletes the default).
    """
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    rendered = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    left_to_chart = queue_keys - set(queued)
    set_here = {k: v for k, v in queued.items() if not _empty(v)}
    if not left_to_chart and not set_here:
        return rendered
    config: dict[str, Any] = {"max_concurrent_runs": set_here.get("maxConcurrentRuns", -1)}
    config |= {_QUEUE_KEYS[k]: v for k, v in set_here.items() if k in _QUEUE_KEYS}
    if "blockOpConcurrencyLimitedRuns" in set_here:
        block = set_here["blockOpConcurrencyLimitedRuns"]
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block["enabled"],
            "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"],
        }
    return {**rendered, "config": config}


def _queue_keys() -> set[str]:
    return set(_schema()["$defs"]["QueuedRunCoordinatorConfig"]["properties"])


def _instance_configs() -> dict[str, dict[str, Any]]:
    """The run_coordinator + concurrency sections each deployment's instance is given."""
    repo, docker = _load(REPO / "dagster.yaml"), _load(REPO / "docker" / "dagster.yaml")
    values = _load(HELM_VALUES)
    return {
        "dagster.yaml": {k: repo[k] for k in ("run_coordinator", "concurrency")},
        "docker/dagster.yaml": {k: docker[k] for k in ("run_coordinator", "concurrency")},
        "deploy/helm/values.yaml": {
            "run_coordinator": helm_rendered_run_coordinator(values, _queue_keys()),
            "concurrency": helm_rendered_concurrency(values),
        },
    }


def _concurrency_config(cfg: dict[str, Any]) -> Any:
    """What the daemon's queue reads from an instance built from `cfg` (None: section absent)."""
    overrides = {k: v for k, v in cfg.items() if v is not None}
    with tempfile.TemporaryDirectory() as home:
        with dg.DagsterInstance.local_temp(home, overrides=overrides) as instance:
            return instance.get_concurrency_config()


def test_helm_values_enable_the_chart_concurrency_block():
    block = _load(HELM_VALUES).get("concurrency") or {}
    assert block.get("enabled") is True, (
        "deploy/helm/values.yaml: concurrency.enabled must be true, else the chart renders no "
        "concurrency section and every run/tag/pool limit is dropped on Kubernetes"
    )


def test_three_files_agree_on_every_limit():
    configs = _instance_configs()
    expected = configs["dagster.yaml"]["concurrency"]
    for name, cfg in configs.items():
        assert cfg["concurrency"] == expected, name
    runs = expected["runs"]
    assert runs["max_concurrent_runs"] > 0
    by_key = {lim["key"]: lim for lim in runs["tag_concurrency_limits"]}
    # the backfill cap: all backfills together, not per backfill (no per-value split)
    assert by_key["dagster/backfill"]["limit"] == 4 and "value" not in by_key["dagster/backfill"]
    # one ingest run per stream group, on the tag the ingest job really sets
    assert by_key[GROUP_TAG] == {
        "key": GROUP_TAG,
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    }
    # dagster.yaml cannot name a pool: exchange_rest gets the default limit, which must exist
    assert expected["pools"]["default_limit"] > 0


def test_dagster_reads_the_same_limits_from_each_file():
    """Dagster 1.13 loads each instance config and the daemon's queue sees the same numbers."""
    seen = {name: _concurrency_config(cfg) for name, cfg in _instance_configs().items()}
    first = seen["dagster.yaml"]
    for name, config in seen.items():
        assert config == first, name
    assert first.pool_config.default_pool_limit == 2
    assert first.run_queue_config.max_concurrent_runs == 8


def test_queue_limits_on_the_run_coordinator_would_stop_the_daemon():
    """Why values.yaml empties `queuedRunCoordinator`: the chart's -1 next to `concurrency.runs`."""
    values = _load(HELM_VALUES)
    values["dagsterDaemon"]["runCoordinator"].pop("config", None)  # the chart's defaults stay
    cfg = {
        "run_coordinator": helm_rendered_run_coordinator(values, _queue_keys()),
        "concurrency": helm_rendered_concurrency(values),
    }
    assert cfg["run_coordinator"]["config"]["max_concurrent_runs"] == -1
    with pytest.raises(
        dg.DagsterInvalidConfigError, match="incompatible with the `concurrency > runs`"
    ):
        _concurrency_config(cfg)


def test_every_pool_in_the_code_gets_the_same_limit_everywhere():
    from petrosa_pipelines.definitions import defs

    pools = {
        op.pool
        for assets_def in defs.resolve_asset_graph().assets_defs
        if assets_def.is_executable
        for op in assets_def.node_def.iterate_op_defs()
        if op.pool
    }
    assert EXCHANGE_POOL == "exchange_rest" and EXCHANGE_POOL in pools, pools
    limits = {
        name: ((cfg["concurrency"] or {}).get("pools") or {}).get("default_limit")
        for name, cfg in _instance_configs().items()
    }
    assert len(set(limits.values())) == 1 and None not in limits.values(), limits


def test_daemon_threads_match_the_container_instance():
    docker, daemon = _load(REPO / "docker" / "dagster.yaml"), _load(HELM_VALUES)["dagsterDaemon"]
    for section in ("sensors", "schedules", "backfills"):
        assert daemon[section] == {
            "useThreads": docker[section]["use_threads"],
            "numWorkers": docker[section]["num_workers"],
        }, section


def test_helm_values_validate_against_the_chart_schema():
    """Only the sections in the vendored excerpt; PROVENANCE.md lists what is not validated."""
    excerpt = _schema()
    values = _load(HELM_VALUES)
    daemon = values["dagsterDaemon"]
    checks = [(f"/{key}", entry, values[key]) for key, entry in excerpt["properties"].items()]
    checks += [
        (f"/dagsterDaemon/{key}", entry, daemon[key])
        for key, entry in excerpt["x-Daemon-properties"].items()
        if key in daemon
    ]
    assert {path for path, _, _ in checks} >= {
        "/concurrency",
        "/retention",
        "/telemetry",
        "/dagsterDaemon/runCoordinator",
        "/dagsterDaemon/backfills",
    }
    errors = []
    for path, entry, instance in checks:
        schema = {"$defs": excerpt["$defs"], **entry}
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        errors += [
            f"{path}{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)
        ]
    assert not errors, errors


def test_the_schema_excerpt_rejects_what_the_chart_rejects():
    """The excerpt bites: dagster.yaml spelling, a typo, a string for a bool."""
    excerpt = _schema()
    concurrency = jsonschema.Draft202012Validator(
        {"$defs": excerpt["$defs"], **excerpt["properties"]["concurrency"]}
    )
    assert not concurrency.is_valid({"enabled": True, "runs": {"max_concurrent_runs": 8}})
    assert not concurrency.is_valid({"enabled": True, "pools": {"defaultLimt": 2}})
    assert not concurrency.is_valid({"enabled": "yes"})
    assert not concurrency.is_valid({"runs": {"tagConcurrencyLimits": [{"key": "k"}]}})


def test_mirror_of_the_template_renders_nothing_when_disabled():
    values = _load(HELM_VALUES)
    values["concurrency"]["enabled"] = False
    assert helm_rendered_concurrency(values) is None
    values["concurrency"]["enabled"] = True
    values["concurrency"]["runs"]["maxConcurrentRun"] = 8
    with pytest.raises(ValueError, match="maxConcurrentRun"):
        helm_rendered_concurrency(values)
