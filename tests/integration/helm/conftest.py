"""The Helm chart (helm/shipway) with the real ``helm`` v3.22.0 (built by
``scripts/k8s/build.sh`` into the test cluster's cache) and the real test cluster.

``helm`` runs as a child process with its own cache, config and data directories (no
repository, plugin or credential of the machine's user is read) and, when it talks to
the cluster, the TestCluster's admin kubeconfig.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.cluster import BUILD_COMMAND, REPO, Binaries, pinned_version
from tests.support import services

CHART = REPO / "helm" / "shipway"
# the documented value sets: None is the chart's defaults
VALUE_SETS: dict[str, Path | None] = {
    "default": None,
    "minimal": CHART / "values-minimal.yaml",
    "external": CHART / "values-external.yaml",
}
HELM_TIMEOUT = 300.0  # seconds for one helm command (an install waits for its hook Job)


@dataclass(frozen=True)
class Helm:
    """The ``helm`` binary, run with isolated home directories."""

    binary: Path
    home: Path

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``helm ARGS``; with ``check`` a non-zero exit fails the test showing stderr."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        done = subprocess.run(
            [str(self.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=HELM_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}", pytrace=False
            )
        return done

    def template(
        self,
        values: Path | None = None,
        *extra: str,
        release: str = "rel",
        namespace: str = "shipway",
    ) -> list[dict[str, Any]]:
        """The rendered objects (hooks included, CRDs too), in order."""
        args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
        if values is not None:
            args += ["-f", str(values)]
        out = self.run(*args, *extra).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = Binaries.default().binary("helm")
    if not os.access(binary, os.X_OK):
        services.unavailable(
            "helm",
            f"{binary} missing (helm {pinned_version('HELM_VERSION')}); "
            f"build it with `{BUILD_COMMAND}`",
        )
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


def by_kind(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(params=sorted(VALUE_SETS), ids=str)
def value_set(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path | None]]:
    yield request.param, VALUE_SETS[request.param]
