"""`recforge ui` is closed by default: loopback only, executor sized to the machine, secrets 0600.

The launch is checked from the commands and environment it builds (starting five servers would
cost a minute of both cores); the secret files are real files.
"""

import json
import os
import stat

from pipelines.cli import build_parser
from pipelines.runtime.ui import UiLaunch, owner_only, write_secret
from tests.conftest import make_settings


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def launch(tmp_path, host="127.0.0.1") -> UiLaunch:
    settings = make_settings(tmp_path / "home")
    return UiLaunch(settings, host).build()


def test_recforge_ui_listens_on_localhost_unless_told_otherwise():
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    assert build_parser().parse_args(["ui", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_every_ui_process_binds_loopback_and_no_log_server_is_started(tmp_path):
    ui = launch(tmp_path)
    assert set(ui.commands) == {"api-server", "scheduler", "dag-processor", "triggerer", "mlflow-ui"}
    for name in ("api-server", "mlflow-ui"):
        command = ui.commands[name]
        assert command[command.index("--host") + 1] == "127.0.0.1", name
    # The scheduler and triggerer would otherwise serve logs on every interface (Airflow has no bind setting).
    assert "--skip-serve-logs" in ui.commands["scheduler"] and "--skip-serve-logs" in ui.commands["triggerer"]
    assert not any("0.0.0.0" in " ".join(command) for command in ui.commands.values())
    assert ui.environment["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert ui.environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert "--app-name" not in ui.commands["mlflow-ui"]  # local: no login, and README says so


def test_the_executor_runs_as_many_workers_as_the_machine_has_cores(tmp_path):
    ui = launch(tmp_path)
    assert ui.environment["AIRFLOW__CORE__PARALLELISM"] == str(os.cpu_count())
    assert ui.environment["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_the_airflow_admin_password_file_is_owner_only_and_kept_across_starts(tmp_path):
    ui = launch(tmp_path)
    ui.passwords_file.write_text("")
    ui.passwords_file.chmod(0o644)  # as a world-readable file from an earlier version
    password = ui.admin_password()
    assert mode(ui.passwords_file) == 0o600
    assert json.loads(ui.passwords_file.read_text()) == {"admin": password} and len(password) >= 16
    assert ui.admin_password() == password
    assert ui.environment["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(ui.passwords_file)


def test_another_address_turns_on_mlflows_login_with_a_generated_owner_only_password(tmp_path):
    ui = launch(tmp_path, host="0.0.0.0")
    command = ui.commands["mlflow-ui"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    password = ui.mlflow_password_file.read_text().strip()
    assert ui.environment["MLFLOW_AUTH_ADMIN_PASSWORD"] == password and len(password) >= 16
    config = ui.mlflow_auth_config.read_text()
    assert ui.environment["MLFLOW_AUTH_CONFIG_PATH"] == str(ui.mlflow_auth_config)
    assert "admin_username = admin" in config and password not in config
    assert mode(ui.mlflow_password_file) == 0o600 and mode(ui.mlflow_auth_config) == 0o600
    assert ui.environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert "login admin / password in" in ui.summary("x")


def test_secret_files_are_made_owner_only_even_when_they_existed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("old")
    secret.chmod(0o644)
    write_secret(secret, "new")
    assert secret.read_text() == "new" and mode(secret) == 0o600
    config = tmp_path / "airflow.cfg"
    config.write_text("jwt_secret = x\n")
    config.chmod(0o644)
    owner_only(config)
    assert mode(config) == 0o600
