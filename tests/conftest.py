"""Fixtures shared by every test layer. Real services start once per session.

No process outlives the session that started it: every child carries the session's
mark (``tests.support.processes``); one still running once every fixture is torn
down is named, stopped, and fails the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipway.examples import minilm
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.settings import Settings
from tests.support import processes, services

pytest_plugins = [
    "tests.kube.fixtures",  # the Kubernetes test cluster: kube_cluster, ...
    "tests.support.prometheus",  # a real Prometheus: prometheus([Target(...)])
]

SESSION = processes.mark_session()
SURVIVORS = pytest.StashKey[list[str]]()


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    survivors = processes.stop_survivors(SESSION)
    session.config.stash[SURVIVORS] = survivors
    if survivors:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    survivors = config.stash.get(SURVIVORS, [])
    if survivors:
        terminalreporter.section("processes that outlived the test session", red=True)
        for line in survivors:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"{len(survivors)} process(es) stopped; the run fails.")
        terminalreporter.stats.setdefault("left running", []).extend(survivors)  # final line


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """An empty Redis database for this test: build messages another test left queued
    (its workers gone) must not be delivered to this test's worker."""
    return services.fresh_redis_database(redis_server_url)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with services.postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> str:
    return services.create_database(postgres_admin_url, f"t_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def triton_dist() -> TritonDistribution:
    dist = TritonDistribution(Settings().triton_home)
    try:
        dist.check()
    except Exception as exc:
        services.unavailable("tritonserver", str(exc))
    return dist


@pytest.fixture(scope="session")
def minilm_onnx() -> Path:
    return minilm.onnx_path()


@pytest.fixture(scope="session")
def minilm_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return minilm.write_sample(tmp_path_factory.mktemp("sample") / "reference.npz", rows=16)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings rooted in a fresh directory."""
    return Settings(home=tmp_path / "home", _env_file=None)


@pytest.fixture(scope="session")
def minilm_inputs() -> dict[str, np.ndarray]:
    return minilm.make_inputs(3, seq_len=16, seed=11)
