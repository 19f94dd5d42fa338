"""The stand-in kubelet (tests/kube/kubelet.py) on the real test cluster: a ModelDeployment
reconciled by the operator's own code lands on the serving node, its pod runs a real
``tritonserver`` from the fetched archive on the pod's IP, is Ready only once that Triton
answers, answers real inference, is listed ready by the real EndpointSlice controller,
and its Triton stops when the pod goes. A bad archive leaves the pod not ready, and says
why in the pod's status."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from shipway_operator import manifests
from shipway_operator import status as operator_status
from shipway_operator.kube import Kube
from shipway_operator.reconcile import reconcile
from shipway_operator.spec import Variant, parse_spec
from tests.kube.cluster import (
    SERVING_NODE_NAME,
    TestCluster,
    kwok_stages,
    unique_name,
    wait_for,
)
from tests.kube.kubelet import (
    Probe,
    TritonKubelet,
    container_mounts,
    ensure_local_route,
    init_command,
    serving_placement,
    triton_arguments,
    unsupported,
)
from tests.support.builds import doubler_onnx
from tests.support.repositories import ArchiveServer, repository_archive

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"
FETCH_IMAGE = "registry.test/shipway-operator:test"  # never pulled: the stand-in runs it here
MODEL = "doubler-b1"  # the Triton model name inside the archive
STARTUP = 120.0  # seconds for a pod's Triton to come up (several, on a shared machine)


def model_deployment(name: str, url: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "doubler", "version": "1"},
            "build": {"id": "b1", "modelRepository": url, "sha256": sha256},
            "triton": {"image": "nvcr.io/nvidia/tritonserver:24.10-py3", **serving_placement()},
            "replicas": 1,
        },
    }


def apply(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    """Create the resource and reconcile it once, with the operator's own code."""
    custom = client.CustomObjectsApi(api)
    made = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    reconcile(Kube(api), made, FETCH_IMAGE, attempts=1)


def conditions(pod: client.V1Pod) -> dict[str, str]:
    return {c.type: c.status for c in pod.status.conditions or []}


def pods(core: client.CoreV1Api, namespace: str, deployment: str) -> list[client.V1Pod]:
    selector = f"shipway.io/deployment={deployment}"
    return core.list_namespaced_pod(namespace, label_selector=selector).items


def health(ip: str, timeout: float = 2.0) -> int | None:
    try:
        return httpx.get(
            f"http://{ip}:8000/v2/health/ready", timeout=timeout, trust_env=False
        ).status_code
    except httpx.HTTPError:
        return None


def refused(ip: str, port: int = 8000) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((ip, port)) != 0


@dataclass
class Served:
    namespace: str
    name: str
    pod: client.V1Pod  # Ready
    seen_unready_with_triton: int  # observations: Triton running, pod not Ready yet
    first_ready_health: int | None  # /v2/health/ready's answer when Ready was first seen


@pytest.fixture(scope="module")
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = unique_name("kubelet")
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        30,
        f"service account default in {name}",
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def served(
    kube_cluster: TestCluster,
    kube_api: client.ApiClient,
    triton_kubelet: TritonKubelet,
    archive_server: ArchiveServer,
    namespace: str,
) -> Served:
    """One ModelDeployment on the serving node, watched from creation until Ready."""
    archive = repository_archive(doubler_onnx(), MODEL)
    url = archive_server.publish(f"{namespace}/doubler-b1.tar.gz", archive.data)
    apply(kube_api, namespace, model_deployment("doubler", url, archive.sha256))
    core = client.CoreV1Api(kube_api)
    unready_with_triton = 0
    first_health: list[int | None] = []

    def ready_pod() -> client.V1Pod | None:
        nonlocal unready_with_triton
        found = pods(core, namespace, "doubler")
        if len(found) != 1:
            return None
        pod = found[0]
        if conditions(pod).get("Ready") != "True":
            if triton_kubelet.triton_pid(namespace, pod.metadata.name) is not None:
                unready_with_triton += 1
            return None
        first_health.append(health(pod.status.pod_ip))
        return pod

    try:
        pod = wait_for(ready_pod, STARTUP, "the doubler pod Ready", interval=0.1)
    except AssertionError as exc:
        found = pods(core, namespace, "doubler")
        logs = {p.metadata.name: triton_kubelet.logs(namespace, p.metadata.name) for p in found}
        raise AssertionError(f"{exc}; pods {[p.status for p in found]}; logs {logs}") from None
    assert pod.spec.node_name == SERVING_NODE_NAME
    return Served(namespace, "doubler", pod, unready_with_triton, first_health[0])


def test_pod_is_ready_only_once_its_triton_answers(served: Served) -> None:
    # Triton ran for a while (loading its model) while the pod was not Ready...
    assert served.seen_unready_with_triton > 0
    # ...and when the pod was first seen Ready, its Triton answered ready on the pod IP
    assert served.first_ready_health == 200
    statuses = served.pod.status.container_statuses
    assert [(s.name, s.ready, s.started) for s in statuses] == [("triton", True, True)]
    (fetch,) = served.pod.status.init_container_statuses
    assert fetch.state.terminated.exit_code == 0
    assert served.pod.status.phase == "Running"


def test_the_pod_ip_answers_inference(served: Served) -> None:
    ip = served.pod.status.pod_ip
    request = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.5, -2, 0, 4]}]
    }
    response = httpx.post(
        f"http://{ip}:8000/v2/models/{MODEL}/infer", json=request, timeout=30, trust_env=False
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "y"
    assert output["shape"] == [2, 2]
    assert output["data"] == [3.0, -4.0, 0.0, 8.0]


def test_the_pod_ip_serves_tritons_metrics(served: Served) -> None:
    ip = served.pod.status.pod_ip
    response = httpx.get(f"http://{ip}:8002/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    # the series the HPA's Prometheus-backed target reads (per model, from Triton)
    pending = families.get("nv_inference_pending_request_count")
    assert pending is not None, sorted(families)
    assert {s.labels["model"] for s in pending.samples} == {MODEL}


def test_the_endpointslice_lists_the_pod_ip_ready(
    kube_api: client.ApiClient, served: Served
) -> None:
    discovery = client.DiscoveryV1Api(kube_api)
    service = f"{served.name}-stable"

    def ready_addresses() -> set[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            served.namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        return {
            address
            for s in slices
            for e in s.endpoints or []
            if e.conditions and e.conditions.ready
            for address in e.addresses
        }

    ip = served.pod.status.pod_ip
    wait_for(lambda: ready_addresses() == {ip}, 30, f"EndpointSlice of {service} lists {ip}")


def test_a_triton_that_stops_answering_makes_its_pod_not_ready(
    kube_api: client.ApiClient, triton_kubelet: TritonKubelet, served: Served
) -> None:
    core = client.CoreV1Api(kube_api)
    name = served.pod.metadata.name
    pid = triton_kubelet.triton_pid(served.namespace, name)
    assert pid is not None

    def ready() -> str:
        return conditions(core.read_namespaced_pod(name, served.namespace)).get("Ready", "")

    os.killpg(pid, signal.SIGSTOP)  # alive, but answers nothing: the probe times out
    try:
        wait_for(lambda: ready() == "False", 30, "pod not Ready while Triton is stopped")
        # briefly: the liveness probe would restart it after 3 of its (scaled) periods
        assert health(served.pod.status.pod_ip, timeout=0.5) is None
    finally:
        os.killpg(pid, signal.SIGCONT)
    wait_for(lambda: ready() == "True", 30, "pod Ready again once Triton answers")
    assert triton_kubelet.triton_pid(served.namespace, name) == pid  # the same process


def test_a_killed_triton_is_restarted_as_the_kubelet_would(
    kube_api: client.ApiClient, triton_kubelet: TritonKubelet, served: Served
) -> None:
    core = client.CoreV1Api(kube_api)
    name = served.pod.metadata.name
    pid = triton_kubelet.triton_pid(served.namespace, name)
    assert pid is not None

    def pod() -> client.V1Pod:
        return core.read_namespaced_pod(name, served.namespace)

    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: conditions(pod()).get("Ready") == "False", 30, "pod not Ready once killed")

    def restarted() -> client.V1ContainerStatus | None:
        (status,) = pod().status.container_statuses
        return status if status.ready and status.restart_count == 1 else None

    # the kubelet's first back-off is 10 s, then Triton loads again
    status = wait_for(restarted, STARTUP, "Triton restarted and Ready, restartCount 1")
    assert status.last_state.terminated.exit_code == 128 + signal.SIGKILL
    assert conditions(pod()).get("Ready") == "True"
    new_pid = triton_kubelet.triton_pid(served.namespace, name)
    assert new_pid is not None and new_pid != pid
    assert health(served.pod.status.pod_ip) == 200  # the same IP serves again


def test_scaling_down_stops_the_pods_triton(
    kube_api: client.ApiClient, triton_kubelet: TritonKubelet, served: Served
) -> None:
    """Last in the module: it takes the shared pod away."""
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    name, ip = served.pod.metadata.name, served.pod.status.pod_ip
    pid = triton_kubelet.triton_pid(served.namespace, name)
    assert pid is not None and psutil.pid_exists(pid)
    process = psutil.Process(pid)
    assert health(ip) == 200

    deployment = f"{served.name}-stable"
    apps.patch_namespaced_deployment_scale(deployment, served.namespace, {"spec": {"replicas": 0}})

    def pod_gone() -> bool:
        try:
            core.read_namespaced_pod(name, served.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(pod_gone, 60, f"pod {name} deleted (by the stand-in, once its Triton stopped)")
    assert not process.is_running()  # stopped before the pod object went
    assert refused(ip)


def test_a_bad_archive_leaves_the_pod_not_ready_and_says_why(
    kube_api: client.ApiClient,
    triton_kubelet: TritonKubelet,
    archive_server: ArchiveServer,
    namespace: str,
) -> None:
    archive = repository_archive(doubler_onnx(), MODEL)
    url = archive_server.publish(f"{namespace}/tampered.tar.gz", archive.data)
    wrong = "0" * 64
    apply(kube_api, namespace, model_deployment("tampered", url, wrong))
    core = client.CoreV1Api(kube_api)

    def failed_fetch() -> client.V1Pod | None:
        found = pods(core, namespace, "tampered")
        for pod in found:
            for status in pod.status.init_container_statuses or []:
                ended = status.state.terminated or (
                    status.last_state.terminated if status.last_state else None
                )
                if ended is not None and ended.exit_code != 0:
                    return pod
        return None

    pod = wait_for(failed_fetch, 60, "the tampered pod's fetch failed")
    (fetch,) = pod.status.init_container_statuses
    ended = fetch.state.terminated or fetch.last_state.terminated
    assert ended.exit_code == 1
    assert f"expected {wrong}" in ended.message and archive.sha256 in ended.message
    assert conditions(pod).get("Ready") == "False"
    assert conditions(pod).get("Initialized") == "False"
    assert pod.status.phase == "Pending"
    assert triton_kubelet.triton_pid(namespace, pod.metadata.name) is None  # never started
    assert pod.status.container_statuses[0].ready is False
    # the operator's own account of a variant's trouble reads it from the pod
    trouble = operator_status.pod_trouble([kube_api.sanitize_for_serialization(pod)])
    assert trouble is not None and "fetch-model" in trouble, trouble


def test_the_serving_range_is_routed_once(triton_kubelet: TritonKubelet) -> None:
    assert ensure_local_route(triton_kubelet.serving_range) is False  # there already
    with socket.socket() as sock:  # any address of it is local: bindable here
        sock.bind((str(ipaddress.ip_network(triton_kubelet.serving_range)[-2]), 0))


# ---- the pure parts ----------------------------------------------------------------


def test_the_operators_triton_container_is_bound_to_the_pod_ip(tmp_path: Path) -> None:
    body = model_deployment("doubler", "http://files.test/r.tar.gz", "a" * 64)
    spec = parse_spec(body["spec"])
    owner = manifests.Owner("doubler", "ns", "uid-1")
    ctx = manifests.Context(owner, spec, FETCH_IMAGE)
    pod = manifests.deployment(ctx, Variant.STABLE, spec.build, 100)["spec"]["template"]
    pod["metadata"] = {"name": "p", "namespace": "ns", "uid": "uid-1"}
    (triton,) = pod["spec"]["containers"]
    (fetch,) = pod["spec"]["initContainers"]
    assert unsupported(pod) is None
    mounts = container_mounts(pod, triton, tmp_path)
    assert mounts == {
        "/models": tmp_path / "models",
        "/dev/shm": tmp_path / "dshm",
        "/tmp": tmp_path / "scratch",
    }
    arguments = triton_arguments(triton, mounts, "10.245.3.4", Path("/backends"))
    assert arguments == [
        f"--model-repository={tmp_path / 'models'}",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--backend-directory=/backends",
        "--http-address=10.245.3.4",
        "--grpc-address=10.245.3.4",
        "--metrics-address=10.245.3.4",
        "--allow-gpu-metrics=false",
    ]
    command = init_command(fetch, container_mounts(pod, fetch, tmp_path))
    assert command[:3] == [sys.executable, "-m", "shipway_operator.fetch"]
    assert command[-4:] == [
        "http://files.test/r.tar.gz",
        str(tmp_path / "models"),
        "--sha256",
        "a" * 64,
    ]
    readiness = Probe.of(triton, "readinessProbe", 0.3)
    assert readiness is not None
    assert (readiness.path, readiness.port, readiness.failure_threshold) == (
        "/v2/health/ready",
        8000,
        3,
    )
    assert readiness.period == pytest.approx(1.5)


def test_a_pod_the_stand_in_cannot_run_says_why() -> None:
    pod = {
        "spec": {
            "containers": [{"name": "web", "image": "nginx", "command": ["nginx"]}],
            "volumes": [],
        }
    }
    assert "tritonserver" in (unsupported(pod) or "")
    pod["spec"]["containers"] = [{"name": "t", "command": ["tritonserver"]}]
    pod["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "x"}}]
    assert "emptyDir" in (unsupported(pod) or "")


def test_kwok_keeps_its_own_pod_stages_off_the_serving_node(tmp_path: Path) -> None:
    release = tmp_path / "stages.yaml"
    pod_stage = {
        "kind": "Stage",
        "metadata": {"name": "pod-ready"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]}
                ]
            },
        },
    }
    node_stage = {
        "kind": "Stage",
        "metadata": {"name": "node-ready"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Node"},
            "selector": {},
        },
    }
    release.write_text(yaml.safe_dump_all([pod_stage, node_stage]))

    assert kwok_stages([release], None) == [pod_stage, node_stage]
    stages = {s["metadata"]["name"]: s for s in kwok_stages([release], "serving")}
    assert stages["pod-ready"]["spec"]["selector"]["matchExpressions"][-1] == {
        "key": ".spec.nodeName",
        "operator": "NotIn",
        "values": ["serving"],
    }
    assert stages["node-ready"] == node_stage
    for name in ("serving-pod-ip", "serving-pod-grace-over"):
        expressions = stages[name]["spec"]["selector"]["matchExpressions"]
        assert {"key": ".spec.nodeName", "operator": "In", "values": ["serving"]} in expressions
