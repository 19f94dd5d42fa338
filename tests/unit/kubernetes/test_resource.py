"""Deployment requests to ModelDeployment bodies and resources back to the API's view:
pure, no cluster. The bodies also pass the operator's own spec parser (the API server's
verdict on them is in tests/integration/kubernetes/test_control_plane.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from shipway.kubernetes.resource import (
    ANNOTATION_TRITON_MODEL,
    API_VERSION,
    KIND,
    DeploymentRequest,
    Pod,
    Scaling,
    deployment_view,
    model_deployment,
)
from shipway_operator.spec import parse_spec

SHA = "ab" * 32


def request(**changes: Any) -> DeploymentRequest:
    fields: dict[str, Any] = {
        "name": "web",
        "model": "doubler",
        "version": 3,
        "build_id": "b1c2d3",
        "archive_url": "http://api.test/api/v1/builds/b1c2d3/model-repository.tar.gz?signature=x",
        "archive_sha256": SHA,
        "triton_model_name": "doubler-b1c2d3",
    }
    return DeploymentRequest(**(fields | changes))


def test_a_new_deployment_is_one_fixed_replica_of_the_build() -> None:
    body = model_deployment(request())
    assert (body["apiVersion"], body["kind"]) == (API_VERSION, KIND)
    assert body["metadata"]["name"] == "web"
    assert body["metadata"]["annotations"] == {ANNOTATION_TRITON_MODEL: "doubler-b1c2d3"}
    assert body["spec"] == {
        "model": {"name": "doubler", "version": "3"},
        "build": {
            "id": "b1c2d3",
            "modelRepository": request().archive_url,
            "sha256": SHA,
            "tritonModelName": "doubler-b1c2d3",
            "modelVersion": 3,
        },
        "replicas": 1,
    }
    spec = parse_spec(body["spec"])
    assert spec.build.fetched and spec.replicas == 1 and spec.autoscaling is None


def test_image_and_node_selector_from_settings_go_to_triton() -> None:
    body = model_deployment(
        request(triton_image="registry.test/triton:1", node_selector={"type": "kwok"})
    )
    assert body["spec"]["triton"] == {
        "image": "registry.test/triton:1",
        "nodeSelector": {"type": "kwok"},
    }
    assert parse_spec(body["spec"]).triton.node_selector == {"type": "kwok"}


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        (Scaling(3), {"replicas": 3}),
        (Scaling(2, 5), {"replicas": 2}),  # a range without a target: fixed, as locally
        (Scaling(2, 2, 4.0), {"replicas": 2}),  # nothing to scale between
    ],
)
def test_fixed_replicas(scaling: Scaling, expected: dict[str, int]) -> None:
    spec = model_deployment(request(scaling=scaling))["spec"]
    assert {k: spec[k] for k in ("replicas", "autoscaling") if k in spec} == expected


def test_target_inflight_is_an_hpa_on_a_per_pod_metric() -> None:
    body = model_deployment(request(scaling=Scaling(1, 4, 2.5, 45, metric="inflight")))
    assert "replicas" not in body["spec"]
    assert body["spec"]["autoscaling"] == {
        "minReplicas": 1,
        "maxReplicas": 4,
        "target": {"metric": "pods", "metricName": "inflight", "averageValue": "2500m"},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 45}},
    }
    spec = parse_spec(body["spec"])
    assert spec.autoscaling is not None and spec.autoscaling.max_replicas == 4
    whole = model_deployment(request(scaling=Scaling(1, 4, 2)))["spec"]["autoscaling"]
    assert whole["target"]["averageValue"] == 2
    assert whole["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30


def test_a_redeploy_without_scale_settings_keeps_the_current_scaling() -> None:
    scaled = model_deployment(request(scaling=Scaling(1, 4, 2)))
    again = model_deployment(request(build_id="b2"), current=scaled)
    assert again["spec"]["autoscaling"] == scaled["spec"]["autoscaling"]
    assert "replicas" not in again["spec"]
    assert again["spec"]["build"]["id"] == "b2"
    fixed = model_deployment(request(), current=model_deployment(request(scaling=Scaling(3))))
    assert fixed["spec"]["replicas"] == 3
    # naming a scale replaces it
    replaced = model_deployment(request(scaling=Scaling(2)), current=scaled)
    assert replaced["spec"]["replicas"] == 2 and "autoscaling" not in replaced["spec"]


def resource(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict:  # type: ignore[type-arg]
    body = model_deployment(request())
    body["metadata"] |= {
        "namespace": "ns1",
        "generation": generation,
        "creationTimestamp": "2026-11-30T07:00:00Z",
        "managedFields": [
            {"manager": "shipway-api", "time": "2026-11-30T07:01:00Z"},
            {"manager": "shipway-operator", "time": "2026-11-30T07:02:30Z"},
        ],
    }
    body["spec"] |= spec
    if status is not None:
        body["status"] = status
    return copy.deepcopy(body)


READY = {
    "phase": "Ready",
    "observedGeneration": 1,
    "stableBuild": {"id": "b1c2d3"},
    "weights": {"stable": 100, "candidate": 0},
    "replicas": 2,
    "readyReplicas": 2,
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "ReplicasAvailable", "message": "2/2"},
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""},
    ],
}


def test_view_of_a_ready_resource_and_its_pods() -> None:
    pods = [
        Pod("stable", "b1c2d3", "10.244.0.7", True),
        Pod("stable", "b1c2d3", "10.244.0.6", False),
        Pod("stable", "b0", "10.244.0.5", True, deleting=True),
    ]
    view = deployment_view(resource(READY, replicas=2), pods)
    assert (view.name, view.namespace, view.build_id) == ("web", "ns1", "b1c2d3")
    assert (view.status, view.message) == ("ready", None)
    assert (view.split, view.sticky_header, view.autoscale) == ("weighted", "x-shipway-key", {})
    assert [
        (v.name, v.build_id, v.weight, v.min_replicas, v.desired_replicas) for v in view.variants
    ] == [("stable", "b1c2d3", 100, 2, 2)]
    assert [(r.url, r.state, r.build_id) for r in view.replicas] == [
        ("http://10.244.0.5:8000", "draining", "b0"),
        ("http://10.244.0.6:8000", "starting", "b1c2d3"),
        ("http://10.244.0.7:8000", "ready", "b1c2d3"),
    ]
    assert view.infer_url == "http://web-stable.ns1.svc:8000/v2/models/doubler-b1c2d3/infer"
    assert view.updated_at == datetime(2026, 11, 30, 7, 2, 30, tzinfo=UTC)


def test_a_status_of_an_older_generation_is_pending() -> None:
    view = deployment_view(resource(READY, generation=2), [])
    assert (view.status, view.message) == ("pending", None)
    assert deployment_view(resource(None), []).status == "pending"


def test_degraded_and_candidate() -> None:
    status = READY | {
        "phase": "Degraded",
        "candidateBuild": {"id": "b9"},
        "weights": {"stable": 90, "candidate": 10},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasAvailable", "message": ""},
            {
                "type": "Degraded",
                "status": "True",
                "reason": "ProgressDeadlineExceeded",
                "message": "web-stable: no progress",
            },
        ],
    }
    view = deployment_view(resource(status), [])
    assert view.status == "degraded"
    assert view.message == "ProgressDeadlineExceeded: web-stable: no progress"
    assert [(v.name, v.build_id, v.weight) for v in view.variants] == [
        ("stable", "b1c2d3", 90),
        ("candidate", "b9", 10),
    ]


def test_view_of_an_autoscaled_resource_gives_local_autoscale_fields() -> None:
    scaled = model_deployment(request(scaling=Scaling(1, 4, 2.5, 45)))
    body = resource(READY | {"replicas": 3})
    body["spec"] = scaled["spec"]
    view = deployment_view(body, [])
    assert view.autoscale == {
        "target_inflight": 2.5,
        "scale_down_stabilization_window_seconds": 45.0,
    }
    (stable,) = view.variants
    assert (stable.min_replicas, stable.max_replicas, stable.desired_replicas) == (1, 4, 3)
