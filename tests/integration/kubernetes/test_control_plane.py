"""The control plane in Kubernetes mode (``SHIPWAY_RUNTIME=kubernetes``) on the real test
cluster: ``shipway deploy`` (the CLI's process, against an API process) creates the
ModelDeployment, the operator (in this process, as tests/integration/operator/ run it)
makes it Ready once kwok's pods are, ``shipway status`` and the REST API show that,
delete removes it; the build's archive is what the pods' fetch unpacks; bad input is a
clear 4xx with nothing left behind; an unreachable API server is a 503.

A real PostgreSQL store, MLflow on SQLite under the test's home, a build through the real
pipeline (ONNX Runtime), the real API server validating every body against the CRD.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.kubernetes import rollouts as kube_rollouts
from shipway.kubernetes.archives import signature
from shipway.settings import DEV_TOKEN, Settings
from shipway.store.models import AuditEvent, Build, BuildStatus
from tests.kube.cluster import TestCluster, wait_for
from tests.support.builds import (
    publish_flaky_build,
    real_build,
    register_doubler,
    succeeded_builds,
)
from tests.support.plane import Plane
from tests.support.processes import settings_env, shipway_cmd
from tests.support.services import free_port

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"
OPERATOR = ["run", "--all-namespaces", "--standalone", "-m", "shipway_operator.handlers"]
SETTLE = 90.0  # seconds for what the cluster's controllers, kwok and the operator do
VIEWER = "a-viewer-token-for-the-control-plane"


@dataclass
class ControlPlane:
    """An API process in Kubernetes mode, its store, and the namespace it writes to."""

    plane: Plane
    namespace: str
    custom: client.CustomObjectsApi
    apps: client.AppsV1Api
    version_name: str
    version: int
    build_id: str

    @property
    def settings(self) -> Settings:
        return self.plane.settings

    @property
    def container(self) -> Container:
        return self.plane.container

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.settings.resolved_api_url}/api/v1",
            headers={"Authorization": f"Bearer {self.settings.token}"},
            timeout=60,
            trust_env=False,
        )

    def shipway(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI as a user runs it: its own process, the API's URL and token."""
        return subprocess.run(
            shipway_cmd(*args),
            env=settings_env(self.settings),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def resources(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return listing["items"]

    def resource(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def audit(self) -> list[tuple[str, str]]:
        """The deployment events of the audit trail, oldest first."""
        with self.container.db.session() as session:
            rows = session.execute(
                select(AuditEvent.action, AuditEvent.subject)
                .where(AuditEvent.subject.startswith("deployment/"))
                .order_by(AuditEvent.id)
            )
            return [(action, subject) for action, subject in rows]


def kube_settings(home: Path, postgres_url: str, kubeconfig: Path, namespace: str) -> Settings:
    port = free_port()
    return Settings(
        home=home,
        database_url=postgres_url,
        runtime="kubernetes",
        kubeconfig=kubeconfig,
        kubernetes_namespace=namespace,
        kubernetes_node_selector={"type": "kwok"},
        api_port=port,
        public_api_url=f"http://127.0.0.1:{port}",
        archive_key="control-plane-test-archive-key",
        api_tokens={DEV_TOKEN: "admin", VIEWER: "viewer"},
        drift_check_seconds=0,
        rollout_tick_seconds=0,
        build_bench_seconds=0.2,
        build_bench_rounds=1,
        _env_file=None,
    )


@pytest.fixture
def control_plane(
    tmp_path: Path,
    postgres_url: str,
    kube_cluster: TestCluster,
    kube_api: client.ApiClient,
    kube_namespace: str,
) -> Iterator[ControlPlane]:
    settings = kube_settings(
        tmp_path / "home", postgres_url, kube_cluster.kubeconfig, kube_namespace
    )
    container = Container(settings)
    container.registry.initialize()
    version = register_doubler(container, "doubler")
    build_id = real_build(container, version)
    logs = tmp_path / "logs"
    logs.mkdir()
    plane = Plane(settings, logs, container)
    with ExitStack() as stack:
        stack.callback(container.close)
        stack.callback(plane.stop_all)
        plane.start("api")
        yield ControlPlane(
            plane,
            kube_namespace,
            client.CustomObjectsApi(kube_api),
            client.AppsV1Api(kube_api),
            version.name,
            version.version,
            build_id,
        )


@pytest.fixture
def operator(kube_cluster: TestCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[KopfRunner]:
    """The operator in this process, cluster-wide, finding the cluster by ``KUBECONFIG``."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHIPWAY_OPERATOR_FETCH_IMAGE", "registry.test/shipway-operator:test")
    with KopfRunner(OPERATOR, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def test_shipway_deploy_creates_the_resource_the_operator_makes_ready(
    control_plane: ControlPlane, operator: KopfRunner, tmp_path: Path
) -> None:
    cp, build_id = control_plane, control_plane.build_id
    deployed = cp.shipway("deploy", "web", "--build", build_id, "--replicas", "2", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr + cp.plane.log("api")
    shown = json.loads(deployed.stdout)  # --wait: returned once Ready with 2 ready pods
    assert (shown["name"], shown["build_id"], shown["status"]) == ("web", build_id, "ready")
    assert [r["state"] for r in shown["replicas"]] == ["ready", "ready"]

    # the resource as the API server stores it: the spec Shipway applied, as shipway-api
    body = cp.resource("web")
    assert body is not None
    archive_url = (
        f"{cp.settings.resolved_public_api_url}/api/v1/builds/{build_id}/model-repository.tar.gz"
        f"?signature={signature(cp.settings, build_id)}"
    )
    spec = body["spec"]
    assert spec["model"] == {"name": cp.version_name, "version": str(cp.version)}
    assert spec["build"]["id"] == build_id
    assert spec["build"]["modelRepository"] == archive_url
    # what the in-cluster gateway routes by, from the build (it reads no database)
    assert spec["build"]["tritonModelName"] == f"{cp.version_name}-{build_id}"
    assert spec["build"]["modelVersion"] == cp.version
    assert spec["build"]["agreement"]["min_cosine"] == 0.99  # the fp32 build's default rule
    assert spec["replicas"] == 2 and "autoscaling" not in spec
    assert spec["triton"]["nodeSelector"] == {"type": "kwok"}
    managers = {m["manager"] for m in body["metadata"]["managedFields"]}
    assert {"shipway-api", "shipway-operator"} <= managers
    status = body["status"]
    assert (status["phase"], status["readyReplicas"]) == ("Ready", 2)

    # the archive behind the URL: its digest is the spec's, its files the build's
    with httpx.Client(trust_env=False, timeout=60) as anonymous:
        served = anonymous.get(archive_url)
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "application/gzip"
    assert served.headers["x-checksum-sha256"] == spec["build"]["sha256"]

    # the pods' init container, run here as the pod would run it, unpacks the build
    deployment = cp.apps.read_namespaced_deployment("web-stable", cp.namespace)
    (fetch,) = deployment.spec.template.spec.init_containers
    command = fetch.command
    assert command[:3] == ["python", "-m", "shipway_operator.fetch"]
    assert command[3] == "--max-bytes" and int(command[4]) > 0  # the models volume's cap
    assert command[5:] == [
        archive_url,
        "/models",
        "--sha256",
        spec["build"]["sha256"],
    ]
    models = tmp_path / "models"
    args = [models if a == "/models" else a for a in command[3:]]
    fetched = subprocess.run(
        [sys.executable, "-m", "shipway_operator.fetch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    with cp.container.db.session() as session:
        build = session.get(Build, build_id)
        assert build is not None
        run_id, artifact, triton_name = (
            build.model_version.mlflow_run_id,
            build.artifact_path,
            build.triton_model_name,
        )
    assert artifact is not None
    original = cp.container.registry.download(run_id, artifact, tmp_path / "artifact")
    assert files_of(models) == files_of(original) != {}
    assert (models / str(triton_name) / "config.pbtxt").is_file()

    # status through the CLI and the REST API
    listed = cp.shipway("status", "--json")
    assert listed.returncode == 0, listed.stderr
    (web,) = json.loads(listed.stdout)["deployments"]
    assert (web["name"], web["status"], web["build_id"]) == ("web", "ready", build_id)
    assert web["infer_url"] == (
        f"http://web-stable.{cp.namespace}.svc:8000/v2/models/{triton_name}/infer"
    )
    with cp.api() as api:
        got = api.get("/deployments/web").json()
        assert got["status"] == "ready"
        assert got["variants"][0]["desired_replicas"] == 2
        # a scale change is a patch of the same resource, as shipway-api
        uid = body["metadata"]["uid"]
        scaled = api.put("/deployments/web", json={"build_id": build_id, "replicas": 3})
        assert scaled.status_code == 200, scaled.text
        again = cp.resource("web")
        assert again is not None and again["metadata"]["uid"] == uid
        assert again["spec"]["replicas"] == 3

        def three_ready() -> bool:
            view = api.get("/deployments/web").json()
            return (
                view["status"] == "ready"
                and [r["state"] for r in view["replicas"]] == ["ready"] * 3
            )

        wait_for(three_ready, SETTLE, "3 ready replicas through the API")

        # another build on the resource is the operator's candidate: a rollout begins,
        # recorded in status.rollout (the shared controller's status), read back here
        with cp.container.db.session() as session:
            version = session.get(Build, build_id).model_version  # type: ignore[union-attr]
        second = publish_flaky_build(cp.container, version)
        moved = api.put("/deployments/web", json={"build_id": second})
        assert moved.status_code == 200, moved.text

        def candidate() -> dict[str, Any] | None:
            view = api.get("/deployments/web").json()
            arms = {v["name"]: (v["build_id"], v["weight"]) for v in view["variants"]}
            return view if arms.get("candidate", (None,))[0] == second else None

        view = wait_for(candidate, SETTLE, "the second build as web's candidate")
        assert view["status"] == "progressing" and view["build_id"] == build_id
        listed = api.get("/deployments/web/rollouts")
        assert listed.status_code == 200, listed.text
        (rollout,) = listed.json()  # the rollouts API reads status.rollout here
        assert rollout["id"] == kube_rollouts.get(cp.container, "web", second)["id"]
        assert (rollout["id"], rollout["stable_build_id"]) == (second, build_id)
        # the operator's rollout loop runs it; no Prometheus is configured here, so its
        # analyses are inconclusive and it never goes past the first step (5 %)
        assert rollout["phase"] in ("initializing", "progressing") and rollout["running"]
        assert rollout["weight"] in (0, 5)
        one = api.get(f"/deployments/web/rollouts/{second}")
        assert one.status_code == 200 and one.json()["id"] == second
        assert api.get("/deployments/web/rollouts/nope").status_code == 404
        # a rollout starts from the resource's build here, not from the rollouts API
        for refused in (
            api.post("/deployments/web/rollouts", json={"build_id": second}),
            api.post(f"/deployments/web/rollouts/{second}/pause"),
        ):
            assert refused.status_code == 409, refused.text
            assert "SHIPWAY_RUNTIME=kubernetes" in refused.json()["detail"]
        # an operation names the way it is done there: the resource's annotations
        assert "shipway.io/paused" in refused.json()["detail"]

        # delete: the resource is gone, and with it (garbage collection) its workloads
        assert api.delete("/deployments/web").status_code == 204
        wait_for(lambda: cp.resource("web") is None, SETTLE, "ModelDeployment web deleted")
        wait_for(
            lambda: (
                not cp.apps.list_namespaced_deployment(
                    cp.namespace, label_selector="shipway.io/deployment=web"
                ).items
            ),
            SETTLE,
            "web's Deployments garbage-collected",
        )
        gone = api.get("/deployments/web")
        assert gone.status_code == 404 and "'web'" in gone.json()["detail"]
        assert api.get("/deployments").json() == []
    assert cp.audit() == [
        ("deployment.set", "deployment/web"),
        ("deployment.set", "deployment/web"),
        ("deployment.set", "deployment/web"),
        ("deployment.delete", "deployment/web"),
    ]


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _failed_build(cp: ControlPlane) -> str:
    """A failed build of the plane's model version, its id."""
    with cp.container.db.session() as session:
        failed = Build(
            model_version_id=session.get(Build, cp.build_id).model_version_id,  # type: ignore[union-attr]
            recipe="fp32",
            target="onnxruntime-cpu",
            status=BuildStatus.FAILED,
        )
        session.add(failed)
        session.flush()
        return failed.id


def test_bad_input_is_a_clear_4xx_and_leaves_nothing(control_plane: ControlPlane) -> None:
    cp = control_plane
    failed_id = _failed_build(cp)
    cases = [
        ("web", "nope", 404, "build 'nope' does not exist"),
        ("web", failed_id, 409, "only a succeeded build deploys"),
        # names Shipway allows and the CRD does not: the API server's message comes back
        ("9lives", cp.build_id, 422, "DNS-1035"),
        ("a" * 51, cp.build_id, 422, "at most 50 characters"),
    ]
    with cp.api() as api:
        for name, build_id, status, message in cases:
            answer = api.put(f"/deployments/{name}", json={"build_id": build_id})
            assert answer.status_code == status, answer.text
            assert message in answer.json()["detail"], answer.text
        # the CLI says the same, in one line, with a non-zero exit
        cli = cp.shipway("deploy", "9lives", "--build", cp.build_id, "--no-wait")
        assert cli.returncode != 0
        assert "DNS-1035" in cli.stdout + cli.stderr and "Traceback" not in cli.stderr

        assert cp.resources() == []
        assert cp.audit() == []
        missing = api.get("/deployments/nope")
        assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]
        assert api.delete("/deployments/nope").status_code == 404

        # the archive: unknown 404, not succeeded 409, no token and no signature 401
        archive = "/builds/{}/model-repository.tar.gz"
        assert api.get(archive.format("nope")).status_code == 404
        refused = api.get(archive.format(failed_id))
        assert refused.status_code == 409 and "succeeded" in refused.json()["detail"]
        with httpx.Client(trust_env=False, timeout=30) as anonymous:
            url = f"{cp.settings.resolved_api_url}/api/v1" + archive.format(cp.build_id)
            assert anonymous.get(url).status_code == 401
            assert anonymous.get(url, params={"signature": "0" * 64}).status_code == 401
            assert (
                anonymous.get(
                    url, params={"signature": signature(cp.settings, cp.build_id)}
                ).status_code
                == 200
            )


def test_a_manifest_for_git_is_admitted_and_points_at_the_builds_archive(
    control_plane: ControlPlane,
) -> None:
    """``shipway builds manifest``: the ModelDeployment to commit for Argo CD. Its
    archive URL answers without a token with the bytes of the SHA-256 it names, the real
    API server accepts it as it stands, and nothing is applied by asking for it; what the
    CRD refuses is the API server's message, with nothing left behind."""
    cp = control_plane
    shown = cp.shipway(
        "builds",
        "manifest",
        cp.build_id,
        "--deployment",
        "from-git",
        "--max-replicas",
        "3",
        "--target-inflight",
        "4",
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr + cp.plane.log("api")
    body = yaml.safe_load(shown.stdout)
    assert cp.resources() == [] and cp.audit() == []  # a manifest, not a deploy
    assert (body["kind"], body["metadata"]["name"]) == ("ModelDeployment", "from-git")
    assert body["metadata"]["namespace"] == cp.namespace
    assert "labels" not in body["metadata"]  # Git manages it, not shipway-api
    build = body["spec"]["build"]
    assert build["id"] == cp.build_id
    assert build["tritonModelName"] == f"{cp.version_name}-{cp.build_id}"
    assert body["spec"]["autoscaling"]["maxReplicas"] == 3
    with httpx.Client(trust_env=False, timeout=60) as anonymous:
        served = anonymous.get(build["modelRepository"])
    assert served.status_code == 200, served.text
    assert hashlib.sha256(served.content).hexdigest() == build["sha256"]

    created = cp.custom.create_namespaced_custom_object(GROUP, VERSION, cp.namespace, PLURAL, body)
    assert created["spec"]["build"] == build

    failed_id = _failed_build(cp)
    with cp.api() as api:
        for name, build_id, extra, status, message in [
            ("9lives", cp.build_id, {}, 422, "DNS-1035"),
            ("web", "nope", {}, 404, "build 'nope' does not exist"),
            ("web", failed_id, {}, 409, "only a succeeded build deploys"),
            ("Web", cp.build_id, {}, 422, "query.name must be a name of lower-case letters"),
            # a range that would be dropped silently without a target, and the reverse
            ("web", cp.build_id, {"max_replicas": 4}, 422, "needs target_inflight"),
            ("web", cp.build_id, {"target_inflight": 4}, 422, "needs target_inflight"),
        ]:
            answer = api.get(f"/builds/{build_id}/model-deployment", params={"name": name, **extra})
            assert answer.status_code == status, answer.text
            assert message in str(answer.json()["detail"]), answer.text
        # the signed URL is a capability to fetch the build: a deployer's, not a viewer's
        viewer = api.get(
            f"/builds/{cp.build_id}/model-deployment",
            params={"name": "web"},
            headers={"Authorization": f"Bearer {VIEWER}"},
        )
        assert viewer.status_code == 403, viewer.text
        assert "signature" not in viewer.text
    assert [r["metadata"]["name"] for r in cp.resources()] == ["from-git"]
    assert cp.audit() == []


def test_variants_routing_and_drift_answer_409_naming_the_mode(control_plane: ControlPlane) -> None:
    cp = control_plane
    with cp.api() as api:
        for method, path, body in [
            ("PUT", "/deployments/web/variants/canary", {"build_id": cp.build_id, "weight": 10}),
            ("DELETE", "/deployments/web/variants/canary", None),
            ("PUT", "/deployments/web/routing", {"split": "sticky"}),
            ("GET", "/deployments/web/drift", None),
            ("PUT", "/deployments/web/drift-policy", {"actions": ["alert"]}),
        ]:
            answer = api.request(method, path, json=body)
            assert answer.status_code == 409, answer.text
            assert "SHIPWAY_RUNTIME=kubernetes" in answer.json()["detail"]
    assert cp.resources() == [] and cp.audit() == []


def test_an_unreachable_api_server_is_503(
    tmp_path: Path, postgres_url: str, kube_cluster: TestCluster, kube_namespace: str
) -> None:
    """A kubeconfig naming a port nothing listens on: the API answers 503 saying so."""
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    closed = free_port()
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    kubeconfig = tmp_path / "down.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    settings = kube_settings(tmp_path / "home", postgres_url, kubeconfig, kube_namespace)
    container = Container(settings)
    try:
        container.registry.initialize()
        (build_id,) = succeeded_builds(container, register_doubler(container, "doubler"), 1)
        with TestClient(create_app(container)) as api:
            api.headers["Authorization"] = f"Bearer {settings.token}"
            for method, path, body in [
                ("PUT", "/api/v1/deployments/web", {"build_id": build_id}),
                ("GET", "/api/v1/deployments/web", None),
                ("GET", "/api/v1/deployments", None),
                ("DELETE", "/api/v1/deployments/web", None),
            ]:
                answer = api.request(method, path, json=body)
                assert answer.status_code == 503, answer.text
                detail = answer.json()["detail"]
                assert f"127.0.0.1:{closed}" in detail and "not reachable" in detail
        with container.db.session() as session:
            changes = select(AuditEvent).where(AuditEvent.subject.startswith("deployment/"))
            assert session.scalars(changes).all() == []
    finally:
        container.close()


def test_a_namespace_that_is_not_there_is_503_naming_it(
    tmp_path: Path, postgres_url: str, kube_cluster: TestCluster
) -> None:
    """The API server is up but has nowhere to put the resource: a configuration problem
    of the control plane (503 saying where to look), not the caller's."""
    settings = kube_settings(tmp_path / "home", postgres_url, kube_cluster.kubeconfig, "nowhere")
    container = Container(settings)
    try:
        container.registry.initialize()
        build_id = publish_flaky_build(container, register_doubler(container, "doubler"))
        with TestClient(create_app(container)) as api:
            api.headers["Authorization"] = f"Bearer {settings.token}"
            answer = api.put("/api/v1/deployments/web", json={"build_id": build_id})
            assert answer.status_code == 503, answer.text
            detail = answer.json()["detail"]
            assert "'nowhere'" in detail and "modeldeployments.shipway.io CRD" in detail
            with container.db.session() as session:
                changes = select(AuditEvent).where(AuditEvent.subject.startswith("deployment/"))
                assert session.scalars(changes).all() == []
    finally:
        container.close()
