"""docker-compose.yml is valid and complete. There is no Docker engine here, so the file is
checked by Compose's own validator (`docker-compose config`, Debian's package) and by reading it;
what it configures is run for real in test_scaled_stack.py."""

import re
import secrets as secrets_module
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.runtime.mlflow_server import MLFLOW_SERVER_ENVIRONMENT
from pipelines.settings import REPO_ROOT, Settings
from serving.config import ServingSettings
from tests.conftest import debian_tool

# The secrets the compose file needs, each refused by ${VAR:?message} while unset or empty.
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET", "GRAFANA_ADMIN_PASSWORD")
# Required like the secrets (refused while empty) but not secret: a path.
REQUIRED_PATHS = {"ALERT_WEBHOOK_URL_FILE": "./alert_webhook_url"}
LONG_RUNNING = {
    "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "mlflow", "serving", "prometheus", "alertmanager", "grafana",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    """A Compose client able to run `config` without an engine, installed on first use if absent."""
    debian_tool("docker-compose", "docker-compose")
    return ["docker-compose"]


def project(tmp_path: Path, compose_text: str | None = None, secrets: dict[str, str] | None = None) -> Path:
    """A compose project from the repository's files, its .env the example with `secrets` filled in
    (by default each one set, as README's `openssl rand -hex 32` lines do)."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "docker-compose.yml").write_text(compose_text or (REPO_ROOT / "docker-compose.yml").read_text())
    shutil.copytree(REPO_ROOT / "deploy", directory / "deploy")
    env = (REPO_ROOT / ".env.example").read_text()
    filled = secrets if secrets is not None else {n: secrets_module.token_hex(32) for n in SECRETS}
    for name, value in {**REQUIRED_PATHS, **filled}.items():
        env, replaced = re.subn(rf"^{name}=.*$", f"{name}={value}", env, flags=re.M)
        assert replaced == 1, f"{name} is not in .env.example"
    (directory / ".env").write_text(env)
    return directory


def config(cli: list[str], directory: Path, quiet: bool = True) -> subprocess.CompletedProcess:
    command = [*cli, "config", *(["-q"] if quiet else [])]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=60)


def test_the_compose_file_passes_composes_own_validation(compose_cli, tmp_path):
    result = config(compose_cli, project(tmp_path))
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(compose_cli, tmp_path):
    broken = (REPO_ROOT / "docker-compose.yml").read_text().replace("service_healthy", "service_happy", 1)
    result = config(compose_cli, project(tmp_path, broken))
    assert result.returncode != 0 and "service_happy" in result.stderr


def test_every_service_is_there_with_a_health_check_and_named_volumes():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert LONG_RUNNING | {"airflow-init"} == set(services)
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert set(compose["volumes"]) == {
        "postgres-data", "recforge-home", "serving-failures", "mlflow-artifacts", "prometheus-data", "grafana-data"
    }  # fmt: skip
    assert "serving-failures:/var/recforge-failures" in services["serving"]["volumes"]  # the one writer
    assert "mlflow-artifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert "postgresql" in " ".join(services["mlflow"]["command"].split())
    # The MLflow server runs as the scaled stack and `recforge ui` run it (no GenAI job runner).
    assert MLFLOW_SERVER_ENVIRONMENT.items() <= services["mlflow"]["environment"].items()
    worker_env = (REPO_ROOT / ".env.example").read_text()
    assert "AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in worker_env and "redis://redis:6379" in worker_env


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^#?\s*(RECFORGE_[A-Z0-9_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M))
    expected = {f"RECFORGE_{name.upper()}" for name in (*Settings.model_fields, *ServingSettings.model_fields)}
    assert expected - listed == set(), f"missing from .env.example: {sorted(expected - listed)}"
    assert listed - expected == set(), f"not settings: {sorted(listed - expected)}"


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_while_a_secret_is_unset(missing, compose_cli, tmp_path):
    """.env.example as shipped (secrets empty) cannot start: the `:?` guard names what to set."""
    filled = {name: ("" if name == missing else "x" * 64) for name in SECRETS}
    result = config(compose_cli, project(tmp_path, secrets=filled))
    assert result.returncode != 0
    assert f"set {missing} in .env (openssl rand -hex 32)" in result.stderr


def test_every_use_of_a_secret_is_guarded_and_no_secret_value_ships():
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    example = (REPO_ROOT / ".env.example").read_text()
    for name in SECRETS:
        uses = re.findall(rf"\$\{{{name}(:?.)", compose)
        assert uses and set(uses) == {":?"}, f"{name} is used without its :? guard: {uses}"
        assert re.search(rf"^{name}=$", example, re.M), f".env.example must leave {name} empty"
    # No password in a URL, and no setting of the example that looks like a secret carries a value.
    assert not re.search(r"://[^/\s:]+:[^@/\s$]+@", compose + example), "a URL with a literal password"
    valued = re.findall(r"^([A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|KEY)[A-Z0-9_]*)=(.+)$", example, re.M)
    assert valued == [], f"secret values in .env.example: {valued}"
    assert "change-me" not in compose + example


def test_published_ports_listen_on_localhost_unless_told_otherwise(compose_cli, tmp_path):
    """After interpolation with the example .env every published port binds 127.0.0.1."""
    result = config(compose_cli, project(tmp_path), quiet=False)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    published = {
        name: [p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p['published']}:{p['target']}" for p in ports]
        for name, service in services.items()
        if (ports := service.get("ports"))
    }
    assert set(published) == {"airflow-apiserver", "mlflow", "serving", "prometheus", "alertmanager", "grafana"}
    for name, ports in published.items():
        assert all(p.startswith("127.0.0.1:") for p in ports), f"{name} publishes {ports} beyond localhost"
    raw = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    for name in published:
        assert all(p.startswith("${HOST_BIND_ADDRESS:-127.0.0.1}:") for p in raw[name]["ports"]), name


def test_compose_refuses_to_start_without_the_alert_webhook_url_file(compose_cli, tmp_path):
    directory = project(tmp_path)
    env = (directory / ".env").read_text()
    (directory / ".env").write_text(re.sub(r"^ALERT_WEBHOOK_URL_FILE=.*$", "ALERT_WEBHOOK_URL_FILE=", env, flags=re.M))
    result = config(compose_cli, directory)
    assert result.returncode != 0
    assert "set ALERT_WEBHOOK_URL_FILE in .env (a file holding the operators webhook URL)" in result.stderr
