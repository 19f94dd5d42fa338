"""One reconcile against the real test cluster with another writer acting in the middle
of it (between its read of the resource and its status write): a Git push of a new spec,
the rollout controller's progress. The interleaving is made deterministic by a ``Kube``
whose first apply lets the other writer act; every call still goes to the API server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from shipway_operator import reconcile
from shipway_operator.kube import Kube
from shipway_operator.manifests import Manifest

from .conftest import Cluster, resource

pytestmark = pytest.mark.integration

FETCH_IMAGE = "registry.test/shipway-operator:test"


class Interleaved(Kube):
    """A ``Kube`` that runs ``meanwhile`` once, right after its first apply."""

    def __init__(self, api: client.ApiClient, meanwhile: Callable[[], None]) -> None:
        super().__init__(api)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def apply(self, manifest: Manifest) -> dict[str, Any]:
        live = super().apply(manifest)
        if self._meanwhile is not None:
            act, self._meanwhile = self._meanwhile, None
            act()
        return live


def test_status_names_the_generation_applied_not_one_edited_meanwhile(
    kube_api: client.ApiClient, cluster: Cluster
) -> None:
    created = cluster.create(resource("minilm"))
    applied = created["metadata"]["generation"]

    def push() -> None:
        cluster.patch_spec("minilm", {"replicas": 3})

    reconcile.reconcile(Interleaved(kube_api, push), created, FETCH_IMAGE, 5)

    body = cluster.get("minilm")
    assert body["metadata"]["generation"] == applied + 1  # the edit landed
    assert body["status"]["observedGeneration"] == applied  # ... but was not applied
    deployment = cluster.deployment("minilm-stable")
    assert deployment is not None and deployment.spec.replicas == 2
    assert {c["observedGeneration"] for c in body["status"]["conditions"]} == {applied}

    # the newer generation's own reconcile reports it
    reconcile.reconcile(Kube(kube_api), body, FETCH_IMAGE, 5)
    assert cluster.get("minilm")["status"]["observedGeneration"] == applied + 1


def test_an_older_reconcile_never_takes_back_a_newer_status(
    kube_api: client.ApiClient, cluster: Cluster
) -> None:
    created = cluster.create(resource("minilm"))

    def push_and_reconcile() -> None:
        cluster.patch_spec("minilm", {"replicas": 3})
        reconcile.reconcile(Kube(kube_api), cluster.get("minilm"), FETCH_IMAGE, 5)

    reconcile.reconcile(Interleaved(kube_api, push_and_reconcile), created, FETCH_IMAGE, 5)

    body = cluster.get("minilm")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["observedGeneration"] == created["metadata"]["generation"] + 1
