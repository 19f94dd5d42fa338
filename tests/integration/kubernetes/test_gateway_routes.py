"""The in-cluster gateway's routes on the real test cluster: ModelDeployments, the real
EndpointSlice controller's slices of each variant's Service, kwok's pods, watched by
``KubernetesRouteSource``; and the real gateway served from them (``shipway serve gateway``
with ``SHIPWAY_RUNTIME=kubernetes``, and in this process for its readiness).

The variant objects are plain Deployments and Services labelled as the operator labels its
own (``shipway.io/deployment``, ``shipway.io/variant``, ``app.kubernetes.io/managed-by``)
with the contract's pod annotations, so a test controls them (scale, delete); status is
written as the rollout loop writes it. One test routes what the operator's own reconcile
makes, so the two agree.
kwok's pod IPs answer nothing: this proves routes, not traffic.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from shipway.gateway.kube_source import KubernetesRouteSource, RoutesNotSynced
from shipway.gateway.routing import DeploymentRoute, RoutingTable
from shipway.settings import Settings
from shipway_operator import reconcile
from shipway_operator.kube import Kube
from tests.kube.cluster import TestCluster, wait_for
from tests.support.gateway import running_gateway
from tests.support.processes import shipway_process
from tests.support.services import free_port

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"
MANAGED_BY = {"app.kubernetes.io/managed-by": "shipway-operator"}
SETTLE = 60.0  # seconds for the cluster's controllers, kwok and the watch


def md(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "fraud", "version": "3"},
            "build": {"id": "b-1", "modelRepository": "s3://models/fraud/b-1"},
            "triton": {"nodeSelector": {"type": "kwok"}},
            "replicas": 1,
        },
    }


class Objects:
    """Writes and reads of one namespace, by the Python client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    def create_md(self, name: str, **status: Any) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, md(name)
        )
        if status:
            self.status(name, **status)

    def status(self, name: str, **status: Any) -> None:
        """A merge patch of the status subresource (None removes a field)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )

    def delete_md(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def variant(
        self,
        name: str,
        variant: str,
        replicas: int,
        model: str,
        version: str,
        node_selector: dict[str, str] | None = None,
    ) -> None:
        """A Deployment and Service as the operator names and labels its own."""
        selector = {"shipway.io/deployment": name, "shipway.io/variant": variant}
        labels = {**selector, **MANAGED_BY, "shipway.io/build": model}
        metadata = {"name": f"{name}-{variant}", "labels": labels}
        self.apps.create_namespaced_deployment(
            self.namespace,
            {
                "metadata": metadata,
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {
                            "labels": labels,
                            "annotations": {
                                "shipway.io/triton-model": model,
                                "shipway.io/model-version": version,
                            },
                        },
                        "spec": {
                            "nodeSelector": node_selector or {"type": "kwok"},
                            "containers": [
                                {
                                    "name": "triton",
                                    "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                                    "ports": [
                                        {"name": "http", "containerPort": 8000},
                                        {"name": "grpc", "containerPort": 8001},
                                        {"name": "metrics", "containerPort": 8002},
                                    ],
                                }
                            ],
                        },
                    },
                },
            },
        )
        self.core.create_namespaced_service(
            self.namespace,
            {
                "metadata": metadata,
                "spec": {
                    "selector": selector,
                    "ports": [
                        {"name": "http", "port": 8000, "targetPort": "http"},
                        {"name": "grpc", "port": 8001, "targetPort": "grpc"},
                        {"name": "metrics", "port": 8002, "targetPort": "metrics"},
                    ],
                },
            },
        )

    def scale(self, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            name, self.namespace, {"spec": {"replicas": replicas}}
        )

    def pods(self, name: str, variant: str) -> list[client.V1Pod]:
        selector = f"shipway.io/deployment={name},shipway.io/variant={variant}"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def ready_urls(self, name: str, variant: str) -> list[str]:
        """``http://<pod IP>:8000`` of the variant's Ready pods not being deleted."""
        return sorted(
            f"http://{p.status.pod_ip}:8000"
            for p in self.pods(name, variant)
            if p.status.pod_ip
            and p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )


@pytest.fixture
def objects(kube_api: client.ApiClient, kube_namespace: str) -> Objects:
    return Objects(kube_api, kube_namespace)


@contextmanager
def watching(api: client.ApiClient, namespace: str) -> Iterator[KubernetesRouteSource]:
    source = KubernetesRouteSource(api, namespace)
    source.start()
    try:
        assert source.wait_synced(30), "the route source did not list within 30 s"
        yield source
    finally:
        source.stop()
    assert not watch_threads(), "route watch threads outlived stop()"


def watch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("shipway-routes-")]


def route(source: KubernetesRouteSource, name: str) -> DeploymentRoute | None:
    return source.table().get(name)


def shape(source: KubernetesRouteSource, name: str) -> list[tuple[Any, ...]] | None:
    """Per variant: name, weight, shadow share, and its replicas' (url, model, version)."""
    found = route(source, name)
    if found is None:
        return None
    return [
        (
            v.name,
            v.weight,
            v.shadow_share,
            [(r.url, r.triton_model_name, r.version) for r in v.replicas],
        )
        for v in found.variants
    ]


def converge(source: KubernetesRouteSource, name: str, expected: Any, what: str) -> None:
    """Wait until the table's ``shape`` of ``name`` equals ``expected()`` (re-read each
    time: pods come and go), with a replica in every variant that expects one."""
    wait_for(
        lambda: (want := expected()) == shape(source, name) and want,
        SETTLE,
        f"{what} (table {shape(source, name)}, cluster {expected()})",
    )


def test_the_operators_objects_are_routed(objects: Objects, kube_api: client.ApiClient) -> None:
    """What ``shipway_operator.reconcile`` makes: its Service's slices carry its managed-by
    label (the watch's selector), its pods the build's model name and version."""
    body = md("fraud")
    body["spec"]["build"].update(tritonModelName="fraud_b1", modelVersion=3)
    body["spec"]["replicas"] = 2
    created = objects.custom.create_namespaced_custom_object(
        GROUP, VERSION, objects.namespace, PLURAL, body
    )
    reconcile.reconcile(Kube(kube_api), created, "registry.test/shipway-operator:test", 5)
    with watching(kube_api, objects.namespace) as source:
        converge(
            source,
            "fraud",
            lambda: (
                [("stable", 100, 0.0, [(u, "fraud_b1", 3) for u in urls])]
                if len(urls := objects.ready_urls("fraud", "stable")) == 2
                else None
            ),
            "the operator's two stable replicas",
        )


def test_routes_follow_the_cluster(objects: Objects, kube_api: client.ApiClient) -> None:
    objects.create_md(
        "fraud",
        stableBuild={"id": "b-1", "modelRepository": "s3://m/b-1", "tritonModelName": "fraud_b1"},
        weights={"stable": 100, "candidate": 0},
    )
    objects.variant("fraud", "stable", 2, "fraud_b1", "3")

    def stable_replicas() -> list[tuple[str, str, int]]:
        return [(u, "fraud_b1", 3) for u in objects.ready_urls("fraud", "stable")]

    with watching(kube_api, objects.namespace) as source:
        converge(
            source,
            "fraud",
            lambda: [("stable", 100, 0.0, urls)] if len(urls := stable_replicas()) == 2 else None,
            "two ready stable replicas in the table",
        )
        # the EndpointSlice controller copies the Service's managed-by label: the watch
        # selects only the operator's slices
        slices = client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice(
            objects.namespace, label_selector="kubernetes.io/service-name=fraud-stable"
        )
        assert all(s.metadata.labels.get("app.kubernetes.io/managed-by") for s in slices.items)

        # a canary: its objects, then the rollout loop's status
        objects.variant("fraud", "candidate", 1, "fraud_b2", "4")
        objects.status(
            "fraud",
            candidateBuild={"id": "b-2", "modelRepository": "s3://m/b-2"},
            weights={"stable": 90, "candidate": 10},
            routing={"candidateVariant": "canary", "split": "weighted", "shadowShare": 0},
        )

        def with_candidate(name: str, weights: tuple[int, int], share: float = 0.0) -> Any:
            urls = objects.ready_urls("fraud", "candidate")
            if len(stable := stable_replicas()) != 2 or len(urls) != 1:
                return None
            return [
                ("stable", weights[0], 0.0, stable),
                (name, weights[1], share, [(urls[0], "fraud_b2", 4)]),
            ]

        converge(source, "fraud", lambda: with_candidate("canary", (90, 10)), "canary at 10 %")
        assert route(source, "fraud").sticky is False  # type: ignore[union-attr]

        # an experiment: the candidate is the challenger, split by sticky key
        objects.status(
            "fraud",
            weights={"stable": 50, "candidate": 50},
            routing={"candidateVariant": "challenger", "split": "sticky"},
        )
        converge(source, "fraud", lambda: with_candidate("challenger", (50, 50)), "experiment")
        assert route(source, "fraud").sticky is True  # type: ignore[union-attr]

        # a shadow: no live share, mirrored a quarter of the time
        objects.status(
            "fraud",
            weights={"stable": 100, "candidate": 0},
            routing={"candidateVariant": "canary", "split": "weighted", "shadowShare": 0.25},
        )
        converge(source, "fraud", lambda: with_candidate("canary", (100, 0), 0.25), "shadow")
        found = route(source, "fraud")
        assert found is not None and [v.name for v in found.shadows()] == ["canary"]

        # a deleted pod leaves the table (its replacement comes in)
        gone = objects.pods("fraud", "stable")[0]
        objects.core.delete_namespaced_pod(gone.metadata.name, objects.namespace)

        def replaced() -> Any:
            names = {p.metadata.name for p in objects.pods("fraud", "stable")}
            return None if gone.metadata.name in names else with_candidate("canary", (100, 0), 0.25)

        converge(source, "fraud", replaced, "the deleted pod out, its replacement in")

        # stable scaled to zero: no replica, so only the candidate could serve
        objects.scale("fraud-stable", 0)
        converge(
            source,
            "fraud",
            lambda: (
                None
                if objects.pods("fraud", "stable")
                else [
                    ("stable", 100, 0.0, []),
                    (
                        "canary",
                        0,
                        0.25,
                        [(u, "fraud_b2", 4) for u in objects.ready_urls("fraud", "candidate")],
                    ),
                ]
            ),
            "stable without replicas",
        )
        assert route(source, "fraud").serving() == ()  # type: ignore[union-attr]

        # the candidate's build leaves the status: the candidate is no longer routed
        objects.status("fraud", candidateBuild=None, routing=None, weights={"stable": 100})
        converge(source, "fraud", lambda: [("stable", 100, 0.0, [])], "the candidate gone")

        objects.delete_md("fraud")
        wait_for(lambda: route(source, "fraud") is None, SETTLE, "the deleted ModelDeployment")
        assert source.table() == RoutingTable()


def test_a_restarted_source_lists_again(objects: Objects, kube_api: client.ApiClient) -> None:
    objects.create_md("fraud", weights={"stable": 100})
    objects.variant("fraud", "stable", 1, "fraud_b1", "3")

    def expected(count: int) -> Any:
        urls = objects.ready_urls("fraud", "stable")
        return (
            [("stable", 100, 0.0, [(u, "fraud_b1", 3) for u in urls])]
            if len(urls) == count
            else None
        )

    source = KubernetesRouteSource(kube_api, objects.namespace)
    with pytest.raises(RoutesNotSynced):
        source.table()  # not started: not synced, no table
    source.start()
    try:
        assert source.wait_synced(30)
        converge(source, "fraud", lambda: expected(1), "one replica")
    finally:
        source.stop()
    assert not source.synced and not watch_threads()

    # changes while nobody watches
    objects.scale("fraud-stable", 3)
    objects.create_md("other")
    wait_for(lambda: len(objects.ready_urls("fraud", "stable")) == 3, SETTLE, "three Ready pods")

    source.start()
    try:
        assert source.wait_synced(30)
        converge(source, "fraud", lambda: expected(3), "three replicas after the restart")
        assert sorted(source.table().deployments) == ["fraud", "other"]
    finally:
        source.stop()
    assert not watch_threads()


def test_readiness_follows_the_first_sync(
    objects: Objects, kube_api: client.ApiClient, tmp_path: Path
) -> None:
    """The real gateway app on the Kubernetes source: live at once, ready only once the
    watched objects were listed."""
    objects.create_md("fraud", weights={"stable": 100})
    source = KubernetesRouteSource(kube_api, objects.namespace)
    settings = Settings(home=tmp_path, routes_refresh_seconds=0.2)
    try:
        with running_gateway(settings, source.table) as (url, _gateway):
            assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200
            not_ready = httpx.get(f"{url}/v2/health/ready", timeout=5)
            assert not_ready.status_code == 503, not_ready.text
            # before the routes are read a name is not known to be unknown: 503, not 404
            early = httpx.post(f"{url}/v2/models/fraud/infer", json={"inputs": []}, timeout=5)
            assert early.status_code == 503 and "not read its routes" in early.json()["error"]
            source.start()
            wait_for(
                lambda: httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200,
                SETTLE,
                "gateway ready after the first sync",
            )
            answer = httpx.post(f"{url}/v2/models/fraud/infer", json={"inputs": []}, timeout=5)
            assert answer.status_code == 503 and "no ready replica" in answer.json()["error"]
    finally:
        source.stop()


def test_the_gateway_process_routes_a_namespace(
    objects: Objects, kube_cluster: TestCluster, tmp_path: Path
) -> None:
    """``shipway serve gateway`` with ``SHIPWAY_RUNTIME=kubernetes``: the composition the
    cluster runs, against the test cluster's kubeconfig."""
    objects.create_md(
        "fraud",
        stableBuild={"id": "b-1", "modelRepository": "s3://m/b-1", "tritonModelName": "fraud_b1"},
        weights={"stable": 100},
    )
    # pods nothing schedules: the Service has no ready endpoint
    objects.variant("fraud", "stable", 2, "fraud_b1", "3", node_selector={"type": "nowhere"})
    settings = Settings(
        home=tmp_path,
        runtime="kubernetes",
        kubeconfig=kube_cluster.kubeconfig,
        gateway_namespace=objects.namespace,
        gateway_port=free_port(),
        routes_refresh_seconds=0.2,
    )
    url = settings.gateway_url
    log = tmp_path / "gateway.log"
    admin = {"Authorization": f"Bearer {settings.token}"}

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with shipway_process(settings, "serve", "gateway", log=log) as process:
        wait_for(lambda: ready() or process.poll() is not None, SETTLE, "gateway ready")
        assert process.poll() is None, log.read_text()
        routes = httpx.get(f"{url}/admin/routes", headers=admin, timeout=5).json()
        assert routes["fraud"]["variants"]["stable"] == {
            "weight": 100,
            "shadow_share": 0.0,
            "replicas": [],
        }
        unknown = httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": []}, timeout=5)
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "deployment 'nope' does not exist"}
        answer = httpx.post(f"{url}/v2/models/fraud/infer", json={"inputs": []}, timeout=5)
        assert answer.status_code == 503
        assert answer.json() == {"error": "deployment 'fraud' has no ready replica"}
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        counted = {
            s.labels["class"]: s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "shipway_gateway_responses_total" and s.labels["deployment"] == "fraud"
        }
        assert counted["no_ready_replica"] == 1.0, counted
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            code = None
    text = log.read_text()
    # shut down on its own: uvicorn re-raises the SIGTERM once it has (as the local roles)
    assert code == -signal.SIGTERM, text
    assert "Traceback" not in text, text


def test_an_unreachable_api_server_is_retried_and_stop_still_ends_the_watches() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api = client.ApiClient(configuration)
    source = KubernetesRouteSource(api, "default", request_timeout=1.0)
    source.start()
    try:
        assert not source.wait_synced(2.0)
        with pytest.raises(RoutesNotSynced, match="not listed yet"):
            source.table()
    finally:
        source.stop(timeout=5.0)
        api.close()
    assert not watch_threads()
