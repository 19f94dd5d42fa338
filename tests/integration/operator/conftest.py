"""The operator against the real test cluster (tests/kube): helpers to run it in-process
with kopf's ``KopfRunner`` and to read what it made through the Python client."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube.cluster import TestCluster, wait_for

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"
ARGS = ["run", "--all-namespaces", "--standalone", "-m", "shipway_operator.handlers"]
SETTLE = 90.0  # seconds for anything the cluster's controllers and kwok do


@pytest.fixture
def kube_env(kube_cluster: TestCluster, monkeypatch: pytest.MonkeyPatch) -> TestCluster:
    """The operator finds the cluster the way it would outside one: ``KUBECONFIG``."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHIPWAY_OPERATOR_FETCH_IMAGE", "registry.test/shipway-operator:test")
    return kube_cluster


@contextmanager
def operator_running() -> Iterator[KopfRunner]:
    """The operator in this process, cluster-wide; on exit it must have stopped cleanly."""
    with KopfRunner(ARGS, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


@pytest.fixture
def operator(kube_env: TestCluster) -> Iterator[KopfRunner]:
    with operator_running() as runner:
        yield runner


def resource(name: str, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment on the fake node: an http archive (fetched by an init container),
    fixed replicas; ``spec`` replaces top-level spec keys (None removes one)."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "minilm", "version": "3"},
            "build": {
                "id": "b-1",
                "modelRepository": "https://files.test/minilm/b-1.tar.gz",
            },
            "triton": {
                "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                "nodeSelector": {"type": "kwok"},
            },
            "replicas": 2,
        },
    }
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = copy.deepcopy(value)
    return body


class Cluster:
    """Reads and writes of one namespace, by the Python client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.policy = client.PolicyV1Api(api)

    # -- the custom resource --

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        status = self.get(name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == kind), None)

    def wait_status(self, name: str, check: Any, what: str, timeout: float = SETTLE) -> dict:
        """The resource once ``check(body)`` holds (its status, spec and generation); on
        timeout the assertion shows the last generation and status seen."""
        seen: list[dict[str, Any]] = []

        def holds() -> bool:
            seen[:] = [self.get(name)]
            return bool(check(seen[0]))

        try:
            wait_for(holds, timeout, what)
        except AssertionError as exc:
            last = seen[0] if seen else {}
            generation = last.get("metadata", {}).get("generation")
            raise AssertionError(
                f"{exc}; generation {generation}, status {last.get('status')}"
            ) from None
        return seen[0]

    def wait_ready(self, name: str, timeout: float = SETTLE) -> dict[str, Any]:
        def ready(body: dict[str, Any]) -> bool:
            status = body.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return (
                status.get("observedGeneration") == body["metadata"]["generation"]
                and conditions.get("Ready") == "True"
                and status.get("phase") == "Ready"
            )

        return self.wait_status(name, ready, f"ModelDeployment {name} Ready", timeout)

    # -- what the operator made --

    def deployment(self, name: str) -> client.V1Deployment | None:
        return _or_none(lambda: self.apps.read_namespaced_deployment(name, self.namespace))

    def service(self, name: str) -> client.V1Service | None:
        return _or_none(lambda: self.core.read_namespaced_service(name, self.namespace))

    def hpa(self, name: str) -> client.V2HorizontalPodAutoscaler | None:
        return _or_none(
            lambda: self.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, self.namespace)
        )

    def pdb(self, name: str) -> client.V1PodDisruptionBudget | None:
        return _or_none(
            lambda: self.policy.read_namespaced_pod_disruption_budget(name, self.namespace)
        )

    def owned(self, deployment: str) -> dict[str, list[str]]:
        """Names per kind of every object labelled as the deployment's (pods included)."""
        selector = f"shipway.io/deployment={deployment}"
        ns = self.namespace
        return {
            "Deployment": _names(self.apps.list_namespaced_deployment(ns, label_selector=selector)),
            "ReplicaSet": _names(
                self.apps.list_namespaced_replica_set(ns, label_selector=selector)
            ),
            "Service": _names(self.core.list_namespaced_service(ns, label_selector=selector)),
            "HorizontalPodAutoscaler": _names(
                self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                    ns, label_selector=selector
                )
            ),
            "PodDisruptionBudget": _names(
                self.policy.list_namespaced_pod_disruption_budget(ns, label_selector=selector)
            ),
            "Pod": _names(self.core.list_namespaced_pod(ns, label_selector=selector)),
        }

    def uids(self, *names: str) -> dict[str, str]:
        """uid per "<kind>/<name>" of the Deployment, Service, HPA and PDB of each name."""
        found: dict[str, str] = {}
        for name in names:
            for kind, read in (
                ("Deployment", self.deployment),
                ("Service", self.service),
                ("HorizontalPodAutoscaler", self.hpa),
                ("PodDisruptionBudget", self.pdb),
            ):
                obj = read(name)
                if obj is not None:
                    found[f"{kind}/{name}"] = obj.metadata.uid
        return found


@pytest.fixture
def cluster(kube_api: client.ApiClient, kube_namespace: str) -> Cluster:
    return Cluster(kube_api, kube_namespace)


def _or_none(read: Any) -> Any:
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _names(listing: Any) -> list[str]:
    return sorted(item.metadata.name for item in listing.items)
