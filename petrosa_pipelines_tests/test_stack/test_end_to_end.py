"""The production topology, end to end: separate processes, PostgreSQL storage, GraphQL.

What the code location holds is read from the running stack through GraphQL, so the checks,
analytics and ingest supervisor tests start asserting as soon as those parts are wired into
``definitions.py``; until then they skip, naming what is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import uuid
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml
from dagster._grpc.client import DagsterGrpcClient

from petrosa_pipelines.instruments import parse_partition_key
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.partitions import next_month
from petrosa_pipelines.tooling.stack import http_get, psycopg_url
from petrosa_pipelines_tests.test_stack.harness import (
    DAYS,
    KEYS,
    MARKET_DATA,
    MARKET_DATA_PATHS,
    REPO,
    SHARED,
    STACK_TEST_TIMEOUT_S,
    START_DATE,
    WINDOW_DAYS,
    asset_nodes_by_path,
    checks_of,
    http_ok,
    pretty,
    repository,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # the shared backfill is paid by whichever test asks for it first
    pytest.mark.timeout(STACK_TEST_TIMEOUT_S),
]

#: analytics run on the automation sensor's 30 s cadence after the backfill lands
ANALYTICS_TIMEOUT = 240.0
INGEST_TIMEOUT = 120.0
CHECKS_TIMEOUT = 90.0
ACTIVE = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]
#: the tag the queue limits to one run per value (dagster.yaml, tag_concurrency_limits)
GROUP_TAG = next(
    limit["key"]
    for limit in yaml.safe_load((REPO / "dagster.yaml").read_text())["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    if isinstance(limit.get("value"), dict) and limit["value"].get("applyLimitPerUniqueValue")
)


def test_every_part_answers(stack):
    assert {s.name for s in stack.services} == {"exchange", "code", "webserver", "daemon"}
    assert all(s.running() for s in stack.services)
    assert http_ok(f"{stack.exchange_url}/fapi/v1/ping")
    client = DagsterGrpcClient(port=stack.grpc_port, host="127.0.0.1")
    assert client.ping("x")["echo"] == "x"
    assert client.health_check_query() == "SERVING"
    info = json.loads(http_get(f"{stack.webserver_url}/server_info"))
    assert info["dagster_version"] == dg.__version__
    daemons = stack.graphql(
        "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
    )["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = {d["daemonType"]: d["healthy"] for d in daemons if d["required"]}
    assert {"BACKFILL", "SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= set(required)
    assert all(required.values()), required
    with stack.instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"


def test_production_instance_config_opens_the_stack_storage(stack, tmp_path, monkeypatch):
    """docker/dagster.yaml (compose and images) loads and reaches the same PostgreSQL."""
    home = tmp_path / "prod_home"
    home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    url = urlsplit(psycopg_url(stack.postgres_url))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", url.path.lstrip("/"))
    with dg.DagsterInstance.from_config(str(home)) as prod, stack.instance() as local:
        assert type(prod.run_storage).__name__ == "PostgresRunStorage"
        assert type(prod.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert prod.run_monitoring_enabled
        # The stack's sensors may launch runs at any moment, so no two reads of "the
        # newest/oldest runs" are comparable: prove the storage is shared with a
        # probe written through one instance and read through the other, and check
        # that every run the stack's instance knows is visible to the production one.
        probe = f"petrosa_probe_{uuid.uuid4().hex}"
        local.run_storage.set_cursor_values({probe: "written-by-stack"})
        assert prod.run_storage.get_cursor_values({probe}) == {probe: "written-by-stack"}
        seen_locally = {r.run_id for r in local.get_runs(limit=50)}
        assert seen_locally <= {r.run_id for r in prod.get_runs()}
    cfg = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    assert cfg["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_the_four_datasets_are_partitioned_by_day_and_symbol(stack):
    nodes = asset_nodes_by_path(repository(stack))
    for path in MARKET_DATA_PATHS:
        assert path in nodes, sorted(nodes)
        assert nodes[path]["groupName"] == "market_data"
        assert nodes[path]["isPartitioned"]


_DIMENSIONS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }"""


def _utc_today() -> dt.date:
    return dt.datetime.now(tz=dt.UTC).date()


def _dimension_keys(stack, path: tuple[str, ...]) -> dict[str, list[str]]:
    node = stack.graphql(_DIMENSIONS, {"key": {"path": list(path)}})["assetNodeOrError"]
    return {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}


def test_the_stack_runs_the_rolling_window_and_the_history_months(stack):
    """The deployment's scheme, as its code location serves it: day partitions for the last
    ``WINDOW_DAYS`` days ending today, and the months from the start date up to the window's
    first day in ``market_data/history/*`` (market_data/partitions.py)."""
    days = _dimension_keys(stack, ("market_data", "trades"))["date"]
    loaded_on = dt.date.fromisoformat(days[-1])  # the open day when the location loaded
    assert loaded_on in {_utc_today(), _utc_today() - dt.timedelta(days=1)}
    first = loaded_on - dt.timedelta(days=WINDOW_DAYS - 1)
    assert days[0] == first.isoformat() and len(days) == WINDOW_DAYS
    assert set(DAYS) <= set(days)
    months = _dimension_keys(stack, ("market_data", "history", "trades"))["month"]
    want = [dt.date.fromisoformat(START_DATE).replace(day=1)]
    while want[-1] < (first - dt.timedelta(days=1)).replace(day=1):
        want.append(next_month(want[-1]))
    assert months == [m.isoformat() for m in want]
    nodes = asset_nodes_by_path(repository(stack))
    for name in MARKET_DATA:
        history = nodes[("market_data", "history", name)]
        assert history["groupName"] == "market_data_history" and history["isPartitioned"]


def test_backfill_launched_through_graphql_completes(stack):
    done = SHARED.backfilled()
    progress = done.progress
    assert progress.status == "COMPLETED_SUCCESS", done.explain()
    assert progress.partitions_total == progress.partitions_done == len(KEYS)
    assert progress.asset_partitions_done == len(KEYS) * len(MARKET_DATA)
    assert progress.partitions_failed == 0
    assert progress.rows > 0 and progress.rows_per_second > 0
    # progress was reported while the backfill ran, not only at the end
    assert len(done.lines) >= 2 and "100%" in done.lines[-1] and "100%" not in done.lines[0]
    backfill = stack.graphql(
        """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
             ... on PartitionBackfill { status isAssetBackfill runs { status } } } }""",
        {"id": done.backfill_id},
    )["partitionBackfillOrError"]
    assert backfill["status"] == "COMPLETED_SUCCESS" and backfill["isAssetBackfill"]
    assert backfill["runs"] and {r["status"] for r in backfill["runs"]} == {"SUCCESS"}
    with stack.instance() as instance:
        for path in MARKET_DATA_PATHS:
            landed = instance.get_materialized_partitions(dg.AssetKey(list(path)))
            assert set(KEYS) <= landed, (path, landed)
    lake = LocalLake(stack.workdir / "lake")
    for key in KEYS:
        day, inst = parse_partition_key(key)
        candles = lake.read_frame(
            lake_path("market_data/candles", inst.exchange, inst.symbol, day.isoformat())
        )
        assert len(candles) == 1440, key


def test_checks_ran_on_every_backfilled_partition(stack):
    nodes = asset_nodes_by_path(repository(stack))
    checks = [
        (p, c["name"], c["partitionDefinition"] is not None)
        for p in MARKET_DATA_PATHS
        for c in checks_of(nodes[p])
    ]
    assert checks, "no asset checks on the market-data assets: a wiring regression"
    SHARED.backfilled()
    missing = _wait_for(lambda: _unevaluated_checks(stack, checks), CHECKS_TIMEOUT)
    assert not missing, f"checks without an evaluation for a backfilled partition: {missing}"


def test_analytics_follow_the_backfill(stack):
    nodes = asset_nodes_by_path(repository(stack))
    analytics = [p for p, n in nodes.items() if n["groupName"] == "analytics"]
    assert analytics, "no analytics assets (group 'analytics'): a wiring regression"
    SHARED.backfilled()
    # the automation sensor requests analytics for every backfilled symbol-day...
    unrequested = _wait_for(
        lambda: _keys_without_analytics_runs(stack, analytics), ANALYTICS_TIMEOUT
    )
    assert not unrequested, f"no analytics run requested for backfilled partitions {unrequested}"
    # ...and they land (all of them can take minutes on two cores: one run per asset partition)
    landed = _wait_for(
        lambda: [] if _analytics_landed(stack, analytics) else ["none"], ANALYTICS_TIMEOUT
    )
    assert not landed, "no analytics asset materialised for a backfilled partition"


def test_ingest_supervisor_starts_one_ingest_run_per_stream_group(stack):
    repo = repository(stack)
    sensors = [s for s in repo["sensors"] if "ingest" in s["name"]]
    assert sensors, "no ingest supervisor sensor: a wiring regression"
    assert all(s["sensorState"]["status"] == "RUNNING" for s in sensors), pretty(sensors)
    jobs = {t["pipelineName"] for s in sensors for t in s["targets"]} or {
        j["name"] for j in repo["jobs"] if "ingest" in j["name"]
    }
    assert jobs, "the ingest supervisor targets no job and no ingest job exists"

    def not_started() -> list[str]:
        runs = _runs(stack, jobs, ["STARTED"])
        return [] if runs else sorted(jobs)

    assert not _wait_for(not_started, INGEST_TIMEOUT), f"no ingest run STARTED for {jobs}"
    groups: dict[str, int] = {}
    for run in _runs(stack, jobs, ACTIVE):
        tags = {t["key"]: t["value"] for t in run["tags"]}
        group = tags.get(GROUP_TAG, run["pipelineName"])
        groups[group] = groups.get(group, 0) + 1
    assert groups and max(groups.values()) == 1, f"more than one active ingest run: {groups}"


# --- helpers ------------------------------------------------------------------------------------


def _wait_for(missing_now, timeout: float) -> list:
    """Poll until ``missing_now()`` is empty or the timeout passes; returns what is missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = missing_now()
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(3)


def _unevaluated_checks(stack, checks) -> list[tuple]:
    """Partitioned checks need a result per backfilled key, the others one result at all."""
    missing = []
    for path, name, partitioned in checks:
        for key in KEYS if partitioned else ("",):
            execs = stack.graphql(
                """query($key: AssetKeyInput!, $name: String!, $partition: String) {
                     assetCheckExecutions(assetKey: $key, checkName: $name,
                                          partition: $partition, limit: 1) {
                       status evaluation { success } } }""",
                {"key": {"path": list(path)}, "name": name, "partition": key},
            )["assetCheckExecutions"]
            if not execs or execs[0]["status"] not in ("SUCCEEDED", "FAILED"):
                missing.append(("/".join(path), name, key or "(unpartitioned)"))
    return missing


def _analytics_landed(stack, analytics) -> bool:
    with stack.instance() as instance:
        for path in analytics:
            landed = instance.get_materialized_partitions(dg.AssetKey(list(path)))
            # per-symbol analytics carry the date|symbol key, cross-symbol ones only the date
            if any(k in landed or k.split("|")[0] in landed for k in KEYS):
                return True
    return False


def _keys_without_analytics_runs(stack, analytics) -> list[str]:
    wanted = {"/".join(p) for p in analytics}
    missing = []
    for key in KEYS:
        targeted = False
        for partition in (key, key.split("|")[0]):
            data = stack.graphql(
                """query($tags: [ExecutionTag!]) {
                     runsOrError(filter: {tags: $tags}, limit: 200) {
                       ... on Runs { results { assetSelection { path } } } } }""",
                {"tags": [{"key": "dagster/partition", "value": partition}]},
            )
            for run in data["runsOrError"].get("results", []):
                if any("/".join(a["path"]) in wanted for a in run["assetSelection"] or []):
                    targeted = True
        if not targeted:
            missing.append(key)
    return missing


def _runs(stack, jobs, statuses) -> list[dict]:
    runs = []
    for job in sorted(jobs):
        data = stack.graphql(
            """query($job: String!, $statuses: [RunStatus!]) {
                 runsOrError(filter: {pipelineName: $job, statuses: $statuses}) {
                   ... on Runs { results { runId status pipelineName tags { key value } } } } }""",
            {"job": job, "statuses": statuses},
        )
        runs.extend(data["runsOrError"].get("results", []))
    return runs
