"""What the operator cannot apply is said in status, never half done: an object the API
server refuses (ObjectRefused), an object of the same name that is someone else's
(NameConflict). Each also posts a Warning Event on the ModelDeployment."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube.cluster import wait_for

from .conftest import SETTLE, Cluster, resource

pytestmark = pytest.mark.integration

# passes the CRD (label values are not patterned there) but not the API server's Pod
# validation: a nodeSelector value must be a label value
BAD_SELECTOR = {"type": "kwok", "zone": "bad value!"}


def _triton(**extra: Any) -> dict[str, Any]:
    return {
        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "nodeSelector": {"type": "kwok"},
        **extra,
    }


def _degraded_for(reason: str) -> Any:
    def check(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        degraded = conditions.get("Degraded") or {}
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and degraded.get("status") == "True"
            and degraded.get("reason") == reason
        )

    return check


def _warnings(cluster: Cluster, name: str) -> list[Any]:
    events = cluster.core.list_namespaced_event(
        cluster.namespace, field_selector=f"involvedObject.name={name},type=Warning"
    ).items
    return [e for e in events if e.involved_object.kind == "ModelDeployment"]


@pytest.mark.usefixtures("operator")
def test_a_refused_object_on_create_fails_the_resource_and_applies_nothing(
    cluster: Cluster,
) -> None:
    cluster.create(resource("minilm", triton=_triton(nodeSelector=BAD_SELECTOR)))
    body = cluster.wait_status("minilm", _degraded_for("ObjectRefused"), "ObjectRefused")
    status = body["status"]
    assert status["phase"] == "Failed"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "Deployment minilm-stable" in degraded["message"]
    assert "nodeSelector" in degraded["message"]
    assert len(degraded["message"]) <= 1024
    # nothing half-applied: the Service and PDB were not made without their Deployment
    assert cluster.owned("minilm") == {
        "Deployment": [],
        "ReplicaSet": [],
        "Service": [],
        "HorizontalPodAutoscaler": [],
        "PodDisruptionBudget": [],
        "Pod": [],
    }


@pytest.mark.usefixtures("operator")
def test_a_refused_update_leaves_the_serving_generation_and_says_degraded(
    cluster: Cluster,
) -> None:
    cluster.create(resource("minilm", triton=_triton()))
    cluster.wait_ready("minilm")
    patched = cluster.patch_spec("minilm", {"triton": _triton(nodeSelector=BAD_SELECTOR)})
    body = cluster.wait_status("minilm", _degraded_for("ObjectRefused"), "ObjectRefused")
    assert body["metadata"]["generation"] == patched["metadata"]["generation"]
    status = body["status"]
    assert status["phase"] == "Degraded"  # the previous generation still serves
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "nodeSelector" in degraded["message"]
    deployment = cluster.deployment("minilm-stable")
    assert deployment is not None
    assert deployment.spec.template.spec.node_selector == {"type": "kwok"}
    events = wait_for(lambda: _warnings(cluster, "minilm"), SETTLE, "a Warning Event")
    assert any(
        e.reason == "ObjectRefused" and "nodeSelector" in (e.message or "") for e in events
    ), [(e.reason, e.message) for e in events]

    # fixed (a merge patch: null removes the bad key): it serves as specified again
    cluster.patch_spec("minilm", {"triton": {"nodeSelector": {"zone": None}}})
    ready = cluster.wait_ready("minilm")
    conditions = {c["type"]: c for c in ready["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "False"


@pytest.mark.usefixtures("operator")
def test_a_service_of_the_same_name_is_left_alone(cluster: Cluster) -> None:
    mine = {
        "metadata": {"name": "api-stable"},
        "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]},
    }
    cluster.core.create_namespaced_service(cluster.namespace, mine)
    cluster.create(resource("api"))
    body = cluster.wait_status("api", _degraded_for("NameConflict"), "NameConflict")
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert "Service api-stable" in degraded["message"]
    assert body["status"]["phase"] == "Failed"
    service = cluster.service("api-stable")
    assert service.spec.selector == {"app": "mine"}
    assert not service.metadata.owner_references
    assert cluster.deployment("api-stable") is None  # nothing half-applied
    events = wait_for(lambda: _warnings(cluster, "api"), SETTLE, "a Warning Event")
    assert any(e.reason == "NameConflict" for e in events)

    cluster.delete("api")
    wait_for(
        lambda: (
            not cluster.custom.list_namespaced_custom_object(
                "shipway.io", "v1alpha1", cluster.namespace, "modeldeployments"
            )["items"]
        ),
        SETTLE,
        "ModelDeployment gone",
    )
    assert cluster.service("api-stable") is not None


@pytest.mark.usefixtures("operator")
def test_a_deployment_of_the_same_name_is_left_alone(cluster: Cluster) -> None:
    labels = {"app": "mine"}
    mine = {
        "metadata": {"name": "api-stable"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.test/mine:1"}],
                    "nodeSelector": {"type": "kwok"},
                },
            },
        },
    }
    cluster.apps.create_namespaced_deployment(cluster.namespace, mine)
    cluster.create(resource("api"))
    body = cluster.wait_status("api", _degraded_for("NameConflict"), "NameConflict")
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert "Deployment api-stable" in degraded["message"]
    deployment = cluster.deployment("api-stable")
    assert deployment.spec.selector.match_labels == labels
    assert deployment.spec.template.spec.containers[0].image == "registry.test/mine:1"
    assert not deployment.metadata.owner_references
    assert cluster.service("api-stable") is None


@pytest.mark.usefixtures("operator")
def test_unschedulable_pods_say_why_in_the_status(cluster: Cluster) -> None:
    nowhere = {"type": "kwok", "shipway.test/zone": "nowhere"}  # no node has this label
    cluster.create(resource("minilm", triton=_triton(nodeSelector=nowhere)))

    def says_why(body: dict[str, Any]) -> bool:
        conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
        ready = conditions.get("Ready") or {}
        return ready.get("status") == "False" and "node affinity/selector" in ready.get(
            "message", ""
        )

    body = cluster.wait_status("minilm", says_why, "Ready=False naming the scheduler's message")
    status = body["status"]
    assert status["phase"] == "Pending"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert "not scheduled: 0/" in conditions["Ready"]["message"]
    assert "node affinity/selector" in conditions["Degraded"]["message"]
    assert conditions["Degraded"]["message"] != "serving as specified"
