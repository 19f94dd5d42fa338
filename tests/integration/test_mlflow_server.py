"""The production registry path: an MLflow tracking server (PostgreSQL backend store,
proxied artifacts) rather than the embedded SQLite default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shipway.container import Container
from shipway.errors import Conflict, Gone
from shipway.services import builds, models
from shipway.settings import Settings
from shipway.store.models import ModelVersion
from tests.support.mlflow import mlflow_server as run_mlflow_server

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    with run_mlflow_server(tmp_path, postgres_url) as url:
        yield url


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


def test_deleted_mlflow_state_is_answered_through_a_tracking_server(
    tmp_path: Path, mlflow_server: str, minilm_onnx: Path, minilm_sample: Path
) -> None:
    """The same answers when MLflow speaks REST: a deleted experiment is restored by the
    next registration; a deleted run or version is named (409 / 410); aliases on a
    deleted registered model are skipped."""
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server)
    container = Container(settings)
    client = MlflowClient(mlflow_server)

    def register() -> ModelVersion:
        return models.register(
            container,
            models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
            actor="test",
        )

    first = register()
    experiment = client.get_experiment_by_name("shipway/minilm")
    assert experiment is not None
    client.delete_experiment(experiment.experiment_id)
    second = register()
    assert second.version == 2
    assert client.get_experiment(experiment.experiment_id).lifecycle_stage == "active"

    client.delete_run(first.mlflow_run_id)
    with pytest.raises(Conflict, match=f"run {first.mlflow_run_id} .* is deleted: restore it"):
        builds.create(container, "minilm", 1, "fp32", "onnxruntime-cpu", "test")
    client.delete_model_version("minilm", "2")
    with pytest.raises(Gone, match="model 'minilm' version 2 was deleted from the MLflow"):
        builds.create(container, "minilm", 2, "fp32", "onnxruntime-cpu", "test")

    client.delete_registered_model("minilm")
    container.registry.set_alias("minilm", "production", 1)  # skipped, no error
    container.registry.delete_alias("minilm", "candidate")
    with pytest.raises(Conflict, match="registered model 'minilm' was deleted from MLflow"):
        register()
    container.close()
