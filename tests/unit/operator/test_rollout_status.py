"""The rollout controller's status as ``.status.rollout``: Kubernetes conventions on the
resource, and back to the very same ``RolloutStatus`` (statuses made by the shared
controller on the fakes of ``shipway.rollout.testing``, at every phase)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from shipway.errors import InvalidInput
from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.controller import Controller, Event, new_status
from shipway.rollout.experiment import ExperimentSpec
from shipway.rollout.state import Phase
from shipway.rollout.status import STABLE, RolloutStatus
from shipway.rollout.testing import FakePorts
from shipway_operator.rollout_status import from_resource, from_time, to_resource, to_time

T0 = 1764489600.123  # 2025-11-30T08:00:00.123Z: a fraction of a second on every time
SPEC = CanarySpec(
    step_weights=(20, 50, 100), interval_seconds=10.0, thresholds=Thresholds(min_requests=50)
)


class Run:
    """One rollout of c1 against s1 on the fakes, keeping every status it went through."""

    def __init__(self, spec: CanarySpec | ExperimentSpec = SPEC, strategy: str = "canary"):
        self.fakes = FakePorts()
        self.fakes.world.create("web", "s1")
        self.spec = spec
        self.controller = Controller(self.fakes.ports)
        self.status = new_status(strategy, "c1", "s1", T0)
        self.seen = [self.status]

    def save(self, status: RolloutStatus, events: list[Event]) -> None:
        self.seen.append(status)  # every status the controller saved, mid-pass ones too

    def tick(self, seconds: float) -> None:
        now = T0 + seconds
        self.status = self.controller.reconcile(
            "web", self.spec, self.status, now, self.save
        ).status

    def operate(self, operation: str, seconds: float) -> None:
        result = self.controller.operate(
            "web", self.spec, self.status, operation, "alice", T0 + seconds, self.save
        )
        self.status = result.status

    def begin(self) -> Run:
        self.tick(0)
        self.fakes.world.serve("web", self.status.variant, "c1")
        self.tick(1.5)
        return self

    def traffic(self, stable: int, candidate: int, errors: int = 0) -> None:
        self.fakes.metrics.add("web", STABLE, stable, client_errors=1)
        self.fakes.metrics.add("web", self.status.variant, candidate, errors=errors)


def _statuses() -> Iterator[RolloutStatus]:
    promoted = Run().begin()  # progressing with counters, succeeded, finished
    for second in (11.75, 22.0, 32.25):
        promoted.traffic(400, 100)
        promoted.tick(second)
    promoted.fakes.world.serve("web", STABLE, "c1")
    promoted.tick(33.1)
    yield from promoted.seen

    failing = Run().begin()  # rolled back
    for second in (11.7, 22.0):
        failing.traffic(400, 100, errors=30)
        failing.tick(second)
    yield from failing.seen

    paused = Run().begin()
    paused.operate("pause", 2.2)
    yield paused.status

    gated = Run(
        CanarySpec(
            step_weights=(20, 100),
            interval_seconds=10.0,
            gates=frozenset({1}),
            thresholds=Thresholds(min_requests=50),
        )
    )
    gated.begin()
    gated.traffic(400, 100)
    gated.tick(11.8)
    yield from gated.seen

    baking = Run(
        CanarySpec(
            step_weights=(20, 100),
            interval_seconds=10.0,
            bake_seconds=60.0,
            thresholds=Thresholds(min_requests=50),
        )
    )
    baking.begin()
    for second in (11.9, 22.2):
        baking.traffic(400, 100)
        baking.tick(second)
    yield from baking.seen

    shadow = ShadowSpec(share=0.5, min_compared=100)
    mirrored = Run(CanarySpec(step_weights=(50, 100), interval_seconds=10.0, shadow=shadow))
    mirrored.begin()
    mirrored.fakes.metrics.mirror("web", "canary", agree=1000)
    mirrored.tick(11.6)
    yield from mirrored.seen

    experiment = Run(
        ExperimentSpec(weight=50, interval_seconds=10.0, min_requests=200), "experiment"
    )
    experiment.begin()
    experiment.traffic(300, 300, errors=40)  # stable wins
    experiment.tick(11.6)
    yield from experiment.seen

    # the challenger winning, as the engine records it (its own test decides it)
    ended = experiment.status
    assert ended.state is not None
    won = replace(ended.state, phase=Phase.SUCCEEDED, weight=100, winner="challenger")
    yield replace(ended, phase=Phase.SUCCEEDED, state=won)


STATUSES = list(_statuses())


def test_the_statuses_cover_every_kind_of_record() -> None:
    phases = {s.phase for s in STATUSES}
    assert phases >= {
        Phase.INITIALIZING,
        Phase.SHADOWING,
        Phase.PROGRESSING,
        Phase.WAITING_GATE,
        Phase.PAUSED,
        Phase.BAKING,
        Phase.SUCCEEDED,
        Phase.ROLLED_BACK,
    }, phases
    assert any(s.counters.last is not None and s.counters.total for s in STATUSES)
    assert any(s.finished for s in STATUSES) and any(
        s.state and s.state.bake_until for s in STATUSES
    )
    assert {s.winner for s in STATUSES} >= {STABLE, "challenger"}


@pytest.mark.parametrize("status", STATUSES, ids=lambda s: f"{s.strategy}-{s.phase}")
def test_a_status_round_trips_exactly_through_the_resource(status: RolloutStatus) -> None:
    resource = json.loads(json.dumps(to_resource(status)))  # as stored by the API server
    assert from_resource(resource) == status


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)


def test_the_resource_form_follows_kubernetes_conventions() -> None:
    status = next(s for s in STATUSES if s.phase is Phase.PROGRESSING and s.counters.total)
    resource = to_resource(status)
    assert not [k for k in _keys(resource) if "_" in k]  # camelCase throughout
    assert resource["variant"] == "candidate" and "engineVariant" not in resource
    assert (resource["candidateBuildID"], resource["stableBuildID"]) == ("c1", "s1")
    assert resource["createdAt"] == "2025-11-30T08:00:00.123Z"
    assert resource["phase"] == "Progressing"
    state = resource["state"]
    assert state["phase"] == "Progressing"
    assert state["startedAt"] == "2025-11-30T08:00:01.623Z"
    assert set(state) >= {"lastAnalysisAt", "passedInStep", "failuresInARow", "weight"}
    assert "bakeUntil" not in state and "pausedPhase" not in state  # unset: left out
    assert set(resource["counters"]["total"]) == {"stable", "candidate"}
    assert "clientErrors" in resource["counters"]["total"]["stable"]
    assert resource["converged"].startswith("Progressing:")

    gate = to_resource(next(s for s in STATUSES if s.phase is Phase.WAITING_GATE))
    assert gate["phase"] == "WaitingGate"
    back = to_resource(next(s for s in STATUSES if s.phase is Phase.ROLLED_BACK))
    assert back["phase"] == "RolledBack"
    experiment = to_resource(next(s for s in STATUSES if s.winner == "challenger"))
    assert experiment["variant"] == "candidate" and experiment["state"]["winner"] == "candidate"


def test_an_engine_variant_the_strategy_does_not_imply_is_kept() -> None:
    odd = RolloutStatus("canary", "challenger", "c1", "s1", T0)
    resource = to_resource(odd)
    assert resource["variant"] == "candidate" and resource["engineVariant"] == "challenger"
    assert from_resource(resource) == odd


@pytest.mark.parametrize(
    "epoch", [0.0, 0.1, 0.30000000000000004, 1e-07, 1764489600.0, 1764489600.123456789, T0 + 31.75]
)
def test_times_round_trip_to_the_same_float(epoch: float) -> None:
    text = to_time(epoch)
    assert text.endswith("Z") and text[10] == "T"
    assert from_time(text) == epoch


def test_a_time_with_an_offset_reads_as_utc() -> None:
    assert from_time("2025-11-30T09:00:00.5+01:00") == 1764489600.5


def test_an_unreadable_record_is_refused_with_a_clear_error() -> None:
    good = to_resource(STATUSES[1])
    with pytest.raises(InvalidInput, match="must be an object"):
        from_resource(["not", "a", "record"])
    with pytest.raises(InvalidInput, match="version 2"):
        from_resource(good | {"version": 2})
    with pytest.raises(InvalidInput, match="not an RFC 3339 time"):
        from_resource(good | {"createdAt": 1764489600.0})
    with pytest.raises(InvalidInput, match="unreadable rollout status"):
        from_resource({k: v for k, v in good.items() if k != "candidateBuildID"})
    with pytest.raises(InvalidInput, match="unreadable rollout status"):
        from_resource(good | {"phase": "Exploded"})
