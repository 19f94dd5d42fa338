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
B2 = {"id": "b-2", "modelRepository": "s3://models/minilm/b-2"}


class Interleaved(Kube):
    """A ``Kube`` that runs ``meanwhile`` once, right after its first apply (not a dry
    run: those all come before the first real one)."""

    def __init__(self, api: client.ApiClient, meanwhile: Callable[[], None]) -> None:
        super().__init__(api)
        self._meanwhile: Callable[[], None] | None = meanwhile

    def apply(self, manifest: Manifest, *, dry_run: bool = False) -> dict[str, Any]:
        live = super().apply(manifest, dry_run=dry_run)
        if self._meanwhile is not None and not dry_run:
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


def test_a_reconcile_keeps_the_rollout_progress_written_while_it_ran(
    kube_api: client.ApiClient, cluster: Cluster
) -> None:
    cluster.create(resource("minilm"))
    reconcile.reconcile(Kube(kube_api), cluster.get("minilm"), FETCH_IMAGE, 5)
    cluster.patch_spec("minilm", {"build": B2})
    reconcile.reconcile(Kube(kube_api), cluster.get("minilm"), FETCH_IMAGE, 5)
    started = cluster.get("minilm")["status"]
    assert started["candidateBuild"]["id"] == "b-2"
    progress = started["rollout"] | {"converged": "Progressing:25"}
    weights = {"stable": 75, "candidate": 25}

    def controller_steps() -> None:  # the rollout controller's write, as it would be
        cluster.custom.patch_namespaced_custom_object_status(
            "shipway.io",
            "v1alpha1",
            cluster.namespace,
            "modeldeployments",
            "minilm",
            {"status": {"weights": weights, "rollout": progress}},
        )

    before = cluster.get("minilm")  # read before the controller's write
    reconcile.reconcile(Interleaved(kube_api, controller_steps), before, FETCH_IMAGE, 5)

    status = cluster.get("minilm")["status"]
    assert status["weights"] == weights
    assert status["rollout"] == progress
