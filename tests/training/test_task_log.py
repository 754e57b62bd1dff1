"""What training leaves in an Airflow task log: MLflow's messages as log records, not stderr.

An Airflow task log marks every stderr line as an error, so MLflow's own stderr output
("Successfully registered model ...", its logger's handler) read as a wall of errors in the UI.
"""

import logging

from pipelines.training.train import train_and_register
from tests.conftest import copy_home


def test_registering_a_model_writes_nothing_to_stderr_and_logs_mlflows_messages(built, tmp_path, capfd, caplog):
    settings = copy_home(built, tmp_path / "home", train_candidates=["popularity"])
    capfd.readouterr()
    # (the mlflow logger's own level: the CLI quiets it to WARNING, and an earlier test may have run the CLI)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="mlflow"):
        train_and_register(settings)
    stderr = capfd.readouterr().err
    assert "Successfully registered model" not in stderr and "mlflow" not in stderr, stderr[-2000:]
    mlflow_lines = [r.getMessage() for r in caplog.records if r.name.startswith("mlflow")]
    assert any(line.startswith("Successfully registered model") for line in mlflow_lines), mlflow_lines
