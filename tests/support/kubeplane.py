"""Shipway on the test cluster as it runs on Kubernetes: the operator (its own process,
``python -m shipway_operator``), the Shipway gateway (``shipway serve gateway`` with
``SHIPWAY_RUNTIME=kubernetes``: routes from the resources, endpoints from the
EndpointSlices), a real Prometheus scraping the gateway every second, and real Triton
in every pod (the stand-in kubelet, tests/kube/kubelet.py). Builds are Triton
repositories of the flaky test model (tests/support/models/flaky), served as the
``.tar.gz`` archives the pods' init containers fetch.

Used by tests/e2e/kubernetes and by ``benchmarks/rollback.py --kubernetes``. The
gateway and Prometheus run on loopback as processes of this machine, as they would run
as pods: the gateway reaches the pods' IPs (routed locally by the stand-in).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shipway.runtime.processes import spawn
from shipway.settings import Settings
from tests.kube.cluster import TestCluster, wait_for
from tests.kube.kubelet import serving_placement
from tests.support.builds import FLAKY, WIDTH
from tests.support.processes import shipway_process
from tests.support.prometheus import PrometheusServer, Target
from tests.support.repositories import ArchiveServer, archive_directory
from tests.support.services import free_port

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"
CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "{input}" data_type: TYPE_FP32 dims: [ -1, {width} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, {width} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters [
  {{ key: "fail_share" value: {{ string_value: "{fail_share}" }} }},
  {{ key: "sleep_ms" value: {{ string_value: "0" }} }},
  {{ key: "sleep_share" value: {{ string_value: "1" }} }}
]
"""
SETTLE = 180.0  # seconds for pods to start (init container, Triton's load) and settle


def flaky_repository(
    directory: Path, name: str, fail_share: float = 0.0, input_name: str = "x"
) -> Path:
    """A one-model Triton repository of the flaky test model: y = 2x, ``fail_share`` of
    requests answered 500; ``input_name`` other than ``x`` makes a model whose clients'
    requests (input ``x``) are refused with 400 by Triton."""
    model = FLAKY.read_text()
    if input_name != "x":
        model = model.replace('by_name(request, "x")', f'by_name(request, "{input_name}")')
    (directory / name / "1").mkdir(parents=True)
    (directory / name / "1" / "model.py").write_text(model)
    (directory / name / "config.pbtxt").write_text(
        CONFIG.format(name=name, input=input_name, width=WIDTH, fail_share=fail_share)
    )
    return directory


@dataclass
class Operator:
    """``python -m shipway_operator`` for one namespace; ``kill`` is SIGKILL (no
    cleanup at all), ``stop`` SIGTERM; ``start`` again after either."""

    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = spawn(
                [sys.executable, "-m", "shipway_operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class KubePlane:
    api: client.ApiClient
    namespace: str
    gateway_url: str
    prometheus: PrometheusServer
    operator: Operator
    archives: ArchiveServer
    workdir: Path
    custom: client.CustomObjectsApi = field(init=False)

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.autoscaling = client.AutoscalingV2Api(self.api)

    # -- builds --

    def build(
        self, build_id: str, version: int, fail_share: float = 0.0, input_name: str = "x"
    ) -> dict[str, Any]:
        """``spec.build`` of a flaky-model build served by the archive server."""
        triton_name = f"doubler-{build_id}"
        with tempfile.TemporaryDirectory() as tmp:
            repo = flaky_repository(Path(tmp), triton_name, fail_share, input_name)
            archive = archive_directory(repo)
        url = self.archives.publish(f"{self.namespace}/{build_id}.tar.gz", archive.data)
        return {
            "id": build_id,
            "modelRepository": url,
            "sha256": archive.sha256,
            "tritonModelName": triton_name,
            "modelVersion": version,
        }

    # -- the resource --

    def deploy(
        self,
        name: str,
        build: dict[str, Any],
        rollout: dict[str, Any],
        triton: dict[str, Any] | None = None,
        **spec: Any,
    ) -> None:
        """A ModelDeployment on the serving node (``triton`` adds to its ``spec.triton``),
        one fixed replica unless ``spec`` says otherwise (``replicas=None`` drops it)."""
        fields = {"replicas": 1, **spec}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "doubler", "version": str(build["modelVersion"])},
                "build": build,
                "triton": {**serving_placement(), **(triton or {})},
                "rollout": rollout,
                **{k: v for k, v in fields.items() if v is not None},
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def set_build(self, name: str, build: dict[str, Any]) -> None:
        patch = {"spec": {"build": build, "model": {"version": str(build["modelVersion"])}}}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def record(self, name: str) -> dict[str, Any]:
        return self.status(name).get("rollout") or {}

    def wait_serving(self, name: str, timeout: float = SETTLE) -> None:
        """Ready, and the gateway answers 200 for it."""
        url = f"{self.gateway_url}/v2/models/{name}/infer"

        def answers() -> bool:
            if self.status(name).get("phase") != "Ready":
                return False
            try:
                return httpx.post(url, json=body(), timeout=5, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout, f"{name} Ready and answering through the gateway", 0.5)

    def object_names(self, name: str) -> dict[str, list[str]]:
        selector = f"shipway.io/deployment={name}"
        ns = self.namespace
        return {
            "Deployment": sorted(
                d.metadata.name
                for d in self.apps.list_namespaced_deployment(ns, label_selector=selector).items
            ),
            "ReplicaSet": sorted(
                r.metadata.name
                for r in self.apps.list_namespaced_replica_set(ns, label_selector=selector).items
            ),
        }

    def hpa_range(self, name: str) -> tuple[int, int] | None:
        try:
            hpa = self.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return hpa.spec.min_replicas, hpa.spec.max_replicas


def body(row: list[float] | None = None) -> dict[str, Any]:
    values = row or [1.0] * WIDTH
    return {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": values}]}


@contextmanager
def kube_plane(
    cluster: TestCluster, archives: ArchiveServer, workdir: Path, **operator_env: str
) -> Iterator[KubePlane]:
    """A namespace with the operator, the gateway and Prometheus serving it; all stopped
    (and the namespace deleted) on exit."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        lambda: core.list_namespaced_service_account(namespace).items,
        60,
        "the namespace's default service account",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.callback(core.delete_namespace, namespace)
        port = free_port()
        settings = Settings(
            home=workdir / "gateway",
            runtime="kubernetes",
            kubeconfig=cluster.kubeconfig,
            gateway_namespace=namespace,
            gateway_port=port,
            routes_refresh_seconds=0.2,
        )
        settings.ensure_home()
        gateway = stack.enter_context(
            shipway_process(settings, "serve", "gateway", log=workdir / "gateway.log")
        )
        gateway_url = f"http://127.0.0.1:{port}"

        def gateway_ready() -> bool:
            assert gateway.poll() is None, (workdir / "gateway.log").read_text()[-3000:]
            try:
                return httpx.get(f"{gateway_url}/v2/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(gateway_ready, 60, "the gateway ready")
        (workdir / "prometheus").mkdir(exist_ok=True)
        prometheus = PrometheusServer(
            workdir / "prometheus",
            [Target("shipway-gateway", f"127.0.0.1:{port}", {"namespace": namespace})],
        )
        stack.callback(prometheus.stop)
        prometheus.wait_scraped("shipway-gateway")
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "SHIPWAY_OPERATOR_NAMESPACES": namespace,
            "SHIPWAY_OPERATOR_PROMETHEUS_URL": prometheus.url,
            "SHIPWAY_OPERATOR_FETCH_IMAGE": "registry.test/shipway-operator:e2e",
            "SHIPWAY_OPERATOR_ROLLOUT_POLL_SECONDS": "0.5",
            **operator_env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        operator = Operator(env, workdir / "operator.log")
        operator.start()
        stack.callback(operator.stop)
        yield KubePlane(api, namespace, gateway_url, prometheus, operator, archives, workdir)
