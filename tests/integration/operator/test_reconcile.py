"""The operator on the real test cluster: a ModelDeployment becomes Triton workloads
owned by it, Ready once kwok's pods are; updates patch in place; deletion is garbage
collection; a build change starts a candidate; a restarted operator resumes."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
from kubernetes import watch

from shipway_operator.rollout_status import from_resource
from tests.kube.cluster import wait_for

from .conftest import SETTLE, Cluster, operator_running, resource

pytestmark = pytest.mark.integration

B2 = {"id": "b-2", "modelRepository": "s3://models/minilm/b-2"}


def _owner_refs(obj: Any) -> list[tuple[str, str, str, bool]]:
    return [
        (r.kind, r.name, r.uid, bool(r.controller)) for r in obj.metadata.owner_references or []
    ]


@pytest.mark.usefixtures("operator")
def test_create_makes_every_object_owned_and_becomes_ready(cluster: Cluster) -> None:
    gpu = {
        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "resources": {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": 1}},
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    md = cluster.create(resource("minilm", triton=gpu))
    owner = ("ModelDeployment", "minilm", md["metadata"]["uid"], True)

    deployment = wait_for(lambda: cluster.deployment("minilm-stable"), SETTLE, "Deployment")
    service = wait_for(lambda: cluster.service("minilm-stable"), SETTLE, "Service")
    pdb = wait_for(lambda: cluster.pdb("minilm-stable"), SETTLE, "PodDisruptionBudget")
    for obj in (deployment, service, pdb):
        assert _owner_refs(obj) == [owner]
        assert obj.metadata.labels["shipway.io/build"] == "b-1"
        assert obj.metadata.labels["shipway.io/variant"] == "stable"
    assert cluster.hpa("minilm-stable") is None  # fixed replicas: no autoscaler

    assert deployment.spec.replicas == 2
    pod = deployment.spec.template.spec
    (fetch,) = pod.init_containers
    assert fetch.command[-2:] == ["https://files.test/minilm/b-1.tar.gz", "/models"]
    (triton,) = pod.containers
    assert triton.image == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert triton.args[0] == "--model-repository=/models"
    assert triton.readiness_probe.http_get.path == "/v2/health/ready"
    assert triton.liveness_probe.http_get.path == "/v2/health/live"
    assert triton.resources.limits == {"nvidia.com/gpu": "1"}
    assert pod.node_selector == {"type": "kwok"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations or []][:1] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]
    assert {(p.name, p.port) for p in service.spec.ports} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }
    assert service.spec.selector == {
        "shipway.io/deployment": "minilm",
        "shipway.io/variant": "stable",
    }
    assert pdb.spec.max_unavailable == 1

    ready = cluster.wait_ready("minilm")
    assert not ready["metadata"].get("finalizers")  # owner references suffice for cleanup
    status = ready["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["stableBuild"]["id"] == "b-1"
    assert status["weights"] == {"stable": 100, "candidate": 0}
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["reason"] == "ReplicasAvailable"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    pods = cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector="shipway.io/deployment=minilm"
    ).items
    assert len(pods) == 2
    assert all(p.spec.node_name == "kwok-node-0" for p in pods)


@pytest.mark.usefixtures("operator")
def test_autoscaled_resource_leaves_replicas_to_its_hpa(cluster: Cluster) -> None:
    scaling = {
        "minReplicas": 3,
        "maxReplicas": 5,
        "target": {"metric": "cpu", "averageUtilization": 60},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
    }
    cluster.create(resource("scaled", replicas=None, autoscaling=scaling))
    hpa = wait_for(lambda: cluster.hpa("scaled-stable"), SETTLE, "HorizontalPodAutoscaler")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (3, 5)
    assert hpa.spec.scale_target_ref.name == "scaled-stable"
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 120
    # the controller manager's HPA brings the Deployment to its minimum; then Ready
    ready = cluster.wait_ready("scaled", timeout=120)
    assert ready["status"]["readyReplicas"] == 3
    deployment = cluster.deployment("scaled-stable")
    assert deployment is not None and deployment.spec.replicas == 3
    managers = {m.manager for m in deployment.metadata.managed_fields or []}
    assert "shipway-operator" in managers


@pytest.mark.usefixtures("operator")
def test_scale_and_update_patch_in_place(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    first = cluster.wait_ready("minilm")
    uids = cluster.uids("minilm-stable")
    assert len(uids) == 3, uids

    triton = first["spec"]["triton"] | {"image": "nvcr.io/nvidia/tritonserver:24.11-py3"}
    cluster.patch_spec("minilm", {"replicas": 3, "triton": triton})

    def updated() -> bool:
        deployment = cluster.deployment("minilm-stable")
        return (
            deployment is not None
            and deployment.spec.replicas == 3
            and deployment.spec.template.spec.containers[0].image.endswith(":24.11-py3")
        )

    wait_for(updated, SETTLE, "Deployment patched to 3 replicas of the new image")
    ready = cluster.wait_ready("minilm")
    assert ready["metadata"]["generation"] > first["metadata"]["generation"]
    assert ready["status"]["readyReplicas"] == 3
    assert cluster.uids("minilm-stable") == uids  # same objects, patched

    # and down again through spec.replicas (there is no scale subresource)
    cluster.patch_spec("minilm", {"replicas": 1})
    wait_for(
        lambda: (d := cluster.deployment("minilm-stable")) is not None and d.spec.replicas == 1,
        SETTLE,
        "Deployment scaled to 1 through the ModelDeployment's spec.replicas",
    )
    cluster.wait_status(
        "minilm",
        lambda b: (
            (b.get("status") or {}).get("replicas") == 1
            and b["status"].get("readyReplicas") == 1
            and b["status"].get("observedGeneration") == b["metadata"]["generation"]
        ),
        "status of 1 replica",
    )
    assert cluster.wait_ready("minilm")["status"]["readyReplicas"] == 1
    assert cluster.uids("minilm-stable") == uids


@pytest.mark.usefixtures("operator")
def test_delete_garbage_collects_everything(cluster: Cluster) -> None:
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "target": {"metric": "cpu", "averageUtilization": 60},
    }
    cluster.create(resource("doomed", replicas=None, autoscaling=scaling))
    cluster.wait_ready("doomed", timeout=120)
    before = cluster.owned("doomed")
    assert before["HorizontalPodAutoscaler"] == ["doomed-stable"] and before["Pod"]

    cluster.delete("doomed")

    def nothing_left() -> bool:
        return not any(cluster.owned("doomed").values())

    wait_for(nothing_left, SETTLE, "every object of the deleted ModelDeployment collected")


@pytest.mark.usefixtures("operator")
def test_build_change_starts_a_candidate_and_leaves_stable_alone(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    stable = cluster.deployment("minilm-stable")
    assert stable is not None
    stable_uids = cluster.uids("minilm-stable")

    cluster.patch_spec("minilm", {"build": B2})

    def progressing(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("phase") == "Progressing"
        )

    body = cluster.wait_status("minilm", progressing, "ModelDeployment Progressing")
    status = body["status"]
    assert status["stableBuild"]["id"] == "b-1" and status["candidateBuild"]["id"] == "b-2"
    # the rollout loop takes it from here (tests/integration/operator/test_rollout_loop.py);
    # with no metrics configured its analyses are inconclusive: never past the first step
    assert sum(status["weights"].values()) == 100 and status["weights"]["candidate"] <= 10
    rollout = from_resource(status["rollout"])  # the shared controller's status
    assert status["rollout"]["phase"] in ("Initializing", "Progressing")  # Kubernetes style
    assert (rollout.strategy, rollout.candidate_build, rollout.stable_build) == (
        "canary",
        "b-2",
        "b-1",
    )
    progressing_condition = cluster.condition("minilm", "Progressing")
    assert progressing_condition is not None
    assert (progressing_condition["status"], progressing_condition["reason"]) == (
        "True",
        "RolloutStarted",
    )

    candidate = wait_for(lambda: cluster.deployment("minilm-candidate"), SETTLE, "candidate")
    assert candidate.spec.replicas == 1  # at 0 % of traffic: one warm replica
    assert candidate.metadata.labels["shipway.io/build"] == "b-2"
    pod = candidate.spec.template.spec
    assert not pod.init_containers  # s3: Triton reads it itself
    assert pod.containers[0].args[0] == "--model-repository=s3://models/minilm/b-2"
    assert cluster.service("minilm-candidate") is not None
    assert cluster.pdb("minilm-candidate") is not None

    # stable is untouched: same objects, same pod template generation, same build
    after = cluster.deployment("minilm-stable")
    assert after is not None
    assert after.metadata.generation == stable.metadata.generation
    assert after.spec.template.metadata.labels["shipway.io/build"] == "b-1"
    assert cluster.uids("minilm-stable") == stable_uids
    assert cluster.condition("minilm", "Ready")["status"] == "True"  # stable still serves

    # the stable build back in the spec: the candidate's objects go, Ready again
    cluster.patch_spec("minilm", {"build": resource("x")["spec"]["build"]})
    ready = cluster.wait_ready("minilm")
    assert "candidateBuild" not in ready["status"]
    # the record stays, ended by the rollout loop: `shipway rollouts status` shows why
    ended = cluster.wait_status(
        "minilm", lambda b: b["status"]["rollout"].get("finished"), "rollout record ended"
    )
    assert ended["status"]["rollout"]["phase"] == "Failed"
    wait_for(
        lambda: cluster.owned("minilm")["Deployment"] == ["minilm-stable"],
        SETTLE,
        "candidate Deployment pruned",
    )
    assert cluster.uids("minilm-stable") == stable_uids


def test_restarted_operator_resumes_from_status_without_duplicates(
    kube_env: Any, cluster: Cluster
) -> None:
    with operator_running():
        cluster.create(resource("minilm"))
        cluster.wait_ready("minilm")
    stable_uids = cluster.uids("minilm-stable")

    # while no operator runs, Git changes the build
    cluster.patch_spec("minilm", {"build": B2})
    with operator_running():
        body = cluster.wait_status(
            "minilm",
            lambda b: (b.get("status") or {}).get("phase") == "Progressing",
            "the restarted operator starts the rollout",
        )
        wait_for(lambda: cluster.deployment("minilm-candidate"), SETTLE, "candidate Deployment")
    started = body["status"]["rollout"]["createdAt"]
    candidate_uids = cluster.uids("minilm-candidate")

    # a third start with nothing changed: resumes the recorded rollout, creates nothing new
    with operator_running():
        cluster.patch_spec("minilm", {"replicas": 3})  # proves this operator is acting
        wait_for(
            lambda: (d := cluster.deployment("minilm-stable")) is not None and d.spec.replicas == 3,
            SETTLE,
            "stable scaled by the third operator",
        )
        body = cluster.wait_status(
            "minilm",
            lambda b: (
                (b.get("status") or {}).get("observedGeneration") == b["metadata"]["generation"]
            ),
            "status of the latest generation",
        )
    assert body["status"]["rollout"]["createdAt"] == started
    assert body["status"]["candidateBuild"]["id"] == "b-2"
    assert cluster.uids("minilm-stable") == stable_uids
    assert cluster.uids("minilm-candidate") == candidate_uids
    owned = cluster.owned("minilm")
    assert owned["Deployment"] == ["minilm-candidate", "minilm-stable"]
    assert owned["Service"] == ["minilm-candidate", "minilm-stable"]
    assert owned["PodDisruptionBudget"] == ["minilm-candidate", "minilm-stable"]
    assert len(owned["ReplicaSet"]) == 2  # one each: no pod template changed


@pytest.mark.usefixtures("operator")
def test_switching_between_fixed_and_autoscaled_replicas(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    uids = cluster.uids("minilm-stable")

    scaling = {
        "minReplicas": 3,
        "maxReplicas": 4,
        "target": {"metric": "cpu", "averageUtilization": 60},
    }
    cluster.patch_spec("minilm", {"replicas": None, "autoscaling": scaling})
    wait_for(lambda: cluster.hpa("minilm-stable"), SETTLE, "HPA created")
    # the applied Deployment no longer sets replicas: the HPA's count stands
    wait_for(
        lambda: (d := cluster.deployment("minilm-stable")) is not None and d.spec.replicas == 3,
        120,
        "Deployment at the HPA's minimum",
    )
    assert cluster.wait_ready("minilm", timeout=120)["status"]["readyReplicas"] == 3

    cluster.patch_spec("minilm", {"autoscaling": None, "replicas": 2})
    wait_for(lambda: cluster.hpa("minilm-stable") is None, SETTLE, "HPA deleted")
    wait_for(
        lambda: (d := cluster.deployment("minilm-stable")) is not None and d.spec.replicas == 2,
        SETTLE,
        "Deployment back to fixed replicas",
    )
    cluster.wait_ready("minilm")
    after = cluster.uids("minilm-stable")
    assert {k: v for k, v in after.items() if "HorizontalPodAutoscaler" not in k} == {
        k: v for k, v in uids.items() if "HorizontalPodAutoscaler" not in k
    }


@pytest.mark.usefixtures("operator")
def test_turning_autoscaling_on_never_drops_the_running_replicas(cluster: Cluster) -> None:
    cluster.create(resource("minilm", replicas=2))
    cluster.wait_ready("minilm")
    before = cluster.deployment("minilm-stable")
    assert before is not None and before.spec.replicas == 2

    scaling = {
        "minReplicas": 2,
        "maxReplicas": 4,
        "target": {"metric": "cpu", "averageUtilization": 60},
    }
    patched = cluster.patch_spec("minilm", {"replicas": None, "autoscaling": scaling})
    cluster.wait_status(
        "minilm",
        lambda b: (
            (b.get("status") or {}).get("observedGeneration") == patched["metadata"]["generation"]
            and b["status"].get("phase") == "Ready"
        ),
        "Ready with autoscaling",
        timeout=120,
    )
    wait_for(lambda: cluster.hpa("minilm-stable"), SETTLE, "HPA created")
    now = cluster.deployment("minilm-stable")
    assert now is not None

    # every version of the Deployment since the patch, replayed by a watch from the
    # version seen before it, up to the one seen now
    seen: list[int | None] = []
    stream = watch.Watch()
    for event in stream.stream(
        cluster.apps.list_namespaced_deployment,
        cluster.namespace,
        field_selector="metadata.name=minilm-stable",
        resource_version=before.metadata.resource_version,
        timeout_seconds=60,
    ):
        obj = event["object"]
        seen.append(obj.spec.replicas)
        if obj.metadata.resource_version == now.metadata.resource_version:
            stream.stop()
    assert seen and seen[-1] == now.spec.replicas, seen
    assert min(r or 0 for r in seen) >= 2, f"replicas seen since the patch: {seen}"


@pytest.mark.usefixtures("operator")
def test_replicas_the_cluster_refuses_make_it_degraded(cluster: Cluster) -> None:
    quota = {"metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}}
    cluster.core.create_namespaced_resource_quota(cluster.namespace, quota)
    wait_for(
        lambda: (
            cluster.core.read_namespaced_resource_quota("one-pod", cluster.namespace).status.hard
        ),
        SETTLE,
        "quota observed by the controller manager",
    )
    cluster.create(resource("minilm"))  # 2 replicas; the quota admits one pod

    def degraded(body: dict[str, Any]) -> bool:
        return (body.get("status") or {}).get("phase") == "Degraded"

    body = cluster.wait_status("minilm", degraded, "ModelDeployment Degraded")
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "FailedCreate"
    assert conditions["Ready"]["status"] == "False"
    assert body["status"]["readyReplicas"] <= 1

    # the quota lifted: the Deployment recovers, and so does the resource
    cluster.core.delete_namespaced_resource_quota("one-pod", cluster.namespace)
    ready = cluster.wait_ready("minilm", timeout=120)
    assert {c["type"]: c["status"] for c in ready["status"]["conditions"]}["Degraded"] == "False"


@pytest.mark.usefixtures("operator")
def test_printer_columns_show_model_phase_ready_and_weight(
    kube_cluster: Any, cluster: Cluster
) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    table = httpx.get(
        f"{kube_cluster.server}/apis/shipway.io/v1alpha1/namespaces/{cluster.namespace}"
        "/modeldeployments",
        headers={
            "Authorization": f"Bearer {kube_cluster.token}",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
        verify=ssl.create_default_context(cafile=str(kube_cluster.ca_file)),
        timeout=30,
    ).json()
    names = [c["name"] for c in table["columnDefinitions"]]
    (row,) = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    assert cells["Name"] == "minilm"
    assert (cells["Model"], cells["Version"]) == ("minilm", "3")
    assert (cells["Phase"], cells["Ready"], cells["Weight"]) == ("Ready", "True", 0)


def test_the_models_size_limit_setting_reaches_the_pods(
    cluster: Cluster, kube_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHIPWAY_OPERATOR_MODELS_SIZE_LIMIT caps the fetch and sizes its volume."""
    monkeypatch.setenv("SHIPWAY_OPERATOR_MODELS_SIZE_LIMIT", str(3 * 2**30))
    with operator_running():
        cluster.create(resource("capped"))
        deployment = wait_for(lambda: cluster.deployment("capped-stable"), SETTLE, "Deployment")
    pod = deployment.spec.template.spec
    (fetch,) = pod.init_containers
    assert fetch.command[3:5] == ["--max-bytes", str(3 * 2**30)]
    volumes = {v.name: v.empty_dir.size_limit for v in pod.volumes}
    assert volumes["models"] == "3Gi"
