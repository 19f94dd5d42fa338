"""pipelines/argocd on the real test cluster: the ModelDeployments kept in Git are accepted
by the API server (server-side dry run against the CRD), and the Argo CD health check
(pipelines/argocd/modeldeployment-health.lua, in Lua 5.1 as Argo CD runs it) gives the
health Argo CD would show for resources whose status the operator itself wrote: its
reconcile and its rollout loop (``tests/integration/operator/test_rollout_loop.py``'s
``Loop``, metrics from the in-memory port) against the API server, through a healthy
stable, a generation not observed yet, a rollout progressing, paused, waiting for
capacity, rolled back, and promoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from shipway.rollout.testing import FakeMetrics
from tests.integration.operator.conftest import (
    GROUP,
    SETTLE,
    VERSION,
    Cluster,
    resource,
)
from tests.integration.operator.test_rollout_loop import (
    B2,
    CANARY,
    Loop,
    _annotate,
    _drive,
    _record_of,
    _serve,
    _start,
    _wait_ready,
)
from tests.kube.cluster import wait_for
from tests.support.argocd import Health, health

pytestmark = pytest.mark.integration

PIPELINES = Path(__file__).resolve().parents[3] / "pipelines"


@pytest.fixture
def cluster(kube_api: client.ApiClient, kube_namespace: str) -> Cluster:
    return Cluster(kube_api, kube_namespace)


def _health(cluster: Cluster, name: str = "minilm") -> Health:
    return health(cluster.get(name))


def test_every_model_deployment_under_pipelines_is_accepted_by_the_api_server(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    found = sorted(PIPELINES.rglob("*.yaml"))
    bodies = [
        (path, body)
        for path in found
        for body in yaml.safe_load_all(path.read_text())
        if isinstance(body, dict) and body.get("kind") == "ModelDeployment"
    ]
    assert [p.name for p, _ in bodies] == ["minilm.yaml"]
    dynamic = DynamicClient(kube_api)
    api = dynamic.resources.get(api_version=f"{GROUP}/{VERSION}", kind="ModelDeployment")
    refused = []
    for path, body in bodies:
        try:
            dynamic.server_side_apply(
                api,
                body=body,
                namespace=kube_namespace,
                field_manager="argocd-controller",
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
        except ApiException as exc:
            message = json.loads(exc.body).get("message", exc.body) if exc.body else exc
            refused.append(f"{path.relative_to(PIPELINES)}: {message}")
    assert refused == []


def test_the_dry_run_does_refuse_a_bad_model_deployment(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """The check above can fail: the same call refuses what the CRD does not allow."""
    body = yaml.safe_load((PIPELINES / "argocd" / "models" / "minilm.yaml").read_text())
    body["spec"]["autoscaling"]["maxReplicas"] = -1
    dynamic = DynamicClient(kube_api)
    api = dynamic.resources.get(api_version=f"{GROUP}/{VERSION}", kind="ModelDeployment")
    with pytest.raises(ApiException) as refused:
        dynamic.server_side_apply(
            api,
            body=body,
            namespace=kube_namespace,
            field_manager="argocd-controller",
            dry_run="All",
            query_params=[("fieldValidation", "Strict")],
        )
    assert refused.value.status in (400, 422), refused.value.body
    assert "spec.autoscaling.maxReplicas" in refused.value.body


def test_health_through_a_rollout_that_is_paused_then_rolled_back(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    cluster.create(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "minilm"},
            "spec": resource("minilm", rollout=CANARY)["spec"],
        }
    )
    # created, the operator not there yet: no status
    seen = _health(cluster)
    assert seen.status == "Progressing" and "reconcile generation 1" in seen.message
    _wait_ready(cluster, loop, "stable ready")
    seen = _health(cluster)
    assert seen.status == "Healthy", seen
    assert seen.message.startswith("ReplicasAvailable: stable build b-1")

    # a commit changes the spec: until the operator has seen it, not Healthy
    cluster.patch_spec("minilm", {"replicas": 3})
    seen = _health(cluster)
    assert seen.status == "Progressing", seen
    assert "generation 2 not observed yet (status is of generation 1)" in seen.message
    _wait_ready(cluster, loop, "ready with 3 replicas")
    assert _health(cluster).status == "Healthy"

    # a new build: the rollout starts, then takes its first step
    cluster.patch_spec("minilm", {"build": B2})
    loop.apply("minilm")
    seen = _health(cluster)
    assert seen.status == "Progressing", seen
    assert seen.message.startswith("Rollout of build b-2")
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: ((b.get("status") or {}).get("weights") or {}).get("candidate") == 20,
        "the canary at 20 %",
    )
    seen = _health(cluster)
    assert (seen.status, seen.message) == (
        "Progressing",
        "Rollout of build b-2 (Progressing) at 20 %",
    )

    # paused by its annotation (kubectl annotate, or a commit): Suspended
    _annotate(cluster, "minilm", {"shipway.io/paused": "true"})

    def paused() -> bool:
        loop.tick("minilm")
        return _record_of(cluster.get("minilm"))["phase"] == "Paused"

    wait_for(paused, SETTLE, "the rollout paused")
    seen = _health(cluster)
    assert seen.status == "Suspended", seen
    assert seen.message == "Rollout of build b-2 paused at 20 % (annotation shipway.io/paused)"

    # resumed, then failing its analyses: rolled back, Degraded until Git names another build
    _annotate(cluster, "minilm", {"shipway.io/paused": None})
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics, errors=0.3),
        lambda b: bool(_record_of(b).get("finished")),
        "the canary rolled back",
    )
    body = cluster.get("minilm")
    assert body["status"]["rollout"]["phase"] == "RolledBack"
    seen = health(body)
    assert seen.status == "Degraded", seen
    assert seen.message.startswith("RolloutRolledBack: spec.build b-2 was not promoted")
    loop.apply("minilm")  # the operator's resync changes nothing of that
    assert _health(cluster).status == "Degraded"


def test_health_of_a_rollout_waiting_for_capacity(
    cluster: Cluster, kube_api: client.ApiClient
) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    canary = {**CANARY, "canary": {**CANARY["canary"], "stepWeights": [50, 100]}}
    # 4 stable replicas and the candidate's warm one fill the namespace's quota: at 50 %
    # the candidate needs 2, and its second pod cannot be made, so the weight waits
    client.CoreV1Api(kube_api).create_namespaced_resource_quota(
        cluster.namespace, {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "5"}}}
    )
    _start(cluster, loop, rollout=canary, replicas=4)
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: _ahead(b.get("status") or {}),
        "the candidate sized for 50 % before it takes it",
    )
    body = cluster.get("minilm")
    assert body["status"]["weights"]["candidate"] == 0
    seen = health(body)
    assert seen.status == "Progressing", seen
    assert seen.message == (
        "Rollout of build b-2 at 0 %: candidate replicas being added for 50 % before it takes more"
    )


def test_health_of_a_promoted_rollout(cluster: Cluster, kube_api: client.ApiClient) -> None:
    metrics = FakeMetrics()
    loop = Loop(kube_api, cluster.namespace, metrics)
    _start(cluster, loop)
    assert _health(cluster).status == "Progressing"
    _drive(
        loop,
        cluster,
        "minilm",
        _serve(metrics),
        lambda b: bool(_record_of(b).get("finished")),
        "the canary promoted",
    )
    assert cluster.get("minilm")["status"]["rollout"]["phase"] == "Succeeded"
    _wait_ready(cluster, loop, "ready on the promoted build")
    seen = _health(cluster)
    assert seen.status == "Healthy", seen
    assert seen.message.startswith("ReplicasAvailable: stable build b-2")


def _ahead(status: dict[str, Any]) -> bool:
    """The candidate sized for more traffic than it has (``status.capacity`` ahead of
    ``status.weights``): the rollout waits for its replicas."""
    capacity = int((status.get("capacity") or {}).get("candidate") or 0)
    return capacity > int((status.get("weights") or {}).get("candidate") or 0)
