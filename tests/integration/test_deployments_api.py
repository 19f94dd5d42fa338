"""Deployments, variants and routing through the API: validation first, nothing
half-written, every change audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.settings import Settings
from shipway.store.models import AuditEvent, Build, BuildStatus, ModelVersion

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path: Path, postgres_url: str) -> Iterator[tuple[TestClient, Container, list[str]]]:
    container = Container(Settings(home=tmp_path / "home", database_url=postgres_url))
    with container.db.session() as session:
        mv = ModelVersion(
            name="m", version=1, mlflow_run_id="r", onnx_sha256="0", signature={}, tags={}
        )
        session.add(mv)
        session.flush()
        builds = [
            Build(model_version_id=mv.id, recipe="fp32", target="onnxruntime-cpu", status=status)
            for status in (BuildStatus.SUCCEEDED, BuildStatus.SUCCEEDED, BuildStatus.FAILED)
        ]
        session.add_all(builds)
        session.flush()
        ids = [b.id for b in builds]
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {container.settings.token}"
        yield client, container, ids
    container.close()


def weights(body: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {v["name"]: v["weight"] for v in body["variants"]}


def test_deploy_then_canary_then_routing(setup) -> None:  # type: ignore[no-untyped-def]
    api, container, (stable, candidate, _failed) = setup
    body = api.put("/api/v1/deployments/web", json={"build_id": stable, "replicas": 2}).json()
    assert weights(body) == {"stable": 100}
    assert body["variants"][0]["desired_replicas"] == 2 and body["autoscale"] == {}

    body = api.put(
        "/api/v1/deployments/web/variants/canary", json={"build_id": candidate, "weight": 10}
    ).json()
    assert weights(body) == {"canary": 10, "stable": 90}

    body = api.put(
        "/api/v1/deployments/web/routing",
        json={
            "weights": {"stable": 50, "canary": 50},
            "split": "sticky",
            "sticky_header": "X-User",
        },
    ).json()
    assert weights(body) == {"canary": 50, "stable": 50}
    assert body["split"] == "sticky" and body["sticky_header"] == "x-user"

    body = api.delete("/api/v1/deployments/web/variants/canary").json()
    assert weights(body) == {"stable": 100}  # the canary's share returns to stable

    body = api.put(
        "/api/v1/deployments/web",
        json={
            "build_id": stable,
            "replicas": 1,
            "max_replicas": 3,
            "target_inflight": 2,
            "scale_down_stabilization_window_seconds": 10,
        },
    ).json()
    assert body["autoscale"] == {
        "target_inflight": 2.0,
        "scale_down_stabilization_window_seconds": 10.0,
    }
    assert body["variants"][0]["max_replicas"] == 3

    # A new build without scale settings keeps the autoscaling; naming one replaces it.
    body = api.put("/api/v1/deployments/web", json={"build_id": candidate}).json()
    assert body["build_id"] == candidate
    assert body["autoscale"] == {
        "target_inflight": 2.0,
        "scale_down_stabilization_window_seconds": 10.0,
    }
    assert (body["variants"][0]["min_replicas"], body["variants"][0]["max_replicas"]) == (1, 3)
    body = api.put("/api/v1/deployments/web", json={"build_id": candidate, "replicas": 2}).json()
    assert body["autoscale"] == {}
    assert (body["variants"][0]["min_replicas"], body["variants"][0]["max_replicas"]) == (2, 2)

    with container.db.session() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == [
        "deployment.set",
        "variant.set",
        "routing.set",
        "variant.remove",
        "deployment.set",
        "deployment.set",
        "deployment.set",
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("put", "/routing", {"weights": {"stable": 60, "canary": 30}}, 422, "must sum to 100"),
        ("put", "/routing", {"weights": {"nope": 100}}, 404, "has no variant 'nope'"),
        (
            "put",
            "/routing",
            {"weights": {"stable": 110, "canary": -10}},
            422,
            "weights.canary must be greater than or equal to 0, got -10",
        ),
        ("put", "/routing", {"split": "random"}, 422, "split must be"),
        ("put", "/routing", {"sticky_header": "user"}, 422, "must be an x- header"),
        (
            "put",
            "/variants/canary",
            {"build_id": "B1", "weight": 101},
            422,
            "weight must be less than or equal to 100, got 101",
        ),
        (
            "put",
            "/variants/canary",
            {"build_id": "B1", "weight": 10, "shadow_share": 0.5},
            422,
            "either live",
        ),
        ("put", "/variants/stable", {"build_id": "B1"}, 422, "changes through deploy"),
        ("put", "/variants/canary", {"build_id": "B2", "weight": 10}, 409, "only a succeeded"),
        ("put", "/variants/canary", {"build_id": "nope"}, 404, "does not exist"),
        (
            "put",
            "/variants/canary",
            {"build_id": "B1", "replicas": 3, "max_replicas": 2},
            422,
            "1 <= min (3) <= max (2)",
        ),
        ("delete", "/variants/stable", None, 422, "cannot be removed"),
        ("delete", "/variants/ghost", None, 404, "has no variant 'ghost'"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(  # type: ignore[no-untyped-def]
    setup,
    method: str,
    path: str,
    body: dict | None,
    status: int,
    message: str,  # type: ignore[type-arg]
) -> None:
    api, _, (stable, candidate, failed) = setup
    api.put("/api/v1/deployments/web", json={"build_id": stable})
    api.put("/api/v1/deployments/web/variants/canary", json={"build_id": candidate, "weight": 20})
    before = api.get("/api/v1/deployments/web").json()
    if body and "build_id" in body:
        body = {
            **body,
            "build_id": {"B1": candidate, "B2": failed}.get(body["build_id"], body["build_id"]),
        }
    response = api.request(method.upper(), f"/api/v1/deployments/web{path}", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    after = api.get("/api/v1/deployments/web").json()
    assert (weights(after), after["split"], after["variants"]) == (
        weights(before),
        before["split"],
        before["variants"],
    )


def test_unknown_deployment_and_weights_over_100(setup) -> None:  # type: ignore[no-untyped-def]
    api, _, (stable, candidate, _) = setup
    assert api.put("/api/v1/deployments/ghost/routing", json={"split": "sticky"}).status_code == 404
    api.put("/api/v1/deployments/web", json={"build_id": stable})
    api.put("/api/v1/deployments/web/variants/a", json={"build_id": candidate, "weight": 60})
    over = api.put("/api/v1/deployments/web/variants/b", json={"build_id": candidate, "weight": 50})
    assert over.status_code == 409 and "exceed 100" in over.json()["detail"]
    assert "b" not in weights(api.get("/api/v1/deployments/web").json())


def test_the_windows_former_name_is_still_read(setup) -> None:  # type: ignore[no-untyped-def]
    """Clients written before the HPA's term send ``scale_down_window_s``."""
    api, _, (stable, _candidate, _failed) = setup
    former = {"build_id": stable, "max_replicas": 2, "target_inflight": 1, "scale_down_window_s": 7}
    body = api.put("/api/v1/deployments/web", json=former).json()
    assert body["autoscale"] == {
        "target_inflight": 1.0,
        "scale_down_stabilization_window_seconds": 7.0,
    }


def test_a_model_deployment_manifest_needs_kubernetes_mode(setup) -> None:  # type: ignore[no-untyped-def]
    """Locally there is no in-cluster archive URL to put in a manifest: 409 naming the
    mode, not a resource that would point nowhere."""
    api, _, (stable, _candidate, _failed) = setup
    answer = api.get(f"/api/v1/builds/{stable}/model-deployment", params={"name": "web"})
    assert answer.status_code == 409, answer.text
    assert "SHIPWAY_RUNTIME=kubernetes" in answer.json()["detail"]
