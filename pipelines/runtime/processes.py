"""Long-running child processes (Airflow components, MLflow): started, watched and stopped as a group.

Each one gets its own process group, so stopping it stops its children too (executor workers,
gunicorn), and its output goes to one log file per component.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a component only this host talks to)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_until_answering(
    urls: dict[str, str], processes: dict[str, subprocess.Popen], logs_dir: Path, timeout: float = 180
) -> None:
    """Until every component's URL answers 200; a component that exits meanwhile ends the wait with its log."""
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            raise_if_exited(processes, logs_dir)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        pending.pop(name)
            except OSError:
                pass
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"not ready after {timeout:.0f} s: {sorted(pending)}; logs in {logs_dir}")


class ProcessGroup:
    """Children started together and stopped together (`processes`, logs under `logs_dir`).

    Used as a context manager it stops them on the way out, and also when starting fails half-way:
    a component that came up must not outlive one that did not.
    """

    processes: dict[str, subprocess.Popen]

    @property
    def logs_dir(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def raise_if_exited(self) -> None:
        raise_if_exited(self.processes, self.logs_dir)

    def stop(self) -> None:
        stop(self.processes)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
