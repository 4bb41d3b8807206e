"""docker-compose and the Helm values wire NATS (JetStream) and Redis into the Dagster services.

What the live outputs need is in docs/live.md; how to run them, docs/deployment.md ("NATS and
Redis") and docs/kubernetes.md (step 10). Pure YAML parsing, plus `docker-compose config` when
Debian's docker-compose v1 is installed (it needs no engine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from petrosa_pipelines.settings import LiveSettings, live_settings_from_env

REPO = Path(__file__).resolve().parents[2]
DAGSTER_SERVICES = ("code", "webserver", "daemon")
URL_DEFAULTS = {
    "PETROSA_NATS_URL": "nats://nats:4222",
    "PETROSA_REDIS_URL": "redis://redis:6379/0",
}
SECRET = "petrosa-pipelines-env"
# `${VAR:-default}` / `${VAR-default}` / `${VAR:?msg}` / `${VAR}`
REFERENCE = re.compile(r"^\$\{([A-Z0-9_]+)(?:(:?-)(.*))?\}$")


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env_example() -> set[str]:
    return {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }


def _live_env(service: dict) -> dict[str, str]:
    env = service["environment"]
    assert isinstance(env, dict), "environment as a mapping (the x-dagster-env anchor)"
    return {k: v for k, v in env.items() if k in URL_DEFAULTS or k.startswith("PETROSA_LIVE_")}


def test_compose_runs_nats_with_jetstream_and_redis_with_health_checks():
    compose = _compose()
    services = compose["services"]
    nats, redis = services["nats"], services["redis"]
    assert nats["image"].startswith("nats:2.")
    command = nats["command"]
    assert "-js" in command
    store = command[command.index("-sd") + 1]
    # JetStream's file store is on a named volume, so PETROSA_LIVE survives a restart
    assert any(
        v.split(":")[1] == store and v.split(":")[0] in compose["volumes"] for v in nats["volumes"]
    )
    # the health check reads the monitoring port the command opens
    monitor = command[command.index("-m") + 1]
    assert f"127.0.0.1:{monitor}/healthz" in " ".join(nats["healthcheck"]["test"])
    assert redis["image"].startswith("redis:7")
    assert "ping" in redis["healthcheck"]["test"]
    for svc in (nats, redis):
        assert "profiles" not in svc, "started by a plain `docker compose up`"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_dagster_services_receive_both_urls_with_the_bundled_services_as_default():
    services = _compose()["services"]
    for name in DAGSTER_SERVICES:
        env = _live_env(services[name])
        for var, default in URL_DEFAULTS.items():
            m = REFERENCE.match(env[var])
            assert m, (name, var, env[var])
            assert (m.group(1), m.group(2), m.group(3)) == (var, ":-", default), (name, var)
            host = urlsplit(default).hostname
            assert host in services and "healthcheck" in services[host], (var, host)
    # the defaults are valid for the code itself (scheme, port, database)
    settings = live_settings_from_env(URL_DEFAULTS)
    assert settings.nats_url == URL_DEFAULTS["PETROSA_NATS_URL"]
    assert settings.redis_url == URL_DEFAULTS["PETROSA_REDIS_URL"]


def test_live_settings_passed_through_empty_mean_the_codes_defaults():
    """`${PETROSA_LIVE_X:-}` hands an empty string over when .env does not set it: the code must
    read that as its default, not as a value."""
    env = _live_env(_compose()["services"]["code"])
    passed = {k: v for k, v in env.items() if k.startswith("PETROSA_LIVE_")}
    assert {"PETROSA_LIVE_PUBLISH", "PETROSA_LIVE_LATEST"} <= set(passed)
    assert {"PETROSA_LIVE_STREAM_MAX_AGE_S", "PETROSA_LIVE_STREAM_MAX_BYTES"} <= set(passed)
    for var, ref in passed.items():
        m = REFERENCE.match(ref)
        assert m and m.group(1) == var and m.group(2) == ":-" and m.group(3) == "", (var, ref)
    assert live_settings_from_env(dict.fromkeys(passed, "")) == LiveSettings()


def test_every_live_variable_the_compose_file_reads_is_in_env_example():
    services = _compose()["services"]
    used = set()
    for name in DAGSTER_SERVICES:
        for ref in _live_env(services[name]).values():
            used.add(REFERENCE.match(ref).group(1))
    assert set(URL_DEFAULTS) <= used
    assert used <= _env_example(), used - _env_example()


def test_nothing_waits_for_nats_and_the_code_waits_for_a_healthy_redis():
    """NATS is optional (the publisher buffers and reconnects): removing the service must not
    break `docker compose up`. Redis answers before the first ingest run writes to it."""
    services = _compose()["services"]
    for name, svc in services.items():
        assert "nats" not in svc.get("depends_on", {}), name
    assert services["code"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert '(docs/deployment.md, "NATS and Redis")' in (REPO / "docker-compose.yml").read_text()
    assert "### NATS and Redis" in (REPO / "docs" / "deployment.md").read_text()


def test_helm_values_pass_both_urls_to_the_code_server_from_a_secret():
    text = (REPO / "deploy" / "helm" / "values.yaml").read_text()
    values = yaml.safe_load(text)
    (code,) = values["dagster-user-deployments"]["deployments"]
    # never as a plain value in the values file: they may hold credentials
    assert not set(URL_DEFAULTS) & {e["name"] for e in code.get("env", [])}
    assert SECRET in {s["name"] for s in code["envSecrets"]}
    assert code["includeConfigInLaunchedRuns"]["enabled"], "run pods (the ingest) need them too"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert SECRET in {s["name"] for s in launcher["envSecrets"]}
    for var in URL_DEFAULTS:
        assert var in text, f"values.yaml says where {var} comes from"
    # and the install page puts both into that Secret
    k8s = (REPO / "docs" / "kubernetes.md").read_text()
    create = k8s[k8s.index(f"create secret generic {SECRET}") :]
    create = create[: create.index("```")]
    for var in URL_DEFAULTS:
        assert f"--from-literal={var}=" in create, var
        assert f'"{var}": ' in k8s, f"the patch command of step 10 sets {var}"
    assert "JetStream" in k8s[k8s.index("## 10. NATS and Redis") :]


def test_compose_config_resolves_the_urls_when_docker_compose_is_installed(tmp_path):
    binary = shutil.which("docker-compose")
    if not binary:  # Debian's docker-compose v1 lints the file without an engine
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PETROSA_", "DAGSTER_PG_"))}
    env["DAGSTER_PG_PASSWORD"] = "not-a-secret"
    empty = tmp_path / "empty.env"
    empty.write_text("")

    def config(extra: dict[str, str]) -> dict:
        out = subprocess.run(
            [binary, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(empty), "config"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)["services"]

    services = config({})
    for name in DAGSTER_SERVICES:
        environment = services[name]["environment"]
        for var, default in URL_DEFAULTS.items():
            assert environment[var] == default, (name, var)
    nats = "nats://user:pw@nats.example:4222"
    services = config({"PETROSA_NATS_URL": nats, "PETROSA_LIVE_PUBLISH": "false"})
    for name in DAGSTER_SERVICES:
        assert services[name]["environment"]["PETROSA_NATS_URL"] == nats
        assert services[name]["environment"]["PETROSA_LIVE_PUBLISH"] == "false"
