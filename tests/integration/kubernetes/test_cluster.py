"""The test cluster is real: the controller manager, scheduler and kwok do their work, the
API server validates. Each test waits for the condition it proves (with a deadline)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.kube.cluster import (
    BUILD_COMMAND,
    ISSUER,
    Binaries,
    ClusterError,
    TestCluster,
    pinned_version,
    wait_for,
)

pytestmark = pytest.mark.integration

LABEL = "app.kubernetes.io/name"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {LABEL: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.invalid/never-pulled:1",  # kwok runs nothing
                            "ports": [{"name": "http", "containerPort": 8000}],
                        }
                    ]
                },
            },
        },
    }


def ready_pods(
    core: client.CoreV1Api, namespace: str, name: str, count: int
) -> list[client.V1Pod] | None:
    """The Ready pods of Deployment ``name`` once there are ``count`` of them, else None."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{LABEL}={name}").items
    ready = [
        p
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]
    return ready if len(ready) == count else None


def test_deployment_pods_are_scheduled_to_the_fake_node_and_become_ready(
    kube_cluster: TestCluster, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(kube_namespace, deployment("web", 2))

    pods = wait_for(
        lambda: ready_pods(core, kube_namespace, "web", 2),
        60,
        "two Ready pods of Deployment web",
    )
    assert {p.spec.node_name for p in pods} == {kube_cluster.node_name}
    cidr = ipaddress.ip_network(kube_cluster.pod_cidr)
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ipaddress.ip_address(ip) in cidr for ip in ips), ips
    owners = {p.metadata.owner_references[0].kind for p in pods}
    assert owners == {"ReplicaSet"}  # made by the Deployment and ReplicaSet controllers
    wait_for(
        lambda: (
            apps.read_namespaced_deployment_status("web", kube_namespace).status.ready_replicas == 2
        ),
        30,
        "Deployment web status readyReplicas=2",
    )

    # scaled down, a pod is deleted for real (kwok's pod-delete stage ends its grace)
    apps.patch_namespaced_deployment_scale("web", kube_namespace, {"spec": {"replicas": 1}})

    def pod_names() -> set[str]:
        listed = core.list_namespaced_pod(kube_namespace, label_selector=f"{LABEL}=web").items
        return {p.metadata.name for p in listed}

    left = wait_for(lambda: names if len(names := pod_names()) == 1 else None, 60, "one pod")
    assert left < {p.metadata.name for p in pods}


def test_endpointslice_lists_the_ready_pods(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    discovery = client.DiscoveryV1Api(kube_api)
    apps.create_namespaced_deployment(kube_namespace, deployment("api", 2))
    core.create_namespaced_service(
        kube_namespace,
        {
            "metadata": {"name": "api"},
            "spec": {
                "selector": {LABEL: "api"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    pods = wait_for(
        lambda: ready_pods(core, kube_namespace, "api", 2),
        60,
        "two Ready pods of Deployment api",
    )

    def ready_endpoints() -> set[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            kube_namespace, label_selector="kubernetes.io/service-name=api"
        ).items
        return {
            address
            for s in slices
            for e in s.endpoints or []
            if e.conditions and e.conditions.ready
            for address in e.addresses
        }

    expected = {p.status.pod_ip for p in pods}
    wait_for(lambda: ready_endpoints() == expected, 30, f"EndpointSlice of api lists {expected}")
    slices = discovery.list_namespaced_endpoint_slice(
        kube_namespace, label_selector="kubernetes.io/service-name=api"
    ).items
    assert {(p.name, p.port) for s in slices for p in s.ports} == {("http", 8000)}


def test_owned_object_is_garbage_collected_with_its_owner(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    core.create_namespaced_config_map(
        kube_namespace, {"metadata": {"name": "owned", "ownerReferences": [reference]}}
    )
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "bystander"}})

    core.delete_namespaced_config_map("owner", kube_namespace, propagation_policy="Background")

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_config_map(name, kube_namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(lambda: gone("owned"), 30, "ConfigMap owned garbage-collected")
    assert not gone("bystander")  # the collector removed the dependent, not everything


def test_hpa_v2_is_accepted_and_seen_by_the_hpa_controller(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    autoscaling = client.AutoscalingV2Api(kube_api)
    apps.create_namespaced_deployment(kube_namespace, deployment("scaled", 1))
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        kube_namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "scaled"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
            },
        },
    )
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("scaled", kube_namespace)
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 120
    assert hpa.spec.metrics[0].resource.target.average_utilization == 70

    def conditions() -> dict[str, str]:
        status = autoscaling.read_namespaced_horizontal_pod_autoscaler_status(
            "scaled", kube_namespace
        ).status
        return {c.type: c.status for c in (status.conditions or [])}

    # the controller manager's HPA controller found the target (no metrics API here, so
    # it cannot compute a utilisation: ScalingActive stays False)
    seen = wait_for(lambda: conditions().get("AbleToScale"), 60, "HPA condition AbleToScale")
    assert seen == "True"


def test_gateway_api_httproute_crd_is_established_and_a_route_is_accepted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    extensions = client.ApiextensionsV1Api(kube_api)
    crd = extensions.read_custom_resource_definition("httproutes.gateway.networking.k8s.io")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    assert "v1" in [v.name for v in crd.spec.versions if v.served]

    custom = client.CustomObjectsApi(kube_api)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "split"},
        "spec": {
            "parentRefs": [{"name": "shipway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "stable", "port": 8000, "weight": 90},
                        {"name": "canary", "port": 8000, "weight": 10},
                    ]
                }
            ],
        },
    }
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", kube_namespace, "httproutes", route
    )
    stored = custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", kube_namespace, "httproutes", "split"
    )
    weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]

    bad = {**route, "metadata": {"name": "bad"}}
    bad["spec"] = {"rules": [{"backendRefs": [{"name": "stable", "port": 70000}]}]}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", kube_namespace, "httproutes", bad
        )
    assert refused.value.status == 422
    assert "port" in refused.value.body and "65535" in refused.value.body


def test_bad_object_is_refused_with_the_api_servers_message(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_deployment(kube_namespace, deployment("negative", -1))
    assert refused.value.status == 422
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in (
        refused.value.body
    )
    with pytest.raises(ApiException) as missing:  # nothing half-made
        apps.read_namespaced_deployment("negative", kube_namespace)
    assert missing.value.status == 404


def test_service_account_tokens_are_issued_and_authenticated(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    request = core.create_namespaced_service_account_token(
        "default", kube_namespace, {"spec": {"audiences": [ISSUER], "expirationSeconds": 600}}
    )
    review = client.AuthenticationV1Api(kube_api).create_token_review(
        {"spec": {"token": request.status.token}}
    )
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{kube_namespace}:default"


def test_the_kubeconfig_file_reaches_the_cluster_as_the_admin(kube_cluster: TestCluster) -> None:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    try:
        version = client.VersionApi(api).get_code()
        review = client.AuthenticationV1Api(api).create_self_subject_review({})
    finally:
        api.close()
    assert version.git_version == pinned_version()  # the build's -ldflags stamp
    assert "system:masters" in review.status.user_info.groups


def test_a_component_that_fails_to_start_is_named_with_its_log(tmp_path: Path) -> None:
    """The harness's own error path: a kube-apiserver that exits at once (a script in its
    place, the real etcd before it) is reported with its exit code and the end of its log,
    and etcd is stopped."""
    real = Binaries.default()
    if real.missing():
        pytest.skip(f"needs the real etcd: `{BUILD_COMMAND}`")
    fake = Binaries(tmp_path / "cache")
    (fake.root / "bin").mkdir(parents=True)
    for name in ("etcd", "kube-controller-manager", "kube-scheduler", "kwok"):
        (fake.root / "bin" / name).symlink_to(real.binary(name))
    apiserver = fake.binary("kube-apiserver")
    apiserver.write_text("#!/bin/sh\necho 'E0000 cannot start: the test says no' >&2\nexit 3\n")
    apiserver.chmod(0o755)
    for sub in ("stages", "crds"):
        (fake.root / sub).symlink_to(real.root / sub)
    cluster = TestCluster(tmp_path / "work", fake)
    (tmp_path / "work").mkdir()

    with pytest.raises(ClusterError) as failed:
        cluster.start()
    message = str(failed.value)
    assert "kube-apiserver exited with code 3" in message
    assert "cannot start: the test says no" in message
    etcd_running = [
        p.pid
        for p in psutil.process_iter(["exe", "cmdline"])
        if str(tmp_path / "work") in " ".join(p.info["cmdline"] or [])
    ]
    assert etcd_running == []


def test_missing_binaries_name_the_build_command(tmp_path: Path) -> None:
    cluster = TestCluster(tmp_path, Binaries(tmp_path / "no-cache"))
    with pytest.raises(ClusterError) as failed:
        cluster.start()
    assert BUILD_COMMAND in str(failed.value) and "kube-apiserver" in str(failed.value)
