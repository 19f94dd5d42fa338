"""``python -m shipway_operator`` as the process a pod runs: its settings from the
environment, one namespace served, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shipway.runtime.processes import spawn
from tests.kube.cluster import TestCluster

from .conftest import Cluster, resource

pytestmark = pytest.mark.integration


def test_bad_settings_exit_2_naming_the_variable() -> None:
    env = {**os.environ, "SHIPWAY_OPERATOR_STATUS_RETRIES": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "shipway_operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("shipway-operator: bad settings (SHIPWAY_OPERATOR_*): ")
    assert "status_retries: Input should be greater than or equal to 1" in done.stderr


def test_no_kubeconfig_exits_2_naming_kubeconfig(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    done = subprocess.run(
        [sys.executable, "-m", "shipway_operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("shipway-operator: no Kubernetes connection: set KUBECONFIG")
    assert "in-cluster" in lines[0]


def test_operator_process_serves_its_namespace_and_stops_on_sigterm(
    kube_cluster: TestCluster, cluster: Cluster, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "SHIPWAY_OPERATOR_NAMESPACES": cluster.namespace,
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = spawn([sys.executable, "-m", "shipway_operator"], env=env, stdout=out, stderr=out)
    try:
        cluster.create(resource("minilm"))
        ready = cluster.wait_ready("minilm")
        assert ready["status"]["readyReplicas"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
    assert code == 0, log.read_text()[-3000:]
