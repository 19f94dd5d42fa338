"""One contract for every implementation of the rollout ports.

The controller is tested against the in-memory fakes (``shipway.rollout.testing``);
that says something about the real thing only if the fakes behave as the real
adapters do. So each test here runs against the fakes and against every real adapter
— locally the store-backed Router/Placement (on SQLite and on a real PostgreSQL), the
MLflow release aliases, and the gateway's metrics source over the gateway's own
counters served over HTTP; and the operator's Prometheus provider over the same counters
scraped by a real Prometheus. A Kubernetes harness joins the world's parameters later.

A harness gives the ports and a way to read the world back (and to play the parts
the controller does not: replicas becoming ready, a gateway restarting).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from shipway.rollout import counts
from shipway.rollout.ports import MetricsProvider, MetricsUnavailable, Ports
from shipway.rollout.status import STABLE
from shipway.rollout.testing import FakeMetrics, FakePorts

# ---- harnesses -----------------------------------------------------------------------


class WorldHarness(Protocol):
    ports: Ports

    def deployment(self, name: str) -> tuple[str, str, str]:
        """A deployment serving its stable build (ready); returns that build and two
        other builds of the same model, free to be placed."""
        ...

    def serve(self, deployment: str, variant: str, build_id: str) -> None: ...

    def weights(self, deployment: str) -> dict[str, int]: ...

    def shadow_share(self, deployment: str, variant: str) -> float: ...

    def sticky(self, deployment: str) -> bool: ...

    def stable_build(self, deployment: str) -> str: ...

    def aliases(self, deployment: str) -> dict[str, str]:
        """Release aliases of the deployment's model, as alias -> build id."""
        ...


class FakeWorldHarness:
    def __init__(self) -> None:
        self.fakes = FakePorts()
        self.ports = self.fakes.ports

    def deployment(self, name: str) -> tuple[str, str, str]:
        self.fakes.world.create(name, f"{name}-b1")
        return f"{name}-b1", f"{name}-b2", f"{name}-b3"

    def serve(self, deployment: str, variant: str, build_id: str) -> None:
        self.fakes.world.serve(deployment, variant, build_id)

    def weights(self, deployment: str) -> dict[str, int]:
        return self.fakes.world.weights(deployment)

    def shadow_share(self, deployment: str, variant: str) -> float:
        return self.fakes.world.deployments[deployment].variants[variant].shadow_share

    def sticky(self, deployment: str) -> bool:
        return self.fakes.world.deployments[deployment].sticky

    def stable_build(self, deployment: str) -> str:
        return self.fakes.world.deployments[deployment].variants[STABLE].build_id

    def aliases(self, deployment: str) -> dict[str, str]:
        return dict(self.fakes.aliases.aliases)


class StoreWorldHarness:
    """The local adapters over a real store and a real MLflow registry."""

    def __init__(self, container: Any) -> None:
        from shipway.services.rollout_ports import (
            StorePlacement,
            StoreReleaseAliases,
            StoreRouter,
        )

        self.container = container
        self.ports = Ports(
            StoreRouter(container),
            StorePlacement(container),
            FakeMetrics(),  # metrics have their own contract below
            StoreReleaseAliases(container),
        )
        self.builds: dict[str, tuple[str, int]] = {}  # build id -> (model, version)

    def deployment(self, name: str) -> tuple[str, str, str]:
        from shipway.services import deployments
        from shipway.store.models import new_id
        from tests.support.builds import record_build, register_doubler

        ids = []
        for _ in range(3):
            version = register_doubler(self.container, name)
            build_id = new_id()
            record_build(self.container, version, build_id, f"{name}_{build_id}")
            self.builds[build_id] = (name, version.version)
            ids.append(build_id)
        deployments.deploy(self.container, name, ids[0], "test")
        self.serve(name, STABLE, ids[0])
        return ids[0], ids[1], ids[2]

    def serve(self, deployment: str, variant: str, build_id: str) -> None:
        """What the runtime manager writes once a variant's replica answers ready."""
        from sqlalchemy import select

        from shipway.store.models import Deployment, Replica, ReplicaState

        with self.container.db.session() as session:
            row = session.scalar(select(Deployment).where(Deployment.name == deployment))
            assert row is not None
            for replica in [r for r in row.replicas if r.variant == variant]:
                session.delete(replica)
            session.add(
                Replica(
                    deployment_id=row.id,
                    variant=variant,
                    build_id=build_id,
                    url=f"http://127.0.0.1:1/{variant}/{build_id}",
                    triton_model_name="m",
                    state=ReplicaState.READY,
                )
            )

    def _get(self, deployment: str) -> Any:
        from shipway.services import deployments

        return deployments.get(self.container, deployment)

    def weights(self, deployment: str) -> dict[str, int]:
        return {v.name: v.weight for v in self._get(deployment).variants}

    def shadow_share(self, deployment: str, variant: str) -> float:
        found = next(v for v in self._get(deployment).variants if v.name == variant)
        return float(found.shadow_share)

    def sticky(self, deployment: str) -> bool:
        return str(self._get(deployment).split) == "sticky"

    def stable_build(self, deployment: str) -> str:
        return str(self._get(deployment).build_id)

    def aliases(self, deployment: str) -> dict[str, str]:
        by_version = {v: b for b, (m, v) in self.builds.items() if m == deployment}
        return {a: by_version[v] for a, v in self.container.registry.aliases(deployment).items()}


def _store_container(tmp_path: Path, database_url: str | None) -> Any:
    from shipway.container import Container
    from shipway.settings import Settings

    settings = Settings(
        home=tmp_path / "home",
        database_url=database_url,
        rollout_tick_seconds=0,
        drift_check_seconds=0,
        _env_file=None,
    )
    return Container(settings)


@pytest.fixture(
    params=[
        "fake",
        pytest.param("store-sqlite", marks=pytest.mark.integration),
        pytest.param("store-postgresql", marks=pytest.mark.integration),
    ]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorldHarness]:
    if request.param == "fake":
        yield FakeWorldHarness()
        return
    url = request.getfixturevalue("postgres_url") if request.param == "store-postgresql" else None
    container = _store_container(tmp_path, url)
    try:
        yield StoreWorldHarness(container)
    finally:
        container.close()


class MetricsHarness(Protocol):
    provider: MetricsProvider

    def record(
        self, deployment: str, variant: str, good: int, errors: int = 0, client_errors: int = 0
    ) -> None:
        """Answers given: ``good`` 2xx taking 5 ms each, 5xx, 4xx."""
        ...

    def mirror(self, deployment: str, variant: str, agree: int, disagree: int) -> None: ...

    def restart(self) -> None:
        """The source's counters start again from zero."""
        ...

    def down(self) -> None:
        """The source cannot be reached."""
        ...


class FakeMetricsHarness:
    def __init__(self) -> None:
        self.provider = self.fake = FakeMetrics(latency_s=0.005)

    def record(
        self, deployment: str, variant: str, good: int, errors: int = 0, client_errors: int = 0
    ) -> None:
        self.fake.add(deployment, variant, good + errors + client_errors, errors, client_errors)

    def mirror(self, deployment: str, variant: str, agree: int, disagree: int) -> None:
        self.fake.mirror(deployment, variant, agree, disagree)

    def restart(self) -> None:
        self.fake.reset()

    def down(self) -> None:
        self.fake.down = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class GatewayMetricsHarness:
    """The gateway's own counters (``GatewayMetrics``, incremented as the gateway does)
    exposed over HTTP as the gateway exposes them, read by the local provider."""

    def __init__(self) -> None:
        from prometheus_client import make_wsgi_app

        from shipway.gateway.metrics import GatewayMetrics
        from shipway.gateway.metrics_source import GatewayMetricsSource

        self._new = GatewayMetrics
        self.metrics = GatewayMetrics()

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Any:
            return make_wsgi_app(self.metrics.registry)(environ, start)

        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.provider = GatewayMetricsSource(f"http://127.0.0.1:{self.server.server_port}")
        self.running = True

    def record(
        self, deployment: str, variant: str, good: int, errors: int = 0, client_errors: int = 0
    ) -> None:
        for answer_class, n in (("2xx", good), ("5xx", errors), ("4xx", client_errors)):
            if n:
                self.metrics.responses.labels(deployment, variant, answer_class).inc(n)
        for _ in range(good):
            self.metrics.latency.labels(deployment, variant).observe(0.005)

    def mirror(self, deployment: str, variant: str, agree: int, disagree: int) -> None:
        self.metrics.shadow.labels(deployment, variant, "agree").inc(agree)
        self.metrics.shadow.labels(deployment, variant, "disagree").inc(disagree)

    def restart(self) -> None:
        self.metrics = self._new()

    def down(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)
            self.running = False

    def close(self) -> None:
        self.down()
        self.provider.close()  # type: ignore[attr-defined]


class PrometheusMetricsHarness:
    """The same gateway counters over HTTP, scraped every second by a real Prometheus
    (tests/support/prometheus.py), read by the operator's ``PrometheusMetrics``. A read
    waits for Prometheus to have scraped what was recorded (a scrape that started after
    it), then asks once; ``down`` stops Prometheus, the source the provider reads."""

    JOB = "shipway-gateway"

    def __init__(self, start: Callable[..., Any]) -> None:
        from shipway_operator.prometheus import PrometheusMetrics
        from tests.support.prometheus import Target

        self.gateway = GatewayMetricsHarness()  # its own provider is left unused
        address = f"127.0.0.1:{self.gateway.server.server_port}"
        self.server = start([Target(self.JOB, address)])
        self.direct = PrometheusMetrics(self.server.url, {"job": self.JOB}, timeout_seconds=5)
        self.changed = time.time()
        self.running = True
        self.provider = self

    def snapshot(self, deployment: str) -> counts.Snapshot:
        if self.running:
            self.server.wait_scraped(self.JOB, after=self.changed)
        return self.direct.snapshot(deployment)

    def record(
        self, deployment: str, variant: str, good: int, errors: int = 0, client_errors: int = 0
    ) -> None:
        self.gateway.record(deployment, variant, good, errors, client_errors)
        self.changed = time.time()

    def mirror(self, deployment: str, variant: str, agree: int, disagree: int) -> None:
        self.gateway.mirror(deployment, variant, agree, disagree)
        self.changed = time.time()

    def restart(self) -> None:
        self.gateway.restart()
        self.changed = time.time()

    def down(self) -> None:
        self.server.stop()
        self.running = False

    def close(self) -> None:
        self.direct.close()
        self.gateway.close()


@pytest.fixture(
    params=["fake", "gateway", pytest.param("prometheus", marks=pytest.mark.integration)]
)
def metrics(request: pytest.FixtureRequest) -> Iterator[MetricsHarness]:
    if request.param == "fake":
        yield FakeMetricsHarness()
        return
    harness: GatewayMetricsHarness | PrometheusMetricsHarness
    if request.param == "prometheus":
        harness = PrometheusMetricsHarness(request.getfixturevalue("prometheus"))
    else:
        harness = GatewayMetricsHarness()
    try:
        yield harness
    finally:
        harness.close()


# ---- Placement --------------------------------------------------------------------------


def test_a_placed_variant_takes_no_traffic_and_is_ready_once_served(world: WorldHarness) -> None:
    stable, candidate, other = world.deployment("web")
    placement = world.ports.placement
    assert placement.ready("web", STABLE, stable)
    assert not placement.ready("web", "canary", candidate)  # not placed
    placement.place("web", "canary", candidate)
    assert world.weights("web") == {STABLE: 100, "canary": 0}
    assert not placement.ready("web", "canary", candidate)  # replicas starting
    world.serve("web", "canary", candidate)
    assert placement.ready("web", "canary", candidate)
    assert not placement.ready("web", "canary", other)  # another build's question
    placement.place("web", "canary", candidate)  # again: nothing changes
    assert placement.ready("web", "canary", candidate)
    placement.place("web", "canary", other)  # another build: not ready until it serves
    assert not placement.ready("web", "canary", other)
    assert not placement.ready("nope", "canary", candidate)  # no such deployment


def test_removing_a_variant_gives_its_weight_back_and_repeats_safely(world: WorldHarness) -> None:
    _, candidate, _ = world.deployment("web")
    world.ports.placement.place("web", "canary", candidate)
    world.ports.router.set_weights("web", {STABLE: 70, "canary": 30})
    world.ports.placement.remove("web", "canary")
    assert world.weights("web") == {STABLE: 100}
    assert not world.ports.placement.ready("web", "canary", candidate)
    world.ports.placement.remove("web", "canary")  # already gone: no error
    assert world.weights("web") == {STABLE: 100}


def test_make_stable_points_stable_at_the_build_ready_once_served(world: WorldHarness) -> None:
    stable, candidate, _ = world.deployment("web")
    placement = world.ports.placement
    placement.make_stable("web", candidate)
    assert world.stable_build("web") == candidate
    assert not placement.ready("web", STABLE, candidate)  # the new replicas are starting
    world.serve("web", STABLE, candidate)
    assert placement.ready("web", STABLE, candidate)
    assert not placement.ready("web", STABLE, stable)
    placement.make_stable("web", candidate)  # again: nothing changes
    assert placement.ready("web", STABLE, candidate)


# ---- Router -----------------------------------------------------------------------------


def test_weights_are_set_as_asked_and_unknown_variants_ignored(world: WorldHarness) -> None:
    _, candidate, _ = world.deployment("web")
    world.ports.placement.place("web", "canary", candidate)
    router = world.ports.router
    router.set_weights("web", {STABLE: 80, "canary": 20})
    assert world.weights("web") == {STABLE: 80, "canary": 20}
    router.set_weights("web", {STABLE: 80, "canary": 20})  # idempotent
    assert world.weights("web") == {STABLE: 80, "canary": 20}
    router.set_weights("web", {STABLE: 0, "canary": 100, "ghost": 0})
    assert world.weights("web") == {STABLE: 0, "canary": 100}


def test_a_mirror_share_is_set_and_cleared(world: WorldHarness) -> None:
    _, candidate, _ = world.deployment("web")
    world.ports.placement.place("web", "canary", candidate)
    world.ports.router.set_shadow("web", "canary", 0.5)
    assert world.shadow_share("web", "canary") == 0.5
    assert world.weights("web") == {STABLE: 100, "canary": 0}  # mirrored, not live
    world.ports.router.set_shadow("web", "canary", 0.0)
    assert world.shadow_share("web", "canary") == 0.0


def test_the_split_turns_sticky_and_back(world: WorldHarness) -> None:
    world.deployment("web")
    assert not world.sticky("web")
    world.ports.router.set_split("web", sticky=True)
    assert world.sticky("web")
    world.ports.router.set_split("web", sticky=True)  # idempotent
    assert world.sticky("web")
    world.ports.router.set_split("web", sticky=False)
    assert not world.sticky("web")


# ---- ReleaseAliases ---------------------------------------------------------------------


def test_release_aliases_follow_the_builds_and_deleting_repeats_safely(
    world: WorldHarness,
) -> None:
    stable, candidate, _ = world.deployment("web")
    aliases = world.ports.aliases
    aliases.set_alias(candidate, "candidate")
    aliases.set_alias(stable, "production")
    assert world.aliases("web") == {"candidate": candidate, "production": stable}
    aliases.set_alias(candidate, "production")
    aliases.delete_alias(candidate, "candidate")
    assert world.aliases("web") == {"production": candidate}
    aliases.delete_alias(candidate, "candidate")  # not set: no error
    assert world.aliases("web") == {"production": candidate}


# ---- MetricsProvider --------------------------------------------------------------------


def test_counters_per_variant_of_one_deployment(metrics: MetricsHarness) -> None:
    metrics.record("web", STABLE, good=40, client_errors=2)
    metrics.record("web", "canary", good=8, errors=3, client_errors=1)
    metrics.record("other", "canary", good=5)  # another deployment: not counted
    snapshot = metrics.provider.snapshot("web")
    assert set(snapshot) == {STABLE, "canary"}
    canary = snapshot["canary"]
    assert (canary.requests, canary.errors, canary.client_errors) == (12, 3, 1)
    assert snapshot[STABLE].requests == 42 and snapshot[STABLE].errors == 0
    # the latency histogram counts good answers only, cumulatively, ending at +Inf
    assert canary.buckets[-1] == (math.inf, 8)
    p50 = counts.quantile(canary.buckets, 0.5)
    assert p50 is not None and 0.004 <= p50 <= 0.0065  # within 5 ms's bucket


def test_counters_only_grow_and_a_restart_reads_as_a_reset(metrics: MetricsHarness) -> None:
    metrics.record("web", "canary", good=10)
    first = metrics.provider.snapshot("web")
    metrics.record("web", "canary", good=5, errors=1)
    second = metrics.provider.snapshot("web")
    grown = counts.increase(second, first)["canary"]
    assert (grown.requests, grown.errors) == (6, 1)
    metrics.restart()
    metrics.record("web", "canary", good=3)
    after = metrics.provider.snapshot("web")
    assert after["canary"].requests == 3  # from zero again
    assert counts.increase(after, second)["canary"].requests == 3  # not negative


def test_mirrored_comparisons_are_counted(metrics: MetricsHarness) -> None:
    metrics.mirror("web", "canary", agree=9, disagree=1)
    shadow = metrics.provider.snapshot("web")["canary"].shadow_counts()
    assert shadow is not None and (shadow.agree, shadow.disagree, shadow.error) == (9, 1, 0)


def test_an_unreachable_source_raises_metrics_unavailable(metrics: MetricsHarness) -> None:
    metrics.record("web", "canary", good=1)
    metrics.down()
    with pytest.raises(MetricsUnavailable):
        metrics.provider.snapshot("web")
