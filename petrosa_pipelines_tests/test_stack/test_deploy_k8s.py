"""Helm values, the Dockerfile and the scale page agree with the code and the instance config."""

from __future__ import annotations

import re

import yaml

from petrosa_pipelines.settings import Settings
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
    """docs/scale.md's derived figures agree with the limit and the default window."""
    text = " ".join((REPO / "docs" / "scale.md").read_text().split())
    window = Settings().daily_window_days
    instruments = 3 * 500
    assert f"`PETROSA_DAILY_WINDOW_DAYS` days (default {window})" in text
    assert f"{window * instruments:,} ({window} x {instruments:,})" in text
    # the window and the history each hold at most LIMIT // instruments days / months
    most = LIMIT // instruments
    assert f"the window can be at most {most} days" in text
    assert f"after {most} months ({most / 12:.1f} years)" in text
    # the history family's measured count is whole months x instruments, under the limit
    count = int(
        re.search(r"\*\*([\d,]+)\*\* \(`market_data/history/\*`\)", text)[1].replace(",", "")
    )
    assert count % instruments == 0 and count < LIMIT
