"""pipelines/ci/release.sh, the script both CI templates run, against a live Shipway
(`shipway up`: API, build worker, runtime manager with real Triton replicas, gateway)
with small models made here with onnx.helper: a first release registers, builds and
deploys; a later one rolls out under live load and succeeds; a rollout that is rolled
back, a build that fails its accuracy gate and a model the API refuses each fail the job
with the CLI's message. On Kubernetes (an API and a worker in Kubernetes mode, the
operator in-process, the real test cluster): a first release deploys the
ModelDeployment, and a rollout the operator rolls back fails the job. Everything is
checked through the API or the resource, not only the script's output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from shipway.cli.client import ApiClient
from shipway.container import Container
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from shipway.store.db import migrate
from tests.integration.kubernetes.test_control_plane import kube_settings, operator
from tests.kube.cluster import TestCluster
from tests.support import graphs
from tests.support.builds import WIDTH, doubler_onnx
from tests.support.load import steady_load
from tests.support.plane import Plane
from tests.support.processes import shipway_up
from tests.support.services import free_port

pytestmark = pytest.mark.integration
__all__ = ["operator"]  # the operator in this process (a fixture of the control plane's tests)

RELEASE = Path(__file__).resolve().parents[3] / "pipelines" / "ci" / "release.sh"
FAST_ROLLOUT = "--steps 50,100 --interval 1 --min-requests 10"


@pytest.fixture(scope="module")
def shipway(
    tmp_path_factory: pytest.TempPathFactory, triton_dist: TritonDistribution
) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("release")
    settings = Settings(
        home=root / "home",
        api_port=free_port(),
        gateway_port=free_port(),
        triton_home=triton_dist.home,
        drift_check_seconds=0,
        sample_rate=0.0,
        rollout_tick_seconds=0.2,
        build_bench_seconds=0.2,
        build_bench_rounds=1,
    )
    with shipway_up(settings, root / "up.log"):
        yield settings


def _files(tmp_path: Path, model: bytes, sample: bytes) -> dict[str, str]:
    onnx_path, sample_path = tmp_path / "model.onnx", tmp_path / "sample.npz"
    onnx_path.write_bytes(model)
    sample_path.write_bytes(sample)
    return {"SHIPWAY_ONNX": str(onnx_path), "SHIPWAY_SAMPLE": str(sample_path)}


def _doubler(tmp_path: Path) -> dict[str, str]:
    rows = np.random.default_rng(0).normal(size=(32, WIDTH)).astype(np.float32)
    return _files(tmp_path, doubler_onnx(), graphs.npz(x=rows))


def release(settings: Settings, **inputs: str) -> subprocess.CompletedProcess[str]:
    """release.sh as a CI job runs it: only its inputs in the environment, and the
    `shipway` and `python3` of this interpreter's installation on PATH."""
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "SHIPWAY_API_URL": settings.resolved_api_url,
        "SHIPWAY_TOKEN": settings.token,
        "SHIPWAY_POLL_SECONDS": "1",
        **inputs,
    }
    return subprocess.run(
        ["bash", str(RELEASE)], env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _api(settings: Settings) -> ApiClient:
    return ApiClient(settings.resolved_api_url, settings.token)


def _builds(settings: Settings, model: str) -> list[dict[str, Any]]:
    with _api(settings) as api:
        return [b for b in api.builds() if b["model"] == model]


def _deployments(settings: Settings) -> dict[str, dict[str, Any]]:
    with _api(settings) as api:
        return {d["name"]: d for d in api.status()["deployments"]}


def test_releases_deploy_then_roll_out_and_a_rolled_back_rollout_fails_the_job(
    shipway: Settings, tmp_path: Path
) -> None:
    inputs = {"SHIPWAY_MODEL": "doubler", "SHIPWAY_DEPLOYMENT": "doubler", **_doubler(tmp_path)}

    first = release(shipway, **inputs, SHIPWAY_TAGS="git.tag=v1 git.sha=abc123")
    assert first.returncode == 0, first.stderr
    with _api(shipway) as api:
        versions = api.models("doubler")
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["tags"]["git.tag"] == "v1" and versions[0]["tags"]["git.sha"] == "abc123"
    (build,) = _builds(shipway, "doubler")
    assert (build["version"], build["recipe"], build["status"]) == (1, "fp32", "succeeded")
    # the build's progress went to the job's log, stage by stage, up to its end
    assert f"release: build {build['id']}: succeeded" in first.stderr
    assert first.stderr.count(f"release: build {build['id']}:") >= 2
    deployment = _deployments(shipway)["doubler"]
    assert (deployment["build_id"], deployment["status"]) == (build["id"], "ready")

    with steady_load(shipway.gateway_url, "doubler", rate=60.0) as load:
        second = release(
            shipway, **inputs, SHIPWAY_TAGS="git.tag=v2", SHIPWAY_ROLLOUT_ARGS=FAST_ROLLOUT
        )
        assert second.returncode == 0, second.stdout + second.stderr
        v2 = next(b for b in _builds(shipway, "doubler") if b["version"] == 2)
        with _api(shipway) as api:
            (rolled,) = api.rollouts("doubler")
        assert (rolled["candidate_build_id"], rolled["phase"]) == (v2["id"], "succeeded")
        assert _deployments(shipway)["doubler"]["build_id"] == v2["id"]

        # a third release whose canary cannot pass (its p50 may be at most 0.001 of
        # stable's): rolled back, the job fails, v2 still serves
        third = release(
            shipway,
            **inputs,
            SHIPWAY_TAGS="git.tag=v3",
            SHIPWAY_ROLLOUT_ARGS=f"{FAST_ROLLOUT} --max-p50-ratio 0.001 --failure-limit 1",
        )
        assert third.returncode == 1, third.stdout + third.stderr
        v3 = next(b for b in _builds(shipway, "doubler") if b["version"] == 3)
        assert v3["status"] == "succeeded"
        with _api(shipway) as api:
            latest = api.rollouts("doubler")[0]
        assert (latest["candidate_build_id"], latest["phase"]) == (v3["id"], "rolled-back")
        assert "p50" in latest["reason"]
        assert "phase rolled-back" in third.stdout
        assert _deployments(shipway)["doubler"]["build_id"] == v2["id"]
    assert not load.failed()  # not one request lost through two rollouts


def test_a_build_failing_its_accuracy_gate_fails_the_job_with_the_reason(
    shipway: Settings, tmp_path: Path
) -> None:
    model, sample = graphs.close_classes_classifier()  # INT8 flips its top-1 class
    done = release(
        shipway,
        SHIPWAY_MODEL="close-classes",
        SHIPWAY_DEPLOYMENT="close-classes",
        SHIPWAY_RECIPE="int8",
        **_files(tmp_path, model, sample),
    )
    assert done.returncode == 1, done.stderr
    (build,) = _builds(shipway, "close-classes")
    assert build["status"] == "failed"
    assert build["error"].startswith("accuracy gate failed")
    # the CLI's own account of it is in the job's log: the error and the gate's verdict
    assert "accuracy gate failed" in done.stderr and "top1" in done.stderr
    assert f"release: error: build {build['id']} failed" in done.stderr
    assert "close-classes" not in _deployments(shipway)  # nothing deployed


def test_a_model_the_api_refuses_fails_the_job_with_its_message(
    shipway: Settings, tmp_path: Path
) -> None:
    rows = np.zeros((4, 3), dtype=np.float32)  # the doubler takes 2 columns
    done = release(
        shipway,
        SHIPWAY_MODEL="refused",
        SHIPWAY_DEPLOYMENT="refused",
        **_files(tmp_path, doubler_onnx(), graphs.npz(x=rows)),
    )
    assert done.returncode == 1, done.stderr
    assert "error: 4" in done.stderr and "'x'" in done.stderr  # the API's 4xx, naming the input
    with _api(shipway) as api:
        assert api.models("refused") == []
    assert _builds(shipway, "refused") == []


def test_an_unknown_recipe_fails_the_job_before_anything_is_built(
    shipway: Settings, tmp_path: Path
) -> None:
    done = release(
        shipway,
        SHIPWAY_MODEL="no-recipe",
        SHIPWAY_DEPLOYMENT="no-recipe",
        SHIPWAY_RECIPE="int9",
        **_doubler(tmp_path),
    )
    assert done.returncode == 1, done.stderr
    assert "int9" in done.stderr
    assert _builds(shipway, "no-recipe") == []


@pytest.fixture
def kube_plane(
    tmp_path: Path,
    postgres_url: str,
    kube_cluster: TestCluster,
    kube_namespace: str,
) -> Iterator[Plane]:
    """An API and a build worker in Kubernetes mode (their own processes) writing
    ModelDeployments into the test's namespace of the real test cluster."""
    settings = kube_settings(
        tmp_path / "home", postgres_url, kube_cluster.kubeconfig, kube_namespace
    )
    migrate(settings.resolved_database_url)
    container = Container(settings, run_migrations=False)
    container.registry.initialize()
    logs = tmp_path / "logs"
    logs.mkdir()
    plane = Plane(settings, logs, container)
    with ExitStack() as stack:
        stack.callback(container.close)
        stack.callback(plane.stop_all)
        plane.start("api")
        plane.start("worker")
        yield plane


def test_on_kubernetes_a_release_deploys_then_a_rolled_back_rollout_fails_the_job(
    kube_plane: Plane, operator: KopfRunner, kube_api: client.ApiClient, tmp_path: Path
) -> None:
    """The operator runs without Prometheus here: a rollout finds no metrics and is
    rolled back after spec.rollout's consecutiveErrorLimit, as the operator's README
    says; the job must fail when it is."""
    settings = kube_plane.settings
    inputs = {
        "SHIPWAY_MODEL": "doubler",
        "SHIPWAY_DEPLOYMENT": "doubler",
        "SHIPWAY_RUNTIME": "kubernetes",
        **_doubler(tmp_path),
    }
    first = release(settings, **inputs)
    assert first.returncode == 0, first.stdout + first.stderr
    (v1,) = _builds(settings, "doubler")
    custom = client.CustomObjectsApi(kube_api)
    namespace = settings.kubernetes_namespace

    def resource() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(
            "shipway.io", "v1alpha1", namespace, "modeldeployments", "doubler"
        )

    assert resource()["spec"]["build"]["id"] == v1["id"]
    assert resource()["status"]["phase"] == "Ready"
    # how the operator rolls out is the resource's (kept in Git, or edited): fast here
    custom.patch_namespaced_custom_object(
        "shipway.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        "doubler",
        {
            "spec": {
                "rollout": {
                    "strategy": "canary",
                    "canary": {"intervalSeconds": 1, "consecutiveErrorLimit": 2},
                }
            }
        },
    )

    second = release(settings, **inputs, SHIPWAY_ROLLOUT_START_SECONDS="120")
    assert second.returncode == 1, second.stdout + second.stderr
    v2 = next(b for b in _builds(settings, "doubler") if b["version"] == 2)
    assert f"the rollout of build {v2['id']} ended rolled-back" in second.stderr
    status = resource()["status"]
    assert status["rollout"]["phase"] == "RolledBack"
    assert status["rollout"]["candidateBuildID"] == v2["id"]
    assert status["stableBuild"]["id"] == v1["id"]  # the first release still serves
