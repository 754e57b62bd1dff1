"""`recforge ui`: the Airflow UI (:8080) and the MLflow UI (:5000) on the embedded default's stores.

Safe by default: every process listens on 127.0.0.1 unless ``--host`` says otherwise, the
LocalExecutor runs as many workers as the machine has cores (Airflow's default is 32), and the
secrets written for the UIs (the Airflow admin password, MLflow's admin password) are files of
mode 0600. Airflow's components are started here one by one rather than by ``airflow
standalone``, because standalone's scheduler and triggerer start log servers on every interface
with no setting to change that; on one machine the API server reads task logs from the shared log
folder, so those servers are not needed (``--skip-serve-logs``).

The MLflow UI has no login on 127.0.0.1 (anyone with a shell on this host can read and write the
registry). Bound to any other address it runs MLflow's basic-auth app with a generated admin
password instead.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.runtime.airflow_home import local_executor_environment
from pipelines.runtime.mlflow_server import MLFLOW_SERVER_ENVIRONMENT
from pipelines.runtime.processes import interrupt_on_sigterm, raise_if_exited, spawn, stop
from pipelines.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
ADMIN_USER = "admin"


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), also when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)  # O_CREAT's mode applies to new files only


def owner_only(path: Path) -> None:
    """Make an existing secret file (Airflow's own airflow.cfg with its JWT secret) 0600."""
    if path.exists():
        path.chmod(0o600)


@dataclass
class UiLaunch:
    """The processes `recforge ui` starts: their command lines and environment, built without starting them."""

    settings: Settings
    host: str = "127.0.0.1"
    commands: dict[str, list[str]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.host in LOOPBACK

    @property
    def logs_dir(self) -> Path:
        return self.settings.home / "ui-logs"

    @property
    def passwords_file(self) -> Path:
        """Airflow's simple auth manager reads the admin password from here (and never rewrites its mode)."""
        return self.settings.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def mlflow_password_file(self) -> Path:
        return self.settings.mlflow_dir / "ui_admin_password"

    @property
    def mlflow_auth_config(self) -> Path:
        return self.settings.mlflow_dir / "basic_auth.ini"

    def admin_password(self) -> str:
        """The Airflow admin password: kept if set before, else generated; its file is 0600 either way."""
        passwords = json.loads(self.passwords_file.read_text() or "{}") if self.passwords_file.exists() else {}
        passwords.setdefault(ADMIN_USER, secrets.token_urlsafe(16))
        write_secret(self.passwords_file, json.dumps(passwords) + "\n")
        return passwords[ADMIN_USER]

    def mlflow_admin_password(self) -> str:
        if self.mlflow_password_file.exists():
            password = self.mlflow_password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(16)
        write_secret(self.mlflow_password_file, password + "\n")
        return password

    def build(self) -> UiLaunch:
        """Fill in `commands` and `environment` (writes the secret files, starts nothing)."""
        bin_dir = Path(sys.executable).parent
        airflow, mlflow = str(bin_dir / "airflow"), str(bin_dir / "mlflow")
        self.environment = {
            **os.environ,
            **local_executor_environment(self.settings, self.host, AIRFLOW_PORT),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            **MLFLOW_SERVER_ENVIRONMENT,
        }
        self.commands = {
            "api-server": [airflow, "api-server", "--host", self.host, "--port", str(AIRFLOW_PORT)],
            "scheduler": [sys.executable, "-m", "pipelines.runtime.warm_airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        }
        mlflow_command = [mlflow, "ui", "--backend-store-uri", self.settings.tracking_uri]
        # One worker: the UI serves one person, and MLflow's default of 4 starve a small machine.
        mlflow_command += ["--host", self.host, "--port", str(MLFLOW_PORT), "--workers", "1"]
        if not self.local:
            write_secret(
                self.mlflow_auth_config,
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.settings.mlflow_dir / 'basic_auth.db'}\n"
                f"admin_username = {ADMIN_USER}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
            )
            mlflow_command += ["--app-name", "basic-auth"]
            self.environment["MLFLOW_AUTH_CONFIG_PATH"] = str(self.mlflow_auth_config)
            self.environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.mlflow_admin_password()
        self.commands["mlflow-ui"] = mlflow_command
        return self

    def summary(self, airflow_password: str) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        mlflow_login = (
            "no login: anyone who can reach this host's loopback can read and write the registry"
            if self.local
            else f"login {ADMIN_USER} / password in {self.mlflow_password_file} (mode 0600)"
        )
        return (
            f"Airflow UI on http://{shown}:{AIRFLOW_PORT} (login {ADMIN_USER} / {airflow_password}; "
            f"in {self.passwords_file}, mode 0600)\n"
            f"MLflow UI on http://{shown}:{MLFLOW_PORT} ({mlflow_login})"
        )

    def run(self) -> None:
        """Start every process, wait until one exits (or Ctrl-C), then stop them all."""
        processes: dict[str, subprocess.Popen] = {}
        interrupt_on_sigterm()
        try:
            for name, command in self.commands.items():
                spawn(processes, self.logs_dir, name, command, self.environment)
            print(f"logs in {self.logs_dir}; Ctrl-C stops the UIs", flush=True)
            while True:
                raise_if_exited(processes, self.logs_dir)
                time.sleep(2)
        finally:
            stop(processes)
