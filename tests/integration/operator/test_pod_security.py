"""The pods the operator makes are admitted by a namespace that enforces the
``restricted`` Pod Security Standard (the API server's built-in Pod Security admission),
and serve there."""

from __future__ import annotations

import copy
import json

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shipway_operator import manifests
from shipway_operator.spec import Variant, parse_spec

from .conftest import Cluster, resource

pytestmark = pytest.mark.integration

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _restrict(cluster: Cluster) -> None:
    cluster.core.patch_namespace(cluster.namespace, {"metadata": {"labels": RESTRICTED}})


def _pod(template: dict, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template}


@pytest.mark.parametrize(
    "repository", ["https://files.test/minilm/b-1.tar.gz", "s3://bucket/minilm/b-1"]
)
def test_restricted_namespace_admits_the_pods(cluster: Cluster, repository: str) -> None:
    _restrict(cluster)
    body = resource("md", build={"id": "b-1", "modelRepository": repository})
    ctx = manifests.Context(
        manifests.Owner("md", cluster.namespace, "0"), parse_spec(body["spec"]), "fetch:test"
    )
    template = manifests.deployment(ctx, Variant.STABLE, ctx.spec.build, 100)["spec"]["template"][
        "spec"
    ]
    created = cluster.core.create_namespaced_pod(cluster.namespace, _pod(template, "admitted"))
    assert created.metadata.name == "admitted"
    # the control: the same pod without its security settings is refused here
    bare = copy.deepcopy(template)
    bare.pop("securityContext")
    for container in bare["containers"] + bare.get("initContainers", []):
        container.pop("securityContext")
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(cluster.namespace, _pod(bare, "refused"))
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body)["message"]


def test_operator_serves_in_a_restricted_namespace(cluster: Cluster, operator: KopfRunner) -> None:
    _restrict(cluster)
    cluster.create(resource("md"))
    cluster.wait_ready("md")
    pods = cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector="shipway.io/deployment=md"
    ).items
    assert len(pods) == 2
    assert all(isinstance(p, client.V1Pod) and p.status.phase == "Running" for p in pods)
