"""MLflow state changed behind Shipway's back, on a real MLflow (SQLite backend, local
artifacts; deletions through MlflowClient and `mlflow gc`, as an MLflow user makes
them): each gets a clear answer, and nothing that serves breaks.

- the experiment ``shipway/<name>`` deleted: the next registration restores it;
- a registered model, a version or a run deleted: builds refused at request time
  (409 while restorable, 410 when gone for good), a queued build fails with the
  reason, a registration that MLflow would number again refused (409);
- aliases on a deleted registered model: a rollout starts all the same;
- the run holding a served build's repository gone for good: replicas keep serving
  from the runtime's copy; a deployment that must fetch it reports why.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sqlalchemy import func, select

from shipway.api.app import create_app
from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.registry.mlflow_registry import experiment_name
from shipway.runtime.local import LocalRuntime
from shipway.runtime.manager import RuntimeManager
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.services import deployments
from shipway.settings import Settings
from shipway.store.models import Build, BuildStatus, Deployment, ModelVersion, Replica
from tests.support.builds import doubler_onnx, publish_flaky_build, register_doubler
from tests.support.services import wait_until

pytestmark = pytest.mark.integration


@dataclass
class World:
    api: TestClient
    container: Container
    mlflow: MlflowClient

    def register(self, name: str = "m") -> int:
        sample = io.BytesIO()
        np.savez(sample, x=np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32))
        files = {"onnx": ("m.onnx", doubler_onnx()), "sample": ("s.npz", sample.getvalue())}
        response = self.api.post(f"/api/v1/models/{name}/versions", files=files)
        assert response.status_code == 201, response.text
        return int(response.json()["version"])

    def run_id(self, version: int, name: str = "m") -> str:
        with self.container.db.session() as session:
            return session.scalar(
                select(ModelVersion.mlflow_run_id).where(
                    ModelVersion.name == name, ModelVersion.version == version
                )
            )

    def build(self, version: int) -> httpx.Response:
        return self.api.post("/api/v1/builds", json={"model": "m", "version": version})

    def documented(self, method: str, path: str, status: int) -> bool:
        """The OpenAPI document declares this answer: the contract covers what the
        schemathesis run cannot reach (it cannot make MLflow lose things)."""
        document = self.api.get("/openapi.json").json()
        return str(status) in document["paths"][path][method.lower()]["responses"]

    def builds(self) -> int:
        with self.container.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(Build)) or 0)

    def experiment_id(self, name: str = "m") -> str:
        experiment = self.mlflow.get_experiment_by_name(experiment_name(name))
        assert experiment is not None
        return experiment.experiment_id

    def garbage_collect(self, run_id: str) -> None:
        """MLflow's own tool for deleting a (deleted) run for good, with its files."""
        s = self.container.settings
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mlflow",
                "gc",
                "--backend-store-uri",
                s.resolved_mlflow_tracking_uri,
                "--tracking-uri",
                s.resolved_mlflow_tracking_uri,
                "--run-ids",
                run_id,
            ],
            check=True,
            capture_output=True,
        )


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    container = Container(settings)
    container.registry.initialize()
    s = container.settings
    mlflow = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    with TestClient(create_app(container)) as api:
        api.headers["Authorization"] = f"Bearer {settings.token}"
        yield World(api, container, mlflow)
    container.close()


def test_registration_restores_a_deleted_experiment(world: World) -> None:
    assert world.register() == 1
    world.mlflow.delete_experiment(world.experiment_id())
    first_run = world.run_id(1)
    assert world.mlflow.get_run(first_run).info.lifecycle_stage == "deleted"

    assert world.register() == 2  # was a 503
    experiment = world.mlflow.get_experiment(world.experiment_id())
    assert experiment.lifecycle_stage == "active"
    # Restored with its runs: the earlier version's files are there for its builds.
    assert world.mlflow.get_run(first_run).info.lifecycle_stage == "active"
    assert world.build(1).status_code == 202


def test_builds_of_what_mlflow_lost_are_refused_naming_it(world: World) -> None:
    for expected in (1, 2, 3):
        assert world.register() == expected
    run_1, run_3 = world.run_id(1), world.run_id(3)

    world.mlflow.delete_model_version("m", "2")
    gone = world.build(2)
    assert gone.status_code == 410 and world.documented("POST", "/api/v1/builds", 410)
    assert gone.json()["detail"] == (
        "model 'm' version 2 was deleted from the MLflow registry; MLflow cannot restore "
        "it: register the model again"
    )

    world.mlflow.delete_run(run_3)
    deleted = world.build(3)
    assert deleted.status_code == 409 and world.documented("POST", "/api/v1/builds", 409)
    assert deleted.json()["detail"] == (
        f"the MLflow run {run_3} holding the files of model 'm' version 3 is deleted: "
        f"restore it (`mlflow runs restore --run-id {run_3}`)"
    )
    world.mlflow.restore_run(run_3)
    assert world.build(3).status_code == 202

    experiment = world.experiment_id()
    world.mlflow.delete_experiment(experiment)
    in_deleted = world.build(1)
    assert in_deleted.status_code == 409
    assert in_deleted.json()["detail"].endswith(
        "is deleted: its experiment 'shipway/m' is deleted; restore it "
        f"(`mlflow experiments restore --experiment-id {experiment}`)"
    )

    world.garbage_collect(run_1)  # with the deleted experiment, for good
    lost = world.build(1)
    assert lost.status_code == 410
    assert lost.json()["detail"] == (
        f"the MLflow run {run_1} holding the files of model 'm' version 1 was deleted for "
        "good; register the model again"
    )
    assert world.builds() == 1  # only the one accepted

    world.mlflow.delete_registered_model("m")
    no_model = world.build(3)
    assert no_model.status_code == 410
    assert no_model.json()["detail"].startswith(
        "the registered model 'm' was deleted from MLflow, with model 'm' version 3"
    )
    sample = io.BytesIO()
    np.savez(sample, x=np.ones((4, 2), np.float32))
    again = world.api.post(
        "/api/v1/models/m/versions",
        files={"onnx": ("m.onnx", doubler_onnx()), "sample": ("s.npz", sample.getvalue())},
    )
    assert again.status_code == 409
    assert world.documented("POST", "/api/v1/models/{name}/versions", 409)
    assert again.json()["detail"] == (
        "the registered model 'm' was deleted from MLflow, while Shipway holds versions "
        "1..3 of it (their builds and deployments keep working); MLflow would number a "
        "new version 1 again: register under another name"
    )
    # Nothing written: no registered model, experiment or run made again, no version row.
    assert not world.mlflow.search_registered_models(filter_string="name = 'm'")
    assert world.mlflow.get_experiment_by_name(experiment_name("m")) is None
    assert world.api.get("/api/v1/models?name=m").json()[-1]["version"] == 3


def test_a_queued_build_fails_naming_what_was_deleted(world: World) -> None:
    for expected in (1, 2):
        assert world.register() == expected
    queued = [world.build(v).json()["id"] for v in (1, 2)]
    run_1 = world.run_id(1)
    world.mlflow.delete_run(run_1)
    world.mlflow.delete_model_version("m", "2")

    pipeline = BuildPipeline(world.container.db, world.container.registry, world.container.settings)
    for build_id in queued:  # what the worker does with each, once it gets to it
        pipeline.run(build_id)
    first, second = (world.api.get(f"/api/v1/builds/{b}").json() for b in queued)
    assert (first["status"], second["status"]) == (BuildStatus.FAILED, BuildStatus.FAILED)
    assert first["error"] == (
        f"the MLflow run {run_1} holding the files of model 'm' version 1 is deleted: "
        f"restore it (`mlflow runs restore --run-id {run_1}`)"
    )
    assert second["error"].startswith("model 'm' version 2 was deleted from the MLflow registry")
    assert first["artifact_path"] is None and second["artifact_path"] is None


def test_a_rollout_starts_when_the_registered_model_is_gone(world: World) -> None:
    """Aliases mirror the rollout for MLflow users; with the registered model deleted
    they are skipped, and the rollout (the store's record) goes on."""
    container = world.container
    stable = publish_flaky_build(container, register_doubler(container, "m"))
    candidate = publish_flaky_build(container, register_doubler(container, "m"))
    assert world.api.put("/api/v1/deployments/web", json={"build_id": stable}).status_code == 200
    world.mlflow.delete_registered_model("m")

    started = world.api.post("/api/v1/deployments/web/rollouts", json={"build_id": candidate})
    assert started.status_code == 201, started.text  # was 503, and the rollout failed
    assert started.json()["running"] is True
    variants = world.api.get("/api/v1/deployments/web").json()["variants"]
    assert {v["name"]: v["build_id"] for v in variants} == {
        "stable": stable,
        "canary": candidate,
    }
    container.registry.set_alias("m", "production", 1)  # no error: nothing to point
    container.registry.delete_alias("m", "candidate")
    aborted = world.api.post(f"/api/v1/deployments/web/rollouts/{started.json()['id']}/abort")
    assert aborted.status_code == 200 and aborted.json()["running"] is False


def deployment(container: Container, name: str) -> Deployment:
    with container.db.session() as session:
        row = session.scalar(select(Deployment).where(Deployment.name == name))
        assert row is not None
        return row


def replica_urls(container: Container, name: str) -> list[tuple[str, str]]:
    with container.db.session() as session:
        rows = session.execute(
            select(Replica.url, Replica.triton_model_name)
            .join(Deployment, Replica.deployment_id == Deployment.id)
            .where(Deployment.name == name, Replica.state == "ready")
        )
        return [(url, model) for url, model in rows]


def doubles(url: str, model: str) -> bool:
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.5]}]}
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)
    return answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0, 5.0]


def test_serving_goes_on_when_mlflow_loses_the_build(
    world: World, triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    container = world.container
    version = register_doubler(container, "m")
    served = publish_flaky_build(container, version)
    never_fetched = publish_flaky_build(container, version)
    deployments.deploy(container, "web", served, "test")

    def pass_until(name: str, status: str) -> bool:
        manager.reconcile_once()
        return deployment(container, name).status == status

    runtime = LocalRuntime(container.registry, triton_dist, tmp_path / "rt", drain_seconds=0.5)
    manager = RuntimeManager(container.db, runtime)
    try:
        wait_until(lambda: pass_until("web", "ready"), 180, "web ready")
        # MLflow loses the run holding both builds' repositories, for good.
        world.mlflow.delete_experiment(world.experiment_id())
        world.garbage_collect(version.mlflow_run_id)
        assert world.api.get("/api/v1/deployments/web").json()["status"] == "ready"

        # The runtime manager restarts: its replicas start again from its own copy.
        runtime.close()
        runtime = LocalRuntime(container.registry, triton_dist, tmp_path / "rt", drain_seconds=0.5)
        manager = RuntimeManager(container.db, runtime)
        deployments.deploy(container, "other", never_fetched, "test")
        wait_until(lambda: pass_until("other", "failed"), 60, "other failed")
        wait_until(lambda: pass_until("web", "ready"), 180, "web ready again")
        [(url, model)] = replica_urls(container, "web")
        assert doubles(url, model)
        message = deployment(container, "other").message
        assert message == (
            f"the MLflow run {version.mlflow_run_id} was deleted for good; its "
            f"'builds/{never_fetched}/triton' is gone"
        )
        manager.reconcile_once()  # again: the same answer, no crash, web still serving
        assert deployment(container, "other").message == message
        assert deployment(container, "web").status == "ready"
    finally:
        runtime.close()


def test_a_version_number_mlflow_repeats_is_refused_and_undone(world: World) -> None:
    """The registered model deleted and made again in MLflow by hand: MLflow numbers
    the next version as one Shipway holds. Refused (409), the MLflow version undone."""
    for expected in (1, 2):
        assert world.register() == expected
    world.mlflow.delete_registered_model("m")
    world.mlflow.create_registered_model("m")
    world.mlflow.create_model_version("m", source="/elsewhere/model", run_id=None)  # 1

    sample = io.BytesIO()
    np.savez(sample, x=np.ones((4, 2), np.float32))
    clash = world.api.post(
        "/api/v1/models/m/versions",
        files={"onnx": ("m.onnx", doubler_onnx()), "sample": ("s.npz", sample.getvalue())},
    )
    assert clash.status_code == 409
    assert clash.json()["detail"] == (
        "MLflow numbered the new version of 'm' 2, which Shipway already holds (was the "
        "registered model deleted and made again in MLflow?); nothing was registered"
    )
    assert [int(v.version) for v in world.mlflow.search_model_versions("name = 'm'")] == [1]
    assert [v["version"] for v in world.api.get("/api/v1/models?name=m").json()] == [1, 2]
    # The clashing registration's run is deleted again; the versions' runs stay.
    active = {r.info.run_id for r in world.mlflow.search_runs([world.experiment_id()])}
    assert active == {world.run_id(1), world.run_id(2)}
