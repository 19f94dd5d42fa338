"""The gateway forwards KServe v2 requests to the replicas the store lists as ready."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import uvicorn

from shipway.examples import minilm
from shipway.gateway.app import create_gateway_app
from shipway.settings import Settings
from shipway.store.db import Database, migrate
from shipway.store.models import Build, Deployment, ModelVersion, Replica, ReplicaState
from tests.integration.conftest import RunningTriton
from tests.integration.test_triton import infer
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def add_deployment(db: Database, name: str, url: str, model: str, state: str) -> None:
    with db.session() as session:
        mv = ModelVersion(
            name=name, version=1, mlflow_run_id="r", onnx_sha256="0" * 64, signature={}, tags={}
        )
        session.add(mv)
        session.flush()
        build = Build(model_version_id=mv.id, recipe="fp32", target="onnxruntime-cpu")
        session.add(build)
        session.flush()
        deployment = Deployment(name=name, build_id=build.id, status="ready")
        session.add(deployment)
        session.flush()
        session.add(
            Replica(
                deployment_id=deployment.id,
                build_id=build.id,
                url=url,
                triton_model_name=model,
                state=state,
            )
        )


@pytest.fixture
def gateway(db: Database, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    settings = Settings(home=tmp_path, gateway_port=port, routes_refresh_seconds=0.2)
    server = uvicorn.Server(
        uvicorn.Config(
            create_gateway_app(settings, db), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, 20, "gateway")
    yield url
    server.should_exit = True
    thread.join(10)


def test_inference_through_the_gateway_matches_onnxruntime(
    db: Database,
    gateway: str,
    minilm_triton: RunningTriton,
    minilm_onnx: Path,
    minilm_inputs: dict[str, np.ndarray],
) -> None:
    add_deployment(
        db, "web", minilm_triton.process.url, minilm_triton.model_name, ReplicaState.READY
    )
    expected = ort.InferenceSession(str(minilm_onnx)).run([minilm.HIDDEN_STATE], minilm_inputs)[0]
    for binary in (True, False):
        served = infer(gateway, "web", minilm_inputs, binary)
        assert float(np.max(np.abs(served - expected))) < 1e-4

    metadata = httpx.get(f"{gateway}/v2/models/web").json()
    assert {i["name"] for i in metadata["inputs"]} == {"input_ids", "attention_mask"}
    assert httpx.get(f"{gateway}/v2/models/web/ready").status_code == 200

    metrics = httpx.get(f"{gateway}/metrics").text
    assert (
        'shipway_gateway_requests_total{code="200",deployment="web",variant="stable"} 2.0'
        in metrics
    )


def test_errors_are_kserve_shaped(db: Database, gateway: str, minilm_triton: RunningTriton) -> None:
    response = httpx.post(f"{gateway}/v2/models/nope/infer", json={"inputs": []})
    assert response.status_code == 404
    assert response.json() == {"error": "deployment 'nope' has no ready replica"}

    # A replica that is listed but not ready receives nothing.
    add_deployment(
        db, "cold", minilm_triton.process.url, minilm_triton.model_name, ReplicaState.STARTING
    )
    assert httpx.post(f"{gateway}/v2/models/cold/infer", json={"inputs": []}).status_code == 404

    # Triton's own 400 for a malformed request comes back as it was.
    add_deployment(
        db, "web", minilm_triton.process.url, minilm_triton.model_name, ReplicaState.READY
    )
    bad = httpx.post(f"{gateway}/v2/models/web/infer", json={"inputs": []})
    assert bad.status_code == 400 and "error" in bad.json()

    # A replica that is gone is a 502 with its address, not a hang or a trace.
    add_deployment(db, "gone", f"http://127.0.0.1:{free_port()}", "m", ReplicaState.READY)
    gone = httpx.post(f"{gateway}/v2/models/gone/infer", json={"inputs": []})
    assert gone.status_code == 502 and "unreachable" in gone.json()["error"]
