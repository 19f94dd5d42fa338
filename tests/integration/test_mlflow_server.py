"""The production registry path: an MLflow tracking server (PostgreSQL backend store,
proxied artifacts) rather than the embedded SQLite default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipway.container import Container
from shipway.services import models
from shipway.settings import Settings
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "mlflow.log").open("w")
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
            postgres_url,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((tmp_path / "mlflow.log").read_text()[-2000:])
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
        log.close()


def test_register_and_fetch_through_a_tracking_server(
    tmp_path: Path, postgres_url: str, mlflow_server: str, minilm_onnx: Path, minilm_sample: Path
) -> None:
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server)
    assert settings.resolved_artifact_root is None  # the server decides where artifacts live
    container = Container(settings)
    row = models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
        actor="test",
    )
    assert row.version == 1
    fetched = container.registry.download(row.mlflow_run_id, "model", tmp_path / "dl")
    assert (fetched / "model.onnx").read_bytes() == minilm_onnx.read_bytes()
    assert container.registry.version_tags("minilm", 1)["shipway.sample_rows"] == "16"
    # The artifacts went through the server into its own store, not into our home.
    assert list((tmp_path / "artifacts").rglob("model.onnx"))
    assert not (tmp_path / "home" / "mlartifacts").exists()
    container.close()
