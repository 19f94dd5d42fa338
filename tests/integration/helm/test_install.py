"""The chart on the real test cluster: every object of each documented value set is
accepted by the API server (server-side apply, dry run, strict field validation); a
``helm install`` creates the release, its migration Job running first as a hook; and
the release's RBAC is proven with tokens of its own ServiceAccounts — the operator
(in-process) brings a ModelDeployment to Ready, the API writes and reads them, the
GitOps worker applies them, the gateway syncs its routes, and none of them reads a
Secret; the build workers' pods mount no token and their account may do nothing."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.integration.operator.conftest import SETTLE, Cluster, operator_running, resource
from tests.kube.cluster import BUILD_COMMAND, TestCluster, unique_name, wait_for
from tests.support import services

from .conftest import CHART, VALUE_SETS, Helm, by_kind

pytestmark = pytest.mark.integration

RELEASE = "rel"


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


@pytest.fixture(scope="module")
def monitoring_crds(kube_cluster: TestCluster) -> None:
    """The Prometheus Operator's ServiceMonitor CRD (copied by build.sh), so that the
    chart's ServiceMonitor meets its real schema."""
    crds = sorted((kube_cluster.binaries.root / "crds" / "prometheus-operator").glob("*.yaml"))
    if not crds:
        services.unavailable(
            "the ServiceMonitor CRD", f"none under {kube_cluster.binaries.root}: `{BUILD_COMMAND}`"
        )
    kube_cluster.install_crds(crds)


def test_every_rendered_object_is_accepted(
    helm: Helm,
    value_set: tuple[str, Path | None],
    kube_cluster: TestCluster,
    kube_api: client.ApiClient,
    kube_namespace: str,
    monitoring_crds: None,
) -> None:
    name, values = value_set
    objects = helm.template(values, namespace=kube_namespace)
    if name == "external":  # its ModelDeployments live in their own namespace
        _ensure_namespace(kube_api, "models")
    dynamic = DynamicClient(kube_api)
    refused: list[str] = []
    for body in objects:
        api = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        try:
            dynamic.server_side_apply(
                api,
                body=body,
                # what helm does: the release's namespace unless the object names its own
                namespace=body["metadata"].get("namespace", kube_namespace)
                if api.namespaced
                else None,
                field_manager="helm-chart-test",
                force_conflicts=True,
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
        except ApiException as exc:
            message = json.loads(exc.body).get("message", exc.body) if exc.body else exc
            refused.append(f"{body['kind']} {body['metadata']['name']}: {message}")
    assert refused == []
    assert len(objects) >= 20  # the whole chart was tried, not an empty rendering


@pytest.fixture(scope="module")
def release(
    helm: Helm, kube_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The chart installed with values-minimal.yaml and GitOps on into a fresh namespace (its name);
    uninstalled afterwards. On the fake node, pods are Running and Ready without
    containers, and the hook Job's pod Succeeds, so ``--wait`` returns."""
    namespace = unique_name("helm")
    helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "-f",
        str(VALUE_SETS["minimal"]),
        # the GitOps worker and its Role, proven below with its own token
        "--set",
        "gitops.enabled=true",
        "--wait",
        "--timeout",
        "4m",
        kubeconfig=kube_cluster.kubeconfig,
    )
    yield namespace
    helm.run(
        "uninstall", RELEASE, "--namespace", namespace, "--wait", kubeconfig=kube_cluster.kubeconfig
    )
    client.CoreV1Api(kube_cluster.api_client()).delete_namespace(
        namespace, propagation_policy="Background"
    )


def _when(rfc3339: str) -> datetime.datetime:
    """A time helm reports (Go's RFC 3339 to the nanosecond; Python keeps microseconds)."""
    return datetime.datetime.fromisoformat(rfc3339)


def _get(dynamic: DynamicClient, body: dict[str, Any], namespace: str) -> Any:
    api = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    return api.get(name=body["metadata"]["name"], namespace=namespace if api.namespaced else None)


def test_install_creates_the_release_after_its_migration_hook(
    helm: Helm, kube_cluster: TestCluster, kube_api: client.ApiClient, release: str
) -> None:
    kubeconfig = kube_cluster.kubeconfig
    manifest = helm.run("get", "manifest", RELEASE, "-n", release, kubeconfig=kubeconfig)
    objects = [doc for doc in yaml.safe_load_all(manifest.stdout) if doc]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ServiceAccount", "Role", "ClusterRole"} <= kinds
    assert "Job" not in kinds  # the migration Job is no object of the release
    dynamic = DynamicClient(kube_api)
    for body in objects:  # each one is there, made by this release
        live = _get(dynamic, body, release)
        assert live.metadata.annotations["meta.helm.sh/release-name"] == RELEASE, body
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(release).items
    assert sorted(d.metadata.name for d in deployments) == [
        f"{RELEASE}-shipway-{role}" for role in ("api", "gateway", "gitops", "operator", "worker")
    ]
    assert all(d.status.available_replicas == d.spec.replicas for d in deployments)

    hooks = [
        doc
        for doc in yaml.safe_load_all(
            helm.run("get", "hooks", RELEASE, "-n", release, kubeconfig=kubeconfig).stdout
        )
        if doc
    ]
    job = by_kind(hooks, "Job")[f"{RELEASE}-shipway-migrations"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    status = json.loads(
        helm.run("status", RELEASE, "-n", release, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    ran = next(h for h in status["hooks"] if h["kind"] == "Job")
    assert ran["last_run"]["phase"] == "Succeeded"
    # it finished before any of the release's Deployments was made (helm's clock and the
    # API server's are this machine's); succeeded, it was deleted (hook-succeeded)
    # (the API server keeps whole seconds)
    finished = _when(ran["last_run"]["completed_at"]).replace(microsecond=0)
    assert all(d.metadata.creation_timestamp >= finished for d in deployments)
    with pytest.raises(ApiException) as gone:
        client.BatchV1Api(kube_api).read_namespaced_job(f"{RELEASE}-shipway-migrations", release)
    assert gone.value.status == 404

    notes = helm.run("get", "notes", RELEASE, "-n", release, kubeconfig=kubeconfig).stdout
    assert f"port-forward svc/{RELEASE}-shipway-api 8700:8700" in notes
    assert f"get secret {RELEASE}-shipway" in notes  # where the generated token is
    assert "operator.prometheusUrl is not set" in notes  # values-minimal sets none
    assert f"applied by\n{RELEASE}-shipway-gitops, the only worker with a Kubernetes token" in notes


def _account_api(cluster: TestCluster, account: str, namespace: str, directory: Path) -> Path:
    """A kubeconfig file of a ServiceAccount, its token from the TokenRequest API."""
    core = client.CoreV1Api(cluster.api_client())
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account}}],
        "current-context": "test",
    }
    path = directory / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


def _client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def _refused_secrets(api: client.ApiClient, *namespaces: str) -> None:
    core = client.CoreV1Api(api)
    for namespace in namespaces:
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_secret(namespace)
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            core.read_namespaced_secret(f"{RELEASE}-shipway", namespace)
        assert refused.value.status == 403


def test_the_operator_account_serves_a_model_deployment(
    kube_cluster: TestCluster,
    kube_api: client.ApiClient,
    kube_namespace: str,
    release: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator in this process with only a token of the release's operator account:
    a verb the chart's ClusterRole lacks fails its reconcile, so the resource would never
    be Ready."""
    kubeconfig = _account_api(kube_cluster, f"{RELEASE}-shipway-operator", release, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHIPWAY_OPERATOR_FETCH_IMAGE", "registry.test/shipway:test")
    monkeypatch.setenv("SHIPWAY_OPERATOR_RESYNC_SECONDS", "3600")
    cluster = Cluster(kube_api, kube_namespace)
    target = {"metric": "cpu", "averageUtilization": 60}
    scaling = {"minReplicas": 1, "maxReplicas": 2, "target": target}
    with operator_running():
        cluster.create(resource("md", replicas=None, autoscaling=scaling))
        ready = cluster.wait_ready("md")
        assert ready["status"]["stableBuild"]["id"] == "b-1"
        for read in (cluster.deployment, cluster.service, cluster.hpa, cluster.pdb):
            assert read("md-stable") is not None
    account = _client(kubeconfig)
    try:
        _refused_secrets(account, release, kube_namespace)
    finally:
        account.close()


def test_the_api_account_manages_model_deployments_of_its_namespace_only(
    kube_cluster: TestCluster, kube_namespace: str, release: str, tmp_path: Path
) -> None:
    from shipway.kubernetes.model_deployments import ModelDeployments

    account = _client(_account_api(kube_cluster, f"{RELEASE}-shipway-api", release, tmp_path))
    try:
        # values-minimal: ModelDeployments in the release's namespace
        store = ModelDeployments(account, release)
        body = resource("md")
        body["metadata"]["namespace"] = release
        applied = store.apply(body)
        assert applied["metadata"]["name"] == "md"
        assert [item["metadata"]["name"] for item in store.list()] == ["md"]
        assert store.get("md")["spec"]["build"]["id"] == "b-1"
        assert store.pods("md") == {}
        store.delete("md")
        assert store.find("md") is None
        # nothing elsewhere, and no Secret anywhere
        custom = client.CustomObjectsApi(account)
        with pytest.raises(ApiException) as refused:
            custom.list_namespaced_custom_object(
                "shipway.io", "v1alpha1", kube_namespace, "modeldeployments"
            )
        assert refused.value.status == 403
        _refused_secrets(account, release)
    finally:
        account.close()


def test_the_gitops_worker_account_applies_model_deployments_but_deletes_none(
    kube_cluster: TestCluster, release: str, tmp_path: Path
) -> None:
    """With gitops.enabled the GitOps worker applies pushed specs: what ``shipway apply``
    does on Kubernetes (server-side apply of the ModelDeployment, read it back, list its
    pods) under that worker's own token; deleting and Secrets stay refused."""
    from shipway.kubernetes.model_deployments import ModelDeployments

    account = _client(_account_api(kube_cluster, f"{RELEASE}-shipway-gitops", release, tmp_path))
    try:
        store = ModelDeployments(account, release)
        body = resource("from-git")
        body["metadata"]["namespace"] = release
        assert store.apply(body)["metadata"]["name"] == "from-git"
        assert store.get("from-git")["spec"]["build"]["id"] == "b-1"
        assert "from-git" in [item["metadata"]["name"] for item in store.list()]
        assert store.pods("from-git") == {}
        with pytest.raises(ApiException) as refused:
            client.CustomObjectsApi(account).delete_namespaced_custom_object(
                "shipway.io", "v1alpha1", release, "modeldeployments", "from-git"
            )
        assert refused.value.status == 403
        _refused_secrets(account, release)
    finally:
        account.close()


def _token_volumes(pod: client.V1Pod) -> list[str]:
    """The pod's volumes that carry a ServiceAccount token (the projected
    ``kube-api-access-*`` volume the API server's ServiceAccount admission adds)."""
    return [
        volume.name
        for volume in pod.spec.volumes or []
        if volume.projected is not None
        and any(source.service_account_token for source in volume.projected.sources or [])
    ]


def test_the_build_workers_have_no_token_and_no_role(
    kube_cluster: TestCluster, kube_api: client.ApiClient, release: str, tmp_path: Path
) -> None:
    """The build workers run the models being built: with gitops.enabled too, their pods
    mount no token (the GitOps worker's pod does, so the check can see one), nothing binds
    their account to a role, and a token made for it anyway is refused ModelDeployments,
    pods and Secrets."""
    core = client.CoreV1Api(kube_api)
    worker, gitops = f"{RELEASE}-shipway-worker", f"{RELEASE}-shipway-gitops"
    assert (
        core.read_namespaced_service_account(worker, release).automount_service_account_token
        is False
    )

    def pods(component: str) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        return core.list_namespaced_pod(release, label_selector=selector).items

    built, applying = pods("worker"), pods("gitops")
    assert built and applying  # the release runs both (install --wait)
    for pod in built:
        assert pod.spec.service_account_name == worker
        assert _token_volumes(pod) == [], pod.metadata.name
    for pod in applying:
        assert pod.spec.service_account_name == gitops
        assert len(_token_volumes(pod)) == 1, pod.metadata.name

    rbac = client.RbacAuthorizationV1Api(kube_api)
    subject = ("ServiceAccount", worker, release)
    bound = [
        binding.metadata.name
        for binding in [
            *rbac.list_role_binding_for_all_namespaces().items,
            *rbac.list_cluster_role_binding().items,
        ]
        if any((s.kind, s.name, s.namespace) == subject for s in binding.subjects or [])
    ]
    assert bound == []

    account = _client(_account_api(kube_cluster, worker, release, tmp_path))
    try:
        custom = client.CustomObjectsApi(account)
        body = resource("from-a-build")
        body["metadata"]["namespace"] = release
        for call in (
            lambda: custom.list_namespaced_custom_object(
                "shipway.io", "v1alpha1", release, "modeldeployments"
            ),
            lambda: custom.create_namespaced_custom_object(
                "shipway.io", "v1alpha1", release, "modeldeployments", body
            ),
            lambda: custom.patch_namespaced_custom_object(
                "shipway.io", "v1alpha1", release, "modeldeployments", "from-git", body
            ),
            lambda: client.CoreV1Api(account).list_namespaced_pod(release),
        ):
            with pytest.raises(ApiException) as refused:
                call()
            assert refused.value.status == 403
        _refused_secrets(account, release)
    finally:
        account.close()


def test_the_gateway_account_syncs_its_routes(
    kube_cluster: TestCluster, kube_api: client.ApiClient, release: str, tmp_path: Path
) -> None:
    from shipway.gateway.kube_source import KubernetesRouteSource

    Cluster(kube_api, release).create(resource("routed"))
    account = _client(_account_api(kube_cluster, f"{RELEASE}-shipway-gateway", release, tmp_path))
    source = KubernetesRouteSource(account, release)
    try:
        source.start()
        wait_for(lambda: source.synced, SETTLE, "the gateway's routes synced under its role")
        assert source.table().get("routed") is not None
        _refused_secrets(account, release)
    finally:
        source.stop()
        account.close()
        Cluster(kube_api, release).delete("routed")


def test_an_upgrade_migrates_again_and_keeps_the_generated_credentials(
    helm: Helm, kube_cluster: TestCluster, kube_api: client.ApiClient, release: str
) -> None:
    kubeconfig = kube_cluster.kubeconfig
    core = client.CoreV1Api(kube_api)
    before = core.read_namespaced_secret(f"{RELEASE}-shipway", release).data
    first = json.loads(
        helm.run("status", RELEASE, "-n", release, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    helm.run(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        release,
        "-f",
        str(VALUE_SETS["minimal"]),
        "--set",
        "api.replicas=2",
        "--wait",
        "--timeout",
        "4m",
        kubeconfig=kubeconfig,
    )
    status = json.loads(
        helm.run("status", RELEASE, "-n", release, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert status["version"] == first["version"] + 1
    hook = next(h for h in status["hooks"] if h["kind"] == "Job")
    earlier = next(h for h in first["hooks"] if h["kind"] == "Job")
    assert hook["last_run"]["phase"] == "Succeeded"
    assert _when(hook["last_run"]["started_at"]) > _when(earlier["last_run"]["completed_at"])
    after = core.read_namespaced_secret(f"{RELEASE}-shipway", release).data
    # the token and archive key generated at install stay (the lookup of the live Secret)
    assert after["api-tokens"] == before["api-tokens"]
    assert after["archive-key"] == before["archive-key"]
    api = client.AppsV1Api(kube_api).read_namespaced_deployment(f"{RELEASE}-shipway-api", release)
    assert api.spec.replicas == 2
