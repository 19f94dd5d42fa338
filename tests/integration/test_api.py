"""API behaviour on real parts (PostgreSQL store, MLflow, Redis broker): auth, bad input
leaves nothing behind, and the happy path of registration."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from onnx import TensorProto, helper
from sqlalchemy import func, select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.drift import profile_io
from shipway.settings import Settings
from shipway.store.models import AuditEvent, Build, ModelVersion
from tests.support.builds import publish_flaky_build, register_doubler

pytestmark = pytest.mark.integration

ADMIN, VIEWER = "admin-token", "viewer-token"


@pytest.fixture
def container(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Container]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        result_backend=redis_url,
        api_tokens={ADMIN: "admin", VIEWER: "viewer"},
    )
    container = Container(settings)
    yield container
    container.close()


@pytest.fixture
def api(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield client


def register(api: TestClient, name: str, onnx: bytes, sample: bytes):  # type: ignore[no-untyped-def]
    return api.post(
        f"/api/v1/models/{name}/versions",
        files={"onnx": ("m.onnx", onnx), "sample": ("s.npz", sample)},
        data={"tags": '{"team": "search"}'},
    )


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def nothing_registered(container: Container, name: str) -> bool:
    s = container.settings
    client = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    with container.db.session() as session:
        rows = session.scalar(select(func.count()).select_from(ModelVersion))
    return rows == 0 and not client.search_registered_models(filter_string=f"name = '{name}'")


def test_missing_and_unknown_tokens_are_401(api: TestClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        response = api.get("/api/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["detail"]


def test_viewer_reads_but_may_not_act(api: TestClient, minilm_onnx: Path) -> None:
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert api.get("/api/v1/models", headers=viewer).status_code == 200
    response = api.post("/api/v1/builds", json={"model": "m", "version": 1}, headers=viewer)
    assert response.status_code == 403
    assert "needs 'deployer'" in response.json()["detail"]


def test_invalid_onnx_is_422_and_registers_nothing(api: TestClient, container: Container) -> None:
    sample = npz(x=np.ones((1, 2), np.float32))
    response = register(api, "broken", b"\x08\x07garbage-not-onnx", sample)
    assert response.status_code == 422
    assert "not a valid ONNX model" in response.json()["detail"]
    assert nothing_registered(container, "broken")


def test_mismatched_sample_is_422_and_registers_nothing(
    api: TestClient, container: Container, minilm_onnx: Path
) -> None:
    sample = npz(input_ids=np.ones((2, 8), np.int32), attention_mask=np.ones((2, 8), np.int64))
    response = register(api, "minilm", minilm_onnx.read_bytes(), sample)
    assert response.status_code == 422
    assert "dtype int32, the model expects int64" in response.json()["detail"]
    assert nothing_registered(container, "minilm")


def test_a_model_that_fails_on_its_own_sample_is_422_and_registers_nothing(
    api: TestClient, container: Container
) -> None:
    # Valid ONNX whose Reshape cannot take the sample's 3 values per row.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    response = register(api, "odd", model.SerializeToString(), npz(x=np.ones((3, 3), np.float32)))
    assert response.status_code == 422
    assert "does not run on its reference sample" in response.json()["detail"]
    assert nothing_registered(container, "odd")


def test_bad_name_and_bad_tags(api: TestClient, minilm_onnx: Path, minilm_sample: Path) -> None:
    response = register(api, "Bad_Name", minilm_onnx.read_bytes(), minilm_sample.read_bytes())
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "path.name must be a name of lower-case letters, digits and '-', at most 63 "
        "characters, starting and ending with a letter or digit, got 'Bad_Name'"
    )
    response = api.post(
        "/api/v1/models/ok/versions",
        files={
            "onnx": ("m.onnx", minilm_onnx.read_bytes()),
            "sample": ("s.npz", minilm_sample.read_bytes()),
        },
        data={"tags": "[1, 2]"},
    )
    assert response.status_code == 422 and "tags must be a JSON object" in response.json()["detail"]


def test_register_then_build_requests(
    api: TestClient, container: Container, minilm_onnx: Path, minilm_sample: Path, tmp_path: Path
) -> None:
    response = register(api, "minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1 and body["tags"]["team"] == "search"
    assert body["tags"]["shipway.sample_rows"] == "16"
    assert [i["name"] for i in body["signature"]["inputs"]] == ["input_ids", "attention_mask"]
    assert (
        register(api, "minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes()).json()[
            "version"
        ]
        == 2
    )

    # MLflow holds the version with its files and tags.
    s = container.settings
    mlflow = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    version = mlflow.get_model_version("minilm", "1")
    assert version.tags["team"] == "search"
    files = {a.path for a in mlflow.list_artifacts(body["mlflow_run_id"])}
    assert {"model", "reference", "signature.json"} <= files

    # The drift baseline, computed at registration from the sample and the model's
    # own FP32 outputs on it.
    profile_file = container.registry.download(
        body["mlflow_run_id"], "reference/profile.npz", tmp_path / "profile"
    )
    profile = profile_io.from_bytes(profile_file.read_bytes())
    assert body["tags"]["shipway.drift_profile"] == "reference/profile.npz"
    assert profile.rows == 16 and set(profile.categorical) == {"input_ids"}
    assert set(profile.numeric) == {"attention_mask.sum"}
    assert {"461", "onnx::Shape_422"} <= set(profile.embeddings)  # pooled with the mask

    unknown = api.post("/api/v1/builds", json={"model": "nope", "version": 1})
    assert unknown.status_code == 404 and "not registered" in unknown.json()["detail"]
    missing = api.post("/api/v1/builds", json={"model": "minilm", "version": 9})
    assert missing.status_code == 404 and "versions: [1, 2]" in missing.json()["detail"]
    recipe = api.post("/api/v1/builds", json={"model": "minilm", "version": 1, "recipe": "fp8"})
    assert recipe.status_code == 422
    assert recipe.json()["detail"] == (
        "body.recipe must be 'fp32', 'fp16', 'int8', 'int8-dynamic' or 'bf16', got 'fp8'"
    )
    pair = api.post("/api/v1/builds", json={"model": "minilm", "version": 1, "target": "tensorrt"})
    assert pair.status_code == 422 and "a float32 TensorRT engine gains little" in pair.text
    # the openvino-cpu target's pairs that have no build path, refused with the reason
    for recipe, target, reason in [
        ("int8-dynamic", "openvino-cpu", "OpenVINO quantizes from calibrated ranges"),
        ("fp16", "openvino-cpu", "not float16; use bf16 on openvino-cpu"),
        ("bf16", "onnxruntime-cpu", "bf16 is OpenVINO's inference precision hint"),
    ]:
        body = {"model": "minilm", "version": 1, "recipe": recipe, "target": target}
        refused = api.post("/api/v1/builds", json=body)
        assert refused.status_code == 422 and reason in refused.json()["detail"], refused.text
    body = {"model": "minilm", "version": 1, "recipe": "int8", "target": "openvino-cpu"}
    ignored = api.post("/api/v1/builds", json={**body, "options": {"calibration": "minmax"}})
    assert ignored.status_code == 422, ignored.text
    assert "calibration applies to ONNX Runtime and TensorRT" in ignored.json()["detail"]

    # quantize_embeddings: a boolean, and for int8-dynamic only; refused before queueing
    def with_options(recipe: str, **options: object) -> httpx.Response:
        body = {"model": "minilm", "version": 1, "recipe": recipe, "options": options}
        return api.post("/api/v1/builds", json=body)

    not_bool = with_options("int8-dynamic", quantize_embeddings="yes")
    assert not_bool.status_code == 422 and "quantize_embeddings" in not_bool.json()["detail"]
    static = with_options("int8", quantize_embeddings=True)
    assert static.status_code == 422
    assert static.json()["detail"] == (
        "quantize_embeddings applies to the int8-dynamic recipe only, not int8"
    )
    assert api.get("/api/v1/builds").json() == []  # nothing queued, nothing half-written

    queued = api.post("/api/v1/builds", json={"model": "minilm", "version": 1})
    assert queued.status_code == 202, queued.text
    build = queued.json()
    assert build["status"] == "queued" and build["model"] == "minilm"
    assert api.get(f"/api/v1/builds/{build['id']}").json()["id"] == build["id"]

    # Deploying a build that has not succeeded is a conflict, and changes nothing.
    conflict = api.put("/api/v1/deployments/web", json={"build_id": build["id"]})
    assert (
        conflict.status_code == 409
        and "only a succeeded build deploys" in conflict.json()["detail"]
    )
    assert api.get("/api/v1/deployments/web").status_code == 404
    assert api.get("/api/v1/deployments/web").json()["detail"] == "deployment 'web' does not exist"

    with container.db.session() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert actions == ["model.register", "model.register", "build.create"]
        assert session.scalar(select(func.count()).select_from(Build)) == 1


def test_unreachable_broker_fails_the_build_clearly(
    tmp_path: Path, postgres_url: str, minilm_onnx: Path, minilm_sample: Path
) -> None:
    settings = Settings(
        home=tmp_path / "h",
        database_url=postgres_url,
        broker_url="redis://127.0.0.1:1/0",
        result_backend="redis://127.0.0.1:1/0",
    )
    container = Container(settings)
    container.celery.conf.broker_connection_max_retries = 0
    container.celery.conf.broker_connection_timeout = 1
    with TestClient(create_app(container)) as api:
        api.headers["Authorization"] = f"Bearer {settings.token}"
        assert (
            register(api, "m", minilm_onnx.read_bytes(), minilm_sample.read_bytes()).status_code
            == 201
        )
        response = api.post("/api/v1/builds", json={"model": "m", "version": 1})
        assert response.status_code == 503
        assert "build queue is not reachable" in response.json()["detail"]
        assert api.get("/api/v1/builds").json()[0]["status"] == "failed"
    container.close()


def test_openapi_document_lists_the_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/models/{name}/versions",
        "/api/v1/builds",
        "/api/v1/deployments/{name}",
        "/api/v1/status",
    } <= set(paths)


def test_every_error_has_one_shape(api: TestClient) -> None:
    """``{"detail": "<sentence>"}`` for every error; a 422 also names the fields (none
    when a rule across fields refused the request); a 405 lists all the path's methods."""
    unknown = api.get("/api/v1/builds/0123456789ab")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "build '0123456789ab' does not exist"}

    invalid = api.put("/api/v1/deployments/web/variants/canary", json={"weight": 101})
    assert invalid.status_code == 422
    assert invalid.json() == {
        "detail": "body.build_id is required; body.weight must be less than or equal to 100, "
        "got 101",
        "errors": [
            {"loc": ["body", "build_id"], "msg": "Field required", "type": "missing"},
            {
                "loc": ["body", "weight"],
                "msg": "Input should be less than or equal to 100",
                "type": "less_than_equal",
            },
        ],
    }
    across = api.post("/api/v1/builds", json={"model": "m", "version": 1, "recipe": "fp16"})
    assert across.status_code == 422 and across.json()["errors"] == []
    assert "ONNX Runtime has no fast float16 kernels" in across.json()["detail"]

    not_a_number = api.put(
        "/api/v1/deployments/web", json={"build_id": "0123456789ab", "replicas": "2"}
    )
    assert not_a_number.status_code == 422
    assert not_a_number.json()["errors"][0]["loc"] == ["body", "replicas"]

    wrong_method = api.patch("/api/v1/builds")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, POST"
    assert wrong_method.json() == {"detail": "Method Not Allowed"}


def test_timestamps_carry_their_offset_on_sqlite(settings: Settings) -> None:
    """SQLite hands back naive datetimes; the API says they are UTC (RFC 3339)."""
    container = Container(settings)
    version = register_doubler(container, "m")
    build_id = publish_flaky_build(container, version)
    with TestClient(create_app(container)) as api:
        api.headers["Authorization"] = f"Bearer {settings.token}"
        stamps = [
            api.get("/api/v1/models").json()[0]["created_at"],
            api.get(f"/api/v1/builds/{build_id}").json()["updated_at"],
            api.put("/api/v1/deployments/web", json={"build_id": build_id}).json()["updated_at"],
        ]
    container.close()
    for stamp in stamps:
        assert stamp.endswith("Z"), stamp
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
