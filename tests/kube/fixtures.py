"""pytest fixtures of the real Kubernetes test cluster (registered by ``tests/conftest.py``).

- ``kube_cluster`` (session): a started :class:`~tests.kube.cluster.TestCluster` with the
  Gateway API CRDs and every ``operators/shipway_operator/crds/*.yaml`` installed and
  Established; the HPA controller syncs every 5 s. Its binaries missing → skipped with
  the build command (a failure under CI or ``SHIPWAY_REQUIRE_SERVICES=1``).
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` of the cluster's admin.
- ``kube_namespace`` (function): a fresh namespace's name, with its ``default`` service
  account already made (pods can be created at once); deleted after the test.
- ``triton_kubelet`` (session): the stand-in kubelet of the serving node
  (:class:`~tests.kube.kubelet.TritonKubelet`): every pod there runs a real
  ``tritonserver`` on its IP, Ready once it answers its readiness probe. Put pods there
  with ``tests.kube.kubelet.serving_placement()`` in ``spec.triton``. Without the local
  Triton: skipped (a failure under CI); a pod IP range it cannot route: a failure.
- ``archive_server`` (session): a :class:`~tests.support.repositories.ArchiveServer`
  serving model repository archives (``repository_archive``) to init containers.

Tests that use them are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from shipway.runtime.triton_distribution import TritonDistribution
from tests.kube.cluster import (
    BUILD_COMMAND,
    REPO,
    Binaries,
    TestCluster,
    unique_name,
    wait_for,
)
from tests.kube.kubelet import KubeletError, TritonKubelet
from tests.support import services
from tests.support.repositories import ArchiveServer

OPERATOR_CRDS = REPO / "operators" / "shipway_operator" / "crds"


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    binaries = Binaries.default()
    if missing := binaries.missing():
        services.unavailable(
            "the Kubernetes test cluster",
            f"{', '.join(missing)} missing under {binaries.root}; build with `{BUILD_COMMAND}`",
        )
    # the HPA controller looks at its objects every 5 s instead of 15 s: tests wait less
    faster = {"kube-controller-manager": ["--horizontal-pod-autoscaler-sync-period=5s"]}
    with TestCluster(tmp_path_factory.mktemp("kube"), binaries, extra_args=faster) as cluster:
        cluster.install_crds([*binaries.gateway_api_crds(), *sorted(OPERATOR_CRDS.glob("*.yaml"))])
        yield cluster


@pytest.fixture(scope="session")
def kube_api(kube_cluster: TestCluster) -> client.ApiClient:
    return kube_cluster.api_client()


@pytest.fixture
def kube_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = unique_name("t")
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
    yield name
    # the namespace controller empties and removes it in the background
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:  # the test may have deleted it itself
            raise


@pytest.fixture(scope="session")
def triton_kubelet(
    kube_cluster: TestCluster,
    triton_dist: TritonDistribution,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonKubelet]:
    """Torn down before the cluster (it depends on it): every Triton stops first."""
    kubelet = TritonKubelet(
        kube_cluster.api_client(), triton_dist, tmp_path_factory.mktemp("kubelet")
    )
    try:
        kubelet.__enter__()
    except KubeletError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield kubelet
    finally:
        kubelet.__exit__(None, None, None)


@pytest.fixture(scope="session")
def archive_server() -> Iterator[ArchiveServer]:
    with ArchiveServer() as server:
        yield server
