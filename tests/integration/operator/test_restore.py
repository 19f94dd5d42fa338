"""What someone changes by hand comes back, on the real test cluster: a deleted object is
made again, a hand-edited Deployment is put back, and the periodic resync restores what
no event handler looks at."""

from __future__ import annotations

import pytest

from shipway_operator.kube import spec_drifted
from tests.kube.cluster import TestCluster, wait_for

from .conftest import SETTLE, Cluster, operator_running, resource

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("operator")
def test_a_deleted_service_comes_back(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    before = cluster.service("minilm-stable")
    assert before is not None

    cluster.core.delete_namespaced_service("minilm-stable", cluster.namespace)

    after = wait_for(
        lambda: (
            (s := cluster.service("minilm-stable")) is not None
            and s.metadata.uid != before.metadata.uid
            and s
        ),
        SETTLE,
        "the Service made again",
    )
    assert after.spec.selector == before.spec.selector
    assert [(p.name, p.port, p.target_port) for p in after.spec.ports] == [
        (p.name, p.port, p.target_port) for p in before.spec.ports
    ]
    assert after.metadata.labels == before.metadata.labels
    assert after.metadata.owner_references == before.metadata.owner_references


@pytest.mark.usefixtures("operator")
def test_a_deleted_deployment_comes_back_and_serves_again(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    before = cluster.deployment("minilm-stable")
    assert before is not None

    cluster.apps.delete_namespaced_deployment("minilm-stable", cluster.namespace)

    after = wait_for(
        lambda: (
            (d := cluster.deployment("minilm-stable")) is not None
            and d.metadata.uid != before.metadata.uid
            and d
        ),
        SETTLE,
        "the Deployment made again",
    )
    assert after.spec.replicas == before.spec.replicas
    assert after.spec.template.spec.containers[0].image == (
        before.spec.template.spec.containers[0].image
    )
    wait_for(
        lambda: (
            (d := cluster.deployment("minilm-stable")) is not None
            and d.metadata.uid == after.metadata.uid
            and d.status.available_replicas == 2
        ),
        SETTLE,
        "the new Deployment's replicas available",
    )
    assert cluster.wait_ready("minilm")["status"]["readyReplicas"] == 2


@pytest.mark.usefixtures("operator")
def test_a_hand_edited_deployment_is_put_back(cluster: Cluster) -> None:
    cluster.create(resource("minilm"))
    cluster.wait_ready("minilm")
    before = cluster.deployment("minilm-stable")
    assert before is not None
    image = before.spec.template.spec.containers[0].image

    edit = {
        "spec": {
            "replicas": 4,
            "template": {"spec": {"containers": [{"name": "triton", "image": "evil:latest"}]}},
        }
    }
    edited = cluster.apps.patch_namespaced_deployment(
        "minilm-stable", cluster.namespace, edit, field_manager="someone"
    )
    assert edited.spec.replicas == 4

    def restored() -> bool:
        d = cluster.deployment("minilm-stable")
        return (
            d is not None
            and d.spec.replicas == 2
            and d.spec.template.spec.containers[0].image == image
        )

    wait_for(restored, SETTLE, "replicas and image put back")
    after = cluster.deployment("minilm-stable")
    assert after is not None and after.metadata.uid == before.metadata.uid  # patched back
    # the operator's forced apply took the fields back: no hand edit is left on record
    assert not spec_drifted(cluster.apps.api_client.sanitize_for_serialization(after))


def test_the_resync_restores_what_no_event_handler_watches(
    kube_env: TestCluster, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPWAY_OPERATOR_RESYNC_SECONDS", "1")
    with operator_running():
        cluster.create(resource("minilm"))
        cluster.wait_ready("minilm")
        before = cluster.service("minilm-stable")
        assert before is not None
        # a changed Service is not reacted to (only a deleted one is): the resync puts it back
        cluster.core.patch_namespaced_service(
            "minilm-stable",
            cluster.namespace,
            {"spec": {"selector": {"shipway.io/variant": "candidate"}}},
            field_manager="someone",
        )
        wait_for(
            lambda: (
                (s := cluster.service("minilm-stable")) is not None
                and s.spec.selector == before.spec.selector
            ),
            SETTLE,
            "the Service's selector put back by the resync",
        )
