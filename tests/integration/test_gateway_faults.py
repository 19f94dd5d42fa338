"""Fault tests of the serving data plane, against real tritonserver processes.

- a replica that answers 500 is ejected, and re-admitted once it recovers;
- a weight change under load loses no request;
- SIGKILL of one of three replicas under load: few failed requests, traffic moves to
  the others within a health-check period, and the runtime brings the replica back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.gateway.store_routes import load_table
from shipway.runtime.local import LocalRuntime
from shipway.runtime.manager import RuntimeManager
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.services import deployments, models
from shipway.settings import Settings
from shipway.store.models import Build, Replica, ReplicaState
from tests.support.gateway import answers, flaky_replicas, infer_flaky, running_gateway
from tests.support.services import wait_until

pytestmark = pytest.mark.integration


class Load:
    """Steady closed-loop load from a few client threads; counts every outcome."""

    def __init__(self, send: Callable[[httpx.Client], int], clients: int = 3) -> None:
        self.send = send
        self.clients = clients
        self.codes: Counter[int] = Counter()
        self.failures: list[float] = []  # when each failed request ended
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=15) as client:
            while not self._stop.is_set():
                try:
                    code = self.send(client)
                except httpx.HTTPError:
                    code = 0
                with self._lock:
                    self.codes[code] += 1
                    if code != 200:
                        self.failures.append(time.monotonic())

    def total(self) -> int:
        with self._lock:
            return sum(self.codes.values())

    def wait_for(self, more: int, what: str) -> None:
        """Wait until ``more`` requests beyond the count now have ended."""
        target = self.total() + more
        wait_until(lambda: self.total() >= target, 60, what)

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(20)


def flaky_body() -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def served_by(metrics: str, replica: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("shipway_gateway_requests_total") and f'replica="{replica}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_replica_answering_500_is_ejected_and_readmitted(
    tmp_path: Path, triton_dist: TritonDistribution
) -> None:
    # The ejection outlasts the 40 requests below even on a slow, shared machine.
    settings = Settings(
        home=tmp_path, ejection_failures=3, ejection_seconds=5.0, health_check_seconds=0.3
    )
    with flaky_replicas(triton_dist, tmp_path, 2) as replicas:
        (good, _), (bad, bad_flag) = replicas
        table = RoutingTable(
            {
                "flaky": DeploymentRoute(
                    "flaky",
                    (
                        VariantRoute(
                            "stable",
                            100,
                            (ReplicaRoute(good.url, "flaky"), ReplicaRoute(bad.url, "flaky")),
                        ),
                    ),
                )
            }
        )
        with running_gateway(settings, lambda: table) as (url, gateway):
            bad_flag.touch()
            codes = Counter(infer_flaky(url) for _ in range(40))
            # At most `ejection_failures` 500s before the ejection, then only the good one.
            assert codes[500] == 3 and codes[200] == 37, codes
            assert not gateway.balancer.health(bad.url).available(time.monotonic())

            bad_flag.unlink()  # the replica recovers
            health = gateway.balancer.health(bad.url)
            time.sleep(max(0.0, health.ejected_until - time.monotonic()) + 0.1)
            before = served_by(httpx.get(f"{url}/metrics").text, bad.url)
            codes = Counter(infer_flaky(url) for _ in range(40))
            assert codes == {200: 40}
            after = served_by(httpx.get(f"{url}/metrics").text, bad.url)
            assert after - before >= 5, "the recovered replica takes traffic again"


def test_a_weight_change_under_load_loses_no_request(
    tmp_path: Path, triton_dist: TritonDistribution
) -> None:
    settings = Settings(home=tmp_path, routes_refresh_seconds=0.05)
    with flaky_replicas(triton_dist, tmp_path, 2) as replicas:
        (a, _), (b, _) = replicas

        def table_with(weight_a: int, stable_on: str | None = None) -> RoutingTable:
            stable_replica = ReplicaRoute(stable_on or a.url, "flaky")
            return RoutingTable(
                {
                    "flaky": DeploymentRoute(
                        "flaky",
                        (
                            VariantRoute("stable", weight_a, (stable_replica,)),
                            VariantRoute("canary", 100 - weight_a, (ReplicaRoute(b.url, "flaky"),)),
                        ),
                    )
                }
            )

        current = {"table": table_with(100)}
        with running_gateway(settings, lambda: current["table"]) as (url, _):
            load = Load(
                lambda c: c.post(f"{url}/v2/models/flaky/infer", json=flaky_body()).status_code
            )
            # Each table serves at least 15 requests (after its refresh), however slow the
            # machine: the traffic each phase proves, not a length of time.
            with load.running():
                for weight in (100, 75, 50, 25, 0, 50, 100, 0):
                    current["table"] = table_with(weight)
                    time.sleep(0.1)  # two refreshes
                    load.wait_for(15, f"15 requests at weight {weight}")
                # Stable's replica is replaced under load (a -> b -> a), as a new build does.
                for stable_on in (b.url, a.url, b.url):
                    current["table"] = table_with(100, stable_on)
                    time.sleep(0.1)
                    load.wait_for(15, f"15 requests on {stable_on}")
            metrics = httpx.get(f"{url}/metrics").text
            counted = answers(url, "flaky")
        assert load.codes[200] > 100
        assert set(load.codes) == {200}, load.codes
        assert served_by(metrics, a.url) > 20 and served_by(metrics, b.url) > 20
        # Each answer counted once, under the arm that gave it (counted before it is sent).
        assert set(counted) <= {("stable", "2xx"), ("canary", "2xx")}, counted
        assert sum(counted.values()) == load.codes[200]


@pytest.fixture
def deployed_minilm(
    tmp_path: Path, triton_dist: TritonDistribution, minilm_onnx: Path, minilm_sample: Path
) -> Iterator[tuple[Container, str]]:
    settings = Settings(home=tmp_path / "home", triton_home=triton_dist.home)
    container = Container(settings)
    version = models.register(
        container,
        models.Registration("minilm", minilm_onnx.read_bytes(), minilm_sample.read_bytes(), {}),
        actor="test",
    )
    with container.db.session() as session:
        build = Build(model_version_id=version.id, recipe="fp32", target="onnxruntime-cpu")
        session.add(build)
        session.flush()
        build_id = build.id
    BuildPipeline(container.db, container.registry, container.settings).run(build_id)
    yield container, build_id
    container.close()


@contextmanager
def running_manager(
    container: Container, runtime: LocalRuntime, **kwargs: object
) -> Iterator[None]:
    stop = threading.Event()
    manager = RuntimeManager(container.db, runtime, **kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=manager.run, args=(stop, 0.3), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def replicas(container: Container) -> list[Replica]:
    with container.db.session() as session:
        return list(session.query(Replica).order_by(Replica.url))


def test_sigkill_of_one_of_three_replicas_under_load(
    deployed_minilm: tuple[Container, str], triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    container, build_id = deployed_minilm
    runtime = LocalRuntime(container.registry, triton_dist, tmp_path / "rt", drain_seconds=1.0)
    deployments.deploy(container, "web", build_id, "test", deployments.Scale(3))
    health_period = 0.5
    settings = Settings(
        home=tmp_path, routes_refresh_seconds=0.2, health_check_seconds=health_period
    )
    inputs = {"input_ids": [[101, 2023, 2003, 102]], "attention_mask": [[1, 1, 1, 1]]}
    body = {
        "inputs": [
            {"name": n, "shape": [1, 4], "datatype": "INT64", "data": v} for n, v in inputs.items()
        ],
        "outputs": [{"name": "461"}],
    }

    with (
        running_manager(container, runtime),
        running_gateway(settings, lambda: load_table(container.db)) as (url, _),
    ):
        wait_until(
            lambda: sum(r.state == ReplicaState.READY for r in replicas(container)) == 3,
            120,
            "three ready replicas",
        )
        load = Load(lambda c: c.post(f"{url}/v2/models/web/infer", json=body).status_code)
        with load.running():
            time.sleep(1.5)
            victim = replicas(container)[1]
            assert victim.pid
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            # The runtime restarts it on the same address, and it becomes ready again.
            wait_until(
                lambda: any(
                    r.url == victim.url and r.state == ReplicaState.READY and r.pid != victim.pid
                    for r in replicas(container)
                ),
                90,
                "the killed replica to come back",
            )
            back_at = time.monotonic()
            # Nothing of the killed server's process group (its Python-backend stub) lives on.
            with pytest.raises(ProcessLookupError):
                os.killpg(victim.pid, 0)
            served_when_back = served_by(httpx.get(f"{url}/metrics").text, victim.url)
            # The restarted replica takes traffic again, not only the two that stayed up.
            wait_until(
                lambda: (
                    served_by(httpx.get(f"{url}/metrics").text, victim.url) >= served_when_back + 10
                ),
                60,
                "10 requests on the restarted replica",
            )
        metrics = httpx.get(f"{url}/metrics").text
        counted = answers(url, "web")
        urls = [r.url for r in replicas(container)]
    served = {u: served_by(metrics, u) for u in urls}
    print(
        f"codes {dict(load.codes)}; failures at +{[round(t - killed_at, 2) for t in load.failures]}"
        f"; back after {back_at - killed_at:.1f}s; per replica {served}"
    )
    assert load.codes[200] > 50
    # Requests in flight on the victim may fail; nothing after one health-check period.
    assert len(load.failures) <= load.clients, load.codes
    assert all(t <= killed_at + health_period + 0.5 for t in load.failures)
    assert len(served) == 3 and all(count > 0 for count in served.values()), served
    assert served[victim.url] - served_when_back >= 10, (served_when_back, served)
    # Every answer the clients got is counted once by class: the 200s as 2xx, and a
    # request that found no replica reachable (if one did) as connection_reset.
    classes = {"2xx": 200, "connection_reset": 502, "upstream_timeout": 504, "5xx": 500}
    assert {c for _, c in counted} <= set(classes), counted
    for name, code in classes.items():
        assert counted.get(("stable", name), 0) == load.codes[code], (counted, load.codes)


def test_load_adds_a_replica_and_its_end_removes_it(
    deployed_minilm: tuple[Container, str], triton_dist: TritonDistribution, tmp_path: Path
) -> None:
    """The autoscaler reads the gateway's metrics (its real load source), scales up at
    once under load, and back down after the stabilization window once load stops."""
    from shipway.runtime.load import LoadMeter, read_inflight_seconds

    container, build_id = deployed_minilm
    runtime = LocalRuntime(container.registry, triton_dist, tmp_path / "rt", drain_seconds=0.5)
    deployments.deploy(
        container,
        "web",
        build_id,
        "test",
        deployments.Scale(1, 2),
        target_inflight=1.0,
        scale_down_stabilization_window_seconds=3.0,
    )
    settings = Settings(home=tmp_path, routes_refresh_seconds=0.2)
    ids = [101] + [2000 + i for i in range(126)] + [102]
    body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": [ids]},
            {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64", "data": [[1] * 128]},
        ],
        "outputs": [{"name": "461"}],
    }

    def ready_count() -> int:
        return sum(r.state == ReplicaState.READY for r in replicas(container))

    with running_gateway(settings, lambda: load_table(container.db)) as (url, _):
        meter = LoadMeter()
        with running_manager(
            container, runtime, load=lambda now: meter.update(now, read_inflight_seconds(url))
        ):
            wait_until(lambda: ready_count() == 1, 120, "one ready replica")
            load = Load(
                lambda c: c.post(f"{url}/v2/models/web/infer", json=body).status_code, clients=4
            )
            with load.running():
                wait_until(lambda: ready_count() == 2, 90, "a second replica under load")
            assert set(load.codes) == {200}, load.codes
            wait_until(
                lambda: ready_count() == 1 and len(replicas(container)) == 1,
                60,
                "scale-down after the window",
            )
    from shipway.store.models import AuditEvent

    with container.db.session() as session:
        scalings = [e.details for e in session.query(AuditEvent).filter_by(action="variant.scale")]
    assert [(e["previous"], e["replicas"]) for e in scalings] == [(1, 2), (2, 1)]
    assert scalings[0]["inflight"] > 1.0
