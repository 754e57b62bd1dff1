"""Long-running child processes (Airflow components, MLflow): started, watched and stopped as a group.

Each one gets its own process group, so stopping it stops its children too (executor workers,
gunicorn), and its output goes to one log file per component.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (systemd, timeout, docker stop) into KeyboardInterrupt, so the children are stopped too."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def spawn(processes: dict[str, subprocess.Popen], logs_dir: Path, name: str, command: list[str], env: dict) -> None:
    """Start `command` in its own process group, its output in logs_dir/<name>.log."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log = open(logs_dir / f"{name}.log", "w")  # noqa: SIM115 - owned by the process for its lifetime
    processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def raise_if_exited(processes: dict[str, subprocess.Popen], logs_dir: Path) -> None:
    """A component that stopped on its own ends the whole stack, with the tail of its log."""
    for name, process in processes.items():
        if process.poll() is not None:
            tail = (logs_dir / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")


def stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each process group (children too: executor workers, gunicorn), SIGKILL after 30 s."""
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    processes.clear()
