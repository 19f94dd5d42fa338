"""Issue 12, item 2, end to end: ``y = x + b`` (x ``[batch, n]``, b ``[4]``) is
registered, built by the pipeline, deployed on the local runtime, warms up on its
reference sample's first row, becomes ready and serves. A build whose warm-up fails
leaves its deployment failed with the reason, and failed while its replica restarts."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from sqlalchemy import select

from shipway.builds.packaging import package_repository, triton_model_name
from shipway.builds.pipeline import BuildPipeline, build_artifact_path
from shipway.builds.recipes import Target
from shipway.container import Container
from shipway.registry.signature import Signature
from shipway.runtime.local import LocalRuntime
from shipway.runtime.manager import RuntimeManager
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.services import deployments, models
from shipway.settings import Settings
from shipway.store.models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    ModelVersion,
    Replica,
    new_id,
)
from tests.support.builds import record_build
from tests.support.services import wait_until
from tests.support.signatures import CASES

pytestmark = pytest.mark.integration

REASON = "Attempting to broadcast an axis by a dimension other than 1. 3 by 4"


@pytest.fixture
def container(tmp_path: Path, triton_dist: TritonDistribution) -> Iterator[Container]:
    container = Container(Settings(home=tmp_path / "home", triton_home=triton_dist.home))
    yield container
    container.close()


@pytest.fixture
def runtime(
    container: Container, triton_dist: TritonDistribution, tmp_path: Path
) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(container.registry, triton_dist, tmp_path / "rt", drain_seconds=0.5)
    yield runtime
    runtime.close()


def register_bias(container: Container) -> ModelVersion:
    made = CASES["bias"]()
    buffer = io.BytesIO()
    np.savez(buffer, **made.sample(16))
    registration = models.Registration("bias", made.onnx, buffer.getvalue(), {})
    return models.register(container, registration, "test")


def deployment(container: Container, name: str) -> tuple[DeploymentStatus, str | None, set[int]]:
    with container.db.session() as session:
        row = session.scalar(select(Deployment).where(Deployment.name == name))
        assert row is not None
        pids = {r.pid for r in session.scalars(select(Replica)) if r.pid is not None}
        return row.status, row.message, pids


def test_the_bias_model_warms_up_on_its_reference_row_and_serves(
    container: Container, runtime: LocalRuntime
) -> None:
    version = register_bias(container)
    with container.db.session() as session:
        build = Build(model_version_id=version.id, recipe="fp32", target="onnxruntime-cpu")
        session.add(build)
        session.flush()
        build_id = build.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    with container.db.session() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.status == BuildStatus.SUCCEEDED, build.error
        name, artifact = build.triton_model_name, build.artifact_path
    with tempfile.TemporaryDirectory() as tmp:
        repo = container.registry.download(version.mlflow_run_id, artifact or "", Path(tmp))
        config = (repo / str(name) / "config.pbtxt").read_text()
    assert "batch_size: 1" in config and "dims: [ 1, 4 ] input_data_file" in config

    deployments.deploy(container, "bias", build_id, "test")
    manager = RuntimeManager(container.db, runtime)

    def ready() -> bool:
        manager.reconcile_once()
        return deployment(container, "bias")[0] == DeploymentStatus.READY

    wait_until(ready, 120, "the bias deployment")
    with container.db.session() as session:
        (url,) = [r.url for r in session.scalars(select(Replica))]
    request = CASES["bias"]().request
    body = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
            for k, v in request.items()
        ]
    }
    answer = httpx.post(f"{url}/v2/models/{name}/infer", json=body, trust_env=False)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    expected = ort.InferenceSession(CASES["bias"]().onnx).run(["y"], request)[0]
    assert output["shape"] == [2, 4]
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 4), expected, rtol=1e-6)


def publish(container: Container, version: ModelVersion, sample: dict[str, np.ndarray]) -> str:
    """A build packaged as the pipeline packages one, with ``sample`` for its warm-up."""
    build_id = new_id()
    name = triton_model_name(version.name, build_id)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(CASES["bias"]().onnx)
        signature = Signature.from_dict(version.signature)
        repo = Path(tmp) / "repo"
        package_repository(repo, name, onnx_path, signature, Target.ONNXRUNTIME_CPU, sample=sample)
        container.registry.log_dir(version.mlflow_run_id, repo, build_artifact_path(build_id))
        shutil.rmtree(repo)
    return record_build(container, version, build_id, name)


def test_a_failed_warmup_fails_the_deployment_with_the_reason_through_restarts(
    container: Container, runtime: LocalRuntime
) -> None:
    version = register_bias(container)
    bad = {"x": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}  # n=3 against 4
    deployments.deploy(container, "bias", publish(container, version, bad), "test")
    manager = RuntimeManager(container.db, runtime)
    seen: list[tuple[DeploymentStatus, str | None]] = []
    pids: set[int] = set()

    def failed_again_after_a_restart() -> bool:
        manager.reconcile_once()
        status, message, now = deployment(container, "bias")
        pids.update(now)
        if seen or status == DeploymentStatus.FAILED:
            seen.append((status, message))
        # Two processes started, and the second one failed too.
        return len(pids) >= 2 and not now and status == DeploymentStatus.FAILED

    wait_until(failed_again_after_a_restart, 180, "a second failed start")
    # From the first failure on, through the restart: failed, with ONNX Runtime's reason.
    assert {status for status, _ in seen} == {DeploymentStatus.FAILED}
    assert all(message and REASON in message for _, message in seen), seen[0]
