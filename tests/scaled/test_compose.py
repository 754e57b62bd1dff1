"""docker-compose.yml is valid and complete. There is no Docker engine here, so the file is
checked by Compose's own validator (`docker-compose config`, Debian's package) and by reading it;
what it configures is run for real in test_scaled_stack.py."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.settings import REPO_ROOT, Settings
from serving.config import ServingSettings
from tests.conftest import debian_tool

LONG_RUNNING = {
    "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "mlflow", "serving",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    """A Compose client able to run `config` without an engine, installed on first use if absent."""
    debian_tool("docker-compose", "docker-compose")
    return ["docker-compose"]


def project(tmp_path: Path, compose_text: str | None = None) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "docker-compose.yml").write_text(compose_text or (REPO_ROOT / "docker-compose.yml").read_text())
    shutil.copytree(REPO_ROOT / "deploy", directory / "deploy")
    shutil.copy(REPO_ROOT / ".env.example", directory / ".env")
    return directory


def config(cli: list[str], directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, "config", "-q"], cwd=directory, capture_output=True, text=True, timeout=60)


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
    assert set(compose["volumes"]) == {"postgres-data", "recforge-home", "mlflow-artifacts"}
    assert "mlflow-artifacts:/mlartifacts" in services["mlflow"]["volumes"]
    assert "postgresql" in " ".join(services["mlflow"]["command"].split())
    worker_env = (REPO_ROOT / ".env.example").read_text()
    assert "AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in worker_env and "redis://redis:6379" in worker_env


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^#?\s*(RECFORGE_[A-Z0-9_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M))
    expected = {f"RECFORGE_{name.upper()}" for name in (*Settings.model_fields, *ServingSettings.model_fields)}
    assert expected - listed == set(), f"missing from .env.example: {sorted(expected - listed)}"
    assert listed - expected == set(), f"not settings: {sorted(listed - expected)}"
