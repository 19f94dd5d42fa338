"""The operator's shipped RBAC (operators/rbac/) is enough, and no more: the operator runs
with only a token of its ServiceAccount (from the TokenRequest API) and serves a
ModelDeployment through create, rollout and rollback of a candidate, on an API server that
enforces ``OwnerReferencesPermissionEnforcement`` (owner references with
``blockOwnerDeletion`` need ``update`` on ``modeldeployments/finalizers``); the account
cannot read Secrets.

The admission plugin is not on in the session's cluster, so this module starts its own
(and stops it after its tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, utils
from kubernetes.client.exceptions import ApiException

from tests.kube.cluster import BUILD_COMMAND, Binaries, TestCluster, unique_name, wait_for
from tests.kube.fixtures import OPERATOR_CRDS
from tests.support import services

from .conftest import SETTLE, Cluster, operator_running, resource

pytestmark = pytest.mark.integration

RBAC = Path(__file__).resolve().parents[3] / "operators" / "rbac"
ACCOUNT, ACCOUNT_NAMESPACE = "shipway-operator", "shipway-system"
B2 = {"id": "b-2", "modelRepository": "s3://models/minilm/b-2"}


@pytest.fixture(scope="module")
def enforcing_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """A test cluster whose API server also enforces OwnerReferencesPermissionEnforcement,
    with the operator's CRDs and shipped RBAC installed."""
    binaries = Binaries.default()
    if missing := binaries.missing():
        services.unavailable(
            "the Kubernetes test cluster",
            f"{', '.join(missing)} missing under {binaries.root}; build with `{BUILD_COMMAND}`",
        )
    extra = {
        "kube-apiserver": ["--enable-admission-plugins=OwnerReferencesPermissionEnforcement"],
        "kube-controller-manager": ["--horizontal-pod-autoscaler-sync-period=5s"],
    }
    with TestCluster(tmp_path_factory.mktemp("kube-rbac"), binaries, extra_args=extra) as cluster:
        cluster.install_crds(sorted(OPERATOR_CRDS.glob("*.yaml")))
        admin = cluster.api_client()
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": ACCOUNT_NAMESPACE}})
        for path in sorted(RBAC.glob("*.yaml")):
            utils.create_from_yaml(admin, str(path))
        yield cluster


def _account_kubeconfig(
    cluster: TestCluster,
    directory: Path,
    account: str = ACCOUNT,
    namespace: str = ACCOUNT_NAMESPACE,
) -> Path:
    """A kubeconfig of a ServiceAccount (the operator's by default), its token from the
    TokenRequest API."""
    core = client.CoreV1Api(cluster.api_client())
    request = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    config = {
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
        "users": [{"name": account, "user": {"token": request.status.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account}}],
        "current-context": "test",
    }
    path = directory / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _account_api(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
def workload_namespace(enforcing_cluster: TestCluster) -> Iterator[Cluster]:
    admin = enforcing_cluster.api_client()
    core = client.CoreV1Api(admin)
    name = unique_name("rbac")
    core.create_namespace({"metadata": {"name": name}})

    def has_default_account() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(has_default_account, 30, f"service account default in namespace {name}")
    yield Cluster(admin, name)
    core.delete_namespace(name, propagation_policy="Background")


def test_operator_serves_with_only_its_shipped_role(
    enforcing_cluster: TestCluster,
    workload_namespace: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig = _account_kubeconfig(enforcing_cluster, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHIPWAY_OPERATOR_FETCH_IMAGE", "registry.test/shipway-operator:test")
    monkeypatch.setenv("SHIPWAY_OPERATOR_RESYNC_SECONDS", "3600")  # restores come from watches
    cluster = workload_namespace
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "target": {"metric": "cpu", "averageUtilization": 60},
    }
    with operator_running():
        cluster.create(resource("md", replicas=None, autoscaling=scaling))
        ready = cluster.wait_ready("md")
        assert ready["status"]["stableBuild"]["id"] == "b-1"
        for read in (cluster.deployment, cluster.service, cluster.hpa, cluster.pdb):
            made = read("md-stable")
            assert made is not None
            assert made.metadata.owner_references[0].block_owner_deletion is True

        # a candidate made (create) and, with the stable build back, pruned (list, delete)
        cluster.patch_spec("md", {"build": B2})
        wait_for(lambda: cluster.hpa("md-candidate"), SETTLE, "candidate HPA")
        cluster.patch_spec("md", {"build": resource("x")["spec"]["build"]})
        wait_for(
            lambda: (
                cluster.owned("md")["Deployment"] == ["md-stable"]
                and cluster.owned("md")["HorizontalPodAutoscaler"] == ["md-stable"]
            ),
            SETTLE,
            "candidate objects pruned",
        )
        cluster.wait_ready("md")

        # what someone deletes comes back, seen through the role's watches (not a resync)
        core, policy = cluster.core, cluster.policy
        service_uid = cluster.service("md-stable").metadata.uid
        pdb_uid = cluster.pdb("md-stable").metadata.uid
        core.delete_namespaced_service("md-stable", cluster.namespace)
        policy.delete_namespaced_pod_disruption_budget("md-stable", cluster.namespace)
        for read, uid in ((cluster.service, service_uid), (cluster.pdb, pdb_uid)):
            wait_for(
                lambda read=read, uid=uid: (
                    (o := read("md-stable")) is not None and o.metadata.uid != uid
                ),
                SETTLE,
                "a deleted object restored under the shipped role",
            )

        # kopf posts events of the resource (kopf.event/info/warn; its log messages only
        # with settings.posting.loggers, off by default, so none came above): the account
        # posts one as kopf does
        account = _account_api(kubeconfig)
        try:
            md = cluster.get("md")
            event = client.CoreV1Api(account).create_namespaced_event(
                cluster.namespace,
                {
                    "metadata": {"generateName": "kopf-event-"},
                    "type": "Normal",
                    "reason": "Logging",
                    "message": "Handler 'reconcile_model_deployment' succeeded.",
                    "involvedObject": {
                        "apiVersion": md["apiVersion"],
                        "kind": md["kind"],
                        "name": "md",
                        "namespace": cluster.namespace,
                        "uid": md["metadata"]["uid"],
                    },
                },
            )
            assert event.metadata.name.startswith("kopf-event-")
        finally:
            account.close()


def test_operator_account_cannot_read_secrets(
    enforcing_cluster: TestCluster, workload_namespace: Cluster, tmp_path: Path
) -> None:
    api = _account_api(_account_kubeconfig(enforcing_cluster, tmp_path))
    try:
        review = client.AuthorizationV1Api(api).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "verb": "get",
                        "resource": "secrets",
                        "namespace": workload_namespace.namespace,
                    }
                }
            }
        )
        assert review.status.allowed is False
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).list_namespaced_secret(workload_namespace.namespace)
        assert refused.value.status == 403
        # the control: the same account may do what the role grants
        allowed = client.AuthorizationV1Api(api).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "verb": "update",
                        "group": "shipway.io",
                        "resource": "modeldeployments",
                        "subresource": "finalizers",
                        "namespace": workload_namespace.namespace,
                    }
                }
            }
        )
        assert allowed.status.allowed is True
    finally:
        api.close()


def test_gateway_reads_its_routes_with_only_its_shipped_role(
    enforcing_cluster: TestCluster, workload_namespace: Cluster, tmp_path: Path
) -> None:
    """The in-cluster gateway's Role (operators/rbac/gateway-role.yaml), bound to its
    account in the namespace it serves, is enough for its route source to sync and route
    a ModelDeployment; the account reads no Secrets."""
    from shipway.gateway.kube_source import KubernetesRouteSource

    admin = enforcing_cluster.api_client()
    namespace = workload_namespace.namespace
    role = yaml.safe_load((RBAC / "gateway-role.yaml").read_text())
    role["metadata"]["namespace"] = namespace
    client.RbacAuthorizationV1Api(admin).create_namespaced_role(namespace, role)
    client.CoreV1Api(admin).create_namespaced_service_account(
        namespace, {"metadata": {"name": "shipway-gateway"}}
    )
    client.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "shipway-gateway"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": role["metadata"]["name"],
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "shipway-gateway", "namespace": namespace}
            ],
        },
    )
    workload_namespace.create(resource("md"))
    account = _account_api(
        _account_kubeconfig(enforcing_cluster, tmp_path, "shipway-gateway", namespace)
    )
    source = KubernetesRouteSource(account, namespace)
    try:
        source.start()
        wait_for(lambda: source.synced, SETTLE, "the gateway's routes synced under its role")
        assert source.table().get("md") is not None
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(account).list_namespaced_secret(namespace)
        assert refused.value.status == 403
    finally:
        source.stop()
        account.close()
