"""docker-compose.yml, dagster.yaml and .env.example agree with each other and validate."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_validates_statically():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "code", "webserver", "daemon", "exchange", "mongo"} <= set(services)
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert {"pgdata", "lake", "landing"} <= set(compose["volumes"])
    binary = shutil.which("docker-compose")
    if binary:  # Debian's docker-compose v1 lints the file without an engine
        env = {**os.environ, "DAGSTER_PG_PASSWORD": "not-a-secret"}
        out = subprocess.run(
            [binary, "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr


def test_env_example_lists_every_variable_the_compose_file_reads():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", (REPO / "docker-compose.yml").read_text()))
    listed = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= listed, used - listed


def test_env_example_lists_every_setting():
    from petrosa_pipelines.settings import env_documentation

    listed = (REPO / ".env.example").read_text()
    for var, _ in env_documentation():
        assert f"{var}=" in listed, var


def test_container_dagster_yaml_extends_the_repo_one():
    repo_cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    docker_cfg = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    assert "postgres" in docker_cfg["storage"]
    for key in ("run_coordinator", "concurrency", "run_monitoring", "retention"):
        assert docker_cfg[key] == repo_cfg[key], key


def test_env_example_lists_every_variable_the_code_reads():
    """A setting nobody can discover is a setting nobody sets: the code's PETROSA_* names."""
    names = set()
    for folder in ("petrosa_pipelines", "sensors", "resources"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"\b(PETROSA_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    prefixes = {n for n in names if any(o.startswith(n + "_") for o in names)}
    listed = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    missing = sorted(names - prefixes - listed)
    assert not missing, missing
