"""An MLflow tracking server process for tests: ``mlflow server`` on a free port, its
log beside the test's files, waited for until ``/health`` answers, stopped after."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.services import free_port, wait_until


@contextmanager
def mlflow_server(
    directory: Path, backend_store_uri: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """The server's URL; artifacts proxied under ``directory / "artifacts"``, ``env``
    added to this process's environment (MLflow reads its webhook settings there)."""
    port = free_port()
    log_path = directory / "mlflow.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                backend_store_uri,
                "--artifacts-destination",
                str(directory / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-2000:])
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 120, "mlflow server")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
