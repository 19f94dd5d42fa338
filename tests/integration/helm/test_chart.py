"""The chart as ``helm`` renders it: lint, the three documented value sets, what every
pod must carry (pod security, probes, resources, no migration on start), the migration
hook, the Secret, RBAC from the operator's shipped roles, the CRDs from the operator's,
and the schema's refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from sqlalchemy.engine import make_url

from shipway.drift.metrics import DriftMetrics
from shipway.gateway.metrics import GatewayMetrics
from tests.kube.cluster import REPO

from .conftest import CHART, VALUE_SETS, Helm, by_kind

pytestmark = pytest.mark.integration

RBAC = REPO / "operators" / "rbac"
OPERATOR_CRDS = REPO / "operators" / "shipway_operator" / "crds"
SERVERS = ("api", "worker", "operator", "gateway")
GITOPS = "rel-shipway-gitops"  # the GitOps worker: only with gitops.enabled (values-external)


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name: everything that makes pods."""
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "Job")}


def test_lint_passes_strict_for_each_value_set(
    helm: Helm, value_set: tuple[str, Path | None]
) -> None:
    _, values = value_set
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    done = helm.run(*args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_every_role_is_rendered(helm: Helm, value_set: tuple[str, Path | None]) -> None:
    name, values = value_set
    objects = helm.template(values)
    deployments = by_kind(objects, "Deployment")
    gitops = [GITOPS] if name == "external" else []
    assert sorted(deployments) == sorted([f"rel-shipway-{role}" for role in SERVERS] + gitops)
    assert sorted(by_kind(objects, "Service")) == ["rel-shipway-api", "rel-shipway-gateway"]
    assert list(by_kind(objects, "CustomResourceDefinition")) == ["modeldeployments.shipway.io"]
    assert "rel-shipway" in by_kind(objects, "ConfigMap")
    pdbs = sorted(by_kind(objects, "PodDisruptionBudget"))
    monitors = sorted(by_kind(objects, "ServiceMonitor"))
    if name == "minimal":  # a trial cluster: no budgets, no dashboard
        assert pdbs == [] and "rel-shipway-dashboard" not in by_kind(objects, "ConfigMap")
    else:
        assert pdbs == ["rel-shipway-api", "rel-shipway-gateway", "rel-shipway-worker"]
    assert monitors == (["rel-shipway-api", "rel-shipway-gateway"] if name == "external" else [])
    # the in-cluster gateway: Kubernetes mode, bound to all addresses, its namespace
    config = by_kind(objects, "ConfigMap")["rel-shipway"]["data"]
    assert config["SHIPWAY_RUNTIME"] == "kubernetes"
    gateway = deployments["rel-shipway-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert gateway["args"][:2] == ["serve", "gateway"]
    assert env["SHIPWAY_GATEWAY_HOST"] == "0.0.0.0"
    model_namespace = "models" if name == "external" else "shipway"
    assert env["SHIPWAY_GATEWAY_NAMESPACE"] == model_namespace
    assert config["SHIPWAY_KUBERNETES_NAMESPACE"] == model_namespace


def test_every_pod_is_restricted_and_sized(helm: Helm, value_set: tuple[str, Path | None]) -> None:
    """The restricted Pod Security Standard for every pod, resources for every container,
    probes for the servers, and no server that migrates the schema on start."""
    objects = helm.template(value_set[1])
    for name, workload in workloads(objects).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["serviceAccountName"], name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name
            # writable places are volumes, as a read-only root needs
            assert {"/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}, name
            if workload["kind"] == "Deployment" and container.get("args", [])[:1] == ["serve"]:
                assert "--no-migrate" in container["args"], name
    deployments = by_kind(objects, "Deployment")
    for role in ("api", "gateway"):
        container = deployments[f"rel-shipway-{role}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["port"] == "http", role
        assert container["livenessProbe"]["httpGet"]["port"] == "http", role
    operator = deployments["rel-shipway-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert operator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["SHIPWAY_OPERATOR_LIVENESS_ENDPOINT"].endswith(":8080/healthz")
    assert env["SHIPWAY_OPERATOR_FETCH_IMAGE"] == operator["image"]


def test_migrations_run_once_in_a_hook_job(helm: Helm, value_set: tuple[str, Path | None]) -> None:
    name, values = value_set
    objects = helm.template(values)
    jobs = by_kind(objects, "Job")
    assert list(jobs) == ["rel-shipway-migrations"]
    job = jobs["rel-shipway-migrations"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    database = next(e for e in container["env"] if e["name"] == "SHIPWAY_DATABASE_URL")
    source = database["valueFrom"]["secretKeyRef"]["name"]
    # hooks run before the release's objects exist: what the Job needs is a hook too
    # (made earlier, by weight), or the existing Secret
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    for kind, needed in (("ServiceAccount", account), ("Secret", source)):
        if name == "external" and kind == "Secret":
            assert source == "shipway-credentials"
            assert by_kind(objects, "Secret") == {}
            continue
        made = by_kind(objects, kind)[needed]
        assert made["metadata"]["annotations"]["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(made["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )


def test_the_secret_holds_the_connection_urls(helm: Helm) -> None:
    password = "p@ss:w/rd?&%"
    objects = helm.template(
        None,
        "--set-string",
        f"postgresql.password={password}",
        "--set-string",
        f"redis.password={password}",
        "--set",
        "redis.tls=true",
    )
    data = by_kind(objects, "Secret")["rel-shipway"]["stringData"]
    url = make_url(data["database-url"])
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "shipway-postgresql",
        5432,
        "shipway",
    )
    assert url.password == password and url.query == {"sslmode": "prefer"}
    redis = re.fullmatch(r"rediss://:([^@]+)@shipway-redis:6379/0", data["redis-url"])
    assert redis is not None and unquote(redis.group(1)) == password
    tokens = json.loads(data["api-tokens"])
    assert list(tokens.values()) == ["admin"] and len(next(iter(tokens))) >= 16
    assert len(data["archive-key"]) >= 16
    # the migrations' own Secret says the same
    assert by_kind(objects, "Secret")["rel-shipway-migrations"]["stringData"] == {
        "database-url": data["database-url"]
    }
    # every process reads the chart's Secret, a Secret of one's own replaces it
    external = helm.template(VALUE_SETS["external"])
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for w in workloads(external).values()
        for c in w["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"shipway-credentials"}


def test_crds_are_the_operators() -> None:
    """One source of truth: crds/ is a copy of the operator's CRDs, byte for byte (Helm
    installs crds/ as they are; a symlink would make every helm command warn). After a
    change of the operator's CRD: cp operators/shipway_operator/crds/*.yaml helm/shipway/crds/"""
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    operator = {p.name: p.read_bytes() for p in OPERATOR_CRDS.glob("*.yaml")}
    assert chart == operator


def test_rbac_is_the_shipped_roles_one_account_per_role(
    helm: Helm, value_set: tuple[str, Path | None]
) -> None:
    objects = helm.template(value_set[1])
    shipped = yaml.safe_load((RBAC / "clusterrole.yaml").read_text())["rules"]
    assert by_kind(objects, "ClusterRole")["rel-shipway-operator"]["rules"] == shipped
    gateway = yaml.safe_load((RBAC / "gateway-role.yaml").read_text())["rules"]
    roles = by_kind(objects, "Role")
    assert roles["rel-shipway-gateway"]["rules"] == gateway
    assert roles["rel-shipway-api"]["rules"] == [
        {
            "apiGroups": ["shipway.io"],
            "resources": ["modeldeployments"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    # nothing anywhere grants Secrets
    for role in [*roles.values(), *by_kind(objects, "ClusterRole").values()]:
        assert all("secrets" not in rule["resources"] for rule in role["rules"])
    deployments = by_kind(objects, "Deployment")
    accounts = {w["spec"]["template"]["spec"]["serviceAccountName"] for w in deployments.values()}
    assert len(accounts) == len(deployments)
    service_accounts = by_kind(objects, "ServiceAccount")
    # the build workers never get a token or a Role; the GitOps worker where there is one
    # (values-external) does
    worker = deployments["rel-shipway-worker"]["spec"]["template"]["spec"]
    assert service_accounts["rel-shipway-worker"]["automountServiceAccountToken"] is False
    assert worker["automountServiceAccountToken"] is False
    assert "rel-shipway-worker" not in roles
    assert (GITOPS in roles) is (value_set[0] == "external")
    bindings = {**by_kind(objects, "RoleBinding"), **by_kind(objects, "ClusterRoleBinding")}
    for binding in bindings.values():
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
        assert [s["name"] for s in binding["subjects"]] == [binding["metadata"]["name"]]
    assert "rel-shipway-worker" not in bindings


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]


def _secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


HOOK_VARIABLES = {
    "SHIPWAY_GITHUB_WEBHOOK_SECRET": "github-webhook-secret",
    "SHIPWAY_GITLAB_WEBHOOK_TOKEN": "gitlab-webhook-token",
    "SHIPWAY_MLFLOW_WEBHOOK_SECRET": "mlflow-webhook-secret",
    "SHIPWAY_GITOPS_REPOSITORY_URL": "gitops-repository-url",
}


def _no_api_token(container: dict[str, Any]) -> None:
    """The build workers' API tokens: none (an empty map; production refuses unset)."""
    tokens = [e for e in container["env"] if e["name"] == "SHIPWAY_API_TOKENS"]
    assert tokens == [{"name": "SHIPWAY_API_TOKENS", "value": "{}"}]


def test_without_gitops_there_is_no_gitops_worker_and_no_token_for_workers(helm: Helm) -> None:
    """Off by default: no GitOps worker, its account or Role; the build workers have no
    Kubernetes identity and no API token, and the hooks stay off (404: no process reads
    their secrets)."""
    off = helm.template()
    for kind in ("Deployment", "ServiceAccount", "Role", "RoleBinding"):
        assert GITOPS not in by_kind(off, kind), kind
    assert "rel-shipway-worker" not in by_kind(off, "Role")
    assert "rel-shipway-worker" not in by_kind(off, "RoleBinding")
    worker = by_kind(off, "Deployment")["rel-shipway-worker"]["spec"]["template"]["spec"]
    assert worker["automountServiceAccountToken"] is False
    assert worker["containers"][0]["args"] == [
        "serve",
        "worker",
        "--no-migrate",
        "--consume",
        "builds",
    ]
    _no_api_token(worker["containers"][0])
    for workload in workloads(off).values():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert not names & set(HOOK_VARIABLES)


def test_gitops_gives_its_own_worker_the_hook_queue_the_role_and_the_settings(
    helm: Helm,
) -> None:
    """On: a GitOps worker that consumes only the hook queue holds the token and a Role
    limited to writing ModelDeployments; the build workers consume only the build queue,
    mount no token, are bound to nothing and read none of the hooks' secrets; the API
    and the GitOps worker read the queue's name from the one ConfigMap."""
    objects = helm.template(
        None,
        "--set",
        "gitops.enabled=true",
        "--set",
        "gitops.repositoryUrl=https://git.example.com/models.git",
        "--set",
        "gitops.branch=release/v1",
        "--set",
        "gitops.worker.queue=deliveries",
        "--set",
        "gitops.worker.replicas=2",
        "--set",
        "secrets.githubWebhookSecret=a-github-secret",
        "--set",
        "secrets.mlflowWebhookSecret=an-mlflow-secret",
    )
    assert by_kind(objects, "Role")[GITOPS]["rules"] == [
        {
            "apiGroups": ["shipway.io"],
            "resources": ["modeldeployments"],
            "verbs": ["get", "list", "create", "patch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    binding = by_kind(objects, "RoleBinding")[GITOPS]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": GITOPS, "namespace": "shipway"}
    ]
    accounts = by_kind(objects, "ServiceAccount")
    assert accounts[GITOPS]["automountServiceAccountToken"] is True
    assert accounts["rel-shipway-worker"]["automountServiceAccountToken"] is False
    assert "rel-shipway-worker" not in by_kind(objects, "Role")
    assert "rel-shipway-worker" not in by_kind(objects, "RoleBinding")

    deployments = by_kind(objects, "Deployment")
    gitops = deployments[GITOPS]["spec"]
    assert gitops["replicas"] == 2
    assert gitops["template"]["spec"]["serviceAccountName"] == GITOPS
    assert gitops["template"]["spec"]["automountServiceAccountToken"] is True
    assert gitops["template"]["spec"]["containers"][0]["args"] == [
        "serve",
        "worker",
        "--no-migrate",
        "--consume",
        "hooks",
    ]
    worker = deployments["rel-shipway-worker"]["spec"]["template"]["spec"]
    assert worker["serviceAccountName"] == "rel-shipway-worker"
    assert worker["automountServiceAccountToken"] is False
    assert worker["containers"][0]["args"][-2:] == ["--consume", "builds"]

    config = by_kind(objects, "ConfigMap")["rel-shipway"]["data"]
    assert (config["SHIPWAY_BUILD_QUEUE"], config["SHIPWAY_HOOK_QUEUE"]) == ("builds", "deliveries")
    for name in ("rel-shipway-api", GITOPS, "rel-shipway-worker"):
        container = _container(objects, name)
        assert container["envFrom"] == [{"configMapRef": {"name": "rel-shipway"}}], name
        assert not {e["name"] for e in container["env"]} & {
            "SHIPWAY_HOOK_QUEUE",
            "SHIPWAY_BUILD_QUEUE",
        }, name  # nothing overrides the ConfigMap's one value
    assert config["SHIPWAY_GITOPS_BRANCH"] == "release/v1"
    assert config["SHIPWAY_GITOPS_SPEC_PATH"] == "shipway.yaml"
    assert "SHIPWAY_GITOPS_REPOSITORY_URL" not in config  # it may carry a token
    secret = by_kind(objects, "Secret")["rel-shipway"]["stringData"]
    assert secret["gitops-repository-url"] == "https://git.example.com/models.git"
    assert secret["github-webhook-secret"] == "a-github-secret"
    assert secret["mlflow-webhook-secret"] == "an-mlflow-secret"
    assert "gitlab-webhook-token" not in secret
    # the API (checks deliveries) and the GitOps worker (fetches) read the hooks' secrets
    for name in ("rel-shipway-api", GITOPS):
        refs = _secret_refs(_container(objects, name))
        for variable, key in HOOK_VARIABLES.items():
            assert refs[variable] == {"name": "rel-shipway", "key": key, "optional": True}, name
    # the build workers none: the repository URL may carry a token too
    assert not set(_secret_refs(_container(objects, "rel-shipway-worker"))) & set(HOOK_VARIABLES)
    # and the API's tokens only where a process answers or applies as the API
    for name in ("rel-shipway-api", GITOPS):
        tokens = _secret_refs(_container(objects, name))["SHIPWAY_API_TOKENS"]
        assert tokens == {"name": "rel-shipway", "key": "api-tokens"}, name
    _no_api_token(_container(objects, "rel-shipway-worker"))


def test_the_hook_queue_must_not_be_the_build_queue(helm: Helm) -> None:
    """The same name for both would hand deliveries to the build workers again."""
    done = helm.run(
        "template",
        "rel",
        str(CHART),
        "--set",
        "gitops.enabled=true",
        "--set",
        "gitops.worker.queue=jobs",
        "--set",
        "worker.queue=jobs",
        check=False,
    )
    assert done.returncode != 0
    assert 'gitops.worker.queue and worker.queue are both "jobs"' in done.stderr, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "setting",
    [
        "gitops.repositoryUrl=https://git.example.com/models.git",
        "secrets.githubWebhookSecret=a-github-secret",
        "secrets.gitlabWebhookToken=a-gitlab-token",
        "secrets.mlflowWebhookSecret=an-mlflow-secret",
    ],
)
def test_gitops_settings_without_gitops_enabled_fail_the_install(helm: Helm, setting: str) -> None:
    """Without the GitOps worker no delivery would ever be applied: refused at install,
    naming what to set, rather than hooks that answer 202 and then wait forever."""
    done = helm.run("template", "rel", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert "need gitops.enabled=true" in done.stderr, done.stderr
    assert done.stdout == ""
    objects = helm.template(None, "--set", setting, "--set", "gitops.enabled=true")
    assert GITOPS in by_kind(objects, "Role")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("api.replicas=two", "at '/api/replicas': got string, want integer"),
        ("api.replica=2", "at '/api': additional properties 'replica' not allowed"),
        ("gitops.enabld=true", "at '/gitops': additional properties 'enabld' not allowed"),
        ("gitops.branch=", "at '/gitops/branch': '' does not match pattern"),
        ("gitops.repositoryUrl=not a url", "at '/gitops/repositoryUrl'"),
        # the chart mounts no SSH key: an ssh URL could never be fetched
        ("gitops.repositoryUrl=git@github.com:acme/models.git", "at '/gitops/repositoryUrl'"),
        # the URL may carry a token: never in clear text
        ("gitops.repositoryUrl=http://git.example.com/models.git", "at '/gitops/repositoryUrl'"),
        (
            "secrets.apiTokens.a-token-of-twenty-chars=root",
            "value must be one of 'admin', 'deployer', 'viewer'",
        ),
        ("secrets.apiTokens.short=admin", "at '/secrets/apiTokens': additional properties 'short'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("mlflow.trackingUri=mlflow:5000", "at '/mlflow/trackingUri'"),
        ("postgresql.port=70000", "at '/postgresql/port'"),
        ("worker.resources.requests.cpu=lots", "at '/worker/resources/requests/cpu'"),
        ("gitops.worker.queue=", "at '/gitops/worker/queue'"),
        ("gitops.worker.replicas=-1", "at '/gitops/worker/replicas'"),
        ("gitops.worker.replica=2", "at '/gitops/worker': additional properties 'replica'"),
        ("gitops.worker.resources.limits.memory=lots", "at '/gitops/worker/resources/limits"),
        ("settings.extraEnv.DEBUG=1", "at '/settings/extraEnv': additional properties 'DEBUG'"),
    ],
)
def test_a_wrong_value_fails_with_the_schema_message(
    helm: Helm, setting: str, message: str
) -> None:
    done = helm.run("template", "rel", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr
    assert done.stdout == ""  # nothing rendered


def test_dashboard_queries_name_real_series(helm: Helm) -> None:
    """Every query of the dashboard names series the gateway, the API's drift checks or
    Triton export (the gateway's and drift's from their registries, not a list here)."""
    dashboard = json.loads(
        by_kind(helm.template(None), "ConfigMap")["rel-shipway-dashboard"]["data"]["shipway.json"]
    )
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    exported: set[str] = set()
    for registry in (GatewayMetrics().registry, DriftMetrics().registry):
        for family in registry.collect():
            exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
    queries = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert queries
    for query in queries:
        names = set(re.findall(r"\b((?:shipway|nv)_[a-z_]+)\b", query))
        assert names, query
        shipway = {n for n in names if n.startswith("shipway_")}
        assert shipway <= exported, (query, shipway - exported)
