"""The rollout controller against the real store (PostgreSQL) and MLflow, through the
API, with the clock and the metrics in the test's hands: every tick is explicit, the
gateway's counters are scripted, and replica readiness is written the way the runtime
manager writes it. The same paths against real Triton and the real gateway run in
tests/e2e/test_rollouts.py; here each transition is pinned down exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.rollout.counts import Snapshot, VariantCounts
from shipway.rollout.ports import MetricsUnavailable
from shipway.services import rollouts
from shipway.services.rollout_ports import (
    StoreDriftScores,
    StorePlacement,
    StoreReleaseAliases,
    StoreRouter,
)
from shipway.settings import Settings
from shipway.store.models import Deployment, Replica, ReplicaState
from tests.support.builds import publish_flaky_build, register_doubler

pytestmark = pytest.mark.integration


@dataclass
class ScriptedMetrics:
    """Cumulative counters that grow as the test says; ``down`` raises like a gateway
    that cannot be reached."""

    # variant: [requests, errors (5xx, gateway failures), client errors (4xx)]
    totals: dict[str, list[float]] = field(default_factory=dict)
    down: bool = False

    def add(self, variant: str, requests: int, errors: int = 0, client_errors: int = 0) -> None:
        now = self.totals.setdefault(variant, [0.0, 0.0, 0.0])
        now[0] += requests
        now[1] += errors
        now[2] += client_errors

    def snapshot(self, deployment: str) -> Snapshot:
        if self.down:
            raise MetricsUnavailable("gateway unreachable")
        return {
            name: VariantCounts(
                n, e, ((0.004, 0.0), (0.005, n), (math.inf, n)), client_errors=client
            )
            for name, (n, e, client) in self.totals.items()
        }


@pytest.fixture
def world(tmp_path: Path, postgres_url: str) -> Iterator[tuple[TestClient, Container]]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        rollout_tick_seconds=0,
        drift_check_seconds=0,
        _env_file=None,
    )
    container = Container(settings)
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {settings.token}"
        yield client, container
    container.close()


def serve(container: Container, deployment: str, variant: str, build_id: str) -> None:
    """What the runtime manager writes once a variant's replica answers ready."""
    with container.db.session() as session:
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


def prepare(api: TestClient, container: Container, name: str) -> tuple[str, str, int, int]:
    v1, v2 = register_doubler(container, name), register_doubler(container, name)
    stable = publish_flaky_build(container, v1)
    candidate = publish_flaky_build(container, v2)
    assert api.put(f"/api/v1/deployments/{name}", json={"build_id": stable}).status_code == 200
    serve(container, name, "stable", stable)
    return stable, candidate, v1.version, v2.version


def ports(container: Container, metrics: ScriptedMetrics) -> rollouts.Ports:
    return rollouts.Ports(
        StoreRouter(container),
        StorePlacement(container),
        metrics,
        StoreReleaseAliases(container),
        StoreDriftScores(container),
    )


def weights(api: TestClient, name: str) -> dict[str, int]:
    body = api.get(f"/api/v1/deployments/{name}").json()
    return {v["name"]: v["weight"] for v in body["variants"]}


CANARY = {"step_weights": [20, 100], "interval_seconds": 10, "thresholds": {"min_requests": 50}}


def test_a_canary_from_start_to_stable_tick_by_tick(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    stable, candidate, _, v2 = prepare(api, container, "web")
    metrics = ScriptedMetrics()
    here = ports(container, metrics)
    body = {"build_id": candidate, "settings": CANARY}
    started = api.post("/api/v1/deployments/web/rollouts", json=body)
    assert started.status_code == 201, started.text
    rid = started.json()["id"]
    assert started.json()["phase"] == "initializing"
    assert weights(api, "web") == {"canary": 0, "stable": 100}  # placed, no traffic
    assert container.registry.aliases("web") == {"candidate": v2}

    # replicas not ready: nothing moves, and the controller asks to look again soon
    assert rollouts.tick(container, here, now=1000.0) == 1.0
    assert rollouts.get(container, rid).phase == "initializing"
    serve(container, "web", "canary", candidate)
    assert rollouts.tick(container, here, now=1001.0) == 10.0  # the first analysis, then
    assert rollouts.get(container, rid).phase == "progressing"
    assert weights(api, "web") == {"canary": 20, "stable": 80}

    metrics.add("stable", 400)
    metrics.add("canary", 10)  # too few
    rollouts.tick(container, here, now=1011.0)
    metrics.add("stable", 400)
    metrics.add("canary", 100)
    assert rollouts.tick(container, here, now=1015.0) == 6.0  # not an interval yet
    assert weights(api, "web") == {"canary": 20, "stable": 80}
    rollouts.tick(container, here, now=1021.0)
    assert weights(api, "web") == {"canary": 100, "stable": 0}
    metrics.add("canary", 500)
    rollouts.tick(container, here, now=1031.0)  # promoted: stable moves to the candidate
    row = rollouts.get(container, rid)
    assert row.phase == "succeeded" and row.active_key == "web"  # not finished yet
    assert api.get("/api/v1/deployments/web").json()["build_id"] == candidate
    assert weights(api, "web") == {"canary": 100, "stable": 0}  # until the new stable serves
    serve(container, "web", "stable", candidate)
    assert rollouts.tick(container, here, now=1032.0) is None  # nothing left to run
    assert weights(api, "web") == {"stable": 100}
    assert container.registry.aliases("web") == {"production": v2}

    done = api.get(f"/api/v1/deployments/web/rollouts/{rid}").json()
    assert not done["running"] and done["finished_at"]
    assert [e["event"] for e in done["timeline"]] == [
        "rollout.created",
        "rollout.step",
        "rollout.check-inconclusive",
        "rollout.step",
        "rollout.promoted",
        "rollout.finished",
    ]
    inconclusive = done["timeline"][2]
    assert inconclusive["details"]["numbers"]["requests"] == {
        "outcome": "inconclusive", "value": 10.0, "limit": 50.0, "bound": None
    }  # fmt: skip
    assert inconclusive["details"]["model"] == "web" and inconclusive["details"]["version"] == v2
    assert inconclusive["details"]["candidate_build"] == candidate
    assert inconclusive["details"]["stable_build"] == stable


def test_metrics_down_is_inconclusive_then_rolls_back(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    stable, candidate, v1, _ = prepare(api, container, "dark")
    metrics = ScriptedMetrics(down=True)
    here = ports(container, metrics)
    settings = {**CANARY, "consecutive_error_limit": 3}
    rid = api.post(
        "/api/v1/deployments/dark/rollouts", json={"build_id": candidate, "settings": settings}
    ).json()["id"]
    serve(container, "dark", "canary", candidate)
    for second in (0, 10, 20, 30):
        rollouts.tick(container, here, now=2000.0 + second)
    done = api.get(f"/api/v1/deployments/dark/rollouts/{rid}").json()
    assert done["phase"] == "rolled-back" and "no metrics for 3" in done["reason"]
    events = [e["event"] for e in done["timeline"]]
    assert events.count("rollout.check-inconclusive") == 2 and events[-1] == "rollout.finished"
    assert weights(api, "dark") == {"stable": 100}
    assert api.get("/api/v1/deployments/dark").json()["build_id"] == stable
    assert container.registry.aliases("dark") == {"production": v1}


def test_bad_requests_are_refused_with_the_reason(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    stable, candidate, _, _ = prepare(api, container, "api")
    url = "/api/v1/deployments/api/rollouts"
    cases = [
        ("/api/v1/deployments/nope/rollouts", {"build_id": candidate}, 404, "does not exist"),
        (url, {"build_id": "nope"}, 404, "build 'nope' does not exist"),
        (url, {"build_id": candidate, "strategy": "yolo"}, 422, "strategy must be"),
        (url, {"build_id": candidate, "settings": {"stepz": [1]}}, 422, "unknown canary"),
        # the old name of step_weights, still accepted: refused for its value
        (url, {"build_id": candidate, "settings": {"steps": [5, 50]}}, 422, "end at 100"),
        (url, {"build_id": stable}, 409, "already serves"),
    ]
    for path, body, code, message in cases:
        answer = api.post(path, json=body)
        assert answer.status_code == code and message in answer.json()["detail"], answer.text
    assert api.get(url).json() == []  # nothing half-written
    assert weights(api, "api") == {"stable": 100}

    shadow = {"build_id": candidate, "shadow_share": 0.1}
    assert api.put("/api/v1/deployments/api/variants/mirror", json=shadow).status_code == 200
    other = api.post(url, json={"build_id": candidate})
    assert other.status_code == 409 and "other variants (mirror)" in other.json()["detail"]
    api.delete("/api/v1/deployments/api/variants/mirror")

    first = api.post(url, json={"build_id": candidate}).json()
    deleting = api.delete("/api/v1/deployments/api")
    assert deleting.status_code == 409 and "running rollout" in deleting.json()["detail"]
    second = api.post(url, json={"build_id": candidate})
    assert second.status_code == 409 and first["id"] in second.json()["detail"]
    paused = api.post(f"{url}/{first['id']}/pause")
    assert paused.status_code == 409 and "still starting" in paused.json()["detail"]
    assert api.post(f"{url}/{first['id']}/explode").status_code == 422
    aborted = api.post(f"{url}/{first['id']}/abort").json()
    assert aborted["phase"] == "rolled-back" and not aborted["running"]
    assert aborted["reason"] == "aborted by an operator"
    assert api.post(f"{url}/{first['id']}/abort").status_code == 409
    assert weights(api, "api") == {"stable": 100}
    assert api.get(f"/api/v1/deployments/other/rollouts/{first['id']}").status_code == 404


def test_a_candidate_that_never_gets_ready_fails_having_served_nothing(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    _, candidate, v1, _ = prepare(api, container, "stuck")
    here = ports(container, ScriptedMetrics())
    url = "/api/v1/deployments/stuck/rollouts"
    rid = api.post(url, json={"build_id": candidate}).json()["id"]
    created = rollouts.get(container, rid).created_at.timestamp()
    rollouts.tick(container, here, now=created + 10)
    assert rollouts.get(container, rid).phase == "initializing"
    rollouts.tick(container, here, now=created + container.settings.rollout_start_timeout + 1)
    done = api.get(f"{url}/{rid}").json()
    assert done["phase"] == "failed" and "not ready after 300s" in done["reason"]
    assert not done["running"] and weights(api, "stuck") == {"stable": 100}
    assert container.registry.aliases("stuck") == {"production": v1}
    assert api.post(url, json={"build_id": candidate}).status_code == 201  # free again


def test_operations_from_a_shadow_phase(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    _, candidate, _, v2 = prepare(api, container, "mirror")
    here = ports(container, ScriptedMetrics())
    url = "/api/v1/deployments/mirror/rollouts"
    settings = {**CANARY, "shadow": {"share": 0.5}}
    rid = api.post(url, json={"build_id": candidate, "settings": settings}).json()["id"]
    serve(container, "mirror", "canary", candidate)
    rollouts.tick(container, here, now=3000.0)

    def canary_variant() -> dict:  # type: ignore[type-arg]
        body = api.get("/api/v1/deployments/mirror").json()
        return next(v for v in body["variants"] if v["name"] == "canary")

    assert rollouts.get(container, rid).phase == "shadowing"
    assert (canary_variant()["weight"], canary_variant()["shadow_share"]) == (0, 0.5)
    paused = api.post(f"{url}/{rid}/pause").json()
    assert paused["phase"] == "paused" and canary_variant()["shadow_share"] == 0
    assert api.post(f"{url}/{rid}/resume").json()["phase"] == "shadowing"
    assert canary_variant()["shadow_share"] == 0.5
    promoted = api.post(f"{url}/{rid}/promote")
    assert promoted.status_code == 200 and promoted.json()["phase"] == "succeeded"
    assert (canary_variant()["weight"], canary_variant()["shadow_share"]) == (100, 0)
    serve(container, "mirror", "stable", candidate)
    rollouts.tick(container, here, now=3001.0)
    assert weights(api, "mirror") == {"stable": 100}
    assert container.registry.aliases("mirror") == {"production": v2}


def test_an_experiment_counts_through_a_gateway_restart(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    _, challenger, v1, _ = prepare(api, container, "ab")
    metrics = ScriptedMetrics()
    here = ports(container, metrics)
    url = "/api/v1/deployments/ab/rollouts"
    body = {
        "build_id": challenger,
        "strategy": "experiment",
        "settings": {"interval_seconds": 10, "min_requests": 200},
    }
    rid = api.post(url, json=body).json()["id"]
    serve(container, "ab", "challenger", challenger)
    rollouts.tick(container, here, now=4000.0)
    deployment = api.get("/api/v1/deployments/ab").json()
    assert deployment["split"] == "sticky" and weights(api, "ab") == {
        "challenger": 50,
        "stable": 50,
    }
    metrics.add("stable", 150)
    metrics.add("challenger", 150, errors=15)
    rollouts.tick(container, here, now=4010.0)
    assert rollouts.get(container, rid).phase == "progressing"  # 150 < 200 per arm
    metrics.totals.clear()  # the gateway restarted: its counters start from zero
    metrics.add("stable", 100)
    metrics.add("challenger", 100, errors=10)
    rollouts.tick(container, here, now=4020.0)
    done = api.get(f"{url}/{rid}").json()
    assert done["phase"] == "rolled-back" and done["winner"] == "stable", done["reason"]
    decided = next(e for e in done["timeline"] if e["event"] == "experiment.decided")
    assert decided["details"]["numbers"]["arms"] == {
        "stable": {"requests": 250, "errors": 0, "client_errors": 0},
        "challenger": {"requests": 250, "errors": 25, "client_errors": 0},
    }
    assert api.get("/api/v1/deployments/ab").json()["split"] == "weighted"
    assert weights(api, "ab") == {"stable": 100}
    assert container.registry.aliases("ab") == {"production": v1}


def test_a_candidate_that_breaks_stable_clients_is_refused_before_any_traffic(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    v1 = register_doubler(container, "sig")
    renamed = register_doubler(container, "sig", input_name="features")  # clients send x
    stable, candidate = publish_flaky_build(container, v1), publish_flaky_build(container, renamed)
    assert api.put("/api/v1/deployments/sig", json={"build_id": stable}).status_code == 200
    url = "/api/v1/deployments/sig/rollouts"
    for method, path, body in (
        ("POST", url, {"build_id": candidate}),
        ("PUT", "/api/v1/deployments/sig", {"build_id": candidate}),
        ("PUT", "/api/v1/deployments/sig/variants/canary", {"build_id": candidate, "weight": 5}),
    ):
        refused = api.request(method, path, json=body)
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert "input 'x' is gone (the candidate's inputs: 'features')" in detail
        assert "allow_signature_change" in detail
    # nothing moved, nothing was written
    assert api.get(url).json() == [] and weights(api, "sig") == {"stable": 100}
    assert api.get("/api/v1/deployments/sig").json()["build_id"] == stable

    allowed = api.post(url, json={"build_id": candidate, "allow_signature_change": True})
    assert allowed.status_code == 201, allowed.text
    created = allowed.json()["timeline"][0]
    assert created["event"] == "rollout.created"
    assert created["details"]["signature_changes"] == [
        "input 'x' is gone (the candidate's inputs: 'features')",
        "new input 'features' that clients do not send",
    ]


def test_4xx_beyond_stable_roll_back_and_no_traffic_fails(world) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    stable, candidate, v1, _ = prepare(api, container, "refuse")
    metrics = ScriptedMetrics()
    here = ports(container, metrics)
    url = "/api/v1/deployments/refuse/rollouts"
    rid = api.post(url, json={"build_id": candidate, "settings": CANARY}).json()["id"]
    serve(container, "refuse", "canary", candidate)
    rollouts.tick(container, here, now=5000.0)
    for second in (10, 20):
        # clients send some garbage to both; the candidate also refuses everything else
        metrics.add("stable", 400, client_errors=40)
        metrics.add("canary", 100, client_errors=100)
        rollouts.tick(container, here, now=5000.0 + second)
    done = api.get(f"{url}/{rid}").json()
    assert done["phase"] == "rolled-back" and "client_error_excess" in done["reason"], done
    failed = next(e for e in done["timeline"] if e["event"] == "rollout.rolled-back")
    excess = failed["details"]["numbers"]["client_error_excess"]
    assert excess["outcome"] == "failed" and excess["value"] == pytest.approx(0.9)
    # every canary request was refused: no accepted request for errors to be a share of
    assert excess["bound"] > 0.8 and failed["details"]["numbers"]["error_rate"]["value"] is None
    assert weights(api, "refuse") == {"stable": 100}
    assert container.registry.aliases("refuse") == {"production": v1}

    # the same clients' garbage alone does not fail a candidate; no traffic at all ends
    # the rollout failed after inconclusive_limit analyses, stable untouched
    quiet = {**CANARY, "inconclusive_limit": 3}
    rid = api.post(url, json={"build_id": candidate, "settings": quiet}).json()["id"]
    serve(container, "refuse", "canary", candidate)
    rollouts.tick(container, here, now=6000.0)
    metrics.add("stable", 400, client_errors=40)
    metrics.add("canary", 100, client_errors=10)
    rollouts.tick(container, here, now=6010.0)
    assert weights(api, "refuse") == {"canary": 100, "stable": 0}
    for second in (20, 30, 40):
        rollouts.tick(container, here, now=6000.0 + second)
    done = api.get(f"{url}/{rid}").json()
    assert done["phase"] == "failed" and "3 inconclusive analyses in a row" in done["reason"]
    assert not done["running"] and [e["event"] for e in done["timeline"]][-2:] == [
        "rollout.failed",
        "rollout.finished",
    ]
    assert weights(api, "refuse") == {"stable": 100}
    assert api.get("/api/v1/deployments/refuse").json()["build_id"] == stable
    assert container.registry.aliases("refuse") == {"production": v1}


def test_4xx_at_100_percent_are_judged_against_stables_record_across_a_gateway_restart(
    world,
) -> None:  # type: ignore[no-untyped-def]
    api, container = world
    _, candidate, v1, _ = prepare(api, container, "whole")
    metrics = ScriptedMetrics()
    metrics.add("stable", 400, client_errors=4)  # stable's record before the rollout: 1 %
    here = ports(container, metrics)
    url = "/api/v1/deployments/whole/rollouts"
    straight = {"step_weights": [100], "interval_seconds": 10, "thresholds": {"min_requests": 50}}
    rid = api.post(url, json={"build_id": candidate, "settings": straight}).json()["id"]
    serve(container, "whole", "canary", candidate)
    rollouts.tick(container, here, now=7000.0)  # begins: stable's record kept
    assert weights(api, "whole") == {"canary": 100, "stable": 0}
    metrics.totals.clear()  # the gateway restarted: stable's counters are gone from it
    for second in (10, 20):
        metrics.add("canary", 100, client_errors=100)  # stable serves nothing at 100 %
        rollouts.tick(container, here, now=7000.0 + second)
    done = api.get(f"{url}/{rid}").json()
    assert done["phase"] == "rolled-back" and "client_error_excess" in done["reason"], done
    assert weights(api, "whole") == {"stable": 100}
    assert container.registry.aliases("whole") == {"production": v1}


OLD_STATE = {
    "phase": "progressing",
    "step": 1,
    "weight": 50,
    "started_at": 1000.0,
    "last_analysis_at": 1020.0,
    "passed_in_step": 0,
    "failures_in_a_row": 0,
    "unavailable_in_a_row": 0,
    "reason": "",
    "winner": None,
    "bake_until": None,
    "paused_phase": None,
}  # saved before the progress-deadline fields existed, too
OLD_COUNTERS = {
    "last": {"stable": {"requests": 800, "errors": 0, "buckets": [[0.005, 800], ["+Inf", 800]]}},
    "total": {"canary": {"requests": 100, "errors": 1, "buckets": [[0.005, 99], ["+Inf", 99]]}},
}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_rows_of_before_migrate_to_one_status_and_back(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Rollouts saved with the columns and setting names of before (0006) load after the
    upgrade as one status with the frozen names, a running one goes on from where it
    was, and a downgrade gives the old columns and names back."""
    import sqlalchemy as sa
    from alembic import command

    from shipway.rollout.controller import parse_spec
    from shipway.rollout.status import RolloutStatus
    from shipway.store.db import alembic_config

    url = (
        request.getfixturevalue("postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'state.db'}"
    )
    config = alembic_config(url)
    command.upgrade(config, "0006")
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    with engine.begin() as db:
        db.execute(
            meta.tables["model_versions"].insert(),
            {"id": 1, "name": "m", "version": 2, "mlflow_run_id": "r", "onnx_sha256": "0" * 64,
             "signature": {}, "tags": {}, "created_at": at},
        )  # fmt: skip
        for build in ("s1", "c1"):
            db.execute(
                meta.tables["builds"].insert(),
                {"id": build, "model_version_id": 1, "recipe": "fp32",
                 "target": "onnxruntime-cpu", "status": "succeeded", "stage": "done",
                 "progress": 1.0, "report": {}, "created_at": at, "updated_at": at},
            )  # fmt: skip
        old_spec = {"steps": [20, 50, 100], "interval_s": 10.0, "failure_threshold": 3,
                    "max_unavailable": 4, "bake_s": 0.0, "gates": [], "thresholds": {}}  # fmt: skip
        db.execute(
            meta.tables["rollouts"].insert(),
            [
                {"id": "r1", "deployment": "web", "strategy": "canary", "variant": "canary",
                 "candidate_build_id": "c1", "stable_build_id": "s1", "spec": old_spec,
                 "state": OLD_STATE, "phase": "progressing", "converged": "progressing:50",
                 "metrics": OLD_COUNTERS, "active_key": "web", "created_by": "t",
                 "created_at": at, "updated_at": at},
                {"id": "r2", "deployment": "web", "strategy": "experiment",
                 "variant": "challenger", "candidate_build_id": "c1", "stable_build_id": "s1",
                 "spec": {"interval_s": 5.0, "max_duration_s": 60.0}, "state": None,
                 "phase": "failed", "converged": None, "metrics": {}, "active_key": None,
                 "created_by": "t", "created_at": at, "updated_at": at},
            ],
        )  # fmt: skip

    command.upgrade(config, "head")
    rows = sa.table("rollouts", sa.column("id"), sa.column("spec", sa.JSON),
                    sa.column("status", sa.JSON))  # fmt: skip
    with engine.begin() as db:
        loaded = {r.id: r for r in db.execute(sa.select(rows)).all()}
    running = RolloutStatus.from_dict(loaded["r1"].status)
    assert (running.phase, running.weight, running.step, running.finished) == (
        "progressing", 50, 1, False
    )  # fmt: skip
    assert running.converged == "progressing:50" and running.candidate_build == "c1"
    assert running.counters.total["canary"].requests == 100
    assert running.state is not None and running.state.progressed_at == 1020.0
    spec = parse_spec("canary", loaded["r1"].spec)
    assert loaded["r1"].spec["step_weights"] == [20, 50, 100] and "steps" not in loaded["r1"].spec
    assert (spec.step_weights, spec.interval_seconds, spec.failure_limit) == ((20, 50, 100), 10, 3)
    assert spec.consecutive_error_limit == 4
    ended = RolloutStatus.from_dict(loaded["r2"].status)
    assert ended.finished and ended.phase == "failed" and ended.state is None
    assert loaded["r2"].spec == {"interval_seconds": 5.0, "max_duration_seconds": 60.0}

    command.downgrade(config, "0006")
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as db:
        back = {r.id: r for r in db.execute(sa.select(meta.tables["rollouts"])).all()}
    assert back["r1"].spec == old_spec and back["r1"].phase == "progressing"
    assert back["r1"].converged == "progressing:50"
    assert back["r1"].metrics["total"]["canary"]["requests"] == 100
    assert back["r2"].spec == {"interval_s": 5.0, "max_duration_s": 60.0}
    engine.dispose()
