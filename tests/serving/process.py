"""A real `python -m serving` process for the tests of what only a real server shows (the HTTP protocol's
limits, SIGKILL, refusals before the app)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pipelines.runtime.processes import free_port


@contextmanager
def serving_process(home: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python -m serving` on `home` at a free loopback port, answering /healthz; yields (process, port).

    `env` adds RECFORGE_* variables. A server that exits before answering fails the test with its stderr.
    """
    port = free_port()
    environment = {
        **os.environ,
        "RECFORGE_HOME": str(home),
        "RECFORGE_PORT": str(port),
        "RECFORGE_HOST": "127.0.0.1",
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "python -m serving did not start"
            time.sleep(0.1)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
