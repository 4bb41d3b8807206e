"""Helm values, the Dockerfile and the scale page agree with the code and the instance config."""

from __future__ import annotations

import datetime as dt
import re

import yaml

from petrosa_pipelines.market_data.partitions import PARTITIONS_START
from petrosa_pipelines.tooling.stack import DEFINITIONS_MODULE, LOCATION_NAME
from petrosa_pipelines_tests.test_stack.harness import REPO

LIMIT = 100_000


def _values() -> dict:
    return yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())


def test_helm_values_launch_runs_as_kubernetes_jobs_from_our_image():
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1
    code = deployments[0]
    args = code["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == DEFINITIONS_MODULE
    assert args[args.index("--location-name") + 1] == LOCATION_NAME
    assert code["includeConfigInLaunchedRuns"]["enabled"]
    assert {v["mountPath"] for v in code["volumeMounts"]} == {"/data"}
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] and monitoring["maxResumeRunAttempts"] > 0


def test_helm_values_carry_the_instance_limits_of_dagster_yaml():
    values = _values()
    instance = yaml.safe_load((REPO / "dagster.yaml").read_text())
    runs = instance["concurrency"]["runs"]
    helm_runs = values["concurrency"]["runs"]
    assert helm_runs["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert helm_runs["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert (
        values["concurrency"]["pools"]["defaultLimit"]
        == (instance["concurrency"]["pools"]["default_limit"])
    )
    retention = values["retention"]
    assert retention["enabled"]
    assert (
        retention["schedule"]["purgeAfterDays"]
        == (instance["retention"]["schedule"]["purge_after_days"])
    )
    sensor = instance["retention"]["sensor"]["purge_after_days"]
    for outcome, days in sensor.items():
        assert retention["sensor"]["purgeAfterDays"][outcome] == days


def test_helm_values_hold_no_password():
    text = (REPO / "deploy" / "helm" / "values.yaml").read_text()
    values = _values()
    assert "postgresqlPassword" not in values.get("postgresql", {})
    assert values["generatePostgresqlPasswordSecret"] is False
    assert not re.search(r"(?i)password:\s*\S", text)


def test_dockerfile_serves_the_code_location_as_a_non_root_user():
    text = (REPO / "Dockerfile").read_text()
    assert f'"{DEFINITIONS_MODULE}"' in text and f'"{LOCATION_NAME}"' in text
    assert 'COPY docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    # dependencies are installed before the code is copied (a cached layer)
    assert text.index("pip install -r") < text.index("COPY petrosa_pipelines")


def test_scale_page_numbers_follow_from_the_limit():
    text = (REPO / "docs" / "scale.md").read_text()
    start = dt.date.fromisoformat(PARTITIONS_START)
    assert f"days from {start.isoformat()}" in text
    # | on | days | symbols | rows: days counted to the day before `on`, symbols = limit // days
    dated = re.findall(r"^\| (\d{4}-\d{2}-\d{2})[^|]*\| ([\d,]+) \| (\d+) \|$", text, re.M)
    assert len(dated) >= 4
    for on, days, symbols in dated:
        expected_days = (dt.date.fromisoformat(on) - start).days
        assert int(days.replace(",", "")) == expected_days, on
        assert int(symbols) == LIMIT // expected_days, on
    # | symbols | years | rows
    rows = re.findall(r"^\| (\d+)(?: \(the defaults\))? \| ([\d.]+) \|$", text, re.M)
    assert len(rows) >= 5
    for symbols, years in rows:
        assert float(years) == round(LIMIT / int(symbols) / 365.25, 1), symbols
